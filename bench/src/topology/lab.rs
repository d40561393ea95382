//! The local lab: a throwaway Ceph cluster in the root network namespace, and client hosts as
//! network namespaces on one bridge, each with CephFS mounted through ceph-fuse.
//!
//! `Lab::up` builds it and leaves it running; `Lab::open` attaches to a running one (a later
//! `miglab` invocation); `down` tears down whatever the state file lists, even after a crash.

use super::admin::{Admin, AdminError};
use super::ceph::{self, ClusterSpec, ObjectStore, Status, FS_NAME, MGR_ID, MON_ID, PG_PER_POOL};
use super::layout::{ClientLayout, LabLayout, LayoutError};
use super::net::{self, NetError};
use super::state::{LabState, Phase, StateError, StateFile};
use super::{DaemonId, DaemonKind, Host, Topology};
use crate::paths;
use crate::process::{self, ProcRecord, ProcessError, ProcessSpec, StopPolicy, Supervisor, ToolError};
use crate::wait::{self, WaitError};
use miglab_faults::{DaemonAction, LinkShape};
use miglab_reports::Timings;
use serde::Serialize;
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
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

impl LabError {
    /// Exit code: 130 for an interrupt (as shells do), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LabError::Interrupted(_) => 130,
            _ => 1,
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
        }
    }
}

/// Whether the cluster reached a bring-up milestone, given the PG count it must have.
type Milestone = fn(&Status, u32) -> bool;

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
    stop: StopPolicy,
    step_timeout: Duration,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab").field("name", &self.layout.name).field("dir", &self.layout.dir).finish()
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// Checks what `lab up` needs before anything is created, so a missing piece costs nothing.
pub fn preflight() -> Result<(), LabError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(LabError::NotRoot);
    }
    let fix = "run `ci/setup` (or `miglab doctor` for the whole list)".to_string();
    for t in ["ceph-mon", "ceph-mgr", "ceph-osd", "ceph-mds", "ceph-fuse", "ceph", "monmaptool", "ip"] {
        if paths::find_tool(t).is_none() {
            return Err(LabError::MissingTool { tool: t.into(), fix });
        }
    }
    if !paths::system_python().exists() {
        return Err(LabError::MissingTool { tool: paths::system_python().display().to_string(), fix });
    }
    if !Path::new("/dev/fuse").exists() {
        return Err(LabError::MissingTool {
            tool: "/dev/fuse".into(),
            fix: "load the fuse module: `modprobe fuse`".into(),
        });
    }
    Ok(())
}

fn check_port_free(addr: Ipv4Addr, port: u16) -> Result<(), LabError> {
    // The lab's address does not exist yet; a wildcard listener on the port would still clash.
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map(drop)
        .map_err(|_| LabError::PortBusy { addr, port })
}

impl Lab {
    /// Builds the lab and waits until it is ready. On any failure, or Ctrl-C, whatever was
    /// started is torn down before the error is returned.
    pub fn up(opts: &LabOptions) -> Result<Lab, LabError> {
        let layout = LabLayout::new(&opts.name, &opts.root, opts.subnet.as_deref(), opts.clients)?;
        preflight()?;
        if layout.dir.exists() {
            let what = match StateFile::load(&layout.state_file()) {
                Ok(s) => format!("its state says {:?}", s.phase).to_lowercase(),
                Err(_) => "the directory exists".into(),
            };
            return Err(LabError::Exists { name: layout.name.clone(), dir: layout.dir.clone(), what });
        }
        for port in [layout.mon_port, layout.mon_port + 1] {
            check_port_free(layout.gateway, port)?;
        }
        for d in [layout.dir.clone(), layout.log_dir(), layout.run_dir()] {
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
        }
        let mut cluster = ClusterSpec::new(opts.objectstore);
        cluster.overrides = opts.conf_overrides.clone();
        let state = Arc::new(StateFile::create(layout.state_file(), LabState::new(layout.clone(), cluster))?);
        let mut lab = Lab::with_state(layout, state, opts.stop, opts.step_timeout);
        match lab.build(opts) {
            Ok(()) => {
                lab.state.update(|s| s.phase = Phase::Up)?;
                Ok(lab)
            }
            Err(e) => {
                let _ = lab.state.update(|s| s.phase = Phase::Failed);
                let name = lab.layout.name.clone();
                let root = opts.root.clone();
                lab.close_admin();
                drop(lab);
                // The lab's own error comes first; a teardown problem is added to it.
                if let Err(t) = down(&name, &root, opts.stop) {
                    eprintln!("miglab: teardown after the failure also failed: {t}");
                }
                Err(e)
            }
        }
    }

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
    fn daemon_spec(&self, id: &DaemonId) -> ProcessSpec {
        ProcessSpec::new(id.to_string(), paths::tool(&id.kind.program()), self.log(&id.to_string()))
            .args(["-f", "-i", &id.id])
            .args(self.conf_args())
    }

    fn fuse_spec(&self, host: &ClientLayout) -> ProcessSpec {
        ProcessSpec::new(
            format!("ceph-fuse.{}", host.name),
            paths::tool("ceph-fuse"),
            self.log(&format!("client.{}", host.name)),
        )
        .args(["-f", "-n", &format!("client.{}", host.name)])
        .args(self.conf_args())
        .arg(&host.mount)
        .in_netns(Some(net::netns_path(&host.netns)))
    }

    fn build(&mut self, opts: &LabOptions) -> Result<(), LabError> {
        let layout = self.layout.clone();
        let cluster = self.state.snapshot().cluster;

        let t = Instant::now();
        self.state.update(|s| s.links.push(layout.bridge.clone()))?;
        net::create_bridge(&layout.bridge, layout.gateway, layout.prefix)?;
        for c in &layout.clients {
            self.state.update(|s| {
                s.netns.push(c.netns.clone());
                s.links.push(c.veth.clone());
            })?;
            net::create_host(&c.netns, &c.veth, &layout.bridge, c.addr, layout.prefix)?;
        }
        self.mark("network", t);

        let t = Instant::now();
        let clients: Vec<String> = layout.clients.iter().map(|c| c.name.clone()).collect();
        std::fs::write(layout.conf(), ceph::render_conf(&layout, &cluster)).map_err(io("write ceph.conf"))?;
        std::fs::write(layout.keyring(), ceph::render_keyring(&ceph::entities(&cluster, &clients)))
            .map_err(io("write the keyring"))?;
        let ceph_dir = layout.ceph_dir();
        for d in ["mon", "mgr", "mds", "osd", "crash"] {
            std::fs::create_dir_all(ceph_dir.join(d)).map_err(io(format!("create {d} dir")))?;
        }
        for m in &cluster.mds {
            std::fs::create_dir_all(ceph_dir.join(format!("mds/mds.{m}"))).map_err(io("create mds dir"))?;
        }
        std::fs::create_dir_all(ceph_dir.join(format!("mgr/mgr.{MGR_ID}"))).map_err(io("create mgr dir"))?;
        self.mark("files", t);

        // OSD mkfs needs no monitor (the fsid is in ceph.conf): run it while the mon starts.
        let t_mkfs = Instant::now();
        let osd_uuids: Vec<String> =
            (0..cluster.osds).map(|_| ceph::ClusterSpec::new(cluster.objectstore).fsid).collect();
        let mkfs: Vec<_> = (0..cluster.osds)
            .map(|i| {
                let dir = ceph_dir.join(format!("osd/{i}"));
                let mut cmd = Command::new(paths::tool("ceph-osd"));
                cmd.args(self.conf_args()).args([
                    "-i",
                    &i.to_string(),
                    "--mkfs",
                    "--no-mon-config",
                    "--osd-uuid",
                    &osd_uuids[i as usize],
                ]);
                let timeout = self.step_timeout;
                std::thread::spawn(move || -> Result<(), LabError> {
                    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
                    process::run_tool(&mut cmd, timeout)?;
                    Ok(())
                })
            })
            .collect();

        let t = Instant::now();
        let monmap = ceph_dir.join("monmap");
        process::run_tool(
            Command::new(paths::tool("monmaptool"))
                .args([
                    "--create",
                    "--clobber",
                    "--fsid",
                    &cluster.fsid,
                    "--addv",
                    MON_ID,
                    &layout.mon_host(),
                ])
                .arg(&monmap),
            self.step_timeout,
        )?;
        process::run_tool(
            Command::new(paths::tool("ceph-mon"))
                .args(self.conf_args())
                .args(["--mkfs", "-i", MON_ID, "--monmap"])
                .arg(&monmap)
                .arg("--keyring")
                .arg(layout.keyring()),
            self.step_timeout,
        )?;
        let mon = DaemonId::new(DaemonKind::Mon, MON_ID);
        self.sup.spawn(&self.daemon_spec(&mon))?;
        let t_daemons = Instant::now();
        // The manager and the MDSs need only the monitor; they come up as standbys meanwhile.
        self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Mgr, MGR_ID)))?;
        for m in &cluster.mds {
            self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Mds, m.as_str())))?;
        }
        self.connect_admin()?;
        self.mark("mon", t);

        let t = Instant::now();
        {
            let mut admin = self.admin()?;
            let admin = admin.as_mut().ok_or(AdminError::NoPipes)?;
            for (i, uuid) in osd_uuids.iter().enumerate() {
                admin.mon("osd new", json!({ "uuid": uuid, "id": i }))?;
            }
            for pool in ["cephfs_metadata", "cephfs_data"] {
                admin.mon("osd pool create", json!({ "pool": pool, "pg_num": PG_PER_POOL }))?;
            }
            admin.mon(
                "fs new",
                json!({ "fs_name": FS_NAME, "metadata": "cephfs_metadata", "data": "cephfs_data" }),
            )?;
        }
        self.mark("pools+fs", t);

        for h in mkfs {
            h.join().map_err(|_| LabError::Wait("an OSD mkfs thread panicked".into()))??;
        }
        self.mark("osd-mkfs", t_mkfs);

        let t_osds = Instant::now();
        for i in 0..cluster.osds {
            self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Osd, i.to_string())))?;
        }

        // Milestones are stamped when the readiness poll first sees them, each from the
        // start of the daemons it depends on.
        let min_pgs = 2 * PG_PER_POOL;
        let mut pending: Vec<(&str, Instant, Milestone)> = vec![
            ("mgr", t_daemons, |s, _| s.mgrmap.available),
            ("osd-start", t_osds, |s, _| s.osds_all_up()),
            ("mds", t_daemons, |s, _| !s.active_mds().is_empty()),
            ("pgs-clean", t_osds, |s, min| s.pgs_clean(min)),
        ];
        let mut observe = |s: &Status| {
            pending.retain(|(name, start, reached)| {
                let done = reached(s, min_pgs);
                if done {
                    self.mark(name, *start);
                }
                !done
            });
        };
        // ceph-fuse gives up at once without an active MDS, which usually comes before the
        // PGs are clean: mount as soon as it exists, then wait for the rest.
        self.wait_ready(opts.ready_timeout, |s| {
            observe(s);
            !s.active_mds().is_empty()
        })?;
        let t_mounts = Instant::now();
        for c in &layout.clients {
            std::fs::create_dir_all(&c.mount).map_err(io(format!("create {}", c.mount.display())))?;
            self.state.update(|s| s.mounts.push(c.mount.clone()))?;
            self.sup.spawn(&self.fuse_spec(c))?;
        }
        self.wait_ready(opts.ready_timeout, |s| {
            observe(s);
            s.ready(min_pgs)
        })?;
        self.wait_mounts(opts.step_timeout)?;
        self.mark("mounts", t_mounts);
        self.timings_lock().finish();
        Ok(())
    }

    fn connect_admin(&self) -> Result<(), LabError> {
        let admin = Admin::connect(
            &self.sup,
            &paths::system_python(),
            &self.layout.ceph_dir(),
            &self.layout.conf(),
            &self.layout.keyring(),
            &self.log("admin"),
            self.step_timeout.min(Duration::from_secs(30)),
        )
        .map_err(|e| self.explain_dead_daemon().unwrap_or(e.into()))?;
        *self.admin_lock() = Some(admin);
        Ok(())
    }

    fn admin_lock(&self) -> MutexGuard<'_, Option<Admin>> {
        self.admin.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The admin channel, connected on first use.
    fn admin(&self) -> Result<MutexGuard<'_, Option<Admin>>, LabError> {
        if self.admin_lock().is_none() {
            self.connect_admin()?;
        }
        Ok(self.admin_lock())
    }

    fn close_admin(&self) {
        if let Some(a) = self.admin_lock().take() {
            let _ = a.close(&self.sup);
        }
    }

    /// The cluster's status through the admin channel.
    pub fn status(&self) -> Result<Status, LabError> {
        let mut a = self.admin()?;
        Ok(a.as_mut().ok_or(AdminError::NoPipes)?.status()?)
    }

    /// The raw `ceph status` JSON.
    pub fn status_json(&self) -> Result<String, LabError> {
        let mut a = self.admin()?;
        Ok(a.as_mut().ok_or(AdminError::NoPipes)?.status_json()?)
    }

    /// If a recorded daemon has died, the error that says so (with its log).
    fn explain_dead_daemon(&self) -> Option<LabError> {
        let state = self.state.snapshot();
        state.processes.iter().filter(|p| p.name != "admin").find_map(|p| {
            let status = self.sup.exit_status(p)?;
            // Ceph's own log often holds the reason when stderr does not.
            let ceph_log = self.layout.log_dir().join(format!("{}.log", p.name));
            let mut tail = process::log_tail(&p.log, 15);
            if ceph_log.exists() {
                tail = format!("{tail}\n--- {}:\n{}", ceph_log.display(), process::log_tail(&ceph_log, 15));
            }
            Some(LabError::DaemonDied { name: p.name.clone(), status, log: p.log.clone(), tail })
        })
    }

    /// Polls the cluster until `cond` holds, failing early if a daemon dies.
    pub fn wait_ready(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&Status) -> bool,
    ) -> Result<Status, LabError> {
        let mut last = Status::default();
        let r = wait::until("the cluster to become ready", timeout, POLL, || {
            if let Some(e) = self.explain_dead_daemon() {
                return Err(e);
            }
            let s = self.status()?;
            let ok = cond(&s);
            last = s.clone();
            Ok::<_, LabError>(ok.then_some(s))
        });
        match r {
            Err(WaitError::TimedOut(..)) => Err(LabError::NotReady {
                timeout,
                summary: last.summary(),
                status: self.status_json().unwrap_or_else(|e| e.to_string()),
            }),
            other => Ok(other?),
        }
    }

    fn wait_mounts(&self, timeout: Duration) -> Result<(), LabError> {
        for c in &self.layout.clients {
            let fuse = format!("ceph-fuse.{}", c.name);
            let r = wait::until(
                &format!("CephFS on {}", c.mount.display()),
                timeout,
                Duration::from_millis(20),
                || {
                    if let Some(rec) = self.state.snapshot().process(&fuse) {
                        if let Some(status) = self.sup.exit_status(rec) {
                            return Err(LabError::DaemonDied {
                                name: fuse.clone(),
                                status,
                                log: rec.log.clone(),
                                tail: process::log_tail(&rec.log, 15),
                            });
                        }
                    }
                    Ok::<_, LabError>(is_fuse_mounted(&c.mount).then_some(()))
                },
            );
            if let Err(WaitError::TimedOut(..)) = r {
                return Err(LabError::MountFailed {
                    host: c.name.clone(),
                    mount: c.mount.clone(),
                    timeout,
                    tail: process::log_tail(&self.log(&format!("client.{}", c.name)), 15),
                });
            }
            r?;
        }
        Ok(())
    }

    fn daemon_record(&self, id: &DaemonId) -> Result<ProcRecord, LabError> {
        self.state
            .snapshot()
            .process(&id.to_string())
            .cloned()
            .ok_or_else(|| LabError::UnknownDaemon(id.to_string()))
    }

    /// Waits until `rec` is stopped (`frozen`) or not.
    fn wait_state(&self, rec: &ProcRecord, id: &DaemonId, frozen: bool) -> Result<(), LabError> {
        let what = format!("{id} to be {}", if frozen { "frozen" } else { "running" });
        wait::until(&what, Duration::from_secs(5), Duration::from_millis(5), || {
            let st = process::proc_stat(rec.pid).map(|s| s.state);
            Ok::<_, LabError>((matches!(st, Some('T' | 't')) == frozen || st.is_none()).then_some(()))
        })?;
        Ok(())
    }

    fn known_daemon(&self, id: &DaemonId) -> Result<(), LabError> {
        if self.daemons().contains(id) {
            Ok(())
        } else {
            Err(LabError::UnknownDaemon(id.to_string()))
        }
    }

    /// Total resident memory of every lab process, in KiB.
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
        down(&name, &root, stop)
    }

    fn host_layout(&self, name: &str) -> Result<&ClientLayout, LabError> {
        self.layout.client(name).ok_or_else(|| LabError::UnknownHost(name.into()))
    }

    /// The supervisor every process of this lab (VMs included) is started through.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// Records a VM instance in the state file (before its processes start).
    pub fn record_vm(&self, vm: crate::vm::VmRecord) -> Result<(), LabError> {
        self.state.update(|s| {
            s.vms.retain(|v| v.instance() != vm.instance());
            s.vms.push(vm);
        })?;
        Ok(())
    }

    /// Forgets a VM instance that has been stopped.
    pub fn forget_vm(&self, instance: &str) -> Result<(), LabError> {
        self.state.update(|s| s.vms.retain(|v| v.instance() != instance))?;
        Ok(())
    }

    /// The VM instances this lab runs.
    pub fn vms(&self) -> Vec<crate::vm::VmRecord> {
        self.state.snapshot().vms
    }

    /// The newest record of a process by name.
    pub fn process(&self, name: &str) -> Option<ProcRecord> {
        self.state.snapshot().process(name).cloned()
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
    type Error = LabError;

    fn hosts(&self) -> Vec<&dyn Host> {
        self.hosts.iter().map(|h| h as &dyn Host).collect()
    }

    fn host(&self, name: &str) -> Result<&dyn Host, LabError> {
        self.hosts
            .iter()
            .find(|h| h.name() == name)
            .map(|h| h as &dyn Host)
            .ok_or_else(|| LabError::UnknownHost(name.into()))
    }

    fn daemons(&self) -> Vec<DaemonId> {
        let c = self.state.snapshot().cluster;
        let mut v = vec![DaemonId::new(DaemonKind::Mon, MON_ID), DaemonId::new(DaemonKind::Mgr, MGR_ID)];
        v.extend((0..c.osds).map(|i| DaemonId::new(DaemonKind::Osd, i.to_string())));
        v.extend(c.mds.iter().map(|m| DaemonId::new(DaemonKind::Mds, m.as_str())));
        v
    }

    fn daemon(&self, id: &DaemonId, action: DaemonAction) -> Result<(), LabError> {
        self.known_daemon(id)?;
        use nix::sys::signal::Signal;
        match action {
            DaemonAction::Stop => self.sup.stop(&self.daemon_record(id)?)?,
            // Signals take effect asynchronously: return once the daemon is seen stopped or
            // running, so that what the caller does next happens after the fault.
            DaemonAction::Freeze => {
                let rec = self.daemon_record(id)?;
                self.sup.signal(&rec, Signal::SIGSTOP)?;
                self.wait_state(&rec, id, true)?;
            }
            DaemonAction::Resume => {
                let rec = self.daemon_record(id)?;
                self.sup.signal(&rec, Signal::SIGCONT)?;
                self.wait_state(&rec, id, false)?;
            }
            DaemonAction::Kill => {
                let rec = self.daemon_record(id)?;
                self.sup.signal(&rec, Signal::SIGKILL)?;
                // Killed means gone: wait for it (and its group) so a restart cannot race it.
                self.sup.stop(&rec)?;
            }
            DaemonAction::Restart => {
                if let Ok(rec) = self.daemon_record(id) {
                    self.sup.stop(&rec)?;
                }
                self.sup.spawn(&self.daemon_spec(id))?;
            }
        }
        Ok(())
    }

    fn config_set(&self, id: &DaemonId, key: &str, value: &str) -> Result<(), LabError> {
        self.known_daemon(id)?;
        process::run_tool(
            Command::new(paths::tool("ceph")).args(self.conf_args()).args([
                "--connect-timeout",
                "10",
                "tell",
                &id.to_string(),
                "config",
                "set",
                key,
                value,
            ]),
            self.step_timeout,
        )?;
        Ok(())
    }

    fn shape_link(&self, host: &str, shape: Option<LinkShape>) -> Result<(), LabError> {
        let c = self.host_layout(host)?;
        net::shape(&c.netns, &c.veth, shape)?;
        Ok(())
    }

    fn cut_link(&self, host: &str, cut: bool) -> Result<(), LabError> {
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
}

/// Whether a FUSE file system is mounted exactly at `path`.
pub fn is_fuse_mounted(path: &Path) -> bool {
    mounts_under(path).iter().any(|(p, fstype)| p == path && fstype.starts_with("fuse"))
}

/// Mount points at or below `dir`, with their file-system types, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text).into_iter().filter(|(p, _)| p.starts_with(dir)).collect()
}

pub fn parse_mountinfo(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mount = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(unescape_mount(mount)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mount(s: &str) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v as char);
            i += 4;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

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
            let st = process::proc_stat(p.pid).filter(|_| process::is_alive(p));
            ProcessStatus {
                name: p.name.clone(),
                pid: p.pid,
                state: match st.map(|s| s.state) {
                    None => "dead".into(),
                    Some('T') => "frozen".into(),
                    Some(_) => "running".into(),
                },
                rss_kib: st.and_then(|_| process::rss_kib(p.pid)),
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

/// Tears down lab `name` from its state file: partitions healed, mounts unmounted, processes
/// stopped (newest first), links and namespaces deleted; then checks that nothing is left.
/// The logs survive in `<root>/<name>.logs`; the rest of the lab directory is removed.
pub fn down(name: &str, root: &Path, stop: StopPolicy) -> Result<(), LabError> {
    let layout = LabLayout::new(name, root, None, 1)?;
    if !layout.state_file().exists() {
        if layout.dir.exists() {
            // A lab killed before it wrote its state had created nothing but the directory.
            std::fs::remove_dir_all(&layout.dir).map_err(io(format!("remove {}", layout.dir.display())))?;
            return Ok(());
        }
        return Err(LabError::NotFound { name: name.into(), dir: layout.dir });
    }
    let file = Arc::new(StateFile::open(&layout.state_file())?);
    file.update(|s| s.phase = Phase::Stopping)?;
    let state = file.snapshot();
    let sup = Supervisor::new(stop, Some(file.clone() as Arc<dyn process::Ledger>));
    let mut problems = Vec::new();

    for t in &state.nft_tables {
        if let Err(e) = net::delete_nft_table(t) {
            problems.push(e.to_string());
        }
    }
    let stop_tier_of = |tier: u8, problems: &mut Vec<String>| {
        let batch: Vec<&ProcRecord> = state.processes.iter().filter(|p| stop_tier(&p.name) == tier).collect();
        // Processes of one tier stop in parallel: each may wait seconds for its peers.
        let errors: Vec<String> = std::thread::scope(|s| {
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
    // VMs first: virtiofsd holds files open on the CephFS mounts.
    stop_tier_of(0, &mut problems);
    // Unmount before stopping ceph-fuse, so the kernel is not left with a dead FUSE connection.
    for m in state.mounts.iter().rev() {
        if is_fuse_mounted(m) {
            unmount(m);
        }
    }
    for tier in 1..=3 {
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
    Ok(())
}

/// Processes stop in tiers: VMs, then clients, then the daemons that report their shutdown
/// to the monitor (an OSD whose monitor is gone waits 5 s for it), the monitor last.
fn stop_tier(name: &str) -> u8 {
    if name.starts_with("qemu.") || name.starts_with("virtiofsd.") {
        0
    } else if name.starts_with("mon.") {
        3
    } else if ["osd.", "mds.", "mgr."].iter().any(|p| name.starts_with(p)) {
        2
    } else {
        1
    }
}

fn unmount(path: &Path) {
    use nix::mount::{umount2, MntFlags};
    if umount2(path, MntFlags::empty()).is_err() {
        // Busy (a process has a file open): detach now, the kernel finishes when it can.
        let _ = umount2(path, MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_parsing_finds_fuse_mounts_and_unescapes() {
        let text = "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw\n\
                    88 29 0:52 / /var/lib/miglab/t/mnt/c1 rw,nosuid,nodev,relatime shared:300 - fuse.ceph-fuse ceph-fuse rw,user_id=0\n\
                    89 29 0:53 / /var/lib/miglab/t/mnt/with\\040space rw - fuse ceph-fuse rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], (PathBuf::from("/var/lib/miglab/t/mnt/c1"), "fuse.ceph-fuse".to_string()));
        assert_eq!(m[2].0, PathBuf::from("/var/lib/miglab/t/mnt/with space"));
    }
}
