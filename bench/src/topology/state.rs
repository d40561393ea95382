//! The lab's state file: every process, mount, namespace, link and nft table the lab owns,
//! written down *before* (or, for processes, the instant after) it is created, and rewritten
//! atomically on each change. `lab down` needs nothing else, even after miglab was killed.

use super::ceph::ClusterSpec;
use super::layout::LabLayout;
use crate::process::{Ledger, ProcRecord};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use thiserror::Error;

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("could not read the lab state {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the lab state {path} is damaged ({source}); remove the lab by hand or fix the file")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("could not write the lab state {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Up,
    Failed,
    Stopping,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub phase: Phase,
    pub layout: LabLayout,
    pub cluster: ClusterSpec,
    /// The miglab that created the lab (for messages only).
    pub owner_pid: u32,
    pub processes: Vec<ProcRecord>,
    pub mounts: Vec<PathBuf>,
    pub netns: Vec<String>,
    pub links: Vec<String>,
    pub nft_tables: Vec<String>,
    /// Links currently cut off by the partition table.
    #[serde(default)]
    pub partitioned: Vec<String>,
    /// VM instances (QEMU + virtiofsd) running on the lab's hosts.
    #[serde(default)]
    pub vms: Vec<crate::vm::VmRecord>,
}

impl LabState {
    pub fn new(layout: LabLayout, cluster: ClusterSpec) -> Self {
        Self {
            version: STATE_VERSION,
            phase: Phase::Starting,
            layout,
            cluster,
            owner_pid: std::process::id(),
            processes: Vec::new(),
            mounts: Vec::new(),
            netns: Vec::new(),
            links: Vec::new(),
            nft_tables: Vec::new(),
            partitioned: Vec::new(),
            vms: Vec::new(),
        }
    }

    /// The newest record of the process called `name`.
    pub fn process(&self, name: &str) -> Option<&ProcRecord> {
        self.processes.iter().rev().find(|p| p.name == name)
    }
}

/// The state, shared by the lab and its supervisor, saved on every change.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    state: Mutex<LabState>,
}

impl StateFile {
    /// Creates the file for a new lab.
    pub fn create(path: PathBuf, state: LabState) -> Result<Self, StateError> {
        let f = Self { path, state: Mutex::new(state) };
        f.save()?;
        Ok(f)
    }

    pub fn load(path: &Path) -> Result<LabState, StateError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| StateError::Read { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|source| StateError::Parse { path: path.into(), source })
    }

    /// Takes over the state of an existing lab.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Ok(Self { path: path.into(), state: Mutex::new(Self::load(path)?) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LabState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> LabState {
        self.lock().clone()
    }

    /// Applies `f` and saves; the change is on disk before this returns.
    pub fn update(&self, f: impl FnOnce(&mut LabState)) -> Result<(), StateError> {
        let mut s = self.lock();
        f(&mut s);
        write_atomic(&self.path, &s)
    }

    fn save(&self) -> Result<(), StateError> {
        write_atomic(&self.path, &self.lock())
    }
}

fn write_atomic(path: &Path, state: &LabState) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.into(), source };
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl Ledger for StateFile {
    fn started(&self, rec: &ProcRecord) {
        // A ledger that cannot write must not kill the process it records; the error shows
        // up at the next update, which does propagate.
        let _ = self.update(|s| s.processes.push(rec.clone()));
    }

    fn ended(&self, rec: &ProcRecord) {
        let _ = self.update(|s| s.processes.retain(|p| p != rec));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::ceph::ObjectStore;

    #[test]
    fn every_change_is_on_disk_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let layout = LabLayout::new("t", dir.path(), None, 2).expect("layout");
        let path = dir.path().join("state.json");
        let f =
            StateFile::create(path.clone(), LabState::new(layout, ClusterSpec::new(ObjectStore::Memstore)))
                .expect("create");
        let rec = ProcRecord { name: "mon.a".into(), pid: 42, start_ticks: 7, log: "/x".into() };
        f.started(&rec);
        f.update(|s| s.netns.push("miglab-t-c1".into())).expect("update");
        let on_disk = StateFile::load(&path).expect("load");
        assert_eq!(on_disk.processes, vec![rec.clone()]);
        assert_eq!(on_disk.netns, vec!["miglab-t-c1"]);
        assert_eq!(on_disk.process("mon.a").map(|p| p.pid), Some(42));
        f.ended(&rec);
        assert!(StateFile::load(&path).expect("load").processes.is_empty());
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_damaged_file_says_so() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{ nope").expect("write");
        let e = StateFile::load(&path).expect_err("damaged");
        assert!(e.to_string().contains("damaged"), "{e}");
    }
}
