//! What each fault does to the topology, and its undo: the catalog's actions carried out.

use super::Context;
use crate::process::{ProcessSpec, Tier};
use crate::topology::{DaemonId, DaemonKind, Topology};
use crate::vm::{ledger, VmRecord};
use miglab_faults::{DaemonAction, Fault, HostRef, LinkShape, Pick, Resolved, StorageTarget};
use miglab_reports::Side;
use nix::sys::signal::Signal;
use std::sync::Arc;
use std::time::Duration;

/// An injected fault's undo.
pub(super) type Undo = Box<dyn FnOnce() -> Result<String, String> + Send>;

pub(super) struct Applied {
    pub(super) target: String,
    pub(super) undo: Option<Undo>,
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
/// Sets a messenger injection `key` on `target`; the undo sets it back to 0.
fn messenger_fault(
    topo: &Arc<dyn Topology>,
    ctx: &Context,
    target: &StorageTarget,
    key: &'static str,
    value: &str,
    what: &'static str,
) -> Result<Applied, String> {
    let on = messenger_set(topo, ctx, target, key, value)?;
    let (t, c, target) = (topo.clone(), ctx.clone(), target.clone());
    Ok(Applied {
        target: on,
        undo: Some(Box::new(move || {
            messenger_set(&t, &c, &target, key, "0").map(|on| format!("no more {what} on {on}"))
        })),
    })
}

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

/// Carries `planned` out (blocking); returns what it acted on and its undo.
pub(super) fn apply(topo: &Arc<dyn Topology>, ctx: &Context, planned: &Resolved) -> Result<Applied, String> {
    let fault = &planned.fault;
    // A daemon killed is restarted, one frozen is resumed.
    let daemon_fault = |id: DaemonId, action: DaemonAction| -> Result<Applied, String> {
        let (undo, said) = match action {
            DaemonAction::Freeze => (DaemonAction::Resume, "resumed"),
            _ => (DaemonAction::Restart, "restarted"),
        };
        topo.daemon(&id, action).map_err(err)?;
        let (t, target) = (topo.clone(), id.to_string());
        Ok(Applied {
            target: target.clone(),
            undo: Some(Box::new(move || {
                t.daemon(&id, undo).map(|()| format!("{target} {said}")).map_err(err)
            })),
        })
    };
    let active_mds = || topo.active_mds().map_err(err)?.ok_or_else(|| "no MDS is active".to_string());
    Ok(match fault {
        Fault::OsdKill { osd: p, .. } => daemon_fault(osd(*p)?, DaemonAction::Kill)?,
        Fault::OsdFreeze { osd: p, .. } => daemon_fault(osd(*p)?, DaemonAction::Freeze)?,
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
        Fault::MdsKill { .. } => daemon_fault(active_mds()?, DaemonAction::Kill)?,
        Fault::MdsFreeze { .. } => daemon_fault(active_mds()?, DaemonAction::Freeze)?,
        Fault::MdsFail {} => {
            let id = active_mds()?;
            topo.mds_fail(&id).map_err(err)?;
            Applied { target: id.to_string(), undo: None }
        }
        Fault::StorageDelay { target, max_ms, probability, .. } => {
            let max = format!("{:.3}", *max_ms as f64 / 1000.0);
            messenger_set(topo, ctx, target, "ms_inject_delay_max", &max)?;
            messenger_fault(
                topo,
                ctx,
                target,
                "ms_inject_delay_probability",
                &probability.to_string(),
                "delay",
            )?
        }
        Fault::SocketFailures { target, one_in, .. } => messenger_fault(
            topo,
            ctx,
            target,
            "ms_inject_socket_failures",
            &one_in.to_string(),
            "socket failures",
        )?,
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
                let h = topo.host(r.host()).map_err(err)?;
                let mount = h.mount_point();
                let _ = h.remove_all(&r.files.virtiofsd());
                let spec = ProcessSpec::new(
                    format!("{}.restarted", r.virtiofsd_name()),
                    h.virtiofsd(&r.spec.binaries.virtiofsd_path()),
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
            let hop = planned.trigger.anchor.hop().ok_or("migrate-cancel fires during a hop")?;
            ctx.cancel.ask(hop)?;
            Applied { target: format!("hop {hop}"), undo: None }
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
