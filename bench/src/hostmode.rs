//! Host mode: the guest's engine run directly on a host's CephFS mount, without a VM. It gives
//! the storage baseline the guest's figures are compared with, and the comparison with fio on
//! the same mount (`miglab bench fio`).

use crate::clock::RunClock;
use crate::collect::{Collected, Collector};
use crate::plan::Plan;
use crate::run::{ExecError, Execution, GuestRun};
use miglab_infra::interrupt;
use miglab_infra::paths;
use miglab_infra::process::{self, ToolError};
use miglab_infra::topology::Site;
use miglab_workloads::engine::{self, now_ns, RecordBuffer};
use miglab_workloads::job::{BlockSizes, FioFile, FioJob, RateProcess, Rw, Workload};
use miglab_workloads::record::Record;
use miglab_workloads::verify::{RunTag, VerifyReport};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum HostModeError {
    #[error("the workload could not start: {0}")]
    Start(String),
    #[error("the workload's files were not laid out within {0:.0?}")]
    Layout(Duration),
    #[error("the workload's files could not be laid out: {0}")]
    LayoutFailed(String),
    #[error("interrupted")]
    Interrupted,
    #[error(transparent)]
    Fio(#[from] ToolError),
    #[error("fio's output could not be read: {0}")]
    FioOutput(String),
}

/// How the host-mode engine is watched.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// Verify the files after the run.
    pub verify: bool,
    /// How often the collector is fed, with a heartbeat: every millisecond in a run, as the
    /// guest's stream is (its gaps are the stall figures); `bench fio` feeds it rarely, since a
    /// thread waking 1000 times a second on two cores beside the OSDs is a cost fio does not pay.
    pub tick: Duration,
}

impl Watch {
    /// As a run watches the guest: every millisecond.
    pub fn run(verify: bool) -> Self {
        Self { verify, tick: Duration::from_millis(1) }
    }
    /// The engine alone, against fio: figures only, no stall detection.
    pub fn figures_only() -> Self {
        Self { verify: false, tick: Duration::from_millis(50) }
    }
}

/// Runs `w` under `root` for `duration` after its files are laid out; the collector is fed
/// every `watch.tick` with a heartbeat. Layout progress goes to `say` every few seconds.
pub fn run(
    w: &Workload,
    root: &Path,
    duration: Duration,
    tag: RunTag,
    watch: Watch,
    clock: RunClock,
    say: &dyn Fn(&str),
) -> Result<(Collected, Option<VerifyReport>), HostModeError> {
    use std::sync::atomic::Ordering::Relaxed;
    let buf = Arc::new(RecordBuffer::new(1 << 20));
    let mut running = engine::start(w, root, buf.clone(), tag).map_err(HostModeError::Start)?;
    let layout_deadline = Duration::from_secs(600);
    let mut shown = crate::progress::LayoutShown::default();
    while running.counters.laying_out.load(Relaxed) > 0 {
        if shown.elapsed() > layout_deadline || interrupt::requested() {
            running.stop();
            shown.done(None, say);
            return Err(if interrupt::requested() {
                HostModeError::Interrupted
            } else {
                HostModeError::Layout(layout_deadline)
            });
        }
        let c = &running.counters;
        shown.progress(c.layout_done.load(Relaxed), c.layout_total.load(Relaxed), say);
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(e) = running.counters.layout_error.lock().ok().and_then(|l| l.clone()) {
        running.stop();
        shown.done(None, say);
        return Err(HostModeError::LayoutFailed(e));
    }
    shown.done(Some(running.counters.layout_total.load(Relaxed)), say);
    let t0 = Instant::now();
    let mut c = Collector::new(clock);
    let mut chunk = Vec::new();
    let mut seq = 0;
    // Records of the layout phase are not part of the measurement.
    buf.take(&mut chunk);
    while t0.elapsed() < duration && !running.finished() {
        if interrupt::requested() {
            running.stop();
            return Err(HostModeError::Interrupted);
        }
        std::thread::sleep(watch.tick.min(duration.saturating_sub(t0.elapsed())));
        buf.push_record(&Record::Heartbeat { seq, guest_ns: now_ns() });
        seq += 1;
        buf.take(&mut chunk);
        c.feed(&chunk, Instant::now());
    }
    running.stop();
    buf.take(&mut chunk);
    c.feed(&chunk, Instant::now());
    let end = Instant::now();
    let report = watch.verify.then(|| running.verify(buf.as_ref(), &interrupt::requested));
    Ok((c.finish(end), report))
}

/// A plan's workload in host mode on its start host's mount, as an [`Execution`] that the
/// result is assembled from like any other.
pub fn execute(
    site: &dyn Site,
    plan: &Plan,
    duration: Duration,
    clock: RunClock,
    say: &dyn Fn(&str),
) -> Execution {
    let mut ex = Execution::new(clock);
    let host = match site.host(&plan.start_host) {
        Ok(h) => h,
        Err(e) => {
            ex.error = Some(e.into());
            return ex;
        }
    };
    let mount = host.mount_point();
    if let Workload::ReadLoop(j) = &plan.workload {
        if let Err(e) = crate::readloop::prepare(host, j) {
            ex.error = Some(e.into());
            return ex;
        }
    }
    say(&format!("host mode on {}'s CephFS mount for {:.0?}", plan.start_host, duration));
    let tag = RunTag { seed: plan.seeds.workload, nonce: ex.nonce };
    match run(&plan.workload, &mount, duration, tag, Watch::run(plan.run.verify), clock, say) {
        Ok((c, report)) => {
            ex.guests.push(GuestRun {
                name: plan.vm.clone(),
                workload: Some(plan.workload.clone()),
                verify_incomplete: interrupt::requested() && report.is_some(),
                collected: Some(c),
                verify_host: report.as_ref().map(|_| plan.start_host.clone()),
                verify: report,
                agent: None,
                memory: Vec::new(),
            });
            if interrupt::requested() {
                ex.error = Some(ExecError::Interrupted);
            }
        }
        Err(HostModeError::Interrupted) => ex.error = Some(ExecError::Interrupted),
        Err(e) => ex.error = Some(ExecError::Workload(e.to_string())),
    }
    ex
}

/// One side of the engine-vs-fio comparison.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub iops: f64,
    pub mib_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

impl Figures {
    /// An op kind's figures over `secs`.
    pub fn of(o: &miglab_model::OpSummary, secs: f64) -> Self {
        Figures {
            iops: o.count as f64 / secs,
            mib_s: o.bytes as f64 / secs / 1048576.0,
            p50_us: o.guest.p50_us as f64,
            p99_us: o.guest.p99_us as f64,
        }
    }

    /// Each figure divided by `other`'s.
    pub fn ratio_to(&self, other: &Figures) -> Figures {
        let r = |a: f64, b: f64| a / b.max(1e-9);
        Figures {
            iops: r(self.iops, other.iops),
            mib_s: r(self.mib_s, other.mib_s),
            p50_us: r(self.p50_us, other.p50_us),
            p99_us: r(self.p99_us, other.p99_us),
        }
    }
}

/// Both directions of a job (a direction it does not do is absent).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sides {
    pub read: Option<Figures>,
    pub write: Option<Figures>,
}

/// The engine's figures for `job` over the `secs` measured (successful ops only: the
/// collector counts nothing else; the ramp is not recorded at all).
pub fn engine_figures(c: &Collected, job: &FioJob, secs: f64) -> Sides {
    let side = |op: &str| {
        let o = c.ops.iter().find(|o| o.op == op).cloned().unwrap_or_default();
        Figures::of(&o, secs)
    };
    let (r, w) = job.directions();
    Sides { read: r.then(|| side("read")), write: w.then(|| side("write")) }
}

/// fio's command line for `job` on `dir`, time-based for `secs` after the job's ramp: every
/// option the importer accepts is passed on, so both tools run the same job.
pub fn fio_args(job: &FioJob, dir: &Path, secs: u64) -> Vec<String> {
    let mut a = job_args(job, dir, secs);
    a.extend(["--group_reporting".into(), "--output-format=json".into()]);
    a
}

/// fio's options for one job (from `--name` on), time-based for `secs` after its ramp.
pub fn job_args(job: &FioJob, dir: &Path, secs: u64) -> Vec<String> {
    let rw = match job.rw {
        Rw::Read => "read",
        Rw::Write => "write",
        Rw::Randread => "randread",
        Rw::Randwrite => "randwrite",
        Rw::Readwrite => "readwrite",
        Rw::Randrw => "randrw",
    };
    let rw = if job.rw_skip != 0 { format!("{rw}:{}", job.rw_skip) } else { rw.to_string() };
    let mut a = vec![
        format!("--name={}", job.name),
        format!("--directory={}", dir.display()),
        format!("--rw={rw}"),
        format!("--bs={}", job.bs.0),
        format!("--size={}", job.size.0),
        format!("--nrfiles={}", job.nrfiles),
        format!("--numjobs={}", job.numjobs),
        format!("--rwmixread={}", job.rwmixread),
        format!("--ioengine={}", job.ioengine.as_str()),
        format!("--iodepth={}", job.iodepth),
        format!("--direct={}", u8::from(job.direct)),
        format!("--invalidate={}", u8::from(job.invalidate)),
        format!("--runtime={secs}"),
        "--time_based".into(),
        "--lat_percentiles=1".into(),
    ];
    if job.ioengine.asynchronous() {
        a.push(format!("--iodepth_batch_submit={}", job.iodepth_batch_submit));
        a.push(format!("--iodepth_batch_complete_min={}", job.iodepth_batch_complete_min));
        if job.iodepth_batch_complete_max > 0 {
            a.push(format!("--iodepth_batch_complete_max={}", job.iodepth_batch_complete_max));
        }
    }
    if job.ramp_time > 0.0 {
        a.push(format!("--ramp_time={}ms", (job.ramp_time * 1e3).round() as u64));
    }
    if let Some(r) = job.rate {
        a.push(format!("--rate={}", r.0));
    }
    if let Some(r) = job.rate_iops {
        a.push(format!("--rate_iops={r}"));
    }
    if job.fsync > 0 {
        a.push(format!("--fsync={}", job.fsync));
    }
    if job.fdatasync > 0 {
        a.push(format!("--fdatasync={}", job.fdatasync));
    }
    if job.end_fsync {
        a.push("--end_fsync=1".into());
    }
    a.extend(shape_args(job));
    a
}

/// fio's spelling of a job's block sizes.
fn fio_sizes(b: &BlockSizes) -> (&'static str, String) {
    match b {
        BlockSizes::Fixed(s) => ("bs", s.0.to_string()),
        BlockSizes::Range { min, max } => ("bsrange", format!("{}-{}", min.0, max.0)),
        BlockSizes::Split(v) => {
            ("bssplit", v.iter().map(|(s, w)| format!("{}/{w}", s.0)).collect::<Vec<_>>().join(":"))
        }
    }
}

/// The options of a job's shape beyond the basics: block sizes per direction, the random
/// distribution, files, order, pacing and think time.
fn shape_args(job: &FioJob) -> Vec<String> {
    let mut a = Vec::new();
    if job.bs_read.is_some() || job.bs_write.is_some() {
        let ((kr, r), (kw, w)) = (fio_sizes(&job.sizes(true)), fio_sizes(&job.sizes(false)));
        if kr == kw {
            a.push(if r == w { format!("--{kr}={r}") } else { format!("--{kr}={r},{w}") });
        } else {
            a.push(format!("--{kr}={r},"));
            a.push(format!("--{kw}=,{w}"));
        }
    }
    if !job.random_distribution.uniform() {
        a.push(format!("--random_distribution={}", job.random_distribution.describe()));
    }
    let flags = [
        (job.norandommap, "--norandommap"),
        (job.stonewall, "--stonewall"),
        (job.new_group, "--new_group"),
        (job.sync, "--sync=1"),
        (job.fsync_on_close, "--fsync_on_close=1"),
        (job.rate_process == RateProcess::Poisson, "--rate_process=poisson"),
    ];
    a.extend(flags.iter().filter(|(on, _)| *on).map(|(_, f)| f.to_string()));
    let opt = |k: &str, v: Option<String>| v.map(|v| format!("--{k}={v}"));
    a.extend(
        [
            opt("filename", job.filename.clone()),
            opt("filename_format", job.filename_format.clone()),
            opt("wait_for", job.wait_for.clone()),
            opt("filesize", job.filesize.map(|(lo, hi)| format!("{}-{}", lo.0, hi.0))),
            opt("io_size", job.io_size.map(|s| s.0.to_string())),
            opt("blockalign", job.blockalign.map(|s| s.0.to_string())),
            opt("rate_min", job.rate_min.map(|s| s.0.to_string())),
            opt(
                "percentage_random",
                (job.percentage_random != 100).then(|| job.percentage_random.to_string()),
            ),
            opt("offset", (job.offset.0 > 0).then(|| job.offset.0.to_string())),
            opt("thinktime", (job.thinktime_us > 0).then(|| job.thinktime_us.to_string())),
            opt("thinktime_blocks", (job.thinktime_blocks > 1).then(|| job.thinktime_blocks.to_string())),
            opt(
                "startdelay",
                (job.startdelay > 0.0).then(|| format!("{}ms", (job.startdelay * 1e3).round())),
            ),
        ]
        .into_iter()
        .flatten(),
    );
    a
}

/// Parses fio's JSON output into the figures of each direction the job does.
pub fn parse_fio(json: &str, job: &FioJob) -> Result<Sides, HostModeError> {
    let v = fio_json(json)?;
    sides_of(&v["jobs"][0], job)
}

/// fio's JSON (it may print warnings before it).
fn fio_json(json: &str) -> Result<serde_json::Value, HostModeError> {
    let start = json.find('{').ok_or_else(|| HostModeError::FioOutput("no JSON".into()))?;
    serde_json::from_str(&json[start..]).map_err(|e| HostModeError::FioOutput(e.to_string()))
}

/// The figures of each job of a whole file, by name, from fio's JSON (one entry per job: the
/// file's jobs have one clone each and no group reporting).
pub fn parse_fio_file(json: &str, jobs: &[FioJob]) -> Result<Vec<Sides>, HostModeError> {
    let v = fio_json(json)?;
    let entries = v["jobs"].as_array().cloned().unwrap_or_default();
    jobs.iter()
        .map(|job| {
            let e = entries
                .iter()
                .find(|e| e["jobname"].as_str() == Some(job.name.as_str()))
                .ok_or_else(|| HostModeError::FioOutput(format!("no job '{}' in fio's JSON", job.name)))?;
            sides_of(e, job)
        })
        .collect()
}

/// One job's entry of fio's JSON: each direction it does.
fn sides_of(entry: &serde_json::Value, job: &FioJob) -> Result<Sides, HostModeError> {
    let side = |dir: &str| -> Result<Figures, HostModeError> {
        let j = &entry[dir];
        // The whole latency, submission included (`lat_ns`, asked for with lat_percentiles):
        // what the engine measures. fio's clat starts after the submission, which with an
        // asynchronous engine that completes inline leaves almost nothing. Older output: clat.
        // A percentile fio did not report is an error, never a latency of 0.
        let pct = |p: &str| {
            let lat = j["lat_ns"]["percentile"][p].as_f64();
            lat.or_else(|| j["clat_ns"]["percentile"][p].as_f64()).map(|ns| ns / 1000.0).ok_or_else(|| {
                HostModeError::FioOutput(format!(
                    "no {p} percentile for {dir} (neither lat_ns nor clat_ns): run fio with lat_percentiles=1"
                ))
            })
        };
        let num = |k: &str| {
            j[k].as_f64().ok_or_else(|| HostModeError::FioOutput(format!("no {k} for {dir} in fio's JSON")))
        };
        Ok(Figures {
            iops: num("iops")?,
            mib_s: num("bw_bytes")? / 1048576.0,
            p50_us: pct("50.000000")?,
            p99_us: pct("99.000000")?,
        })
    };
    let (r, w) = job.directions();
    Ok(Sides {
        read: if r { Some(side("read")?) } else { None },
        write: if w { Some(side("write")?) } else { None },
    })
}

/// Runs fio on a whole job file's `jobs`, each under `dir`/its directory, each time-based for
/// `secs`; the figures of each job.
pub fn run_fio_file(jobs: &[FioJob], dir: &Path, secs: u64) -> Result<Vec<Sides>, HostModeError> {
    let mut args = vec!["--output-format=json".to_string()];
    for job in jobs {
        let d = dir.join(job.dir());
        std::fs::create_dir_all(&d)
            .map_err(|e| HostModeError::FioOutput(format!("create {}: {e}", d.display())))?;
        args.extend(job_args(job, &d, secs));
    }
    let out = process::run_tool(
        Command::new(paths::tool("fio")).args(&args),
        Duration::from_secs(secs * jobs.len() as u64 + 600),
    )?;
    parse_fio_file(&out.stdout, jobs)
}

/// The engine's figures for each job of a whole file, from the clones' figures, over the
/// `secs` each job ran.
pub fn engine_file_figures(c: &Collected, file: &FioFile, secs: f64) -> Vec<Sides> {
    let (jobs, _) = crate::assemble::job_summaries(file, &c.clones);
    file.jobs
        .iter()
        .zip(jobs)
        .map(|(job, summary)| {
            let side = |op: &str| {
                let o = summary.ops.iter().find(|o| o.op == op).cloned().unwrap_or_default();
                Figures::of(&o, secs)
            };
            let (r, w) = job.directions();
            Sides { read: r.then(|| side("read")), write: w.then(|| side("write")) }
        })
        .collect()
}

/// Runs fio with `job` on `dir` for `secs` (after its ramp).
pub fn run_fio(job: &FioJob, dir: &Path, secs: u64) -> Result<Sides, HostModeError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| HostModeError::FioOutput(format!("create {}: {e}", dir.display())))?;
    let out = process::run_tool(
        Command::new(paths::tool("fio")).args(fio_args(job, dir, secs)),
        Duration::from_secs(secs + job.ramp_time as u64 + 600),
    )?;
    parse_fio(&out.stdout, job)
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_workloads::job::Size;

    #[test]
    fn figures_take_ratios_per_column() {
        let f = |iops: f64, p50: f64| Figures { iops, mib_s: iops / 2.0, p50_us: p50, p99_us: p50 * 3.0 };
        let r = f(2.0, 10.0).ratio_to(&f(4.0, 5.0));
        assert_eq!((r.iops, r.p50_us), (0.5, 2.0));
    }

    #[test]
    fn fio_gets_the_same_job() {
        let mut j = FioJob::new("r", Rw::Randread);
        j.bs = Size(4096);
        j.fsync = 4;
        j.ramp_time = 2.0;
        j.rate_iops = Some(500);
        j.end_fsync = true;
        let a = fio_args(&j, Path::new("/m/c1/x"), 10);
        for want in [
            "--rw=randread",
            "--bs=4096",
            "--ioengine=psync",
            "--runtime=10",
            "--directory=/m/c1/x",
            "--fsync=4",
            "--ramp_time=2000ms",
            "--rate_iops=500",
            "--end_fsync=1",
        ] {
            assert!(a.contains(&want.to_string()), "{want} in {a:?}");
        }
    }

    /// The shapes of a job file reach fio as the file wrote them.
    #[test]
    fn fio_gets_a_job_files_shape() {
        let text = "[w]\nrw=randrw\nbssplit=4k/50:16k/50\nfilename=s.dat\nrandom_distribution=zipf:1.2\nnorandommap\n\
                    size=1m\n[r]\nstonewall\nrw=read:-8k\nbs=4k,8k\nsize=1m\nthinktime=200\nrate_process=poisson\nrate_iops=50\n";
        let f = miglab_workloads::fio::import(text, "f", &Default::default()).expect("file").file;
        let a = job_args(&f.jobs[0], Path::new("/m"), 5);
        for want in [
            "--bssplit=4096/50:16384/50",
            "--filename=s.dat",
            "--random_distribution=zipf:1.2",
            "--norandommap",
        ] {
            assert!(a.contains(&want.to_string()), "{want} in {a:?}");
        }
        let a = job_args(&f.jobs[1], Path::new("/m"), 5);
        for want in
            ["--stonewall", "--rw=read:-8192", "--bs=4096,8192", "--thinktime=200", "--rate_process=poisson"]
        {
            assert!(a.contains(&want.to_string()), "{want} in {a:?}");
        }
        assert!(!a.iter().any(|x| x.contains("group_reporting")), "a whole file is reported per job");
    }

    #[test]
    fn fio_json_of_a_file_is_read_per_job() {
        let json = r#"{"jobs":[
          {"jobname":"a","read":{"iops":10,"bw_bytes":40960,"lat_ns":{"percentile":{"50.000000":1000,"99.000000":5000}}},"write":{"iops":0,"bw_bytes":0}},
          {"jobname":"b","read":{"iops":0,"bw_bytes":0},"write":{"iops":20,"bw_bytes":81920,"lat_ns":{"percentile":{"50.000000":2000,"99.000000":9000}}}}]}"#;
        let jobs = [FioJob::new("b", Rw::Write), FioJob::new("a", Rw::Randread)];
        let s = parse_fio_file(json, &jobs).expect("parses");
        assert_eq!(s[0].write.as_ref().map(|f| f.iops), Some(20.0));
        assert_eq!(s[1].read.as_ref().map(|f| f.p99_us), Some(5.0));
        assert!(parse_fio_file(json, &[FioJob::new("c", Rw::Read)]).is_err(), "a job fio did not report");
    }

    #[test]
    fn fio_json_is_read() {
        let json = r#"note: a warning first
{"jobs":[{"read":{"iops":3012.5,"bw_bytes":12339200,"clat_ns":{"percentile":{"50.000000":301056,"99.000000":1105920}}},
          "write":{"iops":0,"bw_bytes":0}}]}"#;
        let sides = parse_fio(json, &FioJob::new("r", Rw::Randread)).expect("parses");
        assert!(sides.write.is_none());
        let f = sides.read.expect("read");
        assert_eq!(f.iops, 3012.5);
        assert!((f.p50_us - 301.056).abs() < 1e-6 && (f.p99_us - 1105.92).abs() < 1e-6);
        assert!((f.mib_s - 11.767).abs() < 0.01);
        // Without percentiles the latency is unknown: an error, not 0 µs.
        let bare = r#"{"jobs":[{"read":{"iops":3012.5,"bw_bytes":12339200}}]}"#;
        let e = parse_fio(bare, &FioJob::new("r", Rw::Randread)).expect_err("no percentiles");
        assert!(e.to_string().contains("lat_percentiles"), "{e}");
    }

    #[test]
    fn host_mode_runs_the_engine_and_collects() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("hm", Rw::Randrw);
        j.size = Size(256 << 10);
        let tag = RunTag { seed: 1, nonce: 2 };
        let w = Workload::Fio(j.clone());
        let ms300 = Duration::from_millis(300);
        let (c, report) =
            run(&w, dir.path(), ms300, tag, Watch::run(true), RunClock::start(), &|_| {}).expect("run");
        assert!(c.ops.iter().any(|o| o.op == "read" && o.count > 0));
        assert!(c.heartbeats > 100, "{} heartbeats", c.heartbeats);
        assert!(report.expect("verified").clean());
        let f = engine_figures(&c, &j, 0.3);
        let (rd, wr) = (f.read.expect("read"), f.write.expect("write"));
        assert!(rd.iops > 0.0 && rd.p50_us > 0.0 && wr.iops > 0.0);
        // Against fio the collector is fed rarely: a few heartbeats, the ops all there.
        let (c, report) =
            run(&w, dir.path(), ms300, tag, Watch::figures_only(), RunClock::start(), &|_| {}).expect("run");
        assert!(c.heartbeats < 10 && report.is_none(), "{} heartbeats", c.heartbeats);
        assert!(engine_figures(&c, &j, 0.3).read.expect("read").iops > 0.0);
    }
}
