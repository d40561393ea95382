//! Executing a plan on a site: guest, workload, hops, verification — and always the cleanup.
//! What happened comes back as an [`Execution`], raw; the assembler (one layer up) turns it into the
//! result. Every wait has a deadline and gives up within ~50 ms of a Ctrl-C.

use crate::clock::RunClock;
use crate::collect::Collected;
use crate::inject::{self, Gate, Injector};
use crate::migration::{self, Hop, MigrationError, MigrationOptions};
use crate::observe::{Bus, Observed};
use crate::plan::{After, Plan, Schedule};
use crate::progress;
use crate::stream::{RecordStream, StreamError};
use miglab_infra::control::ControlError;
use miglab_infra::interrupt;
use miglab_infra::topology::{Site, Topology, TopologyError};
use miglab_infra::vm::{Vm, VmError, VmSpec};
use miglab_model::{FaultRecord, MigrationRecord};
use miglab_workloads::control::{Command, Message, Status};
use miglab_workloads::job::Workload;
use miglab_workloads::verify::VerifyReport;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ExecError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Records(#[from] StreamError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("the workload could not start: {0}")]
    Workload(String),
    #[error("the workload's files were not laid out within {0:.0?} ({1})")]
    Layout(Duration, String),
    #[error("the workload's files could not be laid out: {0}")]
    LayoutFailed(String),
    #[error("interrupted")]
    Interrupted,
    #[error("the guest's file system hangs: heartbeats arrive, but no op completed for {0:.0} ms")]
    FsHung(f64),
    #[error("the guest is lost: no heartbeat for {0:.0} ms")]
    GuestLost(f64),
    #[error("the faults could not be set up: {0}")]
    Faults(String),
    #[error("{0}; `miglab lab down --topology FILE` ends what is left on the hosts")]
    ConnectionLost(String),
    #[error("{host}'s CephFS mount did not answer within {secs} s (a cut link or an evicted client?): see `miglab lab status`; `miglab lab link --name <lab> {host} --heal` heals a cut link")]
    MountHung { host: String, secs: u64 },
    #[error("the workload's files on the mount: {0}")]
    Mount(#[from] std::io::Error),
    #[error("the scenario's [ceph] settings could not be made: {0}")]
    Settings(String),
}

/// What one guest of a repetition did: what its stream measured, its verify pass, its agent's
/// counters.
#[derive(Debug, Default)]
pub struct GuestRun {
    /// The VM's name.
    pub name: String,
    /// What it ran (its own files when the run has several guests).
    pub workload: Option<Workload>,
    pub collected: Option<Collected>,
    pub verify: Option<VerifyReport>,
    /// The host whose client served the verify pass.
    pub verify_host: Option<String>,
    /// The verify pass was cut short.
    pub verify_incomplete: bool,
    /// The agent's counters at the end.
    pub agent: Option<Status>,
    /// The dirtying load's pages after each hop.
    pub memory: Vec<miglab_model::HopMemory>,
}

/// What one repetition did, as it happened.
#[derive(Debug)]
pub struct Execution {
    pub clock: RunClock,
    /// Marks this run's blocks (with the seed).
    pub nonce: u64,
    /// Every hop of every guest, in the order they ended.
    pub migrations: Vec<MigrationRecord>,
    /// One per guest, in the plan's order.
    pub guests: Vec<GuestRun>,
    /// Whatever ended the run early.
    pub error: Option<ExecError>,
    /// Problems while cleaning up (each reported; the run fails with them).
    pub cleanup: Vec<String>,
    /// Every planned fault: when it fired, what it did, how it was undone.
    pub faults: Vec<FaultRecord>,
    /// The scenario's `[ceph]` settings as made, each with the value it replaced.
    pub ceph_settings: Vec<String>,
}

impl Execution {
    /// Nothing done yet, on `clock`, with a fresh nonce.
    pub fn new(clock: RunClock) -> Self {
        Self {
            clock,
            nonce: rand::random(),
            migrations: Vec::new(),
            guests: Vec::new(),
            error: None,
            cleanup: Vec::new(),
            faults: Vec::new(),
            ceph_settings: Vec::new(),
        }
    }

    pub fn interrupted(&self) -> bool {
        matches!(self.error, Some(ExecError::Interrupted))
    }
}

const AGENT: Duration = Duration::from_secs(30);

/// Runs `f`, giving up when the user interrupts.
pub async fn unless_interrupted<T, E: From<ExecError>>(
    f: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::select! {
        r = f => r,
        _ = interrupt::asked() => Err(ExecError::Interrupted.into()),
    }
}

/// Sleeps, but gives up at once on Ctrl-C.
pub async fn pause(d: Duration) -> Result<(), ExecError> {
    unless_interrupted(async {
        tokio::time::sleep(d).await;
        Ok(())
    })
    .await
}

/// The VM spec of a plan.
pub fn vm_spec(plan: &Plan) -> VmSpec {
    let g = &plan.guest;
    VmSpec {
        vcpus: g.vcpus,
        memory_mib: g.memory_mib,
        accel: g.accel.resolve(),
        fs_cache: g.fs_cache,
        cmdline_extra: g.cmdline.clone(),
        virtiofsd_args: g.virtiofsd_args.clone(),
        binaries: plan.binaries.clone(),
        image: plan.image.clone(),
        ..VmSpec::new(&plan.vm)
    }
}

/// What a guest of the plan is: its number (from 1), its VM, where it starts, what it runs,
/// with which seed, and the port its destination listens on.
#[derive(Debug, Clone)]
struct GuestPlan {
    number: u32,
    spec: VmSpec,
    start_host: String,
    workload: Workload,
    seed: u64,
    port: u16,
}

/// The VM name of guest `i` (from 1) of a plan: the plan's own for a run of one guest.
pub fn guest_vm(plan: &Plan, i: u32) -> String {
    if plan.guests.count > 1 {
        format!("{}-g{i}", plan.vm)
    } else {
        plan.vm.clone()
    }
}

fn guests_of(plan: &Plan, site: &dyn Site) -> Vec<GuestPlan> {
    let base = MigrationOptions::default().port;
    (1..=plan.guests.count)
        .map(|i| {
            let mut spec = vm_spec(plan);
            spec.accel = site.accel(plan.guest.accel);
            spec.name = guest_vm(plan, i);
            spec.memory_mib = plan.guests.memory_mib(&plan.guest, i);
            let workload = plan.guests.workload(&plan.workload, i);
            let workload = if plan.guests.count > 1 { workload.for_guest(i) } else { workload };
            GuestPlan {
                number: i,
                spec,
                start_host: plan.start_host.clone(),
                workload,
                seed: plan.seeds.guest_workload(i),
                port: base + (i - 1) as u16,
            }
        })
        .collect()
}

/// A guest while the run holds it: its VM and the record stream from it.
struct Guest {
    plan: GuestPlan,
    vm: Option<Vm>,
    stream: Option<RecordStream>,
}

impl Guest {
    fn vm(&mut self) -> Result<&mut Vm, ExecError> {
        self.vm.as_mut().ok_or(ExecError::Interrupted)
    }
}

/// What the run holds while it runs; everything in it is released by [`execute`] at the end.
struct Held {
    guests: Vec<Guest>,
    injector: Option<Injector>,
}

impl Held {
    fn streams(&self) -> Vec<&RecordStream> {
        self.guests.iter().filter_map(|g| g.stream.as_ref()).collect()
    }
}

/// Resolves when the guest's file system hangs (heartbeats, but no successful op for longer
/// than `hung_ms`) or the guest is lost (no heartbeat for `lost_ms`): the verify pass and the
/// agent then never answer, and the run must end with that outcome instead of hanging.
async fn watchdog(streams: &[&RecordStream], clock: RunClock, hung_ms: f64, lost_ms: f64) -> ExecError {
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = clock.now_ms();
        let judged = streams
            .iter()
            .find_map(|s| liveness(now, s.last_heartbeat_ms(), s.last_op_ms(), hung_ms, lost_ms));
        if let Some(e) = judged {
            return e;
        }
    }
}

/// Whether the guest is lost (no heartbeat for `lost_ms`) or its file system hangs (heartbeats
/// arrive, the last within a second, but no op completed for `hung_ms`), at run time `now`.
/// Before the first heartbeat nothing is judged.
fn liveness(
    now: f64,
    heartbeat: Option<f64>,
    op: Option<f64>,
    hung_ms: f64,
    lost_ms: f64,
) -> Option<ExecError> {
    match (heartbeat, op) {
        (Some(hb), _) if now - hb > lost_ms => Some(ExecError::GuestLost(now - hb)),
        (Some(hb), Some(op)) if now - hb < 1000.0 && now - op > hung_ms => Some(ExecError::FsHung(now - op)),
        _ => None,
    }
}

/// Runs `f` unless the user interrupts or a guest's file system hangs first (or the guest is
/// lost).
async fn watched<T>(
    streams: &[&RecordStream],
    plan: &Plan,
    clock: RunClock,
    f: impl Future<Output = Result<T, ExecError>>,
) -> Result<T, ExecError> {
    let t = plan.thresholds;
    unless_interrupted(async {
        if streams.is_empty() {
            return f.await;
        }
        tokio::select! {
            r = f => r,
            e = watchdog(streams, clock, t.fs_hung_ms, t.guest_lost_ms) => Err(e),
        }
    })
    .await
}

/// Executes `plan` on `topo`. Never returns early: whatever happens, every fault is undone, the
/// guest is stopped and the record stream finished before this returns.
pub async fn execute(
    topo: &Arc<dyn Topology>,
    plan: &Plan,
    clock: RunClock,
    say: &dyn Fn(&str),
) -> Execution {
    let site: Arc<dyn Site> = topo.clone();
    let bus = Bus::new(clock);
    let progress = progress::spawn(&bus, plan.scenario.clone(), plan.repetition, plan.guests.count);
    let mut ex = Execution::new(clock);
    let mut held = Held { guests: Vec::new(), injector: None };
    // Unique in this process and on the lab: a sweep's cells share the VM name, but each
    // repetition sets its settings back before the next begins.
    let settings =
        (!plan.ceph.changes().is_empty()).then(|| format!("{}:{}:ceph", std::process::id(), plan.vm));
    if let Some(id) = &settings {
        let (t, id, c) = (topo.clone(), id.clone(), plan.ceph.clone());
        match tokio::task::spawn_blocking(move || crate::settings::apply(t.as_ref(), &id, &c)).await {
            Ok(Ok(said)) => {
                for l in &said {
                    say(&format!("ceph: {l}"));
                }
                ex.ceph_settings = said;
            }
            Ok(Err(e)) => ex.error = Some(ExecError::Settings(e.to_string())),
            Err(e) => ex.error = Some(ExecError::Settings(format!("setting them panicked: {e}"))),
        }
    }
    if ex.error.is_none() {
        if let Err(e) = steps(topo, &site, plan, &bus, &mut held, &mut ex, say).await {
            ex.error = Some(e);
        }
    }
    // Every fault undone first (a frozen daemon must not outlive the run), then the streams
    // (they hold what was measured), then the guests.
    if let Some(i) = held.injector.take() {
        // Something went wrong (or Ctrl-C): every fault is undone now.
        ex.faults = i.finish(true).await;
    }
    for (g, run) in held.guests.iter_mut().zip(ex.guests.iter_mut()) {
        let Some(s) = g.stream.take() else { continue };
        let end = Instant::now();
        match tokio::task::spawn_blocking(move || s.finish(end)).await {
            Ok(Ok(c)) => run.collected = Some(c),
            Ok(Err(e)) => ex.cleanup.push(format!("the record stream of {}: {e}", run.name)),
            Err(e) => ex.cleanup.push(format!("the record stream's reader of {} panicked: {e}", run.name)),
        }
    }
    for g in &mut held.guests {
        let Some(vm) = g.vm.take() else { continue };
        let last_host = vm.host().to_string();
        if let Err(e) = vm.stop().await {
            ex.cleanup.push(format!("stopping the guest {}: {e}", g.plan.spec.name));
        }
        if let Workload::Metadata(j) = &g.plan.workload {
            remove_through(&site, &last_host, &j.dir(), say).await;
        }
    }
    // Last: the guests are gone, so nothing of theirs depends on the settings any more.
    if let Some(id) = settings {
        let t = topo.clone();
        match tokio::task::spawn_blocking(move || miglab_infra::topology::journal::revert(t.as_ref(), &id))
            .await
        {
            Ok(r) if r.failed.is_empty() => {}
            Ok(r) => ex.cleanup.push(format!("the [ceph] settings not set back: {}", r.failed.join("; "))),
            Err(e) => ex.cleanup.push(format!("setting the [ceph] settings back panicked: {e}")),
        }
    }
    progress.abort();
    ex
}

async fn steps(
    topo: &Arc<dyn Topology>,
    site: &Arc<dyn Site>,
    plan: &Plan,
    bus: &Bus,
    held: &mut Held,
    ex: &mut Execution,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    let guests = guests_of(plan, site.as_ref());
    let names: Vec<String> = guests.iter().map(|g| g.spec.name.clone()).collect();
    let dirs: Vec<Option<String>> = guests.iter().map(|g| workload_dir(&g.workload)).collect();
    for g in guests {
        boot(site, g, bus, held, ex, say).await?;
    }
    let gate = Arc::new(Gate::new(&plan.faults));
    let cancel = Arc::new(inject::CancelRequest::default());
    if !plan.faults.is_empty() {
        let ctx = inject::Context {
            vm: plan.vm.clone(),
            target: names[0].clone(),
            target_guest: 1,
            guests: names,
            hosts: site.host_names(),
            workload_dir: dirs[0].clone(),
            workload_dirs: dirs,
            gate: gate.clone(),
            cancel: cancel.clone(),
        };
        held.injector = Some(Injector::start(topo.clone(), bus, plan.faults.clone(), ctx));
    }
    start_workloads(plan, bus, held, ex, say).await?;
    if let Some(first) = plan.hops.first() {
        for g in &held.guests {
            if let Workload::State(j) = &g.plan.workload {
                if j.warm_destination {
                    warm_destination(site, &first.to, j, say).await?;
                }
            }
        }
    }
    let faults = Faults { gate: &gate, cancel: &cancel };
    hops(site, plan, bus, held, ex, faults, say).await?;
    pause(Duration::from_secs_f64(plan.run.cooldown_s)).await?;
    // Every fault runs its planned course and is undone (and Ceph healthy again) before the
    // data is checked.
    if let Some(inj) = held.injector.take() {
        ex.faults = inj.finish(false).await;
    }
    check_data(plan, held, ex, say).await
}

/// A guest's host-side files, the guest booted, its record stream connected.
async fn boot(
    site: &Arc<dyn Site>,
    g: GuestPlan,
    bus: &Bus,
    held: &mut Held,
    ex: &mut Execution,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    if let Workload::ReadLoop(j) = &g.workload {
        let job = j.clone();
        on_mount(site, &g.start_host, PREPARE_DEADLINE, move |h| {
            crate::readloop::prepare(h, &job).map_err(|e| std::io::Error::other(e.to_string()))
        })
        .await??;
    }
    if let Workload::State(j) = &g.workload {
        prepare_tree(site, &g.start_host, j, ex.nonce, say).await?;
    }
    let t = Instant::now();
    let vm = unless_interrupted(async {
        Ok::<_, ExecError>(Vm::start(site, &g.spec, &g.start_host, 0, false).await?)
    })
    .await?;
    let name = if held.guests.is_empty() && g.number == 1 && !g.spec.name.ends_with("-g1") {
        "guest".to_string()
    } else {
        format!("guest {}", g.number)
    };
    say(&format!("{name} up on {} in {:.2} s ({})", g.start_host, t.elapsed().as_secs_f64(), g.spec.accel));
    ex.guests.push(GuestRun {
        name: g.spec.name.clone(),
        workload: Some(g.workload.clone()),
        ..GuestRun::default()
    });
    let number = g.number;
    let mut guest = Guest { plan: g, vm: Some(vm), stream: None };
    let stream = RecordStream::connect(&guest.vm()?.records, ex.clock, bus, number);
    // Held before its stream can fail: the guest is stopped whatever happens.
    held.guests.push(guest);
    let stream = stream?;
    if let Err(why) = &stream.realtime {
        say(&format!("note: the record reader runs without real-time priority ({why})"));
    }
    if let Some(g) = held.guests.last_mut() {
        g.stream = Some(stream);
    }
    Ok(())
}

/// A state job's tree, laid out through the start host's own mount where it is this machine's
/// (about ten times faster than the guest through virtiofsd; the same CephFS client creates
/// it). On a remote host the guest lays it out.
async fn prepare_tree(
    site: &Arc<dyn Site>,
    host: &str,
    j: &miglab_workloads::job::StateJob,
    nonce: u64,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    if site.host(host)?.remote() {
        return Ok(());
    }
    let job = j.clone();
    let t = Instant::now();
    let made = on_mount(site, host, TREE_DEADLINE, move |h| {
        let dir = h.mount_point().join(job.dir());
        if miglab_workloads::engine::tree_complete(&job, &dir, nonce) {
            return Ok(false);
        }
        let never = std::sync::atomic::AtomicBool::new(false);
        miglab_workloads::engine::lay_out_tree(&job, &dir, nonce, &never, &|_| {})
            .map(|()| true)
            .map_err(std::io::Error::other)
    })
    .await?
    .map_err(|e| ExecError::LayoutFailed(format!("the tree of {} files on {host}: {e}", j.files)))?;
    if made {
        say(&format!("laid out a tree of {} files on {host} in {:.1} s", j.files, t.elapsed().as_secs_f64()));
    }
    Ok(())
}

/// The destination's CephFS client looks every file of the tree up (stat through its mount),
/// so that its cache holds the tree before the switch-over re-resolves every path through it.
async fn warm_destination(
    site: &Arc<dyn Site>,
    host: &str,
    j: &miglab_workloads::job::StateJob,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    let job = j.clone();
    let t = Instant::now();
    on_mount(site, host, TREE_DEADLINE, move |h| {
        let dir = h.mount_point().join(job.dir());
        if h.remote() {
            return Err(std::io::Error::other("a warm destination is not built for hosts over SSH yet"));
        }
        for i in 0..job.files {
            std::fs::metadata(dir.join(job.file_path(i)))?;
        }
        Ok(())
    })
    .await?
    .map_err(|e| ExecError::Workload(format!("warming {host}'s client with the tree: {e}")))?;
    say(&format!("{host}'s client looked up the {} files in {:.1} s", j.files, t.elapsed().as_secs_f64()));
    Ok(())
}

/// Every guest's workload started and its files laid out, then the warm-up. A guest that stops
/// sending heartbeats during the warm-up (its QEMU died, or the connection its records come
/// through) ends the run now, not at the first migration.
async fn start_workloads(
    plan: &Plan,
    bus: &Bus,
    held: &mut Held,
    ex: &mut Execution,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    // Every guest starts laying out its files before any is waited for.
    for g in &mut held.guests {
        let start = Command::Start { workload: g.plan.workload.clone(), seed: g.plan.seed, nonce: ex.nonce };
        let vm = g.vm()?;
        match vm.control.request(start, AGENT).await? {
            Message::Ok { .. } => {}
            m => return Err(ExecError::Workload(format!("{m:?}"))),
        }
    }
    let many = held.guests.len() > 1;
    for g in &mut held.guests {
        let (number, name) = (g.plan.number, g.plan.workload.name().to_string());
        wait_layout(g.vm()?, plan, say).await?;
        if many {
            say(&format!("guest {number}: workload '{name}' running"));
        } else {
            say(&format!("workload '{name}' running"));
        }
    }
    if let Some(spec) = plan.dirty {
        for g in &mut held.guests {
            let number = g.plan.number;
            let cmd = Command::Dirty { spec, nonce: ex.nonce };
            match g.vm()?.control.request(cmd, MEMORY_DEADLINE).await? {
                Message::Ok { .. } => {}
                m => return Err(ExecError::Workload(format!("guest {number}'s dirtying load: {m:?}"))),
            }
        }
        say(&format!("dirtying {} MiB at {} MiB/s beside it", spec.size_mib, spec.rate_mib_s));
    }
    bus.publish(Observed::WorkloadStarted);
    let warmup = Duration::from_secs_f64(plan.migration.warmup_s);
    let streams = held.streams();
    unless_interrupted(async {
        if streams.is_empty() {
            tokio::time::sleep(warmup).await;
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(warmup) => Ok(()),
            e = watchdog(&streams, ex.clock, f64::INFINITY, plan.thresholds.guest_lost_ms) => Err(e),
        }
    })
    .await
}

/// What the hops share with the injector: the pre-switchover gate and its cancel requests.
#[derive(Clone, Copy)]
struct Faults<'a> {
    gate: &'a Gate,
    cancel: &'a inject::CancelRequest,
}

/// Every hop of the [`Schedule`] — every guest not yet on the hop's destination, `parallel`
/// at a time (a new one starts when one ends) — each round followed by its settle time.
async fn hops(
    site: &Arc<dyn Site>,
    plan: &Plan,
    bus: &Bus,
    held: &mut Held,
    ex: &mut Execution,
    faults: Faults<'_>,
    say: &dyn Fn(&str),
) -> Result<(), ExecError> {
    let base = MigrationOptions {
        params: plan.migration.params.clone(),
        timeout: Duration::from_secs_f64(plan.migration.timeout_s),
        hold: Duration::from_secs_f64(plan.migration.switchover_hold_s),
        device_phase: plan.migration.device_phase,
        dirty_rate_window: plan.migration.calc_dirty_rate_s.map(Duration::from_secs_f64),
        destination_nice: plan.migration.destination_nice,
        ..MigrationOptions::default()
    };
    let in_flight = plan.in_flight() as usize;
    let dirty = plan.dirty.is_some();
    let injector = held.injector.as_ref();
    let mut schedule = Schedule::new(plan);
    while let Some((id, to)) = schedule.next_hop() {
        let number = id.number();
        let movers: Vec<&mut Guest> =
            held.guests.iter_mut().filter(|g| g.vm.as_ref().is_some_and(|v| v.host() != to)).collect();
        let moved: Vec<u32> = movers.iter().map(|g| g.plan.number).collect();
        let ended: Vec<Result<HopEnd, ExecError>> = unless_interrupted(async {
            use futures::StreamExt;
            Ok::<_, ExecError>(
                futures::stream::iter(movers.into_iter().map(|g| {
                    let (base, to) = (&base, &to);
                    async move {
                        let flush = plan
                            .migration
                            .flush_before_switchover
                            .then(|| workload_dir(&g.plan.workload))
                            .flatten();
                        let mut opts = MigrationOptions { port: g.plan.port, flush, ..base.clone() };
                        let guest = g.plan.number;
                        if let Some(inj) = injector {
                            let dst = std::net::SocketAddr::new(site.migration_address(to)?, opts.port);
                            opts.link = inj
                                .link_for_hop(number, guest, site.proxy_address(), dst)
                                .await
                                .map_err(ExecError::Faults)?;
                        }
                        let hop = Hop {
                            site,
                            bus,
                            records: g.stream.as_ref(),
                            number,
                            guest,
                            gate: Some(faults.gate),
                            cancel: Some(faults.cancel),
                        };
                        let vm = g.vm.as_mut().ok_or(ExecError::Interrupted)?;
                        // No hang watchdog here: a guest paused for a long switch-over is not lost,
                        // and the hop has its own deadline.
                        let migrated = migration::migrate(&hop, vm, to, &opts).await;
                        if let Some(inj) = injector {
                            inj.end_link(number, guest);
                        }
                        let mut record = migrated?;
                        record.follow_up = id.is_follow_up();
                        // The switch-over is behind: from here the dirtying load counts what it
                        // rewrites (each page verified first), so the check can say it covered all.
                        let unmarked = match (dirty && record.completed(), g.vm.as_mut()) {
                            (true, Some(vm)) => vm
                                .control
                                .request(Command::MemoryMark, MARK_DEADLINE)
                                .await
                                .err()
                                .map(|e| e.to_string()),
                            _ => None,
                        };
                        let stayed = g.vm.as_ref().is_some_and(|v| v.host() == record.from);
                        Ok::<_, ExecError>((record, stayed, unmarked))
                    }
                }))
                .buffer_unordered(in_flight)
                .collect()
                .await,
            )
        })
        .await?;
        let (mut completed, mut stayed, mut error) = (true, true, None);
        let mut unmarked = Vec::new();
        for r in ended {
            match r {
                Ok((record, on_source, why)) => {
                    if !record.completed() {
                        completed = false;
                        stayed &= on_source;
                    }
                    unmarked.extend(why.map(|w| (record.guest, w)));
                    ex.migrations.push(record);
                }
                Err(e) => error = error.or(Some(e)),
            }
        }
        if let Some(e) = error {
            return Err(e);
        }
        pause(Duration::from_secs_f64(plan.migration.settle_s)).await?;
        if plan.dirty.is_some() {
            check_memory(&mut held.guests, ex, number, &moved, &unmarked, say).await?;
        }
        for guest in moved {
            bus.publish(Observed::Settled { guest, hop: number });
        }
        match schedule.after(id, &to, completed, stayed) {
            After::Next => {}
            // Can the guest still move? One more try to the same host, then no more hops.
            After::FollowUp { to } => {
                say(&format!("migration {number} did not complete: a follow-up migration to {to} next"))
            }
            After::Stop => {
                say(&format!("migration {number} did not complete: the remaining hops are skipped"));
            }
        }
    }
    Ok(())
}

/// A guest's hop as it ended: its record, whether the guest is still on the source, and why
/// its switch-over could not be marked for the dirtying load (if it could not).
type HopEnd = (MigrationRecord, bool, Option<String>);

/// How long the agent may take to fill, or read back, a dirtying load's working set (TCG reads
/// ~1 GiB/s).
const MEMORY_DEADLINE: Duration = Duration::from_secs(120);
/// How long the agent may take to note a switch-over (a lock and a counter).
const MARK_DEADLINE: Duration = Duration::from_secs(10);
/// How long the host-side preparation of a workload may take on a mount.
const PREPARE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a state job's tree may take on a mount (~3 ms a file on the lab).
const TREE_DEADLINE: Duration = Duration::from_secs(900);

/// Runs `f` — file operations on `host`'s CephFS mount — on a thread of its own (not the
/// runtime's blocking pool), given up at `deadline`: a mount that does not answer (a cut link,
/// an evicted client) must not take the run with it, so the caller gets an error naming the
/// host where it would have been a process stuck in state D.
async fn on_mount<T: Send + 'static>(
    site: &Arc<dyn Site>,
    host: &str,
    deadline: Duration,
    f: impl FnOnce(&dyn miglab_infra::topology::Host) -> std::io::Result<T> + Send + 'static,
) -> Result<std::io::Result<T>, ExecError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (site2, host2) = (site.clone(), host.to_string());
    std::thread::Builder::new()
        .name(format!("mount-{host}"))
        .spawn(move || {
            let r = match site2.host(&host2) {
                Ok(h) => f(h),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let _ = tx.send(r);
        })
        .map_err(|e| ExecError::Workload(format!("could not start a thread: {e}")))?;
    match tokio::time::timeout(deadline, rx).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Ok(Err(std::io::Error::other("the file operation's thread ended without an answer"))),
        Err(_) => Err(ExecError::MountHung { host: host.into(), secs: deadline.as_secs() }),
    }
}

/// The workload's directory below the CephFS root (a job file's: its first job's).
fn workload_dir(w: &Workload) -> Option<String> {
    match w {
        Workload::Fio(j) => Some(j.dir()),
        Workload::FioFile(f) => f.jobs.first().map(|j| j.dir()),
        Workload::Metadata(j) => Some(j.dir()),
        // The files the guest writes and holds open (its tree only ever holds).
        Workload::State(j) => Some(j.io_job().dir()),
        Workload::ReadLoop(j) => std::path::Path::new(&j.path).parent().map(|p| p.display().to_string()),
    }
}

/// Waits for the workload's files to be laid out, showing how far it got.
async fn wait_layout(vm: &mut Vm, plan: &Plan, say: &dyn Fn(&str)) -> Result<(), ExecError> {
    let timeout = Duration::from_secs_f64(plan.run.layout_timeout_s);
    let mut shown = progress::LayoutShown::default();
    let mut total = None;
    let result = loop {
        let st = match vm.control.status(AGENT).await {
            Ok(st) => st,
            Err(e) => break Err(e.into()),
        };
        if let Some(e) = st.layout_error.filter(|_| st.laying_out == 0) {
            break Err(ExecError::LayoutFailed(e));
        }
        if st.laying_out == 0 {
            total = Some(st.layout_total);
            break Ok(());
        }
        let done = shown.progress(st.layout_done, st.layout_total, say);
        if shown.elapsed() > timeout {
            break Err(ExecError::Layout(timeout, done));
        }
        if let Err(e) = pause(Duration::from_millis(100)).await {
            break Err(e);
        }
    };
    shown.done(total, say);
    result
}

/// Copies the VM instances' logs and the site's logs into `dir/logs`.
pub fn copy_logs(site: &dyn Site, vm: &str, dir: &Path) {
    let vms = site.instances_dir().join(vm);
    if let Ok(rd) = std::fs::read_dir(&vms) {
        for inst in rd.flatten() {
            // `<host>.<generation>`: the files are on that host (this machine's for the lab).
            let name = inst.file_name().to_string_lossy().into_owned();
            let Some((host, _)) = name.rsplit_once('.') else { continue };
            let Ok(h) = site.host(host) else { continue };
            let from = site.instances_dir_on(host).join(vm).join(&name);
            let to = dir.join("logs").join(&name);
            let _ = std::fs::create_dir_all(&to);
            for f in ["console.log", "qemu.log", "qemu-trace.log", "virtiofsd.log"] {
                if let Ok(bytes) = h.read(&from.join(f)) {
                    let _ = std::fs::write(to.join(f), bytes);
                }
            }
        }
    }
    let to = dir.join("logs/lab");
    let _ = std::fs::create_dir_all(&to);
    if let Ok(rd) = std::fs::read_dir(site.log_dir()) {
        for f in rd.flatten() {
            let _ = std::fs::copy(f.path(), to.join(f.file_name()));
        }
    }
}

mod verify;
use verify::{check_data, check_memory, remove_through};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_is_lost_or_hung_only_by_its_own_signs() {
        let (hung, lost) = (30_000.0, 5_000.0);
        assert!(liveness(100_000.0, None, None, hung, lost).is_none(), "nothing before the first heartbeat");
        assert!(
            matches!(liveness(20_000.0, Some(14_000.0), Some(19_000.0), hung, lost), Some(ExecError::GuestLost(d)) if d == 6_000.0)
        );
        assert!(
            matches!(liveness(50_000.0, Some(49_900.0), Some(10_000.0), hung, lost), Some(ExecError::FsHung(d)) if d == 40_000.0)
        );
        // Heartbeats late (but not lost): no op is expected to complete either.
        assert!(liveness(50_000.0, Some(48_500.0), Some(10_000.0), hung, lost).is_none());
        assert!(liveness(50_000.0, Some(49_900.0), Some(49_000.0), hung, lost).is_none());
        assert!(liveness(50_000.0, Some(49_900.0), Some(10_000.0), f64::INFINITY, lost).is_none());
    }
}
