//! `miglab compare`: two sets of runs, scenario by scenario (and sweep cell by cell), metric by
//! metric. The unit is one run: the thousands of ops inside a run only make that run's figure.
//! A change is called only when the permutation test says p < α, the relative change of the
//! medians exceeds the noise threshold and the absolute difference exceeds the metric's floor;
//! with the family rule, also only when the same metric moved the same way in another group.
//! And only when the two sides differ in nothing but what was declared to vary.

use crate::html::esc;
use crate::result::RunResult;
use crate::stats;
use crate::sweep::figures;
use crate::RunStatus;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a metric is and how a change of it is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// `qemu_downtime_ms`, `p99_us.read`, ...
    pub key: String,
    pub unit: &'static str,
    pub higher_is_better: bool,
    /// The smallest absolute difference of the medians that can be called a change.
    pub floor: f64,
}

/// The metrics every run has (and `p99_us.<op>` per op kind).
pub const METRIC_KINDS: [&str; 5] =
    ["qemu_downtime_ms", "heartbeat_gap_ms", "io_stall_ms", "total_ms", "ops_per_s"];

/// What two sides can differ in.
pub const VARIABLES: [&str; 9] =
    ["qemu", "virtiofsd", "kernel", "ceph", "miglab", "scenario", "host", "accelerator", "topology"];

/// The default floors: a downtime or stall moves by 2 ms before it counts, a total migration
/// time by 20 ms, a p99 by 50 µs, a throughput by 1 op/s.
pub fn metric(key: &str) -> Metric {
    let (unit, higher_is_better, floor) = match key {
        "qemu_downtime_ms" | "heartbeat_gap_ms" | "io_stall_ms" => ("ms", false, 2.0),
        "total_ms" => ("ms", false, 20.0),
        "ops_per_s" => ("ops/s", true, 1.0),
        _ => ("µs", false, 50.0),
    };
    Metric { key: key.into(), unit, higher_is_better, floor }
}

/// One run's headline values: the first migration's downtimes, stall and total time, the
/// throughput in its window, and the p99 of every op kind (guest clock).
pub fn headline(r: &RunResult) -> BTreeMap<String, f64> {
    let f = figures(r);
    let mut m = BTreeMap::new();
    for (k, v) in [
        ("qemu_downtime_ms", f.qemu_downtime_ms),
        ("heartbeat_gap_ms", f.heartbeat_gap_ms),
        ("io_stall_ms", f.io_stall_ms),
        ("total_ms", f.total_ms),
        ("ops_per_s", f.window_ops_per_s),
    ] {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            m.insert(k.to_string(), v);
        }
    }
    for o in r.ops.iter().filter(|o| o.op != "verify" && o.count > 0) {
        m.insert(format!("p99_us.{}", o.op), o.guest.p99_us as f64);
    }
    m
}

/// Where a run belongs: its scenario, and its sweep cell if it has one.
pub fn group(r: &RunResult) -> String {
    match r.plan.get("cell").and_then(|c| c.as_str()) {
        Some(c) => format!("{} [{c}]", r.scenario),
        None => r.scenario.clone(),
    }
}

/// The runs of one side.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub runs: Vec<RunResult>,
    /// Results left out, and why (not completed, unreadable).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Every `result.json` below `dir` (symbolic links followed: a pool of nights can be a
/// directory of links). Only completed runs count.
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
            Ok(r) if r.status == RunStatus::Completed => side.runs.push(r),
            Ok(r) => side.skipped.push((f, format!("{:?}", r.status).to_lowercase())),
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
        .filter(|r| r.plan.get("cell").and_then(|c| c.as_str()) == Some(cell))
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
    /// The significance level of the permutation test.
    pub alpha: f64,
    /// The relative noise threshold (0.10: a change under 10 % is noise), per metric below.
    pub threshold: f64,
    pub thresholds: BTreeMap<String, f64>,
    /// Absolute floors per metric, over [`metric`]'s.
    pub floors: BTreeMap<String, f64>,
    /// Firecracker's rule: a change stands only if the same metric moved the same way in at
    /// least two groups.
    pub family: bool,
    /// What the two sides were meant to differ in (`qemu`, `virtiofsd`, `kernel`, `ceph`,
    /// `miglab`, `scenario`, `host`, `accelerator`, `topology`).
    pub variables: Vec<String>,
    /// Compare although the sides differ in something undeclared.
    pub allow_different: bool,
    /// The confidence level of the bootstrap interval.
    pub level: f64,
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
            level: 0.95,
            seed: 1,
        }
    }
}

/// What the comparison says of one metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Regression,
    Improvement,
    Unchanged,
}

impl Call {
    pub fn as_str(self) -> &'static str {
        match self {
            Call::Regression => "REGRESSION",
            Call::Improvement => "improvement",
            Call::Unchanged => "unchanged",
        }
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
    /// `cand / base - 1` of the medians.
    pub change: f64,
    pub ci: (f64, f64),
    pub p: f64,
    pub call: Call,
    /// Why a change was not called (the test, the threshold, the floor, the family rule).
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
    pub rows: Vec<Row>,
    pub differences: Vec<Difference>,
    /// Groups on one side only.
    pub unmatched: Vec<String>,
    pub skipped: Vec<(PathBuf, String)>,
    pub options: Options,
}

impl Comparison {
    pub fn regressions(&self) -> usize {
        self.rows.iter().filter(|r| r.call == Call::Regression).count()
    }
    pub fn improvements(&self) -> usize {
        self.rows.iter().filter(|r| r.call == Call::Improvement).count()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CompareError {
    #[error("no completed runs in {}{}", .0.display(), if .1.is_empty() { String::new() } else { format!(" ({} left out: {})", .1.len(), .1.iter().take(3).map(|(p, why)| format!("{} {why}", p.display())).collect::<Vec<_>>().join(", ")) })]
    Empty(PathBuf, Vec<(PathBuf, String)>),
    #[error("no scenario is on both sides: baseline has {}; candidate has {}", .0.join(", "), .1.join(", "))]
    NothingInCommon(Vec<String>, Vec<String>),
    #[error("too few repetitions for p < {alpha}: {}. A permutation test of n against m runs cannot give a p below 2/C(n+m, n); with equal sides it needs {needed} runs per side (`miglab run ... --repetitions {needed}`), or a larger --alpha", .groups.join("; "))]
    TooFew { alpha: f64, needed: usize, groups: Vec<String> },
    #[error("the two sides differ in more than {}:\n{}\nDeclare what was meant to vary with --variable (qemu, virtiofsd, kernel, ceph, miglab, scenario, host, accelerator, topology), or compare anyway with --allow-different", if .declared.is_empty() { "nothing (none declared)".to_string() } else { .declared.join(", ") }, .undeclared.iter().map(|d| format!("  {}: baseline {} · candidate {}", d.what, listed(&d.base), listed(&d.cand))).collect::<Vec<_>>().join("\n"))]
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

/// The values of each provenance item on one side, for [`differences`].
fn identity(runs: &[RunResult]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut m: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for r in runs {
        let p = &r.provenance;
        let bin = |role: &str, fallback: &Option<String>| {
            p.binaries
                .iter()
                .find(|b| b.role == role)
                .map(|b| {
                    format!(
                        "{} sha256 {}",
                        b.version.as_deref().unwrap_or("?"),
                        b.sha256.as_deref().map(|s| &s[..s.len().min(12)]).unwrap_or("?")
                    )
                })
                .or_else(|| fallback.clone())
                .unwrap_or_else(|| "?".into())
        };
        let mut put = |k: &'static str, v: String| {
            m.entry(k).or_default().insert(v);
        };
        put("qemu", bin("qemu", &p.qemu));
        put("virtiofsd", bin("virtiofsd", &p.virtiofsd));
        put("kernel", bin("kernel", &p.guest_kernel));
        put("ceph", p.ceph.clone().unwrap_or_else(|| "?".into()));
        put(
            "miglab",
            format!(
                "{} {}",
                p.miglab_version,
                p.git_commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("?")
            ),
        );
        put("accelerator", p.accelerator.clone());
        put(
            "host",
            format!("{} · {}", p.host_cpu.as_deref().unwrap_or("?"), p.host_kernel.as_deref().unwrap_or("?")),
        );
        put("scenario", scenario_lines(&r.scenario_text).join("\n"));
        // Where it ran: the local lab, or hosts over SSH.
        put(
            "topology",
            p.topology.as_ref().map_or("the local lab".into(), |t| {
                let hosts: Vec<String> = t.hosts.iter().map(|h| format!("{} ({})", h.name, h.ssh)).collect();
                format!("{}: {}", t.file, hosts.join(", "))
            }),
        );
    }
    m
}

/// A scenario's meaningful lines: without comments, blank lines and its repetitions.
fn scenario_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(a, _)| a).trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("repetitions"))
        .collect()
}

/// What the two sides differ in. A scenario difference lists the lines found on one side only.
pub fn differences(base: &[RunResult], cand: &[RunResult]) -> Vec<Difference> {
    let (a, b) = (identity(base), identity(cand));
    let mut out = Vec::new();
    for (k, va) in &a {
        let vb = b.get(k).cloned().unwrap_or_default();
        if *va == vb {
            continue;
        }
        if *k == "scenario" {
            let la: BTreeSet<String> = va.iter().flat_map(|t| t.lines().map(String::from)).collect();
            let lb: BTreeSet<String> = vb.iter().flat_map(|t| t.lines().map(String::from)).collect();
            out.push(Difference {
                what: "scenario".into(),
                base: la.difference(&lb).cloned().collect(),
                cand: lb.difference(&la).cloned().collect(),
            });
        } else {
            out.push(Difference {
                what: k.to_string(),
                base: va.iter().cloned().collect(),
                cand: vb.into_iter().collect(),
            });
        }
    }
    out
}

/// Compares `base` with `cand`.
pub fn compare(base: &Side, cand: &Side, o: &Options) -> Result<Comparison, CompareError> {
    let differences = differences(&base.runs, &cand.runs);
    let undeclared: Vec<Difference> =
        differences.iter().filter(|d| !o.variables.contains(&d.what)).cloned().collect();
    if !undeclared.is_empty() && !o.allow_different {
        return Err(CompareError::Undeclared { declared: o.variables.clone(), undeclared });
    }
    let by_group = |runs: &[RunResult]| {
        let mut m: BTreeMap<String, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
        for r in runs {
            m.entry(group(r)).or_default().push(headline(r));
        }
        m
    };
    let (gb, gc) = (by_group(&base.runs), by_group(&cand.runs));
    let common: Vec<&String> = gb.keys().filter(|g| gc.contains_key(*g)).collect();
    if common.is_empty() {
        return Err(CompareError::NothingInCommon(
            gb.keys().cloned().collect(),
            gc.keys().cloned().collect(),
        ));
    }
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
    let mut rows = Vec::new();
    for (gi, g) in common.iter().enumerate() {
        let keys: BTreeSet<&String> = gb[*g].iter().chain(&gc[*g]).flat_map(|h| h.keys()).collect();
        for (ki, k) in keys.into_iter().enumerate() {
            let vals = |side: &[BTreeMap<String, f64>]| {
                side.iter().filter_map(|h| h.get(k).copied()).collect::<Vec<f64>>()
            };
            let (a, b) = (vals(&gb[*g]), vals(&gc[*g]));
            let mut m = metric(k);
            if let Some(f) = o.floors.get(k) {
                m.floor = *f;
            }
            let seed = o.seed ^ ((gi as u64) << 32) ^ ki as u64;
            rows.push(judge(g, m, a, b, o, seed));
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
    Ok(Comparison { rows, differences, unmatched, skipped, options: o.clone() })
}

/// One metric's call.
pub fn judge(group: &str, metric: Metric, base: Vec<f64>, cand: Vec<f64>, o: &Options, seed: u64) -> Row {
    let (bm, cm) = (stats::median(&base), stats::median(&cand));
    let change = if bm != 0.0 { cm / bm - 1.0 } else { f64::NAN };
    let threshold = o.thresholds.get(&metric.key).copied().unwrap_or(o.threshold);
    let enough = stats::min_p(base.len(), cand.len()) < o.alpha;
    let p = if enough { stats::permutation_p(&base, &cand, seed) } else { 1.0 };
    let ci = stats::bootstrap_change(&base, &cand, o.level, seed.wrapping_add(1));
    let worse = (cm > bm) != metric.higher_is_better;
    let mut why = Vec::new();
    if !enough {
        why.push(format!("{} against {} runs cannot reach p < {}", base.len(), cand.len(), o.alpha));
    } else if p >= o.alpha {
        why.push(format!("p = {p:.3} is not below {}", o.alpha));
    }
    // NaN (a zero baseline) never passes.
    if change.abs().is_nan() || change.abs() <= threshold {
        why.push(format!(
            "{:+.1} % is within the {:.0} % noise threshold",
            change * 100.0,
            threshold * 100.0
        ));
    }
    if (cm - bm).abs().is_nan() || (cm - bm).abs() <= metric.floor {
        why.push(format!(
            "{:.2} {} is under the {} {} floor",
            (cm - bm).abs(),
            metric.unit,
            metric.floor,
            metric.unit
        ));
    }
    let call = match (why.is_empty(), worse) {
        (true, true) => Call::Regression,
        (true, false) => Call::Improvement,
        (false, _) => Call::Unchanged,
    };
    Row {
        group: group.into(),
        metric,
        base,
        cand,
        base_median: bm,
        cand_median: cm,
        change,
        ci,
        p,
        call,
        why: why.join("; "),
    }
}

/// Firecracker's family rule: "a true performance change has never shown up in just a single
/// test" — a call stands only where the same metric moved the same way in another group.
fn family_rule(rows: &mut [Row]) {
    let mut seen: BTreeMap<(String, Call), usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.call != Call::Unchanged) {
        *seen.entry((r.metric.key.clone(), r.call)).or_default() += 1;
    }
    for r in rows.iter_mut().filter(|r| r.call != Call::Unchanged) {
        if seen[&(r.metric.key.clone(), r.call)] < 2 {
            r.why = format!("family rule: {} moved this way in this group only", r.metric.key);
            r.call = Call::Unchanged;
        }
    }
}

fn num(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:+.1} %", v * 100.0)
    } else {
        "—".into()
    }
}

/// The table's cells of a row.
fn cells(r: &Row) -> Vec<String> {
    vec![
        r.group.clone(),
        format!("{} ({})", r.metric.key, r.metric.unit),
        format!("{} (n={})", num(r.base_median), r.base.len()),
        format!("{} (n={})", num(r.cand_median), r.cand.len()),
        format!("{} [{}, {}]", pct(r.change), pct(r.ci.0), pct(r.ci.1)),
        if r.p < 0.001 { "<0.001".into() } else { format!("{:.3}", r.p) },
        r.call.as_str().into(),
    ]
}

const HEAD: [&str; 7] =
    ["scenario", "metric", "baseline median", "candidate median", "change [95 % CI]", "p", "call"];

/// A plain-text table for the terminal.
pub fn text(c: &Comparison) -> String {
    let rows: Vec<Vec<String>> = c.rows.iter().map(cells).collect();
    let widths: Vec<usize> = (0..HEAD.len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).chain([HEAD[i].len()]).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(s, "{}", line(&HEAD.map(String::from)));
    for r in &rows {
        let _ = writeln!(s, "{}", line(r));
    }
    s.push_str(&summary(c));
    s
}

fn summary(c: &Comparison) -> String {
    let mut s = String::new();
    for d in &c.differences {
        let how = if c.options.variables.contains(&d.what) {
            "declared with --variable"
        } else {
            "allowed by --allow-different"
        };
        let _ = writeln!(
            s,
            "the sides differ in {} ({how}): baseline {} · candidate {}",
            d.what,
            listed(&d.base),
            listed(&d.cand)
        );
    }
    for g in &c.unmatched {
        let _ = writeln!(s, "on one side only, not compared: {g}");
    }
    if !c.skipped.is_empty() {
        let _ = writeln!(s, "left out (not completed): {} run(s)", c.skipped.len());
    }
    let _ = writeln!(
        s,
        "{} regression(s), {} improvement(s) in {} metric(s); a call needs p < {}, a change over the noise threshold ({:.0} %) and over the metric's floor{}",
        c.regressions(),
        c.improvements(),
        c.rows.len(),
        c.options.alpha,
        c.options.threshold * 100.0,
        if c.options.family { ", in two groups or more (family rule)" } else { "" }
    );
    s
}

/// The same as markdown.
pub fn markdown(c: &Comparison) -> String {
    let mut s = String::from("# miglab compare\n\n");
    let _ = writeln!(s, "| {} |", HEAD.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(HEAD.len()));
    for r in &c.rows {
        let mut cl = cells(r);
        if r.call == Call::Regression {
            cl[6] = format!("**{}**", cl[6]);
        }
        let _ = writeln!(s, "| {} |", cl.join(" | "));
    }
    s.push('\n');
    for l in summary(c).lines() {
        let _ = writeln!(s, "* {l}");
    }
    s
}

/// JUnit XML: a test suite per scenario, a test case per metric; a regression is a failure.
pub fn junit(c: &Comparison) -> String {
    let mut groups: BTreeMap<&str, Vec<&Row>> = BTreeMap::new();
    for r in &c.rows {
        groups.entry(&r.group).or_default().push(r);
    }
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"miglab compare\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"0\">",
        c.rows.len(),
        c.regressions()
    );
    for (i, (g, rows)) in groups.iter().enumerate() {
        let failures = rows.iter().filter(|r| r.call == Call::Regression).count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" id=\"{i}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"0\">",
            esc(g),
            rows.len()
        );
        for r in rows {
            let detail = format!(
                "baseline median {} {u} (n={}), candidate median {} {u} (n={}), change {} [{}, {}], p = {:.4}",
                num(r.base_median),
                r.base.len(),
                num(r.cand_median),
                r.cand.len(),
                pct(r.change),
                pct(r.ci.0),
                pct(r.ci.1),
                r.p,
                u = r.metric.unit
            );
            let _ = write!(
                s,
                "    <testcase classname=\"miglab.compare.{}\" name=\"{}\" time=\"0\"",
                esc(&g.replace(' ', "_")),
                esc(&r.metric.key)
            );
            if r.call == Call::Regression {
                let _ = writeln!(
                    s,
                    ">\n      <failure message=\"{}\" type=\"regression\">{}</failure>\n    </testcase>",
                    esc(&detail),
                    esc(&detail)
                );
            } else {
                let _ = writeln!(
                    s,
                    ">\n      <system-out>{}: {}{}</system-out>\n    </testcase>",
                    r.call.as_str(),
                    esc(&detail),
                    if r.why.is_empty() { String::new() } else { esc(&format!(" ({})", r.why)) }
                );
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}

mod page;
pub use page::page;

#[cfg(test)]
mod tests;
