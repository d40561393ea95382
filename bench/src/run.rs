//! Executing a scenario: lab (reused or brought up), guest, workload, migrations, verification,
//! and the result directory `<out>/<scenario>/<repetition>/`:
//!
//! * `result.json` — everything ([`RunResult`], versioned), written first as `aborted` and
//!   rewritten atomically at the end, so an interrupted run still leaves a result;
//! * `timeline.csv` — 100 ms buckets; `events.csv` — migration phases and windows;
//! * `latency.hlog` — HdrHistogram interval log; `logs/` — QEMU, virtiofsd, console, Ceph.

use crate::accel;
use crate::collect::Collected;
use crate::control::ControlError;
use crate::interrupt;
use crate::migration::{self, MigrationError, MigrationOptions, Quiet};
use crate::paths;
use crate::process;
use crate::scenario::{Scenario, ScenarioError};
use crate::stream::{RecordStream, StreamError};
use crate::topology::lab::{Lab, LabError, LabOptions};
use crate::topology::state::{Phase, StateFile};
use crate::topology::Host;
use crate::vm::{Vm, VmError, VmSpec};
use miglab_reports::result::{events_csv, timeline_csv, write_atomic};
use miglab_reports::{Provenance, RunResult, RunStatus, Verification};
use miglab_workloads::control::{Command, Message, Status};
use miglab_workloads::job::Workload;
use miglab_workloads::verify::VerifyReport;
use std::path::{Path, PathBuf};
use std::process::Command as Cmd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Records(#[from] StreamError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the workload could not start: {0}")]
    Workload(String),
    #[error("the workload's files were not laid out within {0:.0?}")]
    Layout(Duration),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("interrupted")]
    Interrupted,
    #[error("run {dir} failed: {error}; the partial result is in {dir}/result.json")]
    Failed { dir: PathBuf, error: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub scenario: PathBuf,
    /// Results go to `<out>/<scenario>/<repetition>/`.
    pub out: PathBuf,
    pub lab_root: PathBuf,
    /// Overrides the scenario's repetitions.
    pub repetitions: Option<u32>,
    /// Overrides the scenario's lab name.
    pub lab_name: Option<String>,
    /// Run the workload directly on the first host's CephFS mount for this long, without a VM
    /// or migrations: the storage baseline of the scenario.
    pub host_mode: Option<Duration>,
}

const AGENT: Duration = Duration::from_secs(30);

fn say(scenario: &str, rep: u32, msg: &str) {
    eprintln!("[{scenario} #{rep}] {msg}");
}

/// Sleeps, but gives up at once on Ctrl-C.
async fn pause(d: Duration) -> Result<(), RunError> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if interrupt::requested() {
            return Err(RunError::Interrupted);
        }
        tokio::time::sleep((end - Instant::now()).min(Duration::from_millis(50))).await;
    }
    Ok(())
}

/// UTC now as RFC 3339.
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn first_line(program: &str, arg: &str) -> Option<String> {
    let out = process::run_tool(Cmd::new(paths::tool(program)).arg(arg), Duration::from_secs(10)).ok()?;
    out.stdout.lines().next().map(|l| l.trim().to_string())
}

/// What produced the numbers: versions, accelerator, CPU, commit.
pub fn provenance(spec_accel: accel::Accel) -> Provenance {
    let detected = accel::detect();
    let image = crate::image::GuestImage::current(&paths::cache()).ok();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    Provenance {
        miglab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: crate::image::source_tree().and_then(|t| {
            let o = process::run_tool(
                Cmd::new("git").arg("-C").arg(t).args(["rev-parse", "HEAD"]),
                Duration::from_secs(5),
            )
            .ok()?;
            Some(o.stdout.trim().to_string())
        }),
        qemu: first_line("qemu-system-x86_64", "--version"),
        virtiofsd: first_line("virtiofsd", "--version"),
        ceph: first_line("ceph", "--version"),
        guest_kernel: image.as_ref().map(|i| i.manifest.kernel_release.clone()),
        guest_image: image.as_ref().map(|i| i.manifest.key.clone()),
        accelerator: spec_accel.to_string(),
        accelerator_reason: if spec_accel == detected.accel {
            detected.reason
        } else {
            "forced by the scenario".into()
        },
        host_cpu: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().into()),
        host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().into()),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().into()),
    }
}

/// Runs every repetition of a scenario; returns the result directories.
pub fn run(opts: &RunOptions) -> Result<Vec<PathBuf>, RunError> {
    let (mut scenario, text) = Scenario::load(&opts.scenario)?;
    if let Some(n) = &opts.lab_name {
        scenario.lab.name = n.clone();
    }
    let workload = scenario.workload(&opts.scenario)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?;
    let state = opts.lab_root.join(&scenario.lab.name).join("state.json");
    let reuse = StateFile::load(&state).is_ok_and(|s| s.phase == Phase::Up);
    let t = Instant::now();
    let lab = if reuse {
        say(&scenario.name, 0, &format!("using the running lab '{}'", scenario.lab.name));
        Lab::open(&scenario.lab.name, &opts.lab_root)?
    } else {
        say(&scenario.name, 0, &format!("bringing up lab '{}'", scenario.lab.name));
        let lab = Lab::up(&LabOptions {
            name: scenario.lab.name.clone(),
            root: opts.lab_root.clone(),
            objectstore: scenario.lab.objectstore,
            ..LabOptions::default()
        })?;
        say(&scenario.name, 0, &format!("lab up in {:.1} s", t.elapsed().as_secs_f64()));
        lab
    };
    let mut dirs = Vec::new();
    let mut failure = None;
    for rep in 1..=opts.repetitions.unwrap_or(scenario.repetitions) {
        let dir_name =
            if opts.host_mode.is_some() { format!("{}-host", scenario.name) } else { scenario.name.clone() };
        let dir = opts.out.join(dir_name).join(rep.to_string());
        let outcome = match opts.host_mode {
            Some(d) => host_repetition(&lab, &scenario, &text, &workload, rep, &dir, d),
            None => rt.block_on(repetition(&lab, &scenario, &text, &workload, rep, &dir)),
        };
        match outcome {
            Ok(()) => dirs.push(dir),
            Err(e) => {
                failure = Some(match e {
                    RunError::Interrupted => RunError::Interrupted,
                    e => RunError::Failed { dir: dir.clone(), error: e.to_string() },
                });
                break;
            }
        }
    }
    if !reuse {
        say(&scenario.name, 0, "tearing the lab down");
        lab.down()?;
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(dirs),
    }
}

/// One repetition. Whatever happens, a result.json is left in `dir`.
async fn repetition(
    lab: &Lab,
    s: &Scenario,
    text: &str,
    workload: &Workload,
    rep: u32,
    dir: &Path,
) -> Result<(), RunError> {
    let started = Instant::now();
    fresh_dir(dir)?;
    let spec = VmSpec {
        vcpus: s.guest.vcpus,
        memory_mib: s.guest.memory_mib,
        accel: s.guest.accel.resolve(),
        fs_cache: s.guest.fs_cache,
        cmdline_extra: s.guest.cmdline.clone(),
        virtiofsd_args: s.guest.virtiofsd_args.clone(),
        ..VmSpec::new(&format!("{}-{rep}", s.name))
    };
    let mut result = new_result(&s.name, s, text, workload, rep, spec.accel);
    let write = |r: &RunResult| write_result(dir, r);
    // An interrupted or crashed run leaves this one, marked aborted.
    write(&result)?;

    let mut vm_slot: Option<Vm> = None;
    let mut records: Option<RecordStream> = None;
    let outcome = drive(lab, s, workload, &spec, rep, &mut result, &mut vm_slot, &mut records).await;

    let collected = match records.take() {
        Some(r) => r.finish(Instant::now()).await.ok(),
        None => None,
    };
    if let Some(vm) = vm_slot.take() {
        let _ = vm.stop(lab).await;
    }
    copy_logs(lab, &spec.name, dir);
    if let Some(c) = collected {
        fill(&mut result, c, dir)?;
    }
    result.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    result.status = match &outcome {
        Ok(()) => RunStatus::Completed,
        Err(RunError::Interrupted) => RunStatus::Aborted,
        Err(_) => RunStatus::Failed,
    };
    result.error = outcome.as_ref().err().map(|e| e.to_string());
    write(&result)?;
    summary(&result, dir);
    outcome
}

#[allow(clippy::too_many_arguments)] // the repetition's state, lent to the part that can fail
async fn drive(
    lab: &Lab,
    s: &Scenario,
    workload: &Workload,
    spec: &VmSpec,
    rep: u32,
    result: &mut RunResult,
    vm_slot: &mut Option<Vm>,
    records: &mut Option<RecordStream>,
) -> Result<(), RunError> {
    let hosts: Vec<String> = lab.layout().clients.iter().map(|c| c.name.clone()).collect();
    if let Workload::ReadLoop(j) = workload {
        crate::readloop::prepare(&lab.lab_host(&hosts[0])?.mount_point(), j)?;
    }
    let t = Instant::now();
    let vm = Vm::start(lab, spec, &hosts[0], 0, false).await?;
    say(
        &s.name,
        rep,
        &format!("guest up on {} in {:.2} s ({})", hosts[0], t.elapsed().as_secs_f64(), spec.accel),
    );
    let t0 = Instant::now();
    *records = Some(RecordStream::connect(&vm.record.files.records(), t0).await?);
    let vm = vm_slot.insert(vm);
    match vm.control.request(Command::Start { workload: workload.clone(), seed: s.seed }, AGENT).await? {
        Message::Ok { .. } => {}
        m => return Err(RunError::Workload(format!("{m:?}"))),
    }
    // Laying out files is not part of the measurement: wait for it.
    let layout_deadline = Instant::now() + Duration::from_secs_f64(s.run.layout_timeout_s);
    loop {
        let st = vm.control.status(AGENT).await?;
        if st.laying_out == 0 {
            break;
        }
        if Instant::now() > layout_deadline {
            return Err(RunError::Layout(Duration::from_secs_f64(s.run.layout_timeout_s)));
        }
        pause(Duration::from_millis(100)).await?;
    }
    say(&s.name, rep, &format!("workload '{}' running", workload.name()));
    pause(Duration::from_secs_f64(s.migration.warmup_s)).await?;

    let opts = MigrationOptions {
        params: s.migration.params(),
        timeout: Duration::from_secs_f64(s.migration.timeout_s),
        ..MigrationOptions::default()
    };
    let stream = records.as_ref().ok_or(StreamError::Gone)?;
    for i in 1..=s.migration.count {
        let current = vm_slot.take().ok_or(RunError::Interrupted)?;
        let to = migration::next_host(&hosts, &current.record.host);
        let name = format!("migration {i}");
        stream.open_window(&name, Instant::now())?;
        let before = Instant::now();
        let (next, record) = migration::migrate(lab, current, &to, &opts, &mut Quiet, Some(stream)).await?;
        *vm_slot = Some(next);
        pause(Duration::from_secs_f64(s.migration.settle_s)).await?;
        let mut w = stream.close_window(&name, Instant::now()).await?.unwrap_or_default();
        w.qemu_downtime_ms = record.downtime_ms;
        let (hb, ops) = stream.progress().await?;
        say(
            &s.name,
            rep,
            &format!(
                "{name}: {} → {} {:?} in {:.0} ms; QEMU downtime {} ms, heartbeat gap {:.0} ms (guest clock {:.0} ms), I/O stall {}{:.0} ms; {hb} heartbeats, {ops} ops so far",
                record.from,
                record.to,
                record.outcome,
                before.elapsed().as_secs_f64() * 1e3 - s.migration.settle_s * 1e3,
                record.downtime_ms.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                w.heartbeat_gap_ms,
                w.guest_clock_gap_ms,
                if w.io_stall_unended { "≥ " } else { "" },
                w.io_stall_ms
            ),
        );
        result.windows.push(w);
        result.migrations.push(record);
    }
    pause(Duration::from_secs_f64(s.run.cooldown_s)).await?;
    let vm = vm_slot.as_mut().ok_or(RunError::Interrupted)?;
    let status: Status = vm.control.status(AGENT).await?;
    result.records_dropped = status.records_dropped;
    if s.run.verify {
        let t = Instant::now();
        match vm.control.request(Command::Verify, Duration::from_secs(600)).await? {
            Message::Verify(v) => {
                say(
                    &s.name,
                    rep,
                    &format!(
                        "verified {} blocks in {:.1} s: {} mismatched, {} missing",
                        v.blocks,
                        t.elapsed().as_secs_f64(),
                        v.mismatched(),
                        v.missing()
                    ),
                );
                result.verification = Some(verification(&v));
            }
            m => return Err(RunError::Workload(format!("verify answered {m:?}"))),
        }
    } else {
        vm.control.request(Command::Stop, AGENT).await?;
    }
    Ok(())
}

/// One repetition in host mode: the engine on the first host's mount, no VM.
fn host_repetition(
    lab: &Lab,
    s: &Scenario,
    text: &str,
    workload: &Workload,
    rep: u32,
    dir: &Path,
    duration: Duration,
) -> Result<(), RunError> {
    let started = Instant::now();
    fresh_dir(dir)?;
    let mut result = new_result(&format!("{}-host", s.name), s, text, workload, rep, accel::Accel::Tcg);
    result.provenance.accelerator = "none (host mode)".into();
    result.provenance.accelerator_reason = "the engine ran on the host, without a VM".into();
    // An interrupted or crashed run leaves this one, marked aborted.
    write_result(dir, &result)?;
    let host = &lab.layout().clients[0];
    if let Workload::ReadLoop(j) = workload {
        crate::readloop::prepare(&host.mount, j)?;
    }
    say(&s.name, rep, &format!("host mode on {}'s CephFS mount for {:.0?}", host.name, duration));
    let outcome = crate::hostmode::run(workload, &host.mount, duration, s.seed, s.run.verify);
    match outcome {
        Ok((c, report)) => {
            if let Some(v) = report {
                result.verification = Some(verification(&v));
            }
            fill(&mut result, c, dir)?;
            result.status = RunStatus::Completed;
        }
        Err(e) => {
            result.status = if matches!(e, crate::hostmode::HostModeError::Interrupted) {
                RunStatus::Aborted
            } else {
                RunStatus::Failed
            };
            result.error = Some(e.to_string());
        }
    }
    result.duration_ms = started.elapsed().as_secs_f64() * 1e3;
    write_result(dir, &result)?;
    summary(&result, dir);
    match result.status {
        RunStatus::Completed => Ok(()),
        RunStatus::Aborted => Err(RunError::Interrupted),
        RunStatus::Failed => Err(RunError::Workload(result.error.unwrap_or_default())),
    }
}

/// An empty result directory for one repetition (a previous one of the same name is replaced).
fn fresh_dir(dir: &Path) -> Result<(), RunError> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("logs")).map_err(io(format!("create {}", dir.display())))
}

/// Writes `result.json` atomically.
fn write_result(dir: &Path, r: &RunResult) -> Result<(), RunError> {
    let json = serde_json::to_vec_pretty(r).map_err(|e| io("encode the result")(std::io::Error::other(e)))?;
    write_atomic(&dir.join("result.json"), &json).map_err(io("write result.json"))
}

/// The agent's report as the result keeps it.
fn verification(v: &VerifyReport) -> Verification {
    Verification {
        blocks: v.blocks,
        mismatched: v.mismatched(),
        missing: v.missing(),
        bad: v.bad.iter().filter_map(|b| serde_json::to_value(b).ok()).collect(),
    }
}

/// A result for one repetition, before anything ran.
fn new_result(
    name: &str,
    s: &Scenario,
    text: &str,
    workload: &Workload,
    rep: u32,
    accel: accel::Accel,
) -> RunResult {
    let mut r = RunResult::new(name, rep, s.seed);
    r.started_at = now_rfc3339();
    r.scenario_text = text.into();
    r.workload = serde_json::to_string(workload).unwrap_or_default();
    r.provenance = provenance(accel);
    r
}

/// Copies the VM instances' logs and the lab's logs into the result.
fn copy_logs(lab: &Lab, vm: &str, dir: &Path) {
    let vms = lab.layout().dir.join("vms").join(vm);
    if let Ok(rd) = std::fs::read_dir(&vms) {
        for inst in rd.flatten() {
            let to = dir.join("logs").join(inst.file_name());
            let _ = std::fs::create_dir_all(&to);
            for f in ["console.log", "qemu.log", "virtiofsd.log"] {
                let _ = std::fs::copy(inst.path().join(f), to.join(f));
            }
        }
    }
    let to = dir.join("logs/lab");
    let _ = std::fs::create_dir_all(&to);
    if let Ok(rd) = std::fs::read_dir(lab.layout().log_dir()) {
        for f in rd.flatten() {
            let _ = std::fs::copy(f.path(), to.join(f.file_name()));
        }
    }
}

fn fill(result: &mut RunResult, c: Collected, dir: &Path) -> Result<(), RunError> {
    result.ops = c.ops;
    result.heartbeats = c.heartbeats;
    result.heartbeats_missing = c.heartbeats_missing;
    result.bad_frames = c.bad_frames;
    // Windows closed by the driver carry QEMU's downtime; the collector's own copies know how
    // long a stall that outlived its window lasted.
    for w in c.windows {
        match result.windows.iter_mut().find(|x| x.name == w.name) {
            Some(x) => {
                x.io_stall_ms = w.io_stall_ms;
                x.io_stall_unended = w.io_stall_unended;
            }
            None => result.windows.push(w),
        }
    }
    result.series = c.series;
    let csv_err = |e: csv::Error| io("write a CSV")(std::io::Error::other(e));
    write_atomic(&dir.join("timeline.csv"), &timeline_csv(&result.series).map_err(csv_err)?)
        .map_err(io("write timeline.csv"))?;
    write_atomic(&dir.join("events.csv"), &events_csv(result).map_err(csv_err)?)
        .map_err(io("write events.csv"))?;
    write_atomic(&dir.join("latency.hlog"), &c.hlog).map_err(io("write latency.hlog"))
}

fn summary(r: &RunResult, dir: &Path) {
    println!(
        "{} #{}: {:?} in {:.1} s → {}",
        r.scenario,
        r.repetition,
        r.status,
        r.duration_ms / 1e3,
        dir.display()
    );
    for o in &r.ops {
        println!(
            "  {:<9} {:>9} ops {:>4} err  guest p50 {:>7} us p99 {:>8} us max {:>9} us | host p99 {:>8} us max {:>9} us",
            o.op, o.count, o.errors, o.guest.p50_us, o.guest.p99_us, o.guest.max_us, o.host.p99_us, o.host.max_us
        );
    }
    for (w, m) in r.windows.iter().zip(&r.migrations) {
        println!(
            "  {:<12} {:?}: QEMU downtime {} ms, heartbeat gap {:.0} ms (guest clock {:.0} ms), I/O stall {:.0} ms{}",
            w.name,
            m.outcome,
            w.qemu_downtime_ms.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
            w.heartbeat_gap_ms,
            w.guest_clock_gap_ms,
            w.io_stall_ms,
            if w.io_stall_unended { " (not ended when the stream ended)" } else { "" }
        );
    }
    if let Some(v) = &r.verification {
        println!("  verify: {} blocks, {} mismatched, {} missing", v.blocks, v.mismatched, v.missing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_has_the_right_shape() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 20, "{s}");
        assert!(s.ends_with('Z') && &s[4..5] == "-" && &s[10..11] == "T", "{s}");
        assert!(s.starts_with("20"), "{s}");
    }
}
