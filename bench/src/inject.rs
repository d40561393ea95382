//! Faults carried out: the pure trigger machine ([`miglab_faults::Machine`]) listens to the run's
//! bus; what it fires is injected here through the [`Topology`], off the QMP loop (a slow kill
//! never freezes the timeline it marks). Every fault's undo runs — when its time is up, and at
//! the latest when the run ends, whatever happened — and after a fault on Ceph the run waits for
//! the cluster to be healthy again. Each fault leaves a [`FaultRecord`] on the run clock.

use crate::clock::RunClock;
use crate::link::MigrationLink;
use crate::observe::{Bus, Observed};
use crate::paths;
use crate::process::{ProcessSpec, Tier};
use crate::proxy::{self, Proxy, Shape};
use crate::topology::{DaemonId, DaemonKind, Topology};
use crate::vm::{ledger, VmRecord};
use miglab_faults::{DaemonAction, Event, Fault, HostRef, LinkShape, Machine, Pick, Resolved, StorageTarget};
use miglab_reports::{FaultRecord, QmpEvent, Side};
use nix::sys::signal::Signal;
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

/// An injected fault's undo.
type Undo = Box<dyn FnOnce() -> Result<String, String> + Send>;

struct Applied {
    target: String,
    undo: Option<Undo>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The instance of `side`: the guest's current one (source) or the one waiting for it.
fn instance(topo: &dyn Topology, vm: &str, side: Side) -> Result<VmRecord, String> {
    let all = ledger::of_vm(topo, vm);
    let found = match side {
        Side::Source => all.iter().filter(|r| !r.incoming).max_by_key(|r| r.id.generation),
        Side::Destination => all.iter().filter(|r| r.incoming).max_by_key(|r| r.id.generation),
    };
    found.cloned().ok_or_else(|| format!("no {} instance of {vm} runs now", side.as_str()))
}

fn host_of(topo: &dyn Topology, ctx: &Context, h: &HostRef) -> Result<String, String> {
    match h {
        HostRef::Named(n) => Ok(n.clone()),
        HostRef::Source => instance(topo, &ctx.vm, Side::Source).map(|r| r.id.host.clone()),
        HostRef::Destination => match instance(topo, &ctx.vm, Side::Destination) {
            Ok(r) => Ok(r.id.host.clone()),
            // Outside a hop: the host the next hop goes to.
            Err(_) => {
                let src = instance(topo, &ctx.vm, Side::Source)?.id.host;
                Ok(crate::migration::next_host(&ctx.hosts, &src))
            }
        },
    }
}

fn osd(p: Pick) -> Result<DaemonId, String> {
    match p {
        Pick::Id(n) => Ok(DaemonId::new(DaemonKind::Osd, n.to_string())),
        Pick::Random => Err("the schedule left an OSD unpicked".into()),
    }
}

/// Sets `key` on every messenger `target` names; returns what it acted on.
fn messenger_set(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    target: &StorageTarget,
    key: &str,
    value: &str,
) -> Result<String, String> {
    match target {
        StorageTarget::Client(h) => {
            let host = host_of(topo.as_ref(), ctx, h)?;
            topo.client_config_set(&host, key, value).map_err(err)?;
            Ok(format!("client.{host}"))
        }
        StorageTarget::Osd(p) => {
            let id = osd(*p)?;
            topo.config_set(&id, key, value).map_err(err)?;
            Ok(id.to_string())
        }
        StorageTarget::AllOsds => {
            for id in topo.daemons().into_iter().filter(|d| d.kind == DaemonKind::Osd) {
                topo.config_set(&id, key, value).map_err(err)?;
            }
            Ok("every OSD".into())
        }
    }
}

/// Carries `fault` out (blocking); returns what it acted on and its undo.
fn apply(topo: &Arc<dyn Topology>, ctx: &Context, fault: &Fault) -> Result<Applied, String> {
    let t = topo.clone();
    let daemon_undo = |id: DaemonId, action: DaemonAction, said: String| -> Option<Undo> {
        let t = t.clone();
        Some(Box::new(move || t.daemon(&id, action).map(|()| said).map_err(err)))
    };
    Ok(match fault {
        Fault::OsdKill { osd: p, .. } => {
            let id = osd(*p)?;
            topo.daemon(&id, DaemonAction::Kill).map_err(err)?;
            Applied {
                target: id.to_string(),
                undo: daemon_undo(id.clone(), DaemonAction::Restart, format!("{id} restarted")),
            }
        }
        Fault::OsdFreeze { osd: p, .. } => {
            let id = osd(*p)?;
            topo.daemon(&id, DaemonAction::Freeze).map_err(err)?;
            Applied {
                target: id.to_string(),
                undo: daemon_undo(id.clone(), DaemonAction::Resume, format!("{id} resumed")),
            }
        }
        Fault::OsdOut { osd: p, .. } => {
            let Pick::Id(n) = *p else { return Err("the schedule left an OSD unpicked".into()) };
            topo.osd_out(n, true).map_err(err)?;
            let t = topo.clone();
            Applied {
                target: format!("osd.{n}"),
                undo: Some(Box::new(move || {
                    t.osd_out(n, false).map(|()| format!("osd.{n} in")).map_err(err)
                })),
            }
        }
        Fault::MdsKill { .. } => {
            let id = topo.active_mds().map_err(err)?.ok_or("no MDS is active")?;
            topo.daemon(&id, DaemonAction::Kill).map_err(err)?;
            Applied {
                target: id.to_string(),
                undo: daemon_undo(id.clone(), DaemonAction::Restart, format!("{id} restarted")),
            }
        }
        Fault::MdsFreeze { .. } => {
            let id = topo.active_mds().map_err(err)?.ok_or("no MDS is active")?;
            topo.daemon(&id, DaemonAction::Freeze).map_err(err)?;
            Applied {
                target: id.to_string(),
                undo: daemon_undo(id.clone(), DaemonAction::Resume, format!("{id} resumed")),
            }
        }
        Fault::MdsFail {} => {
            let id = topo.active_mds().map_err(err)?.ok_or("no MDS is active")?;
            topo.mds_fail(&id).map_err(err)?;
            Applied { target: id.to_string(), undo: None }
        }
        Fault::StorageDelay { target, max_ms, probability, .. } => {
            let max = format!("{:.3}", *max_ms as f64 / 1000.0);
            messenger_set(topo, ctx, target, "ms_inject_delay_max", &max)?;
            let on =
                messenger_set(topo, ctx, target, "ms_inject_delay_probability", &probability.to_string())?;
            let (t, c, target) = (topo.clone(), ctx.clone(), target.clone());
            Applied {
                target: on,
                undo: Some(Box::new(move || {
                    messenger_set(&t, &c, &target, "ms_inject_delay_probability", "0")
                        .map(|on| format!("no more delay on {on}"))
                })),
            }
        }
        Fault::SocketFailures { target, one_in, .. } => {
            let on = messenger_set(topo, ctx, target, "ms_inject_socket_failures", &one_in.to_string())?;
            let (t, c, target) = (topo.clone(), ctx.clone(), target.clone());
            Applied {
                target: on,
                undo: Some(Box::new(move || {
                    messenger_set(&t, &c, &target, "ms_inject_socket_failures", "0")
                        .map(|on| format!("no more socket failures on {on}"))
                })),
            }
        }
        Fault::LinkRate { host, rate_kbit, .. } => {
            let h = host_of(topo.as_ref(), ctx, host)?;
            topo.shape_link(&h, Some(LinkShape::rate(*rate_kbit))).map_err(err)?;
            let t = topo.clone();
            let h2 = h.clone();
            Applied {
                target: format!("{h}'s link"),
                undo: Some(Box::new(move || {
                    t.shape_link(&h2, None).map(|()| "unshaped".into()).map_err(err)
                })),
            }
        }
        Fault::Partition { host, .. } => {
            let h = host_of(topo.as_ref(), ctx, host)?;
            topo.cut_link(&h, true).map_err(err)?;
            let t = topo.clone();
            let h2 = h.clone();
            Applied {
                target: format!("{h}'s link"),
                undo: Some(Box::new(move || {
                    t.cut_link(&h2, false).map_err(err)?;
                    match t.ensure_mount(&h2, Duration::from_secs(10)).map_err(err)? {
                        true => Ok(format!("healed; {h2}'s client had been evicted: CephFS mounted again")),
                        false => Ok("healed".into()),
                    }
                })),
            }
        }
        Fault::VirtiofsdKill { side, restart } => {
            let r = instance(topo.as_ref(), &ctx.vm, *side)?;
            let p = topo.process(&r.virtiofsd_name()).ok_or("its virtiofsd is not recorded")?;
            topo.signal(&p, Signal::SIGKILL).map_err(err)?;
            if *restart {
                let mount = topo.host(r.host()).map_err(err)?.mount_point();
                let _ = std::fs::remove_file(r.files.virtiofsd());
                let spec = ProcessSpec::new(
                    format!("{}.restarted", r.virtiofsd_name()),
                    paths::tool("virtiofsd"),
                    r.files.virtiofsd_log(),
                )
                .tier(Tier::Guest)
                .args(crate::vm::virtiofsd_args(&mount, &r.files, r.spec.fs_cache))
                .args(&r.spec.virtiofsd_args);
                topo.spawn(r.host(), spec).map_err(err)?;
            }
            let target = format!(
                "virtiofsd of {}{}",
                r.id,
                if *restart { " (restarted; QEMU does not reconnect)" } else { "" }
            );
            Applied { target, undo: None }
        }
        Fault::VirtiofsdFreeze { side, .. } => {
            let r = instance(topo.as_ref(), &ctx.vm, *side)?;
            let p = topo.process(&r.virtiofsd_name()).ok_or("its virtiofsd is not recorded")?;
            topo.signal(&p, Signal::SIGSTOP).map_err(err)?;
            let t = topo.clone();
            Applied {
                target: format!("virtiofsd of {}", r.id),
                undo: Some(Box::new(move || {
                    t.signal(&p, Signal::SIGCONT).map(|()| "resumed".into()).map_err(err)
                })),
            }
        }
        Fault::QemuKill { side } => {
            let r = instance(topo.as_ref(), &ctx.vm, *side)?;
            let p = topo.process(&r.qemu_name()).ok_or("its QEMU is not recorded")?;
            topo.signal(&p, Signal::SIGKILL).map_err(err)?;
            Applied { target: format!("QEMU of {}", r.id), undo: None }
        }
        Fault::MigrateCancel {} => {
            ctx.cancel.notify_one();
            Applied { target: "the running hop".into(), undo: None }
        }
        Fault::ThirdPartyRename { host, replace, .. } => {
            let h = host_of(topo.as_ref(), ctx, host)?;
            let dir = topo
                .host(&h)
                .map_err(err)?
                .mount_point()
                .join(ctx.workload_dir.as_deref().ok_or("the workload has no directory")?);
            let mut moved = Vec::new();
            for e in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?.flatten() {
                let p = e.path();
                if !p.is_file() || p.extension().is_some_and(|x| x == "miglab-away" || x == "miglab-copy") {
                    continue;
                }
                if *replace {
                    // A new inode under the old name, with the same data.
                    let copy = p.with_extension("miglab-copy");
                    std::fs::copy(&p, &copy).map_err(|e| format!("copy {}: {e}", p.display()))?;
                    std::fs::rename(&copy, &p).map_err(|e| format!("replace {}: {e}", p.display()))?;
                } else {
                    let away = p.with_extension("miglab-away");
                    std::fs::rename(&p, &away).map_err(|e| format!("rename {}: {e}", p.display()))?;
                    moved.push((away, p));
                }
            }
            let n = moved.len();
            let target = format!(
                "{} through {h}'s client ({})",
                dir.display(),
                if *replace { "replaced" } else { "renamed away" }
            );
            let undo: Option<Undo> = (!*replace).then(|| {
                Box::new(move || {
                    for (away, back) in &moved {
                        std::fs::rename(away, back)
                            .map_err(|e| format!("rename back {}: {e}", back.display()))?;
                    }
                    Ok(format!("{n} files renamed back"))
                }) as Undo
            });
            Applied { target, undo }
        }
        Fault::MigrationLink { .. } => {
            return Err("the migration link is set by its hop, not injected".into())
        }
    })
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
    if f.fault.touches_ceph() {
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
