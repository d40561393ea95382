//! `miglab compare`: two sets of runs, scenario by scenario (and sweep cell by cell). The unit
//! is one run: the thousands of ops inside a run only make that run's figure.
//!
//! First what happened: each side's outcome mix (completed / degraded / failed / lost data),
//! the failure rates compared by Fisher's exact test; lost data, or failures the baseline does
//! not have, are a finding whatever the test says. Then how fast, on the runs that completed,
//! metric by metric and migration by migration: one statistic per call, the Hodges–Lehmann
//! shift, tested by the rank sum ([`crate::stats`]). A change is called when p < α and the
//! shift exceeds the band (the noise threshold relative to the baseline median, and the
//! metric's floor); `unchanged` only when the shift's interval lies inside the band; anything
//! else is `inconclusive`, with the smallest change these runs could have detected. And only
//! when the two sides differ in nothing but what was declared to vary.

use crate::stats;
use crate::sweep::hop_figures;
use miglab_model::result::RunResult;
use miglab_model::{RunStatus, SweepCell};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a metric is and how a change of it is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// `qemu_downtime_ms`, `p99_us.read`, `qemu_downtime_ms.hop2`, ...
    pub key: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// The smallest absolute shift that can be called a change.
    pub floor: f64,
}

/// Whether a shift counts as a change against `band`, the smallest shift that does. Reaching
/// the band is enough: metrics that move in whole steps (a migration over its limit, a pre-copy
/// pass, a 10 % throttle step) shift by exactly their floor, and a consistent step must be
/// callable. `unchanged` is its complement: an interval strictly inside the band.
pub fn reaches(shift: f64, band: f64) -> bool {
    shift.abs() >= band
}

/// The metrics every run has (and `p99_us.<op>` per op kind; `.hopN` for the N-th migration),
/// then pre-copy's, where QEMU reported them: the dirty rate it measured before the hop, the
/// rate the link achieved, the passes and the highest auto-converge throttle.
pub const METRIC_KINDS: [&str; 9] = [
    "qemu_downtime_ms",
    "heartbeat_gap_ms",
    "io_stall_ms",
    "total_ms",
    "ops_per_s",
    "dirty_rate_mib_s",
    "achieved_mib_s",
    "precopy_passes",
    "throttle_pct",
];

/// A run of several guests' figures (`fleet.evacuation_ms.hop2` for the second hop).
pub const FLEET_KINDS: [&str; 4] =
    ["fleet.evacuation_ms", "fleet.qemu_downtime_ms.p50", "fleet.qemu_downtime_ms.max", "fleet.over_limit"];

/// What two sides can differ in.
pub const VARIABLES: [&str; 10] =
    ["qemu", "virtiofsd", "kernel", "image", "ceph", "miglab", "scenario", "host", "accelerator", "topology"];

/// A metric key without its guest and migration suffixes: `qemu_downtime_ms.hop2.g3` →
/// `qemu_downtime_ms`.
pub fn kind(key: &str) -> &str {
    split_key(key).0
}

/// A metric key's kind, migration and guest: `qemu_downtime_ms.hop2.g3` →
/// (`qemu_downtime_ms`, 2, 3); a suffix left out is the first (hop 1, guest 1).
pub fn split_key(key: &str) -> (&str, u32, u32) {
    let (key, guest) = match key.rsplit_once(".g").map(|(k, n)| (k, n.parse::<u32>())) {
        Some((k, Ok(g))) => (k, g),
        _ => (key, 1),
    };
    match key.rsplit_once(".hop").map(|(k, n)| (k, n.parse::<u32>())) {
        Some((k, Ok(h))) => (k, h, guest),
        _ => (key, 1, guest),
    }
}

/// Whether `key` names a figure compare judges: one of [`METRIC_KINDS`] or [`FLEET_KINDS`], a p99 per op kind, or
/// a part of QEMU's downtime (any with its `.hopN` / `.gN` suffixes).
pub fn is_metric(key: &str) -> bool {
    METRIC_KINDS.contains(&kind(key))
        || FLEET_KINDS.contains(&kind(key))
        || key.starts_with("p99_us.")
        || is_downtime_part(kind(key))
}

/// Whether `kind` is a part of QEMU's downtime (`downtime.<part>_ms`, virtiofsd's state
/// `downtime.vhost_user_fs_save_ms` / `_load_ms`).
pub fn is_downtime_part(kind: &str) -> bool {
    let Some(name) = kind.strip_prefix("downtime.").and_then(|k| k.strip_suffix("_ms")) else {
        return false;
    };
    miglab_model::PartName::ALL.iter().any(|p| p.as_str() == name)
        || ["vhost_user_fs", "vhost_user_fs_save", "vhost_user_fs_load", "destination_behind"].contains(&name)
}

/// The default floors: a downtime or stall moves by 2 ms before it counts, a total migration
/// time by 20 ms, a p99 by 50 µs, a throughput by 1 op/s; QEMU's dirty rate (whole MiB/s) by
/// 2 MiB/s, the achieved rate by 1 MiB/s, the passes by 1, the throttle by one of
/// auto-converge's default 10 % steps. A higher dirty rate counts as worse: the same guest
/// load dirtying more is what makes pre-copy fail to converge.
pub fn metric(key: &str) -> Metric {
    let (unit, higher_is_better, floor) = match kind(key) {
        "qemu_downtime_ms" | "heartbeat_gap_ms" | "io_stall_ms" => ("ms", false, 2.0),
        "fleet.qemu_downtime_ms.p50" | "fleet.qemu_downtime_ms.max" => ("ms", false, 2.0),
        "total_ms" | "fleet.evacuation_ms" => ("ms", false, 20.0),
        "fleet.over_limit" => ("migrations", false, 1.0),
        "ops_per_s" => ("ops/s", true, 1.0),
        "dirty_rate_mib_s" => ("MiB/s", false, 2.0),
        "achieved_mib_s" => ("MiB/s", true, 1.0),
        "precopy_passes" => ("passes", false, 1.0),
        "throttle_pct" => ("%", false, 10.0),
        // A job's completed ops in the same time: more is better.
        k if k.starts_with("ops.") => ("ops", true, 1.0),
        // A part of the downtime moves by half a millisecond before it counts.
        k if is_downtime_part(k) => ("ms", false, 0.5),
        _ => ("µs", false, 50.0),
    };
    Metric { key: key.into(), unit, higher_is_better, floor }
}

/// One run's headline values: every migration's downtimes, stall, total time and throughput
/// in its window (the first migration's unsuffixed, the N-th's with `.hopN`; follow-ups after
/// a failure aside), and the p99 of every workload op kind (guest clock) — per job too, for
/// a job file of several jobs. A run of several guests: guest 1's so, every other guest's with
/// `.gN`, and the fleet's (`fleet.evacuation_ms`, `.hopN`; `fleet.qemu_downtime_ms.p50`,
/// `.max`; `fleet.over_limit`).
pub fn headline(r: &RunResult) -> BTreeMap<String, f64> {
    let mut m = guest_headline(r);
    for g in r.guests.iter().filter(|g| g.guest > 1) {
        let v = crate::fleet::view(r, g);
        m.extend(guest_headline(&v).into_iter().map(|(k, x)| (format!("{k}.g{}", g.guest), x)));
    }
    if let Some(f) = &r.fleet {
        for (i, e) in f.evacuations.iter().filter(|e| e.hop <= 1000).enumerate() {
            let suffix = if i == 0 { String::new() } else { format!(".hop{}", i + 1) };
            m.insert(format!("fleet.evacuation_ms{suffix}"), e.evacuation_ms);
        }
        if let Some(d) = &f.qemu_downtime_ms {
            m.insert("fleet.qemu_downtime_ms.p50".into(), d.p50);
            m.insert("fleet.qemu_downtime_ms.max".into(), d.max);
        }
        m.insert("fleet.over_limit".into(), f64::from(f.over_limit));
    }
    m
}

fn guest_headline(r: &RunResult) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (i, mig) in r.migrations.iter().filter(|m| !m.follow_up).enumerate() {
        let f = hop_figures(r, mig);
        let suffix = if i == 0 { String::new() } else { format!(".hop{}", i + 1) };
        for (k, v) in [
            ("qemu_downtime_ms", f.qemu_downtime_ms),
            ("heartbeat_gap_ms", f.heartbeat_gap_ms),
            ("io_stall_ms", f.io_stall_ms),
            ("total_ms", f.total_ms),
            ("ops_per_s", f.window_ops_per_s),
            ("dirty_rate_mib_s", f.dirty_rate_mib_s),
            ("achieved_mib_s", f.achieved_mib_s),
            ("precopy_passes", f.passes),
            ("throttle_pct", f.throttle_pct),
        ] {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                m.insert(format!("{k}{suffix}"), v);
            }
        }
        for (k, v) in mig.downtime_parts.iter().flat_map(|p| p.figures()) {
            m.insert(format!("{k}{suffix}"), v);
        }
    }
    for o in r.ops.iter().filter(|o| o.op != "verify" && o.count > 0) {
        m.insert(format!("p99_us.{}", o.op), o.guest.p99_us as f64);
    }
    // A job file's jobs, each apart (only when there are several: one job is the whole run).
    for j in r.jobs.iter().filter(|_| r.jobs.len() > 1) {
        for o in j.ops.iter().filter(|o| o.count > 0) {
            m.insert(format!("p99_us.{}.{}", j.name, o.op), o.guest.p99_us as f64);
            m.insert(format!("ops.{}.{}", j.name, o.op), o.count as f64);
        }
    }
    m
}

/// Where a run belongs: its scenario, and its sweep cell if it has one.
pub fn group(r: &RunResult) -> String {
    match SweepCell::of_plan(&r.plan) {
        Some(c) => format!("{} [{}]", r.scenario, c.name()),
        None => r.scenario.clone(),
    }
}

/// What happened to a run, for the outcome mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    Completed,
    /// Completed, but the guest saw errors or a long stall.
    Degraded,
    /// Failed or aborted (or an outcome the scenario did not expect).
    Failed,
    /// Data the guest wrote is gone or wrong.
    LostData,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Completed, Class::Degraded, Class::Failed, Class::LostData];
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Completed => "completed",
            Class::Degraded => "degraded",
            Class::Failed => "failed",
            Class::LostData => "lost data",
        }
    }
}

/// The class of one run: lost data first (of any guest, blocks or memory pages; whatever else
/// happened), then its status.
pub fn class(r: &RunResult) -> Class {
    if crate::verdict::lost_data(r) {
        Class::LostData
    } else if r.status != RunStatus::Completed {
        Class::Failed
    } else if r.outcome == Some(miglab_model::outcome::RunOutcome::CompletedDegraded) {
        Class::Degraded
    } else {
        Class::Completed
    }
}

/// How many runs of a side fell in each class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mix {
    pub counts: [usize; 4],
}

impl Mix {
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a RunResult>) -> Self {
        let mut m = Mix::default();
        for r in runs {
            m.counts[class(r) as usize] += 1;
        }
        m
    }
    pub fn get(&self, c: Class) -> usize {
        self.counts[c as usize]
    }
    pub fn total(&self) -> usize {
        self.counts.iter().sum()
    }
    /// Runs that failed or lost data.
    pub fn bad(&self) -> usize {
        self.get(Class::Failed) + self.get(Class::LostData)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = Class::ALL
            .iter()
            .filter(|c| self.get(**c) > 0)
            .map(|c| format!("{} {}", self.get(*c), c.as_str()))
            .collect();
        f.write_str(&if parts.is_empty() { "no runs".into() } else { parts.join(", ") })
    }
}

/// The runs of one side.
#[derive(Debug, Clone, Default)]
pub struct Side {
    /// Every readable result: completed, failed and aborted.
    pub runs: Vec<RunResult>,
    /// Files left out, and why (unreadable, not a result).
    pub skipped: Vec<(PathBuf, String)>,
}

impl Side {
    /// The runs that completed: what figures are compared on.
    pub fn completed(&self) -> impl Iterator<Item = &RunResult> {
        self.runs.iter().filter(|r| r.status == RunStatus::Completed)
    }
}

/// Every `result.json` below `dir` (symbolic links followed: a pool of nights can be a
/// directory of links), whatever its status.
pub fn load(dir: &Path) -> std::io::Result<Side> {
    let mut side = Side::default();
    walk(dir, 0, &mut side)?;
    Ok(side)
}

fn walk(dir: &Path, depth: usize, side: &mut Side) -> std::io::Result<()> {
    let f = dir.join("result.json");
    if f.is_file() {
        match std::fs::read(&f).map_err(|e| e.to_string()).and_then(|b| {
            serde_json::from_slice::<RunResult>(&b).map_err(|e| format!("not a miglab result: {e}"))
        }) {
            Ok(r) => side.runs.push(r),
            Err(e) => side.skipped.push((f, e)),
        }
        return Ok(());
    }
    if depth > 8 {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries.into_iter().filter(|p| p.is_dir()) {
        walk(&p, depth + 1, side)?;
    }
    Ok(())
}

/// The runs of one sweep cell, as if they were the scenario's own: to compare two cells of
/// one sweep (a sweep across two QEMU builds: `--baseline-cell`, `--candidate-cell`).
pub fn pick_cell(side: &Side, cell: &str) -> Side {
    let runs = side
        .runs
        .iter()
        .filter(|r| SweepCell::of_plan(&r.plan).is_some_and(|c| c.name() == cell))
        .cloned()
        .map(|mut r| {
            if let Some(p) = r.plan.as_object_mut() {
                p.remove("cell");
            }
            r
        })
        .collect();
    Side { runs, skipped: side.skipped.clone() }
}

/// How changes are called.
#[derive(Debug, Clone)]
pub struct Options {
    /// The significance level of the tests; the shift's interval is at 1 − α.
    pub alpha: f64,
    /// The relative noise threshold (0.10: a change under 10 % is noise), per metric below.
    pub threshold: f64,
    pub thresholds: BTreeMap<String, f64>,
    /// Absolute floors per metric, over [`metric`]'s.
    pub floors: BTreeMap<String, f64>,
    /// Firecracker's rule: a change stands only if the same metric moved the same way in at
    /// least two groups.
    pub family: bool,
    /// What the two sides were meant to differ in ([`VARIABLES`]).
    pub variables: Vec<String>,
    /// Compare although the sides differ in something undeclared.
    pub allow_different: bool,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            alpha: 0.01,
            threshold: 0.10,
            thresholds: BTreeMap::new(),
            floors: BTreeMap::new(),
            family: false,
            variables: Vec::new(),
            allow_different: false,
            seed: 1,
        }
    }
}

impl Options {
    /// The band inside which a shift is noise, for a metric whose baseline median is `base`.
    pub fn band(&self, m: &Metric, base: f64) -> f64 {
        let t = self.thresholds.get(&m.key).or_else(|| self.thresholds.get(kind(&m.key))).copied();
        let floor =
            self.floors.get(&m.key).or_else(|| self.floors.get(kind(&m.key))).copied().unwrap_or(m.floor);
        let rel = t.unwrap_or(self.threshold) * base.abs();
        if rel.is_finite() {
            rel.max(floor)
        } else {
            floor
        }
    }
}

/// What the comparison says of one metric, or of one group's outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// Runs failed or lost data on the candidate side that the baseline does not show.
    NewFailures,
    Regression,
    Improvement,
    /// The data cannot tell: too few runs, or too wide a spread.
    Inconclusive,
    /// The shift's interval lies inside the noise band.
    Unchanged,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::NewFailures => "NEW FAILURES",
            Call::Regression => "REGRESSION",
            Call::Improvement => "improvement",
            Call::Inconclusive => "inconclusive",
            Call::Unchanged => "unchanged",
        }
    }
    /// A finding that fails `compare` (exit 1, a JUnit failure).
    pub fn fails(self) -> bool {
        matches!(self, Call::NewFailures | Call::Regression)
    }
    fn is_change(self) -> bool {
        matches!(self, Call::Regression | Call::Improvement)
    }
}

/// One metric of one group.
#[derive(Debug, Clone)]
pub struct Row {
    pub group: String,
    pub metric: Metric,
    pub base: Vec<f64>,
    pub cand: Vec<f64>,
    pub base_median: f64,
    pub cand_median: f64,
    /// The Hodges–Lehmann shift and its 1 − α interval, absolute.
    pub shift: stats::Shift,
    /// The shift and its interval relative to the baseline median.
    pub change: f64,
    pub ci: (f64, f64),
    pub p: f64,
    /// The band (absolute) inside which a shift is noise.
    pub band: f64,
    /// The smallest shift (absolute) these runs at this spread could call: the detectable
    /// shift, at least the band.
    pub detectable: f64,
    /// Runs per side that would resolve a shift of the band's size.
    pub needed: Option<usize>,
    pub call: Call,
    /// Why: the test, the band, the interval, the family rule.
    pub why: String,
}

/// The outcome mix of one group.
#[derive(Debug, Clone)]
pub struct OutcomeRow {
    pub group: String,
    pub base: Mix,
    pub cand: Mix,
    /// Fisher's exact test of the failure (failed or lost data) rates.
    pub p: f64,
    pub call: Call,
    pub why: String,
}

/// Something the two sides differ in.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub what: String,
    pub base: Vec<String>,
    pub cand: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Comparison {
    pub outcomes: Vec<OutcomeRow>,
    pub rows: Vec<Row>,
    pub differences: Vec<Difference>,
    /// Groups on one side only.
    pub unmatched: Vec<String>,
    pub skipped: Vec<(PathBuf, String)>,
    pub options: Options,
}

impl Comparison {
    fn count(&self, c: Call) -> usize {
        self.rows.iter().filter(|r| r.call == c).count()
            + self.outcomes.iter().filter(|r| r.call == c).count()
    }
    pub fn regressions(&self) -> usize {
        self.count(Call::Regression)
    }
    pub fn improvements(&self) -> usize {
        self.count(Call::Improvement)
    }
    pub fn inconclusive(&self) -> usize {
        self.count(Call::Inconclusive)
    }
    pub fn new_failures(&self) -> usize {
        self.count(Call::NewFailures)
    }
    /// What fails the comparison: regressions and new failures.
    pub fn findings(&self) -> usize {
        self.regressions() + self.new_failures()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("no runs in {}{}", .0.display(), if .1.is_empty() { String::new() } else { format!(" ({} left out: {})", .1.len(), .1.iter().take(3).map(|(p, why)| format!("{} {why}", p.display())).collect::<Vec<_>>().join(", ")) })]
    Empty(PathBuf, Vec<(PathBuf, String)>),
    #[error("no scenario is on both sides: baseline has {}; candidate has {}", .0.join(", "), .1.join(", "))]
    NothingInCommon(Vec<String>, Vec<String>),
    #[error("too few repetitions for p < {alpha}: {}. A rank test of n against m runs cannot give a p below 2/C(n+m, n); with equal sides it needs {needed} runs per side (`miglab run ... --repetitions {needed}`), or a larger --alpha", .groups.join("; "))]
    TooFew { alpha: f64, needed: usize, groups: Vec<String> },
    #[error("the two sides differ in more than {}:\n{}\nDeclare what was meant to vary with --variable ({}), or compare anyway with --allow-different", if .declared.is_empty() { "nothing (none declared)".to_string() } else { .declared.join(", ") }, .undeclared.iter().map(|d| format!("  {}: baseline {} · candidate {}", d.what, listed(&d.base), listed(&d.cand))).collect::<Vec<_>>().join("\n"), VARIABLES.join(", "))]
    Undeclared { declared: Vec<String>, undeclared: Vec<Difference> },
    #[error("could not read {}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

/// Values for a message; "—" for none (a scenario line on one side only).
fn listed(v: &[String]) -> String {
    if v.is_empty() {
        "—".into()
    } else {
        v.join(" | ")
    }
}

fn by_group(runs: &[RunResult]) -> BTreeMap<String, Vec<&RunResult>> {
    let mut m: BTreeMap<String, Vec<&RunResult>> = BTreeMap::new();
    for r in runs {
        m.entry(group(r)).or_default().push(r);
    }
    m
}

/// Compares `base` with `cand`.
pub fn compare(base: &Side, cand: &Side, o: &Options) -> Result<Comparison, CompareError> {
    let differences = differences(&base.runs, &cand.runs);
    let undeclared: Vec<Difference> =
        differences.iter().filter(|d| !o.variables.contains(&d.what)).cloned().collect();
    if !undeclared.is_empty() && !o.allow_different {
        return Err(CompareError::Undeclared { declared: o.variables.clone(), undeclared });
    }
    let (gb, gc) = (by_group(&base.runs), by_group(&cand.runs));
    let common: Vec<&String> = gb.keys().filter(|g| gc.contains_key(*g)).collect();
    if common.is_empty() {
        return Err(CompareError::NothingInCommon(
            gb.keys().cloned().collect(),
            gc.keys().cloned().collect(),
        ));
    }
    // Too few runs in all (whatever their outcome) is bad input; too few that completed is an
    // inconclusive figure, judged below, because the failures are themselves a finding.
    let too_few: Vec<String> = common
        .iter()
        .filter(|g| stats::min_p(gb[**g].len(), gc[**g].len()) >= o.alpha)
        .map(|g| {
            let (n, m) = (gb[*g].len(), gc[*g].len());
            format!("{g}: {n} against {m} (smallest p {:.3})", stats::min_p(n, m))
        })
        .collect();
    if !too_few.is_empty() {
        return Err(CompareError::TooFew {
            alpha: o.alpha,
            needed: stats::runs_needed(o.alpha),
            groups: too_few,
        });
    }
    let mut outcomes = Vec::new();
    let mut rows = Vec::new();
    for (gi, g) in common.iter().enumerate() {
        outcomes.push(judge_outcomes(g, Mix::of(gb[*g].iter().copied()), Mix::of(gc[*g].iter().copied()), o));
        let like = |runs: &[&RunResult]| -> Vec<BTreeMap<String, f64>> {
            runs.iter().filter(|r| r.status == RunStatus::Completed).map(|r| headline(r)).collect()
        };
        let (hb, hc) = (like(&gb[*g]), like(&gc[*g]));
        let keys: BTreeSet<&String> = hb.iter().chain(&hc).flat_map(|h| h.keys()).collect();
        for (ki, k) in keys.into_iter().enumerate() {
            let vals = |side: &[BTreeMap<String, f64>]| {
                side.iter().filter_map(|h| h.get(k).copied()).collect::<Vec<f64>>()
            };
            let seed = o.seed ^ ((gi as u64) << 32) ^ ki as u64;
            rows.push(judge(g, metric(k), vals(&hb), vals(&hc), o, seed));
        }
    }
    if o.family {
        family_rule(&mut rows);
    }
    let unmatched = gb
        .keys()
        .chain(gc.keys())
        .filter(|g| !(gb.contains_key(*g) && gc.contains_key(*g)))
        .cloned()
        .collect();
    let mut skipped = base.skipped.clone();
    skipped.extend(cand.skipped.iter().cloned());
    Ok(Comparison { outcomes, rows, differences, unmatched, skipped, options: o.clone() })
}

/// The outcome mix of one group: lost data the baseline does not show, or failures it does not
/// have, are new failures whatever the test says (a lost block is never noise); otherwise a
/// failure rate that differs by Fisher's test at α is a regression or an improvement.
pub fn judge_outcomes(group: &str, base: Mix, cand: Mix, o: &Options) -> OutcomeRow {
    let (n, m) = (base.total(), cand.total());
    let (x, y) = (base.bad(), cand.bad());
    let p = stats::fisher_p(x, n, y, m);
    let rate = |k: usize, t: usize| format!("{k}/{t}");
    let (call, why) = if cand.get(Class::LostData) > 0 && base.get(Class::LostData) == 0 {
        (
            Call::NewFailures,
            format!("{} candidate run(s) lost data; no baseline run did", cand.get(Class::LostData)),
        )
    } else if y > 0 && x == 0 {
        (
            Call::NewFailures,
            format!(
                "{} of {m} candidate runs failed, none of {n} baseline runs (Fisher p = {p:.3}{})",
                y,
                if p < o.alpha { "" } else { ": too few runs to call it a rate, a finding all the same" }
            ),
        )
    } else if p < o.alpha {
        let worse = y as f64 / m as f64 > x as f64 / n as f64;
        (
            if worse { Call::Regression } else { Call::Improvement },
            format!("failures {} → {} (Fisher p = {p:.4})", rate(x, n), rate(y, m)),
        )
    } else if x == 0 && y == 0 {
        (Call::Unchanged, "no run failed or lost data on either side".into())
    } else {
        (
            Call::Inconclusive,
            format!("failures {} → {}: Fisher p = {p:.3} is not below {}", rate(x, n), rate(y, m), o.alpha),
        )
    };
    OutcomeRow { group: group.into(), base, cand, p, call, why }
}

/// One metric's call: the Hodges–Lehmann shift, its 1 − α interval and the rank-sum test.
pub fn judge(group: &str, metric: Metric, base: Vec<f64>, cand: Vec<f64>, o: &Options, seed: u64) -> Row {
    let (bm, cm) = (stats::median(&base), stats::median(&cand));
    let (n, m) = (base.len(), cand.len());
    let enough = stats::min_p(n, m) < o.alpha;
    let shift = stats::hodges_lehmann(&base, &cand, 1.0 - o.alpha);
    let p = if enough { stats::rank_sum_p(&base, &cand, seed) } else { 1.0 };
    let rel = |v: f64| if bm != 0.0 { v / bm.abs() } else { f64::NAN };
    let band = o.band(&metric, bm);
    let sigma = stats::pooled_spread(&base, &cand);
    let detectable = stats::detectable_shift(n, m, sigma, o.alpha).max(band);
    let needed = stats::runs_for(band, sigma, o.alpha);
    let (est, lo, hi) = (shift.estimate, shift.lo, shift.hi);
    let worse = (est > 0.0) != metric.higher_is_better;
    let show = |v: f64| format!("{} {}", num(v), metric.unit);
    let band_text = format!("±{}", show(band));
    let resolve = match needed {
        Some(k) if k > n.min(m) => format!("; {k} runs per side would resolve {band_text}"),
        Some(_) => String::new(),
        None => "; not even 1000 runs per side would resolve it at this spread".into(),
    };
    let (call, why) = if !enough || est.is_nan() {
        (Call::Inconclusive, format!("{n} against {m} completed runs cannot reach p < {}{resolve}", o.alpha))
    } else if p < o.alpha && reaches(est, band) {
        (if worse { Call::Regression } else { Call::Improvement }, String::new())
    } else if !reaches(lo, band) && !reaches(hi, band) {
        (Call::Unchanged, format!("the shift's interval [{}, {}] is inside {band_text}", num(lo), num(hi)))
    } else {
        let test = if p < o.alpha {
            format!("p = {p:.3}, but a shift of {} is inside {band_text}", show(est))
        } else {
            format!("p = {p:.3} is not below {}", o.alpha)
        };
        (
            Call::Inconclusive,
            format!(
                "{test}; the interval [{}, {}] reaches beyond {band_text}: these runs detect only shifts over {} ({}){resolve}",
                num(lo),
                num(hi),
                show(detectable),
                pct(rel(detectable)).trim_start_matches('+'),
            ),
        )
    };
    Row {
        group: group.into(),
        metric,
        base,
        cand,
        base_median: bm,
        cand_median: cm,
        shift,
        change: rel(est),
        ci: (rel(lo), rel(hi)),
        p,
        band,
        detectable,
        needed,
        call,
        why,
    }
}

/// Firecracker's family rule: "a true performance change has never shown up in just a single
/// test" — a call stands only where the same metric moved the same way in another group.
fn family_rule(rows: &mut [Row]) {
    let mut seen: BTreeMap<(String, Call), usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.call.is_change()) {
        *seen.entry((r.metric.key.clone(), r.call)).or_default() += 1;
    }
    for r in rows.iter_mut().filter(|r| r.call.is_change()) {
        if seen[&(r.metric.key.clone(), r.call)] < 2 {
            r.why = format!("family rule: {} moved this way in this group only", r.metric.key);
            r.call = Call::Inconclusive;
        }
    }
}

mod identity;
pub use identity::differences;
mod render;
pub use render::{junit, markdown, text};
use render::{num, pct};
mod page;
pub use page::page;

#[cfg(test)]
mod tests;
