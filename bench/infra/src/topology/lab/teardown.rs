//! Tearing a lab down from its state file alone (it works after miglab was killed), and the
//! check that nothing of it is left: processes, mounts, namespaces, links, nft tables.

use super::super::layout::LabLayout;
use super::super::mountinfo::{is_fuse_mounted, mounts_under};
use super::super::net;
use super::super::slots;
use super::super::state::{LabState, Phase, StateFile};
use super::{io, LabError};
use crate::process::{self, ProcRecord, StopPolicy, Supervisor, Tier};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Everything of lab `state` that still exists.
pub fn leftovers(state: &LabState) -> Vec<String> {
    let mut v = Vec::new();
    for p in &state.processes {
        if process::is_alive(p) || process::group_exists(p.pid) {
            v.push(format!("process {} (pid {})", p.name, p.pid));
        }
    }
    // Anything else that still uses this lab's ceph.conf was started by it, recorded or not.
    let conf = state.layout.conf().display().to_string();
    for pid in pids_with_arg(&conf) {
        if !state.processes.iter().any(|p| p.pid == pid) {
            v.push(format!("unrecorded process {pid} using {conf}"));
        }
    }
    for (m, _) in mounts_under(&state.layout.dir) {
        v.push(format!("mount {}", m.display()));
    }
    for ns in &state.netns {
        if net::netns_exists(ns) {
            v.push(format!("network namespace {ns}"));
        }
    }
    for l in &state.links {
        if net::link_exists(l) {
            v.push(format!("link {l}"));
        }
    }
    for t in &state.nft_tables {
        if net::nft_table_exists(t) {
            v.push(format!("nft table bridge {t}"));
        }
    }
    v
}

fn pids_with_arg(arg: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
                .unwrap_or(false)
        })
        .filter(|&pid| matches!(process::proc_stat(pid), Some(s) if s.state != 'Z'))
        .collect()
}

/// How long a Ceph daemon of a lab being torn down gets between SIGTERM and SIGKILL.
const CEPH_GRACE: std::time::Duration = std::time::Duration::from_millis(1200);

/// Tears down lab `name` from its state file: partitions healed, mounts unmounted, processes
/// stopped (newest first), links and namespaces deleted; then checks that nothing is left.
/// The logs survive in `<root>/<name>.logs`; the rest of the lab directory is removed.
pub fn down(name: &str, root: &Path, stop: StopPolicy) -> Result<(), LabError> {
    let layout = LabLayout::new(name, root, None, 1)?;
    if !layout.state_file().exists() {
        if layout.dir.exists() {
            // A lab killed before it wrote its state had created nothing but the directory.
            std::fs::remove_dir_all(&layout.dir).map_err(io(format!("remove {}", layout.dir.display())))?;
            slots::release(&slots::claims_dir(), &layout.dir);
            return Ok(());
        }
        return Err(LabError::NotFound { name: name.into(), dir: layout.dir });
    }
    // Guests a run started over the lab's SSH topology are not the lab's processes: they go
    // first, through the hosts' sshd, while it still runs.
    let topology = super::sshd::topology_file(&layout.dir);
    if topology.exists() && super::super::external::site::state_dir(root, &topology).exists() {
        if let Err(e) = super::super::external::site::down(&topology, root) {
            eprintln!("miglab: cleaning the hosts of {}: {e}", topology.display());
        }
    }
    let file = Arc::new(StateFile::open(&layout.state_file())?);
    file.update(|s| s.phase = Phase::Stopping)?;
    let state = file.snapshot();
    let sup = Supervisor::new(stop, Some(file.clone() as Arc<dyn process::Ledger>));
    // The cluster is thrown away whole: nothing a Ceph daemon could still save is needed. An
    // OSD ends in ~50 ms on SIGTERM, a standby MDS in ~1 s, but the active MDS waits out any
    // grace (6.8 s measured), which made `lab down` take 5.4 s; it is killed after this.
    let ceph = Supervisor::new(
        StopPolicy { grace: stop.grace.min(CEPH_GRACE), ..stop },
        Some(file.clone() as Arc<dyn process::Ledger>),
    );
    let mut problems = Vec::new();

    for t in &state.nft_tables {
        if let Err(e) = net::delete_nft_table(t) {
            problems.push(e.to_string());
        }
    }
    let stop_tier_of = |tier: Tier, problems: &mut Vec<String>| {
        let batch: Vec<&ProcRecord> = state.processes.iter().filter(|p| p.tier == tier).collect();
        // Processes of one tier stop in parallel: each may wait seconds for its peers.
        let errors: Vec<String> = std::thread::scope(|s| {
            let sup = if matches!(tier, Tier::Daemon | Tier::Monitor) { &ceph } else { &sup };
            let handles: Vec<_> = batch.iter().map(|p| s.spawn(|| sup.stop(p))).collect();
            handles
                .into_iter()
                .filter_map(|h| match h.join() {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("a stop thread panicked".to_string()),
                })
                .collect()
        });
        problems.extend(errors);
    };
    for tier in Tier::ORDER {
        if tier == Tier::Client {
            // Unmount before stopping ceph-fuse, so the kernel is not left with a dead FUSE
            // connection (guests, which hold files open on the mounts, are gone by now).
            for m in state.mounts.iter().rev() {
                if is_fuse_mounted(m) {
                    unmount(m);
                }
            }
        }
        stop_tier_of(tier, &mut problems);
    }
    // Unrecorded processes of this lab (should not exist): stop them the same way.
    let conf = state.layout.conf().display().to_string();
    for pid in pids_with_arg(&conf) {
        let rec = ProcRecord {
            name: format!("unrecorded pid {pid}"),
            pid,
            start_ticks: process::proc_stat(pid).map(|s| s.start_ticks).unwrap_or(0),
            log: PathBuf::new(),
            tier: Tier::Client,
        };
        if let Err(e) = sup.stop(&rec) {
            problems.push(e.to_string());
        }
    }
    for (m, _) in mounts_under(&state.layout.dir) {
        unmount(&m);
    }
    for l in state.links.iter().rev() {
        if let Err(e) = net::delete_link(l) {
            problems.push(e.to_string());
        }
    }
    for ns in &state.netns {
        if let Err(e) = net::delete_netns(ns) {
            problems.push(e.to_string());
        }
    }
    let left = leftovers(&file.snapshot());
    if !left.is_empty() || !problems.is_empty() {
        problems.extend(left);
        return Err(LabError::Leftovers(problems));
    }
    let logs = root.join(format!("{name}.logs"));
    let _ = std::fs::remove_dir_all(&logs);
    let _ = std::fs::rename(state.layout.log_dir(), &logs);
    std::fs::remove_dir_all(&state.layout.dir)
        .map_err(io(format!("remove {}", state.layout.dir.display())))?;
    // Only with nothing of the lab left is its slot free for another.
    slots::release(&slots::claims_dir(), &state.layout.dir);
    Ok(())
}

pub(super) fn unmount(path: &Path) {
    use nix::mount::{umount2, MntFlags};
    if umount2(path, MntFlags::empty()).is_err() {
        // Busy (a process has a file open): detach now, the kernel finishes when it can.
        let _ = umount2(path, MntFlags::MNT_DETACH);
    }
}
