//! Live migration of a VM between two hosts of the lab, driven over QMP on both sides.
//!
//! The destination is started with `-incoming defer` so that `events` and `return-path` can be
//! enabled before `migrate-incoming` (with `exit-on-error` off, so a failed destination keeps
//! its QMP up for diagnosis). Without return-path a destination that fails to load looks like
//! success to the source, which then stays paused. Events of both sides are stamped as they
//! arrive; `query-migrate` on the source is polled for the status and QEMU's own figures.

use crate::qmp::{QmpError, Stamped};
use crate::stream::RecordStream;
use crate::topology::lab::Lab;
use crate::topology::Host;
use crate::vm::{Vm, VmError};
use miglab_reports::{MigrationParams, MigrationRecord, Outcome, Phases, Side, TimelineEvent};
use qapi::qmp;
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum MigrationError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("{side:?} QEMU: {source}")]
    Qmp { side: Side, source: QmpError },
    #[error("the VM already runs on {0}: migrate it to another host")]
    SameHost(String),
    #[error(transparent)]
    Records(#[from] crate::stream::StreamError),
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
}

impl Default for MigrationOptions {
    fn default() -> Self {
        Self {
            params: MigrationParams::default(),
            timeout: Duration::from_secs(120),
            port: 4444,
            poll: Duration::from_millis(50),
        }
    }
}

/// What an observer of a running migration sees: every timeline event as it arrives, with
/// both instances at hand (fault injection hooks in here).
pub trait Observer {
    fn on_event(&mut self, event: &TimelineEvent, source: &Vm, destination: &Vm);
}

impl<F: FnMut(&TimelineEvent, &Vm, &Vm)> Observer for F {
    fn on_event(&mut self, event: &TimelineEvent, source: &Vm, destination: &Vm) {
        self(event, source, destination)
    }
}

/// An observer that does nothing.
#[derive(Debug, Default)]
pub struct Quiet;

impl Observer for Quiet {
    fn on_event(&mut self, _: &TimelineEvent, _: &Vm, _: &Vm) {}
}

fn status_str(s: &Option<qmp::MigrationStatus>) -> String {
    s.as_ref()
        .and_then(|s| serde_json::to_value(s).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "none".into())
}

async fn set_capabilities(vm: &Vm, side: Side, multifd: bool) -> Result<(), MigrationError> {
    use qmp::{MigrationCapability as C, MigrationCapabilityStatus as S};
    let mut caps =
        vec![S { capability: C::events, state: true }, S { capability: C::return_path, state: true }];
    if multifd {
        caps.push(S { capability: C::multifd, state: true });
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

struct Timeline {
    t0: Instant,
    events: Vec<TimelineEvent>,
}

impl Timeline {
    fn add(&mut self, side: Side, s: &Stamped) -> TimelineEvent {
        let (event, detail) = s.describe();
        let t_ms = if s.at >= self.t0 {
            s.at.duration_since(self.t0).as_secs_f64() * 1e3
        } else {
            -(self.t0.duration_since(s.at).as_secs_f64() * 1e3)
        };
        let e = TimelineEvent { t_ms, side, event, detail };
        self.events.push(e.clone());
        e
    }

    fn saw(&self, side: Side, event: &str) -> bool {
        self.events.iter().any(|e| e.side == side && e.event == event)
    }
}

/// The host after `from` in the lab's order: hops ping-pong c1 → c2 → c1 with two hosts.
pub fn next_host(hosts: &[String], from: &str) -> String {
    let i = hosts.iter().position(|h| h == from).unwrap_or(0);
    hosts[(i + 1) % hosts.len()].clone()
}

/// Migrates `src` to host `to`. Returns the instance that runs the guest afterwards (the new
/// one, or the source when the migration failed or timed out) and the record of the hop.
pub async fn migrate(
    lab: &Lab,
    mut src: Vm,
    to: &str,
    opts: &MigrationOptions,
    observer: &mut dyn Observer,
    records: Option<&RecordStream>,
) -> Result<(Vm, MigrationRecord), MigrationError> {
    if src.record.host == to {
        return Err(MigrationError::SameHost(to.into()));
    }
    let generation = lab
        .vms()
        .iter()
        .filter(|v| v.spec.name == src.record.spec.name)
        .map(|v| v.generation)
        .max()
        .unwrap_or(0)
        + 1;
    let mut dst = Vm::start(lab, &src.record.spec, to, generation, true).await?;
    // The guest's records continue on the destination's socket after the switch-over.
    if let Some(r) = records {
        if let Err(e) = r.attach(&dst.record.files.records()).await {
            let _ = dst.stop(lab).await;
            return Err(e.into());
        }
    }
    let result = drive(lab, &mut src, &mut dst, opts, observer).await;
    let record = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = dst.stop(lab).await;
            return Err(e);
        }
    };
    if record.completed() {
        src.stop(lab).await?;
        dst.record.incoming = false;
        lab.record_vm(dst.record.clone()).map_err(VmError::from)?;
        Ok((dst, record))
    } else {
        dst.stop(lab).await?;
        Ok((src, record))
    }
}

async fn drive(
    lab: &Lab,
    src: &mut Vm,
    dst: &mut Vm,
    opts: &MigrationOptions,
    observer: &mut dyn Observer,
) -> Result<MigrationRecord, MigrationError> {
    let multifd = opts.params.multifd_channels.is_some();
    set_capabilities(src, Side::Source, multifd).await?;
    set_capabilities(dst, Side::Destination, multifd).await?;
    set_parameters(src, Side::Source, &opts.params).await?;
    if multifd {
        set_parameters(dst, Side::Destination, &opts.params).await?;
    }
    let addr = lab.lab_host(&dst.record.host).map_err(VmError::from)?.address();
    let uri = format!("tcp:{addr}:{}", opts.port);
    dst.qmp
        .execute(qmp::migrate_incoming { uri: Some(uri.clone()), channels: None, exit_on_error: Some(false) })
        .await
        .map_err(qmp_err(Side::Destination))?;

    let mut tl = Timeline { t0: Instant::now(), events: Vec::new() };
    for e in dst.qmp.drain_events() {
        tl.add(Side::Destination, &e);
    }
    for e in src.qmp.drain_events() {
        tl.add(Side::Source, &e);
    }
    tl.t0 = Instant::now();
    src.qmp
        .execute(qmp::migrate { uri: Some(uri), channels: None, detach: None, resume: None })
        .await
        .map_err(qmp_err(Side::Source))?;

    let deadline = tl.t0 + opts.timeout;
    let mut last_poll = Instant::now() - opts.poll;
    let mut info = None;
    let outcome = loop {
        // Events first: they are what the timeline is made of.
        if let Some(e) = src.qmp.next_event(Duration::from_millis(5)).await {
            let ev = tl.add(Side::Source, &e);
            observer.on_event(&ev, src, dst);
        }
        for e in dst.qmp.drain_events() {
            let ev = tl.add(Side::Destination, &e);
            observer.on_event(&ev, src, dst);
        }
        if last_poll.elapsed() >= opts.poll {
            last_poll = Instant::now();
            let i = src.qmp.execute(qmp::query_migrate {}).await.map_err(qmp_err(Side::Source))?;
            match status_str(&i.status).as_str() {
                "completed" => {
                    info = Some(i);
                    break Outcome::Completed;
                }
                "failed" | "cancelled" => {
                    let error = i
                        .error_desc
                        .clone()
                        .unwrap_or_else(|| format!("migration {}", status_str(&i.status)));
                    info = Some(i);
                    break Outcome::Failed { error };
                }
                _ => info = Some(i),
            }
        }
        if Instant::now() >= deadline {
            let _ = src.qmp.execute(qmp::migrate_cancel {}).await;
            // Wait (bounded) for the cancel to settle so the source runs again.
            let settle = Instant::now();
            while settle.elapsed() < Duration::from_secs(10) {
                if let Ok(i) = src.qmp.execute(qmp::query_migrate {}).await {
                    if matches!(status_str(&i.status).as_str(), "cancelled" | "failed" | "completed") {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            break Outcome::TimedOut { after_ms: opts.timeout.as_millis() as u64 };
        }
    };
    // Wall time ends when the guest runs again: on the destination after success (its RESUME),
    // on the source otherwise.
    let mut outcome = outcome;
    let settle_deadline = Instant::now() + Duration::from_secs(15);
    loop {
        for e in dst.qmp.drain_events() {
            let ev = tl.add(Side::Destination, &e);
            observer.on_event(&ev, src, dst);
        }
        for e in src.qmp.drain_events() {
            let ev = tl.add(Side::Source, &e);
            observer.on_event(&ev, src, dst);
        }
        let done = match outcome {
            Outcome::Completed => {
                tl.saw(Side::Destination, "RESUME") || dst.qmp.running().await.unwrap_or(false)
            }
            _ => src.qmp.running().await.unwrap_or(false),
        };
        if done {
            break;
        }
        if Instant::now() >= settle_deadline {
            if outcome == Outcome::Completed {
                outcome = Outcome::Failed {
                    error: "the source completed but the destination never resumed the guest".into(),
                };
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall_ms = match outcome {
        Outcome::Completed => tl
            .events
            .iter()
            .find(|e| e.side == Side::Destination && e.event == "RESUME")
            .map(|e| e.t_ms)
            .unwrap_or_else(|| tl.t0.elapsed().as_secs_f64() * 1e3),
        _ => tl.t0.elapsed().as_secs_f64() * 1e3,
    };
    let info = info.unwrap_or_else(empty_info);
    let ram = info.ram.as_ref();
    Ok(MigrationRecord {
        from: src.record.host.clone(),
        to: dst.record.host.clone(),
        outcome,
        params: opts.params.clone(),
        total_time_ms: info.total_time.map(|v| v as u64),
        downtime_ms: info.downtime.map(|v| v as u64),
        setup_time_ms: info.setup_time.map(|v| v as u64),
        transferred_bytes: ram.map(|r| r.transferred as u64),
        ram_total_bytes: ram.map(|r| r.total as u64),
        dirty_sync_count: ram.map(|r| r.dirty_sync_count as u64),
        mbps: ram.map(|r| r.mbps),
        wall_ms,
        phases: Phases::from_timeline(&tl.events),
        timeline: tl.events,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hops_ping_pong_between_hosts() {
        let hosts = vec!["c1".to_string(), "c2".to_string()];
        assert_eq!(next_host(&hosts, "c1"), "c2");
        assert_eq!(next_host(&hosts, "c2"), "c1");
        let three = vec!["c1".to_string(), "c2".to_string(), "c3".to_string()];
        assert_eq!(next_host(&three, "c3"), "c1");
    }
}
