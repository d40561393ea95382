//! Faults carried out: the pure trigger machine ([`miglab_faults::Machine`]) listens to the run's
//! bus; what it fires is injected here through the [`Topology`], off the QMP loop (a slow kill
//! never freezes the timeline it marks). Every fault's undo runs — when its time is up, and at
//! the latest when the run ends, whatever happened — and after a fault on Ceph the run waits for
//! the cluster to be healthy again. Each fault leaves a [`FaultRecord`] on the run clock.

mod apply;

use crate::clock::RunClock;
use crate::link::MigrationLink;
use crate::observe::{Bus, Observed};
use crate::proxy::{self, Proxy, Shape};
use crate::topology::Topology;
use apply::apply;
use miglab_faults::{Event, Fault, Machine, Resolved};
use miglab_reports::{FaultRecord, QmpEvent, Side};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long the cluster may take to be healthy again after a fault's undo.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(180);
/// How long a hop waits at its pause before the switch-over for the faults anchored there.
pub const SWITCHOVER_HOLD: Duration = Duration::from_secs(30);

/// The pause before a hop's switch-over: it lasts until every fault anchored there is in place.
#[derive(Debug, Default)]
pub struct Gate {
    pending: Mutex<HashMap<u32, u32>>,
    notify: Notify,
}

impl Gate {
    /// A gate for the faults of `faults` anchored at a hop's pre-switchover.
    pub fn new(faults: &[Resolved]) -> Self {
        let mut pending = HashMap::new();
        for f in faults {
            if let miglab_faults::Anchor::PreSwitchover { hop } = f.trigger.anchor {
                *pending.entry(hop).or_insert(0) += 1;
            }
        }
        Self { pending: Mutex::new(pending), notify: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, u32>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether hop `hop` pauses before its switch-over.
    pub fn holds(&self, hop: u32) -> bool {
        self.lock().contains_key(&hop)
    }

    fn done(&self, hop: u32) {
        if let Some(n) = self.lock().get_mut(&hop) {
            *n = n.saturating_sub(1);
        }
        self.notify.notify_waiters();
    }

    /// Waits until the faults of hop `hop`'s pause are in place (or `deadline` passes).
    pub async fn wait(&self, hop: u32, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            if self.lock().get(&hop).copied().unwrap_or(0) == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// What a fault needs to know of the run.
#[derive(Debug, Clone)]
pub struct Context {
    /// The VM whose instances `source` and `destination` mean.
    pub vm: String,
    pub hosts: Vec<String>,
    /// The workload's directory, relative to the CephFS root (a third party renames in it).
    pub workload_dir: Option<String>,
    pub gate: Arc<Gate>,
    /// Asks the running hop to `migrate_cancel`.
    pub cancel: Arc<Notify>,
}

/// Waits for Ceph to be healthy again; returns how long it took, or None at the deadline.
fn wait_healthy(topo: &dyn Topology, deadline: Duration) -> Option<f64> {
    let t = Instant::now();
    while t.elapsed() < deadline {
        if let Ok((true, _)) = topo.health() {
            return Some(t.elapsed().as_secs_f64() * 1e3);
        }
        if crate::interrupt::requested() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    None
}

/// The machine's view of an observation.
fn event(o: &Observed) -> Option<Event> {
    match o {
        Observed::WorkloadStarted => Some(Event::WorkloadStarted),
        Observed::HopStarted { hop, .. } => Some(Event::HopStarted { hop: *hop }),
        Observed::HopEnded { hop, .. } => Some(Event::HopEnded { hop: *hop }),
        Observed::Qmp { hop, side, event: QmpEvent::Migration { status } } => {
            Some(Event::Status { hop: *hop, side: *side, status: *status })
        }
        Observed::Qmp { hop, side: Side::Source, event: QmpEvent::MigrationPass { pass } } => {
            Some(Event::Pass { hop: *hop, pass: *pass })
        }
        _ => None,
    }
}

/// The running injector.
#[derive(Debug)]
pub struct Injector {
    stop: watch::Sender<Phase>,
    task: tokio::task::JoinHandle<Vec<FaultRecord>>,
    faults: Vec<Resolved>,
    links: Mutex<Vec<(u32, FaultRecord, Proxy)>>,
    clock: RunClock,
    bus: Bus,
}

fn record_of(f: &Resolved) -> FaultRecord {
    FaultRecord {
        index: f.index,
        name: f.name.clone(),
        kind: f.fault.kind().into(),
        trigger: if f.offset_ms == f.trigger.offset_ms {
            f.trigger.to_string()
        } else {
            format!("{} (drawn: +{} ms)", f.trigger, f.offset_ms)
        },
        ..FaultRecord::default()
    }
}

/// What the injector is told: keep firing, stop firing and let running faults take their
/// course, or undo everything now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    Finishing,
    Cut,
}

/// One fault: inject, wait its time (cut short only if the run is), undo, wait for Ceph.
async fn one(
    topo: Arc<dyn Topology>,
    f: Resolved,
    anchor_ms: f64,
    due_ms: f64,
    ctx: Context,
    bus: Bus,
    mut stop: watch::Receiver<Phase>,
) -> FaultRecord {
    let clock = bus.clock();
    let mut rec = record_of(&f);
    rec.anchor_ms = Some(anchor_ms);
    rec.due_ms = Some(due_ms);
    let (t, c, fault) = (topo.clone(), ctx.clone(), f.fault.clone());
    rec.began_ms = Some(clock.now_ms());
    let applied = tokio::task::spawn_blocking(move || apply(&t, &c, &fault))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    if let miglab_faults::Anchor::PreSwitchover { hop } = f.trigger.anchor {
        ctx.gate.done(hop);
    }
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            rec.error = Some(e);
            return rec;
        }
    };
    rec.injected_ms = Some(clock.now_ms());
    rec.target = applied.target;
    bus.publish(Observed::FaultInjected { index: f.index, name: f.name.clone() });
    if let Some(undo) = applied.undo {
        if let Some(ms) = f.fault.lasts_ms() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                _ = stop.wait_for(|s| *s == Phase::Cut) => {}
            }
        } else {
            let _ = stop.wait_for(|s| *s != Phase::Running).await;
        }
        match tokio::task::spawn_blocking(undo).await.unwrap_or_else(|e| Err(e.to_string())) {
            Ok(said) => rec.undo = said,
            Err(e) => {
                rec.undo = "the undo failed".into();
                rec.error = Some(format!("undo: {e}"));
            }
        }
    } else {
        rec.undo = "none (nothing to undo)".into();
    }
    rec.cleared_ms = Some(clock.now_ms());
    bus.publish(Observed::FaultCleared { index: f.index });
    if f.fault.touches_ceph() || topo.shared_cluster() {
        let t = topo.clone();
        match tokio::task::spawn_blocking(move || wait_healthy(t.as_ref(), HEALTHY_DEADLINE))
            .await
            .ok()
            .flatten()
        {
            Some(ms) => rec.healthy_after_ms = Some(ms),
            None => rec.infra_not_recovered = true,
        }
    }
    rec
}

impl Injector {
    /// Starts listening to `bus` for the triggers of `faults`.
    pub fn start(topo: Arc<dyn Topology>, bus: &Bus, faults: Vec<Resolved>, ctx: Context) -> Injector {
        let (stop, stop_rx) = watch::channel(Phase::Running);
        let mut rx = bus.subscribe();
        let clock = bus.clock();
        let (task_bus, task_faults) = (bus.clone(), faults.clone());
        let task = tokio::spawn(async move {
            let mut machine = Machine::new(&task_faults);
            let mut running = tokio::task::JoinSet::new();
            let mut stopping = stop_rx.clone();
            let fire = |firings: Vec<miglab_faults::Firing>,
                        running: &mut tokio::task::JoinSet<FaultRecord>| {
                for fr in firings {
                    if let Some(f) = task_faults.iter().find(|f| f.index == fr.index) {
                        if matches!(f.fault, Fault::MigrationLink { .. }) {
                            continue;
                        }
                        running.spawn(one(
                            topo.clone(),
                            f.clone(),
                            fr.anchor_ms,
                            fr.due_ms,
                            ctx.clone(),
                            task_bus.clone(),
                            stop_rx.clone(),
                        ));
                    }
                }
            };
            loop {
                let due = machine.next_due().map(|ms| tokio::time::Instant::from_std(clock.at(ms)));
                tokio::select! {
                    o = rx.recv() => match o {
                        Some(o) => {
                            if let Some(e) = event(&o.what) {
                                let firings = machine.observe(&e, o.at_ms);
                                fire(firings, &mut running);
                            }
                        }
                        None => break,
                    },
                    _ = async { match due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                        let firings = machine.advance(clock.now_ms());
                        fire(firings, &mut running);
                    }
                    _ = stopping.wait_for(|s| *s != Phase::Running) => break,
                }
            }
            let mut records = Vec::new();
            while let Some(r) = running.join_next().await {
                if let Ok(r) = r {
                    records.push(r);
                }
            }
            for i in machine.never_triggered() {
                if let Some(f) = task_faults.iter().find(|f| f.index == i) {
                    if matches!(f.fault, Fault::MigrationLink { .. }) {
                        continue;
                    }
                    let mut rec = record_of(f);
                    rec.error = Some(format!("its trigger ({}) never came", f.trigger));
                    records.push(rec);
                }
            }
            records
        });
        Injector { stop, task, faults, links: Mutex::new(Vec::new()), clock, bus: bus.clone() }
    }

    /// The migration link of hop `hop` to a destination listening on `dst`: through a proxy on
    /// `proxy_ip` when a `migration-link` fault is planned for it.
    pub async fn link_for_hop(
        &self,
        hop: u32,
        proxy_ip: std::net::IpAddr,
        dst: SocketAddr,
    ) -> Result<MigrationLink, String> {
        let Some(f) = self.faults.iter().find(|f| {
            matches!(f.fault, Fault::MigrationLink { .. })
                && f.trigger.anchor == (miglab_faults::Anchor::HopStart { hop })
        }) else {
            return Ok(MigrationLink::Direct);
        };
        let Fault::MigrationLink { latency_ms, jitter_ms, rate_kbit } = f.fault else {
            return Ok(MigrationLink::Direct);
        };
        let shape = Shape {
            latency: Duration::from_millis(latency_ms),
            jitter: Duration::from_millis(jitter_ms),
            rate: rate_kbit.map(|k| k * 1000 / 8),
        };
        let p = proxy::start(proxy_ip, dst, shape).await.map_err(|e| format!("the migration proxy: {e}"))?;
        let mut rec = record_of(f);
        rec.injected_ms = Some(self.clock.now_ms());
        rec.anchor_ms = rec.injected_ms;
        rec.due_ms = rec.injected_ms;
        rec.began_ms = rec.injected_ms;
        rec.target = format!(
            "hop {hop}'s stream through {} ({latency_ms} ± {jitter_ms} ms{})",
            p.listen,
            rate_kbit.map(|k| format!(", {k} kbit/s")).unwrap_or_default()
        );
        self.bus.publish(Observed::FaultInjected { index: f.index, name: f.name.clone() });
        let via = p.listen;
        self.links.lock().unwrap_or_else(|e| e.into_inner()).push((hop, rec, p));
        Ok(MigrationLink::Proxied { via })
    }

    /// Hop `hop` is over: its proxy goes.
    pub fn end_link(&self, hop: u32) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for (h, rec, p) in links.iter_mut() {
            if *h == hop && rec.cleared_ms.is_none() {
                rec.cleared_ms = Some(self.clock.now_ms());
                rec.undo = format!("the proxy on {} stopped", p.listen);
                self.bus.publish(Observed::FaultCleared { index: rec.index });
            }
        }
    }

    /// No more firings; every fault in effect runs its course (`cut`: is undone now), Ceph is
    /// waited for; returns every fault's record, in the plan's order.
    pub async fn finish(self, cut: bool) -> Vec<FaultRecord> {
        let _ = self.stop.send(if cut { Phase::Cut } else { Phase::Finishing });
        let mut records = self.task.await.unwrap_or_default();
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        for (_, mut rec, p) in links {
            if rec.cleared_ms.is_none() {
                rec.cleared_ms = Some(self.clock.now_ms());
                rec.undo = format!("the proxy on {} stopped", p.listen);
            }
            records.push(rec);
        }
        records.sort_by_key(|r| r.index);
        records
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_faults::{Anchor, Trigger};

    fn resolved(index: u32, anchor: Anchor) -> Resolved {
        Resolved {
            index,
            name: format!("f{index}"),
            fault: Fault::MdsFail {},
            trigger: Trigger { anchor, offset_ms: 0, random_within_ms: 0 },
            offset_ms: 0,
        }
    }

    #[tokio::test]
    async fn the_gate_holds_a_hop_until_its_faults_are_in_place() {
        let gate = Arc::new(Gate::new(&[
            resolved(0, Anchor::PreSwitchover { hop: 2 }),
            resolved(1, Anchor::WorkloadStart),
        ]));
        assert!(gate.holds(2) && !gate.holds(1));
        assert!(!gate.wait(2, Duration::from_millis(20)).await, "not yet");
        let g = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.done(2);
        });
        assert!(gate.wait(2, Duration::from_secs(5)).await);
        assert!(gate.wait(1, Duration::from_millis(1)).await, "a hop without faults is not held");
    }

    #[test]
    fn observations_become_the_machines_events() {
        use miglab_reports::MigrationStatus;
        let o = Observed::Qmp {
            hop: 1,
            side: Side::Destination,
            event: QmpEvent::Migration { status: MigrationStatus::Active },
        };
        assert_eq!(
            event(&o),
            Some(Event::Status { hop: 1, side: Side::Destination, status: MigrationStatus::Active })
        );
        let pass = Observed::Qmp { hop: 2, side: Side::Source, event: QmpEvent::MigrationPass { pass: 3 } };
        assert_eq!(event(&pass), Some(Event::Pass { hop: 2, pass: 3 }));
        assert_eq!(event(&Observed::Tick { hop: 1 }), None);
    }
}
