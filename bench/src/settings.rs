//! A run's Ceph settings (`[ceph]`): each read, journaled and set before the guests start, and
//! set back when the run ends (`journal::revert` of its entry) — the fault journal's way, so a miglab killed mid-run has them
//! reverted by the next run's readiness check or `lab down`.

use crate::scenario::{CephSettings, SettingOf};
use miglab_infra::topology::journal::{Journal, Undo};
use miglab_infra::topology::{DaemonKind, Topology, TopologyError};

/// Sets `settings` on `topo` under journal entry `id`; says, for each, its value and the one
/// it replaced.
pub fn apply(topo: &dyn Topology, id: &str, settings: &CephSettings) -> Result<Vec<String>, TopologyError> {
    let j = Journal::begin(topo, id.to_string(), "the scenario's [ceph] settings")?;
    let mut said = Vec::new();
    for (of, key, value) in settings.changes() {
        match of {
            SettingOf::FileSystem => {
                let was = topo.fs_get(key)?;
                j.step(Undo::FsSetting { key: key.into(), value: was.clone() })?;
                topo.fs_set(key, &value)?;
                said.push(format!("the file system's {key} = {value} (was {was})"));
            }
            SettingOf::EveryMds => {
                for d in topo.daemons().into_iter().filter(|d| d.kind == DaemonKind::Mds) {
                    let was = topo.config_get(&d, key)?;
                    j.step(Undo::Config { daemon: d.clone(), key: key.into(), value: was.clone() })?;
                    topo.config_set(&d, key, &value)?;
                    said.push(format!("{key} = {value} on {d} (was {was})"));
                }
            }
            SettingOf::EveryClient => {
                for h in topo.host_names() {
                    let was = topo.client_config_get(&h, key)?;
                    j.step(Undo::ClientConfig { host: h.clone(), key: key.into(), value: was.clone() })?;
                    topo.client_config_set(&h, key, &value)?;
                    said.push(format!("{key} = {value} on client.{h} (was {was})"));
                }
            }
        }
    }
    Ok(said)
}

#[cfg(test)]
mod tests {
    use crate::scenario::{CephSettings, SettingOf};

    #[test]
    fn settings_name_ceph_s_keys_and_refuse_what_ceph_would_not_take() {
        let s = CephSettings {
            session_timeout_s: Some(40),
            session_autoclose_s: None,
            mds_cap_revoke_eviction_timeout_s: Some(5.0),
            client_reconnect_stale: Some(true),
        };
        assert_eq!(
            s.changes(),
            vec![
                (SettingOf::FileSystem, "session_timeout", "40".to_string()),
                (SettingOf::EveryMds, "mds_cap_revoke_eviction_timeout", "5".to_string()),
                (SettingOf::EveryClient, "client_reconnect_stale", "true".to_string()),
            ]
        );
        assert!(s.problems().is_empty());
        assert!(CephSettings::default().changes().is_empty());
        let bad =
            CephSettings { session_timeout_s: Some(10), mds_cap_revoke_eviction_timeout_s: Some(-1.0), ..s };
        let p: Vec<&str> = bad.problems().iter().map(|(k, _)| *k).collect();
        assert_eq!(p, vec!["session_timeout_s", "mds_cap_revoke_eviction_timeout_s"]);
    }
}
