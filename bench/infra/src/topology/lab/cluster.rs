//! The lab's Ceph cluster at work: the admin channel (one librados connection), readiness
//! polls, and what can be done to a daemon (stop, freeze, resume, kill, restart, `ceph tell`).

use super::super::admin::{Admin, AdminError};
use super::super::ceph::{config_value, Status};
use super::super::{pending_osd_ops, pending_requests, ClientSession, DaemonId, PendingRequest, Topology};
use super::{Lab, LabError, POLL};
use crate::paths;
use crate::process::{self, ProcRecord};
use crate::wait::{self, WaitError};
use miglab_faults::DaemonAction;
use std::process::Command;
use std::sync::MutexGuard;
use std::time::Duration;

impl Lab {
    pub(super) fn connect_admin(&self) -> Result<(), LabError> {
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
    pub(super) fn admin(&self) -> Result<MutexGuard<'_, Option<Admin>>, LabError> {
        if self.admin_lock().is_none() {
            self.connect_admin()?;
        }
        Ok(self.admin_lock())
    }

    pub(super) fn close_admin(&self) {
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
    pub(super) fn explain_dead_daemon(&self) -> Option<LabError> {
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

    /// Does `action` to daemon `id`; returns once its effect is seen.
    pub fn daemon_action(&self, id: &DaemonId, action: DaemonAction) -> Result<(), LabError> {
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

    /// A monitor command through the admin channel.
    pub fn mon_command(&self, prefix: &str, args: serde_json::Value) -> Result<(), LabError> {
        let mut a = self.admin()?;
        a.as_mut().ok_or(AdminError::NoPipes)?.mon(prefix, args)?;
        Ok(())
    }

    /// `args` to `host`'s ceph-fuse through its admin socket; its standard output.
    fn client_asok(&self, host: &str, args: &[&str]) -> Result<String, LabError> {
        let asok = self.layout.run_dir().join(format!("client.{host}.asok"));
        let out = process::run_tool(
            Command::new(paths::tool("ceph")).arg("--admin-daemon").arg(&asok).args(args),
            self.step_timeout,
        )?;
        Ok(out.stdout)
    }

    /// A setting of `host`'s ceph-fuse, through its admin socket.
    pub fn client_tell(&self, host: &str, key: &str, value: &str) -> Result<(), LabError> {
        self.client_asok(host, &["config", "set", key, value])?;
        Ok(())
    }

    /// A setting of `host`'s ceph-fuse as it runs, through its admin socket.
    pub fn client_get(&self, host: &str, key: &str) -> Result<String, LabError> {
        Ok(config_value(&self.client_asok(host, &["config", "get", key])?, key))
    }

    /// `host`'s ceph-fuse's session: its id and address (admin socket `status`).
    pub fn client_status(&self, host: &str) -> Result<ClientSession, LabError> {
        let out = self.client_asok(host, &["status"])?;
        ClientSession::from_status(&out).ok_or_else(|| LabError::ClientStatus {
            host: host.into(),
            said: out.chars().take(300).collect(),
        })
    }

    /// The requests `host`'s ceph-fuse has sent and not had answered: to the MDS, then to OSDs.
    pub fn client_requests(&self, host: &str) -> Result<Vec<PendingRequest>, LabError> {
        let mut r = pending_requests(&self.client_asok(host, &["mds_requests"])?);
        r.extend(pending_osd_ops(&self.client_asok(host, &["objecter_requests"])?));
        Ok(r)
    }

    /// `ceph tell <mds> client evict id=<id>`.
    pub fn client_evict(&self, mds: &DaemonId, id: u64) -> Result<(), LabError> {
        self.known_daemon(mds)?;
        self.tell_cli(mds, &["client", "evict", &format!("id={id}")])?;
        Ok(())
    }

    /// A field of the file system's MDS map (`ceph fs get <fs>`), as text.
    pub fn fs_setting(&self, key: &str) -> Result<String, LabError> {
        let mut a = self.admin()?;
        let out = a.as_mut().ok_or(AdminError::NoPipes)?.command(
            serde_json::json!({ "prefix": "fs get", "fs_name": super::super::ceph::FS_NAME, "format": "json" }),
        )?;
        let v: serde_json::Value = serde_json::from_str(&out)
            .map_err(|e| LabError::Wait(format!("`ceph fs get` answered no JSON ({e}): {out}")))?;
        match &v["mdsmap"][key] {
            serde_json::Value::Null => Err(LabError::Wait(format!("the MDS map has no {key}"))),
            serde_json::Value::String(s) => Ok(s.clone()),
            other => Ok(other.to_string()),
        }
    }

    /// `ceph osd blocklist add|rm <addr>`.
    pub fn osd_blocklist(&self, addr: &str, add: bool) -> Result<(), LabError> {
        self.mon_command(
            "osd blocklist",
            serde_json::json!({ "blocklistop": if add { "add" } else { "rm" }, "addr": addr }),
        )
    }

    /// `ceph tell <id> config get <key>`: what an undo sets back.
    pub fn tell_get(&self, id: &DaemonId, key: &str) -> Result<String, LabError> {
        self.known_daemon(id)?;
        if id.kind == super::super::DaemonKind::Osd {
            let mut a = self.admin()?;
            let out = a.as_mut().ok_or(AdminError::NoPipes)?.command(
                serde_json::json!({ "prefix": "config get", "var": key, "format": "json", "_target": id.to_string() }),
            )?;
            return Ok(config_value(&out, key));
        }
        Ok(config_value(&self.tell_cli(id, &["config", "get", key, "-f", "json"])?, key))
    }

    /// `ceph tell <id> <args>` through the `ceph` CLI; its standard output.
    fn tell_cli(&self, id: &DaemonId, args: &[&str]) -> Result<String, LabError> {
        let target = id.to_string();
        let out = process::run_tool(
            Command::new(paths::tool("ceph"))
                .args(self.conf_args())
                .args(["--connect-timeout", "10", "tell", &target])
                .args(args),
            self.step_timeout,
        )?;
        Ok(out.stdout)
    }

    /// `ceph tell <id> config set <key> <value>`: through the admin channel for an OSD (fast:
    /// a fault flips settings on every OSD at once), through the `ceph` CLI otherwise.
    pub fn tell(&self, id: &DaemonId, key: &str, value: &str) -> Result<(), LabError> {
        if id.kind == super::super::DaemonKind::Osd {
            self.known_daemon(id)?;
            let mut a = self.admin()?;
            a.as_mut()
                .ok_or(AdminError::NoPipes)?
                // The daemon's `config set` (Pacific): `var`, and `val` as a list (`n=N`).
                .command(serde_json::json!({ "prefix": "config set", "var": key, "val": [value], "_target": id.to_string() }))?;
            return Ok(());
        }
        self.known_daemon(id)?;
        self.tell_cli(id, &["config", "set", key, value])?;
        Ok(())
    }
}
