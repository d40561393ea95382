//! An external topology: client hosts reached over SSH and a Ceph cluster miglab did not build
//! (`topology.toml`). This is the file, checked completely with `file:line` errors, and the
//! checks `miglab doctor --topology` runs on every host. `miglab lab up --ssh` writes one for
//! the local lab, whose hosts it then reaches only through SSH.

pub mod remote;
pub mod site;
pub mod ssh;

use crate::diagnostics::{line_col, line_of, Problem, Problems};
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TopologyFileError {
    #[error("could not read the topology {}: {source}", .path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{0}")]
    Invalid(Problems),
}

/// What running on an external topology can fail with.
#[derive(Debug, Error)]
pub enum ExternalError {
    #[error(transparent)]
    File(#[from] TopologyFileError),
    #[error(transparent)]
    Ssh(#[from] ssh::SshError),
    #[error("{host}: {what}: {why}")]
    Remote { host: String, what: String, why: String },
    #[error("{host}: the SSH connection is lost ({why}); the run cannot reach the host. `miglab lab down --topology FILE` cleans every host once it is reachable")]
    ConnectionLost { host: String, why: String },
    #[error("{host} has no {what}: {fix}")]
    HostLacks { host: String, what: String, fix: String },
    #[error("no host '{0}' in the topology")]
    NoHost(String),
    #[error("the topology {} still has processes from an earlier run ({}): `miglab lab down --topology {}` ends them", .file.display(), .what.join(", "), .file.display())]
    Busy { file: PathBuf, what: Vec<String> },
    #[error("the topology {} is in use by miglab pid {pid}: wait for it, or stop it first", .file.display())]
    InUse { file: PathBuf, pid: i32 },
    #[error(transparent)]
    State(#[from] crate::topology::state::StateError),
    #[error("refused on an external topology: {what}: {why}")]
    Refused { what: String, why: String },
    #[error("not built yet: {0}")]
    Unsupported(String),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
}

/// `[[host]]`: one client host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The name scenarios and results use (`c1`).
    pub name: String,
    /// An SSH destination: `user@host`, or a `Host` of the SSH config (agent, jump hosts and
    /// everything else in it apply).
    pub ssh: String,
    /// Where migration streams to this host go (default: the address SSH reaches).
    #[serde(default)]
    pub address: Option<String>,
    /// Where CephFS is mounted on this host (over `[ceph] mount`).
    #[serde(default)]
    pub mount: Option<PathBuf>,
    /// This host's QEMU and virtiofsd (default: found on its PATH).
    #[serde(default)]
    pub qemu: Option<PathBuf>,
    #[serde(default)]
    pub virtiofsd: Option<PathBuf>,
    /// Where miglab keeps a run's files on this host.
    #[serde(default = "HostSpec::default_work_dir")]
    pub work_dir: PathBuf,
}

impl HostSpec {
    fn default_work_dir() -> PathBuf {
        PathBuf::from("/var/tmp/miglab")
    }
}

/// `[ssh]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// An SSH config file (`ssh -F`), relative to the topology file; default: the user's.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Seconds to wait for a host to answer.
    #[serde(default)]
    pub connect_timeout_s: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum CephKind {
    /// The local lab (`miglab lab up`).
    #[default]
    Lab,
    /// A cluster someone else runs: miglab writes only below `subdir`, and acts on it
    /// destructively only when allowed.
    Existing,
}

/// `[ceph]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CephSpec {
    #[serde(default)]
    pub kind: CephKind,
    /// `kind = "lab"`: which lab.
    #[serde(default)]
    pub lab: Option<String>,
    /// Where every host has CephFS mounted already ...
    #[serde(default)]
    pub mount: Option<PathBuf>,
    /// ... or mounts it with ceph-fuse, with this conf and keyring (on the hosts; `doctor`
    /// checks for it, `run` does not mount yet). The first host's `ceph` commands (faults,
    /// health) use them too.
    #[serde(default)]
    pub conf: Option<PathBuf>,
    #[serde(default)]
    pub keyring: Option<PathBuf>,
    /// The directory below the mount that miglab owns (relative, created if missing).
    #[serde(default = "CephSpec::default_subdir")]
    pub subdir: PathBuf,
    /// Daemon kills and stops on this cluster (otherwise only reversible `ceph` commands).
    #[serde(default)]
    pub allow_destructive: bool,
}

impl CephSpec {
    fn default_subdir() -> PathBuf {
        PathBuf::from("miglab")
    }
}

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    #[serde(rename = "host")]
    pub hosts: Vec<HostSpec>,
    #[serde(default)]
    pub ssh: SshSpec,
    #[serde(default)]
    pub ceph: CephSpec,
}

/// The line of `key` in the `n`-th `[[host]]` block (or of its header).
fn host_line(text: &str, n: usize, key: &str) -> Option<usize> {
    let mut block = None;
    let mut header = None;
    for (i, l) in text.lines().enumerate() {
        let t = l.trim();
        if t == "[[host]]" {
            block = Some(block.map_or(0, |b| b + 1));
            if block == Some(n) {
                header = Some(i + 1);
            }
            continue;
        }
        if t.starts_with('[') {
            if block == Some(n) {
                return header;
            }
            block = block.map(|b| b + 1000);
            continue;
        }
        if block == Some(n) && t.split('=').next().map(str::trim) == Some(key) {
            return Some(i + 1);
        }
    }
    header
}

fn relative_inside(p: &Path) -> bool {
    !p.as_os_str().is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

impl TopologySpec {
    pub fn load(path: &Path) -> Result<Self, TopologyFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| TopologyFileError::Read { path: path.into(), source })?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, TopologyFileError> {
        let t: TopologySpec = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |r| line_col(text, r.start));
            TopologyFileError::Parse {
                path: path.into(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        let mut list = Vec::new();
        let mut add =
            |line: Option<usize>, field: String, message: String| list.push(Problem { line, field, message });
        if t.hosts.len() < 2 {
            add(
                host_line(text, 0, "name"),
                "host".into(),
                format!("{} [[host]] given: a migration needs two hosts or more", t.hosts.len()),
            );
        }
        for (i, h) in t.hosts.iter().enumerate() {
            let name_ok =
                !h.name.is_empty() && h.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_".contains(c));
            if !name_ok {
                add(
                    host_line(text, i, "name"),
                    format!("host.{i}.name"),
                    format!("'{}': letters, digits, - and _ only", h.name),
                );
            }
            if t.hosts[..i].iter().any(|o| o.name == h.name) {
                add(
                    host_line(text, i, "name"),
                    format!("host.{i}.name"),
                    format!("'{}' is named twice", h.name),
                );
            }
            if h.ssh.trim().is_empty() || h.ssh.starts_with('-') || h.ssh.contains(char::is_whitespace) {
                add(
                    host_line(text, i, "ssh"),
                    format!("host.{i}.ssh"),
                    format!("'{}': give an SSH destination, user@host or a Host of the SSH config", h.ssh),
                );
            }
            if let Some(a) = &h.address {
                if a.parse::<std::net::IpAddr>().is_err() {
                    add(
                        host_line(text, i, "address"),
                        format!("host.{i}.address"),
                        format!("'{a}' is not an IP address"),
                    );
                }
            }
            for (k, p) in [("mount", &h.mount), ("qemu", &h.qemu), ("virtiofsd", &h.virtiofsd)] {
                if let Some(p) = p {
                    if !p.is_absolute() {
                        add(
                            host_line(text, i, k),
                            format!("host.{i}.{k}"),
                            format!("{}: give an absolute path on the host", p.display()),
                        );
                    }
                }
            }
            if !h.work_dir.is_absolute() {
                add(
                    host_line(text, i, "work_dir"),
                    format!("host.{i}.work_dir"),
                    "give an absolute path on the host".into(),
                );
            }
        }
        match t.ceph.kind {
            CephKind::Existing => {
                let every_host_mounts = t.hosts.iter().all(|h| h.mount.is_some());
                if t.ceph.mount.is_none() && t.ceph.conf.is_none() && !every_host_mounts {
                    add(
                        line_of(text, "ceph", "kind"),
                        "ceph.mount".into(),
                        "an existing cluster needs `mount` (CephFS mounted on every host) or `conf` and `keyring` (ceph-fuse mounts it)".into(),
                    );
                }
                if t.ceph.conf.is_some() != t.ceph.keyring.is_some() {
                    add(
                        line_of(text, "ceph", "conf"),
                        "ceph.keyring".into(),
                        "ceph-fuse needs both `conf` and `keyring`".into(),
                    );
                }
                if t.ceph.lab.is_some() {
                    add(
                        line_of(text, "ceph", "lab"),
                        "ceph.lab".into(),
                        "`lab` names a local lab: only with kind = \"lab\"".into(),
                    );
                }
            }
            CephKind::Lab => {
                if t.ceph.conf.is_some() || t.ceph.keyring.is_some() {
                    add(
                        line_of(text, "ceph", "conf"),
                        "ceph.conf".into(),
                        "the lab's cluster has its own conf: use kind = \"existing\" for another".into(),
                    );
                }
            }
        }
        if !relative_inside(&t.ceph.subdir) {
            add(
                line_of(text, "ceph", "subdir"),
                "ceph.subdir".into(),
                format!("{}: a relative path below the mount, without `..`", t.ceph.subdir.display()),
            );
        }
        if list.is_empty() {
            Ok(t)
        } else {
            Err(TopologyFileError::Invalid(Problems { path: path.into(), list }))
        }
    }

    /// The SSH config file, resolved against the topology file's directory.
    pub fn ssh_config(&self, topology: &Path) -> Option<PathBuf> {
        let base = topology.parent().unwrap_or(Path::new("."));
        self.ssh.config.as_ref().map(|c| if c.is_absolute() { c.clone() } else { base.join(c) })
    }

    /// Where CephFS is on `host`.
    pub fn mount_of(&self, host: &HostSpec) -> Option<PathBuf> {
        host.mount.clone().or_else(|| self.ceph.mount.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[ssh]
config = "ssh/config"

[[host]]
name = "c1"
ssh = "root@10.0.0.11"
mount = "/mnt/cephfs"

[[host]]
name = "c2"
ssh = "c2"
address = "10.0.0.12"
virtiofsd = "/usr/libexec/virtiofsd"

[ceph]
kind = "existing"
mount = "/mnt/cephfs"
subdir = "miglab/runs"
"#;

    #[test]
    fn a_topology_is_read_with_its_defaults() {
        let t = TopologySpec::parse(GOOD, Path::new("/etc/miglab/topo.toml")).expect("parses");
        assert_eq!(t.hosts.len(), 2);
        assert_eq!(t.hosts[1].work_dir, Path::new("/var/tmp/miglab"));
        assert_eq!(t.ceph.kind, CephKind::Existing);
        assert!(!t.ceph.allow_destructive);
        assert_eq!(
            t.ssh_config(Path::new("/etc/miglab/topo.toml")).as_deref(),
            Some(Path::new("/etc/miglab/ssh/config"))
        );
        assert_eq!(t.mount_of(&t.hosts[1]).as_deref(), Some(Path::new("/mnt/cephfs")));
    }

    #[test]
    fn a_typo_is_an_error_at_its_line() {
        let bad = GOOD.replace("virtiofsd = ", "virtiofs = ");
        let e = TopologySpec::parse(&bad, Path::new("topo.toml")).expect_err("typo");
        let line = bad.lines().position(|l| l.starts_with("virtiofs =")).expect("line") + 1;
        assert!(e.to_string().starts_with(&format!("topo.toml:{line}:")), "{e}");
        assert!(e.to_string().contains("virtiofs"), "{e}");
    }

    #[test]
    fn what_cannot_work_is_refused_by_field_and_line() {
        let bad = GOOD
            .replace("ssh = \"c2\"", "ssh = \"-oProxyCommand=x\"")
            .replace("address = \"10.0.0.12\"", "address = \"ten\"")
            .replace("subdir = \"miglab/runs\"", "subdir = \"../etc\"")
            .replace("name = \"c2\"", "name = \"c1\"");
        let e = TopologySpec::parse(&bad, Path::new("t.toml")).expect_err("bad").to_string();
        let line = |needle: &str| bad.lines().position(|l| l.contains(needle)).expect("line") + 1;
        for (field, needle) in
            [("host.1.ssh", "ProxyCommand"), ("host.1.address", "ten"), ("ceph.subdir", "../etc")]
        {
            assert!(e.contains(&format!("t.toml:{}: {field}:", line(needle))), "{field}: {e}");
        }
        assert!(e.contains("named twice"), "{e}");
        let one = "[[host]]\nname = \"c1\"\nssh = \"c1\"\n[ceph]\nkind = \"existing\"\n";
        let e = TopologySpec::parse(one, Path::new("t.toml")).expect_err("one host").to_string();
        assert!(e.contains("two hosts") && e.contains("`mount`"), "{e}");
    }
}
