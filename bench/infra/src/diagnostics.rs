//! Problems in a file a user wrote (a scenario, a site file): each with the line and field it
//! is about and what to write instead, printed `file:line: field: message`.

use std::fmt;
use std::path::PathBuf;

/// One thing wrong with a file: where, which field, what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    /// `migration.warmup_s`, `workload.directory`, ...
    pub field: String,
    pub message: String,
}

/// Problems, one per line, each `file:line: field: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems {
    pub path: PathBuf,
    pub list: Vec<Problem>,
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.list.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.line {
                Some(l) => write!(f, "{}:{l}: {}: {}", self.path.display(), p.field, p.message)?,
                None => write!(f, "{}: {}: {}", self.path.display(), p.field, p.message)?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The line where `key` is set in table `table` ("" for the top level); without the key, the
/// table's header line.
pub fn line_of(text: &str, table: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    let mut header = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            current = name.trim().to_string();
            if current == table {
                header = Some(i + 1);
            }
            continue;
        }
        let k = t.split('=').next().unwrap_or("").trim();
        if current == table && !key.is_empty() && k == key && t.contains('=') {
            return Some(i + 1);
        }
    }
    header
}
