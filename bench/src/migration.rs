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
use miglab_reports::{
    MigrationParams, MigrationRecord, MigrationStatus, Outcome, Phases, QmpEvent, Side, TimelineEvent,
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
        Self { site, bus, records, number, gate: None, cancel: None }
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
    if let Some(c) = hop.cancel {
        c.running(Some(hop.number));
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
        c.running(None);
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

async fn set_capabilities(vm: &Vm, side: Side, multifd: bool, pause: bool) -> Result<(), MigrationError> {
    use qmp::{MigrationCapability as C, MigrationCapabilityStatus as S};
    let mut caps =
        vec![S { capability: C::events, state: true }, S { capability: C::return_path, state: true }];
    if multifd {
        caps.push(S { capability: C::multifd, state: true });
    }
    if pause {
        caps.push(S { capability: C::pause_before_switchover, state: true });
    }
    vm.qmp.execute(qmp::migrate_set_capabilities { capabilities: caps }).await.map_err(qmp_err(side))?;
    Ok(())
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
    if let Some(c) = p.multifd_channels {
        v.insert("multifd-channels".into(), c.into());
    }
    let params: qmp::MigrateSetParameters = serde_json::from_value(v.into()).map_err(|e| {
        qmp_err(side)(QmpError::Command { command: "migrate-set-parameters", error: e.to_string() })
    })?;
    vm.qmp.execute(qmp::migrate_set_parameters(params)).await.map_err(qmp_err(side))?;
    Ok(())
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
        self.hop.bus.publish_at(s.at, Observed::Qmp { hop: self.hop.number, side, event });
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
    let multifd = opts.params.multifd_channels.is_some();
    let hold = hop.gate.filter(|g| g.holds(hop.number));
    set_capabilities(src, Side::Source, multifd, hold.is_some()).await?;
    set_capabilities(dst, Side::Destination, multifd, false).await?;
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

    let mut tl = Timeline { hop, events: Vec::new() };
    tl.drain(src, dst);
    let uri = opts.link.source_uri(listen);
    let t0 = Instant::now();
    let started_ms = hop.bus.clock().ms(t0);
    hop.bus.publish_at(
        t0,
        Observed::HopStarted { hop: hop.number, from: src.host().into(), to: dst.host().into() },
    );
    src.qmp
        .execute(qmp::migrate { uri: Some(uri.clone()), channels: None, detach: None, resume: None })
        .await
        .map_err(qmp_err(Side::Source))?;

    let deadline = tokio::time::Instant::from_std(t0 + opts.timeout);
    let mut poll = tokio::time::interval(opts.poll);
    let mut tick = tokio::time::interval(opts.tick);
    let mut info = None;
    let mut longest_wait: Option<f64> = None;
    let outcome = loop {
        tokio::select! {
            Some(e) = src.qmp.event() => {
                tl.add(Side::Source, &e);
                if let (Some(g), QmpEvent::Migration { status: MigrationStatus::PreSwitchover }) = (hold, e.typed()) {
                    // The faults anchored here go in first; then the switch-over. A hold that
                    // expires cancels the hop: switching over without them would measure a
                    // migration nobody planned.
                    if !g.wait(hop.number, opts.hold).await {
                        let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
                        break Outcome::Failed {
                            error: format!(
                                "the faults anchored at hop {}'s pre-switchover were not in place within {:.1?}: the hop was cancelled",
                                hop.number, opts.hold
                            ),
                            source_running: false,
                        };
                    }
                    src.qmp
                        .execute(qmp::migrate_continue { state: qmp::MigrationStatus::pre_switchover })
                        .await
                        .map_err(qmp_err(Side::Source))?;
                }
            }
            _ = async { match hop.cancel { Some(c) => c.asked(hop.number).await, None => std::future::pending().await } } => {
                let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
            }
            Some(e) = dst.qmp.event() => tl.add(Side::Destination, &e),
            _ = tick.tick() => hop.bus.publish(Observed::Tick { hop: hop.number }),
            _ = poll.tick() => {
                // A source blocked in a vhost-user call answers late; the hop's deadline bounds
                // the wait, and how long it was blocked is a figure of its own.
                let asked = tokio::time::Instant::now();
                let left = deadline.saturating_duration_since(asked).max(Duration::from_secs(1));
                let i = match src.qmp.execute_within(qmp::query_migrate {}, left).await {
                    Ok(i) => i,
                    Err(QmpError::TimedOut { .. }) => {
                        longest_wait = Some(asked.elapsed().as_secs_f64() * 1000.0);
                        break Outcome::TimedOut { after_ms: opts.timeout.as_millis() as u64, source_running: false };
                    }
                    Err(e) => return Err(qmp_err(Side::Source)(e)),
                };
                let waited = asked.elapsed().as_secs_f64() * 1000.0;
                longest_wait = Some(longest_wait.map_or(waited, |l: f64| l.max(waited)));
                let f = figures(&i);
                hop.bus.publish(Observed::Figures { hop: hop.number, figures: f.clone() });
                let status = f.status;
                info = Some(i);
                match status {
                    Some(MigrationStatus::Completed) => break Outcome::Completed,
                    Some(s @ (MigrationStatus::Failed | MigrationStatus::Cancelled)) => {
                        let desc = info.as_ref().and_then(|i| i.error_desc.clone());
                        let error = match (s, desc) {
                            // A cancelled stream also leaves a channel error: say which came first.
                            (MigrationStatus::Cancelled, Some(d)) => format!("migration cancelled ({d})"),
                            (_, Some(d)) => d,
                            (_, None) => format!("migration {s}"),
                        };
                        break Outcome::Failed { error, source_running: false };
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
                // Wait (bounded) for the cancel to settle so the source runs again.
                let settle = Instant::now();
                while settle.elapsed() < Duration::from_secs(10) {
                    if let Ok(i) = src.qmp.execute(qmp::query_migrate {}).await {
                        if i.status.as_ref().and_then(status_of).is_some_and(MigrationStatus::is_final) {
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                break Outcome::TimedOut { after_ms: opts.timeout.as_millis() as u64, source_running: false };
            }
        }
    };
    // The hop ends when the guest runs again: on the destination after success (its RESUME),
    // on the source otherwise.
    let mut outcome = outcome;
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tl.drain(src, dst);
        let done = match outcome {
            Outcome::Completed => {
                tl.saw(Side::Destination, &QmpEvent::Resume) || dst.qmp.running().await.unwrap_or(false)
            }
            _ => src.qmp.running().await.unwrap_or(false),
        };
        if done {
            break;
        }
        if Instant::now() >= settle_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let source_running = src.qmp.running().await.unwrap_or(false);
    outcome = match outcome {
        Outcome::Completed
            if !tl.saw(Side::Destination, &QmpEvent::Resume) && !dst.qmp.running().await.unwrap_or(false) =>
        {
            Outcome::Failed {
                error: "the source completed but the destination never resumed the guest".into(),
                source_running,
            }
        }
        Outcome::Failed { error, .. } => Outcome::Failed { error, source_running },
        Outcome::TimedOut { after_ms, .. } => Outcome::TimedOut { after_ms, source_running },
        o => o,
    };
    let clock = hop.bus.clock();
    let resume = tl.events.iter().find(|e| e.side == Side::Destination && e.event == QmpEvent::Resume);
    let wall_ms = match (&outcome, resume) {
        (Outcome::Completed, Some(r)) => r.t_ms - started_ms,
        _ => clock.now_ms() - started_ms,
    };
    hop.bus.publish(Observed::HopEnded { hop: hop.number, outcome: outcome.clone() });
    let info = info.unwrap_or_else(empty_info);
    let ram = info.ram.as_ref();
    Ok(MigrationRecord {
        hop: hop.number,
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
        longest_qmp_wait_ms: longest_wait,
        phases: Phases::from_timeline(&tl.events),
        timeline: tl.events,
        follow_up: false,
        cleanup_error: None,
    })
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
