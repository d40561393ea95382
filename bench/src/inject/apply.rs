//! What each fault does to the topology, and its undo: the catalog's actions carried out.

use super::Context;
use miglab_faults::{DaemonAction, Fault, HostRef, LinkShape, Pick, Resolved, StorageTarget};
use miglab_infra::topology::journal::{Journal, Undo};
use miglab_infra::topology::{DaemonId, DaemonKind, Topology, TopologyError};
use miglab_infra::vm::{ledger, VmRecord};
use miglab_model::Side;
use nix::sys::signal::Signal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

/// What an injection did. Its undo is in the journal, written step by step before each change.
pub(super) struct Applied {
    pub(super) target: String,
    /// The fault took effect, but a later part of it failed (a restart after a kill).
    pub(super) partly: Option<String>,
}

impl Applied {
    fn on(target: impl Into<String>) -> Self {
        Self { target: target.into(), partly: None }
    }
}

/// Why a fault could not be carried out (or only in part: then the journal holds what was done).
#[derive(Debug, Error)]
pub(super) enum ApplyError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    /// What the fault acts on is not there now: no instance of that side, no active MDS, a
    /// process the site has no record of, a hop that is not running.
    #[error("{0}")]
    NotThere(String),
    #[error("the schedule left an OSD unpicked")]
    Unpicked,
    #[error("could not {what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// Not a fault the injector carries out.
    #[error("{0}")]
    NotInjected(&'static str),
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ApplyError {
    let path = path.to_path_buf();
    move |source| ApplyError::Io { what, path, source }
}

/// The process `name` as the site recorded it.
fn recorded(topo: &dyn Topology, name: &str) -> Result<miglab_infra::process::ProcRecord, ApplyError> {
    topo.process(name).ok_or_else(|| ApplyError::NotThere(format!("{name} is not recorded")))
}

/// The instance of `side`: the guest's current one (source) or the one waiting for it.
fn instance(topo: &dyn Topology, vm: &str, side: Side) -> Result<VmRecord, ApplyError> {
    let all = ledger::of_vm(topo, vm);
    let found = match side {
        Side::Source => all.iter().filter(|r| !r.incoming).max_by_key(|r| r.id.generation),
        Side::Destination => all.iter().filter(|r| r.incoming).max_by_key(|r| r.id.generation),
    };
    found
        .cloned()
        .ok_or_else(|| ApplyError::NotThere(format!("no {} instance of {vm} runs now", side.as_str())))
}

fn host_of(topo: &dyn Topology, ctx: &Context, h: &HostRef) -> Result<String, ApplyError> {
    match h {
        HostRef::Named(n) => Ok(n.clone()),
        HostRef::Source => instance(topo, &ctx.target, Side::Source).map(|r| r.id.host.clone()),
        HostRef::Destination => match instance(topo, &ctx.target, Side::Destination) {
            Ok(r) => Ok(r.id.host.clone()),
            // Outside a hop: the host the next hop goes to.
            Err(_) => {
                let src = instance(topo, &ctx.target, Side::Source)?.id.host;
                Ok(miglab_infra::topology::next_host(&ctx.hosts, &src))
            }
        },
    }
}

fn osd(p: Pick) -> Result<DaemonId, ApplyError> {
    match p {
        Pick::Id(n) => Ok(DaemonId::new(DaemonKind::Osd, n.to_string())),
        Pick::Random => Err(ApplyError::Unpicked),
    }
}

/// Sets `key` to `value` on every messenger `target` names, each change journaled (with the
/// value it had) before it is made; returns what it acted on.
fn messenger_set(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    j: &Journal<'_>,
    target: &StorageTarget,
    key: &str,
    value: &str,
) -> Result<String, ApplyError> {
    let on_daemon = |id: DaemonId| -> Result<(), ApplyError> {
        let was = topo.config_get(&id, key)?;
        j.step(Undo::Config { daemon: id.clone(), key: key.into(), value: was })?;
        Ok(topo.config_set(&id, key, value)?)
    };
    match target {
        StorageTarget::Client(h) => {
            let host = host_of(topo.as_ref(), ctx, h)?;
            let was = topo.client_config_get(&host, key)?;
            j.step(Undo::ClientConfig { host: host.clone(), key: key.into(), value: was })?;
            topo.client_config_set(&host, key, value)?;
            Ok(format!("client.{host}"))
        }
        StorageTarget::Osd(p) => {
            let id = osd(*p)?;
            on_daemon(id.clone())?;
            Ok(id.to_string())
        }
        StorageTarget::AllOsds => {
            let all: Vec<DaemonId> =
                topo.daemons().into_iter().filter(|d| d.kind == DaemonKind::Osd).collect();
            for id in &all {
                on_daemon(id.clone())?;
            }
            Ok(format!("every OSD ({})", all.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")))
        }
    }
}

/// The messenger settings that turn a storage fault on (0 is off): a storage delay's chance per
/// message, and socket failures' one-in-N.
pub(crate) const DELAY_PROBABILITY: &str = "ms_inject_delay_probability";
pub(crate) const SOCKET_FAILURES: &str = "ms_inject_socket_failures";

/// The entity types whose messages `target`'s messenger delays (the lab's ceph.conf sets the
/// same; a real cluster has none set, and then `ms_inject_delay_*` delays nothing).
fn delay_types(target: &StorageTarget) -> &'static str {
    match target {
        StorageTarget::Client(_) => "osd mds",
        StorageTarget::Osd(_) | StorageTarget::AllOsds => "client osd",
    }
}

/// Carries `planned` out (blocking): before each change, its undo goes into the journal `j`,
/// so that however far the fault got, reverting the journal undoes exactly that much.
pub(super) fn apply(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    planned: &Resolved,
    j: &Journal<'_>,
) -> Result<Applied, ApplyError> {
    let fault = &planned.fault;
    // A daemon killed is restarted, one frozen is resumed.
    let daemon_fault = |id: DaemonId, action: DaemonAction| -> Result<Applied, ApplyError> {
        let undo = match action {
            DaemonAction::Freeze => DaemonAction::Resume,
            _ => DaemonAction::Restart,
        };
        j.step(Undo::Daemon { daemon: id.clone(), action: undo })?;
        topo.daemon(&id, action)?;
        Ok(Applied::on(id.to_string()))
    };
    let active_mds = || topo.active_mds()?.ok_or_else(|| ApplyError::NotThere("no MDS is active".into()));
    Ok(match fault {
        Fault::OsdKill { osd: p, .. } => daemon_fault(osd(*p)?, DaemonAction::Kill)?,
        Fault::OsdFreeze { osd: p, .. } => daemon_fault(osd(*p)?, DaemonAction::Freeze)?,
        Fault::OsdOut { osd: p, .. } => {
            let Pick::Id(n) = *p else { return Err(ApplyError::Unpicked) };
            j.step(Undo::OsdIn { osd: n })?;
            topo.osd_out(n, true)?;
            Applied::on(format!("osd.{n}"))
        }
        Fault::MdsKill { .. } => daemon_fault(active_mds()?, DaemonAction::Kill)?,
        Fault::MdsFreeze { .. } => daemon_fault(active_mds()?, DaemonAction::Freeze)?,
        Fault::MdsFail {} => {
            let id = active_mds()?;
            topo.mds_fail(&id)?;
            Applied::on(id.to_string())
        }
        Fault::StorageDelay { target, max_ms, probability, .. } => {
            let max = format!("{:.3}", *max_ms as f64 / 1000.0);
            messenger_set(topo, ctx, j, target, "ms_inject_delay_type", delay_types(target))?;
            messenger_set(topo, ctx, j, target, "ms_inject_delay_max", &max)?;
            let p = probability.to_string();
            Applied::on(messenger_set(topo, ctx, j, target, DELAY_PROBABILITY, &p)?)
        }
        Fault::SocketFailures { target, one_in, .. } => {
            Applied::on(messenger_set(topo, ctx, j, target, SOCKET_FAILURES, &one_in.to_string())?)
        }
        Fault::LinkRate { host, rate_kbit, .. } => {
            let h = host_of(topo.as_ref(), ctx, host)?;
            j.step(Undo::Unshape { host: h.clone() })?;
            topo.shape_link(&h, Some(LinkShape::rate(*rate_kbit)))?;
            Applied::on(format!("{h}'s link"))
        }
        Fault::Partition { host, .. } => {
            let h = host_of(topo.as_ref(), ctx, host)?;
            j.step(Undo::Heal { host: h.clone() })?;
            topo.cut_link(&h, true)?;
            Applied::on(format!("{h}'s link"))
        }
        Fault::VirtiofsdKill { side, restart } => virtiofsd_kill(topo, ctx, *side, *restart)?,
        Fault::VirtiofsdFreeze { side, .. } => {
            let r = instance(topo.as_ref(), &ctx.target, *side)?;
            let p = recorded(topo.as_ref(), &r.virtiofsd_name())?;
            j.step(Undo::Resume { process: p.clone() })?;
            topo.signal(&p, Signal::SIGSTOP)?;
            Applied::on(format!("virtiofsd of {}", r.id))
        }
        Fault::QemuKill { side } => {
            let r = instance(topo.as_ref(), &ctx.target, *side)?;
            let p = recorded(topo.as_ref(), &r.qemu_name())?;
            topo.signal(&p, Signal::SIGKILL)?;
            Applied::on(format!("QEMU of {}", r.id))
        }
        Fault::MigrateCancel {} => {
            let hop = planned
                .trigger
                .anchor
                .hop()
                .ok_or(ApplyError::NotInjected("migrate-cancel fires during a hop"))?;
            ctx.cancel.ask(hop, ctx.target_guest).map_err(ApplyError::NotThere)?;
            Applied::on(if ctx.guests.len() > 1 {
                format!("guest {}'s hop {hop}", ctx.target_guest)
            } else {
                format!("hop {hop}")
            })
        }
        Fault::ThirdPartyRename { host, replace, .. } => {
            let act = if *replace { ThirdParty::Replace } else { ThirdParty::RenameAway };
            third_party(topo, ctx, j, host, act)?
        }
        Fault::ThirdPartyDelete { host } => third_party(topo, ctx, j, host, ThirdParty::Delete)?,
        Fault::ClientEvict { host, .. } => fence(topo, ctx, j, host, true)?,
        Fault::ClientBlocklist { host, .. } => fence(topo, ctx, j, host, false)?,
        Fault::HostLoss { host, .. } => host_loss(topo, ctx, j, host)?,
        Fault::MessengerBlackhole { target, peers, .. } => {
            // A dropped request is never sent again: the mounts are checked last, once the
            // blackhole is lifted (journaled first, so undone last).
            // A daemon's dropped messages strand its clients' requests: every mount is checked.
            let hosts = match target {
                StorageTarget::Client(h) => vec![host_of(topo.as_ref(), ctx, h)?],
                _ => topo.host_names(),
            };
            for h in hosts {
                j.step(Undo::CheckMount { host: h })?;
            }
            // What an OSD dropped on its lossless links to its peers is never resent either:
            // once the setting is back, it is marked down to rejoin (before the mounts' check).
            let osds: Vec<u32> = match target {
                StorageTarget::Osd(p) => vec![match p {
                    Pick::Id(n) => *n,
                    Pick::Random => return Err(ApplyError::Unpicked),
                }],
                StorageTarget::AllOsds => topo
                    .daemons()
                    .iter()
                    .filter(|d| d.kind == DaemonKind::Osd)
                    .filter_map(|d| d.id.parse().ok())
                    .collect(),
                StorageTarget::Client(_) => vec![],
            };
            for n in osds {
                j.step(Undo::OsdDown { osd: n })?;
            }
            let mut on = String::new();
            for p in peers {
                on = messenger_set(topo, ctx, j, target, &format!("ms_blackhole_{p}"), "true")?;
            }
            Applied::on(format!("{on} (dropping {})", peers.join(", ")))
        }
        Fault::MigrationLink { .. } => {
            return Err(ApplyError::NotInjected("the migration link is set by its hop, not injected"))
        }
    })
}

/// SIGKILL to the virtiofsd of `side`, and a new one on its socket if asked for. The kill
/// happened whatever the restart does: a failed restart is a fault injected in part, not one
/// never injected.
fn virtiofsd_kill(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    side: Side,
    restart: bool,
) -> Result<Applied, ApplyError> {
    let r = instance(topo.as_ref(), &ctx.target, side)?;
    let p = recorded(topo.as_ref(), &r.virtiofsd_name())?;
    topo.signal(&p, Signal::SIGKILL)?;
    let mut applied = Applied::on(format!("virtiofsd of {}", r.id));
    if restart {
        match restart_virtiofsd(topo, &r) {
            Ok(()) => applied.target.push_str(" (restarted; QEMU does not reconnect)"),
            Err(e) => applied.partly = Some(format!("killed, but the restart failed: {e}")),
        }
    }
    Ok(applied)
}

/// Fences `host`'s CephFS client: evicted by the active MDS (which blocklists its address
/// too) or its address blocklisted at the OSDs. Either way the undo lifts the blocklist entry,
/// so it is journaled first, with the address read before the change.
fn fence(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    j: &Journal<'_>,
    host: &HostRef,
    evict: bool,
) -> Result<Applied, ApplyError> {
    let h = host_of(topo.as_ref(), ctx, host)?;
    let s = topo.client_session(&h)?;
    j.step(Undo::Unfence { host: h.clone(), addr: s.addr.clone() })?;
    let how = if evict {
        let mds = topo.active_mds()?.ok_or_else(|| ApplyError::NotThere("no MDS is active".into()))?;
        topo.evict_client(&mds, s.id)?;
        format!("evicted by {mds}")
    } else {
        topo.blocklist(&s.addr, true)?;
        "blocklisted".to_string()
    };
    Ok(Applied::on(format!("client.{h} (client.{} at {}), {how}", s.id, s.addr)))
}

/// `host` dies whole: its link cut first (nothing of it says goodbye to the cluster), then
/// every guest process on it and its CephFS client killed. The session that client held is
/// left to the MDS until the undo, which ends it as an operator would, heals the link and
/// mounts CephFS again.
fn host_loss(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    j: &Journal<'_>,
    host: &HostRef,
) -> Result<Applied, ApplyError> {
    let h = host_of(topo.as_ref(), ctx, host)?;
    let s = topo.client_session(&h)?;
    j.step(Undo::Heal { host: h.clone() })?;
    topo.cut_link(&h, true)?;
    j.step(Undo::ForgetClient { host: h.clone(), id: s.id, addr: s.addr.clone() })?;
    let mut killed = Vec::new();
    for r in ledger::all(topo.as_ref()).iter().filter(|r| r.host() == h) {
        for name in [r.qemu_name(), r.virtiofsd_name()] {
            if let Some(p) = topo.process(&name) {
                topo.signal(&p, Signal::SIGKILL)?;
                killed.push(name);
            }
        }
    }
    topo.kill_client(&h)?;
    killed.push(format!("its CephFS client (client.{})", s.id));
    Ok(Applied::on(format!("{h}: link cut; killed {}", killed.join(", "))))
}

/// What a third party does to the workload's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ThirdParty {
    /// Renamed away (journaled, renamed back on undo).
    RenameAway,
    /// Each replaced by a copy: a new inode under the old name (nothing to undo).
    Replace,
    /// Each deleted (the run's own files: nothing to undo).
    Delete,
}

/// A third party acts on the workload's files through `host`'s client.
fn third_party(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    j: &Journal<'_>,
    host: &HostRef,
    act: ThirdParty,
) -> Result<Applied, ApplyError> {
    let h = host_of(topo.as_ref(), ctx, host)?;
    let dir = topo.host(&h)?.mount_point().join(
        ctx.workload_dir.as_deref().ok_or(ApplyError::NotThere("the workload has no directory".into()))?,
    );
    let mut n = 0;
    for p in files_in(&dir, MOUNT_DEADLINE)? {
        if p.extension().is_some_and(|x| x == "miglab-away" || x == "miglab-copy") {
            continue;
        }
        match act {
            ThirdParty::Replace => {
                let copy = beside(&p, "miglab-copy")?;
                std::fs::copy(&p, &copy).map_err(io("copy", &p))?;
                std::fs::rename(&copy, &p).map_err(io("replace", &p))?;
            }
            ThirdParty::RenameAway => {
                let away = beside(&p, "miglab-away")?;
                j.step(Undo::RenameBack { away: away.clone(), back: p.clone() })?;
                std::fs::rename(&p, &away).map_err(io("rename", &p))?;
            }
            ThirdParty::Delete => std::fs::remove_file(&p).map_err(io("delete", &p))?,
        }
        n += 1;
    }
    Ok(Applied::on(format!(
        "{n} file{} in {} through {h}'s client ({})",
        if n == 1 { "" } else { "s" },
        dir.display(),
        match act {
            ThirdParty::Replace => "replaced",
            ThirdParty::RenameAway => "renamed away",
            ThirdParty::Delete => "deleted",
        }
    )))
}

/// How long a host's CephFS mount may take to list the workload's directory.
const MOUNT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The regular files in `dir`, listed within `deadline`: a mount that does not answer (its
/// client partitioned or evicted) is an error of the fault, not a hung injector. The listing
/// thread is left to the kernel if it never returns.
fn files_in(dir: &Path, deadline: std::time::Duration) -> Result<Vec<PathBuf>, ApplyError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.to_path_buf();
    std::thread::Builder::new()
        .name("third-party-ls".into())
        .spawn(move || {
            let listed = std::fs::read_dir(&d)
                .map(|it| it.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect::<Vec<_>>());
            let _ = tx.send(listed);
        })
        .map_err(io("list", dir))?;
    match rx.recv_timeout(deadline) {
        Ok(listed) => listed.map_err(io("read", dir)),
        Err(_) => Err(ApplyError::NotThere(format!(
            "{} did not answer within {} s (is its client cut off?)",
            dir.display(),
            deadline.as_secs()
        ))),
    }
}

/// `p` with `.<suffix>` added to its whole name (`w.0.1` → `w.0.1.miglab-away`: replacing the
/// extension mapped `w.0.0` and `w.0.1` to one name, and the second rename destroyed the first
/// file). A name already taken is refused rather than overwritten.
fn beside(p: &Path, suffix: &str) -> Result<PathBuf, ApplyError> {
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{suffix}"));
    let to = p.with_file_name(name);
    if to.symlink_metadata().is_ok() {
        return Err(ApplyError::NotThere(format!(
            "{} exists already: the third party would overwrite it",
            to.display()
        )));
    }
    Ok(to)
}

/// A new virtiofsd on the killed one's socket (QEMU does not reconnect to it).
fn restart_virtiofsd(topo: &Arc<dyn Topology>, r: &VmRecord) -> Result<(), ApplyError> {
    let h = topo.host(r.host())?;
    let socket = r.files.virtiofsd();
    h.remove_all(&socket).map_err(io("remove the socket", &socket))?;
    let spec = miglab_infra::vm::virtiofsd_spec(h, r, r.restarted_virtiofsd_name());
    topo.spawn(r.host(), spec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two files of one job, `w.0.0` and `w.0.1`, renamed away: before, both went to
    /// `w.0.miglab-away` and the second destroyed the first.
    #[test]
    fn files_renamed_away_keep_their_whole_name_and_never_overwrite() {
        let dir = tempfile::tempdir().expect("tmp");
        let (a, b) = (dir.path().join("w.0.0"), dir.path().join("w.0.1"));
        let (away_a, away_b) = (beside(&a, "miglab-away").expect("a"), beside(&b, "miglab-away").expect("b"));
        assert_ne!(away_a, away_b);
        assert_eq!(away_b.file_name().and_then(|n| n.to_str()), Some("w.0.1.miglab-away"));
        std::fs::write(&away_a, "x").expect("write");
        assert!(matches!(beside(&a, "miglab-away"), Err(ApplyError::NotThere(_))), "taken: refused");
    }

    #[test]
    fn the_workload_directory_is_listed_within_a_deadline() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("f"), "x").expect("write");
        std::fs::create_dir(dir.path().join("sub")).expect("dir");
        let files = files_in(dir.path(), std::time::Duration::from_secs(5)).expect("listed");
        assert_eq!(files, vec![dir.path().join("f")], "files only");
        assert!(matches!(
            files_in(&dir.path().join("none"), std::time::Duration::from_secs(5)),
            Err(ApplyError::Io { .. })
        ));
    }
}
