//! `miglab lab status`: a lab's processes, mounts and Ceph's view of itself, read from the state
//! file and the system alone (it works while another command runs, and after a crash).

use super::super::ceph::Status;
use super::super::layout::LabLayout;
use super::super::mountinfo::is_fuse_mounted;
use super::super::state::{Phase, StateFile};
use super::LabError;
use crate::paths;
use crate::process;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What `lab status` shows.
#[derive(Debug, Serialize)]
pub struct LabStatus {
    pub name: String,
    pub dir: PathBuf,
    pub phase: Phase,
    pub processes: Vec<ProcessStatus>,
    pub mounts: Vec<MountStatus>,
    pub health: Option<String>,
    pub ceph: Option<serde_json::Value>,
    pub rss_kib: u64,
}

#[derive(Debug, Serialize)]
pub struct ProcessStatus {
    pub name: String,
    pub pid: i32,
    pub state: String,
    pub rss_kib: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct MountStatus {
    pub host: String,
    pub path: PathBuf,
    pub mounted: bool,
}

/// `running`, `frozen` (SIGSTOPped) or `dead`, from /proc.
pub fn process_state(p: &process::ProcRecord) -> &'static str {
    match process::proc_stat(p.pid).filter(|_| process::is_alive(p)).map(|s| s.state) {
        None => "dead",
        Some('T') => "frozen",
        Some(_) => "running",
    }
}

/// The status of lab `name`: its processes, mounts and, if the monitor answers, Ceph's view.
pub fn status(name: &str, root: &Path) -> Result<LabStatus, LabError> {
    let layout = LabLayout::new(name, root, None, 1)?;
    if !layout.state_file().exists() {
        return Err(LabError::NotFound { name: name.into(), dir: layout.dir });
    }
    let state = StateFile::load(&layout.state_file())?;
    let processes: Vec<ProcessStatus> = state
        .processes
        .iter()
        .map(|p| {
            let state = process_state(p);
            ProcessStatus {
                name: p.name.clone(),
                pid: p.pid,
                state: state.into(),
                rss_kib: (state != "dead").then(|| process::rss_kib(p.pid)).flatten(),
            }
        })
        .collect();
    let mounts = state
        .layout
        .clients
        .iter()
        .map(|c| MountStatus {
            host: c.name.clone(),
            path: c.mount.clone(),
            mounted: is_fuse_mounted(&c.mount),
        })
        .collect();
    // The `ceph` CLI here: status must work even when miglab's admin channel cannot.
    let ceph = process::run_tool(
        Command::new(paths::tool("ceph")).args([
            "-c",
            &state.layout.conf().display().to_string(),
            "--connect-timeout",
            "5",
            "status",
            "-f",
            "json",
        ]),
        Duration::from_secs(15),
    )
    .ok()
    .and_then(|o| serde_json::from_str::<serde_json::Value>(&o.stdout).ok());
    let health = ceph.as_ref().and_then(|v| Status::parse(&v.to_string()).ok()).map(|s| s.summary());
    let rss_kib = processes.iter().filter_map(|p| p.rss_kib).sum();
    Ok(LabStatus {
        name: name.into(),
        dir: layout.dir,
        phase: state.phase,
        processes,
        mounts,
        health,
        ceph,
        rss_kib,
    })
}
