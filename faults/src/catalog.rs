//! The fault catalog: every fault miglab can inject, with its parameters, as a scenario writes
//! it (`[[fault]]` tables). Each fault that lasts says for how long: its undo runs then, and
//! always at the end of the run, whatever happened.

use crate::trigger::{Anchor, Trigger};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

pub use miglab_model::Side;

/// An OSD: a number, or one chosen from the plan's choice seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pick {
    Id(u32),
    #[default]
    Random,
}

impl Serialize for Pick {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Pick::Id(n) => s.serialize_u32(*n),
            Pick::Random => s.serialize_str("random"),
        }
    }
}

impl<'de> Deserialize<'de> for Pick {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u32),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Pick::Id(n)),
            Raw::S(s) if s == "random" => Ok(Pick::Random),
            Raw::S(s) => Err(serde::de::Error::custom(format!("'{s}': give a number or \"random\""))),
        }
    }
}

/// A host, relative to the hop the fault happens in (or the guest's host outside a hop).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRef {
    /// The host the guest runs on (a hop's source).
    Source,
    /// A hop's destination (outside a hop: the host after the guest's).
    Destination,
    Named(String),
}

impl FromStr for HostRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "source" => Ok(HostRef::Source),
            "destination" => Ok(HostRef::Destination),
            n if !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') => {
                Ok(HostRef::Named(n.into()))
            }
            _ => Err(format!("'{s}': give source, destination or a host's name (c1, c2, ...)")),
        }
    }
}

impl fmt::Display for HostRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostRef::Source => f.write_str("source"),
            HostRef::Destination => f.write_str("destination"),
            HostRef::Named(n) => f.write_str(n),
        }
    }
}

/// Whose Ceph messenger a storage-network fault acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTarget {
    /// A host's CephFS client (ceph-fuse): `client:source`, `client:c2`.
    Client(HostRef),
    /// One OSD: `osd:1`, `osd:random`.
    Osd(Pick),
    /// Every OSD: `osds`.
    AllOsds,
}

impl FromStr for StorageTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}': give client:<source|destination|cN>, osd:<n|random> or osds");
        match s.split_once(':') {
            None if s == "osds" => Ok(StorageTarget::AllOsds),
            Some(("client", h)) => Ok(StorageTarget::Client(h.parse().map_err(|_| bad())?)),
            Some(("osd", "random")) => Ok(StorageTarget::Osd(Pick::Random)),
            Some(("osd", n)) => Ok(StorageTarget::Osd(Pick::Id(n.parse().map_err(|_| bad())?))),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for StorageTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageTarget::Client(h) => write!(f, "client:{h}"),
            StorageTarget::Osd(Pick::Id(n)) => write!(f, "osd:{n}"),
            StorageTarget::Osd(Pick::Random) => f.write_str("osd:random"),
            StorageTarget::AllOsds => f.write_str("osds"),
        }
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_string())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
string_serde!(HostRef);
string_serde!(StorageTarget);

fn destination() -> HostRef {
    HostRef::Destination
}

fn certain() -> f64 {
    1.0
}

/// What goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// SIGKILL an OSD (a crash), restart it after `revive_after_ms`.
    OsdKill {
        #[serde(default)]
        osd: Pick,
        revive_after_ms: u64,
    },
    /// SIGSTOP an OSD (a hang) for `duration_ms`, then SIGCONT.
    OsdFreeze {
        #[serde(default)]
        osd: Pick,
        duration_ms: u64,
    },
    /// Mark an OSD out for `duration_ms` (data moves), then in.
    OsdOut {
        #[serde(default)]
        osd: Pick,
        duration_ms: u64,
    },
    /// SIGKILL the active MDS (the standby takes over), restart it after `revive_after_ms`.
    MdsKill { revive_after_ms: u64 },
    /// `ceph mds fail` on the active MDS (it respawns as a standby).
    MdsFail {},
    /// SIGSTOP the active MDS (a hung MDS: metadata requests wait) for `duration_ms`.
    MdsFreeze { duration_ms: u64 },
    /// Messages of `target`'s messenger delayed up to `max_ms` with `probability`, for
    /// `duration_ms` (Ceph's `ms_inject_delay_*`).
    StorageDelay {
        target: StorageTarget,
        max_ms: u64,
        #[serde(default = "certain")]
        probability: f64,
        duration_ms: u64,
    },
    /// One socket operation in `one_in` fails on `target`'s messenger, for `duration_ms`
    /// (reconnect storms; Ceph's `ms_inject_socket_failures`).
    SocketFailures { target: StorageTarget, one_in: u32, duration_ms: u64 },
    /// `host`'s link limited to `rate_kbit` (tbf) for `duration_ms`.
    LinkRate { host: HostRef, rate_kbit: u64, duration_ms: u64 },
    /// `host` cut off the lab network for `duration_ms`.
    Partition { host: HostRef, duration_ms: u64 },
    /// The hop's migration stream through a proxy: `latency_ms` ± `jitter_ms` per chunk and
    /// at most `rate_kbit`. For the whole hop: its trigger is `hop-start`.
    MigrationLink {
        #[serde(default)]
        latency_ms: u64,
        #[serde(default)]
        jitter_ms: u64,
        #[serde(default)]
        rate_kbit: Option<u64>,
    },
    /// SIGKILL the virtiofsd of a hop's `side`; with `restart`, a new one is started on its
    /// socket (QEMU does not reconnect to it: the guest's file system stays dead).
    VirtiofsdKill {
        side: Side,
        #[serde(default)]
        restart: bool,
    },
    /// SIGSTOP the virtiofsd of a hop's `side` for `duration_ms`.
    VirtiofsdFreeze { side: Side, duration_ms: u64 },
    /// SIGKILL the QEMU of a hop's `side` (the source: after the switch-over).
    QemuKill { side: Side },
    /// `migrate_cancel` on the source.
    MigrateCancel {},
    /// Another CephFS client (`host`'s) renames the guest's workload files away and back (or,
    /// with `replace`, replaces each by a copy) while the migration runs; `duration_ms` later
    /// the original names are restored.
    ThirdPartyRename {
        #[serde(default = "destination")]
        host: HostRef,
        #[serde(default)]
        replace: bool,
        #[serde(default)]
        duration_ms: u64,
    },
    /// Another CephFS client (`host`'s) deletes the guest's workload files while the guest
    /// holds them open: a file deleted while open cannot be migrated by path. Nothing to undo
    /// (the files are the run's own; the cluster is not changed).
    ThirdPartyDelete {
        #[serde(default = "destination")]
        host: HostRef,
    },
    /// The active MDS evicts `host`'s CephFS client (`ceph tell mds.<active> client evict`),
    /// which also puts its address on the OSD blocklist (Ceph's default). After `duration_ms`
    /// the address comes off the blocklist and the mount is checked: mounted again if it does
    /// not answer, or if a request sent while it was fenced never completes.
    ClientEvict { host: HostRef, duration_ms: u64 },
    /// `host`'s CephFS client fenced at the OSDs (`ceph osd blocklist add <its address>`; the
    /// MDS then closes its session too); undone as `client-evict`.
    ClientBlocklist { host: HostRef, duration_ms: u64 },
    /// `target`'s messenger drops every message to and from the daemons of each type in
    /// `peers` (`osd`, `mds`, `mon`, `mgr`, `client`: Ceph's `ms_blackhole_<type>`) for
    /// `duration_ms`, without resetting a connection; set back to the values read before.
    MessengerBlackhole { target: StorageTarget, peers: Vec<String>, duration_ms: u64 },
    /// `host` dies whole: its link cut, then every process of it killed at once (the guests'
    /// QEMU and virtiofsd there, its CephFS client), its client's session left to the MDS's
    /// timeouts. After `duration_ms` an operator's recovery: that session evicted (and its
    /// blocklist entry lifted), the link healed, CephFS mounted again.
    HostLoss { host: HostRef, duration_ms: u64 },
}

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::OsdKill { .. } => "osd-kill",
            Fault::OsdFreeze { .. } => "osd-freeze",
            Fault::OsdOut { .. } => "osd-out",
            Fault::MdsKill { .. } => "mds-kill",
            Fault::MdsFail {} => "mds-fail",
            Fault::MdsFreeze { .. } => "mds-freeze",
            Fault::StorageDelay { .. } => "storage-delay",
            Fault::SocketFailures { .. } => "socket-failures",
            Fault::LinkRate { .. } => "link-rate",
            Fault::Partition { .. } => "partition",
            Fault::MigrationLink { .. } => "migration-link",
            Fault::VirtiofsdKill { .. } => "virtiofsd-kill",
            Fault::VirtiofsdFreeze { .. } => "virtiofsd-freeze",
            Fault::QemuKill { .. } => "qemu-kill",
            Fault::MigrateCancel {} => "migrate-cancel",
            Fault::ThirdPartyRename { .. } => "third-party-rename",
            Fault::ThirdPartyDelete { .. } => "third-party-delete",
            Fault::ClientEvict { .. } => "client-evict",
            Fault::ClientBlocklist { .. } => "client-blocklist",
            Fault::HostLoss { .. } => "host-loss",
            Fault::MessengerBlackhole { .. } => "messenger-blackhole",
        }
    }

    /// How long after its injection the fault is undone (None: it is not, or only at the end).
    pub fn lasts_ms(&self) -> Option<u64> {
        match self {
            Fault::OsdKill { revive_after_ms: d, .. } | Fault::MdsKill { revive_after_ms: d } => Some(*d),
            Fault::OsdFreeze { duration_ms: d, .. }
            | Fault::OsdOut { duration_ms: d, .. }
            | Fault::MdsFreeze { duration_ms: d }
            | Fault::StorageDelay { duration_ms: d, .. }
            | Fault::SocketFailures { duration_ms: d, .. }
            | Fault::LinkRate { duration_ms: d, .. }
            | Fault::Partition { duration_ms: d, .. }
            | Fault::VirtiofsdFreeze { duration_ms: d, .. }
            | Fault::ThirdPartyRename { duration_ms: d, .. }
            | Fault::ClientEvict { duration_ms: d, .. }
            | Fault::ClientBlocklist { duration_ms: d, .. }
            | Fault::HostLoss { duration_ms: d, .. }
            | Fault::MessengerBlackhole { duration_ms: d, .. } => Some(*d),
            Fault::MdsFail {}
            | Fault::MigrationLink { .. }
            | Fault::VirtiofsdKill { .. }
            | Fault::QemuKill { .. }
            | Fault::ThirdPartyDelete { .. }
            | Fault::MigrateCancel {} => None,
        }
    }

    /// Whether the fault acts on the Ceph cluster (then the run waits for it to be healthy
    /// again after the undo).
    pub fn touches_ceph(&self) -> bool {
        matches!(
            self,
            Fault::OsdKill { .. }
                | Fault::OsdFreeze { .. }
                | Fault::OsdOut { .. }
                | Fault::MdsKill { .. }
                | Fault::MdsFail {}
                | Fault::MdsFreeze { .. }
                | Fault::StorageDelay { .. }
                | Fault::SocketFailures { .. }
                | Fault::Partition { .. }
                | Fault::ClientEvict { .. }
                | Fault::ClientBlocklist { .. }
                | Fault::HostLoss { .. }
                | Fault::MessengerBlackhole { .. }
        )
    }

    /// What is wrong with the fault's parameters or with when it fires, if anything.
    pub fn check(&self, trigger: &Trigger) -> Result<(), String> {
        let hour = 3_600_000;
        let during_hop = !matches!(trigger.anchor, Anchor::WorkloadStart);
        let time = |what: &str, v: u64| {
            if v == 0 || v > hour {
                Err(format!("{what} = {v}: give milliseconds, more than 0 and at most an hour"))
            } else {
                Ok(())
            }
        };
        match self {
            Fault::OsdKill { revive_after_ms: d, .. } | Fault::MdsKill { revive_after_ms: d } => time("revive_after_ms", *d),
            Fault::OsdFreeze { duration_ms: d, .. }
            | Fault::OsdOut { duration_ms: d, .. }
            | Fault::MdsFreeze { duration_ms: d }
            | Fault::LinkRate { duration_ms: d, .. }
            | Fault::Partition { duration_ms: d, .. }
            | Fault::VirtiofsdFreeze { duration_ms: d, .. }
            | Fault::ClientEvict { duration_ms: d, .. }
            | Fault::ClientBlocklist { duration_ms: d, .. }
            | Fault::HostLoss { duration_ms: d, .. } => time("duration_ms", *d),
            Fault::StorageDelay { max_ms, probability, duration_ms, .. } => {
                time("duration_ms", *duration_ms)?;
                time("max_ms", *max_ms)?;
                if !(probability.is_finite() && *probability > 0.0 && *probability <= 1.0) {
                    return Err(format!("probability = {probability}: give a number in (0, 1]"));
                }
                Ok(())
            }
            Fault::MessengerBlackhole { target, peers, duration_ms } => {
                time("duration_ms", *duration_ms)?;
                if !matches!(target, StorageTarget::Client(_)) && peers.iter().any(|p| p == "client") {
                    // Seen: the OSD applied it and dropped the reply, and then its undo.
                    return Err(format!(
                        "peers = [\"client\"] on {target}: the command that sets it back is a client's message too, and would be dropped; blackhole its osd/mon/mgr peers, or a client's osd/mds"
                    ));
                }
                if peers.is_empty() {
                    return Err("peers = []: give the daemon types whose messages are dropped, e.g. [\"osd\", \"mds\"]".into());
                }
                match peers.iter().find(|p| !BLACKHOLE_PEERS.contains(&p.as_str())) {
                    Some(p) => Err(format!("peers: '{p}' is not one of {}", BLACKHOLE_PEERS.join(", "))),
                    None => Ok(()),
                }
            }
            Fault::SocketFailures { one_in, duration_ms, .. } => {
                time("duration_ms", *duration_ms)?;
                if *one_in == 0 {
                    return Err("one_in = 0: give 1 (every socket operation fails) or more".into());
                }
                Ok(())
            }
            Fault::MigrationLink { rate_kbit, latency_ms, jitter_ms } => {
                if rate_kbit == &Some(0) {
                    return Err("rate_kbit = 0: give more than 0 (leave it out for no cap)".into());
                }
                if jitter_ms > latency_ms {
                    return Err(format!("jitter_ms {jitter_ms} is more than latency_ms {latency_ms}"));
                }
                if !matches!(trigger.anchor, Anchor::HopStart { .. }) || trigger.offset_ms != 0 || trigger.random_within_ms != 0 {
                    return Err("the migration link is set when a hop starts: trigger = { at = \"hop-start\", hop = N }".into());
                }
                Ok(())
            }
            Fault::MdsFail {} | Fault::ThirdPartyDelete { .. } => Ok(()),
            Fault::ThirdPartyRename { duration_ms, .. } => {
                if *duration_ms > hour {
                    return Err(format!("duration_ms = {duration_ms} is more than an hour"));
                }
                Ok(())
            }
            Fault::VirtiofsdKill { side, .. } | Fault::QemuKill { side } if *side == Side::Destination && !during_hop => {
                Err("the destination exists only during a hop: trigger it at hop-start, a status, a pass or pre-switchover".into())
            }
            Fault::MigrateCancel {} if !during_hop => {
                Err("a migration can only be cancelled while it runs: trigger it during a hop".into())
            }
            Fault::VirtiofsdKill { .. } | Fault::QemuKill { .. } | Fault::MigrateCancel {} => Ok(()),
        }
    }
}

/// The daemon types a messenger can blackhole (`ms_blackhole_<type>`).
pub const BLACKHOLE_PEERS: [&str; 5] = ["osd", "mds", "mon", "mgr", "client"];

/// One `[[fault]]` of a scenario: what, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultEntry {
    /// A name for reports (default: its kind and number).
    #[serde(default)]
    pub name: Option<String>,
    /// When it fires: `{ at = …, hop = …, offset_ms = … }` (below).
    pub trigger: Trigger,
    /// The run may end without it (its trigger may not come): then a fault not injected is a
    /// note, not a failed run. Off by default: a planned fault that did not happen fails it.
    #[serde(default)]
    pub optional: bool,
    #[serde(flatten)]
    pub fault: Fault,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Doc {
        fault: Vec<FaultEntry>,
    }

    #[test]
    fn faults_read_from_toml_with_their_triggers() {
        let d: Doc = toml::from_str(
            r#"
            [[fault]]
            kind = "osd-kill"
            osd = "random"
            revive_after_ms = 8000
            trigger = { at = "status", status = "active", hop = 1, offset_ms = 500 }

            [[fault]]
            kind = "storage-delay"
            target = "client:source"
            max_ms = 50
            duration_ms = 5000
            trigger = { at = "workload-start", random_within_ms = 2000 }

            [[fault]]
            kind = "virtiofsd-kill"
            side = "destination"
            trigger = { at = "pre-switchover" }
            "#,
        )
        .expect("parses");
        assert_eq!(d.fault.len(), 3);
        assert_eq!(d.fault[0].fault, Fault::OsdKill { osd: Pick::Random, revive_after_ms: 8000 });
        assert_eq!(d.fault[0].trigger.offset_ms, 500);
        let Fault::StorageDelay { target, probability, .. } = &d.fault[1].fault else { panic!("delay") };
        assert_eq!((target, *probability), (&StorageTarget::Client(HostRef::Source), 1.0));
        assert!(matches!(d.fault[2].trigger.anchor, Anchor::PreSwitchover { hop: 1 }));
        for f in &d.fault {
            f.fault.check(&f.trigger).expect("valid");
        }
        // And back.
        let back: Vec<FaultEntry> =
            serde_json::from_value(serde_json::to_value(&d.fault).expect("json")).expect("back");
        assert_eq!(back, d.fault);
    }

    /// Messenger injections act on Ceph: the run waits for health after them too.
    #[test]
    fn messenger_faults_touch_ceph() {
        let osds = StorageTarget::AllOsds;
        assert!(Fault::StorageDelay { target: osds.clone(), max_ms: 5, probability: 1.0, duration_ms: 1 }
            .touches_ceph());
        assert!(Fault::SocketFailures { target: osds, one_in: 5, duration_ms: 1 }.touches_ceph());
        assert!(!Fault::MigrateCancel {}.touches_ceph());
    }

    #[test]
    fn unknown_kinds_fields_and_targets_are_refused_by_name() {
        let e = toml::from_str::<Doc>(
            "[[fault]]\nkind = \"osd-explode\"\ntrigger = { at = \"workload-start\" }\n",
        )
        .expect_err("kind");
        assert!(e.to_string().contains("osd-explode"), "{e}");
        let e = toml::from_str::<Doc>(
            "[[fault]]\nkind = \"mds-fail\"\nbogus = 1\ntrigger = { at = \"workload-start\" }\n",
        )
        .expect_err("field");
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!("client:".parse::<StorageTarget>().is_err());
        assert!("osd:x".parse::<StorageTarget>().is_err());
        assert_eq!("osd:2".parse::<StorageTarget>(), Ok(StorageTarget::Osd(Pick::Id(2))));
    }

    #[test]
    fn parameters_and_triggers_that_cannot_work_are_refused() {
        let start = Trigger { anchor: Anchor::WorkloadStart, offset_ms: 0, random_within_ms: 0, guest: None };
        let hop =
            Trigger { anchor: Anchor::HopStart { hop: 1 }, offset_ms: 0, random_within_ms: 0, guest: None };
        assert!(Fault::OsdFreeze { osd: Pick::Id(1), duration_ms: 0 }.check(&start).is_err());
        assert!(Fault::QemuKill { side: Side::Destination }.check(&start).is_err());
        assert!(Fault::QemuKill { side: Side::Destination }.check(&hop).is_ok());
        assert!(Fault::MigrationLink { latency_ms: 10, jitter_ms: 0, rate_kbit: None }
            .check(&start)
            .is_err());
        assert!(Fault::MigrationLink { latency_ms: 10, jitter_ms: 20, rate_kbit: None }.check(&hop).is_err());
        let delay = |p| Fault::StorageDelay {
            target: StorageTarget::AllOsds,
            max_ms: 5,
            probability: p,
            duration_ms: 1000,
        };
        let blackhole = |peers: &[&str]| Fault::MessengerBlackhole {
            target: StorageTarget::Client(HostRef::Source),
            peers: peers.iter().map(|p| p.to_string()).collect(),
            duration_ms: 1000,
        };
        assert!(blackhole(&["osd", "mds"]).check(&start).is_ok());
        assert!(blackhole(&[]).check(&start).is_err(), "no peers: drops nothing");
        let osd_drops_clients = Fault::MessengerBlackhole {
            target: StorageTarget::Osd(Pick::Id(1)),
            peers: vec!["client".into()],
            duration_ms: 1000,
        };
        assert!(
            osd_drops_clients.check(&start).is_err_and(|e| e.contains("sets it back")),
            "its undo would be dropped"
        );
        let e = blackhole(&["osds"]).check(&start).expect_err("not a type");
        assert!(e.contains("'osds'") && e.contains("mgr"), "{e}");
        assert!(
            delay(0.0).check(&start).is_err()
                && delay(f64::NAN).check(&start).is_err()
                && delay(0.5).check(&start).is_ok()
        );
    }
}
