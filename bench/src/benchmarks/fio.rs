//! miglab's engine against fio: the same job (every option the importer accepts is passed to
//! both), the same data set size, on the same CephFS mount, in alternating rounds. Each side
//! counts only successful ops over its measured period (after the ramp). The machine is noisy,
//! so ratios are taken per round, between neighbours in time, and their median and range shown
//! — and then judged as `compare` judges two builds: the engine's rounds against fio's, *parity*
//! when the interval of the shift lies within ±[`PARITY_BAND`] of fio's median, *differs* when
//! the rank-sum test and the band both say so, *inconclusive* otherwise (with what these rounds
//! could have detected). Each tool's rounds say how much CPU the hypervisor stole meanwhile.

use super::median;
use crate::clock::RunClock;
use crate::hostmode::{self, Figures, HostModeError, Sides, Watch};
use miglab_infra::cpu::CpuTimes;
use miglab_reports::compare::{self, Call, Metric, Options};
use miglab_workloads::job::{FioFile, FioJob, Rw, Size, Workload};
use miglab_workloads::verify::RunTag;
use std::path::Path;
use std::time::Duration;

/// The two jobs docs/figures.md's figures were first taken with (direct=1, as FIELD-NOTES' baselines:
/// the page cache would measure memory).
pub fn default_jobs() -> Vec<FioJob> {
    let mut r = FioJob::new("randread-4k", Rw::Randread);
    r.bs = Size(4096);
    r.size = Size(64 << 20);
    r.direct = true;
    let mut w = FioJob::new("seqwrite-1m", Rw::Write);
    w.bs = Size(1 << 20);
    w.size = Size(256 << 20);
    w.direct = true;
    vec![r, w]
}

/// How close to fio's figure the engine's must be to be called at parity.
pub const PARITY_BAND: f64 = 0.10;

/// One direction's figures per round of both tools.
#[derive(Debug, Default)]
struct Rounds {
    ours: Vec<Figures>,
    theirs: Vec<Figures>,
}

/// The CPU stolen during each tool's rounds, in percent: (miglab's, fio's).
type Steal = (Vec<f64>, Vec<f64>);

/// Runs `f`, and the share of CPU the hypervisor stole meanwhile (NaN where unknown).
fn stolen<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let before = CpuTimes::now();
    let r = f();
    let pct = before.zip(CpuTimes::now()).and_then(|(a, b)| a.steal_pct(&b));
    (r, pct.unwrap_or(f64::NAN))
}

/// The engine's rounds of one figure against fio's, judged as compare judges two builds.
pub fn parity(key: &str, higher_is_better: bool, fio: Vec<f64>, ours: Vec<f64>) -> compare::Row {
    let unit = if higher_is_better { "IOPS" } else { "µs" };
    let metric = Metric { key: key.into(), unit, higher_is_better, floor: 0.0 };
    let o = Options { threshold: PARITY_BAND, family: false, ..Options::default() };
    compare::judge("engine vs fio", metric, fio, ours, &o, 1)
}

/// One line: the verdict, the ratio of medians with its interval, and why if undecided.
fn verdict_text(r: &compare::Row) -> String {
    let word = match r.call {
        Call::Unchanged => "parity",
        Call::Regression | Call::Improvement => "differs",
        _ => "inconclusive",
    };
    let ratio = |x: f64| format!("{:.2}", 1.0 + x);
    // Too few rounds have no finite interval: say so rather than print "-inf–inf".
    let interval = if r.ci.0.is_finite() && r.ci.1.is_finite() {
        format!("95 % interval {}–{}", ratio(r.ci.0), ratio(r.ci.1))
    } else {
        "too few rounds for an interval".to_string()
    };
    let mut s =
        format!("{word}: {} of fio's ({interval}, band ±{:.0} %)", ratio(r.change), PARITY_BAND * 100.0);
    if r.call == Call::Inconclusive {
        s.push_str(&format!("; {}", r.why));
    }
    s
}

fn col(v: &[Figures], f: fn(&Figures) -> f64) -> Vec<f64> {
    v.iter().map(f).collect()
}

fn row(job: &str, dir: &str, tool: &str, v: &[Figures]) {
    println!(
        "{:<20} {:<5} {:<7} {:>10.0} {:>9.1} {:>9.0} {:>9.0}",
        job,
        dir,
        tool,
        median(&col(v, |f| f.iops)),
        median(&col(v, |f| f.mib_s)),
        median(&col(v, |f| f.p50_us)),
        median(&col(v, |f| f.p99_us))
    );
}

/// The verdicts on IOPS and p99 of one direction.
fn verdicts(job: &str, dir: &str, r: &Rounds) {
    let col2 = |f: fn(&Figures) -> f64| (col(&r.theirs, f), col(&r.ours, f));
    for (what, better, f) in [
        ("IOPS", true, (|f: &Figures| f.iops) as fn(&Figures) -> f64),
        ("p99", false, |f: &Figures| f.p99_us),
    ] {
        let (fio, ours) = col2(f);
        println!("{job:<20} {dir:<5} {what:<7} {}", verdict_text(&parity(what, better, fio, ours)));
    }
}

fn ratios(job: &str, dir: &str, r: &Rounds) {
    let paired: Vec<Figures> = r.ours.iter().zip(&r.theirs).map(|(e, f)| e.ratio_to(f)).collect();
    let cell = |f: fn(&Figures) -> f64| {
        let v = col(&paired, f);
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{:.2}x ({lo:.2}-{hi:.2})", median(&v))
    };
    println!(
        "{:<20} {:<5} {:<7} {:>22} {:>22} {:>22} {:>22}",
        job,
        dir,
        "ratio",
        cell(|f| f.iops),
        cell(|f| f.mib_s),
        cell(|f| f.p50_us),
        cell(|f| f.p99_us)
    );
}

fn push(r: &mut (Rounds, Rounds), s: Sides, ours: bool) {
    for (side, rounds) in [(s.read, &mut r.0), (s.write, &mut r.1)] {
        if let Some(f) = side {
            if ours {
                rounds.ours.push(f)
            } else {
                rounds.theirs.push(f)
            }
        }
    }
}

/// Prints one job's rows: each direction, each tool's medians, the ratios and the verdicts;
/// then the CPU stolen during each tool's rounds.
fn print_job(name: &str, r: &(Rounds, Rounds), steal: &Steal) {
    for (dir, rounds) in [("read", &r.0), ("write", &r.1)] {
        if rounds.ours.is_empty() {
            continue;
        }
        row(name, dir, "miglab", &rounds.ours);
        row(name, dir, "fio", &rounds.theirs);
        ratios(name, dir, rounds);
        verdicts(name, dir, rounds);
    }
    let pct = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("median {:.1} % ({lo:.1}–{hi:.1})", median(v))
    };
    println!(
        "{name:<20} CPU stolen by the hypervisor: miglab's rounds {}, fio's {}",
        pct(&steal.0),
        pct(&steal.1)
    );
}

fn header() {
    println!(
        "{:<20} {:<5} {:<7} {:>10} {:>9} {:>9} {:>9}",
        "job", "dir", "tool", "IOPS", "MiB/s", "p50 us", "p99 us"
    );
}

/// Whole job files: each file's jobs run together in both tools, as fio runs the file —
/// concurrently, or one after the other where `stonewall`/`wait_for` say — each job
/// time-based for `secs` after its ramp, for `rounds` alternating rounds; figures per job.
pub fn run_files(files: Vec<FioFile>, mount: &Path, secs: u64, rounds: u32) -> Result<(), HostModeError> {
    let rounds = rounds.max(1);
    println!(
        "whole job files, engine vs fio on {} (ceph-fuse), host mode, {rounds} alternating rounds, each job {secs} s; \
         medians of each tool,\nthen the median (range) of the ratios miglab/fio of neighbouring rounds",
        mount.display()
    );
    header();
    for mut file in files {
        for job in &mut file.jobs {
            job.runtime = Some(secs as f64);
            job.time_based = true;
        }
        // Jobs run one after another where they wait; the longest chain bounds the run.
        let chain = file.groups().last().map_or(1, |g| g + 1) as u64;
        let ramp = file.jobs.iter().map(|j| j.ramp_time).fold(0.0, f64::max);
        let duration = Duration::from_secs_f64(chain as f64 * (secs as f64 + ramp) + 5.0);
        let mut per_job: Vec<(Rounds, Rounds)> = file.jobs.iter().map(|_| Default::default()).collect();
        let mut steal = Steal::default();
        for round in 1..=rounds {
            let say = |m: &str| eprintln!("  [{} round {round}/{rounds}] {m}", file.name);
            let tag = RunTag { seed: u64::from(round), nonce: rand::random() };
            let root = mount.join(format!("miglab-bench/{}", file.name));
            std::fs::create_dir_all(&root)
                .map_err(|e| HostModeError::FioOutput(format!("create {}: {e}", root.display())))?;
            let w = Workload::FioFile(file.clone());
            let (ran, s) = stolen(|| {
                hostmode::run(&w, &root, duration, tag, Watch::figures_only(), RunClock::start(), &say)
            });
            let (c, _) = ran?;
            steal.0.push(s);
            let ours = hostmode::engine_file_figures(&c, &file, secs as f64);
            say("miglab done, fio next");
            let (ran, s) = stolen(|| {
                hostmode::run_fio_file(&file.jobs, &mount.join(format!("fio-{}", file.name)), secs)
            });
            let theirs = ran?;
            steal.1.push(s);
            for ((o, t), r) in ours.into_iter().zip(theirs).zip(per_job.iter_mut()) {
                push(r, o, true);
                push(r, t, false);
            }
        }
        for (job, r) in file.jobs.iter().zip(&per_job) {
            print_job(&format!("{}/{}", file.name, job.name), r, &steal);
        }
    }
    Ok(())
}

/// Runs every job for `rounds` alternating rounds of `secs` (after each job's ramp) on `mount`.
pub fn run(jobs: Vec<FioJob>, mount: &Path, secs: u64, rounds: u32) -> Result<(), HostModeError> {
    let rounds = rounds.max(1);
    println!(
        "engine vs fio on {} (ceph-fuse), host mode, {rounds} alternating rounds of {secs} s; medians of each tool,\nthen the median (range) of the ratios miglab/fio of neighbouring rounds",
        mount.display()
    );
    header();
    for job in jobs {
        let mut job = job;
        job.runtime = None;
        job.time_based = true;
        job.directory = Some(format!("miglab-bench/{}", job.name));
        let measured = Duration::from_secs(secs);
        let with_ramp = measured + Duration::from_secs_f64(job.ramp_time);
        let mut r = (Rounds::default(), Rounds::default());
        let mut steal = Steal::default();
        for round in 1..=rounds {
            let say = |m: &str| eprintln!("  [{} round {round}/{rounds}] {m}", job.name);
            let tag = RunTag { seed: u64::from(round), nonce: rand::random() };
            let w = Workload::Fio(job.clone());
            let (ran, s) = stolen(|| {
                hostmode::run(&w, mount, with_ramp, tag, Watch::figures_only(), RunClock::start(), &say)
            });
            let (c, _) = ran?;
            steal.0.push(s);
            let ours = hostmode::engine_figures(&c, &job, secs as f64);
            say("miglab done, fio next");
            let (ran, s) = stolen(|| hostmode::run_fio(&job, &mount.join(format!("fio-{}", job.name)), secs));
            let theirs = ran?;
            steal.1.push(s);
            push(&mut r, ours, true);
            push(&mut r, theirs, false);
        }
        print_job(&job.name, &r, &steal);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parity figure says how sure it is: rounds whose ratios swing from 0.6 to 1.1 are
    /// inconclusive (the 0.63× and 0.96× of two runs were both single medians); tight rounds
    /// within 10 % are parity; tight rounds a third apart differ.
    #[test]
    fn parity_is_called_only_when_the_rounds_can_tell() {
        let fio = vec![1568.0, 1500.0, 1620.0, 1550.0, 1590.0];
        let swinging = vec![1043.0, 1700.0, 950.0, 1650.0, 1400.0];
        assert_eq!(parity("IOPS", true, fio.clone(), swinging).call, Call::Inconclusive);
        let close: Vec<f64> = fio.iter().map(|x| x * 0.99).collect();
        let r = parity("IOPS", true, fio.clone(), close);
        assert_eq!(r.call, Call::Unchanged, "{r:?}");
        assert!(verdict_text(&r).starts_with("parity: 0.99 of fio's"), "{}", verdict_text(&r));
        let slower: Vec<f64> = fio.iter().map(|x| x * 0.65).collect();
        let r = parity("IOPS", true, fio, slower);
        assert!(matches!(r.call, Call::Regression) && verdict_text(&r).starts_with("differs: 0.65"), "{r:?}");
        // Three rounds have no finite interval; before, the line read "interval -inf–inf".
        let r = parity("p99", false, vec![309.0, 300.0, 320.0], vec![334.0, 330.0, 340.0]);
        let t = verdict_text(&r);
        assert!(t.contains("too few rounds for an interval") && !t.contains("inf"), "{t}");
    }
}
