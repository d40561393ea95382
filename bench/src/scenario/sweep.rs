//! Sweeps: a scenario's `[sweep]` crossed into cells, each a whole scenario checked like one.

use super::{line_of, Checker, Problem, Problems, Scenario, ScenarioError};
use miglab_workloads::job::Workload;
use std::path::Path;

/// One combination of a sweep: its name (`downtime_limit_ms=50,bs=4k`) and the scenario it is.
#[derive(Debug, Clone)]
pub struct Cell {
    pub sweep: miglab_model::SweepCell,
    pub scenario: Scenario,
    pub workload: Workload,
}

/// `sweep` with nested tables flattened to dotted paths, in order.
fn sweep_axes(
    t: &toml::Table,
    prefix: &str,
    out: &mut Vec<(String, Vec<toml::Value>)>,
) -> Result<(), String> {
    for (k, v) in t {
        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(inner) => sweep_axes(inner, &path, out)?,
            toml::Value::Array(values) if !values.is_empty() => out.push((path, values.clone())),
            _ => return Err(format!("sweep.{path}: give a list of the values to sweep, e.g. [20, 300]")),
        }
    }
    Ok(())
}

/// Sets `path` (dotted, numbers index arrays) in `doc` to `v`.
fn set_path(doc: &mut toml::Value, path: &str, v: toml::Value) -> Result<(), String> {
    let mut cur = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        cur = match cur {
            toml::Value::Table(t) => {
                if last {
                    t.insert((*part).into(), v);
                    return Ok(());
                }
                t.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()))
            }
            toml::Value::Array(a) => {
                let n: usize =
                    part.parse().map_err(|_| format!("{path}: '{part}' indexes a list: give a number"))?;
                let len = a.len();
                let slot =
                    a.get_mut(n).ok_or_else(|| format!("{path}: there are {len} entries, no [{n}]"))?;
                if last {
                    *slot = v;
                    return Ok(());
                }
                slot
            }
            _ => return Err(format!("{path}: '{part}' is not inside a table or a list")),
        };
    }
    Ok(())
}

/// A value as a cell's name shows it: a table by its `name` or `kind`, a trigger by its anchor
/// (and status).
fn label(v: &toml::Value) -> String {
    let s = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(t) => t
            .get("name")
            .or(t.get("kind"))
            .map(label)
            .or_else(|| {
                let at = label(t.get("at")?);
                Some(t.get("status").map_or(at.clone(), |s| format!("{at}-{}", label(s))))
            })
            .unwrap_or_else(|| "table".into()),
        toml::Value::Array(a) if a.is_empty() => "none".into(),
        toml::Value::Array(a) => a.iter().map(label).collect::<Vec<_>>().join("+"),
        other => other.to_string(),
    };
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.+".contains(c) { c } else { '-' }).collect()
}

impl Scenario {
    /// The cells of the sweep (none without one), each checked as a scenario of its own.
    pub fn cells(&self, text: &str, path: &Path) -> Result<Vec<Cell>, ScenarioError> {
        let invalid = |field: String, message: String| {
            ScenarioError::Invalid(Problems {
                path: path.into(),
                list: vec![Problem { line: line_of(text, "sweep", ""), field, message }],
            })
        };
        let mut axes = Vec::new();
        sweep_axes(&self.sweep, "", &mut axes).map_err(|m| invalid("sweep".into(), m))?;
        if axes.is_empty() {
            return Ok(Vec::new());
        }
        let cells: usize = axes.iter().map(|(_, v)| v.len()).product();
        if cells > 256 {
            return Err(invalid("sweep".into(), format!("{cells} cells: a sweep may have 256 at most")));
        }
        let mut base: toml::Value =
            toml::from_str(text).map_err(|e| invalid("sweep".into(), e.to_string()))?;
        if let toml::Value::Table(t) = &mut base {
            t.remove("sweep");
        }
        let mut out = Vec::new();
        for i in 0..cells {
            let (mut doc, mut values, mut rest) = (base.clone(), Vec::new(), i);
            for (key, all) in &axes {
                let v = all[rest % all.len()].clone();
                rest /= all.len();
                let number = v.as_float().or(v.as_integer().map(|i| i as f64));
                values.push(miglab_model::CellValue { path: key.clone(), label: label(&v), number });
                set_path(&mut doc, key, v).map_err(|m| invalid(format!("sweep.{key}"), m))?;
            }
            let sweep = miglab_model::SweepCell { values };
            let name = sweep.name();
            let cell_text = toml::to_string(&doc).map_err(|e| invalid("sweep".into(), e.to_string()))?;
            let cell_path = path.with_file_name(format!(
                "{} [{name}]",
                path.file_name().and_then(|f| f.to_str()).unwrap_or("scenario")
            ));
            let s = Scenario::parse(&cell_text, &cell_path)?;
            let w = s.workload(path)?;
            let mut c = Checker { text: &cell_text, list: Vec::new() };
            s.check_workload_fits(&w, &mut c);
            if !c.list.is_empty() {
                return Err(ScenarioError::Invalid(Problems { path: cell_path, list: c.list }));
            }
            out.push(Cell { sweep, scenario: s, workload: w });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::label;

    /// Cells that sweep a fault's trigger are told apart by its anchor, not all "table".
    #[test]
    fn a_swept_table_is_named_by_its_name_kind_or_trigger() {
        let v = |s: &str| -> toml::Value {
            toml::from_str::<toml::Table>(&format!("x = {s}")).expect("toml")["x"].clone()
        };
        assert_eq!(label(&v(r#"{ name = "plain", x = 1 }"#)), "plain");
        assert_eq!(label(&v(r#"{ kind = "read-loop" }"#)), "read-loop");
        assert_eq!(label(&v(r#"{ at = "status", status = "active", hop = 1 }"#)), "status-active");
        assert_eq!(label(&v(r#"{ at = "pre-switchover", hop = 1 }"#)), "pre-switchover");
        assert_eq!(label(&v("{ x = 1 }")), "table");
    }
}
