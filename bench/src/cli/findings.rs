//! `miglab findings`: every finding's scenario run on one lab with today's builds, and judged
//! against its claim — holds, no longer holds, or could not run.

use super::{on_lab, CliError, FindingsArgs};
use crate::exit::Finished;
use crate::scenario::Scenario;
use crate::session::{self, RunOptions, Source};
use miglab_infra::paths;
use miglab_model::{Finding, RunResult};
use miglab_reports::findings::{judge, Status};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// One finding's verdict, as `findings.json` has it.
#[derive(Debug, Serialize)]
struct Row {
    name: String,
    scenario: PathBuf,
    claim: String,
    doc: String,
    seen_with: String,
    seen_on: String,
    status: Status,
    evidence: Vec<String>,
    runs: usize,
    /// Today's builds, from the runs' provenance.
    today: String,
    seconds: f64,
}

pub(super) fn findings_cmd(a: FindingsArgs) -> Result<Finished, CliError> {
    let mut chosen = scenarios(&a.dir)?;
    if !a.only.is_empty() {
        for name in &a.only {
            if !chosen.iter().any(|(_, s)| &s.name == name) {
                let names: Vec<&str> = chosen.iter().map(|(_, s)| s.name.as_str()).collect();
                return Err(CliError::Args(format!(
                    "--only {name}: no finding of that name under {} (there are: {})",
                    a.dir.display(),
                    names.join(", ")
                )));
            }
        }
        chosen.retain(|(_, s)| a.only.contains(&s.name));
    }
    let lab_name = a.lab.clone().unwrap_or_else(|| "default".into());
    let root = a.root.clone().unwrap_or_else(paths::lab_root);
    let rows = on_lab("findings", &lab_name, &root, || {
        let mut rows = Vec::new();
        for (path, s) in &chosen {
            let finding = s.finding.as_ref().expect("only findings are chosen");
            println!("findings: {} — {}", s.name, finding.claim);
            rows.push(check(&a, path, s, finding, &lab_name, &root));
            if miglab_infra::interrupt::requested() {
                break;
            }
        }
        rows
    })?;
    print!("{}", table(&rows));
    std::fs::create_dir_all(&a.out).map_err(|source| CliError::Unwritable { path: a.out.clone(), source })?;
    let json = serde_json::to_vec_pretty(&rows).map_err(|e| CliError::Args(e.to_string()))?;
    for (name, bytes) in [("findings.json", json), ("findings.md", table(&rows).into_bytes())] {
        let file = a.out.join(name);
        std::fs::write(&file, bytes).map_err(|source| CliError::Unwritable { path: file.clone(), source })?;
        println!("→ {}", file.display());
    }
    if miglab_infra::interrupt::requested() {
        return Err(CliError::Args("interrupted: the findings judged so far are above".into()));
    }
    let all_hold = rows.iter().all(|r| r.status == Status::Holds);
    Ok(if all_hold { Finished::Clean } else { Finished::Found })
}

/// Every scenario with a `[finding]` under `dir`, by name; a malformed one is the command's
/// error (exit 2), before anything runs.
fn scenarios(dir: &Path) -> Result<Vec<(PathBuf, Scenario)>, CliError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CliError::Unreadable {
        path: dir.into(),
        source,
        hint: " (give the findings' directory)",
    })?;
    let mut paths: Vec<PathBuf> =
        entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "toml")).collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let (s, text, _) = Scenario::load(&p)?;
        let Some(f) = &s.finding else {
            return Err(CliError::Args(format!(
                "{}: no [finding] table: a scenario under {} states the finding it re-checks",
                p.display(),
                dir.display()
            )));
        };
        // A bound on a cell names one the sweep has.
        let cells: Vec<String> = s.cells(&text, &p)?.into_iter().map(|c| c.sweep.name()).collect();
        if let Some(c) = f.holds.iter().filter_map(|b| b.cell.as_ref()).find(|c| !cells.contains(c)) {
            return Err(CliError::Args(format!(
                "{}: finding.holds names cell '{c}', which the sweep does not have (its cells: {})",
                p.display(),
                if cells.is_empty() { "none: it does not sweep".into() } else { cells.join(", ") }
            )));
        }
        out.push((p, s));
    }
    if out.is_empty() {
        return Err(CliError::Args(format!("{}: no finding scenarios (*.toml) there", dir.display())));
    }
    Ok(out)
}

fn check(a: &FindingsArgs, path: &Path, s: &Scenario, f: &Finding, lab: &str, root: &Path) -> Row {
    let started = Instant::now();
    let out = a.out.join(&s.name);
    let _ = std::fs::remove_dir_all(&out);
    let ran = session::run(&RunOptions {
        source: Source::Scenario(path.to_path_buf()),
        out: out.clone(),
        lab_root: root.to_path_buf(),
        repetitions: a.repetitions,
        lab_name: Some(lab.to_string()),
        host_mode: None,
        binaries: a.binaries.choice(),
        topology: None,
    });
    // Runs that went other than expected are read too: they are the evidence.
    let runs: Vec<RunResult> = miglab_reports::compare::load(&out).map(|side| side.runs).unwrap_or_default();
    let mut judged = judge(f, s.expect.as_ref(), &runs);
    if runs.is_empty() {
        if let Err(e) = ran {
            judged.evidence = vec![e.to_string()];
        }
    }
    let today = runs.first().map(versions).unwrap_or_else(|| "—".into());
    let row = Row {
        name: s.name.clone(),
        scenario: path.to_path_buf(),
        claim: f.claim.clone(),
        doc: format!("docs/findings.md{}", f.doc),
        seen_with: f.seen_with.clone(),
        seen_on: f.seen_on.clone(),
        status: judged.status,
        evidence: judged.evidence,
        runs: runs.len(),
        today,
        seconds: started.elapsed().as_secs_f64(),
    };
    println!("findings: {} {}: {}", row.name, row.status.as_str().to_uppercase(), row.evidence.join("; "));
    row
}

/// The builds a run used, shortly: `QEMU 10.0.2, virtiofsd 1.14.0, Ceph 16.2.15, tcg`.
fn versions(r: &RunResult) -> String {
    let p = &r.provenance;
    let word = |v: &Option<String>, i: usize| {
        v.as_deref().and_then(|v| v.split_whitespace().nth(i)).unwrap_or("?").to_string()
    };
    format!(
        "QEMU {}, virtiofsd {}, Ceph {}, {}",
        word(&p.qemu, 3),
        word(&p.virtiofsd, 1),
        word(&p.ceph, 2),
        p.accelerator
    )
}

/// The verdicts as a Markdown table (printed, and `findings.md`).
fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| finding | status | evidence | runs | today | first seen |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| [{}]({}) | **{}** | {} | {} | {} | {}, {} |\n",
            r.name,
            r.doc,
            r.status.as_str(),
            r.evidence.join("; ").replace('|', "/"),
            r.runs,
            r.today,
            r.seen_with,
            r.seen_on
        ));
    }
    t
}
