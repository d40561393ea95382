//! Topologies: where the Ceph cluster, the client hosts and the VMs live.
//!
//! Everything above this module talks to the traits here, never to a concrete topology, so that
//! the local lab (namespaces on this machine) and an external one (an existing cluster and
//! SSH-reached hosts) run the same scenario:
//!
//! * [`Host`] — one client host: its address, its CephFS mount, commands inside it;
//! * [`Site`] — what VMs and migrations act through: processes started on a host under the
//!   site's one supervisor, a ledger of running instances (opaque records: the topology knows
//!   nothing of VMs), where an instance keeps its files, a host's migration address;
//! * [`Topology`] — a site whose Ceph cluster and links can be acted on (faults).

pub mod admin;
pub mod ceph;
pub mod external;
pub mod journal;
pub mod lab;
pub mod layout;
pub mod mountinfo;
pub mod net;
pub mod slots;
pub mod state;

use crate::process::{ProcRecord, ProcessError, ProcessSpec};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use thiserror::Error;

pub use miglab_faults::{DaemonAction, LinkShape};
pub use state::Instance;

/// What a topology can fail with, whichever it is.
#[derive(Debug, Error)]
pub enum TopologyError {
    #[error(transparent)]
    Lab(#[from] Box<lab::LabError>),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    External(#[from] Box<external::ExternalError>),
    #[error("{0}")]
    Journal(String),
}

impl From<external::ExternalError> for TopologyError {
    fn from(e: external::ExternalError) -> Self {
        TopologyError::External(Box::new(e))
    }
}

impl From<lab::LabError> for TopologyError {
    fn from(e: lab::LabError) -> Self {
        TopologyError::Lab(Box::new(e))
    }
}

/// A Ceph daemon, as Ceph names it: `mon.a`, `mgr.x`, `osd.1`, `mds.b`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DaemonId {
    pub kind: DaemonKind,
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonKind {
    Mon,
    Mgr,
    Osd,
    Mds,
}

impl DaemonKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DaemonKind::Mon => "mon",
            DaemonKind::Mgr => "mgr",
            DaemonKind::Osd => "osd",
            DaemonKind::Mds => "mds",
        }
    }

    /// The binary that runs this kind of daemon.
    pub fn program(self) -> String {
        format!("ceph-{}", self.as_str())
    }
}

impl DaemonId {
    pub fn new(kind: DaemonKind, id: impl Into<String>) -> Self {
        Self { kind, id: id.into() }
    }
}

impl fmt::Display for DaemonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.kind.as_str(), self.id)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a Ceph daemon name: use mon.<id>, mgr.<id>, osd.<n> or mds.<id>")]
pub struct BadDaemonId(String);

impl FromStr for DaemonId {
    type Err = BadDaemonId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadDaemonId(s.to_string());
        let (kind, id) = s.split_once('.').ok_or_else(bad)?;
        let kind = match kind {
            "mon" => DaemonKind::Mon,
            "mgr" => DaemonKind::Mgr,
            "osd" => DaemonKind::Osd,
            "mds" => DaemonKind::Mds,
            _ => return Err(bad()),
        };
        let valid = !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid || (kind == DaemonKind::Osd && id.parse::<u32>().is_err()) {
            return Err(bad());
        }
        Ok(DaemonId::new(kind, id))
    }
}

/// A client host: where one ceph-fuse mount, one virtiofsd and one QEMU run.
pub trait Host: Send + Sync {
    fn name(&self) -> &str;
    /// The host's address on the lab network (migration streams go to it).
    fn address(&self) -> std::net::Ipv4Addr;
    /// Where CephFS is mounted, as seen from the root mount namespace.
    fn mount_point(&self) -> PathBuf;
    /// A command that runs inside this host (its network namespace).
    fn command(&self, program: &str) -> Command;
    /// The network namespace file, for the supervisor.
    fn netns_path(&self) -> Option<PathBuf>;

    // Files on the host. The local lab's hosts share this machine's files, which is what the
    // defaults do; a host reached over SSH overrides every one of them.

    /// Whether the host's files are reached over a connection (not this machine's).
    fn remote(&self) -> bool {
        false
    }
    /// The QEMU this host runs, given the one chosen for the run (a remote host has its own).
    fn qemu(&self, chosen: &Path) -> PathBuf {
        chosen.to_path_buf()
    }
    /// The virtiofsd this host runs, given the one chosen for the run.
    fn virtiofsd(&self, chosen: &Path) -> PathBuf {
        chosen.to_path_buf()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    /// The last `lines` lines of a log on the host.
    fn tail(&self, path: &Path, lines: usize) -> String {
        crate::process::log_tail(path, lines)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    /// Writes a file (its directory created), replacing it.
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(path, data)
    }
    fn make_dir(&self, path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(path)
    }
    /// The open descriptors of process `pid` and its descendants on the host (virtiofsd
    /// serves from a child in its sandbox), told apart by their flags.
    fn open_files(&self, pid: i32) -> std::io::Result<miglab_model::OpenFiles> {
        let mut flags = Vec::new();
        let mut pids = vec![pid];
        while let Some(p) = pids.pop() {
            for e in std::fs::read_dir(format!("/proc/{p}/fdinfo"))? {
                // A descriptor closed meanwhile is simply not counted.
                if let Ok(info) = std::fs::read_to_string(e?.path()) {
                    flags.extend(info.lines().find_map(|l| l.strip_prefix("flags:")).map(str::to_owned));
                }
            }
            for t in std::fs::read_dir(format!("/proc/{p}/task"))?.flatten() {
                let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                pids.extend(children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
            }
        }
        Ok(miglab_model::OpenFiles::from_flags(flags.iter().map(String::as_str)))
    }
    /// Removes a file or a tree; one that is not there is not an error.
    fn remove_all(&self, path: &Path) -> std::io::Result<()> {
        let r = if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) };
        match r {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// This machine's own files, for what has no host (a local mirror of forwarded sockets).
#[derive(Debug)]
pub struct LocalFiles;

impl Host for LocalFiles {
    fn name(&self) -> &str {
        "this machine"
    }
    fn address(&self) -> std::net::Ipv4Addr {
        std::net::Ipv4Addr::LOCALHOST
    }
    fn mount_point(&self) -> PathBuf {
        PathBuf::new()
    }
    fn command(&self, program: &str) -> Command {
        Command::new(program)
    }
    fn netns_path(&self) -> Option<PathBuf> {
        None
    }
}

/// What VMs and migrations act through.
pub trait Site: Send + Sync + fmt::Debug {
    /// The hosts VMs run on, in the site's order (hops ping-pong through them).
    fn host_names(&self) -> Vec<String>;
    fn host(&self, name: &str) -> Result<&dyn Host, TopologyError>;
    /// Starts `spec` on `host`, supervised and recorded, so that `down` can always stop it.
    fn spawn(&self, host: &str, spec: ProcessSpec) -> Result<ProcRecord, TopologyError>;
    /// SIGTERM, grace, SIGKILL, reaped; the record is forgotten.
    fn stop(&self, rec: &ProcRecord) -> Result<(), TopologyError>;
    fn signal(&self, rec: &ProcRecord, signal: Signal) -> Result<(), TopologyError>;
    /// `Some(how)` once the process has exited.
    fn exit_status(&self, rec: &ProcRecord) -> Option<String>;
    /// The newest record of a process by name.
    fn process(&self, name: &str) -> Option<ProcRecord>;
    /// Records an instance (before its processes start), replacing one of the same id.
    fn record_instance(&self, id: &str, record: serde_json::Value) -> Result<(), TopologyError>;
    fn forget_instance(&self, id: &str) -> Result<(), TopologyError>;
    fn instances(&self) -> Vec<Instance>;
    /// Below it, each instance has a directory of its own (sockets, logs).
    fn instances_dir(&self) -> PathBuf;
    /// Where a migration stream to `host` is sent.
    fn migration_address(&self, host: &str) -> Result<IpAddr, TopologyError>;
    /// An address of miglab's own that every host reaches (a proxy in a stream's way listens
    /// there).
    fn proxy_address(&self) -> IpAddr;
    /// The site's own logs (Ceph's), copied into each result.
    fn log_dir(&self) -> PathBuf;

    /// Where the instance directories are as `host` sees them (this machine's for the lab).
    fn instances_dir_on(&self, _host: &str) -> PathBuf {
        self.instances_dir()
    }
    /// A unix socket on `host`, as this machine connects to it: the socket itself for the lab,
    /// a forwarded socket at `local` for a remote host.
    fn reach(&self, _host: &str, socket: &Path, _local: &Path) -> Result<PathBuf, TopologyError> {
        Ok(socket.to_path_buf())
    }
    /// Stops forwarding what [`Site::reach`] forwarded below `local_dir`.
    fn unreach(&self, _local_dir: &Path) {}
    /// The guest image directory as `host` sees it (a remote host gets a copy, cached by the
    /// image's hash).
    fn stage_image(&self, _host: &str, image: &Path) -> Result<PathBuf, TopologyError> {
        Ok(image.to_path_buf())
    }
    /// The accelerator guests run with here.
    fn accel(&self, wish: crate::accel::AccelWish) -> crate::accel::Accel {
        wish.resolve()
    }
    /// The cluster's processes this machine runs (the lab's Ceph daemons and clients), whose
    /// CPU time a hop records; none for a site whose cluster runs elsewhere.
    fn cluster_processes(&self) -> Vec<crate::process::ProcRecord> {
        Vec::new()
    }
    /// The hosts whose connection is gone (none for the lab).
    fn connections_lost(&self) -> Vec<String> {
        Vec::new()
    }
    /// Where the site is, for results: None for the local lab.
    fn record(&self) -> Option<miglab_model::TopologyRecord> {
        None
    }
}

/// The host after `from` in the site's order: hops ping-pong c1 → c2 → c1 with two hosts.
pub fn next_host(hosts: &[String], from: &str) -> String {
    let i = hosts.iter().position(|h| h == from).unwrap_or(0);
    hosts[(i + 1) % hosts.len()].clone()
}

/// A CephFS client's session: its global id (`client.<id>`) and its address with nonce, as
/// the blocklist names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSession {
    pub id: u64,
    pub addr: String,
    pub blocklisted: bool,
}

impl ClientSession {
    /// From a client's admin-socket `status`.
    pub fn from_status(json: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(json).ok()?;
        let addr = v["addr_str"].as_str().or_else(|| v["inst_str"].as_str()?.split_whitespace().nth(1))?;
        Some(Self {
            id: v["id"].as_u64()?,
            // The blocklist takes the address without its protocol prefix.
            addr: addr.trim_start_matches("v1:").trim_start_matches("v2:").to_string(),
            blocklisted: v["blocklisted"].as_bool().unwrap_or(false),
        })
    }
}

/// Ends a client's session at the active MDS at once (a killed client's caps would keep every
/// other client waiting on those files until `session_timeout`), and lifts the blocklist entry
/// the eviction adds: its address names nothing alive any more.
pub fn end_session(topo: &dyn Topology, id: u64, addr: &str) -> Result<(), TopologyError> {
    let mds =
        topo.active_mds()?.ok_or_else(|| TopologyError::Journal("no MDS is active to evict it".into()))?;
    topo.evict_client(&mds, id)?;
    topo.blocklist(addr, false)
}

/// A metadata request a CephFS client sent and has no answer to: its op, path and age.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingRequest {
    pub op: String,
    pub path: String,
    pub age_s: f64,
}

impl fmt::Display for PendingRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} for {:.0} s", self.op, self.path, self.age_s)
    }
}

/// The requests of a client's admin-socket `mds_requests`: an object whose every request is
/// under the same key (`"request"`), so it is read one object at a time, not as a map.
pub fn pending_requests(json: &str) -> Vec<PendingRequest> {
    let mut out = Vec::new();
    let mut rest = json;
    while let Some(i) = rest.find("\"request\"") {
        rest = &rest[i + 9..];
        let Some(open) = rest.find('{') else { break };
        let mut de = serde_json::Deserializer::from_str(&rest[open..]).into_iter::<serde_json::Value>();
        let Some(Ok(v)) = de.next() else { break };
        rest = &rest[open + de.byte_offset()..];
        out.push(PendingRequest {
            op: v["op"].as_str().unwrap_or("?").to_string(),
            path: v["path"].as_str().unwrap_or("").to_string(),
            age_s: v["age"].as_f64().unwrap_or(0.0),
        });
    }
    out
}

/// The operations of a client's admin-socket `objecter_requests` (its requests to OSDs): a
/// write dropped on the way (a blackholed messenger) waits there for good.
pub fn pending_osd_ops(json: &str) -> Vec<PendingRequest> {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    v["ops"]
        .as_array()
        .map(|ops| {
            ops.iter()
                .map(|o| PendingRequest {
                    op: o["osd_ops"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(", "))
                        .unwrap_or_else(|| "?".into()),
                    path: format!("{} at osd.{}", o["object_id"].as_str().unwrap_or("?"), o["osd"]),
                    age_s: o["age"].as_f64().unwrap_or(0.0),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A site whose cluster and network can be acted on: what fault injection needs.
pub trait Topology: Site {
    fn daemons(&self) -> Vec<DaemonId>;
    /// Stop / freeze / resume / kill / restart a Ceph daemon; returns once its effect is seen.
    fn daemon(&self, id: &DaemonId, action: DaemonAction) -> Result<(), TopologyError>;
    /// Changes a daemon's configuration at runtime (`ceph tell <daemon> config set`).
    fn config_set(&self, id: &DaemonId, key: &str, value: &str) -> Result<(), TopologyError>;
    /// A daemon's setting as it runs (`ceph tell <daemon> config get`): what an undo restores.
    fn config_get(&self, id: &DaemonId, key: &str) -> Result<String, TopologyError>;
    /// Shapes (rate, burst, latency) or restores a host's link.
    fn shape_link(&self, host: &str, shape: Option<LinkShape>) -> Result<(), TopologyError>;
    /// Cuts a host off the lab network (packets dropped, the link stays up) or heals it.
    fn cut_link(&self, host: &str, cut: bool) -> Result<(), TopologyError>;
    /// The active MDS, if one is.
    fn active_mds(&self) -> Result<Option<DaemonId>, TopologyError>;
    /// Marks an OSD out (data moves off it) or in again.
    fn osd_out(&self, osd: u32, out: bool) -> Result<(), TopologyError>;
    /// Marks an OSD down: it rejoins at once, and every connection to it starts afresh.
    fn osd_down(&self, osd: u32) -> Result<(), TopologyError>;
    /// `ceph mds fail`: the MDS gives up its rank (a standby takes it) and respawns.
    fn mds_fail(&self, mds: &DaemonId) -> Result<(), TopologyError>;
    /// Whether the cluster is healthy (every PG active+clean, an MDS active, every OSD up and
    /// in), and a one-line summary.
    fn health(&self) -> Result<(bool, String), TopologyError>;
    /// Changes a setting of `host`'s CephFS client at runtime.
    fn client_config_set(&self, host: &str, key: &str, value: &str) -> Result<(), TopologyError>;
    /// A setting of `host`'s CephFS client as it runs.
    fn client_config_get(&self, host: &str, key: &str) -> Result<String, TopologyError>;
    /// The fault journal: the undo of every change a fault made that is not undone yet.
    fn journal(&self) -> Vec<journal::Entry>;
    /// Changes the journal; on disk before this returns.
    fn journal_update(&self, f: &mut dyn FnMut(&mut Vec<journal::Entry>)) -> Result<(), TopologyError>;
    /// Makes sure `host`'s CephFS mount answers within `timeout` and has no metadata request
    /// stuck; if not (its client was evicted, or a request sent while it was fenced never
    /// completes), mounts it again and says why (`Some`).
    fn ensure_mount(&self, host: &str, timeout: std::time::Duration)
        -> Result<Option<String>, TopologyError>;
    /// `host`'s CephFS client as the cluster knows it: what eviction and the blocklist act on.
    fn client_session(&self, host: &str) -> Result<ClientSession, TopologyError>;
    /// The MDS `mds` evicts client `id` (which also blocklists its address: Ceph's default).
    fn evict_client(&self, mds: &DaemonId, id: u64) -> Result<(), TopologyError>;
    /// Puts a client's address on the OSD blocklist, or takes it off.
    fn blocklist(&self, addr: &str, add: bool) -> Result<(), TopologyError>;
    /// Kills `host`'s CephFS client (SIGKILL) and waits for it to be gone; its mount stays,
    /// dead, until [`Topology::ensure_mount`] mounts it again.
    fn kill_client(&self, host: &str) -> Result<(), TopologyError>;
    /// A setting of the CephFS file system (`ceph fs get`: its MDS map's field).
    fn fs_get(&self, key: &str) -> Result<String, TopologyError>;
    /// `ceph fs set <fs> <key> <value>`.
    fn fs_set(&self, key: &str, value: &str) -> Result<(), TopologyError>;
    /// Someone else's cluster: every fault is followed by a wait for health, not only those
    /// that act on Ceph directly.
    fn shared_cluster(&self) -> bool {
        false
    }
    /// Why a fault of `kind` cannot run here, if it cannot (checked before a run starts).
    fn refuses(&self, _fault: &miglab_faults::Fault) -> Option<String> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Read from a Ceph 16 client after a blocklist was lifted: a lookup sent while it was
    /// fenced, never answered.
    #[test]
    fn a_clients_session_and_its_pending_requests_are_read_from_its_admin_socket() {
        let status = r#"{"metadata": {"entity_id": "c2"}, "id": 4122, "inst_str": "client.4122 10.77.0.12:0/310790904",
            "addr_str": "10.77.0.12:0/310790904", "blocklisted": true}"#;
        let s = ClientSession::from_status(status).expect("read");
        assert_eq!((s.id, s.addr.as_str(), s.blocklisted), (4122, "10.77.0.12:0/310790904", true));
        let v2 = status.replace("\"addr_str\": \"10", "\"addr_str\": \"v1:10");
        assert_eq!(ClientSession::from_status(&v2).expect("read").addr, "10.77.0.12:0/310790904");
        assert_eq!(ClientSession::from_status("{}"), None);
        let two = r##"{
    "request": { "tid": 358, "op": "lookup", "path": "#0x1/miglab", "age": 612.25, "mds": 0 },
    "request": { "tid": 360, "op": "create", "path": "#0x10000000000/bh1", "age": 3.5 }
}"##;
        let p = pending_requests(two);
        assert_eq!(p.len(), 2, "{p:?}");
        assert_eq!(p[0].to_string(), "lookup #0x1/miglab for 612 s");
        assert_eq!((p[1].op.as_str(), p[1].age_s), ("create", 3.5));
        assert!(pending_requests("{}").is_empty());
        // Read from the same client after its messenger dropped what it sent to the OSDs.
        let osd = r#"{"ops": [{"tid": 1063, "osd": 0, "object_id": "10000000002.00000000", "age": 87.49,
            "osd_ops": ["write 1568768~4096 [1@-1] in=4096b"]}], "linger_ops": []}"#;
        let p = pending_osd_ops(osd);
        assert_eq!(p.len(), 1);
        assert_eq!(
            p[0].to_string(),
            "write 1568768~4096 [1@-1] in=4096b 10000000002.00000000 at osd.0 for 87 s"
        );
        assert!(pending_osd_ops(r#"{"ops": []}"#).is_empty() && pending_osd_ops("").is_empty());
    }

    #[test]
    fn hops_ping_pong_between_hosts() {
        let hosts = vec!["c1".to_string(), "c2".to_string()];
        assert_eq!(next_host(&hosts, "c1"), "c2");
        assert_eq!(next_host(&hosts, "c2"), "c1");
        let three = vec!["c1".to_string(), "c2".to_string(), "c3".to_string()];
        assert_eq!(next_host(&three, "c3"), "c1");
    }

    #[test]
    fn a_processes_open_files_include_its_childrens_and_o_path_ones() {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let me = std::process::id() as i32;
        let before = LocalFiles.open_files(me).expect("count");
        let held: Vec<std::fs::File> = (0..3)
            .map(|_| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_PATH)
                    .open(dir.path())
                    .expect("o_path")
            })
            .collect();
        let after = LocalFiles.open_files(me).expect("count");
        // Other tests' threads open and close files meanwhile: at least ours are counted.
        assert!(after.path_only >= before.path_only + 3, "{before:?} → {after:?}");
        drop(held);
        // A child's descriptors count as its parent's (virtiofsd's sandbox).
        let mut child = std::process::Command::new("sleep").arg("5").spawn().expect("sleep");
        let with_child = LocalFiles.open_files(me).expect("count");
        let alone = LocalFiles.open_files(child.id() as i32).expect("count");
        let _ = child.kill();
        let _ = child.wait();
        assert!(alone.total >= 1 && with_child.total >= alone.total, "{alone:?} within {with_child:?}");
    }
}
