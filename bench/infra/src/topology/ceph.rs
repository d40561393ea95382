//! The throwaway Ceph cluster's files (ceph.conf, the keyring) and the parsing of what the
//! cluster says about itself (`ceph status -f json`).

use super::layout::LabLayout;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// The OSD backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStore {
    /// BlueStore on a sparse file per OSD: real I/O path, data on disk.
    #[default]
    Bluestore,
    /// Data in RAM: fast to create, grows to GiBs under writes.
    Memstore,
}

impl ObjectStore {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectStore::Bluestore => "bluestore",
            ObjectStore::Memstore => "memstore",
        }
    }
}

/// What the cluster is made of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub fsid: String,
    pub osds: u32,
    pub mds: Vec<String>,
    pub objectstore: ObjectStore,
    /// Apparent size of each BlueStore block file (sparse) or MemStore's capacity.
    pub osd_bytes: u64,
    /// Settings given by the user, applied over miglab's own (`--ceph-conf osd:key=value`).
    #[serde(default)]
    pub overrides: Vec<ConfOverride>,
}

/// One ceph.conf setting in one section (`global`, `osd`, `osd.1`, `client.c1`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfOverride {
    pub section: String,
    pub key: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a ceph.conf setting: write SECTION:KEY=VALUE, e.g. osd:osd_op_num_shards=2")]
pub struct BadOverride(String);

impl std::str::FromStr for ConfOverride {
    type Err = BadOverride;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadOverride(s.to_string());
        let (section, kv) = s.split_once(':').ok_or_else(bad)?;
        let (key, value) = kv.split_once('=').ok_or_else(bad)?;
        let key = key.trim();
        let word =
            |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !word(section) || !word(key) || value.contains('\n') {
            return Err(bad());
        }
        Ok(Self { section: section.into(), key: key.into(), value: value.trim().into() })
    }
}

impl ClusterSpec {
    /// A lab's OSDs.
    pub const DEFAULT_OSDS: u32 = 3;

    pub fn new(objectstore: ObjectStore) -> Self {
        Self {
            fsid: random_uuid(),
            osds: Self::DEFAULT_OSDS,
            mds: vec!["a".into(), "b".into()],
            objectstore,
            osd_bytes: match objectstore {
                ObjectStore::Bluestore => 10 << 30,
                ObjectStore::Memstore => 4 << 30,
            },
            overrides: Vec::new(),
        }
    }
}

pub const MON_ID: &str = "a";
pub const MGR_ID: &str = "x";
pub const FS_NAME: &str = "cephfs";
pub const PG_PER_POOL: u32 = 8;

fn random_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-4{}-a{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// The mgr modules a lab never enables (Pacific's list, less the always-on ones).
const MGR_UNUSED_MODULES: [&str; 17] = [
    "alerts",
    "influx",
    "insights",
    "iostat",
    "localpool",
    "mirroring",
    "nfs",
    "osd_perf_query",
    "osd_support",
    "prometheus",
    "restful",
    "selftest",
    "snap_schedule",
    "stats",
    "telegraf",
    "test_orchestrator",
    "zabbix",
];

/// The `[global]` settings of the lab's ceph.conf.
fn global(layout: &LabLayout, spec: &ClusterSpec) -> Vec<(&'static str, String)> {
    let dir = layout.ceph_dir();
    let d = dir.display();
    let logs = layout.log_dir();
    let logs = logs.display();
    vec![
        ("fsid", spec.fsid.clone()),
        ("mon_host", layout.mon_host()),
        ("auth_cluster_required", "cephx".into()),
        ("auth_service_required", "cephx".into()),
        ("auth_client_required", "cephx".into()),
        ("keyring", layout.keyring().display().to_string()),
        ("run_dir", format!("{d}/run")),
        ("admin_socket", format!("{d}/run/$name.asok")),
        ("pid_file", format!("{d}/run/$name.pid")),
        ("log_file", format!("{logs}/$name.log")),
        ("mon_cluster_log_file", format!("{logs}/cluster.log")),
        ("crash_dir", format!("{d}/crash")),
        ("exporter_sock_dir", format!("{d}/run")),
        ("ms_bind_port_min", layout.port_min.to_string()),
        ("ms_bind_port_max", layout.port_max.to_string()),
        // One host: replicas go to different OSDs, not different hosts.
        ("osd_crush_chooseleaf_type", "0".into()),
        ("osd_pool_default_size", spec.osds.min(3).to_string()),
        ("osd_pool_default_min_size", spec.osds.min(2).to_string()),
        ("osd_pool_default_pg_num", PG_PER_POOL.to_string()),
        ("osd_pool_default_pgp_num", PG_PER_POOL.to_string()),
        ("osd_pool_default_pg_autoscale_mode", "off".into()),
        // Without this a hung OSD is never reported down by its peers (all on one host).
        ("mon_osd_reporter_subtree_level", "osd".into()),
        ("mon_allow_pool_delete", "true".into()),
        ("mon_allow_pool_size_one", "true".into()),
        ("mon_warn_on_insecure_global_id_reclaim", "false".into()),
        ("mon_warn_on_insecure_global_id_reclaim_allowed", "false".into()),
        ("mon_warn_on_pool_no_redundancy", "false".into()),
        ("mon_data_avail_warn", "1".into()),
        ("mon_data_avail_crit", "0".into()),
        // PG states reach the monitor in 1 s instead of 5: readiness is seen sooner.
        ("mgr_stats_period", "1".into()),
        ("mon_mgr_digest_period", "1".into()),
        // A dead MDS is failed over quickly; the grace must exceed 5 s + the interval.
        ("mds_beacon_interval", "1".into()),
        ("mds_beacon_grace", "7".into()),
        // The lab's monitor quorum is always young, and for its first 60 s (the default)
        // the monitor fails no MDS: a kill right after `lab up` took 65 s to fail over.
        ("mds_beacon_mon_down_grace", "2".into()),
        // Map changes (pool and fs creation, OSD boot) commit on the next Paxos proposal;
        // the default 1 s interval adds a second to each of them.
        ("paxos_propose_interval", "0.05".into()),
        ("paxos_min_wait", "0.01".into()),
        ("osd_recovery_sleep", "0".into()),
        ("osd_recovery_sleep_hdd", "0".into()),
    ]
}

/// ceph.conf for a one-host cluster whose every file lives under the lab directory.
///
/// The non-default settings are the ones a single-host cluster needs (see FIELD-NOTES): CRUSH
/// choosing OSDs not hosts, OSDs reporting each other, quick MDS failover, PG stats reaching
/// the monitor every second, small pools, and nothing written outside the lab.
pub fn render_conf(layout: &LabLayout, spec: &ClusterSpec) -> String {
    let dir = layout.ceph_dir();
    let d = dir.display();
    let mut out = String::new();
    let overrides = &spec.overrides;
    let section = |out: &mut String, name: &str, entries: &[(&str, String)]| {
        let _ = writeln!(out, "[{name}]");
        let mine = overrides.iter().filter(|o| o.section == name);
        for (k, v) in entries {
            if !mine.clone().any(|o| o.key == *k) {
                let _ = writeln!(out, "    {k} = {v}");
            }
        }
        for o in mine {
            let _ = writeln!(out, "    {} = {}", o.key, o.value);
        }
        out.push('\n');
    };
    let gw = layout.gateway.to_string();
    section(&mut out, "global", &global(layout, spec));
    section(
        &mut out,
        "mon",
        &[
            ("public_addr", gw.clone()),
            ("mon_data", format!("{d}/mon/$name")),
            ("mon_initial_members", MON_ID.into()),
        ],
    );
    section(
        &mut out,
        "mgr",
        &[
            ("public_addr", gw.clone()),
            ("mgr_data", format!("{d}/mgr/$name")),
            // The mgr imports every Python module it finds before it reports in (2.2 s); these
            // are never enabled in a lab (the always-on ones must load, or health is ERR).
            ("mgr_disabled_modules", MGR_UNUSED_MODULES.join(",")),
        ],
    );
    let mut osd = vec![
        ("public_addr", gw.clone()),
        ("cluster_addr", gw.clone()),
        // Armed for the storage-delay fault: Ceph only delays connections opened after the type
        // is set; the probability (0 until a fault sets it) is changed live.
        ("ms_inject_delay_type", "client osd".into()),
        ("osd_data", format!("{d}/osd/$id")),
        ("osd_objectstore", spec.objectstore.as_str().into()),
        ("osd_max_object_size", "134217728".into()),
    ];
    match spec.objectstore {
        ObjectStore::Bluestore => osd.extend([
            ("bluestore_block_create", "true".into()),
            // Closing a block device waits for the aio thread's poll timeout (250 ms), which
            // mkfs and mount do several times.
            ("bdev_aio_poll_ms", "10".into()),
            ("bluestore_block_size", spec.osd_bytes.to_string()),
            ("bluestore_fsck_on_mkfs", "false".into()),
            ("bluestore_fsck_on_mount", "false".into()),
            ("bluestore_fsck_on_umount", "false".into()),
        ]),
        ObjectStore::Memstore => osd.push(("memstore_device_bytes", spec.osd_bytes.to_string())),
    }
    section(&mut out, "osd", &osd);
    section(&mut out, "mds", &[("public_addr", gw), ("mds_data", format!("{d}/mds/$name"))]);
    section(
        &mut out,
        "client",
        // A client's arming for the storage-delay fault (`ms_inject_delay_type`) is on its
        // ceph-fuse's command line: a run that fences a client mounts it unarmed.
        &[("client_mount_timeout", "60".into())],
    );
    let mut extra: Vec<&str> = Vec::new();
    for o in overrides {
        let known = ["global", "mon", "mgr", "osd", "mds", "client"].contains(&o.section.as_str());
        if !known && !extra.contains(&o.section.as_str()) {
            extra.push(&o.section);
        }
    }
    for name in extra {
        section(&mut out, name, &[]);
    }
    out
}

/// A cephx secret: AES key, creation time, 16 random bytes, base64 as Ceph encodes it.
pub fn gen_secret() -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let mut raw = Vec::with_capacity(28);
    raw.extend_from_slice(&1u16.to_le_bytes()); // CEPH_CRYPTO_AES
    raw.extend_from_slice(&(now.as_secs() as u32).to_le_bytes());
    raw.extend_from_slice(&now.subsec_nanos().to_le_bytes());
    raw.extend_from_slice(&16u16.to_le_bytes());
    raw.extend_from_slice(&rand::random::<[u8; 16]>());
    base64::engine::general_purpose::STANDARD.encode(raw)
}

/// One keyring entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    pub entity: String,
    pub caps: Vec<(&'static str, &'static str)>,
}

/// Every entity of the lab, with its capabilities. All keys go into the monitor's mkfs keyring,
/// which imports them into the auth database at once: no `ceph auth` round trips at start.
pub fn entities(spec: &ClusterSpec, clients: &[String]) -> Vec<KeyEntry> {
    let e = |entity: String, caps: &[(&'static str, &'static str)]| KeyEntry { entity, caps: caps.to_vec() };
    let mut v = vec![
        e("mon.".into(), &[("mon", "allow *")]),
        e(
            "client.admin".into(),
            &[("mon", "allow *"), ("osd", "allow *"), ("mds", "allow *"), ("mgr", "allow *")],
        ),
        e(format!("mgr.{MGR_ID}"), &[("mon", "allow profile mgr"), ("osd", "allow *"), ("mds", "allow *")]),
    ];
    for i in 0..spec.osds {
        v.push(e(
            format!("osd.{i}"),
            &[("mon", "allow profile osd"), ("mgr", "allow profile osd"), ("osd", "allow *")],
        ));
    }
    for m in &spec.mds {
        v.push(e(
            format!("mds.{m}"),
            &[
                ("mon", "allow profile mds"),
                ("mgr", "allow profile mds"),
                ("osd", "allow *"),
                ("mds", "allow"),
            ],
        ));
    }
    for c in clients {
        v.push(e(
            format!("client.{c}"),
            &[("mon", "allow r"), ("mgr", "allow r"), ("mds", "allow rw"), ("osd", "allow rw")],
        ));
    }
    v
}

pub fn render_keyring(entries: &[KeyEntry]) -> String {
    let mut s = String::new();
    for e in entries {
        let _ = writeln!(s, "[{}]\n\tkey = {}", e.entity, gen_secret());
        for (svc, cap) in &e.caps {
            let _ = writeln!(s, "\tcaps {svc} = \"{cap}\"");
        }
    }
    s
}

/// The parts of `ceph status -f json` that readiness and `lab status` need. Both the Pacific
/// (flat) and the Octopus (nested) shapes of `osdmap` are accepted.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Status {
    pub health: Health,
    #[serde(default)]
    pub quorum_names: Vec<String>,
    #[serde(default, deserialize_with = "osdmap")]
    pub osdmap: OsdMap,
    #[serde(default)]
    pub pgmap: PgMap,
    #[serde(default)]
    pub fsmap: FsMap,
    #[serde(default)]
    pub mgrmap: MgrMap,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct Health {
    pub status: String,
    #[serde(default)]
    pub checks: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct OsdMap {
    #[serde(default)]
    pub num_osds: u32,
    #[serde(default)]
    pub num_up_osds: u32,
    #[serde(default)]
    pub num_in_osds: u32,
}

fn osdmap<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OsdMap, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Shape {
        Nested { osdmap: OsdMap },
        Flat(OsdMap),
    }
    Ok(match Shape::deserialize(d)? {
        Shape::Nested { osdmap } | Shape::Flat(osdmap) => osdmap,
    })
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PgMap {
    #[serde(default)]
    pub num_pgs: u32,
    #[serde(default)]
    pub pgs_by_state: Vec<PgState>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct PgState {
    pub state_name: String,
    pub count: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct FsMap {
    #[serde(default)]
    pub by_rank: Vec<MdsRank>,
    #[serde(default, rename = "up:standby")]
    pub standby: u32,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MdsRank {
    pub name: String,
    pub status: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct MgrMap {
    #[serde(default)]
    pub available: bool,
}

impl Status {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    pub fn clean_pgs(&self) -> u32 {
        self.pgmap.pgs_by_state.iter().filter(|s| s.state_name == "active+clean").map(|s| s.count).sum()
    }

    /// Every PG active+clean, and at least `min_pgs` of them (the pool PGs this lab created;
    /// until the manager reports, the map is empty and would look clean).
    pub fn pgs_clean(&self, min_pgs: u32) -> bool {
        self.pgmap.num_pgs >= min_pgs && self.clean_pgs() == self.pgmap.num_pgs
    }

    pub fn active_mds(&self) -> Vec<&str> {
        self.fsmap.by_rank.iter().filter(|r| r.status == "up:active").map(|r| r.name.as_str()).collect()
    }

    pub fn osds_all_up(&self) -> bool {
        self.osdmap.num_osds > 0
            && self.osdmap.num_up_osds == self.osdmap.num_osds
            && self.osdmap.num_in_osds == self.osdmap.num_osds
    }

    /// The lab's notion of ready: PGs active+clean and an MDS active (HEALTH_OK comes too early,
    /// and some warnings are harmless here).
    pub fn ready(&self, min_pgs: u32) -> bool {
        self.pgs_clean(min_pgs) && !self.active_mds().is_empty()
    }

    /// Ready, and every OSD up and in: the cluster has recovered from a fault.
    pub fn healthy(&self, min_pgs: u32) -> bool {
        self.ready(min_pgs) && self.osds_all_up()
    }

    /// One line for progress and errors: `HEALTH_WARN osds 2/3 up, pgs 9/17 active+clean, mds a`.
    pub fn summary(&self) -> String {
        let mds = self.active_mds();
        format!(
            "{} osds {}/{} up, pgs {}/{} active+clean, mds {}",
            self.health.status,
            self.osdmap.num_up_osds,
            self.osdmap.num_osds,
            self.clean_pgs(),
            self.pgmap.num_pgs,
            if mds.is_empty() { "none active".to_string() } else { mds.join(",") + " active" }
        )
    }
}

/// The value in a `config get` answer: `{"key": "value"}` as JSON, or the bare value.
pub fn config_value(out: &str, key: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(out.trim()) {
        Ok(serde_json::Value::Object(m)) => match m.get(key) {
            Some(serde_json::Value::String(v)) => v.clone(),
            Some(v) => v.to_string(),
            None => out.trim().to_string(),
        },
        _ => out.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn layout() -> LabLayout {
        LabLayout::new("default", Path::new("/var/lib/miglab"), None, 2).expect("layout")
    }

    fn conf_value<'a>(conf: &'a str, section: &str, key: &str) -> Option<&'a str> {
        let mut current = "";
        for line in conf.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = s;
            } else if current == section {
                if let Some((k, v)) = line.split_once(" = ") {
                    if k == key {
                        return Some(v);
                    }
                }
            }
        }
        None
    }

    #[test]
    fn conf_has_the_single_host_settings_and_stays_in_the_lab() {
        let spec = ClusterSpec::new(ObjectStore::Bluestore);
        let conf = render_conf(&layout(), &spec);
        let g = |k| conf_value(&conf, "global", k);
        assert_eq!(g("fsid"), Some(spec.fsid.as_str()));
        assert_eq!(g("mon_host"), Some("[v2:10.77.0.1:20000,v1:10.77.0.1:20001]"));
        assert_eq!(g("osd_crush_chooseleaf_type"), Some("0"));
        assert_eq!(g("mon_osd_reporter_subtree_level"), Some("osd"));
        assert_eq!(g("ms_bind_port_min"), Some("20002"));
        assert_eq!(g("ms_bind_port_max"), Some("20049"));
        assert_eq!(g("mgr_stats_period"), Some("1"));
        let grace: f64 = g("mds_beacon_grace").and_then(|v| v.parse().ok()).expect("grace");
        let interval: f64 = g("mds_beacon_interval").and_then(|v| v.parse().ok()).expect("interval");
        assert!(grace > 5.0 + interval, "a dead MDS must be failed over");
        assert_eq!(conf_value(&conf, "osd", "osd_objectstore"), Some("bluestore"));
        assert_eq!(conf_value(&conf, "osd", "bluestore_block_create"), Some("true"));
        assert_eq!(conf_value(&conf, "mon", "public_addr"), Some("10.77.0.1"));
        // Nothing outside the lab directory: every path-valued setting is under it.
        for line in conf.lines() {
            if let Some((_, v)) = line.trim().split_once(" = ") {
                if v.starts_with('/') {
                    assert!(v.starts_with("/var/lib/miglab/default/"), "{line}");
                }
            }
        }
    }

    #[test]
    fn overrides_replace_defaults_and_open_new_sections() {
        let mut spec = ClusterSpec::new(ObjectStore::Bluestore);
        for o in ["global:mds_beacon_grace=20", "osd.1:debug_osd=20", "mds:mds_cache_memory_limit = 1G"] {
            spec.overrides.push(o.parse().expect(o));
        }
        let conf = render_conf(&layout(), &spec);
        assert_eq!(conf_value(&conf, "global", "mds_beacon_grace"), Some("20"));
        assert_eq!(conf.matches("mds_beacon_grace").count(), 1, "replaced, not repeated");
        assert_eq!(conf_value(&conf, "osd.1", "debug_osd"), Some("20"));
        assert_eq!(conf_value(&conf, "mds", "mds_cache_memory_limit"), Some("1G"));
        for bad in ["osd", "osd:x", ":x=1", "o sd:x=1", "osd:=1"] {
            let e = bad.parse::<ConfOverride>().expect_err(bad);
            assert!(e.to_string().contains("SECTION:KEY=VALUE"));
        }
    }

    #[test]
    fn memstore_conf_sizes_the_store() {
        let spec = ClusterSpec::new(ObjectStore::Memstore);
        let conf = render_conf(&layout(), &spec);
        assert_eq!(conf_value(&conf, "osd", "osd_objectstore"), Some("memstore"));
        assert_eq!(conf_value(&conf, "osd", "memstore_device_bytes"), Some("4294967296"));
    }

    #[test]
    fn secrets_have_cephx_shape() {
        let s = gen_secret();
        assert_eq!(s.len(), 40);
        assert!(s.starts_with("AQ"), "{s}");
        assert_ne!(s, gen_secret());
    }

    #[test]
    fn keyring_names_every_entity_with_caps() {
        let spec = ClusterSpec::new(ObjectStore::Bluestore);
        let k = render_keyring(&entities(&spec, &["c1".into(), "c2".into()]));
        for e in
            ["[mon.]", "[client.admin]", "[mgr.x]", "[osd.0]", "[osd.2]", "[mds.a]", "[mds.b]", "[client.c2]"]
        {
            assert!(k.contains(e), "{e} missing");
        }
        assert!(k.contains("caps mon = \"allow profile osd\""));
        assert_eq!(k.matches("\tkey = ").count(), 10);
    }

    #[test]
    fn uuid_is_well_formed() {
        let u = random_uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }

    const READY: &str = include_str!("../../tests/fixtures/status-ready.json");
    const OSD_DOWN: &str = include_str!("../../tests/fixtures/status-osd-down.json");
    const STARTING: &str = include_str!("../../tests/fixtures/status-starting.json");

    #[test]
    fn a_ready_cluster_is_ready() {
        let s = Status::parse(READY).expect("parses");
        assert!(s.ready(16), "{}", s.summary());
        assert!(s.healthy(16));
        assert_eq!(s.active_mds().len(), 1);
        assert_eq!(s.osdmap.num_osds, 3);
    }

    #[test]
    fn a_killed_osd_is_not_healthy() {
        let s = Status::parse(OSD_DOWN).expect("parses");
        assert!(!s.healthy(16), "{}", s.summary());
        assert!(s.osdmap.num_up_osds < s.osdmap.num_osds);
    }

    #[test]
    fn a_starting_cluster_is_not_ready() {
        let s = Status::parse(STARTING).expect("parses");
        assert!(!s.ready(16), "{}", s.summary());
        assert!(s.summary().contains("none active") || !s.pgs_clean(16));
    }

    #[test]
    fn octopus_nests_the_osdmap() {
        let j = r#"{"health":{"status":"HEALTH_OK"},"osdmap":{"osdmap":{"num_osds":3,"num_up_osds":3,"num_in_osds":3}}}"#;
        let s = Status::parse(j).expect("parses");
        assert!(s.osds_all_up());
    }

    #[test]
    fn config_answers_give_their_value() {
        assert_eq!(
            config_value("{\"ms_inject_delay_max\":\"1.000000\"}\n", "ms_inject_delay_max"),
            "1.000000"
        );
        assert_eq!(config_value("osd mds\n", "ms_inject_delay_type"), "osd mds");
    }
}
