//! `miglab check`: a scenario validated completely, without a lab — the schema, every field,
//! the fio job file, and what this machine can give (a migrating guest exists twice for a
//! moment: on the source and on the destination). `miglab run` does the same first.

use crate::scenario::{GuestSpec, Problem, Problems, Scenario, ScenarioError};
use miglab_infra::binaries::{BinariesError, BinaryChoice};
use miglab_workloads::job::Workload;
use std::path::Path;

/// Memory this machine has available now, in MiB (MemAvailable).
pub fn available_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// The guest must fit this machine twice (source and destination during a switch-over).
pub fn host_problems(guest: &GuestSpec, available: Option<u64>) -> Vec<Problem> {
    match available {
        Some(avail) if 2 * guest.memory_mib > avail => vec![Problem {
            line: None,
            field: "guest.memory_mib".into(),
            message: format!(
                "{} MiB cannot migrate here: source and destination hold {} MiB together, this machine has {avail} MiB available; lower it",
                guest.memory_mib,
                2 * guest.memory_mib
            ),
        }],
        _ => Vec::new(),
    }
}

/// Refuses a guest this machine cannot hold.
pub fn host(path: &Path, guest: &GuestSpec) -> Result<(), ScenarioError> {
    let list = host_problems(guest, available_mib());
    if list.is_empty() {
        Ok(())
    } else {
        Err(ScenarioError::Invalid(Problems { path: path.into(), list }))
    }
}

/// Refuses chosen builds that are not there (relative paths from the scenario's directory).
pub fn binaries(path: &Path, b: &BinaryChoice) -> Result<(), ScenarioError> {
    match b.anchored(path.parent().unwrap_or(Path::new("."))).check() {
        Ok(()) => Ok(()),
        Err(e) => {
            let field = match &e {
                BinariesError::Missing { role, .. } | BinariesError::NotExecutable { role, .. } => {
                    format!("binaries.{role}")
                }
                _ => "binaries.kernel".into(),
            };
            Err(ScenarioError::Invalid(Problems {
                path: path.into(),
                list: vec![Problem { line: None, field, message: e.to_string() }],
            }))
        }
    }
}

/// What a valid scenario will do, for the one-line answer of `miglab check`.
pub fn summary(s: &Scenario, w: &Workload) -> String {
    let faults = match s.faults.len() {
        0 => String::new(),
        n => format!(", {n} fault(s)"),
    };
    let expect = s.expect.as_ref().map(|e| format!(", expects {e}")).unwrap_or_default();
    format!(
        "{}: ok — {} repetition(s) of '{}' in a {} MiB / {} vCPU guest, {} migration(s){faults}{expect}, seed {}",
        s.name,
        s.repetitions,
        w.name(),
        s.guest.memory_mib,
        s.guest.vcpus,
        s.migration.count,
        s.seed
    )
}

/// Checks the scenario at `path` completely, every cell of its sweep included.
pub fn check(path: &Path) -> Result<String, ScenarioError> {
    let (s, text, w) = Scenario::load(path)?;
    host(path, &s.guest)?;
    binaries(path, &s.binaries)?;
    let cells = s.cells(&text, path)?;
    for c in &cells {
        host(path, &c.scenario.guest)?;
        binaries(path, &c.scenario.binaries)?;
    }
    let sweep = match cells.len() {
        0 => String::new(),
        n => format!(
            "; a sweep of {n} cells: {}",
            cells.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join("; ")
        ),
    };
    Ok(format!("{}{sweep}", summary(&s, &w)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_larger_than_half_the_available_memory_is_refused() {
        let g = GuestSpec { memory_mib: 8192, ..GuestSpec::default() };
        let p = host_problems(&g, Some(10_000));
        assert_eq!(p.len(), 1);
        assert!(p[0].message.contains("16384 MiB together"), "{:?}", p[0]);
        assert!(host_problems(&g, Some(20_000)).is_empty());
    }
}
