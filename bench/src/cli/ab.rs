//! `miglab ab`: baseline and candidate interleaved on one lab until the sequential test knows.

use super::{on_lab, AbArgs, BinaryArgs, CliError};
use crate::exit::Finished;
use crate::preflight::{self, Overrides};
use crate::session::{self, RunOptions, Source};
use miglab_infra::binaries::BinaryChoice;
use miglab_infra::paths;
use miglab_model::{RunResult, RunStatus};
use miglab_reports::ab::{Sequential, Verdict};
use miglab_reports::compare::{self, headline, metric};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One side of the comparison.
struct Side {
    name: &'static str,
    scenario: PathBuf,
    binaries: BinaryChoice,
    /// Another miglab build that runs this side, or None: this one, in this process.
    miglab: Option<PathBuf>,
}

/// A pair's two figures (absent when the run failed or did not measure it).
#[derive(Debug, Serialize)]
struct Pair {
    pair: u32,
    /// Which side ran first (they alternate, so a drift over the session falls on both).
    first: &'static str,
    baseline: Option<f64>,
    candidate: Option<f64>,
    baseline_status: String,
    candidate_status: String,
    /// The interval after this pair (relative shift, candidate / baseline − 1).
    interval: (f64, f64),
    verdict: Verdict,
}

#[derive(Debug, Serialize)]
struct Report {
    metric: String,
    band_pct: f64,
    alpha: f64,
    verdict: Verdict,
    /// Why it stopped: decided, or which budget ended it.
    stopped: String,
    pairs: Vec<Pair>,
    interval: (f64, f64),
    estimate: Option<f64>,
    /// A shift these pairs would have called (the interval's width).
    detectable: f64,
    seconds: f64,
    baseline: String,
    candidate: String,
}

pub(super) fn ab_cmd(a: AbArgs) -> Result<Finished, CliError> {
    if !(a.alpha > 0.0 && a.alpha < 0.5) {
        return Err(CliError::Args(format!(
            "--alpha {}: give a false-call rate between 0 and 0.5, e.g. 0.05",
            a.alpha
        )));
    }
    if !(a.band > 0.0 && a.band < 100.0) {
        return Err(CliError::Args(format!(
            "--band {}: give a percentage between 0 and 100, e.g. 10",
            a.band
        )));
    }
    if a.max_pairs == 0 || a.max_minutes.is_nan() || a.max_minutes <= 0.0 {
        return Err(CliError::Args("--max-pairs and --max-minutes: give more than 0".into()));
    }
    if !compare::is_metric(&a.metric) {
        return Err(CliError::Args(format!(
            "--metric {}: not a figure compare knows (one of {}, p99_us.<op>, downtime.<part>_ms)",
            a.metric,
            compare::METRIC_KINDS.join(", ")
        )));
    }
    for p in [&a.miglab, &a.candidate_miglab].into_iter().flatten() {
        other_miglab_answers(p)?;
    }
    // A side made by another build runs as its own process; the other side then runs as one
    // too (this binary), so no difference between a run in this process and one in a fresh
    // process lands on one side.
    let this = || std::env::current_exe().ok();
    let (base_miglab, cand_miglab) = match (&a.miglab, &a.candidate_miglab) {
        (None, None) => (None, None),
        (b, c) => (b.clone().or_else(this), c.clone().or_else(this)),
    };
    let baseline = Side {
        name: "baseline",
        scenario: a.baseline.clone(),
        binaries: a.binaries.choice(),
        miglab: base_miglab,
    };
    // The candidate's builds: its own where given, the baseline's otherwise.
    let own = BinaryArgs {
        qemu: a.candidate_qemu.clone(),
        virtiofsd: a.candidate_virtiofsd.clone(),
        kernel: a.candidate_kernel.clone(),
    }
    .choice();
    let cand_bins = BinaryChoice {
        qemu: own.qemu.or(baseline.binaries.qemu.clone()),
        virtiofsd: own.virtiofsd.or(baseline.binaries.virtiofsd.clone()),
        kernel: own.kernel.or(baseline.binaries.kernel.clone()),
    };
    let candidate = Side {
        name: "candidate",
        scenario: a.candidate.clone().unwrap_or_else(|| a.baseline.clone()),
        binaries: cand_bins,
        miglab: cand_miglab,
    };
    // Both sides checked completely before anything runs.
    let mut lab_name = a.lab.clone();
    for side in [&baseline, &candidate] {
        let loaded = preflight::load(
            &Source::Scenario(side.scenario.clone()),
            &Overrides { binaries: side.binaries.clone(), repetitions: Some(1), lab_name: a.lab.clone() },
        )?;
        lab_name.get_or_insert(loaded.lab.name.clone());
    }
    let lab_name = lab_name.unwrap_or_else(|| "default".into());
    let root = a.root.clone().unwrap_or_else(paths::lab_root);
    let same = baseline.scenario == candidate.scenario
        && baseline.binaries == candidate.binaries
        && baseline.miglab == candidate.miglab;
    let describe = |s: &Side| {
        let mut d = s.scenario.display().to_string();
        for (flag, p) in
            build_flags(&s.binaries).into_iter().chain(s.miglab.as_deref().map(|m| ("--miglab", m)))
        {
            d.push_str(&format!(" {flag} {}", p.display()));
        }
        d
    };
    println!(
        "ab: {} against {}{} on lab '{lab_name}', deciding on {} (band ±{} %, α = {}, at most {} pairs or {} min)",
        describe(&candidate),
        describe(&baseline),
        if same { " (the same: a check of the test itself)" } else { "" },
        a.metric,
        a.band,
        a.alpha,
        a.max_pairs,
        a.max_minutes
    );
    // One lab for every pair.
    let mut report = on_lab("ab", &lab_name, &root, || pairs(&a, &baseline, &candidate, &lab_name, &root))??;
    report.baseline = describe(&baseline);
    report.candidate = describe(&candidate);
    let file = a.out.join("ab.json");
    let json = serde_json::to_vec_pretty(&report).map_err(|e| CliError::Args(e.to_string()))?;
    std::fs::create_dir_all(&a.out).map_err(|source| CliError::Unwritable { path: a.out.clone(), source })?;
    std::fs::write(&file, json).map_err(|source| CliError::Unwritable { path: file.clone(), source })?;
    let pct = |v: f64| if v.is_finite() { format!("{:+.1} %", v * 100.0) } else { "∞".into() };
    println!(
        "ab: {} after {} pairs ({:.0} s; {}): {} → interval {}, median shift {}; a shift of {} would have been called",
        report.verdict.as_str().to_uppercase(),
        report.pairs.len(),
        report.seconds,
        report.stopped,
        a.metric,
        interval_text(report.interval),
        report.estimate.map(pct).unwrap_or_else(|| "—".into()),
        pct(report.detectable).trim_start_matches('+'),
    );
    println!(
        "ab: every figure of the same runs, judged after the fact (not sequentially): miglab compare {} {}",
        a.out.join("baseline").display(),
        a.out.join("candidate").display()
    );
    println!("→ {}", file.display());
    Ok(if report.verdict == Verdict::Regression { Finished::Found } else { Finished::Clean })
}

/// An interval of relative shifts; a bound the pairs do not give yet is open.
fn interval_text((lo, hi): (f64, f64)) -> String {
    let b = |v: f64, open: &str| {
        if v.is_finite() && v > -1.0 {
            format!("{:+.1} %", v * 100.0)
        } else {
            open.into()
        }
    };
    format!("[{}, {}]", b(lo, "open"), b(hi, "open"))
}

/// Runs pairs until the test decides or a budget ends it.
fn pairs(a: &AbArgs, baseline: &Side, candidate: &Side, lab: &str, root: &Path) -> Result<Report, CliError> {
    let m = metric(&a.metric);
    let mut test = Sequential::new(a.band / 100.0, a.alpha, m.higher_is_better);
    let start = Instant::now();
    let budget = Duration::from_secs_f64(a.max_minutes * 60.0);
    let mut done = Vec::new();
    let mut failed = (0u32, 0u32);
    let stopped = loop {
        let k = done.len() as u32 + 1;
        if k > a.max_pairs {
            break format!("the budget of {} pairs", a.max_pairs);
        }
        if start.elapsed() >= budget {
            break format!("the budget of {} min", a.max_minutes);
        }
        // ABBA: the first side alternates, so a drift over the session falls on both.
        let order = if k % 2 == 1 { [baseline, candidate] } else { [candidate, baseline] };
        let mut got: [Option<RunResult>; 2] = [None, None];
        for side in order {
            let r = run_once(a, side, k, lab, root)?;
            got[usize::from(side.name == "candidate")] = Some(r);
            if miglab_infra::interrupt::requested() {
                return Err(CliError::Args("interrupted: the pairs so far are in their directories".into()));
            }
        }
        let [b, c] = got.map(|r| r.expect("both sides ran"));
        let figure = |r: &RunResult| {
            (r.status == RunStatus::Completed).then(|| headline(r).get(&a.metric).copied()).flatten()
        };
        let (fb, fc) = (figure(&b), figure(&c));
        failed.0 += u32::from(b.status != RunStatus::Completed);
        failed.1 += u32::from(c.status != RunStatus::Completed);
        if let (Some(x), Some(y)) = (fb, fc) {
            test.push(x, y);
        }
        let verdict = test.verdict();
        let p = Pair {
            pair: k,
            first: order[0].name,
            baseline: fb,
            candidate: fc,
            baseline_status: format!("{:?}", b.status).to_lowercase(),
            candidate_status: format!("{:?}", c.status).to_lowercase(),
            interval: test.interval(),
            verdict,
        };
        let show = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "—".into());
        println!(
            "ab: pair {k}: baseline {} / candidate {} {} → {} {}",
            show(fb),
            show(fc),
            m.unit,
            interval_text(p.interval),
            verdict.as_str()
        );
        done.push(p);
        if verdict != Verdict::Undecided {
            break "decided".to_string();
        }
        // A side that keeps failing has its answer in its outcomes, not in a figure.
        if failed.0 >= 3 || failed.1 >= 3 {
            break format!("{} failed baseline and {} failed candidate runs", failed.0, failed.1);
        }
    };
    Ok(Report {
        metric: a.metric.clone(),
        band_pct: a.band,
        alpha: a.alpha,
        verdict: test.verdict(),
        stopped,
        interval: test.interval(),
        estimate: test.estimate(),
        detectable: test.detectable(),
        pairs: done,
        seconds: start.elapsed().as_secs_f64(),
        baseline: String::new(),
        candidate: String::new(),
    })
}

/// One run of `side` for pair `k`: its result (a run that ended in error is read as it was
/// written; one that wrote nothing is the command's error).
fn run_once(a: &AbArgs, side: &Side, k: u32, lab: &str, root: &Path) -> Result<RunResult, CliError> {
    let out = a.out.join(side.name).join(k.to_string());
    let _ = std::fs::remove_dir_all(&out);
    let opts = RunOptions {
        source: Source::Scenario(side.scenario.clone()),
        out: out.clone(),
        lab_root: root.to_path_buf(),
        repetitions: Some(1),
        lab_name: Some(lab.to_string()),
        host_mode: None,
        binaries: side.binaries.clone(),
        topology: None,
    };
    match &side.miglab {
        None => {
            if let Err(e) = session::run(&opts) {
                eprintln!("ab: {} run {k}: {e}", side.name);
            }
        }
        Some(other) => run_by(other, &opts, side.name, k)?,
    }
    // The run's one result, whether the run ended well or not (`compare` reads the same way).
    let loaded = compare::load(&out).ok().and_then(|s| s.runs.into_iter().next());
    loaded.ok_or_else(|| {
        CliError::Args(format!("the {} run of pair {k} wrote no result under {}", side.name, out.display()))
    })
}

/// Another build is asked for its version before anything runs: a path that is no miglab is
/// refused at once, not after the first pair.
fn other_miglab_answers(p: &Path) -> Result<(), CliError> {
    let refuse = |why: String| {
        CliError::Args(format!("--miglab/--candidate-miglab {}: {why}; give a miglab binary (e.g. another checkout's target/release/miglab)", p.display()))
    };
    let out = std::process::Command::new(p).arg("--version").output().map_err(|e| refuse(e.to_string()))?;
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !said.starts_with("miglab ") {
        return Err(refuse(format!("`--version` said {:?}", said.trim())));
    }
    Ok(())
}

/// One run by another miglab build, as its own process with this side's options; what it
/// prints goes to this one's output. Its exit says nothing the result does not (a failed run
/// is read from its result like any other).
fn run_by(miglab: &Path, o: &RunOptions, side: &str, k: u32) -> Result<(), CliError> {
    let mut c = std::process::Command::new(miglab);
    c.arg("run").arg("--out").arg(&o.out).arg("--root").arg(&o.lab_root).args(["--repetitions", "1"]);
    if let Some(l) = &o.lab_name {
        c.arg("--lab").arg(l);
    }
    for (flag, p) in build_flags(&o.binaries) {
        c.arg(flag).arg(p);
    }
    let Source::Scenario(scenario) = &o.source else {
        return Err(CliError::Args("ab runs scenarios".into()));
    };
    c.arg(scenario);
    let status =
        c.status().map_err(|e| CliError::Args(format!("{} could not start: {e}", miglab.display())))?;
    if !status.success() {
        eprintln!("ab: {side} run {k} by {}: {status}", miglab.display());
    }
    Ok(())
}

/// The builds chosen, as `miglab run`'s flags.
fn build_flags(b: &BinaryChoice) -> Vec<(&'static str, &Path)> {
    [("--qemu", &b.qemu), ("--virtiofsd", &b.virtiofsd), ("--kernel", &b.kernel)]
        .into_iter()
        .filter_map(|(flag, p)| p.as_deref().map(|p| (flag, p)))
        .collect()
}
