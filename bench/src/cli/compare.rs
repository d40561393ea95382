//! `miglab compare`.

use super::{CliError, CompareArgs};
use crate::exit::Finished;
use miglab_reports::compare::{self, CompareError, Options, METRIC_KINDS};
use std::collections::BTreeMap;
use std::path::Path;

/// `METRIC=NUMBER` pairs; the metric must be one compare knows.
fn pairs(flag: &str, v: &[String]) -> Result<BTreeMap<String, f64>, CliError> {
    v.iter()
        .map(|s| {
            let bad = || {
                CliError::Args(format!(
                    "--{flag} {s}: give METRIC=NUMBER, METRIC one of {} (p99_us.<op> per op kind; downtime.<part>_ms per downtime part; a .hopN suffix for the N-th migration alone)",
                    METRIC_KINDS.join(", ")
                ))
            };
            let (k, n) = s.split_once('=').ok_or_else(bad)?;
            let n: f64 = n.trim().parse().map_err(|_| bad())?;
            if !compare::is_metric(k) || !n.is_finite() || n < 0.0 {
                return Err(bad());
            }
            Ok((k.to_string(), n))
        })
        .collect()
}

fn load(p: &Path) -> Result<compare::Side, CliError> {
    let side = compare::load(p).map_err(|source| CompareError::Io { path: p.into(), source })?;
    if side.runs.is_empty() {
        return Err(CompareError::Empty(p.into(), side.skipped).into());
    }
    Ok(side)
}

pub(super) fn compare_cmd(a: CompareArgs) -> Result<Finished, CliError> {
    if !(a.alpha > 0.0 && a.alpha < 1.0) {
        return Err(CliError::Args(format!("--alpha {}: give a level between 0 and 1, e.g. 0.01", a.alpha)));
    }
    if !(a.threshold.is_finite() && a.threshold >= 0.0) {
        return Err(CliError::Args(format!("--threshold {}: give a percentage, e.g. 10", a.threshold)));
    }
    for v in &a.variables {
        if !compare::VARIABLES.contains(&v.as_str()) {
            return Err(CliError::Args(format!(
                "--variable {v}: give one of {}",
                compare::VARIABLES.join(", ")
            )));
        }
    }
    let o = Options {
        alpha: a.alpha,
        threshold: a.threshold / 100.0,
        thresholds: pairs("threshold-for", &a.threshold_for)?
            .into_iter()
            .map(|(k, v)| (k, v / 100.0))
            .collect(),
        floors: pairs("floor", &a.floor)?,
        family: a.family,
        variables: a.variables.clone(),
        allow_different: a.allow_different,
        seed: a.seed,
    };
    let (mut base, mut cand) = (load(&a.baseline)?, load(&a.candidate)?);
    if let (Some(bc), Some(cc)) = (&a.baseline_cell, &a.candidate_cell) {
        base = compare::pick_cell(&base, bc);
        cand = compare::pick_cell(&cand, cc);
        for (side, cell, dir) in [(&base, bc, &a.baseline), (&cand, cc, &a.candidate)] {
            if side.runs.is_empty() {
                return Err(CliError::Args(format!(
                    "no run of the cell '{cell}' in {}: give a cell's directory name",
                    dir.display()
                )));
            }
        }
    }
    let mut c = compare::compare(&base, &cand, &o)?;
    if a.outcomes_only {
        c.rows.clear();
    }
    print!("{}", compare::text(&c));
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir).map_err(|source| CliError::Unwritable { path: dir.clone(), source })?;
        let html = compare::page(&c, &a.baseline.display().to_string(), &a.candidate.display().to_string())
            .map_err(|e| CliError::Charts { what: "the comparison", why: e.to_string() })?;
        for (name, body) in
            [("compare.md", compare::markdown(&c)), ("compare.html", html), ("junit.xml", compare::junit(&c))]
        {
            miglab_model::result::write_atomic(&dir.join(name), body.as_bytes())
                .map_err(|source| CliError::Unwritable { path: dir.join(name), source })?;
        }
        println!("written: {0}/compare.md, {0}/compare.html, {0}/junit.xml", dir.display());
    }
    Ok(if c.findings() > 0 { Finished::Found } else { Finished::Clean })
}

/// `miglab trend`.
pub(super) fn trend_cmd(
    dir: &Path,
    out: Option<std::path::PathBuf>,
    threshold: f64,
) -> Result<Finished, CliError> {
    let mut names: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| CliError::Unreadable {
            path: dir.into(),
            source,
            hint: "; give the directory of nights (ci/nightly's)",
        })?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("results").is_dir())
        .collect();
    names.sort();
    if names.is_empty() {
        return Err(CliError::Args(format!(
            "no nights in {}: each is a directory with results/ in it (ci/nightly makes them)",
            dir.display()
        )));
    }
    let nights = names
        .iter()
        .map(|p| {
            let side = compare::load(&p.join("results"))
                .map_err(|source| CompareError::Io { path: p.clone(), source })?;
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            Ok(miglab_reports::trend::Night { name, side })
        })
        .collect::<Result<Vec<_>, CliError>>()?;
    let (html, series) = miglab_reports::trend::page(&nights, 1)
        .map_err(|e| CliError::Charts { what: "the trend", why: e.to_string() })?;
    let out = out.unwrap_or_else(|| dir.join("trend.html"));
    miglab_model::result::write_atomic(&out, html.as_bytes())
        .map_err(|source| CliError::Unwritable { path: out.clone(), source })?;
    let nights = &nights;
    let changes: Vec<String> = series
        .iter()
        .flat_map(|s| {
            s.changes.iter().map(move |&k| format!("  {} {}: from {}", s.group, s.metric, nights[k].name))
        })
        .collect();
    println!(
        "{} nights, {} series, {} change point(s) (E-divisive, false-discovery rate {} across the series) → {}",
        nights.len(),
        series.len(),
        changes.len(),
        miglab_reports::trend::FDR,
        out.display()
    );
    for c in changes {
        println!("{c}");
    }
    // The last night against the window before it: one sample, so a watch list, with what a
    // verdict would need.
    for w in miglab_reports::trend::watch(&series, nights.len(), 10, threshold, miglab_reports::trend::FDR) {
        println!(
            "  {} {}: last night {:.1}, window {}{}; a change of {:.0} % needs {} nights in a new regime, or {} runs per side interleaved in one night",
            w.group,
            w.metric,
            w.tonight,
            w.window_text(),
            if w.outside { " — OUTSIDE the window" } else { "" },
            threshold * 100.0,
            w.nights_needed,
            w.runs_needed
        );
    }
    let regressed = miglab_reports::trend::regressions(&series, threshold);
    for r in &regressed {
        println!(
            "REGRESSION {} {}: {:.1} → {:.1} from {}",
            r.group, r.metric, r.before, r.after, nights[r.night].name
        );
    }
    Ok(if regressed.is_empty() { Finished::Clean } else { Finished::Found })
}
