//! Bringing a lab up: the network, ceph.conf and the keyring, the monitor, manager, OSDs and
//! MDSs in the order (and overlap) that is fastest, the mounts, and the wait for readiness —
//! PGs active+clean *and* an MDS active *and* both mounts present.

use super::super::admin::AdminError;
use super::super::ceph::{self, ClusterSpec, Status, FS_NAME, MGR_ID, MON_ID, PG_PER_POOL};
use super::super::layout::{ClientLayout, LabLayout, LAST_SLOT};
use super::super::mountinfo::is_fuse_mounted;
use super::super::net;
use super::super::slots;
use super::super::state::{LabState, Phase, StateFile};
use super::super::{DaemonId, DaemonKind};
use super::{down, io, Lab, LabError, LabOptions};
use crate::paths;
use crate::process::{self, ProcessSpec, Tier};
use crate::steps::{OnStep, Step};
use crate::wait::{self, WaitError};
use serde_json::json;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the cluster reached a bring-up milestone, given the PG count it must have.
type Milestone = fn(&Status, u32) -> bool;

/// Writes a file only root can read (the keyring).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())
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

/// `layout` on the slot this machine gives the lab (its preferred one unless another lab holds
/// it), the slot claimed, its ports checked free.
fn claim_slot(layout: &LabLayout, opts: &LabOptions) -> Result<LabLayout, LabError> {
    // A bridge of the slot's name is a lab of a build before claims: its slot is not free.
    let usable = |slot: u16| !Path::new(&format!("/sys/class/net/mlbr{slot}")).exists();
    let slot = slots::claim(&slots::claims_dir(), layout.slot, LAST_SLOT, &layout.dir, usable)?;
    let layout = if slot == layout.slot {
        layout.clone()
    } else {
        LabLayout::on_slot(&opts.name, &opts.root, opts.subnet.as_deref(), opts.clients, slot)?
    };
    for port in [layout.mon_port, layout.mon_port + 1] {
        check_port_free(layout.gateway, port)?;
    }
    Ok(layout)
}

fn check_port_free(addr: Ipv4Addr, port: u16) -> Result<(), LabError> {
    // The lab's address does not exist yet; a wildcard listener on the port would still clash.
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        .map(drop)
        .map_err(|_| LabError::PortBusy { addr, port })
}

/// The steps `build` marks: network, files, mon, pools+fs, osd-mkfs, mgr, osd-start, mds,
/// pgs-clean, mounts.
pub(super) const UP_STEPS: u64 = 10;

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
        std::fs::create_dir_all(&layout.dir).map_err(io(format!("create {}", layout.dir.display())))?;
        let layout = match claim_slot(&layout, opts) {
            Ok(l) => l,
            Err(e) => {
                slots::release(&slots::claims_dir(), &layout.dir);
                let _ = std::fs::remove_dir_all(&layout.dir);
                return Err(e);
            }
        };
        for d in [layout.log_dir(), layout.run_dir()] {
            std::fs::create_dir_all(&d).map_err(io(format!("create {}", d.display())))?;
        }
        // The keyring, the QMP and control sockets of every VM live below: root's alone.
        std::fs::set_permissions(&layout.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io(format!("restrict {}", layout.dir.display())))?;
        let mut cluster = ClusterSpec::new(opts.objectstore);
        cluster.overrides = opts.conf_overrides.clone();
        let state = Arc::new(StateFile::create(layout.state_file(), LabState::new(layout.clone(), cluster))?);
        let mut lab = Lab::with_state(layout, state, opts.stop, opts.step_timeout);
        lab.on_step = opts.on_step.clone();
        let built = lab.build(opts);
        lab.on_step.tell(Step::Finished);
        lab.on_step = OnStep::default();
        match built {
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

    /// The command line of a daemon: in the foreground (`-f`) so that the supervisor owns the
    /// very process it started.
    pub(super) fn daemon_spec(&self, id: &DaemonId) -> ProcessSpec {
        let tier = if id.kind == DaemonKind::Mon { Tier::Monitor } else { Tier::Daemon };
        ProcessSpec::new(id.to_string(), paths::tool(&id.kind.program()), self.log(&id.to_string()))
            .tier(tier)
            .args(["-f", "-i", &id.id])
            .args(self.conf_args())
    }

    /// A host's ceph-fuse; `armed`, its messenger can delay what it sends to OSDs and MDSs
    /// (the storage-delay fault: only connections opened after the type is set are delayed).
    fn fuse_spec(&self, host: &ClientLayout, armed: bool) -> ProcessSpec {
        ProcessSpec::new(
            format!("ceph-fuse.{}", host.name),
            paths::tool("ceph-fuse"),
            self.log(&format!("client.{}", host.name)),
        )
        .tier(Tier::Client)
        .args(["-f", "-n", &format!("client.{}", host.name)])
        .args(self.conf_args())
        .arg(format!("--ms_inject_delay_type={}", if armed { CLIENT_DELAY_TYPES } else { "" }))
        .arg(&host.mount)
        .in_netns(Some(net::netns_path(&host.netns)))
    }

    /// Whether `host`'s ceph-fuse is armed for a storage delay (see [`Lab::fuse_spec`]).
    fn client_armed(&self, host: &str) -> Option<bool> {
        self.client_get(host, "ms_inject_delay_type").ok().map(|t| !t.trim().is_empty())
    }

    /// Mounts `host`'s CephFS again armed or not, if it is not already (true: it was). Only
    /// between runs: a guest's virtiofsd on the old mount would lose its files.
    pub fn arm_client(&self, host: &str, armed: bool) -> Result<bool, LabError> {
        if self.client_armed(host) == Some(armed) {
            return Ok(false);
        }
        let c = self.host_layout(host)?.clone();
        self.mount_again(&c, armed)?;
        Ok(true)
    }

    /// A fresh ceph-fuse on `c`'s mount in place of the one there, its old session ended.
    fn mount_again(&self, c: &ClientLayout, armed: bool) -> Result<(), LabError> {
        let old = self.client_status(&c.name).ok();
        self.kill_fuse(&c.name)?;
        if let Some(old) = old {
            // Best effort: a session already gone needs no ending.
            let _ = super::super::end_session(self, old.id, &old.addr);
        }
        super::teardown::unmount(&c.mount);
        self.sup.spawn(&self.fuse_spec(c, armed))?;
        self.wait_mount(c, self.step_timeout)
    }

    fn build(&mut self, opts: &LabOptions) -> Result<(), LabError> {
        let cluster = self.state.snapshot().cluster;
        self.network()?;
        self.files(&cluster)?;
        // OSD mkfs needs no monitor (the fsid is in ceph.conf): run it while the mon starts.
        let t_mkfs = Instant::now();
        let osd_uuids: Vec<String> =
            (0..cluster.osds).map(|_| ceph::ClusterSpec::new(cluster.objectstore).fsid).collect();
        let mkfs = self.osd_mkfs(&osd_uuids);
        let t_daemons = self.start_mon(&cluster)?;
        self.create_fs(&osd_uuids)?;
        for h in mkfs {
            h.join().map_err(|_| LabError::Wait("an OSD mkfs thread panicked".into()))??;
        }
        self.mark("osd-mkfs", t_mkfs);
        let t_osds = Instant::now();
        for i in 0..cluster.osds {
            self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Osd, i.to_string())))?;
        }
        self.ready_and_mounted(opts, t_daemons, t_osds)?;
        if opts.ssh {
            let t = Instant::now();
            self.start_sshd()?;
            self.mark("sshd", t);
        }
        self.timings_lock().finish();
        Ok(())
    }

    /// The bridge and a namespace with its veth per client host.
    fn network(&self) -> Result<(), LabError> {
        let (layout, t) = (&self.layout, Instant::now());
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
        Ok(())
    }

    /// ceph.conf, the keyring and the daemons' directories.
    fn files(&self, cluster: &ClusterSpec) -> Result<(), LabError> {
        let (layout, t) = (&self.layout, Instant::now());
        let clients: Vec<String> = layout.clients.iter().map(|c| c.name.clone()).collect();
        std::fs::write(layout.conf(), ceph::render_conf(layout, cluster)).map_err(io("write ceph.conf"))?;
        write_private(&layout.keyring(), &ceph::render_keyring(&ceph::entities(cluster, &clients)))
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
        Ok(())
    }

    /// Every OSD's mkfs, each on a thread of its own.
    fn osd_mkfs(&self, osd_uuids: &[String]) -> Vec<std::thread::JoinHandle<Result<(), LabError>>> {
        let ceph_dir = self.layout.ceph_dir();
        osd_uuids
            .iter()
            .enumerate()
            .map(|(i, uuid)| {
                let dir = ceph_dir.join(format!("osd/{i}"));
                let mut cmd = Command::new(paths::tool("ceph-osd"));
                cmd.args(self.conf_args()).args([
                    "-i",
                    &i.to_string(),
                    "--mkfs",
                    "--no-mon-config",
                    "--osd-uuid",
                    uuid,
                ]);
                let timeout = self.step_timeout;
                std::thread::spawn(move || -> Result<(), LabError> {
                    std::fs::create_dir_all(&dir).map_err(io(format!("create {}", dir.display())))?;
                    process::run_tool(&mut cmd, timeout)?;
                    Ok(())
                })
            })
            .collect()
    }

    /// The monitor made and started, then the manager and the MDSs (they need only the
    /// monitor and come up as standbys meanwhile), and the admin connection; returns when the
    /// daemons were started.
    fn start_mon(&self, cluster: &ClusterSpec) -> Result<Instant, LabError> {
        let (layout, t) = (&self.layout, Instant::now());
        let monmap = layout.ceph_dir().join("monmap");
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
        self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Mon, MON_ID)))?;
        let t_daemons = Instant::now();
        for m in &cluster.mds {
            self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Mds, m.as_str())))?;
        }
        self.connect_admin()?;
        // devicehealth (an always-on mgr module) creates a pool of its own on the first OSD map:
        // a 17th PG that peers while the lab waits for readiness (`lab up` took 3.2-4.3 s instead
        // of ~2 s whenever it came first) or, coming later, during the first run. Module options
        // live in the monitor's config database, not ceph.conf, and the monitor knows none before
        // a mgr reported it (hence `force`): set before the mgr starts, it is never seen unset.
        self.mon_command(
            "config set",
            json!({ "who": "mgr", "name": "mgr/devicehealth/enable_monitoring", "value": "false", "force": true }),
        )?;
        self.sup.spawn(&self.daemon_spec(&DaemonId::new(DaemonKind::Mgr, MGR_ID)))?;
        self.mark("mon", t);
        Ok(t_daemons)
    }

    /// The OSDs registered, the pools and the file system created.
    fn create_fs(&self, osd_uuids: &[String]) -> Result<(), LabError> {
        let t = Instant::now();
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
        self.mark("pools+fs", t);
        Ok(())
    }

    /// Waits for an active MDS, mounts every client (ceph-fuse gives up at once without one,
    /// which usually comes before the PGs are clean), then waits for the rest. Milestones are
    /// stamped when the readiness poll first sees them, each from the start of the daemons it
    /// depends on.
    fn ready_and_mounted(
        &self,
        opts: &LabOptions,
        t_daemons: Instant,
        t_osds: Instant,
    ) -> Result<(), LabError> {
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
        self.wait_ready(opts.ready_timeout, |s| {
            observe(s);
            !s.active_mds().is_empty()
        })?;
        let t_mounts = Instant::now();
        for c in &self.layout.clients {
            std::fs::create_dir_all(&c.mount).map_err(io(format!("create {}", c.mount.display())))?;
            self.state.update(|s| s.mounts.push(c.mount.clone()))?;
            self.sup.spawn(&self.fuse_spec(c, true))?;
        }
        self.wait_ready(opts.ready_timeout, |s| {
            observe(s);
            s.ready(min_pgs)
        })?;
        self.wait_mounts(opts.step_timeout)?;
        self.mark("mounts", t_mounts);
        Ok(())
    }

    fn wait_mounts(&self, timeout: Duration) -> Result<(), LabError> {
        for c in &self.layout.clients {
            self.wait_mount(c, timeout)?;
        }
        Ok(())
    }

    fn wait_mount(&self, c: &ClientLayout, timeout: Duration) -> Result<(), LabError> {
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
        Ok(())
    }

    /// Whether `host`'s mount is whole: it answers within `timeout` and no request of its client
    /// (to the MDS or an OSD) stays unanswered. If not (its client was evicted after a
    /// partition, or a request sent while it was fenced or dropped by its messenger is never
    /// answered: Ceph 16 does not resend it), a fresh
    /// ceph-fuse is mounted in its place, and this says why.
    pub(super) fn remount_if_dead(&self, host: &str, timeout: Duration) -> Result<Option<String>, LabError> {
        let c = self.host_layout(host)?.clone();
        let deadline = Instant::now() + timeout;
        let why = match mount_answers(&c.mount, deadline) {
            Err(why) => why,
            Ok(()) => match self.requests_stuck(host, deadline) {
                Some(why) => why,
                None => return Ok(None),
            },
        };
        let armed = self.client_armed(host).unwrap_or(true);
        self.mount_again(&c, armed)?;
        Ok(Some(why))
    }

    /// Kills `host`'s ceph-fuse (SIGKILL) and waits for it to be gone; false if the lab has no
    /// record of one.
    pub(super) fn kill_fuse(&self, host: &str) -> Result<bool, LabError> {
        let Some(rec) = self.state.snapshot().process(&format!("ceph-fuse.{host}")).cloned() else {
            return Ok(false);
        };
        self.sup.signal(&rec, nix::sys::signal::Signal::SIGKILL)?;
        self.sup.stop(&rec)?;
        Ok(true)
    }

    /// What keeps `host`'s client from being whole at `deadline`: a request older than
    /// [`STUCK_AFTER_S`] then. Polled until every request is fresh or the deadline: one sent
    /// just before a fence was lifted may still be answered, one dropped a second ago is not
    /// old yet.
    fn requests_stuck(&self, host: &str, deadline: Instant) -> Option<String> {
        loop {
            let pending = match self.client_requests(host) {
                Ok(r) => r,
                Err(e) => return Some(format!("has an admin socket that does not answer ({e})")),
            };
            // Only requests just sent (a workload's own traffic): the client answers.
            if pending.iter().all(|r| r.age_s < FRESH_S) {
                return None;
            }
            if Instant::now() + POLL_MOUNT >= deadline {
                let old: Vec<String> =
                    pending.iter().filter(|r| r.age_s > STUCK_AFTER_S).map(ToString::to_string).collect();
                return (!old.is_empty())
                    .then(|| format!("had {} request(s) never answered: {}", old.len(), old.join(", ")));
            }
            std::thread::sleep(POLL_MOUNT);
        }
    }
}

/// How old an unanswered request may be before a client counts as wedged: a request
/// in a healthy lab is answered in milliseconds.
const STUCK_AFTER_S: f64 = 5.0;
/// A request younger than this is traffic in flight, not a sign of trouble.
const FRESH_S: f64 = 1.0;
/// The peers whose messages an armed client can delay.
const CLIENT_DELAY_TYPES: &str = "osd mds";
const POLL_MOUNT: Duration = Duration::from_millis(200);

/// Whether `mount` answers a listing and a lookup of a name nobody made (a listing can come
/// from the client's cache; that lookup asks the MDS) before `deadline`. A client that answers
/// with an error (a fenced one: ESHUTDOWN until the blocklist is lifted and it reconnects) is
/// asked again until then. Each attempt runs on a thread: a call into a dead FUSE mount can
/// block until its daemon goes.
fn mount_answers(mount: &Path, deadline: Instant) -> Result<(), String> {
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (tx, rx) = std::sync::mpsc::channel();
        let m = mount.to_path_buf();
        let probe = m.join(format!(".miglab-probe-{}-{attempt}", std::process::id()));
        std::thread::spawn(move || {
            let r = std::fs::read_dir(&m).and_then(|_| match std::fs::symlink_metadata(&probe) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
                Ok(_) => Ok(()),
            });
            let _ = tx.send(r);
        });
        let said = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Ok(())) => return Ok(()),
            // Its ceph-fuse is gone: nothing to wait for.
            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOTCONN) => return Err(format!("answered {e}")),
            Ok(Err(e)) => format!("answered {e}"),
            Err(_) => return Err("did not answer".into()),
        };
        if Instant::now() + POLL_MOUNT >= deadline {
            return Err(said);
        }
        std::thread::sleep(POLL_MOUNT);
    }
}
