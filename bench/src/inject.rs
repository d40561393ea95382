//! Faults carried out: the pure trigger machine ([`miglab_faults::Machine`]) listens to the run's
//! bus; what it fires is injected here through the [`Topology`], off the QMP loop (a slow kill
//! never freezes the timeline it marks). Every fault's undo runs — when its time is up, and at
//! the latest when the run ends, whatever happened — and after a fault on Ceph the run waits for
//! the cluster to be healthy again. Each fault leaves a [`FaultRecord`] on the run clock.

mod apply;
pub(crate) use apply::{DELAY_PROBABILITY, SOCKET_FAILURES};

use crate::clock::RunClock;
use crate::observe::{Bus, Observed};
use apply::apply;
use miglab_faults::{Event, Fault, Machine, Resolved, Unfired};
use miglab_infra::link::MigrationLink;
use miglab_infra::proxy::{self, Proxy, Shape};
use miglab_infra::topology::{journal, Topology};
use miglab_infra::wait::{self, WaitError};
use miglab_model::{FaultRecord, QmpEvent, Side};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

/// How long the cluster may take to be healthy again after a fault's undo.
const HEALTHY_DEADLINE: Duration = Duration::from_secs(180);

/// The pause before a hop's switch-over: it lasts until every fault anchored there is in place.
/// A fault that names a guest holds that guest's hop; one that names none holds every guest's
/// hop of that number until it is in place (the first guest's pause anchors it).
#[derive(Debug, Default)]
pub struct Gate {
    /// Fault index → (hop, guest) of the faults not yet in place.
    pending: Mutex<HashMap<u32, (u32, Option<u32>)>>,
    notify: Notify,
}

impl Gate {
    /// A gate for the faults of `faults` anchored at a hop's pre-switchover.
    pub fn new(faults: &[Resolved]) -> Self {
        let pending = faults
            .iter()
            .filter_map(|f| match f.trigger.anchor {
                miglab_faults::Anchor::PreSwitchover { hop } => Some((f.index, (hop, f.trigger.guest))),
                _ => None,
            })
            .collect();
        Self { pending: Mutex::new(pending), notify: Notify::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u32, Option<u32>)>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn waiting_for(&self, hop: u32, guest: u32) -> usize {
        self.lock().values().filter(|(h, g)| *h == hop && g.is_none_or(|g| g == guest)).count()
    }

    /// Whether guest `guest`'s hop `hop` pauses before its switch-over.
    pub fn holds(&self, hop: u32, guest: u32) -> bool {
        self.waiting_for(hop, guest) > 0
    }

    /// Fault `index` is in place (or will never be).
    fn done(&self, index: u32) {
        self.lock().remove(&index);
        self.notify.notify_waiters();
    }

    /// Waits until the faults of guest `guest`'s hop `hop` pause are in place (or `deadline`
    /// passes).
    pub async fn wait(&self, hop: u32, guest: u32, deadline: Duration) -> bool {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let notified = self.notify.notified();
            if self.waiting_for(hop, guest) == 0 {
                return true;
            }
            if tokio::time::timeout_at(until, notified).await.is_err() {
                return false;
            }
        }
    }
}

/// A fault's request to `migrate_cancel` a hop. It names the hop (and the guest whose hop it
/// is), and is refused when that hop is not running: a late request must never cancel a later
/// hop.
#[derive(Debug, Default)]
pub struct CancelRequest {
    /// Guest → the hop it runs now, and whether that hop is asked to cancel.
    state: Mutex<HashMap<u32, (u32, bool)>>,
    notify: Notify,
}

impl CancelRequest {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (u32, bool)>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Guest `guest`'s hop `hop` runs now (None: none of its hops runs); a request for an
    /// earlier one is forgotten.
    pub fn running(&self, guest: u32, hop: Option<u32>) {
        let mut s = self.lock();
        match hop {
            Some(h) => s.insert(guest, (h, false)),
            None => s.remove(&guest),
        };
    }

    /// Asks guest `guest`'s hop `hop` to cancel; an error when it is not the one running.
    pub fn ask(&self, hop: u32, guest: u32) -> Result<(), String> {
        let mut s = self.lock();
        match s.get_mut(&guest) {
            Some((h, asked)) if *h == hop => {
                *asked = true;
                self.notify.notify_waiters();
                Ok(())
            }
            Some((h, _)) => Err(format!("hop {hop} is not running (hop {h} is): nothing cancelled")),
            None => Err(format!("hop {hop} is not running (it has ended): nothing cancelled")),
        }
    }

    /// Resolves once guest `guest`'s hop `hop` is asked to cancel.
    pub async fn asked(&self, hop: u32, guest: u32) {
        loop {
            // Created before the check: a request in between still wakes it.
            let woken = self.notify.notified();
            if self.lock().get(&guest) == Some(&(hop, true)) {
                return;
            }
            woken.await;
        }
    }
}

/// What a fault needs to know of the run.
#[derive(Debug, Clone)]
pub struct Context {
    /// The run's VM name (its guests' names begin with it): it keys the run's fault journal.
    pub vm: String,
    /// The VM of each guest, in order: a fault acts on the one whose hop anchored it (the first
    /// guest's for the workload's start).
    pub guests: Vec<String>,
    /// The VM this fault acts on, and its guest's number (set when it fires).
    pub target: String,
    pub target_guest: u32,
    pub hosts: Vec<String>,
    /// The workload's directory, relative to the CephFS root (a third party renames in it): the
    /// target guest's, of `workload_dirs` (each guest's).
    pub workload_dir: Option<String>,
    pub workload_dirs: Vec<Option<String>>,
    pub gate: Arc<Gate>,
    /// Asks the running hop to `migrate_cancel`.
    pub cancel: Arc<CancelRequest>,
}

impl Context {
    /// The VM of guest `guest` (from 1; the first guest's when none is named).
    pub fn vm_of(&self, guest: Option<u32>) -> String {
        let i = guest.unwrap_or(1).saturating_sub(1) as usize;
        self.guests.get(i).or(self.guests.first()).cloned().unwrap_or_else(|| self.vm.clone())
    }
}

/// How the wait for Ceph's health after a fault ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Health {
    /// Healthy, this many ms after the undo.
    After(f64),
    TimedOut,
    /// The user stopped the wait: nothing is known of the cluster.
    Interrupted,
}

/// Waits for Ceph to be healthy again.
fn wait_healthy(topo: &dyn Topology, deadline: Duration) -> Health {
    let t = Instant::now();
    // A health query that fails is asked again: the cluster is what is being waited for.
    let healthy = || Ok::<_, std::convert::Infallible>(matches!(topo.health(), Ok((true, _))).then_some(()));
    match wait::until("the cluster's health", deadline, Duration::from_millis(250), healthy) {
        Ok(()) => Health::After(t.elapsed().as_secs_f64() * 1e3),
        Err(WaitError::Interrupted(_)) => Health::Interrupted,
        Err(WaitError::TimedOut(..) | WaitError::Failed(_)) => Health::TimedOut,
    }
}

/// Reverts journal entry `id` off the runtime; says what was done into `rec`.
async fn revert_into(topo: &Arc<dyn Topology>, id: String, rec: &mut FaultRecord, before: &str) {
    let t = topo.clone();
    let r = tokio::task::spawn_blocking(move || journal::revert(t.as_ref(), &id)).await.unwrap_or_else(|e| {
        journal::Reverted { done: Vec::new(), failed: vec![format!("the undo panicked: {e}")] }
    });
    rec.undo = format!("{before}{}", r.summary());
    if !r.failed.is_empty() {
        let failed = format!(
            "the undo failed ({}); left in the lab's fault journal for `miglab lab down` or the next run",
            r.failed.join("; ")
        );
        rec.error = Some(match rec.error.take() {
            Some(e) => format!("{e}; {failed}"),
            None => failed,
        });
    }
}

/// The machine's view of an observation, and the guest it happened to (1 for the run's).
fn event(o: &Observed) -> Option<(u32, Event)> {
    match o {
        Observed::WorkloadStarted => Some((1, Event::WorkloadStarted)),
        Observed::HopStarted { guest, hop, .. } => Some((*guest, Event::HopStarted { hop: *hop })),
        Observed::HopEnded { guest, hop, .. } => Some((*guest, Event::HopEnded { hop: *hop })),
        Observed::Qmp { guest, hop, side, event: QmpEvent::Migration { status } } => {
            Some((*guest, Event::Status { hop: *hop, side: *side, status: *status }))
        }
        Observed::Qmp { guest, hop, side: Side::Source, event: QmpEvent::MigrationPass { pass } } => {
            Some((*guest, Event::Pass { hop: *hop, pass: *pass }))
        }
        _ => None,
    }
}

/// The running injector.
#[derive(Debug)]
pub struct Injector {
    stop: watch::Sender<Phase>,
    task: tokio::task::JoinHandle<Ended>,
    faults: Vec<Resolved>,
    /// Each hop's migration-link fault: its record and its proxy (None: the proxy failed).
    links: Mutex<Vec<(u32, FaultRecord, Option<Proxy>)>>,
    clock: RunClock,
    bus: Bus,
    topo: Arc<dyn Topology>,
    /// The prefix of this run's journal entries.
    journal_prefix: String,
}

/// What the injector's task ends with: the records of the faults it fired, and those it did not.
#[derive(Debug, Default)]
struct Ended {
    records: Vec<FaultRecord>,
    unfired: Vec<Unfired>,
    /// When it stopped firing (run clock).
    stopped_ms: f64,
}

/// Every planned fault's record, in the plan's order: the records made, plus one for each
/// fault that has none, saying why it was not injected. A fault can never silently vanish.
fn account(planned: &[Resolved], mut ended: Ended, why_missing: &str) -> Vec<FaultRecord> {
    for f in planned {
        if ended.records.iter().any(|r| r.index == f.index) {
            continue;
        }
        let mut rec = record_of(f);
        let unfired = ended.unfired.iter().find(|u| u.index == f.index);
        rec.error = Some(match unfired {
            _ if matches!(f.fault, Fault::MigrationLink { .. }) => {
                format!("not injected: its hop never started ({})", f.trigger)
            }
            Some(Unfired { anchor_ms: None, .. }) => {
                format!("not injected: its trigger ({}) never came", f.trigger)
            }
            Some(Unfired { anchor_ms: Some(a), due_ms, .. }) => {
                rec.anchor_ms = Some(*a);
                rec.due_ms = *due_ms;
                format!(
                    "not injected: its anchor ({}) came at {a:.0} ms and it was due at {:.0} ms, but the run stopped injecting at {:.0} ms",
                    f.trigger.anchor,
                    due_ms.unwrap_or(*a),
                    ended.stopped_ms
                )
            }
            None => format!("not accounted for: {why_missing}"),
        });
        ended.records.push(rec);
    }
    ended.records.sort_by_key(|r| r.index);
    ended.records
}

/// The records of a run that ended before its injector started: every planned fault, not
/// injected, and why (before, such a run had no fault records at all).
pub fn never_started(planned: &[Resolved], why: &str) -> Vec<FaultRecord> {
    planned
        .iter()
        .map(|f| FaultRecord {
            error: Some(format!("not injected: the run ended before its faults could fire ({why})")),
            ..record_of(f)
        })
        .collect()
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
        optional: f.optional,
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
    firing: miglab_faults::Firing,
    mut ctx: Context,
    bus: Bus,
    mut stop: watch::Receiver<Phase>,
) -> FaultRecord {
    let clock = bus.clock();
    let mut rec = record_of(&f);
    rec.anchor_ms = Some(firing.anchor_ms);
    rec.due_ms = Some(firing.due_ms);
    rec.guest = firing.guest;
    ctx.target = ctx.vm_of(firing.guest);
    ctx.target_guest = firing.guest.unwrap_or(1);
    if let Some(d) = ctx.workload_dirs.get(ctx.target_guest as usize - 1) {
        ctx.workload_dir = d.clone();
    }
    // Unique in this process: sweep cells of one repetition share a VM name and fault indexes.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let id = format!("{}:{}:{}:{seq}", std::process::id(), ctx.vm, f.index);
    let (t, c, planned, jid) = (topo.clone(), ctx.clone(), f.clone(), id.clone());
    rec.began_ms = Some(clock.now_ms());
    // The journal entry is opened before the first change, and each change's undo written
    // before the change: however far the fault gets, the journal knows how to undo it.
    let applied = tokio::task::spawn_blocking(move || {
        let j = journal::Journal::begin(t.as_ref(), jid, &planned.name)
            .map_err(|e| format!("the fault journal: {e}"))?;
        let a = apply(&t, &c, &planned, &j).map_err(|e| e.to_string())?;
        Ok::<_, String>((a, j.has_steps()))
    })
    .await
    .unwrap_or_else(|e| Err(format!("the injection panicked: {e}")));
    // Stamped before the hop held for it goes on: the switch-over comes after the injection.
    if applied.is_ok() {
        rec.injected_ms = Some(clock.now_ms());
    }
    if let miglab_faults::Anchor::PreSwitchover { .. } = f.trigger.anchor {
        ctx.gate.done(f.index);
    }
    let (applied, undoable) = match applied {
        Ok(a) => a,
        Err(e) => {
            // Undone exactly as far as it went.
            rec.error = Some(format!("not injected: {e}"));
            revert_into(&topo, id, &mut rec, "what was done undone: ").await;
            return rec;
        }
    };
    rec.target = applied.target;
    rec.error = applied.partly;
    bus.publish(Observed::FaultInjected { index: f.index, name: f.name.clone() });
    if undoable {
        // Its time (a fault without one: until the run stops firing), cut short when the run
        // is cut or the user stops it.
        let lasts = f.fault.lasts_ms();
        let over = |s: &Phase| if lasts.is_some() { *s == Phase::Cut } else { *s != Phase::Running };
        let time = async {
            match lasts {
                Some(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = time => {}
            _ = stop.wait_for(over) => {}
            _ = miglab_infra::interrupt::asked() => {}
        }
        revert_into(&topo, id, &mut rec, "").await;
    } else {
        revert_into(&topo, id, &mut rec, "").await;
        rec.undo = "none (nothing to undo)".into();
    }
    rec.cleared_ms = Some(clock.now_ms());
    bus.publish(Observed::FaultCleared { index: f.index });
    if f.fault.touches_ceph() || topo.shared_cluster() {
        let t = topo.clone();
        match tokio::task::spawn_blocking(move || wait_healthy(t.as_ref(), HEALTHY_DEADLINE))
            .await
            .unwrap_or(Health::TimedOut)
        {
            Health::After(ms) => rec.healthy_after_ms = Some(ms),
            Health::TimedOut => rec.infra_not_recovered = true,
            Health::Interrupted => rec.undo.push_str("; the wait for health was interrupted"),
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
        let (topo_for_finish, journal_prefix) = (topo.clone(), format!("{}:{}:", std::process::id(), ctx.vm));
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
                            fr.clone(),
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
                            if let Some((guest, e)) = event(&o.what) {
                                let firings = machine.observe(guest, &e, o.at_ms);
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
            let stopped_ms = clock.now_ms();
            let mut records = Vec::new();
            while let Some(r) = running.join_next().await {
                // A fault task that panicked leaves no record: `account` names it.
                if let Ok(r) = r {
                    records.push(r);
                }
            }
            Ended { records, unfired: machine.unfired(), stopped_ms }
        });
        Injector {
            stop,
            task,
            faults,
            links: Mutex::new(Vec::new()),
            clock,
            bus: bus.clone(),
            topo: topo_for_finish,
            journal_prefix,
        }
    }

    /// The migration link of hop `hop` to a destination listening on `dst`: through a proxy on
    /// `proxy_ip` when a `migration-link` fault is planned for it.
    /// A link fault shapes one guest's stream: the guest it names, else the first.
    pub async fn link_for_hop(
        &self,
        hop: u32,
        guest: u32,
        proxy_ip: std::net::IpAddr,
        dst: SocketAddr,
    ) -> Result<MigrationLink, String> {
        let Some(f) = self.faults.iter().find(|f| {
            matches!(f.fault, Fault::MigrationLink { .. })
                && f.trigger.anchor == (miglab_faults::Anchor::HopStart { hop })
                && f.trigger.guest.unwrap_or(1) == guest
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
        let p = match proxy::start(proxy_ip, dst, shape).await {
            Ok(p) => p,
            Err(e) => {
                let why = format!("the migration proxy: {e}");
                let rec = proxy_failed(f, guest, self.clock.now_ms(), &why);
                self.links.lock().unwrap_or_else(|e| e.into_inner()).push((hop, rec, None));
                return Err(why);
            }
        };
        let mut rec = record_of(f);
        rec.injected_ms = Some(self.clock.now_ms());
        rec.anchor_ms = rec.injected_ms;
        rec.due_ms = rec.injected_ms;
        rec.began_ms = rec.injected_ms;
        rec.guest = Some(guest);
        rec.target = format!(
            "hop {hop}'s stream through {} ({latency_ms} ± {jitter_ms} ms{})",
            p.listen,
            rate_kbit.map(|k| format!(", {k} kbit/s")).unwrap_or_default()
        );
        self.bus.publish(Observed::FaultInjected { index: f.index, name: f.name.clone() });
        let via = p.listen;
        self.links.lock().unwrap_or_else(|e| e.into_inner()).push((hop, rec, Some(p)));
        Ok(MigrationLink::Proxied { via })
    }

    /// Guest `guest`'s hop `hop` is over: its proxy goes.
    pub fn end_link(&self, hop: u32, guest: u32) {
        let mut links = self.links.lock().unwrap_or_else(|e| e.into_inner());
        for (h, rec, p) in links.iter_mut() {
            let Some(p) = p else { continue };
            if *h == hop && rec.guest == Some(guest) && rec.cleared_ms.is_none() {
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
        let (mut ended, why) = match self.task.await {
            Ok(e) => (e, "its task ended without a record (it panicked)".to_string()),
            Err(e) => (
                Ended::default(),
                format!("the injector failed ({e}); what it did is in the lab's fault journal"),
            ),
        };
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(|e| e.into_inner()));
        let now = self.clock.now_ms();
        ended.records.extend(links.into_iter().map(|(_, rec, p)| link_closed(rec, p.map(|p| p.listen), now)));
        let mut records = account(&self.faults, ended, &why);
        // A fault task that panicked left its changes in the journal: undone here, the same way.
        let left: Vec<journal::Entry> =
            self.topo.journal().into_iter().filter(|e| e.id.starts_with(&self.journal_prefix)).collect();
        for e in left {
            // `<prefix><index>:<seq>`
            let index =
                e.id[self.journal_prefix.len()..].split(':').next().and_then(|i| i.parse::<u32>().ok());
            let mut undone = FaultRecord::default();
            revert_into(&self.topo, e.id.clone(), &mut undone, "left in the journal, undone at the end: ")
                .await;
            if let Some(r) = records.iter_mut().find(|r| Some(r.index) == index) {
                r.undo = undone.undo;
                if let Some(err) = undone.error {
                    r.error = Some(r.error.take().map_or(err.clone(), |e| format!("{e}; {err}")));
                }
            }
        }
        records
    }
}

/// A migration-link fault whose proxy did not start: its own record, for the hop started (it
/// is not "its hop never started").
fn proxy_failed(f: &Resolved, guest: u32, now_ms: f64, why: &str) -> FaultRecord {
    let mut rec = record_of(f);
    rec.guest = Some(guest);
    rec.began_ms = Some(now_ms);
    rec.error = Some(format!("not injected: {why}"));
    rec
}

/// A hop's link record at the end of the run: a proxy still up (listening on `listen`) is
/// stopped now; a failed one's record stays as it is.
fn link_closed(mut rec: FaultRecord, listen: Option<SocketAddr>, now_ms: f64) -> FaultRecord {
    if let (None, Some(l)) = (rec.cleared_ms, listen) {
        rec.cleared_ms = Some(now_ms);
        rec.undo = format!("the proxy on {l} stopped");
    }
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_faults::{Anchor, Trigger};

    /// A link fault whose proxy failed keeps its own record through the end of the run; before,
    /// it had none and `account` called it "its hop never started".
    #[test]
    fn a_failed_proxy_is_its_own_record() {
        let mut link = resolved(0, Anchor::HopStart { hop: 1 });
        link.fault = Fault::MigrationLink { latency_ms: 10, jitter_ms: 0, rate_kbit: None };
        let planned = vec![link];
        let rec = proxy_failed(&planned[0], 2, 1500.0, "the migration proxy: bind 10.0.0.9:0: Cannot assign");
        let ended = Ended { records: vec![link_closed(rec, None, 9000.0)], ..Ended::default() };
        let r = account(&planned, ended, "it panicked");
        assert_eq!(r.len(), 1);
        let e = r[0].error.clone().unwrap_or_default();
        assert!(e.contains("the migration proxy: bind") && !e.contains("never started"), "{e}");
        assert_eq!((r[0].guest, r[0].began_ms, r[0].cleared_ms), (Some(2), Some(1500.0), None));
        // A proxy that ran is stopped at the end, its record says where it listened.
        let up = link_closed(record_of(&planned[0]), Some("10.77.0.1:4444".parse().expect("addr")), 9000.0);
        assert_eq!((up.cleared_ms, up.undo.as_str()), (Some(9000.0), "the proxy on 10.77.0.1:4444 stopped"));
    }

    fn resolved(index: u32, anchor: Anchor) -> Resolved {
        Resolved {
            index,
            name: format!("f{index}"),
            fault: Fault::MdsFail {},
            trigger: Trigger { anchor, offset_ms: 0, random_within_ms: 0, guest: None },
            offset_ms: 0,
            optional: false,
        }
    }

    #[tokio::test]
    async fn the_gate_holds_a_hop_until_its_faults_are_in_place() {
        let gate = Arc::new(Gate::new(&[
            resolved(0, Anchor::PreSwitchover { hop: 2 }),
            resolved(1, Anchor::WorkloadStart),
        ]));
        assert!(gate.holds(2, 1) && gate.holds(2, 4) && !gate.holds(1, 1));
        assert!(!gate.wait(2, 1, Duration::from_millis(20)).await, "not yet");
        let g = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            g.done(0);
        });
        assert!(gate.wait(2, 1, Duration::from_secs(5)).await);
        assert!(gate.wait(1, 1, Duration::from_millis(1)).await, "a hop without faults is not held");
        // A fault that names a guest holds that guest's hop only.
        let mut named = resolved(0, Anchor::PreSwitchover { hop: 1 });
        named.trigger.guest = Some(3);
        let gate = Gate::new(&[named]);
        assert!(gate.holds(1, 3) && !gate.holds(1, 2));
    }

    #[test]
    fn a_run_that_ended_before_its_injector_has_a_record_per_fault() {
        let planned = vec![resolved(0, Anchor::WorkloadStart), resolved(1, Anchor::HopEnd { hop: 1 })];
        let r = never_started(&planned, "the guest never booted");
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|r| r.injected_ms.is_none()
            && r.error
                .as_deref()
                .is_some_and(|e| e.contains("before its faults could fire (the guest never booted)"))));
        assert_eq!((r[0].index, r[1].index), (0, 1));
    }

    /// Every planned fault ends with one record: fired ones keep theirs; one whose offset had
    /// not elapsed, one whose anchor never came, an unused link and one whose task vanished
    /// each get a record saying why it was not injected.
    #[test]
    fn every_planned_fault_is_accounted_for() {
        let mut link = resolved(1, Anchor::HopStart { hop: 1 });
        link.fault = Fault::MigrationLink { latency_ms: 10, jitter_ms: 0, rate_kbit: None };
        let planned = vec![
            resolved(0, Anchor::WorkloadStart),
            link,
            resolved(2, Anchor::WorkloadStart),
            resolved(3, Anchor::HopEnd { hop: 2 }),
            resolved(4, Anchor::WorkloadStart),
        ];
        let mut fired = record_of(&planned[0]);
        fired.injected_ms = Some(10.0);
        let ended = Ended {
            records: vec![fired.clone()],
            unfired: vec![
                Unfired { index: 1, anchor_ms: None, due_ms: None },
                Unfired { index: 2, anchor_ms: Some(100.0), due_ms: Some(9100.0) },
                Unfired { index: 3, anchor_ms: None, due_ms: None },
            ],
            stopped_ms: 5000.0,
        };
        let r = account(&planned, ended, "it panicked");
        assert_eq!(r.iter().map(|r| r.index).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(r[0], fired);
        let error = |i: usize| r[i].error.clone().unwrap_or_default();
        assert!(error(1).contains("its hop never started"), "{}", error(1));
        assert!(
            error(2).contains("due at 9100 ms") && error(2).contains("stopped injecting at 5000 ms"),
            "{}",
            error(2)
        );
        assert_eq!(r[2].due_ms, Some(9100.0));
        assert!(error(3).contains("never came"), "{}", error(3));
        assert!(error(4).contains("not accounted for: it panicked"), "{}", error(4));
        assert!(r[1..].iter().all(|r| r.injected_ms.is_none()));
    }

    /// A cancel asked after its hop ended is refused and does not carry over to the next hop.
    #[tokio::test]
    async fn a_late_cancel_never_cancels_a_later_hop() {
        let c = CancelRequest::default();
        c.running(1, Some(1));
        c.running(1, None);
        assert!(c.ask(1, 1).expect_err("hop 1 ended").contains("has ended"));
        c.running(1, Some(2));
        assert!(c.ask(1, 1).is_err(), "hop 2 runs, not 1");
        let waited = tokio::time::timeout(Duration::from_millis(30), c.asked(2, 1)).await;
        assert!(waited.is_err(), "hop 2 was never asked");
        // Another guest's hop 2 runs beside it: asking one cancels that one only.
        c.running(2, Some(2));
        c.ask(2, 2).expect("guest 2's hop 2 runs");
        let waited = tokio::time::timeout(Duration::from_millis(30), c.asked(2, 1)).await;
        assert!(waited.is_err(), "guest 1's hop 2 was not asked");
        c.ask(2, 1).expect("hop 2 runs");
        tokio::time::timeout(Duration::from_secs(5), c.asked(2, 1)).await.expect("hop 2 asked");
        tokio::time::timeout(Duration::from_secs(5), c.asked(2, 2)).await.expect("guest 2's asked");
    }

    #[test]
    fn observations_become_the_machines_events() {
        use miglab_model::MigrationStatus;
        let o = Observed::Qmp {
            guest: 3,
            hop: 1,
            side: Side::Destination,
            event: QmpEvent::Migration { status: MigrationStatus::Active },
        };
        assert_eq!(
            event(&o),
            Some((3, Event::Status { hop: 1, side: Side::Destination, status: MigrationStatus::Active }))
        );
        let pass = Observed::Qmp {
            guest: 1,
            hop: 2,
            side: Side::Source,
            event: QmpEvent::MigrationPass { pass: 3 },
        };
        assert_eq!(event(&pass), Some((1, Event::Pass { hop: 2, pass: 3 })));
        assert_eq!(event(&Observed::Tick { guest: 1, hop: 1 }), None);
    }
}
