//! Whether a finding still holds: its scenario's runs judged against its claim — every run's
//! outcome one the scenario expects, and each bounded figure's median within its bound.

use crate::compare::{headline, is_metric};
use crate::stats::median;
use miglab_model::{Expect, Finding, RunResult, RunStatus, SweepCell};
use serde::Serialize;
use std::collections::BTreeMap;

/// The findings' own figures, beside those `compare` knows: what a claim about lost data,
/// failed I/O or QEMU's own estimate needs.
pub const OWN_FIGURES: [&str; 4] =
    ["verify.bad_blocks", "verify.inline_mismatches", "errors", "expected_downtime_ms"];

/// Whether a finding may bound `name`.
pub fn is_figure(name: &str) -> bool {
    OWN_FIGURES.contains(&name) || name.starts_with("max_us.") || is_metric(name)
}

/// A run's figures for findings: `compare`'s headline and the findings' own.
pub fn figures(r: &RunResult) -> BTreeMap<String, f64> {
    let mut m = headline(r);
    if let Some(v) = &r.verification {
        m.insert("verify.bad_blocks".into(), (v.mismatched + v.missing) as f64);
        m.insert("verify.inline_mismatches".into(), v.inline_mismatches as f64);
    }
    m.insert("errors".into(), r.ops.iter().map(|o| o.failed).sum::<u64>() as f64);
    for o in r.ops.iter().filter(|o| o.op != "verify" && o.count > 0) {
        m.insert(format!("max_us.{}", o.op), o.guest.max_us as f64);
    }
    if let Some(e) = r.migrations.iter().find(|m| !m.follow_up).and_then(|m| m.expected_downtime_ms) {
        m.insert("expected_downtime_ms".into(), e as f64);
    }
    m
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Holds,
    NoLongerHolds,
    /// Nothing was measured that could say: the run failed before its figures, or was cut off.
    CouldNotRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Holds => "holds",
            Status::NoLongerHolds => "no longer holds",
            Status::CouldNotRun => "could not run",
        }
    }
}

/// A finding judged: its status and, line by line, why.
#[derive(Debug, Clone, Serialize)]
pub struct Judged {
    pub status: Status,
    /// Each bound and the outcome: `qemu_downtime_ms 5025 (median of 1) ≥ 4000: yes`.
    pub evidence: Vec<String>,
}

/// Judges `finding` (with its scenario's `expect`) on the runs of its scenario.
pub fn judge(finding: &Finding, expect: Option<&Expect>, runs: &[RunResult]) -> Judged {
    let mut evidence = Vec::new();
    if runs.is_empty() {
        return Judged { status: Status::CouldNotRun, evidence: vec!["no run wrote a result".into()] };
    }
    let cut: Vec<String> = runs
        .iter()
        .filter(|r| r.status == RunStatus::Aborted || r.outcome.is_none())
        .map(|r| format!("run {}: {}", r.repetition, r.error.clone().unwrap_or_else(|| "no outcome".into())))
        .collect();
    if !cut.is_empty() {
        return Judged { status: Status::CouldNotRun, evidence: cut };
    }
    let mut holds = true;
    if let Some(e) = expect {
        let outcomes: Vec<String> =
            runs.iter().filter_map(|r| r.outcome).map(|o| o.as_str().to_string()).collect();
        let ok = runs.iter().filter_map(|r| r.outcome).all(|o| e.allows(o));
        holds &= ok;
        evidence.push(format!("outcome {} (expected {e}): {}", outcomes.join(", "), yes(ok)));
    }
    let each: Vec<BTreeMap<String, f64>> = runs.iter().map(figures).collect();
    for b in &finding.holds {
        let of_cell = |r: &RunResult| {
            b.cell.as_deref().is_none_or(|c| SweepCell::of_plan(&r.plan).is_some_and(|x| x.name() == c))
        };
        let values: Vec<f64> = runs
            .iter()
            .zip(&each)
            .filter(|(r, _)| of_cell(r))
            .filter_map(|(_, f)| f.get(&b.figure).copied())
            .collect();
        let name = match &b.cell {
            Some(c) => format!("{} [{c}]", b.figure),
            None => b.figure.clone(),
        };
        if values.is_empty() {
            return Judged {
                status: Status::CouldNotRun,
                evidence: vec![format!("{name}: not measured in any of the {} runs", runs.len())],
            };
        }
        let m = median(&values);
        let ok = b.admits(m);
        holds &= ok;
        evidence.push(format!(
            "{} {} (median of {}) {}: {}",
            name,
            round(m),
            values.len(),
            b.describe(),
            yes(ok)
        ));
    }
    Judged { status: if holds { Status::Holds } else { Status::NoLongerHolds }, evidence }
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

fn round(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::{Bound, MigrationRecord, Outcome, RunOutcome, Verification};

    fn finding(holds: Vec<Bound>) -> Finding {
        Finding {
            claim: "a storage stall at the switch-over is downtime".into(),
            doc: "#a-storage-stall".into(),
            seen_with: "QEMU 10.0.2".into(),
            seen_on: "2026-12-07".into(),
            holds,
        }
    }

    fn run(rep: u32, downtime: u64, outcome: RunOutcome) -> RunResult {
        let mut r = RunResult::new("f", rep, 1);
        r.status = RunStatus::Completed;
        r.outcome = Some(outcome);
        let mut m = MigrationRecord::sample(Outcome::Completed, 1000.0);
        m.downtime_ms = Some(downtime);
        m.expected_downtime_ms = Some(300);
        r.migrations.push(m);
        r.verification = Some(Verification { blocks: 10, mismatched: 2, missing: 1, ..Default::default() });
        r
    }

    fn at_least(figure: &str, v: f64) -> Bound {
        Bound { figure: figure.into(), cell: None, at_least: Some(v), at_most: None }
    }

    /// A claim across a sweep's cells bounds each cell's own runs.
    #[test]
    fn a_bound_on_a_cell_reads_that_cells_runs() {
        let mut runs = vec![run(1, 50, RunOutcome::Completed), run(2, 900, RunOutcome::Completed)];
        runs[0].plan = serde_json::json!({ "cell": "parallel=1" });
        runs[1].plan = serde_json::json!({ "cell": "parallel=4" });
        let bound =
            |cell: &str, lo: f64| Bound { cell: Some(cell.into()), ..at_least("qemu_downtime_ms", lo) };
        let j = judge(&finding(vec![bound("parallel=4", 500.0)]), None, &runs);
        assert_eq!(j.status, Status::Holds, "{:?}", j.evidence);
        assert_eq!(j.evidence, ["qemu_downtime_ms [parallel=4] 900 (median of 1) ≥ 500: yes"]);
        assert_eq!(
            judge(&finding(vec![bound("parallel=1", 500.0)]), None, &runs).status,
            Status::NoLongerHolds
        );
        assert_eq!(judge(&finding(vec![bound("parallel=2", 1.0)]), None, &runs).status, Status::CouldNotRun);
    }

    #[test]
    fn a_claim_holds_on_the_median_and_its_outcome() {
        let f = finding(vec![at_least("qemu_downtime_ms", 4000.0), at_least("verify.bad_blocks", 3.0)]);
        let expect = Expect(vec![RunOutcome::CompletedDegraded]);
        // One short run among three: the median decides, not the worst.
        let runs = [
            run(1, 5025, RunOutcome::CompletedDegraded),
            run(2, 900, RunOutcome::CompletedDegraded),
            run(3, 5100, RunOutcome::CompletedDegraded),
        ];
        let j = judge(&f, Some(&expect), &runs);
        assert_eq!(j.status, Status::Holds, "{:?}", j.evidence);
        assert!(
            j.evidence.iter().any(|l| l == "qemu_downtime_ms 5025 (median of 3) ≥ 4000: yes"),
            "{:?}",
            j.evidence
        );
        // The bound missed: no longer holds, and says by what.
        let j = judge(&finding(vec![at_least("qemu_downtime_ms", 6000.0)]), Some(&expect), &runs);
        assert_eq!(j.status, Status::NoLongerHolds);
        assert!(j.evidence.iter().any(|l| l.ends_with("≥ 6000: NO")), "{:?}", j.evidence);
        // Another outcome than the claim's: no longer holds, whatever the figures.
        let other = [run(1, 5025, RunOutcome::Completed)];
        let j = judge(&f, Some(&expect), &other);
        assert_eq!(j.status, Status::NoLongerHolds);
        assert!(
            j.evidence[0].starts_with("outcome completed (expected completed-degraded): NO"),
            "{:?}",
            j.evidence
        );
    }

    #[test]
    fn nothing_measured_is_could_not_run_never_holds() {
        let f = finding(vec![at_least("qemu_downtime_ms", 1.0)]);
        assert_eq!(judge(&f, None, &[]).status, Status::CouldNotRun);
        let mut cut = run(1, 10, RunOutcome::Completed);
        cut.outcome = None;
        cut.error = Some("the guest never said hello".into());
        let j = judge(&f, None, &[cut]);
        assert_eq!(j.status, Status::CouldNotRun);
        assert!(j.evidence[0].contains("never said hello"));
        // A figure no run measured.
        let j = judge(
            &finding(vec![at_least("downtime.resume_ms", 1.0)]),
            None,
            &[run(1, 10, RunOutcome::Completed)],
        );
        assert_eq!(j.status, Status::CouldNotRun, "{:?}", j.evidence);
    }

    #[test]
    fn the_findings_own_figures_are_known_and_measured() {
        let f = figures(&run(1, 10, RunOutcome::Completed));
        assert_eq!(f["verify.bad_blocks"], 3.0);
        assert_eq!(f["expected_downtime_ms"], 300.0);
        assert_eq!(f["errors"], 0.0);
        for name in OWN_FIGURES.iter().copied().chain([
            "qemu_downtime_ms",
            "downtime.transfer_and_load_ms",
            "max_us.stat",
        ]) {
            assert!(is_figure(name), "{name}");
        }
        assert!(!is_figure("downtime_ms"));
    }
}
