//! The scenario schema: what one `miglab run` does, in TOML. Checked completely before anything
//! starts ([`Scenario::load`], and `miglab check`): a malformed file is an error with the file,
//! line and column; a well-formed one that cannot run (a path outside the file system, a
//! negative time, a guest the host cannot hold) is a list of problems, each with the file, the
//! line and field, and what to write instead.
//!
//! The schema is data only: it imports no executor type.

use miglab_faults::FaultEntry;
use miglab_infra::accel::AccelWish;
pub use miglab_infra::diagnostics::{line_col, line_of, Problem, Problems};
use miglab_infra::topology::ceph::ObjectStore;
use miglab_infra::vm::spec::FsCache;
use miglab_model::{Expect, MigrationParams, Thresholds, Tuning};
use miglab_workloads::job::Workload;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScenarioError {
    #[error("could not read the scenario {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}:{line}:{column}: {message}")]
    Parse { path: PathBuf, line: usize, column: usize, message: String },
    #[error("{0}")]
    Invalid(Problems),
    #[error("{path}: {message}")]
    FioFile { path: PathBuf, message: String },
}

fn one() -> u32 {
    1
}

/// Where it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabSpec {
    /// An existing lab of this name is used as it is; otherwise one is brought up (and down).
    #[serde(default = "LabSpec::default_name")]
    pub name: String,
    /// The OSDs' backend: `bluestore` (a sparse file per OSD, the real I/O path) or `memstore`.
    #[serde(default)]
    pub objectstore: ObjectStore,
}

impl LabSpec {
    fn default_name() -> String {
        "default".into()
    }
}

impl Default for LabSpec {
    fn default() -> Self {
        Self { name: Self::default_name(), objectstore: ObjectStore::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestSpec {
    /// Virtual CPUs (1-64).
    #[serde(default = "one")]
    pub vcpus: u32,
    /// Guest RAM, MiB (at least 128; source and destination hold it at once).
    #[serde(default = "GuestSpec::default_memory")]
    pub memory_mib: u64,
    /// `auto` (KVM where it works, TCG otherwise; the result says which and why), `kvm` or `tcg`.
    #[serde(default)]
    pub accel: AccelWish,
    /// virtiofsd's `--cache`: `never` (default: reads go to CephFS, not the guest's page cache), `auto`, `always`, `metadata`.
    #[serde(default)]
    pub fs_cache: FsCache,
    /// Extra guest kernel command line.
    #[serde(default)]
    pub cmdline: Option<String>,
    /// Extra virtiofsd options (its migration modes and checks, e.g. `--migration-mode=file-handles`); those miglab sets itself are refused.
    #[serde(default)]
    pub virtiofsd_args: Vec<String>,
}

impl GuestSpec {
    fn default_memory() -> u64 {
        512
    }
}

impl Default for GuestSpec {
    fn default() -> Self {
        Self {
            vcpus: 1,
            memory_mib: 512,
            accel: AccelWish::Auto,
            fs_cache: FsCache::Never,
            cmdline: None,
            virtiofsd_args: Vec::new(),
        }
    }
}

/// `[guests]`: how many guests the run migrates together, each its own QEMU and virtiofsd,
/// its own workload instance and files on the one CephFS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestsSpec {
    /// How many guests (1-32): each its own QEMU, virtiofsd, agent and files.
    #[serde(default = "one")]
    pub count: u32,
    /// What some guests do differently (`[[guests.override]]`, guests counted from 1).
    #[serde(default, rename = "override", skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<GuestOverride>,
}

/// `[[guests.override]]`: the guests it names run this workload, or have this much memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuestOverride {
    /// The guests (1-based) this override applies to.
    pub guests: Vec<u32>,
    /// Their workload instead of the scenario's.
    #[serde(default)]
    pub workload: Option<Workload>,
    /// Their RAM instead of `[guest]`'s, MiB.
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

impl Default for GuestsSpec {
    fn default() -> Self {
        Self { count: 1, overrides: Vec::new() }
    }
}

impl GuestsSpec {
    /// The most guests a run may drive.
    pub const MAX: u32 = 32;

    /// The overrides that name guest `i` (from 1), the last first: each field comes from the
    /// last that sets it.
    fn overrides_of(&self, i: u32) -> impl Iterator<Item = &GuestOverride> {
        self.overrides.iter().rev().filter(move |o| o.guests.contains(&i))
    }

    /// Guest `i`'s memory (from 1).
    pub fn memory_mib(&self, base: &GuestSpec, i: u32) -> u64 {
        self.overrides_of(i).find_map(|o| o.memory_mib).unwrap_or(base.memory_mib)
    }

    /// Guest `i`'s workload (from 1), before it gets files of its own.
    pub fn workload(&self, base: &Workload, i: u32) -> Workload {
        self.overrides_of(i).find_map(|o| o.workload.clone()).unwrap_or_else(|| base.clone())
    }

    /// What the machine holds at the worst moment: every guest, plus a destination instance for
    /// each of the `in_flight` largest migrating at once.
    pub fn peak_memory_mib(&self, base: &GuestSpec, in_flight: u32) -> u64 {
        let mut m: Vec<u64> = (1..=self.count).map(|i| self.memory_mib(base, i)).collect();
        m.sort_unstable_by(|a, b| b.cmp(a));
        m.iter().sum::<u64>() + m.iter().take(in_flight as usize).sum::<u64>()
    }

    /// What is wrong with the table, field by field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.count == 0 || self.count > Self::MAX {
            p.push(("count", format!("{} must be between 1 and {}", self.count, Self::MAX)));
        }
        for o in &self.overrides {
            if o.guests.is_empty() {
                p.push(("override", "names no guest: give guests = [2, 4]".into()));
            }
            if let Some(g) = o.guests.iter().find(|g| **g == 0 || **g > self.count) {
                p.push((
                    "override",
                    format!("guest {g} is not one of the {} guests (numbered from 1)", self.count),
                ));
            }
            if o.workload.is_none() && o.memory_mib.is_none() {
                p.push(("override", "changes nothing: give a workload or memory_mib".into()));
            }
            if let Some(Err(e)) = o.workload.as_ref().map(Workload::validate) {
                p.push(("override", format!("workload: {e}")));
            }
            if let Some(m) = o.memory_mib {
                let g = GuestSpec { memory_mib: m, ..GuestSpec::default() };
                p.extend(g.problems().into_iter().map(|(_, why)| ("override", format!("memory_mib: {why}"))));
            }
        }
        p
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrationPlan {
    /// Number of migrations.
    #[serde(default = "one")]
    pub count: u32,
    /// Seconds of workload before the first migration.
    #[serde(default = "MigrationPlan::default_warmup")]
    pub warmup_s: f64,
    /// Seconds after each migration before the next (and before its window closes).
    #[serde(default = "MigrationPlan::default_settle")]
    pub settle_s: f64,
    /// QEMU's `downtime-limit`, ms (QEMU's default, 300, when left out).
    #[serde(default)]
    pub downtime_limit_ms: Option<u64>,
    /// QEMU's `max-bandwidth`, bytes/s (unlimited when left out).
    #[serde(default)]
    pub max_bandwidth: Option<u64>,
    /// A hop still running after this long is cancelled: `not-converged` if pre-copy was still iterating, else `timeout`.
    #[serde(default = "MigrationPlan::default_timeout")]
    pub timeout_s: f64,
    /// After a migration that failed, try once more to the same host (can the guest still
    /// move?), and record how that went.
    #[serde(default = "MigrationPlan::default_follow_up")]
    pub follow_up: bool,
    /// How long a hop holds the guest at its pause before the switch-over for the faults
    /// anchored there; past it the hop is cancelled (and fails), never switched over without
    /// them.
    #[serde(default = "MigrationPlan::default_switchover_hold")]
    pub switchover_hold_s: f64,
    /// Pause at the switch-over (`pause-before-switchover`) to mark where the device state
    /// starts and read the bytes sent so far: QEMU then reports the `device` status, and the
    /// bytes after the guest stopped are known. Costs one QMP round trip of downtime.
    #[serde(default)]
    pub device_phase: bool,
    /// At the pause before the switch-over (the guest stopped), the source's CephFS client
    /// writes back what it holds of the workload's files (each fsynced through its mount), as an
    /// orchestrator could before fencing that host. Its time is part of the downtime; the hop
    /// records it (`flush`).
    #[serde(default)]
    pub flush_before_switchover: bool,
    /// Ask for postcopy (`postcopy-ram` on both sides, then `migrate-start-postcopy`). With a
    /// vhost-user-fs device QEMU refuses it: the hop's outcome is `unsupported`, with QEMU's text.
    #[serde(default)]
    pub postcopy: bool,
    /// With several guests: how many migrate at once (a new one starts when one ends); all of
    /// them when left out (or when it is guests.count or more).
    #[serde(default)]
    pub parallel: Option<u32>,
    /// The other knobs: auto-converge, XBZRLE, multifd compression, dirty-limit, ...
    #[serde(default)]
    pub tuning: Tuning,
    /// Before each hop, the source's dirty rate measured with `calc-dirty-rate` (page
    /// sampling) over this long. Default: 1 s with a dirtying load (`[dirty]`), else none; 0:
    /// never.
    #[serde(default)]
    pub calc_dirty_rate_s: Option<f64>,
    /// The destination QEMU's scheduling niceness (−20..19) from its start: on hosts that
    /// share CPUs with the source (the lab: one machine) the destination otherwise falls
    /// behind in the stream while the source side runs, and that lag lands in the downtime.
    /// −10 makes it behave more like a host of its own (and changes what is measured: say so
    /// when comparing). Default: left as started.
    #[serde(default)]
    pub destination_nice: Option<i32>,
}

impl MigrationPlan {
    fn default_follow_up() -> bool {
        true
    }
    fn default_warmup() -> f64 {
        2.0
    }
    fn default_settle() -> f64 {
        1.0
    }
    fn default_timeout() -> f64 {
        120.0
    }
    pub fn default_switchover_hold() -> f64 {
        30.0
    }
    pub fn params(&self) -> MigrationParams {
        MigrationParams {
            downtime_limit_ms: self.downtime_limit_ms,
            max_bandwidth: self.max_bandwidth,
            postcopy: self.postcopy,
            tuning: self.tuning.clone(),
        }
    }

    /// How long to measure the dirty rate before each hop, if at all.
    pub fn dirty_rate_window(&self, dirtying: bool) -> Option<f64> {
        match self.calc_dirty_rate_s {
            Some(s) if s > 0.0 => Some(s),
            Some(_) => None,
            None => dirtying.then_some(1.0),
        }
    }
}

impl Default for MigrationPlan {
    fn default() -> Self {
        Self {
            count: 1,
            warmup_s: Self::default_warmup(),
            settle_s: Self::default_settle(),
            downtime_limit_ms: None,
            max_bandwidth: None,
            timeout_s: Self::default_timeout(),
            follow_up: true,
            switchover_hold_s: Self::default_switchover_hold(),
            device_phase: false,
            postcopy: false,
            parallel: None,
            tuning: Tuning::default(),
            calc_dirty_rate_s: None,
            destination_nice: None,
            flush_before_switchover: false,
        }
    }
}

/// Ceph settings a run changes for its duration (`[ceph]`): each read first, journaled (as a
/// fault's changes are: a miglab killed mid-run has them reverted by the next run or `lab
/// down`) and set back when the run ends. What the MDS and the clients do with a session that
/// went quiet — a host lost, a client fenced — is decided by these.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CephSettings {
    /// Seconds without a renewal after which the MDS marks a client's session stale, and other
    /// clients may have the caps it held (the file system's `session_timeout`; Ceph: 60, and
    /// at least 30).
    #[serde(default)]
    pub session_timeout_s: Option<u32>,
    /// Seconds after which the MDS evicts a session that went stale (`session_autoclose`;
    /// Ceph: 300).
    #[serde(default)]
    pub session_autoclose_s: Option<u32>,
    /// Seconds the MDS waits for a client to give back a cap it revoked before evicting that
    /// client (every MDS's `mds_cap_revoke_eviction_timeout`; Ceph: 0, never).
    #[serde(default)]
    pub mds_cap_revoke_eviction_timeout_s: Option<f64>,
    /// Whether a client whose session went stale reconnects (every client's
    /// `client_reconnect_stale`; Ceph: false).
    #[serde(default)]
    pub client_reconnect_stale: Option<bool>,
}

/// Whose setting a [`CephSettings`] entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingOf {
    /// The file system (`ceph fs set`).
    FileSystem,
    /// Every MDS (`ceph tell mds.<id> config set`).
    EveryMds,
    /// Every host's CephFS client (its admin socket).
    EveryClient,
}

impl CephSettings {
    /// Each setting given, as Ceph names it, with its value.
    pub fn changes(&self) -> Vec<(SettingOf, &'static str, String)> {
        let mut v = Vec::new();
        if let Some(t) = self.session_timeout_s {
            v.push((SettingOf::FileSystem, "session_timeout", t.to_string()));
        }
        if let Some(t) = self.session_autoclose_s {
            v.push((SettingOf::FileSystem, "session_autoclose", t.to_string()));
        }
        if let Some(t) = self.mds_cap_revoke_eviction_timeout_s {
            v.push((SettingOf::EveryMds, "mds_cap_revoke_eviction_timeout", t.to_string()));
        }
        if let Some(b) = self.client_reconnect_stale {
            v.push((SettingOf::EveryClient, "client_reconnect_stale", b.to_string()));
        }
        v
    }

    /// What is wrong with them: (key, why) each.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        // Ceph 16 refuses a session_timeout under 30 s.
        for (key, v, least) in [
            ("session_timeout_s", self.session_timeout_s, 30),
            ("session_autoclose_s", self.session_autoclose_s, 1),
        ] {
            if let Some(v) = v.filter(|v| *v < least || *v > 3600) {
                p.push((key, format!("{v}: give seconds, {least} to 3600")));
            }
        }
        if let Some(t) =
            self.mds_cap_revoke_eviction_timeout_s.filter(|t| !(t.is_finite() && (0.0..=3600.0).contains(t)))
        {
            p.push(("mds_cap_revoke_eviction_timeout_s", format!("{t}: give seconds, 0 (never) to 3600")));
        }
        p
    }
}

/// What runs after the migrations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Seconds of workload after the last migration.
    #[serde(default = "RunSpec::default_cooldown")]
    pub cooldown_s: f64,
    /// Read back everything the workload wrote at the end.
    #[serde(default = "RunSpec::default_verify")]
    pub verify: bool,
    /// Deadline for laying out the workload's files.
    #[serde(default = "RunSpec::default_layout_timeout")]
    pub layout_timeout_s: f64,
}

impl RunSpec {
    fn default_cooldown() -> f64 {
        1.0
    }
    fn default_verify() -> bool {
        true
    }
    fn default_layout_timeout() -> f64 {
        300.0
    }
}

impl Default for RunSpec {
    fn default() -> Self {
        Self { cooldown_s: 1.0, verify: true, layout_timeout_s: 300.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// The scenario's name: its results go to `<out>/<name>/<repetition>/`.
    pub name: String,
    /// One line for reports and `miglab check`.
    #[serde(default)]
    pub description: String,
    /// The seed every repetition's plan derives its sub-seeds from (workload, fault timing, choices).
    #[serde(default)]
    pub seed: u64,
    /// How many times the scenario runs (`--repetitions` overrides it).
    #[serde(default = "one")]
    pub repetitions: u32,
    /// The lab it runs on (`[lab]`).
    #[serde(default)]
    pub lab: LabSpec,
    /// The guest (`[guest]`).
    #[serde(default)]
    pub guest: GuestSpec,
    /// Several guests (`[guests]`).
    #[serde(default)]
    pub guests: GuestsSpec,
    /// The builds under test (default: the installed ones).
    #[serde(default)]
    pub binaries: miglab_infra::binaries::BinaryChoice,
    /// The workload, inline ...
    #[serde(default)]
    pub workload: Option<Workload>,
    /// ... or every job of a fio job file: any readable path, absolute or relative to the
    /// scenario's directory (it is only read).
    #[serde(default)]
    pub fio_file: Option<PathBuf>,
    /// The directory the job file's absolute paths were written for: paths below it are
    /// taken inside the share (`/data1/x` with `fio_mount = "/data1"` is `x`).
    #[serde(default)]
    pub fio_mount: Option<String>,
    /// The migration plan (`[migration]`).
    #[serde(default)]
    pub migration: MigrationPlan,
    /// How a run is carried out (`[run]`).
    #[serde(default)]
    pub run: RunSpec,
    /// Ceph settings for the run's duration (`[ceph]`).
    #[serde(default)]
    pub ceph: CephSettings,
    /// Faults, each with its trigger (`[[fault]]`).
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultEntry>,
    /// A memory-dirtying load beside the workload, in every guest (`[dirty]`): its pages are
    /// verified after every hop.
    #[serde(default)]
    pub dirty: Option<miglab_workloads::dirty::DirtySpec>,
    /// The outcome this scenario expects: the run passes when it happens (and loses no data).
    #[serde(default)]
    pub expect: Option<Expect>,
    /// Where the outcome classes' lines are drawn.
    #[serde(default)]
    pub outcome: OutcomeSpec,
    /// The finding this scenario re-checks (`scenarios/findings/`): its claim and the bounds on
    /// the figures that make it; `expect` is the claim's outcome. `miglab findings` judges it.
    #[serde(default)]
    pub finding: Option<miglab_model::Finding>,
    /// Parameters to sweep: a dotted path into this scenario (`migration.downtime_limit_ms`,
    /// `workload.bs`, `guest.virtiofsd_args`, `fault.0.duration_ms`: lists index from 0) and the values it takes.
    /// Every combination is a cell, run `repetitions` times.
    #[serde(default)]
    pub sweep: toml::Table,
}

/// `[outcome]`: thresholds of the outcome classes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutcomeSpec {
    /// An I/O stall longer than this (ms) makes a completed run `completed-degraded` (so do failed ops).
    #[serde(default = "OutcomeSpec::stall")]
    pub degraded_stall_ms: f64,
    /// No op completing for this long (ms) while heartbeats arrive is `fs-hung`.
    #[serde(default = "OutcomeSpec::hung")]
    pub fs_hung_ms: f64,
    /// No heartbeat for this long (ms) is `guest-lost`.
    #[serde(default = "OutcomeSpec::lost")]
    pub guest_lost_ms: f64,
}

impl OutcomeSpec {
    fn stall() -> f64 {
        Thresholds::default().degraded_stall_ms
    }
    fn hung() -> f64 {
        Thresholds::default().fs_hung_ms
    }
    fn lost() -> f64 {
        Thresholds::default().guest_lost_ms
    }
    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            degraded_stall_ms: self.degraded_stall_ms,
            fs_hung_ms: self.fs_hung_ms,
            guest_lost_ms: self.guest_lost_ms,
        }
    }
}

impl Default for OutcomeSpec {
    fn default() -> Self {
        Self { degraded_stall_ms: Self::stall(), fs_hung_ms: Self::hung(), guest_lost_ms: Self::lost() }
    }
}

/// virtiofsd options a scenario may not give: they would share something other than the
/// host's CephFS mount, or move the socket QEMU connects to.
const VIRTIOFSD_RESERVED: &[&str] =
    &["--shared-dir", "--socket-path", "--fd", "--socket-group", "-o", "--print-capabilities"];

/// What is wrong with a scenario's name, if anything: it names a result directory.
pub fn name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name.chars().all(|ch| ch.is_ascii_alphanumeric() || "-_".contains(ch));
    (!ok).then(|| format!("'{name}' must be letters, digits, '-' or '_' (it names the result directory)"))
}

/// The option a virtiofsd argument gives: `--name` of `--name=value`, `-o` of `-osource=/`
/// (a short option's value may be attached).
fn virtiofsd_flag(arg: &str) -> &str {
    if arg.starts_with("--") {
        arg.split('=').next().unwrap_or(arg)
    } else {
        arg.get(..2).unwrap_or(arg)
    }
}

impl GuestSpec {
    /// What is wrong with the guest, field by field (checked for scenarios and replayed plans).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.vcpus == 0 || self.vcpus > 64 {
            p.push(("vcpus", format!("{} must be between 1 and 64", self.vcpus)));
        }
        if self.memory_mib < 128 || self.memory_mib > 1 << 20 {
            p.push((
                "memory_mib",
                format!("{} MiB: give 128 MiB or more (the guest's kernel needs it)", self.memory_mib),
            ));
        }
        if self.cmdline.as_deref().is_some_and(|l| l.contains('\n')) {
            p.push(("cmdline", "must be one line".into()));
        }
        for a in &self.virtiofsd_args {
            let flag = virtiofsd_flag(a);
            if !a.starts_with('-') {
                p.push((
                    "virtiofsd_args",
                    format!("'{a}' is not an option: write --option or --option=value"),
                ));
            } else if VIRTIOFSD_RESERVED.contains(&flag) {
                p.push(("virtiofsd_args", format!("'{flag}' is set by miglab (virtiofsd shares the host's CephFS mount on the instance's socket); remove it")));
            }
        }
        p
    }
}

/// Keys that moved, and where they live now: a scenario written before says so, not just
/// "unknown field".
const MOVED: &[(&str, &str)] =
    &[("multifd_channels", "[migration.tuning] multifd_channels (beside its compression)")];

use check::Checker;

impl Scenario {
    /// What the scenario's faults are resolved against on a cluster of `osds` OSDs: its hops
    /// and how long its run can last after each anchor.
    pub fn fault_universe(&self, osds: &[u32]) -> miglab_faults::Universe {
        let ms = |s: f64| (s.max(0.0) * 1000.0).ceil() as u64;
        // A hop of several guests k at a time lasts up to ⌈count / k⌉ migrations.
        let rounds = f64::from(self.guests.count.div_ceil(self.in_flight()));
        miglab_faults::Universe {
            osds: osds.to_vec(),
            hops: self.migration.count,
            guests: self.guests.count,
            span: miglab_faults::Span {
                warmup_ms: ms(self.migration.warmup_s),
                hop_ms: ms(rounds * self.migration.timeout_s + self.migration.settle_s),
                cooldown_ms: ms(self.run.cooldown_s),
                follow_up: self.migration.follow_up,
            },
        }
    }

    /// How many guests migrate at once.
    pub fn in_flight(&self) -> u32 {
        self.migration.parallel.unwrap_or(self.guests.count).clamp(1, self.guests.count.max(1))
    }

    /// Parses and checks everything that does not need the machine.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((1, 1), |r| line_col(text, r.start));
            // The parser gives no words for some errors (a value cut off at the end of the file).
            let message = match e.message().trim() {
                "" => "a value is missing or cut off here: complete it (a string in quotes, a number, true/false)".into(),
                m => match MOVED.iter().find(|(key, _)| m.starts_with(&format!("unknown field `{key}`"))) {
                    Some((_, home)) => format!("{m}; it now lives in {home}"),
                    None => m.to_string(),
                },
            };
            ScenarioError::Parse { path: path.into(), line, column, message }
        })?;
        let mut c = Checker { text, list: Vec::new() };
        s.check_fields(&mut c);
        if c.list.is_empty() {
            Ok(s)
        } else {
            Err(ScenarioError::Invalid(Problems { path: path.into(), list: c.list }))
        }
    }

    /// The line of the `index`th `[[fault]]` header.
    fn fault_line(&self, text: &str, index: usize) -> Option<usize> {
        text.lines().enumerate().filter(|(_, l)| l.trim() == "[[fault]]").nth(index).map(|(i, _)| i + 1)
    }

    /// Parses and checks the scenario in `path`, its fio job file included.
    pub fn load(path: &Path) -> Result<(Self, String, Workload), ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ScenarioError::Read { path: path.into(), source })?;
        let s = Self::parse(&text, path)?;
        let w = s.workload(path)?;
        let mut c = Checker { text: &text, list: Vec::new() };
        s.check_workload_fits(&w, &mut c);
        if !c.list.is_empty() {
            return Err(ScenarioError::Invalid(Problems { path: path.into(), list: c.list }));
        }
        Ok((s, text, w))
    }

    /// The workload, with a fio job file imported.
    pub fn workload(&self, scenario_path: &Path) -> Result<Workload, ScenarioError> {
        if let Some(w) = &self.workload {
            return Ok(w.clone());
        }
        let file = self.fio_file.clone().unwrap_or_default();
        let p = scenario_path.parent().unwrap_or(Path::new(".")).join(file);
        let text =
            std::fs::read_to_string(&p).map_err(|source| ScenarioError::Read { path: p.clone(), source })?;
        let ctx = miglab_workloads::fio::Context { mount: self.fio_mount.clone() };
        miglab_workloads::fio::import(&text, &miglab_workloads::fio::file_name(&p), &ctx)
            .map(|i| Workload::FioFile(i.file))
            .map_err(|e| ScenarioError::FioFile { path: p, message: e.to_string() })
    }
}

mod check;
mod sweep;
#[cfg(test)]
mod tests;

pub use sweep::Cell;
