//! The external site as a `Topology`: what faults may do on hosts and a cluster that are not
//! miglab's — refused without `allow_destructive`, or not reachable yet.

use super::*;

/// Why `fault` cannot run on an existing cluster (with or without `allow_destructive`).
pub(super) fn refusal(fault: &Fault, allow_destructive: bool) -> Option<&'static str> {
    use miglab_faults::StorageTarget;
    match fault {
        Fault::OsdKill { .. } | Fault::OsdFreeze { .. } | Fault::MdsKill { .. } | Fault::MdsFreeze { .. } => {
            Some(DESTRUCTIVE)
        }
        Fault::LinkRate { .. }
        | Fault::Partition { .. }
        | Fault::MigrationLink { .. }
        | Fault::HostLoss { .. } => Some(NETWORK),
        Fault::StorageDelay { target: StorageTarget::Client(_), .. }
        | Fault::SocketFailures { target: StorageTarget::Client(_), .. }
        | Fault::MessengerBlackhole { target: StorageTarget::Client(_), .. } => Some(CLIENT),
        Fault::ClientEvict { .. } | Fault::ClientBlocklist { .. } => Some(CLIENT),
        Fault::ThirdPartyRename { .. } | Fault::ThirdPartyDelete { .. } => Some(
            "the third party renames through this machine's view of a mount; over SSH it is not built yet",
        ),
        Fault::OsdOut { .. }
        | Fault::MdsFail {}
        | Fault::StorageDelay { .. }
        | Fault::SocketFailures { .. }
        | Fault::MessengerBlackhole { .. }
            if !allow_destructive =>
        {
            Some(CHANGES)
        }
        _ => None,
    }
}

const DESTRUCTIVE: &str =
    "daemon kills and freezes on an existing cluster need a way to stop and start its daemons (their units over SSH), which is not built yet, whatever allow_destructive says: use osd-out, mds-fail or storage-delay (with allow_destructive = true in [ceph])";
const CHANGES: &str =
    "this fault changes the cluster (an OSD out, an MDS failed over, a messenger setting): on someone else's cluster it needs `allow_destructive = true` in [ceph]; each change is journaled and reverted, and `miglab lab down --topology` reverts what a killed miglab left";
const NETWORK: &str =
    "network faults shape the local lab's links; on an external topology they are not built yet";
const SETTINGS: &str = "a scenario's [ceph] settings change the whole file system: on an existing cluster they are not built yet";
const CLIENT: &str = "a CephFS client's settings on a remote host are not reachable yet (its admin socket)";

impl Topology for ExternalSite {
    fn daemons(&self) -> Vec<DaemonId> {
        self.daemons.clone()
    }

    fn daemon(&self, id: &DaemonId, action: DaemonAction) -> Result<(), TopologyError> {
        Err(self.refuse(&format!("{action:?} {id}"), DESTRUCTIVE))
    }

    fn config_set(&self, id: &DaemonId, key: &str, value: &str) -> Result<(), TopologyError> {
        self.ceph(&format!("tell {id} config set {} {}", quote(key), quote(value)))?;
        Ok(())
    }

    fn config_get(&self, id: &DaemonId, key: &str) -> Result<String, TopologyError> {
        let out = self.ceph(&format!("tell {id} config get {} -f json", quote(key)))?;
        Ok(crate::topology::ceph::config_value(&out, key))
    }

    fn client_config_get(&self, host: &str, key: &str) -> Result<String, TopologyError> {
        Err(self.refuse(&format!("read {key} of {host}'s CephFS client"), CLIENT))
    }

    fn journal(&self) -> Vec<crate::topology::journal::Entry> {
        self.read().journal
    }

    fn journal_update(
        &self,
        f: &mut dyn FnMut(&mut Vec<crate::topology::journal::Entry>),
    ) -> Result<(), TopologyError> {
        self.update(|s| f(&mut s.journal))?;
        Ok(())
    }

    fn shape_link(&self, host: &str, _shape: Option<LinkShape>) -> Result<(), TopologyError> {
        Err(self.refuse(&format!("shape {host}'s link"), NETWORK))
    }

    fn cut_link(&self, host: &str, _cut: bool) -> Result<(), TopologyError> {
        Err(self.refuse(&format!("cut {host}'s link"), NETWORK))
    }

    fn active_mds(&self) -> Result<Option<DaemonId>, TopologyError> {
        let s = self.status()?;
        Ok(s.active_mds().first().map(|m| DaemonId::new(DaemonKind::Mds, *m)))
    }

    fn osd_out(&self, osd: u32, out: bool) -> Result<(), TopologyError> {
        self.ceph(&format!("osd {} {osd}", if out { "out" } else { "in" }))?;
        Ok(())
    }

    fn osd_down(&self, osd: u32) -> Result<(), TopologyError> {
        self.ceph(&format!("osd down {osd}"))?;
        Ok(())
    }

    fn mds_fail(&self, mds: &DaemonId) -> Result<(), TopologyError> {
        self.ceph(&format!("mds fail {}", quote(&mds.id)))?;
        Ok(())
    }

    fn health(&self) -> Result<(bool, String), TopologyError> {
        let s = self.status()?;
        Ok((s.health.status == "HEALTH_OK" || s.healthy(1), s.summary()))
    }

    fn client_config_set(&self, host: &str, key: &str, _value: &str) -> Result<(), TopologyError> {
        Err(self.refuse(&format!("set {key} on {host}'s CephFS client"), CLIENT))
    }

    fn client_session(&self, host: &str) -> Result<crate::topology::ClientSession, TopologyError> {
        Err(self.refuse(&format!("read {host}'s CephFS client's session"), CLIENT))
    }

    fn evict_client(&self, mds: &DaemonId, id: u64) -> Result<(), TopologyError> {
        self.ceph(&format!("tell {mds} client evict id={id}"))?;
        Ok(())
    }

    fn blocklist(&self, addr: &str, add: bool) -> Result<(), TopologyError> {
        self.ceph(&format!("osd blocklist {} {}", if add { "add" } else { "rm" }, quote(addr)))?;
        Ok(())
    }

    fn kill_client(&self, host: &str) -> Result<(), TopologyError> {
        Err(self.refuse(&format!("kill {host}'s CephFS client"), DESTRUCTIVE))
    }

    fn fs_get(&self, key: &str) -> Result<String, TopologyError> {
        Err(self.refuse(&format!("read the file system's {key}"), SETTINGS))
    }

    fn fs_set(&self, key: &str, _value: &str) -> Result<(), TopologyError> {
        Err(self.refuse(&format!("set the file system's {key}"), SETTINGS))
    }

    fn ensure_mount(&self, host: &str, timeout: Duration) -> Result<Option<String>, TopologyError> {
        let h = self.remote_host(host)?;
        let secs = timeout.as_secs().max(1);
        h.sh(
            &format!("timeout {secs} stat -t {} >/dev/null", quote(&h.mount.display().to_string())),
            timeout + QUICK,
        )?;
        Ok(None)
    }

    fn shared_cluster(&self) -> bool {
        true
    }

    fn refuses(&self, fault: &Fault) -> Option<String> {
        refusal(fault, self.spec.ceph.allow_destructive).map(String::from)
    }
}
