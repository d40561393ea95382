//! An external topology at work: the [`Site`] and [`Topology`] of hosts reached over SSH and a
//! Ceph cluster miglab did not build.
//!
//! * One multiplexed SSH connection per host (the `openssh` crate: the system's ssh, so the
//!   user's config, agent and jump hosts apply); every later command goes through it.
//! * A run directory per host (`<work_dir>/<topology>`) holds the instances' files and a pid
//!   record per process; a local state file (`<lab root>/topologies/<id>/state.json`) lists the
//!   same. `down --topology` needs either.
//! * QMP, the agent's control port and the records port are unix sockets on the host, forwarded
//!   to this machine through the connection. Arrival stamps are taken here, on one clock; the
//!   hosts' clock offsets are measured and recorded (nothing depends on them).
//! * The cluster is acted on only through `ceph` commands on the first host; nothing
//!   destructive unless the topology allows it.

use super::remote::{RemoteHost, QUICK};
use super::ssh::{quote, ClockOffset, SshHost};
use super::{ExternalError, TopologySpec};
use crate::accel::{self, Accel, AccelChoice};
use crate::process::{ProcRecord, ProcessSpec};
use crate::topology::ceph::Status;
use crate::topology::state::{Instance, Locked, StateError};
use crate::topology::{DaemonAction, DaemonId, DaemonKind, Host, LinkShape, Site, Topology, TopologyError};
use miglab_faults::Fault;
use miglab_model::{BinaryInfo, HostRecord, TopologyRecord};
use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `down --topology` needs, written on every change (under the state file's lock, as
/// the lab's: [`Locked`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SiteState {
    topology: PathBuf,
    /// The miglab running on the topology: while it lives, no other opens it.
    #[serde(default)]
    owner: Option<ProcRecord>,
    processes: Vec<RemoteProc>,
    instances: Vec<Instance>,
    /// Forwarded sockets: host, local path, remote path.
    forwards: Vec<(String, PathBuf, PathBuf)>,
    /// What faults changed on the cluster and has not been undone yet.
    #[serde(default)]
    journal: Vec<crate::topology::journal::Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RemoteProc {
    host: String,
    rec: ProcRecord,
}

/// A topology file's id: a hash of its path.
fn topology_id(file: &Path) -> String {
    use sha2::{Digest, Sha256};
    let canonical = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    let hash = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    hash[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// A topology file's own directory on this machine (short: forwarded sockets live below it,
/// and a unix socket's path has at most 107 bytes).
pub fn state_dir(root: &Path, file: &Path) -> PathBuf {
    root.join("topologies").join(topology_id(file))
}

/// Where the SSH connections' control sockets are: short, for the same reason (ssh binds a
/// longer temporary name next to each).
pub fn control_dir(file: &Path) -> PathBuf {
    std::env::temp_dir().join(format!("miglab-ssh-{}", topology_id(file)))
}

/// A running external topology.
#[derive(Debug)]
pub struct ExternalSite {
    file: PathBuf,
    spec: TopologySpec,
    dir: PathBuf,
    hosts: Vec<RemoteHost>,
    records: Vec<HostRecord>,
    accel: AccelChoice,
    state: Locked<SiteState>,
    daemons: Vec<DaemonId>,
    ceph_version: Option<String>,
    grace: Duration,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ExternalError {
    let what = what.into();
    move |source| ExternalError::Io { what, source }
}

/// Connects to every host of `spec` (a master connection each, its control socket below
/// [`control_dir`]), measuring each host's clock against ours on the way.
fn connect_all(spec: &TopologySpec, file: &Path) -> Result<Vec<(PathBuf, ClockOffset)>, ExternalError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start a runtime for SSH"))?;
    let config = spec.ssh_config(file);
    let timeout = Duration::from_secs(spec.ssh.connect_timeout_s.unwrap_or(10));
    let ctl_dir = control_dir(file);
    // A predictable path in /tmp: made 0700 by us, or refused.
    crate::paths::private_dir(&ctl_dir).map_err(io(format!("use {}", ctl_dir.display())))?;
    rt.block_on(async {
        // Detached only once every host answered: a session dropped on an error ends its
        // master, so a host that fails leaves no connection to the others behind.
        let mut open = Vec::new();
        for h in &spec.hosts {
            let s = SshHost::connect_in(&h.name, &h.ssh, config.as_deref(), timeout, Some(&ctl_dir)).await?;
            let offset = s.clock_offset(5).await?;
            open.push((s, offset));
        }
        Ok(open.into_iter().map(|(s, o)| (s.detach(), o)).collect())
    })
}

/// A host's connection and directories, before it is probed.
fn bare_host(h: &super::HostSpec, ctl: PathBuf, config: Option<PathBuf>, topology_id: &str) -> RemoteHost {
    RemoteHost {
        name: h.name.clone(),
        dest: h.ssh.clone(),
        ctl,
        config,
        address: Ipv4Addr::UNSPECIFIED,
        mount: PathBuf::new(),
        qemu: PathBuf::new(),
        virtiofsd: PathBuf::new(),
        work: h.work_dir.join(topology_id),
        images: h.work_dir.join("images"),
        unreachable: Default::default(),
    }
}

/// What a host said about itself.
#[derive(Debug, Default)]
struct Probe {
    kernel: String,
    flags: String,
    kvm: bool,
    qemu: String,
    qemu_version: String,
    qemu_sha: String,
    virtiofsd: String,
    virtiofsd_version: String,
    virtiofsd_sha: String,
    address: String,
    fs: String,
}

fn probe(h: &RemoteHost, qemu: &str, virtiofsd: &str, mount: &Path) -> Result<Probe, ExternalError> {
    let script = format!(
        "q=$(command -v {q} || true); v=$(command -v {v} || true)\n\
         echo kernel=$(uname -r)\necho flags=$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)\n\
         if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then echo kvm=1; else echo kvm=0; fi\n\
         echo qemu=$q\n[ -z \"$q\" ] || echo qemu_version=$(\"$q\" --version | head -n1)\n[ -z \"$q\" ] || echo qemu_sha=$(sha256sum \"$q\" | cut -d' ' -f1)\n\
         echo virtiofsd=$v\n[ -z \"$v\" ] || echo virtiofsd_version=$(\"$v\" --version | head -n1)\n[ -z \"$v\" ] || echo virtiofsd_sha=$(sha256sum \"$v\" | cut -d' ' -f1)\n\
         echo address=$(hostname -I 2>/dev/null | cut -d' ' -f1)\necho fs=$(stat -f -c %T {m} 2>&1)",
        q = quote(qemu),
        v = quote(virtiofsd),
        m = quote(&mount.display().to_string()),
    );
    let out = h.sh(&script, Duration::from_secs(30))?;
    let mut p = Probe::default();
    for line in out.stdout.lines() {
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().to_string();
        match k {
            "kernel" => p.kernel = v,
            "flags" => p.flags = v,
            "kvm" => p.kvm = v == "1",
            "qemu" => p.qemu = v,
            "qemu_version" => p.qemu_version = v,
            "qemu_sha" => p.qemu_sha = v,
            "virtiofsd" => p.virtiofsd = v,
            "virtiofsd_version" => p.virtiofsd_version = v,
            "virtiofsd_sha" => p.virtiofsd_sha = v,
            "address" => p.address = v,
            "fs" => p.fs = v,
            _ => {}
        }
    }
    Ok(p)
}

impl ExternalSite {
    /// Opens the topology in `file`: every host connected and checked, the run directories
    /// made, the cluster asked what it runs. A topology that still has processes recorded
    /// (a run going on, or one that was killed) is refused until `down --topology`.
    pub fn open(file: &Path, root: &Path) -> Result<Self, ExternalError> {
        let spec = TopologySpec::load(file)?;
        let dir = state_dir(root, file);
        // Refused early if busy (again under the lock when claimed, below).
        if let Some(st) = saved(&dir)? {
            busy(file, &st)?;
        }
        if spec.ceph.mount.is_none() && spec.hosts.iter().any(|h| h.mount.is_none()) {
            return Err(ExternalError::Unsupported(
                "mounting CephFS with ceph-fuse for a topology: mount it on every host and give `mount`"
                    .into(),
            ));
        }
        for d in ["logs", "vms"] {
            std::fs::create_dir_all(dir.join(d)).map_err(io(format!("create {}", dir.join(d).display())))?;
        }
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("topology").to_string();
        let links = connect_all(&spec, file)?;
        let config = spec.ssh_config(file);
        let masters: Vec<RemoteHost> = spec
            .hosts
            .iter()
            .zip(&links)
            .map(|(h, (ctl, _))| bare_host(h, ctl.clone(), config.clone(), &name))
            .collect();
        // From here on, a failure ends every connection it made.
        Self::on_hosts(file, spec, dir, &name, links).inspect_err(|_| {
            masters.iter().for_each(RemoteHost::disconnect);
            let _ = std::fs::remove_dir_all(control_dir(file));
        })
    }

    /// The rest of [`ExternalSite::open`], once every host is connected.
    fn on_hosts(
        file: &Path,
        spec: TopologySpec,
        dir: PathBuf,
        name: &str,
        links: Vec<(PathBuf, ClockOffset)>,
    ) -> Result<Self, ExternalError> {
        let config = spec.ssh_config(file);
        let mut hosts = Vec::new();
        let mut records = Vec::new();
        let mut choices = Vec::new();
        let mut site_hosts_err = None;
        for (h, (ctl, offset)) in spec.hosts.iter().zip(links) {
            let mount = spec.mount_of(h).unwrap_or_default();
            let mut r = bare_host(h, ctl, config.clone(), name);
            r.mount = mount.join(&spec.ceph.subdir);
            let want =
                |p: &Option<PathBuf>, d: &str| p.as_ref().map_or(d.to_string(), |p| p.display().to_string());
            let p =
                probe(&r, &want(&h.qemu, "qemu-system-x86_64"), &want(&h.virtiofsd, "virtiofsd"), &mount)?;
            let missing = |what: &str| ExternalError::HostLacks {
                host: h.name.clone(),
                what: what.into(),
                fix: format!("run `miglab doctor --topology {}` for the fix", file.display()),
            };
            if p.qemu.is_empty() {
                site_hosts_err.get_or_insert(missing("QEMU"));
            }
            if p.virtiofsd.is_empty() {
                site_hosts_err.get_or_insert(missing("virtiofsd"));
            }
            if !(p.fs.contains("fuse") || p.fs.contains("ceph")) {
                site_hosts_err.get_or_insert(missing(&format!("CephFS at {} ({})", mount.display(), p.fs)));
            }
            r.qemu = p.qemu.clone().into();
            r.virtiofsd = p.virtiofsd.clone().into();
            let address = h.address.clone().unwrap_or(p.address.clone());
            r.address = address.parse().map_err(|_| ExternalError::HostLacks {
                host: h.name.clone(),
                what: format!("an IPv4 address (found '{address}')"),
                fix: "give `address` in its [[host]]".into(),
            })?;
            let choice = accel::choose(&format!("flags\t: {}", p.flags), p.kvm);
            let info = |role: &str, path: &str, version: &str, sha: &str| {
                Some(BinaryInfo {
                    role: role.into(),
                    path: path.into(),
                    version: Some(version.to_string()).filter(|v| !v.is_empty()),
                    sha256: Some(sha.to_string()).filter(|v| !v.is_empty()),
                })
                .filter(|_| !path.is_empty())
            };
            records.push(HostRecord {
                name: h.name.clone(),
                ssh: h.ssh.clone(),
                address,
                accelerator: choice.accel.to_string(),
                accelerator_reason: choice.reason.clone(),
                kernel: Some(p.kernel.clone()),
                qemu: info("qemu", &p.qemu, &p.qemu_version, &p.qemu_sha),
                virtiofsd: info("virtiofsd", &p.virtiofsd, &p.virtiofsd_version, &p.virtiofsd_sha),
                clock_offset_ms: offset.offset_ms,
                clock_rtt_ms: offset.rtt_ms,
            });
            choices.push((h.name.clone(), choice));
            hosts.push(r);
        }
        if let Some(e) = site_hosts_err {
            return Err(e);
        }
        // Migration needs one accelerator on both ends: KVM only if every host has it.
        let accel = match choices.iter().find(|(_, c)| c.accel != Accel::Kvm) {
            None => AccelChoice { accel: Accel::Kvm, reason: "every host has KVM with vmx or svm".into() },
            Some((n, c)) => AccelChoice { accel: Accel::Tcg, reason: format!("{n}: {}", c.reason) },
        };
        for h in &hosts {
            // The work directory (by default a predictable path in /var/tmp) is root's alone,
            // or refused: pid records and images below it are trusted.
            let work = quote(&h.work.display().to_string());
            h.sh(
                &format!(
                    "mkdir -p -m 0700 {work} && [ -d {work} ] && [ ! -L {work} ] && [ \"$(stat -c %u {work})\" = \"$(id -u)\" ] && chmod 0700 {work} || {{ echo \"{work} is not a directory of $(id -un)'s (someone else's, or a symlink): remove it or choose another work_dir\" >&2; exit 1; }}; mkdir -p {} {} {}",
                    quote(&h.work.join("pids").display().to_string()),
                    quote(&h.images.display().to_string()),
                    quote(&h.mount.display().to_string())
                ),
                QUICK,
            )?;
        }
        // A killed run's fault journal is kept: the run reverts it before it starts. Two runs
        // started together both passed the check above; only one claims the topology here.
        let path = dir.join("state.json");
        let state = match saved(&dir)? {
            Some(_) => Locked::open(&path)?,
            None => Locked::create(path, SiteState { topology: file.into(), ..SiteState::default() })?,
        };
        state.update(|s| {
            busy(file, s)?;
            s.owner = Some(crate::topology::journal::me());
            s.topology = file.into();
            Ok::<_, ExternalError>(())
        })??;
        let mut site = Self {
            file: file.into(),
            spec,
            dir,
            hosts,
            records,
            accel,
            state,
            daemons: Vec::new(),
            ceph_version: None,
            grace: Duration::from_secs(5),
        };
        site.ceph_version = site.ceph("version").ok().map(|s| s.trim().to_string());
        site.daemons = site.list_daemons()?;
        Ok(site)
    }

    /// The topology file.
    pub fn file(&self) -> &Path {
        &self.file
    }

    pub fn remote_host(&self, name: &str) -> Result<&RemoteHost, ExternalError> {
        self.hosts.iter().find(|h| h.name == name).ok_or_else(|| ExternalError::NoHost(name.into()))
    }

    /// The hosts whose connection is gone.
    pub fn lost(&self) -> Vec<String> {
        self.hosts.iter().filter(|h| !h.connected()).map(|h| h.name.clone()).collect()
    }

    /// The state as on disk now.
    fn read(&self) -> SiteState {
        self.state.snapshot()
    }

    fn update(&self, f: impl FnOnce(&mut SiteState)) -> Result<(), ExternalError> {
        Ok(self.state.update(f)?)
    }

    fn host_of(&self, rec: &ProcRecord) -> Result<&RemoteHost, ExternalError> {
        let host = self
            .read()
            .processes
            .iter()
            .rev()
            .find(|p| p.rec.name == rec.name)
            .map(|p| p.host.clone())
            .ok_or_else(|| ExternalError::NoHost(format!("(of process {})", rec.name)))?;
        self.remote_host(&host)
    }

    /// `ceph <args>` on the first host, with the topology's conf and keyring.
    fn ceph(&self, args: &str) -> Result<String, ExternalError> {
        ceph_on(&self.hosts[0], &self.spec, args)
    }

    fn status(&self) -> Result<Status, ExternalError> {
        let text = self.ceph("status -f json")?;
        Status::parse(&text).map_err(|e| ExternalError::Remote {
            host: self.hosts[0].name.clone(),
            what: "ceph status".into(),
            why: e.to_string(),
        })
    }

    /// Every daemon of the cluster (`ceph node ls`).
    fn list_daemons(&self) -> Result<Vec<DaemonId>, ExternalError> {
        let text = self.ceph("node ls -f json")?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| ExternalError::Remote {
            host: self.hosts[0].name.clone(),
            what: "ceph node ls".into(),
            why: e.to_string(),
        })?;
        let mut out = Vec::new();
        for (kind, k) in [
            ("mon", DaemonKind::Mon),
            ("mgr", DaemonKind::Mgr),
            ("osd", DaemonKind::Osd),
            ("mds", DaemonKind::Mds),
        ] {
            for ids in v.get(kind).and_then(|m| m.as_object()).into_iter().flat_map(|m| m.values()) {
                for id in ids.as_array().into_iter().flatten() {
                    let id = id.as_str().map(String::from).unwrap_or_else(|| id.to_string());
                    out.push(DaemonId::new(k, id));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Closes every connection (the hosts' processes are `stop`ped before).
    pub fn close(&self) {
        let me = crate::topology::journal::me();
        let _ = self.update(|s| {
            if s.owner.as_ref().is_some_and(|o| o.pid == me.pid && o.start_ticks == me.start_ticks) {
                s.owner = None;
            }
        });
        self.hosts.iter().for_each(RemoteHost::disconnect);
        let _ = std::fs::remove_dir_all(control_dir(&self.file));
    }
}

/// The state saved in `dir`: None if there is none; a damaged file is an error, never read as
/// empty (its fault undos would be lost).
fn saved(dir: &Path) -> Result<Option<SiteState>, ExternalError> {
    match Locked::<SiteState>::load(&dir.join("state.json")) {
        Ok(s) => Ok(Some(s)),
        Err(StateError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Refuses a topology another miglab runs on, or one with processes left by an earlier run.
fn busy(file: &Path, st: &SiteState) -> Result<(), ExternalError> {
    if let Some(o) = st.owner.as_ref().filter(|o| crate::process::is_alive(o)) {
        return Err(ExternalError::InUse { file: file.into(), pid: o.pid });
    }
    if !st.processes.is_empty() || !st.instances.is_empty() {
        return Err(ExternalError::Busy {
            file: file.into(),
            what: st.processes.iter().map(|p| format!("{} on {}", p.rec.name, p.host)).collect(),
        });
    }
    Ok(())
}

/// Ends every SSH master whose control socket is below `dir` (`ssh -O exit`).
fn end_masters(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                todo.push(e.path());
            } else if t.is_socket() {
                let mut c = std::process::Command::new("ssh");
                c.arg("-S").arg(e.path()).args(["-O", "exit", "miglab-master"]);
                let _ = crate::process::run_tool(&mut c, Duration::from_secs(5));
            }
        }
    }
}

/// `ceph <args>` on `host`, with the topology's conf and keyring.
fn ceph_on(host: &RemoteHost, spec: &TopologySpec, args: &str) -> Result<String, ExternalError> {
    let mut cmd = String::from("ceph --connect-timeout 20");
    if let Some(c) = &spec.ceph.conf {
        cmd.push_str(&format!(" --conf {}", quote(&c.display().to_string())));
    }
    if let Some(k) = &spec.ceph.keyring {
        cmd.push_str(&format!(" --keyring {}", quote(&k.display().to_string())));
    }
    Ok(host.sh(&format!("{cmd} {args}"), Duration::from_secs(40))?.stdout)
}

/// Reverts, through `ceph` on `host`, what the fault journal `entries` holds (newest first):
/// the cluster changes a killed run left. Returns a line per change; the entries whose every
/// step was undone are removed from `entries`.
fn revert_cluster(
    host: &RemoteHost,
    spec: &TopologySpec,
    entries: &mut Vec<crate::topology::journal::Entry>,
) -> Vec<String> {
    use crate::topology::journal::Undo;
    let mut said = Vec::new();
    for e in entries.iter_mut() {
        let mut left = Vec::new();
        for step in e.steps.iter().rev() {
            let r = match step {
                Undo::Config { daemon, key, value } => {
                    ceph_on(host, spec, &format!("tell {daemon} config set {} {}", quote(key), quote(value)))
                        .map(|_| ())
                }
                Undo::OsdIn { osd } => ceph_on(host, spec, &format!("osd in {osd}")).map(|_| ()),
                // A process of the run frozen (a virtiofsd): `down` ends the run's processes on
                // every host right after this, frozen or not.
                Undo::Resume { .. } => Ok(()),
                _ => Err(ExternalError::Unsupported(format!("{step}: not a cluster change"))),
            };
            match r {
                Ok(()) => said.push(format!("{}: {step}", e.fault)),
                Err(err) => {
                    said.push(format!("{}: could not {step}: {err}", e.fault));
                    left.push(step.clone());
                }
            }
        }
        left.reverse();
        e.steps = left;
    }
    entries.retain(|e| !e.steps.is_empty());
    said
}

/// `down --topology`: every host's run directory cleaned (its processes ended), whatever the
/// local state says, then the local state removed. Returns a line per host.
pub fn down(file: &Path, root: &Path) -> Result<Vec<String>, ExternalError> {
    let spec = TopologySpec::load(file)?;
    // A killed miglab's SSH masters outlive it: ended first, so none is left behind.
    end_masters(&control_dir(file));
    let dir = state_dir(root, file);
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("topology").to_string();
    let links = connect_all(&spec, file)?;
    let config = spec.ssh_config(file);
    let mut said = Vec::new();
    let mut failed = None;
    // First what faults changed on the cluster (a killed run's journal), then the processes.
    // A miglab still running there keeps its own: nothing of it is reverted or ended.
    let state_file = dir.join("state.json");
    let st = saved(&dir)?.unwrap_or_default();
    if let Some(o) = st.owner.as_ref().filter(|o| crate::process::is_alive(o)) {
        return Err(ExternalError::InUse { file: file.into(), pid: o.pid });
    }
    if let Some(e) = st.journal.iter().find(|e| !e.orphaned()) {
        return Err(ExternalError::InUse { file: file.into(), pid: e.owner.pid });
    }
    let mut journal_left = false;
    if !st.journal.is_empty() {
        let mut journal = st.journal.clone();
        if let (Some(h), Some((ctl, _))) = (spec.hosts.first(), links.first()) {
            let r = bare_host(h, ctl.clone(), config.clone(), &name);
            said.extend(revert_cluster(&r, &spec, &mut journal).into_iter().map(|l| format!("reverted {l}")));
        }
        journal_left = !journal.is_empty();
        if journal_left && state_file.exists() {
            Locked::<SiteState>::open(&state_file)?.update(|s| s.journal = journal)?;
        }
    }
    for (h, (ctl, _)) in spec.hosts.iter().zip(links) {
        let r = bare_host(h, ctl, config.clone(), &name);
        match r.clean(Duration::from_secs(5)) {
            Ok(text) => said.push(format!("{}: {}", h.name, text.replace('\n', "; "))),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
        r.disconnect();
    }
    if let Some(e) = failed {
        return Err(e);
    }
    if journal_left {
        return Err(ExternalError::Unsupported(format!(
            "the fault journal in {} still holds changes that could not be reverted ({}); revert them by hand, then remove the file",
            state_file.display(),
            said.join("; ")
        )));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(control_dir(file));
    Ok(said)
}

impl Site for ExternalSite {
    fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }

    fn host(&self, name: &str) -> Result<&dyn Host, TopologyError> {
        Ok(self.remote_host(name)? as &dyn Host)
    }

    fn spawn(&self, host: &str, spec: ProcessSpec) -> Result<ProcRecord, TopologyError> {
        let h = self.remote_host(host)?;
        let (pid, start_ticks) = h.spawn(&spec.name, &spec.program, &spec.args, &spec.log)?;
        let rec =
            ProcRecord { name: spec.name.clone(), pid, start_ticks, log: spec.log.clone(), tier: spec.tier };
        self.update(|s| s.processes.push(RemoteProc { host: host.into(), rec: rec.clone() }))?;
        tracing::info!(host, name = %rec.name, pid, "started over SSH");
        Ok(rec)
    }

    fn stop(&self, rec: &ProcRecord) -> Result<(), TopologyError> {
        let h = self.host_of(rec)?;
        h.stop(&rec.name, rec.pid, self.grace)?;
        self.update(|s| s.processes.retain(|p| p.rec.name != rec.name || p.rec.pid != rec.pid))?;
        Ok(())
    }

    fn signal(&self, rec: &ProcRecord, signal: Signal) -> Result<(), TopologyError> {
        let name = signal.as_str().trim_start_matches("SIG");
        Ok(self.host_of(rec)?.signal(rec.pid, name)?)
    }

    fn exit_status(&self, rec: &ProcRecord) -> Option<String> {
        let h = self.host_of(rec).ok()?;
        match h.exit_status(rec.pid, &rec.log) {
            Ok(s) => s,
            Err(e @ ExternalError::ConnectionLost { .. }) => Some(e.to_string()),
            Err(_) => None,
        }
    }

    fn process(&self, name: &str) -> Option<ProcRecord> {
        self.read().processes.iter().rev().find(|p| p.rec.name == name).map(|p| p.rec.clone())
    }

    fn record_instance(&self, id: &str, record: serde_json::Value) -> Result<(), TopologyError> {
        Ok(self.update(|s| {
            s.instances.retain(|i| i.id != id);
            s.instances.push(Instance { id: id.into(), record });
        })?)
    }

    fn forget_instance(&self, id: &str) -> Result<(), TopologyError> {
        Ok(self.update(|s| s.instances.retain(|i| i.id != id))?)
    }

    fn instances(&self) -> Vec<Instance> {
        self.read().instances
    }

    fn instances_dir(&self) -> PathBuf {
        self.dir.join("vms")
    }

    fn migration_address(&self, host: &str) -> Result<IpAddr, TopologyError> {
        Ok(IpAddr::V4(self.remote_host(host)?.address))
    }

    fn proxy_address(&self) -> IpAddr {
        // Refused before a run (`refuses`): no proxy of ours sits between remote hosts.
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    fn instances_dir_on(&self, host: &str) -> PathBuf {
        self.remote_host(host).map(|h| h.work.join("vms")).unwrap_or_default()
    }

    fn reach(&self, host: &str, socket: &Path, local: &Path) -> Result<PathBuf, TopologyError> {
        let h = self.remote_host(host)?;
        if let Some(d) = local.parent() {
            std::fs::create_dir_all(d).map_err(io(format!("create {}", d.display())))?;
        }
        let _ = std::fs::remove_file(local);
        h.forward(local, socket, false)?;
        self.update(|s| s.forwards.push((host.into(), local.into(), socket.into())))?;
        Ok(local.to_path_buf())
    }

    fn unreach(&self, local_dir: &Path) {
        let gone: Vec<(String, PathBuf, PathBuf)> =
            self.read().forwards.into_iter().filter(|f| f.1.starts_with(local_dir)).collect();
        for (host, local, remote) in &gone {
            if let Ok(h) = self.remote_host(host) {
                let _ = h.forward(local, remote, true);
            }
            let _ = std::fs::remove_file(local);
        }
        let _ = self.update(|s| s.forwards.retain(|f| !f.1.starts_with(local_dir)));
    }

    fn stage_image(&self, host: &str, image: &Path) -> Result<PathBuf, TopologyError> {
        let h = self.remote_host(host)?;
        let img =
            crate::image::GuestImage::at(image).map_err(|e| ExternalError::Unsupported(e.to_string()))?;
        let to = h.images.join(&img.manifest.key);
        // A cached copy is used only if every file hashes as this machine's does.
        let files = ["vmlinux", "bzImage", "initramfs.img", "manifest.json"];
        let want: Vec<String> = files
            .iter()
            .map(|f| {
                crate::binaries::sha256_file(&img.dir.join(f)).ok_or_else(|| {
                    ExternalError::Unsupported(format!("cannot hash {}", img.dir.join(f).display()))
                })
            })
            .collect::<Result<_, _>>()?;
        let remote_hashes = || -> Result<Vec<String>, ExternalError> {
            let list =
                files.iter().map(|f| quote(&to.join(f).display().to_string())).collect::<Vec<_>>().join(" ");
            let out = h.sh(&format!("sha256sum {list} 2>/dev/null || true"), Duration::from_secs(60))?;
            Ok(out.stdout.lines().filter_map(|l| l.split_whitespace().next().map(String::from)).collect())
        };
        if remote_hashes()? == want {
            return Ok(to);
        }
        let t = std::time::Instant::now();
        for f in files {
            let from = img.dir.join(f);
            let bytes = std::fs::read(&from).map_err(io(format!("read {}", from.display())))?;
            h.sh_with_input(
                &format!(
                    "mkdir -p {d} && cat >{p}.part && mv {p}.part {p}",
                    d = quote(&to.display().to_string()),
                    p = quote(&to.join(f).display().to_string())
                ),
                Some(&bytes),
                Duration::from_secs(300),
            )?;
        }
        if remote_hashes()? != want {
            return Err(ExternalError::Remote {
                host: host.into(),
                what: format!("the guest image copied to {}", to.display()),
                why: "its files do not hash as this machine's do".into(),
            }
            .into());
        }
        tracing::info!(host, image = %img.manifest.key, ms = t.elapsed().as_millis() as u64, "guest image copied");
        Ok(to)
    }

    fn connections_lost(&self) -> Vec<String> {
        self.lost()
    }

    fn accel(&self, wish: crate::accel::AccelWish) -> Accel {
        match wish {
            crate::accel::AccelWish::Auto => self.accel.accel,
            crate::accel::AccelWish::Kvm => Accel::Kvm,
            crate::accel::AccelWish::Tcg => Accel::Tcg,
        }
    }

    fn record(&self) -> Option<TopologyRecord> {
        Some(TopologyRecord {
            file: self.file.display().to_string(),
            hosts: self.records.clone(),
            ceph: match self.spec.ceph.kind {
                super::CephKind::Existing => "existing".into(),
                super::CephKind::Lab => "lab".into(),
            },
            ceph_version: self.ceph_version.clone(),
        })
    }
}

impl ExternalSite {
    fn refuse(&self, what: &str, why: &str) -> TopologyError {
        ExternalError::Refused { what: what.into(), why: why.into() }.into()
    }

    /// The accelerator choice, with its reason.
    pub fn accel_choice(&self) -> &AccelChoice {
        &self.accel
    }
}

mod faults;

#[cfg(test)]
mod tests {
    use super::faults::refusal;
    use super::*;
    use miglab_faults::{HostRef, Pick, StorageTarget};

    /// Nothing changes someone else's cluster without `allow_destructive = true`; daemon kills
    /// stay refused even with it (their units cannot be stopped and started yet).
    #[test]
    fn changes_to_an_existing_cluster_need_allow_destructive() {
        let changes = [
            Fault::OsdOut { osd: Pick::Id(0), duration_ms: 1 },
            Fault::MdsFail {},
            Fault::StorageDelay {
                target: StorageTarget::AllOsds,
                max_ms: 5,
                probability: 1.0,
                duration_ms: 1,
            },
            Fault::SocketFailures { target: StorageTarget::Osd(Pick::Id(1)), one_in: 5, duration_ms: 1 },
        ];
        for f in &changes {
            assert!(refusal(f, false).is_some_and(|w| w.contains("allow_destructive")), "{f:?}");
            assert_eq!(refusal(f, true), None, "{f:?}");
        }
        let kill = Fault::OsdKill { osd: Pick::Id(0), revive_after_ms: 1 };
        assert!(refusal(&kill, true).is_some(), "still refused");
        // Fencing needs the client's session, from its admin socket on its host: not reachable.
        for f in [
            Fault::ClientEvict { host: HostRef::Source, duration_ms: 1 },
            Fault::ClientBlocklist { host: HostRef::Destination, duration_ms: 1 },
        ] {
            assert!(refusal(&f, true).is_some_and(|w| w.contains("admin socket")), "{f:?}");
        }
        assert_eq!(
            refusal(&Fault::MigrateCancel {}, false),
            None,
            "cancelling a migration changes no cluster"
        );
    }

    /// A virtiofsd frozen when miglab was killed: `down --topology` resolves its resume (the
    /// hosts' cleaning ends the process, frozen or not) and drops the entry. Before, the step
    /// failed as "not a cluster change", stayed in the journal, and every later `run` and `down`
    /// was refused until state.json was edited by hand. Asks nothing of the cluster, so the host
    /// is never reached.
    #[test]
    fn down_resolves_a_frozen_virtiofsd_of_a_killed_run() {
        use crate::topology::journal::{Entry, Undo};
        let spec_text = "[[host]]\nname = \"h1\"\nssh = \"h1\"\n[[host]]\nname = \"h2\"\nssh = \"h2\"\n[ceph]\nkind = \"existing\"\nmount = \"/mnt/cephfs\"\n";
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("topology.toml");
        std::fs::write(&file, spec_text).expect("write");
        let spec = TopologySpec::load(&file).expect("spec");
        let host = bare_host(&spec.hosts[0], dir.path().join("ctl"), None, "t");
        let mut frozen = crate::topology::journal::me();
        frozen.name = "virtiofsd.c2".into();
        let mut gone = crate::topology::journal::me();
        gone.start_ticks += 1;
        let mut entries = vec![Entry {
            id: "1:vm:0:1".into(),
            fault: "virtiofsd-freeze".into(),
            owner: gone,
            steps: vec![Undo::Resume { process: frozen }],
        }];
        let said = revert_cluster(&host, &spec, &mut entries);
        assert!(entries.is_empty(), "the entry is resolved: {entries:?} ({said:?})");
        assert!(said.iter().all(|l| !l.contains("could not")), "{said:?}");
    }

    /// The external topology keeps its state as the lab does: a damaged file is an error (it
    /// read as empty, and its fault undos were lost); two runs opening it together cannot both
    /// claim it (both passed the busy check and erased each other's journal steps).
    #[test]
    fn the_state_is_locked_claimed_once_and_never_read_as_empty() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = Path::new("/t/topology.toml");
        assert!(saved(dir.path()).expect("none").is_none());
        std::fs::write(dir.path().join("state.json"), "{ nope").expect("write");
        let e = saved(dir.path()).expect_err("damaged");
        assert!(e.to_string().contains("damaged"), "{e}");

        let path = dir.path().join("state.json");
        let a = Locked::create(path.clone(), SiteState::default()).expect("create");
        let b = Locked::<SiteState>::open(&path).expect("open");
        let claim = |l: &Locked<SiteState>| {
            l.update(|s| {
                busy(file, s)?;
                s.owner = Some(crate::topology::journal::me());
                Ok::<_, ExternalError>(())
            })
            .expect("locked")
        };
        assert!(claim(&a).is_ok());
        assert!(matches!(claim(&b), Err(ExternalError::InUse { .. })), "the second run is refused");
        // Its owner gone, the topology is free again; a process left is still busy.
        let mut st = b.snapshot();
        st.owner.as_mut().expect("owner").start_ticks += 1;
        assert!(busy(file, &st).is_ok());
        st.processes.push(RemoteProc { host: "h1".into(), rec: crate::topology::journal::me() });
        assert!(matches!(busy(file, &st), Err(ExternalError::Busy { .. })));
    }
}
