//! `miglab run`: a scenario checked completely, the lab reused or brought up, then for each
//! repetition a plan derived, executed, assembled into a result, and written to
//! `<out>/<scenario>/<repetition>/` (first as `aborted`, so a run that never finishes still
//! leaves a result). `--replay result.json` runs the plan of an earlier result again.

use crate::assemble::{self, assemble, begun, fresh_dir, write_outputs, write_result};
use crate::clock::RunClock;
use crate::plan::Plan;
pub use crate::preflight::Source;
use crate::preflight::{self, Overrides, PreflightError};
use crate::progress::{ms, window_line};
use crate::run::{copy_logs, execute, vm_spec};
use crate::scenario::LabSpec;
use miglab_infra::binaries::BinaryChoice;
use miglab_infra::topology::lab::{Lab, LabError, LabOptions};
use miglab_infra::topology::state::{Phase, StateFile};
use miglab_infra::topology::{Site, Topology};
use miglab_model::{RunResult, RunStatus};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("lab '{lab}' already runs {}: they share its file system and would write into this run's files. Stop them first: {}", .vms.join(", "), .vms.iter().map(|v| format!("`miglab vm down --name {lab} --vm {v}`")).collect::<Vec<_>>().join(", "))]
    LabBusy { lab: String, vms: Vec<String> },
    #[error("lab '{lab}' is not whole: {} not running (a fault's revive that never ran, or a daemon stopped by hand); the run would measure a different cluster. Restart {}, or `miglab lab down --name {lab}` and let the run bring it up", .daemons.join(", "), .daemons.iter().map(|d| format!("`miglab lab daemon --name {lab} {d} restart`")).collect::<Vec<_>>().join(", "))]
    LabIncomplete { lab: String, daemons: Vec<String> },
    #[error("lab '{lab}' is not as a run needs it: {}. Fix that, or `miglab lab down --name {lab}` and let the run bring it up", .what.join("; "))]
    LabAltered { lab: String, what: Vec<String> },
    /// A fault's undo failed in a repetition: the ones after it would run on a changed ground.
    #[error("a fault's undo failed, so the session stopped after {done} of {total} runs rather than measure a changed lab or cluster: {}. `miglab lab down` (`lab down --topology FILE` for real hosts) reverts the fault journal", .what.join("; "))]
    UndoFailed { done: usize, total: usize, what: Vec<String> },
    #[error("lab '{lab}' did not become healthy within {secs} s ({summary}); see `miglab lab status --name {lab}`, or `miglab lab down --name {lab}` and let the run bring it up")]
    LabUnhealthy { lab: String, secs: u64, summary: String },
    #[error(transparent)]
    External(#[from] miglab_infra::topology::external::ExternalError),
    #[error("{0}")]
    NotHere(String),
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("interrupted; the partial results are in {}", .0.display())]
    Interrupted(PathBuf),
    #[error("interrupted {0}; nothing was run")]
    InterruptedBefore(&'static str),
    #[error("{} of {total} repetitions did not complete:\n{}", .failed.len(), .failed.iter().map(|(d, why)| format!("  {}: {why}", d.display())).collect::<Vec<_>>().join("\n"))]
    Failed { total: usize, failed: Vec<(PathBuf, String)> },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RunError {
    let what = what.into();
    move |source| RunError::Io { what, source }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: Source,
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
    /// The builds under test, over the scenario's (`--qemu`, `--virtiofsd`, `--kernel`).
    pub binaries: BinaryChoice,
    /// Run on the hosts of this topology file (over SSH) instead of the local lab.
    pub topology: Option<PathBuf>,
}

/// Where the runs run: the local lab (brought up for the session if it was not), or an
/// external topology.
enum Ground {
    Lab { lab: Arc<Lab>, reuse: bool },
    External(Arc<miglab_infra::topology::external::site::ExternalSite>),
}

fn say(scenario: &str, rep: u32, msg: &str) {
    crate::progress::line(&format!("[{scenario} #{rep}] {msg}"));
}

/// Runs every repetition; returns the result directories (all completed), or the failures.
pub fn run(opts: &RunOptions) -> Result<Vec<PathBuf>, RunError> {
    let overrides = Overrides {
        binaries: opts.binaries.clone(),
        repetitions: opts.repetitions,
        lab_name: opts.lab_name.clone(),
    };
    let loaded = preflight::load(&opts.source, &overrides)?;
    preflight::image_agent()?;
    if opts.host_mode.is_some() && loaded.most_guests() > 1 {
        return Err(RunError::NotHere(
            "--host-mode runs one instance of the workload on this machine's mount: not a scenario of several guests".into(),
        ));
    }
    if opts.host_mode.is_some() && loaded.dirties() {
        return Err(RunError::NotHere(
            "--host-mode has no guest whose memory could be dirtied: leave [dirty] out, or run without --host-mode".into(),
        ));
    }
    if opts.topology.is_some() && opts.host_mode.is_some() {
        return Err(RunError::NotHere(
            "--host-mode runs the workload on this machine's mount: not with --topology".into(),
        ));
    }
    let rt = miglab_infra::wait::runtime().map_err(RunError::Runtime)?;
    let ground = open_ground(opts, &loaded.name, &loaded.lab)?;
    let topo: Arc<dyn Topology> = match &ground {
        Ground::Lab { lab, .. } => lab.clone(),
        Ground::External(x) => x.clone(),
    };
    // Whatever happens from here, the ground is let go of (a lab this run brought up goes down).
    let tally = ready(&ground, &topo, &loaded)
        .and_then(|()| plan_all(&ground, &topo, &loaded))
        .map(|list| run_all(&rt, &topo, &list, &loaded, opts));
    drop(topo);
    let released = release(ground, &loaded.name);
    match (tally.and_then(Tally::into_result), released) {
        (result, Ok(())) => result,
        (Ok(_), Err(e)) => Err(e),
        // The run's own error comes first; the teardown's is added to it.
        (Err(e), Err(t)) => {
            eprintln!("miglab: tearing the lab down after the failure also failed: {t}");
            Err(e)
        }
    }
}

/// What the repetitions of a session came to.
#[derive(Debug, Default)]
struct Tally {
    completed: Vec<PathBuf>,
    failed: Vec<(PathBuf, String)>,
    interrupted: Option<PathBuf>,
    /// What stopped the session before its last repetition.
    stopped: Option<RunError>,
}

impl Tally {
    fn into_result(self) -> Result<Vec<PathBuf>, RunError> {
        if let Some(e) = self.stopped {
            return Err(e);
        }
        if let Some(dir) = self.interrupted {
            return Err(RunError::Interrupted(dir));
        }
        if !self.failed.is_empty() {
            return Err(RunError::Failed {
                total: self.completed.len() + self.failed.len(),
                failed: self.failed,
            });
        }
        Ok(self.completed)
    }
}

/// The local lab (reused or brought up), or the hosts of a topology file.
fn open_ground(opts: &RunOptions, name: &str, lab_spec: &LabSpec) -> Result<Ground, RunError> {
    let Some(file) = &opts.topology else { return open_lab(opts, name, lab_spec) };
    say(name, 0, &format!("connecting to the hosts of {}", file.display()));
    let t = Instant::now();
    let site = miglab_infra::topology::external::site::ExternalSite::open(file, &opts.lab_root)?;
    say(
        name,
        0,
        &format!(
            "{} hosts ready in {:.1} s ({}: {})",
            site.host_names().len(),
            t.elapsed().as_secs_f64(),
            site.accel_choice().accel,
            site.accel_choice().reason
        ),
    );
    Ok(Ground::External(Arc::new(site)))
}

/// The ground as a run needs it: whole, healthy, nothing a gone miglab's faults left.
fn ready(ground: &Ground, topo: &Arc<dyn Topology>, loaded: &preflight::Loaded) -> Result<(), RunError> {
    let name = &loaded.name;
    match ground {
        Ground::Lab { lab, .. } => lab_ready(lab, topo, &loaded.lab.name, name, loaded.client_arming())?,
        Ground::External(_) => {
            let mut left = undo_leftovers(topo.as_ref(), name);
            if left.is_empty() {
                // A shared cluster's clients are not miglab's to read (their admin sockets are
                // on hosts it does not run); an OSD that does not answer is the health check's.
                let (on, unread) = injections_left_on(topo.as_ref(), false);
                left.extend(on);
                for u in unread {
                    say(name, 0, &format!("warning: could not read {u}"));
                }
            }
            if !left.is_empty() {
                return Err(RunError::NotHere(format!(
                    "the cluster is not as a run needs it: {}; `miglab lab down --topology FILE` reverts the journal",
                    left.join("; ")
                )));
            }
        }
    }
    if let Some(p) = miglab_infra::image::GuestImage::current(&miglab_infra::paths::cache())
        .ok()
        .and_then(|i| i.agent_sources_newer())
    {
        say(
            name,
            0,
            &format!(
                "warning: {} changed after the guest image was built: the guest runs the old agent until `miglab image build`",
                p.display()
            ),
        );
    }
    Ok(())
}

/// Every plan of every cell for this ground, before the first runs: a sweep is refused whole.
fn plan_all(
    ground: &Ground,
    topo: &Arc<dyn Topology>,
    loaded: &preflight::Loaded,
) -> Result<Vec<Plan>, RunError> {
    let refuses = |f: &miglab_faults::Fault| topo.refuses(f);
    let facts = preflight::Ground {
        hosts: topo.host_names(),
        osds: topo
            .daemons()
            .iter()
            .filter(|d| d.kind == miglab_infra::topology::DaemonKind::Osd)
            .filter_map(|d| d.id.parse().ok())
            .collect(),
        remote: matches!(ground, Ground::External(_)),
        refuses: &refuses,
        images: true,
    };
    Ok(preflight::plans(loaded, &facts)?)
}

/// Runs the plans in order; a sweep's report is written from its cells' results.
fn run_all(
    rt: &tokio::runtime::Runtime,
    topo: &Arc<dyn Topology>,
    list: &[Plan],
    loaded: &preflight::Loaded,
    opts: &RunOptions,
) -> Tally {
    let name = &loaded.name;
    let bar = crate::progress::bar(name, list.len() as u64, crate::progress::Unit::Runs);
    let mut sweep: Vec<miglab_reports::sweep::Rep> = Vec::new();
    let mut tally = Tally::default();
    for plan in list {
        let dir_name =
            if opts.host_mode.is_some() { format!("{}-host", plan.scenario) } else { plan.scenario.clone() };
        let dir = match &plan.cell {
            Some(c) => opts.out.join(dir_name).join(c.name()).join(plan.repetition.to_string()),
            None => opts.out.join(dir_name).join(plan.repetition.to_string()),
        };
        let result = repetition(rt, topo, plan, &loaded.text, &dir, opts.host_mode);
        bar.inc(1);
        if let (Ok(r), Some(cell)) = (&result, &plan.cell) {
            sweep.push(miglab_reports::sweep::Rep { cell: cell.clone(), result: r.clone() });
        }
        match result {
            Ok(r) => match r.status {
                RunStatus::Completed => tally.completed.push(dir),
                RunStatus::Aborted => {
                    tally.interrupted = Some(dir);
                    break;
                }
                RunStatus::Failed => tally
                    .failed
                    .push((dir, r.problems.first().or(r.error.as_ref()).cloned().unwrap_or_default())),
            },
            Err(e) => {
                tally.stopped = Some(e);
                break;
            }
        }
        // Every fault of the repetition is reverted by now: what is left of ours did not undo.
        let left = unreverted_of_mine(&topo.journal());
        if !left.is_empty() {
            let done = tally.completed.len() + tally.failed.len();
            tally.stopped = Some(RunError::UndoFailed { done, total: list.len(), what: left });
            break;
        }
    }
    bar.finish_and_clear();
    if !sweep.is_empty() {
        let dir = opts.out.join(name);
        // The runs' own files are written; a sweep report that cannot be drawn says why and
        // can be made later (`miglab report`).
        if let Err(e) = crate::assemble::write_sweep(&dir, name, &sweep) {
            eprintln!("miglab: the sweep report of {} was not written: {e}", dir.display());
        }
        println!("{name}: sweep of {} runs → {}", sweep.len(), dir.join("sweep.html").display());
    }
    tally
}

/// Lets go of the ground: a lab this session brought up is torn down, a topology's connections
/// closed.
fn release(ground: Ground, name: &str) -> Result<(), RunError> {
    match ground {
        Ground::Lab { lab, reuse: false } => {
            say(name, 0, "tearing the lab down");
            match Arc::try_unwrap(lab) {
                Ok(lab) => lab.down()?,
                Err(_) => eprintln!("miglab: the lab is still in use; `miglab lab down` tears it down"),
            }
        }
        Ground::Lab { .. } => {}
        Ground::External(site) => site.close(),
    }
    Ok(())
}

/// One repetition. Whatever happens, a result.json is left in `dir`.
fn repetition(
    rt: &tokio::runtime::Runtime,
    topo: &Arc<dyn Topology>,
    plan: &Plan,
    text: &str,
    dir: &Path,
    host_mode: Option<Duration>,
) -> Result<RunResult, RunError> {
    let started = Instant::now();
    fresh_dir(dir).map_err(io(format!("create {}", dir.display())))?;
    let mut spec = vm_spec(plan);
    spec.accel = topo.accel(plan.guest.accel);
    let how = if host_mode.is_some() { "the engine ran on the host, without a VM" } else { "" };
    let mut prov = assemble::provenance(spec.accel, how, &spec.binaries, spec.image.as_deref());
    if host_mode.is_some() {
        prov.accelerator = "none (host mode)".into();
    }
    if let Some(t) = topo.record() {
        assemble::on_topology(&mut prov, t);
    }
    let result = begun(plan, text, prov);
    // An interrupted or crashed run leaves this one, marked aborted.
    write_result(dir, &result).map_err(io("write result.json"))?;
    let clock = RunClock::start();
    let tell = |m: &str| say(&plan.scenario, plan.repetition, m);
    let site: Arc<dyn Site> = topo.clone();
    let mut ex = match host_mode {
        Some(d) => crate::hostmode::execute(site.as_ref(), plan, d, clock, &tell),
        None => rt.block_on(execute(topo, plan, clock, &tell)),
    };
    // A connection that went away explains whatever failed after it.
    let lost = site.connections_lost();
    if !lost.is_empty() {
        if let Some(e) = ex.error.take() {
            ex.cleanup.push(format!("what failed once it was gone: {e}"));
        }
        let why = format!("the SSH connection to {} was lost during the run", lost.join(" and "));
        ex.error = Some(crate::run::ExecError::ConnectionLost(why));
    }
    for g in &ex.guests {
        copy_logs(site.as_ref(), &g.name, dir);
    }
    let r = assemble(result, plan, &ex, started.elapsed().as_secs_f64() * 1e3);
    let hlogs: Vec<Option<&[u8]>> =
        ex.guests.iter().map(|g| g.collected.as_ref().map(|c| c.hlog.as_slice())).collect();
    write_outputs(dir, &r, &hlogs).map_err(io(format!("write the results in {}", dir.display())))?;
    crate::progress::suspend(|| summary(&r, dir));
    Ok(r)
}

fn summary(r: &RunResult, dir: &Path) {
    if crate::progress::quiet() {
        return;
    }
    println!(
        "{} #{}: {:?} in {:.1} s → {}",
        r.scenario,
        r.repetition,
        r.status,
        r.duration_ms / 1e3,
        dir.display()
    );
    if r.guests.is_empty() {
        guest_summary(r);
    } else {
        for g in &r.guests {
            println!(
                "guest {} ({}): {}",
                g.guest,
                g.vm,
                g.outcome.map(|o| o.to_string()).unwrap_or_else(|| "no outcome".into())
            );
            guest_summary(&miglab_reports::fleet::view(r, g));
        }
        if let Some(f) = &r.fleet {
            fleet_summary(f);
        }
    }
    run_summary(r);
}

/// The fleet's lines: each host's evacuation, the spread of downtime, the limit missed.
fn fleet_summary(f: &miglab_model::Fleet) {
    println!("{} guests, {} migrating at once:", f.guests, f.parallel);
    for e in &f.evacuations {
        println!(
            "  migration {} {} → {}: {} of {} guests completed, evacuation {:.0} ms",
            e.hop, e.from, e.to, e.completed, e.guests, e.evacuation_ms
        );
    }
    let spread = |s: &miglab_model::Spread| {
        format!("p50 {:.0}, p90 {:.0}, max {:.0} ms (n={})", s.p50, s.p90, s.max, s.n)
    };
    if let Some(d) = &f.qemu_downtime_ms {
        println!("  QEMU downtime {}; {} over the {} ms limit", spread(d), f.over_limit, f.downtime_limit_ms);
    }
    for (name, s) in &f.phases {
        println!("  phase {name}: {}", spread(s));
    }
}

/// One guest's lines: its ops, its migrations, its stall and its verify pass.
fn guest_summary(r: &RunResult) {
    for o in &r.ops {
        println!(
            "  {:<9} {:>9} ops {:>6} failed  guest p50 {:>7} us p99 {:>8} us max {:>9} us | host p99 {:>8} us max {:>9} us",
            o.op, o.count, o.failed, o.guest.p50_us, o.guest.p99_us, o.guest.max_us, o.host.p99_us, o.host.max_us
        );
        if !o.errors.is_empty() {
            let e: Vec<String> = o.errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
            println!("  {:<9} failed with {}", "", e.join(", "));
        }
    }
    for m in &r.migrations {
        let w = r.migration_window(m.hop);
        println!(
            "  migration {} {} → {} {}: QEMU downtime {}, total {}; {}",
            m.hop,
            m.from,
            m.to,
            match m.outcome {
                _ if m.completed() => "completed",
                miglab_model::Outcome::Unsupported { .. } => "REFUSED by QEMU (unsupported)",
                _ => "NOT COMPLETED",
            },
            ms(m.downtime_ms.map(|d| d as f64)),
            ms(m.total_time_ms.map(|d| d as f64)),
            w.map(window_line).unwrap_or_else(|| "no window".into())
        );
        if let Some(line) = crate::progress::state_line(m) {
            println!("    {line}");
        }
        if let Some(line) = crate::progress::downtime_line(m) {
            println!("    {line}");
        }
        // A QEMU that took seconds to answer was blocked (in a vhost-user call, typically).
        if let Some(q) = m.longest_qmp_wait_ms.filter(|q| *q >= 1000.0) {
            println!("    the source QEMU's QMP went unanswered for {q:.0} ms during it");
        }
    }
    if let Some(d) = r.stream.longest_io_stall_ms {
        println!(
            "  longest I/O stall of the run: {d:.0} ms from {:.0} ms",
            r.stream.longest_io_stall_start_ms.unwrap_or_default()
        );
    }
    if let Some(v) = &r.verification {
        println!(
            "  verify: {} blocks through {} ({}): {} mismatched, {} missing, {} unreadable, {} errored writes landed; {} inline mismatches",
            v.blocks,
            v.read_through,
            v.read_mode,
            v.mismatched,
            v.missing,
            v.counts.unreadable,
            v.errored_write_landed,
            v.inline_mismatches
        );
        if v.unverified_files > 0 {
            println!("  verify: {} files not read back: their jobs say verify = false", v.unverified_files);
        }
        for p in &v.replaced {
            println!(
                "  verify: {} names {} now, not the guest's file ({} of {} blocks not as the guest wrote them): a third party's doing, not lost data",
                p.path, p.now, p.blocks_differ, p.blocks
            );
        }
    }
    if let Some(m) = &r.memory {
        if let Some(line) = crate::progress::memory_line(m) {
            println!("  memory: {line}");
        }
    }
}

/// The run's own lines: its faults (and whose hop anchored each), its outcome, its problems.
fn run_summary(r: &RunResult) {
    for f in &r.faults {
        let at = |t: Option<f64>| t.map(|t| format!("{t:.0} ms")).unwrap_or_else(|| "-".into());
        let began = match (f.began_ms, f.injected_ms) {
            (Some(b), Some(i)) if i - b >= 10.0 => format!(" (began {b:.0} ms)"),
            _ => String::new(),
        };
        let whose = match (f.guest, r.guests.is_empty()) {
            (Some(g), false) => format!(" (at guest {g}'s hop)"),
            _ => String::new(),
        };
        println!(
            "  {} on {}{whose}: injected {}{began}, cleared {} ({}){}{}",
            f.name,
            if f.target.is_empty() { "?" } else { &f.target },
            at(f.injected_ms),
            at(f.cleared_ms),
            f.undo,
            f.healthy_after_ms.map(|h| format!(", Ceph healthy {h:.0} ms later")).unwrap_or_default(),
            f.error.as_ref().map(|e| format!(" — {e}")).unwrap_or_default()
        );
    }
    if let Some(o) = r.outcome {
        let expected = r.expected.as_ref().map(|e| format!(" (expected: {e})")).unwrap_or_default();
        println!(
            "  outcome: {o}{expected}{}",
            if r.outcome_why.is_empty() { String::new() } else { format!(": {}", r.outcome_why.join("; ")) }
        );
    }
    for p in &r.problems {
        println!("  problem: {p}");
    }
    if let Some(e) = &r.error {
        println!("  error: {e}");
    }
}

/// The lab a session runs on: the running one, or one brought up for it.
fn open_lab(opts: &RunOptions, name: &str, lab_spec: &LabSpec) -> Result<Ground, RunError> {
    let state = opts.lab_root.join(&lab_spec.name).join("state.json");
    let reuse = StateFile::load(&state).is_ok_and(|s| s.phase == Phase::Up);
    let t = Instant::now();
    let lab = Arc::new(if reuse {
        say(name, 0, &format!("using the running lab '{}'", lab_spec.name));
        Lab::open(&lab_spec.name, &opts.lab_root)?
    } else {
        say(name, 0, &format!("bringing up lab '{}'", lab_spec.name));
        let lab = Lab::up(&LabOptions {
            name: lab_spec.name.clone(),
            root: opts.lab_root.clone(),
            objectstore: lab_spec.objectstore,
            on_step: crate::progress::step_bar(format!("lab {}", lab_spec.name)),
            ..LabOptions::default()
        })?;
        say(name, 0, &format!("lab up in {:.1} s", t.elapsed().as_secs_f64()));
        lab
    });
    Ok(Ground::Lab { lab, reuse })
}

/// Undoes what the faults of a miglab that is gone left on `topo` (its fault journal), saying
/// what it undid; returns what it could not undo, and the faults a running miglab has in effect.
fn undo_leftovers(topo: &dyn Topology, scenario: &str) -> Vec<String> {
    let mut altered = Vec::new();
    for (entry, r) in miglab_infra::topology::journal::recover(topo) {
        if !r.done.is_empty() {
            say(
                scenario,
                0,
                &format!(
                    "undid what '{}' (miglab pid {}) left: {}",
                    entry.fault,
                    entry.owner.pid,
                    r.summary()
                ),
            );
        }
        altered.extend(r.failed.iter().map(|f| format!("could not undo what '{}' left: {f}", entry.fault)));
    }
    altered.extend(
        topo.journal()
            .iter()
            .filter(|e| !e.orphaned())
            .map(|e| format!("'{}' of miglab pid {} is in effect on it", e.fault, e.owner.pid)),
    );
    altered
}

/// The messenger settings miglab's storage faults turn on. A run starts only with all of them
/// off, as the lab makes them and as a real cluster runs.
const INJECTIONS: [&str; 2] = [crate::inject::DELAY_PROBABILITY, crate::inject::SOCKET_FAILURES];

/// Every OSD's (and, with `clients`, every host's CephFS client's) messenger injection that is
/// on, each with its fix; and the settings that could not be read.
fn injections_left_on(topo: &dyn Topology, clients: bool) -> (Vec<String>, Vec<String>) {
    let mut reads: Vec<(String, &str, Result<String, String>)> = Vec::new();
    for d in topo.daemons().iter().filter(|d| d.kind == miglab_infra::topology::DaemonKind::Osd) {
        for k in INJECTIONS {
            reads.push((d.to_string(), k, topo.config_get(d, k).map_err(|e| e.to_string())));
        }
    }
    if clients {
        // Each client's read is a `ceph --admin-daemon` process (~90 ms): side by side, so the
        // check adds ~0.1 s to a session rather than ~0.35 s.
        let hosts = topo.host_names();
        let pairs: Vec<(&String, &str)> = hosts.iter().flat_map(|h| INJECTIONS.map(|k| (h, k))).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = pairs
                .iter()
                .map(|&(h, k)| {
                    (h, k, s.spawn(move || topo.client_config_get(h, k).map_err(|e| e.to_string())))
                })
                .collect();
            for (h, k, t) in handles {
                let read = t.join().unwrap_or_else(|_| Err("its read panicked".into()));
                reads.push((format!("client.{h}"), k, read));
            }
        });
    }
    let mut on = Vec::new();
    let mut unread = Vec::new();
    for (who, key, value) in reads {
        match value {
            Ok(v) => on.extend(injection_on(&who, key, &v)),
            Err(e) => unread.push(format!("{who}'s {key}: {e}")),
        }
    }
    (on, unread)
}

/// `who`'s messenger injection `key` read as `value`, if it is on: what it does and its fix.
fn injection_on(who: &str, key: &str, value: &str) -> Option<String> {
    let off = value.trim().parse::<f64>().map(|v| v == 0.0).unwrap_or(false);
    if off {
        return None;
    }
    let fix = if let Some(host) = who.strip_prefix("client.") {
        format!("ceph --admin-daemon <{host}'s client.{host}.asok> config set {key} 0")
    } else {
        format!("ceph tell {who} config set {key} 0")
    };
    Some(format!(
        "{who} has {key} = {} (a storage fault left on, not by a running miglab; `{fix}`)",
        value.trim()
    ))
}

/// This miglab's journal entries that still hold undos: faults whose undo failed.
fn unreverted_of_mine(journal: &[miglab_infra::topology::journal::Entry]) -> Vec<String> {
    let me = miglab_infra::topology::journal::me();
    journal
        .iter()
        .filter(|e| e.owner.pid == me.pid && e.owner.start_ticks == me.start_ticks && !e.steps.is_empty())
        .map(|e| {
            let steps: Vec<String> = e.steps.iter().map(ToString::to_string).collect();
            format!("'{}' still needs: {}", e.fault, steps.join(", "))
        })
        .collect()
}

/// How long a reused lab's mount may take to answer before it is mounted again.
const MOUNT_WHOLE: Duration = Duration::from_secs(3);

/// How long a reused lab may take to be healthy before a run refuses it.
const LAB_HEALTHY: Duration = Duration::from_secs(60);

/// Makes a reused lab what a run needs, or refuses it: first what the faults of a miglab that
/// is gone left (from the fault journal, reverted and said), then links left cut or shaped, a
/// guest left running, a daemon missing, and a cluster that is not healthy.
fn lab_ready(
    lab: &Lab,
    topo: &Arc<dyn Topology>,
    name: &str,
    scenario: &str,
    arming: preflight::ClientArming,
) -> Result<(), RunError> {
    // First: a partition left by a killed miglab would hang anything that touches the mount.
    let mut altered = undo_leftovers(topo.as_ref(), scenario);
    altered.extend(lab.altered_links()?);
    if !altered.is_empty() {
        return Err(RunError::LabAltered { lab: name.into(), what: altered });
    }
    // A guest left running on the lab (`miglab vm up`, or a miglab that was killed) would keep
    // writing into the same CephFS: its blocks would read as this run's lost or foreign data.
    let mut running: Vec<String> =
        miglab_infra::vm::ledger::all(lab).into_iter().map(|r| r.spec.name).collect();
    running.sort();
    running.dedup();
    if !running.is_empty() {
        return Err(RunError::LabBusy { lab: name.into(), vms: running });
    }
    // A daemon killed by hand (or by a fault whose revive never ran) leaves the cluster smaller
    // than the one the scenario measures: an MDS kill without a standby is another experiment.
    let running: Vec<String> = lab
        .state()
        .processes
        .into_iter()
        .filter(|p| miglab_infra::topology::lab::process_state(p) == "running")
        .map(|p| p.name)
        .collect();
    let down: Vec<String> =
        topo.daemons().iter().map(|d| d.to_string()).filter(|d| !running.contains(d)).collect();
    if !down.is_empty() {
        return Err(RunError::LabIncomplete { lab: name.into(), daemons: down });
    }
    // A messenger injection set by hand (or by a tool miglab does not know) is not in the
    // journal: the run would measure a delayed or failing cluster and call it the baseline.
    let (mut on, unread) = injections_left_on(topo.as_ref(), true);
    on.extend(unread.into_iter().map(|u| format!("could not read {u}")));
    if !on.is_empty() {
        return Err(RunError::LabAltered { lab: name.into(), what: on });
    }
    // A client fenced and let back in can keep a request it sent meanwhile unanswered for good
    // (Ceph 16 does not resend it): the guest's first touch of that path would hang. No guest
    // runs now, so such a mount is made whole again here, and said.
    let hosts = topo.host_names();
    std::thread::scope(|s| {
        let checks: Vec<_> =
            hosts.iter().map(|h| (h, s.spawn(move || topo.ensure_mount(h, MOUNT_WHOLE)))).collect();
        for (h, c) in checks {
            match c.join() {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(why))) => say(scenario, 0, &format!("{h}'s CephFS {why}: mounted again")),
                Ok(Err(e)) => say(scenario, 0, &format!("warning: {h}'s CephFS mount: {e}")),
                Err(_) => say(scenario, 0, &format!("warning: the check of {h}'s CephFS mount panicked")),
            }
        }
    });
    if arming != preflight::ClientArming::Either {
        let armed = arming == preflight::ClientArming::Armed;
        for h in &hosts {
            if lab.arm_client(h, armed)? {
                let how =
                    if armed { "armed for a storage delay" } else { "unarmed (this scenario fences it)" };
                say(scenario, 0, &format!("{h}'s CephFS client mounted again, {how}"));
            }
        }
    }
    // An OSD left out, PGs still recovering from the last run's fault: the baseline would run
    // on a degraded cluster.
    let t = Instant::now();
    let mut summary = String::new();
    while t.elapsed() < LAB_HEALTHY {
        match topo.health() {
            Ok((true, _)) => return Ok(()),
            Ok((false, s)) => summary = s,
            Err(e) => summary = e.to_string(),
        }
        if miglab_infra::interrupt::requested() {
            return Err(RunError::InterruptedBefore("while waiting for the lab to be healthy"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    Err(RunError::LabUnhealthy { lab: name.into(), secs: LAB_HEALTHY.as_secs(), summary })
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_infra::topology::journal::{me, Entry, Undo};

    /// A delay or socket failures set by hand are not in the journal; before, the readiness
    /// check did not look and the run measured a delayed cluster as its baseline.
    #[test]
    fn an_injection_left_on_is_named_with_its_fix() {
        assert_eq!(injection_on("osd.1", "ms_inject_delay_probability", "0.000000"), None);
        assert_eq!(injection_on("client.c1", "ms_inject_socket_failures", "0"), None);
        let on = injection_on("osd.1", "ms_inject_delay_probability", "0.500000").expect("on");
        assert!(on.contains("osd.1 has ms_inject_delay_probability = 0.500000"), "{on}");
        assert!(on.contains("`ceph tell osd.1 config set ms_inject_delay_probability 0`"), "{on}");
        let on = injection_on("client.c2", "ms_inject_socket_failures", "20").expect("on");
        assert!(on.contains("client.c2.asok"), "{on}");
        // What cannot be read as a number is not taken for off.
        assert!(injection_on("osd.0", "ms_inject_socket_failures", "garbage").is_some());
    }

    /// A repetition whose fault could not be undone left its entry: the session stops there
    /// (before, the remaining repetitions ran on the changed lab and read `completed`). Entries
    /// of a gone miglab are the readiness check's; empty entries undo nothing.
    #[test]
    fn an_undo_that_failed_is_found_in_the_journal() {
        let entry = |owner, steps: Vec<Undo>| Entry { id: "x".into(), fault: "rename".into(), owner, steps };
        let step = Undo::RenameBack { away: "/m/w.miglab-away".into(), back: "/m/w".into() };
        let mut gone = me();
        gone.start_ticks += 1;
        assert!(unreverted_of_mine(&[entry(me(), vec![]), entry(gone, vec![step.clone()])]).is_empty());
        let left = unreverted_of_mine(&[entry(me(), vec![step])]);
        assert_eq!(left, vec!["'rename' still needs: rename /m/w.miglab-away back to /m/w"]);
    }
}
