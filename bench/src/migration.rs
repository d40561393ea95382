//! One hop: the live migration of a VM to another host, driven over QMP on both sides. `miglab
//! migrate` and `miglab run` both go through [`migrate`].
//!
//! The destination is started with `-incoming defer` so that `events` and `return-path` can be
//! enabled before `migrate-incoming` (with `exit-on-error` off, so a failed destination keeps
//! its QMP up for diagnosis). Without return-path a destination that fails to load looks like
//! success to the source, which then stays paused. Both sides' events are stamped by their
//! reader tasks the moment they arrive and published on the [`Bus`] as typed observations;
//! `query-migrate` on the source is polled for the status and QEMU's own figures.

use crate::inject::{CancelRequest, Gate};
use crate::observe::{Bus, Figures, Observed};
use crate::stream::RecordStream;
use miglab_infra::link::MigrationLink;
use miglab_infra::qmp::{status_of, QmpError, Stamped};
use miglab_infra::topology::{Site, TopologyError};
use miglab_infra::vm::{ledger, Vm, VmError};
use miglab_infra::wait;
use miglab_model::{
    Convergence, MigrationParams, MigrationRecord, MigrationStatus, Outcome, Pass, Phases, QmpEvent, Side,
    TimelineEvent,
};
use qapi::qmp;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MigrationError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("{side:?} QEMU: {source}")]
    Qmp { side: Side, source: QmpError },
    #[error("the VM already runs on {0}: migrate it to another host")]
    SameHost(String),
    #[error(transparent)]
    Records(#[from] crate::stream::StreamError),
    #[error("{error}; cleaning up also failed: {cleanup}")]
    Cleanup { error: Box<MigrationError>, cleanup: String },
    /// QEMU refused a capability the hop asked for: an outcome of the hop, not a fault of
    /// miglab's.
    #[error("{side:?} QEMU refused {capability}: {error}")]
    Refused { side: Side, capability: &'static str, error: String },
}

fn qmp_err(side: Side) -> impl FnOnce(QmpError) -> MigrationError {
    move |source| MigrationError::Qmp { side, source }
}

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrationOptions {
    pub params: MigrationParams,
    /// From `migrate` to the end; then the migration is cancelled.
    pub timeout: Duration,
    /// TCP port the destination listens on, inside its host's namespace.
    pub port: u16,
    /// How often `query-migrate` is polled.
    pub poll: Duration,
    /// How often a tick is published while the hop runs.
    pub tick: Duration,
    /// How the source reaches the destination.
    pub link: MigrationLink,
    /// How long the pause before the switch-over waits for the faults anchored there.
    pub hold: Duration,
    /// Pause before the switch-over even without faults there, to mark the device-state
    /// phase and count the bytes sent after the guest stopped.
    pub device_phase: bool,
    /// Measure the source's dirty rate (`calc-dirty-rate`) over this long before `migrate`.
    pub dirty_rate_window: Option<Duration>,
    /// Renice the destination's QEMU to this from its start.
    pub destination_nice: Option<i32>,
    /// The workload's directory (under the mount) whose files the source's client writes
    /// back at the pause before the switch-over.
    pub flush: Option<String>,
}

impl Default for MigrationOptions {
    fn default() -> Self {
        Self {
            params: MigrationParams::default(),
            timeout: Duration::from_secs(120),
            port: 4444,
            poll: Duration::from_millis(50),
            tick: Duration::from_millis(100),
            link: MigrationLink::Direct,
            hold: Duration::from_secs(30),
            device_phase: false,
            dirty_rate_window: None,
            destination_nice: None,
            flush: None,
        }
    }
}

/// What a hop acts on and reports to.
#[derive(Debug, Clone)]
pub struct Hop<'a> {
    pub site: &'a Arc<dyn Site>,
    pub bus: &'a Bus,
    /// The guest's record stream, which must follow the guest to the destination.
    pub records: Option<&'a RecordStream>,
    /// 1 for the run's first migration.
    pub number: u32,
    /// Which guest of the run migrates (from 1).
    pub guest: u32,
    /// Faults anchored at this hop's pause before the switch-over: the hop asks QEMU for
    /// that pause and holds it until they are in place.
    pub gate: Option<&'a Gate>,
    /// A fault's request to `migrate_cancel` the hop.
    pub cancel: Option<&'a CancelRequest>,
}

impl<'a> Hop<'a> {
    /// A plain hop: no faults hold or cancel it.
    pub fn new(
        site: &'a Arc<dyn Site>,
        bus: &'a Bus,
        records: Option<&'a RecordStream>,
        number: u32,
    ) -> Self {
        Self { site, bus, records, number, guest: 1, gate: None, cancel: None }
    }
}

/// Migrates the guest running in `current` to host `to`. When the migration completes,
/// `current` becomes the destination's instance and the source's is stopped; when it fails or
/// times out, the destination's instance is stopped and `current` still runs the guest. On an
/// error the destination is stopped too; `current` stays the caller's to stop.
pub async fn migrate(
    hop: &Hop<'_>,
    current: &mut Vm,
    to: &str,
    opts: &MigrationOptions,
) -> Result<MigrationRecord, MigrationError> {
    if current.host() == to {
        return Err(MigrationError::SameHost(to.into()));
    }
    let generation = ledger::next_generation(hop.site.as_ref(), &current.record.spec.name);
    let mut dst = Vm::start(hop.site, &current.record.spec, to, generation, true).await?;
    if let Some(n) = opts.destination_nice {
        if let Err(e) = dst.renice(n).await {
            let _ = dst.stop().await;
            return Err(e.into());
        }
    }
    if let Some(c) = hop.cancel {
        c.running(hop.guest, Some(hop.number));
    }
    let driven = async {
        // The guest's records continue on the destination's socket after the switch-over.
        if let Some(r) = hop.records {
            r.attach(&dst.records)?;
        }
        drive(hop, current, &mut dst, opts).await
    }
    .await;
    if let Some(c) = hop.cancel {
        c.running(hop.guest, None);
    }
    let record = match driven {
        Ok(r) => r,
        Err(error) => {
            return Err(match dst.stop().await {
                Ok(()) => error,
                Err(e) => MigrationError::Cleanup { error: Box::new(error), cleanup: e.to_string() },
            })
        }
    };
    let mut record = record;
    if record.completed() {
        // The guest runs on the destination now: its record stands whatever the clean-up
        // does, and a failed clean-up is said in it (it was an error that lost the record).
        let mut left = Vec::new();
        if let Err(e) = dst.adopt().await {
            left.push(format!("taking over the destination: {e}"));
        }
        let source = std::mem::replace(current, dst);
        if let Err(e) = source.stop().await {
            left.push(format!("stopping the old source: {e}"));
        }
        record.cleanup_error = (!left.is_empty()).then(|| left.join("; "));
    } else {
        dst.stop().await?;
    }
    Ok(record)
}

async fn set_capabilities(
    vm: &Vm,
    side: Side,
    p: &MigrationParams,
    pause: bool,
) -> Result<(), MigrationError> {
    use qmp::{MigrationCapability as C, MigrationCapabilityStatus as S};
    let mut caps =
        vec![S { capability: C::events, state: true }, S { capability: C::return_path, state: true }];
    if p.multifd_channels().is_some() {
        caps.push(S { capability: C::multifd, state: true });
    }
    if pause {
        caps.push(S { capability: C::pause_before_switchover, state: true });
    }
    vm.qmp.execute(qmp::migrate_set_capabilities { capabilities: caps }).await.map_err(qmp_err(side))?;
    // The knobs one at a time: QEMU's refusal of one (postcopy with a vhost-user back end
    // without the PAGEFAULT feature, dirty-limit without KVM's dirty ring) is the hop's
    // outcome, told apart from any other error, and names the knob.
    let t = &p.tuning;
    let source = side == Side::Source;
    let knobs = [
        (p.postcopy, C::postcopy_ram, "postcopy-ram"),
        (t.xbzrle_cache_mib.is_some(), C::xbzrle, "xbzrle"),
        (source && t.auto_converge.is_some(), C::auto_converge, "auto-converge"),
        (source && t.dirty_limit_mib_s.is_some(), C::dirty_limit, "dirty-limit"),
    ];
    for (_, capability, name) in knobs.into_iter().filter(|k| k.0) {
        let caps = vec![S { capability, state: true }];
        vm.qmp
            .execute(qmp::migrate_set_capabilities { capabilities: caps })
            .await
            .map_err(refusal(side, name))?;
    }
    Ok(())
}

/// A knob QEMU refused (a command error) is [`MigrationError::Refused`]; anything else is an
/// error of the hop.
fn refusal(side: Side, capability: &'static str) -> impl FnOnce(QmpError) -> MigrationError {
    move |e| match e {
        QmpError::Command { error, .. } => MigrationError::Refused { side, capability, error },
        e => qmp_err(side)(e),
    }
}

async fn set_parameters(vm: &Vm, side: Side, p: &MigrationParams) -> Result<(), MigrationError> {
    let mut v = serde_json::Map::new();
    if side == Side::Source {
        if let Some(d) = p.downtime_limit_ms {
            v.insert("downtime-limit".into(), d.into());
        }
        if let Some(b) = p.max_bandwidth {
            v.insert("max-bandwidth".into(), b.into());
        }
    }
    if let Some(c) = p.multifd_channels() {
        v.insert("multifd-channels".into(), c.into());
    }
    execute_parameters(vm, v).await.map_err(qmp_err(side))?;
    // The tuning's parameters apart: a value this QEMU does not take (a compression it was
    // built without) is a refusal, the hop's outcome.
    let t = &p.tuning;
    let mut v = serde_json::Map::new();
    if let Some(z) = &t.multifd_compression {
        v.insert("multifd-compression".into(), z.as_str().into());
    }
    if let Some(mib) = t.xbzrle_cache_mib.filter(|_| side == Side::Source) {
        v.insert("xbzrle-cache-size".into(), (mib << 20).into());
    }
    if let Some(a) = t.auto_converge.filter(|_| side == Side::Source) {
        v.insert("cpu-throttle-initial".into(), a.initial_pct.into());
        v.insert("cpu-throttle-increment".into(), a.increment_pct.into());
    }
    if let Some(b) = t.avail_switchover_bandwidth.filter(|_| side == Side::Source) {
        v.insert("avail-switchover-bandwidth".into(), b.into());
    }
    if let Some(d) = t.dirty_limit_mib_s.filter(|_| side == Side::Source) {
        v.insert("vcpu-dirty-limit".into(), d.into());
    }
    if !v.is_empty() {
        execute_parameters(vm, v).await.map_err(refusal(side, "migration parameters"))?;
    }
    Ok(())
}

async fn execute_parameters(vm: &Vm, v: serde_json::Map<String, serde_json::Value>) -> Result<(), QmpError> {
    let params: qmp::MigrateSetParameters = serde_json::from_value(v.into())
        .map_err(|e| QmpError::Command { command: "migrate-set-parameters", error: e.to_string() })?;
    vm.qmp.execute(qmp::migrate_set_parameters(params)).await.map(|_| ())
}

/// The hop's timeline as it is built, and its publication on the bus.
struct Timeline<'a> {
    hop: &'a Hop<'a>,
    events: Vec<TimelineEvent>,
}

impl Timeline<'_> {
    fn add(&mut self, side: Side, s: &Stamped) {
        let event = s.typed();
        self.events.push(TimelineEvent { t_ms: self.hop.bus.clock().ms(s.at), side, event: event.clone() });
        self.hop
            .bus
            .publish_at(s.at, Observed::Qmp { guest: self.hop.guest, hop: self.hop.number, side, event });
    }

    fn drain(&mut self, src: &mut Vm, dst: &mut Vm) {
        for e in dst.qmp.drain_events() {
            self.add(Side::Destination, &e);
        }
        for e in src.qmp.drain_events() {
            self.add(Side::Source, &e);
        }
    }

    fn saw(&self, side: Side, event: &QmpEvent) -> bool {
        self.events.iter().any(|e| e.side == side && e.event == *event)
    }
}

fn figures(i: &qmp::MigrationInfo) -> Figures {
    let ram = i.ram.as_ref();
    Figures {
        status: i.status.as_ref().and_then(status_of),
        transferred_bytes: ram.map(|r| r.transferred as u64),
        remaining_bytes: ram.map(|r| r.remaining as u64),
        dirty_sync_count: ram.map(|r| r.dirty_sync_count as u64),
        dirty_pages_rate: ram.map(|r| r.dirty_pages_rate as u64),
        expected_downtime_ms: i.expected_downtime.map(|v| v as u64),
        mbps: ram.map(|r| r.mbps),
    }
}

async fn drive(
    hop: &Hop<'_>,
    src: &mut Vm,
    dst: &mut Vm,
    opts: &MigrationOptions,
) -> Result<MigrationRecord, MigrationError> {
    let hold = hop.gate.filter(|g| g.holds(hop.number, hop.guest));
    let listen =
        match prepare(hop, src, dst, opts, hold.is_some() || opts.device_phase || opts.flush.is_some()).await
        {
            Ok(l) => l,
            Err(e @ MigrationError::Refused { .. }) => {
                return Ok(refused(hop, src, dst, opts, e.to_string()))
            }
            Err(e) => return Err(e),
        };
    let mut held = miglab_model::VirtiofsdHeld::default();
    match open_files(hop.site, src).await {
        Ok(o) => held.source = Some(o),
        Err(e) => held.unmeasured.push(format!("the source's virtiofsd: {e}")),
    }
    let mut tl = Timeline { hop, events: Vec::new() };
    tl.drain(src, dst);
    let uri = opts.link.source_uri(listen);
    // Before the hop: how fast the guest dirties its memory, as QEMU samples it.
    let dirty_rate = match opts.dirty_rate_window {
        Some(w) => dirty_rate(src, w).await,
        None => None,
    };
    let cpu_before = miglab_infra::cpu::CpuTimes::now();
    let cluster = hop.site.cluster_processes();
    let ceph_before = miglab_infra::process::cpu_ms(&cluster);
    let t0 = Instant::now();
    let started_ms = hop.bus.clock().ms(t0);
    hop.bus.publish_at(
        t0,
        Observed::HopStarted {
            guest: hop.guest,
            hop: hop.number,
            from: src.host().into(),
            to: dst.host().into(),
        },
    );
    src.qmp
        .execute(qmp::migrate { uri: Some(uri.clone()), channels: None, detach: None, resume: None })
        .await
        .map_err(qmp_err(Side::Source))?;
    // Accepted: the switch to postcopy as soon as QEMU can make it (it waits for `active`).
    if opts.params.postcopy {
        src.qmp.execute(qmp::migrate_start_postcopy {}).await.map_err(qmp_err(Side::Source))?;
    }
    let watched = watch(hop, src, dst, opts, hold, &mut tl, t0).await?;
    // The hop ends when the guest runs again: on the destination after success (its RESUME),
    // on the source otherwise. Past the deadline (or on Ctrl-C) it ends as it is: the
    // reconciliation below says where the guest runs.
    let completed = matches!(watched.outcome, Outcome::Completed);
    let runs_again = async || {
        tl.drain(src, dst);
        let running = if completed {
            tl.saw(Side::Destination, &QmpEvent::Resume) || dst.qmp.running().await.unwrap_or(false)
        } else {
            src.qmp.running().await.unwrap_or(false)
        };
        Ok::<_, std::convert::Infallible>(running.then_some(()))
    };
    let _ = wait::until_async(
        "the guest to run again",
        Duration::from_secs(15),
        Duration::from_millis(5),
        runs_again,
    )
    .await;
    let ceph_cpu_ms = ceph_before.zip(miglab_infra::process::cpu_ms(&cluster)).map(|(a, b)| (b - a).max(0.0));
    let host_cpu = cpu_before.zip(miglab_infra::cpu::CpuTimes::now()).and_then(|(a, b)| {
        Some(miglab_model::HostCpu { busy_pct: a.busy_pct(&b)?, steal_pct: a.steal_pct(&b)?, ceph_cpu_ms })
    });
    let source_running = src.qmp.running().await.unwrap_or(false);
    let dst_resumed =
        tl.saw(Side::Destination, &QmpEvent::Resume) || dst.qmp.running().await.unwrap_or(false);
    let outcome = reconcile(watched.outcome, source_running, dst_resumed);
    let resume = tl.events.iter().find(|e| e.side == Side::Destination && e.event == QmpEvent::Resume);
    let wall_ms = match (&outcome, resume) {
        (Outcome::Completed, Some(r)) => r.t_ms - started_ms,
        _ => hop.bus.clock().now_ms() - started_ms,
    };
    hop.bus.publish(Observed::HopEnded { guest: hop.guest, hop: hop.number, outcome: outcome.clone() });
    if dst_resumed {
        match open_files(hop.site, dst).await {
            Ok(o) => held.destination = Some(o),
            Err(e) => held.unmeasured.push(format!("the destination's virtiofsd: {e}")),
        }
    }
    let info = watched.info.unwrap_or_else(empty_info);
    // Where the downtime went: QEMU's tracepoints, once the guest runs on the destination.
    let (downtime_parts, downtime_parts_problem) = if outcome == Outcome::Completed {
        let began = hop.bus.clock().unix_us(started_ms);
        crate::downtime::parts(hop.site, src, dst, began, info.downtime.map(|v| v as u64)).await
    } else {
        (None, None)
    };
    let ram = info.ram.as_ref();
    let bytes_after_stop = match (watched.sent_at_pause, ram) {
        (Some(p), Some(r)) if outcome == Outcome::Completed => Some((r.transferred as u64).saturating_sub(p)),
        _ => None,
    };
    Ok(MigrationRecord {
        hop: hop.number,
        guest: hop.guest,
        from: src.host().into(),
        to: dst.host().into(),
        outcome,
        params: opts.params.clone(),
        uri,
        started_ms,
        total_time_ms: info.total_time.map(|v| v as u64),
        downtime_ms: info.downtime.map(|v| v as u64),
        setup_time_ms: info.setup_time.map(|v| v as u64),
        transferred_bytes: ram.map(|r| r.transferred as u64),
        ram_total_bytes: ram.map(|r| r.total as u64),
        dirty_sync_count: ram.map(|r| r.dirty_sync_count as u64),
        mbps: ram.map(|r| r.mbps),
        wall_ms,
        longest_qmp_wait_ms: watched.longest_wait,
        phases: Phases::from_timeline(&tl.events),
        timeline: tl.events,
        follow_up: false,
        cleanup_error: None,
        expected_downtime_ms: watched.expected_downtime,
        bytes_after_stop,
        flush: watched.flush,
        virtiofsd: Some(held),
        convergence: Convergence { dirty_rate_mib_s: dirty_rate, ..watched.convergence },
        downtime_parts,
        downtime_parts_problem,
        host_cpu,
    })
}

/// Every file under `dir` fsynced through `host`'s mount (coreutils' `sync FILE`: the client
/// writes back what it holds dirty of each), within `within`; what it took, and what failed.
async fn flush(
    site: &Arc<dyn Site>,
    host: &str,
    dir: &str,
    within: Duration,
) -> miglab_model::migration::Flush {
    let t = Instant::now();
    let (site, host, dir) = (site.clone(), host.to_string(), dir.to_string());
    let secs = within.as_secs().clamp(1, 60);
    let done = tokio::task::spawn_blocking(move || -> Result<u32, String> {
        let h = site.host(&host).map_err(|e| e.to_string())?;
        let path = h.mount_point().join(&dir);
        let out = h
            .command("timeout")
            .arg(secs.to_string())
            .args(["find"])
            .arg(&path)
            .args(["-type", "f", "-print", "-exec", "sync", "{}", "+"])
            .output()
            .map_err(|e| format!("could not run find/sync on {host}: {e}"))?;
        let files = String::from_utf8_lossy(&out.stdout).lines().count() as u32;
        if out.status.success() {
            Ok(files)
        } else {
            Err(format!(
                "sync of {} on {host} failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    })
    .await
    .unwrap_or_else(|e| Err(format!("the flush panicked: {e}")));
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    match done {
        Ok(files) => miglab_model::migration::Flush { ms, files, error: None },
        Err(e) => miglab_model::migration::Flush { ms, files: 0, error: Some(e) },
    }
}

/// The open descriptors of `vm`'s virtiofsd, counted on its host off the runtime.
async fn open_files(site: &Arc<dyn Site>, vm: &Vm) -> Result<miglab_model::OpenFiles, String> {
    let (site, host, pid) = (site.clone(), vm.host().to_string(), vm.virtiofsd.pid);
    tokio::task::spawn_blocking(move || {
        site.host(&host).map_err(|e| e.to_string())?.open_files(pid).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Both sides' capabilities and parameters set, the destination listening; where it listens.
async fn prepare(
    hop: &Hop<'_>,
    src: &mut Vm,
    dst: &mut Vm,
    opts: &MigrationOptions,
    hold: bool,
) -> Result<SocketAddr, MigrationError> {
    let multifd = opts.params.multifd_channels().is_some();
    set_capabilities(src, Side::Source, &opts.params, hold).await?;
    set_capabilities(dst, Side::Destination, &opts.params, false).await?;
    set_parameters(src, Side::Source, &opts.params).await?;
    if multifd {
        set_parameters(dst, Side::Destination, &opts.params).await?;
    }
    let listen = SocketAddr::new(hop.site.migration_address(dst.host())?, opts.port);
    dst.qmp
        .execute(qmp::migrate_incoming {
            uri: Some(MigrationLink::destination_uri(listen)),
            channels: None,
            exit_on_error: Some(false),
        })
        .await
        .map_err(qmp_err(Side::Destination))?;
    Ok(listen)
}

/// What watching a migration to its end found.
struct Watched {
    outcome: Outcome,
    /// The last `query-migrate` answer.
    info: Option<qmp::MigrationInfo>,
    /// The longest the source took to answer `query-migrate`.
    longest_wait: Option<f64>,
    /// QEMU's `expected-downtime` in its last answer while the migration was active.
    expected_downtime: Option<u64>,
    /// QEMU's bytes sent, read at the pause before the switch-over.
    sent_at_pause: Option<u64>,
    /// One sample per pre-copy pass, and the highest throttle.
    convergence: Convergence,
    /// The source's client flushed at the pause.
    flush: Option<miglab_model::migration::Flush>,
}

/// Both sides' events onto the timeline, figures polled and published, the hold at the
/// pre-switchover, a cancel asked for by a fault — until the migration ends or its deadline.
async fn watch(
    hop: &Hop<'_>,
    src: &mut Vm,
    dst: &mut Vm,
    opts: &MigrationOptions,
    hold: Option<&crate::inject::Gate>,
    tl: &mut Timeline<'_>,
    t0: Instant,
) -> Result<Watched, MigrationError> {
    let deadline = tokio::time::Instant::from_std(t0 + opts.timeout);
    let mut poll = tokio::time::interval(opts.poll);
    let mut tick = tokio::time::interval(opts.tick);
    let mut w = Watched {
        outcome: Outcome::Completed,
        info: None,
        longest_wait: None,
        expected_downtime: None,
        sent_at_pause: None,
        convergence: Convergence::default(),
        flush: None,
    };
    let timed_out = Outcome::TimedOut { after_ms: opts.timeout.as_millis() as u64, source_running: false };
    w.outcome = loop {
        tokio::select! {
            Some(e) = src.qmp.event() => {
                tl.add(Side::Source, &e);
                if e.typed() == (QmpEvent::Migration { status: MigrationStatus::PreSwitchover }) {
                    if opts.device_phase {
                        // The guest is stopped and nothing more is sent until the continue. A
                        // source that does not answer leaves the figure unmeasured.
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        if let Ok(i) = src.qmp.execute_within(qmp::query_migrate {}, left.max(Duration::from_secs(1))).await {
                            w.sent_at_pause = i.ram.as_ref().map(|r| r.transferred as u64);
                        }
                    }
                    if let Some(dir) = &opts.flush {
                        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                        w.flush = Some(flush(hop.site, src.host(), dir, left).await);
                    }
                    if let Some(o) = switch_over(hop, src, hold, opts.hold).await? {
                        break o;
                    }
                }
            }
            _ = async { match hop.cancel { Some(c) => c.asked(hop.number, hop.guest).await, None => std::future::pending().await } } => {
                let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
            }
            Some(e) = dst.qmp.event() => tl.add(Side::Destination, &e),
            _ = tick.tick() => hop.bus.publish(Observed::Tick { guest: hop.guest, hop: hop.number }),
            _ = poll.tick() => {
                // A source blocked in a vhost-user call answers late; the hop's deadline bounds
                // the wait, and how long it was blocked is a figure of its own.
                let asked = tokio::time::Instant::now();
                let left = deadline.saturating_duration_since(asked).max(Duration::from_secs(1));
                let answer = src.qmp.execute_within(qmp::query_migrate {}, left).await;
                let waited = asked.elapsed().as_secs_f64() * 1000.0;
                w.longest_wait = Some(w.longest_wait.map_or(waited, |l: f64| l.max(waited)));
                let i = match answer {
                    Ok(i) => i,
                    Err(QmpError::TimedOut { .. }) => break timed_out,
                    Err(e) => return Err(qmp_err(Side::Source)(e)),
                };
                let f = figures(&i);
                if f.status == Some(MigrationStatus::Active) {
                    w.expected_downtime = f.expected_downtime_ms.or(w.expected_downtime);
                }
                sample_pass(&mut w.convergence, &f, i.cpu_throttle_percentage, hop.bus.clock().now_ms());
                hop.bus.publish(Observed::Figures { guest: hop.guest, hop: hop.number, figures: f.clone() });
                let ended = ended(f.status, i.error_desc.clone());
                w.info = Some(i);
                if let Some(o) = ended {
                    break o;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                cancel_and_settle(src).await;
                break not_converged(w.info.as_ref(), opts.timeout).unwrap_or(timed_out);
            }
        }
    };
    Ok(w)
}

/// At the pause before the switch-over: the faults anchored there (if any) go in first, then
/// the switch-over. A hold that expires cancels the hop (its outcome): switching over without
/// them would measure a migration nobody planned.
async fn switch_over(
    hop: &Hop<'_>,
    src: &mut Vm,
    gate: Option<&crate::inject::Gate>,
    hold: Duration,
) -> Result<Option<Outcome>, MigrationError> {
    let in_place = match gate {
        Some(g) => g.wait(hop.number, hop.guest, hold).await,
        None => true,
    };
    if !in_place {
        let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
        return Ok(Some(Outcome::Failed {
            error: format!(
                "the faults anchored at hop {}'s pre-switchover were not in place within {hold:.1?}: the hop was cancelled",
                hop.number
            ),
            source_running: false,
        }));
    }
    src.qmp
        .execute(qmp::migrate_continue { state: qmp::MigrationStatus::pre_switchover })
        .await
        .map_err(qmp_err(Side::Source))?;
    Ok(None)
}

/// Cancels a migration past its deadline and waits (bounded) for the cancel to settle, so that
/// the source runs again.
async fn cancel_and_settle(src: &mut Vm) {
    let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
    let settled = async || {
        let status = src
            .qmp
            .execute(qmp::query_migrate {})
            .await
            .ok()
            .and_then(|i| i.status.as_ref().and_then(status_of));
        Ok::<_, std::convert::Infallible>(status.is_some_and(MigrationStatus::is_final).then_some(()))
    };
    let _ = wait::until_async(
        "the cancel to settle",
        Duration::from_secs(10),
        Duration::from_millis(50),
        settled,
    )
    .await;
}

/// A pass's figures at its first answer (a new `dirty-sync-count`), and the highest throttle.
fn sample_pass(c: &mut Convergence, f: &Figures, throttle: Option<i64>, t_ms: f64) {
    let throttle = throttle.map(|t| t.max(0) as u64);
    if let Some(t) = throttle {
        c.max_throttle_pct = Some(c.max_throttle_pct.map_or(t, |m| m.max(t)));
    }
    let Some(sync) = f.dirty_sync_count else { return };
    if c.passes.last().is_some_and(|p| p.dirty_sync_count == sync)
        || f.status != Some(MigrationStatus::Active)
    {
        return;
    }
    c.passes.push(Pass {
        t_ms,
        dirty_sync_count: sync,
        remaining_bytes: f.remaining_bytes,
        dirty_pages_rate: f.dirty_pages_rate,
        expected_downtime_ms: f.expected_downtime_ms,
        mbps: f.mbps,
        throttle_pct: throttle,
    });
}

/// At the deadline: a migration still iterating pre-copy (it synced the dirty log again
/// after the first pass) did not converge; one that never got through its first pass (or is
/// past pre-copy) merely timed out.
fn not_converged(last: Option<&qmp::MigrationInfo>, timeout: Duration) -> Option<Outcome> {
    let i = last?;
    let ram = i.ram.as_ref()?;
    let active = i.status.as_ref().and_then(status_of) == Some(MigrationStatus::Active);
    (active && ram.dirty_sync_count >= 2).then_some(Outcome::NotConverged {
        after_ms: timeout.as_millis() as u64,
        source_running: false,
        passes: ram.dirty_sync_count as u64,
        remaining_bytes: ram.remaining as u64,
    })
}

/// The outcome a `query-migrate` status ends the hop with, if it ends it.
fn ended(status: Option<MigrationStatus>, desc: Option<String>) -> Option<Outcome> {
    match status {
        Some(MigrationStatus::Completed) => Some(Outcome::Completed),
        Some(s @ (MigrationStatus::Failed | MigrationStatus::Cancelled)) => {
            let error = match (s, desc) {
                // A cancelled stream also leaves a channel error: say which came first.
                (MigrationStatus::Cancelled, Some(d)) => format!("migration cancelled ({d})"),
                (_, Some(d)) => d,
                (_, None) => format!("migration {s}"),
            };
            Some(Outcome::Failed { error, source_running: false })
        }
        _ => None,
    }
}

/// The record of a hop QEMU refused before it began: the guest never left the source.
fn refused(hop: &Hop<'_>, src: &Vm, dst: &Vm, opts: &MigrationOptions, error: String) -> MigrationRecord {
    let outcome = Outcome::Unsupported { error };
    hop.bus.publish(Observed::HopEnded { guest: hop.guest, hop: hop.number, outcome: outcome.clone() });
    MigrationRecord::unmeasured(
        hop.number,
        hop.guest,
        src.host(),
        dst.host(),
        outcome,
        opts.params.clone(),
        hop.bus.clock().now_ms(),
    )
}

/// The source's dirty rate in MiB/s by `calc-dirty-rate` (page sampling) over `window`; None
/// when QEMU cannot say (the figure is then unmeasured, the hop goes on).
async fn dirty_rate(src: &Vm, window: Duration) -> Option<f64> {
    use qmp::{DirtyRateMeasureMode, DirtyRateStatus, TimeUnit};
    let ms = window.as_millis() as i64;
    let asked = qmp::calc_dirty_rate {
        calc_time: ms,
        calc_time_unit: Some(TimeUnit::millisecond),
        mode: Some(DirtyRateMeasureMode::page_sampling),
        sample_pages: None,
    };
    src.qmp.execute(asked).await.ok()?;
    let measured = async || {
        let i = src.qmp.execute(qmp::query_dirty_rate { calc_time_unit: Some(TimeUnit::millisecond) }).await;
        Ok::<_, std::convert::Infallible>(match i {
            Ok(i) if i.status == DirtyRateStatus::measured => Some(i.dirty_rate),
            _ => None,
        })
    };
    // QEMU's MB/s are MiB/s (it divides by 1 << 20).
    wait::until_async("the dirty rate", window + Duration::from_secs(5), Duration::from_millis(100), measured)
        .await
        .ok()
        .flatten()
        .map(|r| r as f64)
}

/// The hop's outcome once the guest should run again: what the source said, checked against
/// where the guest runs. A source that completed while the destination never resumed failed.
fn reconcile(outcome: Outcome, source_running: bool, dst_resumed: bool) -> Outcome {
    match outcome {
        Outcome::Completed if !dst_resumed => Outcome::Failed {
            error: "the source completed but the destination never resumed the guest".into(),
            source_running,
        },
        Outcome::Completed => Outcome::Completed,
        Outcome::Failed { error, .. } => Outcome::Failed { error, source_running },
        Outcome::TimedOut { after_ms, .. } => Outcome::TimedOut { after_ms, source_running },
        Outcome::NotConverged { after_ms, passes, remaining_bytes, .. } => {
            Outcome::NotConverged { after_ms, source_running, passes, remaining_bytes }
        }
        refused @ Outcome::Unsupported { .. } => refused,
    }
}

/// `MigrationInfo` with every field absent, for a migration that never answered a query.
fn empty_info() -> qmp::MigrationInfo {
    qmp::MigrationInfo {
        blocked_reasons: None,
        cpu_throttle_percentage: None,
        dirty_limit_ring_full_time: None,
        dirty_limit_throttle_time_per_round: None,
        downtime: None,
        error_desc: None,
        expected_downtime: None,
        postcopy_blocktime: None,
        postcopy_vcpu_blocktime: None,
        ram: None,
        setup_time: None,
        socket_address: None,
        status: None,
        total_time: None,
        vfio: None,
        xbzrle_cache: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hop_is_judged_by_where_the_guest_runs_again() {
        assert_eq!(reconcile(Outcome::Completed, false, true), Outcome::Completed);
        let lost = reconcile(Outcome::Completed, true, false);
        assert!(
            matches!(&lost, Outcome::Failed { error, source_running: true } if error.contains("never resumed")),
            "{lost:?}"
        );
        let failed = Outcome::Failed { error: "x".into(), source_running: false };
        assert_eq!(
            reconcile(failed, true, false),
            Outcome::Failed { error: "x".into(), source_running: true }
        );
        let late = Outcome::TimedOut { after_ms: 9, source_running: false };
        assert_eq!(reconcile(late, true, false), Outcome::TimedOut { after_ms: 9, source_running: true });
    }

    #[test]
    fn final_statuses_end_the_hop_and_say_why() {
        assert_eq!(ended(Some(MigrationStatus::Active), None), None);
        assert_eq!(ended(None, None), None);
        assert_eq!(ended(Some(MigrationStatus::Completed), None), Some(Outcome::Completed));
        let cancelled = ended(Some(MigrationStatus::Cancelled), Some("channel error".into()));
        assert!(
            matches!(cancelled, Some(Outcome::Failed { error, .. }) if error == "migration cancelled (channel error)")
        );
        let failed = ended(Some(MigrationStatus::Failed), None);
        assert!(matches!(failed, Some(Outcome::Failed { error, .. }) if error == "migration failed"));
    }
}
