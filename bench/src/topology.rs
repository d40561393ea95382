//! Topologies: where the Ceph cluster, the client hosts and (later) the VMs live.
//!
//! Scenarios talk to a [`Topology`], never to a concrete one, so that the local lab (namespaces
//! on this machine) and an external one (an existing cluster and SSH-reached hosts) can run the
//! same scenario.

pub mod admin;
pub mod ceph;
pub mod lab;
pub mod layout;
pub mod net;
pub mod state;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

pub use miglab_faults::{DaemonAction, LinkShape};

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
}

/// What every topology offers to scenarios and fault injectors.
pub trait Topology {
    type Error: std::error::Error + Send + Sync + 'static;

    fn hosts(&self) -> Vec<&dyn Host>;
    fn host(&self, name: &str) -> Result<&dyn Host, Self::Error>;
    fn daemons(&self) -> Vec<DaemonId>;
    /// Stop / freeze / resume / kill / restart a Ceph daemon.
    fn daemon(&self, id: &DaemonId, action: DaemonAction) -> Result<(), Self::Error>;
    /// Changes a daemon's configuration at runtime (`ceph tell <daemon> config set`).
    fn config_set(&self, id: &DaemonId, key: &str, value: &str) -> Result<(), Self::Error>;
    /// Shapes (rate, burst, latency) or restores a host's link.
    fn shape_link(&self, host: &str, shape: Option<LinkShape>) -> Result<(), Self::Error>;
    /// Cuts a host off the lab network (packets dropped, the link stays up) or heals it.
    fn cut_link(&self, host: &str, cut: bool) -> Result<(), Self::Error>;
}
