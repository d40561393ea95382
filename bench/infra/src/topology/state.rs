//! The lab's state file: every process, mount, namespace, link and nft table the lab owns,
//! written down *before* (or, for processes, the instant after) it is created, and rewritten
//! atomically on each change. `lab down` needs nothing else, even after miglab was killed.
//!
//! Several miglab commands may work on one lab at once (`lab daemon osd.1 restart` during a
//! `run`): every change takes an exclusive lock on `state.lock`, re-reads the file, applies
//! itself and writes (fsynced, then renamed, then the directory fsynced), so no command loses
//! another's records and a crash leaves the old file or the new one. The same [`Locked`] file
//! keeps an external topology's state and fault journal.

use super::ceph::ClusterSpec;
use super::layout::LabLayout;
use crate::process::{Ledger, LedgerError, ProcRecord};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use thiserror::Error;

pub const STATE_VERSION: u32 = 2;

/// How long a change waits for another command's change to finish.
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum StateError {
    #[error("could not read the state file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("the state file {path} is damaged ({source}); what it records (processes, fault undos) must be cleaned by hand: fix the file, or remove it once that is done")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("could not write the state file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("could not lock the state file {path} within {timeout:.0?}: another miglab holds it ({source})")]
    Lock { path: PathBuf, timeout: Duration, source: std::io::Error },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Starting,
    Up,
    Failed,
    Stopping,
}

/// Something a user of the lab (a VM instance) records, opaque to the lab.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    pub record: serde_json::Value,
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
    /// Instances (VMs) running on the lab's hosts.
    #[serde(default)]
    pub instances: Vec<Instance>,
    /// What faults changed and has not been undone yet, with each change's undo.
    #[serde(default)]
    pub journal: Vec<super::journal::Entry>,
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
            instances: Vec::new(),
            journal: Vec::new(),
        }
    }

    /// The newest record of the process called `name`.
    pub fn process(&self, name: &str) -> Option<&ProcRecord> {
        self.processes.iter().rev().find(|p| p.name == name)
    }
}

/// A state shared by every command working on it, saved on every change under a lock.
#[derive(Debug)]
pub struct Locked<S> {
    path: PathBuf,
    /// The last state read or written, for when the file is gone (the lab was torn down).
    last: Mutex<S>,
}

/// The lab's state file.
pub type StateFile = Locked<LabState>;

/// An exclusive `flock` on the lock file beside the state, released when dropped.
pub(crate) type Flocked = nix::fcntl::Flock<File>;

/// An exclusive `flock` on `lock` (created if missing), waited for up to `timeout`: whoever
/// holds it only reads or writes a small file.
pub(crate) fn flock_within(lock: &Path, timeout: Duration) -> std::io::Result<Flocked> {
    use nix::fcntl::{Flock, FlockArg};
    let mut f = File::options().create(true).truncate(false).write(true).open(lock)?;
    let start = Instant::now();
    loop {
        match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(l),
            Err((back, nix::Error::EWOULDBLOCK)) if start.elapsed() < timeout => {
                f = back;
                std::thread::sleep(Duration::from_millis(2))
            }
            Err((_, e)) => return Err(e.into()),
        }
    }
}

impl<S: Serialize + DeserializeOwned + Clone> Locked<S> {
    fn lock_path(path: &Path) -> PathBuf {
        path.with_extension("lock")
    }

    fn lock(path: &Path) -> Result<Flocked, StateError> {
        let lock = Self::lock_path(path);
        flock_within(&lock, LOCK_TIMEOUT).map_err(|source| StateError::Lock {
            path: lock,
            timeout: LOCK_TIMEOUT,
            source,
        })
    }

    /// Creates the file (a new lab's).
    pub fn create(path: PathBuf, state: S) -> Result<Self, StateError> {
        let _l = Self::lock(&path)?;
        write_atomic(&path, &state)?;
        Ok(Self { path, last: Mutex::new(state) })
    }

    pub fn load(path: &Path) -> Result<S, StateError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| StateError::Read { path: path.into(), source })?;
        serde_json::from_str(&text).map_err(|source| StateError::Parse { path: path.into(), source })
    }

    /// Takes over an existing state (a lab's).
    pub fn open(path: &Path) -> Result<Self, StateError> {
        Ok(Self { path: path.into(), last: Mutex::new(Self::load(path)?) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn last(&self) -> std::sync::MutexGuard<'_, S> {
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state as it is on disk now (as it last was, if the file is gone).
    pub fn snapshot(&self) -> S {
        match Self::load(&self.path) {
            Ok(s) => {
                *self.last() = s.clone();
                s
            }
            Err(_) => self.last().clone(),
        }
    }

    /// Locks, re-reads, applies `f` and saves; the change is on disk before this returns.
    pub fn update<R>(&self, f: impl FnOnce(&mut S) -> R) -> Result<R, StateError> {
        let mut last = self.last();
        let _l = Self::lock(&self.path)?;
        let mut s = match Self::load(&self.path) {
            Ok(s) => s,
            // Gone (a concurrent teardown): keep what we knew, so the change is not lost.
            Err(StateError::Read { .. }) => last.clone(),
            Err(e) => return Err(e),
        };
        let r = f(&mut s);
        write_atomic(&self.path, &s)?;
        *last = s;
        Ok(r)
    }
}

fn write_atomic<S: Serialize>(path: &Path, state: &S) -> Result<(), StateError> {
    let err = |source| StateError::Write { path: path.into(), source };
    let text = serde_json::to_vec_pretty(state).map_err(|e| err(std::io::Error::other(e)))?;
    miglab_model::result::write_atomic(path, &text).map_err(err)
}

impl Ledger for StateFile {
    fn started(&self, rec: &ProcRecord) -> Result<(), LedgerError> {
        self.update(|s| s.processes.push(rec.clone())).map_err(|e| LedgerError(e.to_string()))
    }

    fn ended(&self, rec: &ProcRecord) -> Result<(), LedgerError> {
        self.update(|s| s.processes.retain(|p| p != rec)).map_err(|e| LedgerError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::Tier;
    use crate::topology::ceph::ObjectStore;

    fn new_file(dir: &Path) -> (PathBuf, StateFile) {
        let layout = LabLayout::new("t", dir, None, 2).expect("layout");
        let path = dir.join("state.json");
        let f =
            StateFile::create(path.clone(), LabState::new(layout, ClusterSpec::new(ObjectStore::Memstore)))
                .expect("create");
        (path, f)
    }

    fn rec(name: &str, pid: i32) -> ProcRecord {
        ProcRecord { name: name.into(), pid, start_ticks: 7, log: "/x".into(), tier: Tier::Daemon }
    }

    #[test]
    fn every_change_is_on_disk_at_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, f) = new_file(dir.path());
        f.started(&rec("mon.a", 42)).expect("recorded");
        f.update(|s| s.netns.push("miglab-t-c1".into())).expect("update");
        let on_disk = StateFile::load(&path).expect("load");
        assert_eq!(on_disk.processes, vec![rec("mon.a", 42)]);
        assert_eq!(on_disk.netns, vec!["miglab-t-c1"]);
        assert_eq!(on_disk.process("mon.a").map(|p| p.pid), Some(42));
        f.ended(&rec("mon.a", 42)).expect("recorded");
        assert!(StateFile::load(&path).expect("load").processes.is_empty());
        assert!(!path.with_extension("json.tmp").exists());
    }

    /// Two commands (two `StateFile`s on one file, as two processes have) add records at the
    /// same time: none is lost.
    #[test]
    fn two_writers_do_not_lose_each_others_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, a) = new_file(dir.path());
        let b = StateFile::open(&path).expect("open");
        std::thread::scope(|s| {
            s.spawn(|| (0..50).for_each(|i| a.started(&rec(&format!("a{i}"), i)).expect("a")));
            s.spawn(|| (0..50).for_each(|i| b.started(&rec(&format!("b{i}"), 100 + i)).expect("b")));
        });
        let on_disk = StateFile::load(&path).expect("load");
        assert_eq!(on_disk.processes.len(), 100, "every record of both writers is there");
        // And each sees the other's.
        assert_eq!(a.snapshot().processes.len(), 100);
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
