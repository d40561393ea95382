//! A finding a scenario re-checks (`[finding]` in `scenarios/findings/*.toml`): the claim as
//! written up, what it was first seen with, and the bounds on the figures that make it. The
//! scenario's `expect` is the outcome part of the claim; `miglab findings` runs the scenario
//! and says whether the claim still holds with today's builds.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// The claim, one sentence, as `docs/findings.md` states it.
    pub claim: String,
    /// Its write-up: a heading's anchor in `docs/findings.md` (`#a-storage-stall-…`).
    pub doc: String,
    /// The builds and the machine it was first measured with, and when (`2026-12-07`).
    pub seen_with: String,
    /// The date it was first measured (`2026-12-07`).
    pub seen_on: String,
    /// What the figures must show, each on the median over the repetitions.
    #[serde(default)]
    pub holds: Vec<Bound>,
}

/// One figure's bound: at least, at most, or both. A figure is any that `miglab compare`
/// knows (`qemu_downtime_ms`, `downtime.transfer_and_load_ms`, `p99_us.read`, …) or one of
/// the findings' own (`verify.bad_blocks`, `errors`, `expected_downtime_ms`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bound {
    /// The figure, as `miglab compare` names it or one of the findings' own.
    pub figure: String,
    /// A sweep's finding bounds a figure of one cell (its name, as in `sweep.csv`): a claim
    /// that compares cells ("all at once is faster than one at a time") bounds each side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<String>,
    /// The median over the runs is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_least: Option<f64>,
    /// The median over the runs is at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_most: Option<f64>,
}

impl Bound {
    /// Whether `v` is within the bound.
    pub fn admits(&self, v: f64) -> bool {
        self.at_least.is_none_or(|lo| v >= lo) && self.at_most.is_none_or(|hi| v <= hi)
    }

    /// `≥ 4000`, `≤ 300`, `in 1–2`.
    pub fn describe(&self) -> String {
        match (self.at_least, self.at_most) {
            (Some(lo), Some(hi)) => format!("in {lo}–{hi}"),
            (Some(lo), None) => format!("≥ {lo}"),
            (None, Some(hi)) => format!("≤ {hi}"),
            (None, None) => "any".into(),
        }
    }
}
