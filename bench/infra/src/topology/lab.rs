//! The local lab: a throwaway Ceph cluster in the root network namespace, and client hosts as
//! network namespaces on one bridge, each with CephFS mounted through ceph-fuse.
//!
//! `Lab::up` builds it and leaves it running; `Lab::open` attaches to a running one (a later
//! `miglab` invocation); `down` tears down whatever the state file lists, even after a crash.
//! The rooms: [`bringup`], [`cluster`] (admin channel, readiness, daemons), [`status`],
//! [`teardown`]; this file holds the `Lab` itself and its [`Site`] and [`Topology`] faces.

mod bringup;
mod cluster;
pub mod sshd;
mod status;
mod teardown;
pub use bringup::preflight;

pub use status::{process_state, status, LabStatus, MountStatus, ProcessStatus};
pub use teardown::{down, leftovers};

use super::admin::{Admin, AdminError};
use super::ceph::ObjectStore;
use super::layout::{ClientLayout, LabLayout, LayoutError};
use super::net::{self, NetError};
use super::slots::SlotError;
use super::state::{Instance, LabState, StateError, StateFile};
use super::{ceph, DaemonId, DaemonKind, Host, Site, Topology, TopologyError};
use crate::paths;
use crate::process::{self, ProcRecord, ProcessError, ProcessSpec, StopPolicy, Supervisor, ToolError};
use crate::steps::{OnStep, Step};
use crate::wait::WaitError;
use miglab_faults::{DaemonAction, LinkShape};
use miglab_model::Timings;
use nix::sys::signal::Signal;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

/// How often readiness is polled: cheap through the admin channel, and it bounds how late
/// bring-up notices that the cluster is ready.
const POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum LabError {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error("miglab lab needs root (network namespaces, FUSE mounts): run it as root")]
    NotRoot,
    #[error("{tool} not found: {fix}")]
    MissingTool { tool: String, fix: String },
    #[error("lab '{name}' already exists at {dir} ({what}): run `miglab lab down --name {name}` first, or choose another --name")]
    Exists { name: String, dir: PathBuf, what: String },
    #[error("no lab named '{name}' at {dir}: start one with `miglab lab up --name {name}`")]
    NotFound { name: String, dir: PathBuf },
    #[error("port {port} on {addr} is busy (another lab or service uses it): choose another --name, or stop whatever listens there")]
    PortBusy { addr: Ipv4Addr, port: u16 },
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{name} died at start ({status}); the end of its log {log}:\n{tail}")]
    DaemonDied { name: String, status: String, log: PathBuf, tail: String },
    #[error("the cluster was not ready after {timeout:.0?} ({summary}); ceph status:\n{status}")]
    NotReady { timeout: Duration, summary: String, status: String },
    #[error("CephFS did not appear at {mount} for host {host} within {timeout:.0?}; the end of ceph-fuse's log:\n{tail}")]
    MountFailed { host: String, mount: PathBuf, timeout: Duration, tail: String },
    #[error("{0}")]
    Wait(String),
    #[error("interrupted: {0}; everything started so far was torn down")]
    Interrupted(String),
    #[error("no host '{0}' in this lab (hosts are c1, c2, ...)")]
    UnknownHost(String),
    #[error("no daemon '{0}' in this lab (see `miglab lab status`)")]
    UnknownDaemon(String),
    /// A CephFS client's admin socket answered something that is not its status.
    #[error("client.{host}'s status names no session: {said}")]
    ClientStatus { host: String, said: String },
    #[error("teardown left things behind: {}; see `miglab lab status` and the logs", .0.join("; "))]
    Leftovers(Vec<String>),
}

impl<E: Into<LabError>> From<WaitError<E>> for LabError {
    fn from(e: WaitError<E>) -> Self {
        match e {
            WaitError::Interrupted(what) => LabError::Interrupted(what),
            WaitError::TimedOut(d, what) => {
                LabError::Wait(format!("timed out after {d:.1?} waiting for {what}"))
            }
            WaitError::Failed(inner) => inner.into(),
        }
    }
}

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub name: String,
    /// Parent of the lab directory.
    pub root: PathBuf,
    pub subnet: Option<String>,
    pub clients: usize,
    pub objectstore: ObjectStore,
    /// ceph.conf settings applied over miglab's own.
    pub conf_overrides: Vec<ceph::ConfOverride>,
    /// From the first daemon start to PGs active+clean and an MDS active.
    pub ready_timeout: Duration,
    /// For one-shot steps: mkfs, the admin connection, mounts.
    pub step_timeout: Duration,
    pub stop: StopPolicy,
    /// Start an sshd in every client host and write `topology.toml` (`lab up --ssh`).
    pub ssh: bool,
    /// Told of each bring-up step as it completes.
    pub on_step: OnStep,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            name: "default".into(),
            root: paths::lab_root(),
            subnet: None,
            clients: 2,
            objectstore: ObjectStore::Bluestore,
            conf_overrides: Vec::new(),
            ready_timeout: Duration::from_secs(90),
            step_timeout: Duration::from_secs(60),
            stop: StopPolicy::default(),
            ssh: false,
            on_step: OnStep::default(),
        }
    }
}

/// A client host of the local lab: a network namespace on the lab bridge.
#[derive(Debug, Clone)]
pub struct LabHost {
    layout: ClientLayout,
}

impl Host for LabHost {
    fn name(&self) -> &str {
        &self.layout.name
    }
    fn address(&self) -> Ipv4Addr {
        self.layout.addr
    }
    fn mount_point(&self) -> PathBuf {
        self.layout.mount.clone()
    }
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(paths::tool(program));
        // The namespace was checked when the lab was opened; a vanished one fails at spawn.
        let _ = process::enter_netns(&mut cmd, &net::netns_path(&self.layout.netns));
        cmd
    }
    fn netns_path(&self) -> Option<PathBuf> {
        Some(net::netns_path(&self.layout.netns))
    }
}

/// A running local lab.
pub struct Lab {
    layout: LabLayout,
    state: Arc<StateFile>,
    sup: Supervisor,
    admin: Mutex<Option<Admin>>,
    hosts: Vec<LabHost>,
    timings: Mutex<Timings>,
    /// Told of the bring-up's steps, while `up` runs.
    on_step: OnStep,
    steps_done: std::sync::atomic::AtomicU64,
    stop: StopPolicy,
    step_timeout: Duration,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("name", &self.layout.name).field("dir", &self.layout.dir).finish()
    }
}

pub(super) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

impl Lab {
    fn with_state(
        layout: LabLayout,
        state: Arc<StateFile>,
        stop: StopPolicy,
        step_timeout: Duration,
    ) -> Self {
        let hosts = layout.clients.iter().map(|c| LabHost { layout: c.clone() }).collect();
        let sup = Supervisor::new(stop, Some(state.clone() as Arc<dyn process::Ledger>));
        Self {
            layout,
            state,
            sup,
            admin: Mutex::new(None),
            hosts,
            timings: Mutex::new(Timings::new()),
            on_step: OnStep::default(),
            steps_done: Default::default(),
            stop,
            step_timeout,
        }
    }

    /// Attaches to the running lab `name` under `root`.
    pub fn open(name: &str, root: &Path) -> Result<Lab, LabError> {
        let layout = LabLayout::new(name, root, None, 1)?;
        if !layout.state_file().exists() {
            return Err(LabError::NotFound { name: name.into(), dir: layout.dir });
        }
        let state = Arc::new(StateFile::open(&layout.state_file())?);
        // The recorded layout is the truth (it may have a custom subnet or client count).
        let layout = state.snapshot().layout;
        Ok(Lab::with_state(layout, state, StopPolicy::default(), LabOptions::default().step_timeout))
    }

    pub fn layout(&self) -> &LabLayout {
        &self.layout
    }

    /// When each bring-up phase started and how long it took (phases overlap).
    pub fn timings(&self) -> Timings {
        self.timings_lock().clone()
    }

    fn timings_lock(&self) -> MutexGuard<'_, Timings> {
        self.timings.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mark(&self, phase: &str, start: Instant) {
        self.timings_lock().record(phase, start);
        tracing::info!(lab = %self.layout.name, phase, ms = start.elapsed().as_millis() as u64, "bring-up step done");
        let done = self.steps_done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        self.on_step.tell(Step::Done { done, total: bringup::UP_STEPS, what: phase });
    }

    pub fn state(&self) -> LabState {
        self.state.snapshot()
    }

    fn conf_args(&self) -> [String; 2] {
        ["-c".into(), self.layout.conf().display().to_string()]
    }

    fn log(&self, name: &str) -> PathBuf {
        self.layout.log_dir().join(format!("{name}.out"))
    }

    /// The command line of a daemon: in the foreground (`-f`) so that the supervisor owns the
    /// very process it started.
    pub fn rss_kib(&self) -> u64 {
        self.state
            .snapshot()
            .processes
            .iter()
            // The admin channel is miglab's, not the lab's: it goes when miglab exits.
            .filter(|p| p.name != "admin" && process::is_alive(p))
            .filter_map(|p| process::rss_kib(p.pid))
            .sum()
    }

    /// Stops the lab: everything in the state file, then the checks for leftovers.
    pub fn down(self) -> Result<(), LabError> {
        let name = self.layout.name.clone();
        let root = self.layout.dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let stop = self.stop;
        self.close_admin();
        drop(self);
        teardown::down(&name, &root, stop)
    }

    fn host_layout(&self, name: &str) -> Result<&ClientLayout, LabError> {
        self.layout.client(name).ok_or_else(|| LabError::UnknownHost(name.into()))
    }

    /// Shapes (tbf) or restores host `host`'s link.
    pub fn shape(&self, host: &str, shape: Option<LinkShape>) -> Result<(), LabError> {
        let c = self.host_layout(host)?;
        net::shape(&c.netns, &c.veth, shape)?;
        Ok(())
    }

    /// Cuts host `host` off the lab network (its packets dropped on the bridge) or heals it.
    pub fn cut(&self, host: &str, cut: bool) -> Result<(), LabError> {
        let veth = self.host_layout(host)?.veth.clone();
        let table = self.layout.nft_table.clone();
        let mut links = Vec::new();
        self.state.update(|s| {
            s.partitioned.retain(|l| *l != veth);
            if cut {
                s.partitioned.push(veth.clone());
            }
            if !s.nft_tables.contains(&table) {
                s.nft_tables.push(table.clone());
            }
            links = s.partitioned.clone();
        })?;
        net::partition(&table, &links)?;
        Ok(())
    }

    /// Links a hand command (`miglab lab link`) left cut or shaped, each with the command that
    /// restores it: a run on such a lab would measure another network (or hang on a mount).
    pub fn altered_links(&self) -> Result<Vec<String>, LabError> {
        let cut = self.state.snapshot().partitioned;
        let mut out = Vec::new();
        for c in &self.layout.clients {
            let fix = |what: &str, flag: &str| {
                format!(
                    "{}'s link is {what} (`miglab lab link --name {} {} {flag}`)",
                    c.name, self.layout.name, c.name
                )
            };
            if cut.contains(&c.veth) {
                out.push(fix("cut", "--heal"));
            }
            if net::shaped(&c.netns, &c.veth)? {
                out.push(fix("shaped", "--unshape"));
            }
        }
        Ok(out)
    }

    /// The local host `name`.
    pub fn lab_host(&self, name: &str) -> Result<&LabHost, LabError> {
        self.hosts.iter().find(|h| h.name() == name).ok_or_else(|| LabError::UnknownHost(name.into()))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.close_admin();
    }
}
impl Topology for Lab {
    fn daemons(&self) -> Vec<DaemonId> {
        let c = self.state.snapshot().cluster;
        let mut v =
            vec![DaemonId::new(DaemonKind::Mon, ceph::MON_ID), DaemonId::new(DaemonKind::Mgr, ceph::MGR_ID)];
        v.extend((0..c.osds).map(|i| DaemonId::new(DaemonKind::Osd, i.to_string())));
        v.extend(c.mds.iter().map(|m| DaemonId::new(DaemonKind::Mds, m.as_str())));
        v
    }

    fn daemon(&self, id: &DaemonId, action: DaemonAction) -> Result<(), TopologyError> {
        Ok(self.daemon_action(id, action)?)
    }

    fn config_set(&self, id: &DaemonId, key: &str, value: &str) -> Result<(), TopologyError> {
        Ok(self.tell(id, key, value)?)
    }

    fn shape_link(&self, host: &str, shape: Option<LinkShape>) -> Result<(), TopologyError> {
        Ok(self.shape(host, shape)?)
    }

    fn cut_link(&self, host: &str, cut: bool) -> Result<(), TopologyError> {
        Ok(self.cut(host, cut)?)
    }

    fn active_mds(&self) -> Result<Option<DaemonId>, TopologyError> {
        let s = self.status()?;
        Ok(s.active_mds().first().map(|m| DaemonId::new(DaemonKind::Mds, *m)))
    }

    fn osd_out(&self, osd: u32, out: bool) -> Result<(), TopologyError> {
        Ok(self.mon_command(
            if out { "osd out" } else { "osd in" },
            serde_json::json!({ "ids": [osd.to_string()] }),
        )?)
    }

    fn osd_down(&self, osd: u32) -> Result<(), TopologyError> {
        Ok(self.mon_command("osd down", serde_json::json!({ "ids": [osd.to_string()] }))?)
    }

    fn mds_fail(&self, mds: &DaemonId) -> Result<(), TopologyError> {
        Ok(self.mon_command("mds fail", serde_json::json!({ "role_or_gid": mds.id }))?)
    }

    fn health(&self) -> Result<(bool, String), TopologyError> {
        let s = self.status()?;
        Ok((s.healthy(2 * ceph::PG_PER_POOL), s.summary()))
    }

    fn client_config_set(&self, host: &str, key: &str, value: &str) -> Result<(), TopologyError> {
        Ok(self.client_tell(host, key, value)?)
    }

    fn config_get(&self, id: &DaemonId, key: &str) -> Result<String, TopologyError> {
        Ok(self.tell_get(id, key)?)
    }

    fn client_config_get(&self, host: &str, key: &str) -> Result<String, TopologyError> {
        Ok(self.client_get(host, key)?)
    }

    fn journal(&self) -> Vec<super::journal::Entry> {
        self.state.snapshot().journal
    }

    fn journal_update(
        &self,
        f: &mut dyn FnMut(&mut Vec<super::journal::Entry>),
    ) -> Result<(), TopologyError> {
        self.state.update(|s| f(&mut s.journal)).map_err(LabError::from)?;
        Ok(())
    }

    fn ensure_mount(&self, host: &str, timeout: Duration) -> Result<Option<String>, TopologyError> {
        Ok(self.remount_if_dead(host, timeout)?)
    }

    fn client_session(&self, host: &str) -> Result<super::ClientSession, TopologyError> {
        self.lab_host(host)?;
        Ok(self.client_status(host)?)
    }

    fn evict_client(&self, mds: &DaemonId, id: u64) -> Result<(), TopologyError> {
        Ok(self.client_evict(mds, id)?)
    }

    fn blocklist(&self, addr: &str, add: bool) -> Result<(), TopologyError> {
        Ok(self.osd_blocklist(addr, add)?)
    }

    fn kill_client(&self, host: &str) -> Result<(), TopologyError> {
        self.lab_host(host)?;
        if !self.kill_fuse(host)? {
            return Err(LabError::UnknownDaemon(format!("ceph-fuse.{host}")).into());
        }
        Ok(())
    }

    fn fs_get(&self, key: &str) -> Result<String, TopologyError> {
        Ok(self.fs_setting(key)?)
    }

    fn fs_set(&self, key: &str, value: &str) -> Result<(), TopologyError> {
        Ok(self.mon_command(
            "fs set",
            serde_json::json!({ "fs_name": ceph::FS_NAME, "var": key, "val": value }),
        )?)
    }
}

impl Site for Lab {
    fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name().to_string()).collect()
    }

    fn host(&self, name: &str) -> Result<&dyn Host, TopologyError> {
        Ok(self.lab_host(name)? as &dyn Host)
    }

    fn spawn(&self, host: &str, spec: ProcessSpec) -> Result<ProcRecord, TopologyError> {
        let netns = self.lab_host(host)?.netns_path();
        Ok(self.sup.spawn(&spec.in_netns(netns))?)
    }

    fn stop(&self, rec: &ProcRecord) -> Result<(), TopologyError> {
        Ok(self.sup.stop(rec)?)
    }

    fn signal(&self, rec: &ProcRecord, signal: Signal) -> Result<(), TopologyError> {
        Ok(self.sup.signal(rec, signal)?)
    }

    fn exit_status(&self, rec: &ProcRecord) -> Option<String> {
        self.sup.exit_status(rec)
    }

    fn process(&self, name: &str) -> Option<ProcRecord> {
        self.state.snapshot().process(name).cloned()
    }

    fn cluster_processes(&self) -> Vec<ProcRecord> {
        let s = self.state.snapshot();
        s.processes.iter().filter(|p| p.tier != crate::process::Tier::Guest).cloned().collect()
    }

    fn record_instance(&self, id: &str, record: serde_json::Value) -> Result<(), TopologyError> {
        self.state
            .update(|s| {
                s.instances.retain(|i| i.id != id);
                s.instances.push(Instance { id: id.into(), record });
            })
            .map_err(LabError::from)?;
        Ok(())
    }

    fn forget_instance(&self, id: &str) -> Result<(), TopologyError> {
        self.state.update(|s| s.instances.retain(|i| i.id != id)).map_err(LabError::from)?;
        Ok(())
    }

    fn instances(&self) -> Vec<Instance> {
        self.state.snapshot().instances
    }

    fn instances_dir(&self) -> PathBuf {
        self.layout.dir.join("vms")
    }

    fn migration_address(&self, host: &str) -> Result<IpAddr, TopologyError> {
        Ok(IpAddr::V4(self.lab_host(host)?.address()))
    }

    fn proxy_address(&self) -> IpAddr {
        // The bridge's address, in the root namespace, where every host's traffic arrives.
        IpAddr::V4(self.layout.gateway)
    }

    fn log_dir(&self) -> PathBuf {
        self.layout.log_dir()
    }
}
