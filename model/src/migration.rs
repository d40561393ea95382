//! What one live migration did: QEMU's own figures and the typed timeline of both QEMUs' events,
//! stamped on arrival on the run clock.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which QEMU an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Source,
    Destination,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Destination => "destination",
        }
    }
}

/// QEMU's `MigrationStatus`, as its `MIGRATION` event and `query-migrate` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationStatus {
    None,
    Setup,
    Cancelling,
    Cancelled,
    Active,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecoverSetup,
    PostcopyRecover,
    Completed,
    Failed,
    Colo,
    PreSwitchover,
    Device,
    WaitUnplug,
}

impl MigrationStatus {
    pub const ALL: [MigrationStatus; 15] = [
        Self::None,
        Self::Setup,
        Self::Cancelling,
        Self::Cancelled,
        Self::Active,
        Self::PostcopyActive,
        Self::PostcopyPaused,
        Self::PostcopyRecoverSetup,
        Self::PostcopyRecover,
        Self::Completed,
        Self::Failed,
        Self::Colo,
        Self::PreSwitchover,
        Self::Device,
        Self::WaitUnplug,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Setup => "setup",
            Self::Cancelling => "cancelling",
            Self::Cancelled => "cancelled",
            Self::Active => "active",
            Self::PostcopyActive => "postcopy-active",
            Self::PostcopyPaused => "postcopy-paused",
            Self::PostcopyRecoverSetup => "postcopy-recover-setup",
            Self::PostcopyRecover => "postcopy-recover",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Colo => "colo",
            Self::PreSwitchover => "pre-switchover",
            Self::Device => "device",
            Self::WaitUnplug => "wait-unplug",
        }
    }

    /// The status QEMU names `s`, if it is one.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Whether the migration is over.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A QMP event that matters to a migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QmpEvent {
    Migration {
        status: MigrationStatus,
    },
    /// The source started RAM pass `pass`.
    MigrationPass {
        pass: u64,
    },
    /// The guest's vCPUs stopped.
    Stop,
    /// The guest's vCPUs run again.
    Resume,
    /// Any other event, by name.
    Other {
        name: String,
    },
}

impl QmpEvent {
    /// `(name, detail)` for a CSV row.
    pub fn describe(&self) -> (String, String) {
        match self {
            QmpEvent::Migration { status } => ("MIGRATION".into(), status.to_string()),
            QmpEvent::MigrationPass { pass } => ("MIGRATION_PASS".into(), pass.to_string()),
            QmpEvent::Stop => ("STOP".into(), String::new()),
            QmpEvent::Resume => ("RESUME".into(), String::new()),
            QmpEvent::Other { name } => (name.clone(), String::new()),
        }
    }
}

/// One QMP event on the run's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Run clock: ms since the run started, stamped when the event reached miglab.
    pub t_ms: f64,
    pub side: Side,
    #[serde(flatten)]
    pub event: QmpEvent,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    /// QEMU's error text; whether the source kept (or resumed) running the guest.
    Failed {
        error: String,
        #[serde(default)]
        source_running: bool,
    },
    /// The deadline passed; the migration was cancelled.
    TimedOut {
        after_ms: u64,
        #[serde(default)]
        source_running: bool,
    },
    /// QEMU refused what the hop asked of it before it began (a capability: postcopy with a
    /// vhost-user-fs device), with QEMU's text; the guest never left the source.
    Unsupported {
        error: String,
    },
    /// The deadline passed while pre-copy still iterated (it had synced the dirty log again,
    /// yet never got what was left below what the downtime limit allows): the guest dirtied
    /// memory faster than the link sent it. Cancelled.
    NotConverged {
        after_ms: u64,
        #[serde(default)]
        source_running: bool,
        /// Dirty-log syncs (pre-copy passes) made, and what was left to send at the end.
        passes: u64,
        remaining_bytes: u64,
    },
}

/// How pre-copy went against the guest's dirtying: the dirty rate QEMU measured just before
/// the hop, and one sample per pass (each dirty-log sync).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// `calc-dirty-rate` (page-sampling) on the source just before `migrate`, in MiB/s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_rate_mib_s: Option<f64>,
    /// The highest `cpu-throttle-percentage` auto-converge reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_throttle_pct: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<Pass>,
}

impl Convergence {
    pub fn is_empty(&self) -> bool {
        *self == Convergence::default()
    }
}

/// `query-migrate` at the first answer of a new pass (a new `dirty-sync-count`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// When QEMU reported it, on the run clock.
    pub t_ms: f64,
    /// QEMU's `dirty-sync-count`: which pass.
    pub dirty_sync_count: u64,
    /// RAM still to send, bytes.
    pub remaining_bytes: Option<u64>,
    /// Pages dirtied per second in the last pass, as QEMU counted them.
    pub dirty_pages_rate: Option<u64>,
    /// QEMU's `expected-downtime` then, ms.
    pub expected_downtime_ms: Option<u64>,
    /// QEMU's `ram.mbps` then.
    pub mbps: Option<f64>,
    /// Auto-converge's CPU throttle then, percent.
    pub throttle_pct: Option<u64>,
}

/// Migration knobs beyond the basic three, each left at QEMU's default unless set. Swept as
/// one table (`"migration.tuning" = [{ name = "plain" }, { name = "ac", auto_converge = {} }]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tuning {
    /// A label for sweeps and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Auto-converge: QEMU throttles the guest's vCPUs while pre-copy does not converge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_converge: Option<AutoConverge>,
    /// XBZRLE: pages sent as deltas against a cache of this many MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xbzrle_cache_mib: Option<u64>,
    /// Multifd channels: none is one stream, no multifd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multifd_channels: Option<u8>,
    /// `none`, `zlib`, `zstd`, `qpl` or `uadk`: what this QEMU was built with decides which
    /// it accepts (a refusal is the hop's outcome, `unsupported`). Needs multifd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multifd_compression: Option<String>,
    /// Bytes/s QEMU may assume for the switch-over when it decides whether it fits the
    /// downtime limit (`avail-switchover-bandwidth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avail_switchover_bandwidth: Option<u64>,
    /// Dirty-limit (`dirty-limit` capability, `vcpu-dirty-limit` MiB/s): KVM with a dirty ring
    /// only; QEMU refuses it otherwise (the hop's outcome, `unsupported`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_limit_mib_s: Option<u64>,
}

impl Tuning {
    pub fn is_plain(&self) -> bool {
        *self == Tuning::default()
    }

    pub const COMPRESSIONS: [&'static str; 5] = ["none", "zlib", "zstd", "qpl", "uadk"];
}

/// QEMU's defaults: 20 % at first, 10 % more each pass that does not converge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoConverge {
    #[serde(default = "AutoConverge::default_initial")]
    pub initial_pct: u8,
    #[serde(default = "AutoConverge::default_increment")]
    pub increment_pct: u8,
}

impl AutoConverge {
    fn default_initial() -> u8 {
        20
    }
    fn default_increment() -> u8 {
        10
    }
}

/// QEMU's `downtime-limit` when none is set.
pub const QEMU_DEFAULT_DOWNTIME_LIMIT_MS: u64 = 300;

/// The migration parameters that were set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "ParamsOnDisk")]
pub struct MigrationParams {
    /// QEMU's `downtime-limit` set for the hop, ms (none: QEMU's default, 300).
    pub downtime_limit_ms: Option<u64>,
    /// Bytes per second.
    pub max_bandwidth: Option<u64>,
    /// Postcopy asked for (`postcopy-ram` on both sides, then `migrate-start-postcopy`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub postcopy: bool,
    /// The other knobs, multifd channels among them.
    #[serde(default, skip_serializing_if = "Tuning::is_plain")]
    pub tuning: Tuning,
}

/// [`MigrationParams`] as `result.json` may hold them: results written before multifd channels
/// had their one home in the tuning carry them beside it.
#[derive(Deserialize)]
struct ParamsOnDisk {
    downtime_limit_ms: Option<u64>,
    max_bandwidth: Option<u64>,
    #[serde(default)]
    multifd_channels: Option<u8>,
    #[serde(default)]
    postcopy: bool,
    #[serde(default)]
    tuning: Tuning,
}

impl From<ParamsOnDisk> for MigrationParams {
    fn from(p: ParamsOnDisk) -> Self {
        let tuning =
            Tuning { multifd_channels: p.tuning.multifd_channels.or(p.multifd_channels), ..p.tuning };
        MigrationParams {
            downtime_limit_ms: p.downtime_limit_ms,
            max_bandwidth: p.max_bandwidth,
            postcopy: p.postcopy,
            tuning,
        }
    }
}

impl MigrationParams {
    /// Multifd channels, if multifd was asked for.
    pub fn multifd_channels(&self) -> Option<u8> {
        self.tuning.multifd_channels
    }

    /// The downtime limit QEMU worked to: the one set, or its default.
    pub fn downtime_limit(&self) -> u64 {
        self.downtime_limit_ms.unwrap_or(QEMU_DEFAULT_DOWNTIME_LIMIT_MS)
    }
}

/// The phases derived from the timeline, on the run clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Source status `active`: setup is over, RAM is being sent.
    pub active_ms: Option<f64>,
    /// Source `STOP`: the guest is paused for the switch-over.
    pub stop_ms: Option<f64>,
    /// Source status `device`: the device state (virtio-fs included) is being sent.
    pub device_ms: Option<f64>,
    /// Destination `RESUME`: the guest runs again, on the destination.
    pub resume_ms: Option<f64>,
    /// Source status `completed`, `failed` or `cancelled`.
    pub end_ms: Option<f64>,
    /// From source STOP to destination RESUME, as the host saw the events arrive.
    pub paused_ms: Option<f64>,
    /// Pre-copy passes (QEMU's `dirty-sync-count` at the end).
    pub passes: u32,
}

impl Phases {
    /// From the source's `device` status to the destination's RESUME: the device state
    /// (virtiofsd's among it) saved, sent and loaded, with the last of RAM.
    pub fn device_state_ms(&self) -> Option<f64> {
        match (self.device_ms, self.resume_ms) {
            (Some(d), Some(r)) if r >= d => Some(r - d),
            _ => None,
        }
    }

    /// Derives the phases from a timeline in any order.
    pub fn from_timeline(events: &[TimelineEvent]) -> Self {
        let mut ev: Vec<&TimelineEvent> = events.iter().collect();
        ev.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let first = |side: Side, want: &dyn Fn(&QmpEvent) -> bool| {
            ev.iter().find(|e| e.side == side && want(&e.event)).map(|e| e.t_ms)
        };
        let status = |s: MigrationStatus| move |e: &QmpEvent| *e == QmpEvent::Migration { status: s };
        let stop_ms = first(Side::Source, &|e| *e == QmpEvent::Stop);
        let resume_ms = first(Side::Destination, &|e| *e == QmpEvent::Resume);
        Phases {
            active_ms: first(Side::Source, &status(MigrationStatus::Active)),
            stop_ms,
            device_ms: first(Side::Source, &status(MigrationStatus::Device)),
            resume_ms,
            end_ms: first(
                Side::Source,
                &|e| matches!(e, QmpEvent::Migration { status } if status.is_final()),
            ),
            paused_ms: match (stop_ms, resume_ms) {
                (Some(s), Some(r)) if r >= s => Some(r - s),
                _ => None,
            },
            passes: ev
                .iter()
                .filter(|e| e.side == Side::Source && matches!(e.event, QmpEvent::MigrationPass { .. }))
                .count() as u32,
        }
    }
}

/// One hop of a guest from one host to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    /// 1 for the run's first migration.
    pub hop: u32,
    /// Which guest of the run migrated (from 1; a run of one guest has only guest 1).
    #[serde(default = "crate::migration::first_guest")]
    pub guest: u32,
    /// Source host.
    pub from: String,
    /// Destination host.
    pub to: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    /// The migration parameters set for the hop.
    pub params: MigrationParams,
    /// The URI the source sent the stream to (a proxy's address for a shaped link).
    pub uri: String,
    /// Run clock: when `migrate` was sent.
    pub started_ms: f64,
    /// QEMU's figures from `query-migrate` on the source.
    pub total_time_ms: Option<u64>,
    /// QEMU's `downtime`, ms: the guest stopped, as QEMU counts it.
    pub downtime_ms: Option<u64>,
    /// QEMU's `setup-time`, ms.
    pub setup_time_ms: Option<u64>,
    /// QEMU's `ram.transferred`, bytes.
    pub transferred_bytes: Option<u64>,
    /// QEMU's `ram.total`, bytes.
    pub ram_total_bytes: Option<u64>,
    /// Dirty-sync passes over RAM.
    pub dirty_sync_count: Option<u64>,
    /// QEMU's `ram.mbps` at the end.
    pub mbps: Option<f64>,
    /// From `migrate` to the destination's RESUME (or the failure), on the host's clock.
    pub wall_ms: f64,
    /// The longest the source's QEMU took to answer `query-migrate` during the migration: its
    /// main loop was blocked that long (e.g. in a vhost-user call to a virtiofsd that waits for
    /// the file system). Absent when no query was answered.
    #[serde(default)]
    pub longest_qmp_wait_ms: Option<f64>,
    /// The hop's phases from both QEMUs' events.
    pub phases: Phases,
    /// Both QEMUs' events, on the run clock.
    pub timeline: Vec<TimelineEvent>,
    /// A migration attempted after a failed one, to see whether the guest can still move.
    #[serde(default)]
    pub follow_up: bool,
    /// The hop completed, but taking over the destination or stopping the old source failed:
    /// the record stands, and this says what was left behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cleanup_error: Option<String>,
    /// QEMU's `expected-downtime` in its last answer before the guest stopped: what QEMU
    /// foresaw (it counts the RAM left, not the device state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_downtime_ms: Option<u64>,
    /// The bytes QEMU sent after the guest stopped: its count at the pause before the
    /// switch-over against its count at the end (with `device_phase` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_after_stop: Option<u64>,
    /// The source's client flushed at the pause before the switch-over
    /// (`flush_before_switchover`): how long it took inside the downtime, and what failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flush: Option<Flush>,
    /// What virtiofsd held: the source's descriptors before `migrate`, the destination's
    /// after the guest resumed there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtiofsd: Option<VirtiofsdHeld>,
    /// Pre-copy's passes and the dirty rate measured before the hop.
    #[serde(default, skip_serializing_if = "Convergence::is_empty")]
    pub convergence: Convergence,
    /// miglab's machine's CPUs from `migrate` to the guest running again (a covariate of
    /// the hop's figures: these machines are shared and virtual).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_cpu: Option<HostCpu>,
    /// Where QEMU's downtime went, from its own tracepoints on both sides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_parts: Option<crate::DowntimeParts>,
    /// Why a completed hop has no parts (a trace unreadable, a checkpoint missing), or why its
    /// parts are not QEMU's downtime (they add up to another figure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_parts_problem: Option<String>,
}

/// How busy miglab's machine was over a window, from `/proc/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct HostCpu {
    /// CPU time spent running anything (not idle, not stolen), %.
    pub busy_pct: f64,
    /// CPU time the hypervisor took (a vCPU ready but not run), %.
    pub steal_pct: f64,
    /// CPU time the cluster's processes on this machine used in the window (the lab's Ceph
    /// daemons and ceph-fuse clients), ms; absent where the cluster runs elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ceph_cpu_ms: Option<f64>,
}

/// A process's open descriptors, as `/proc/<pid>/fdinfo` lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFiles {
    pub total: u64,
    /// `O_PATH` descriptors: virtiofsd holds one per inode the guest has looked up (unless
    /// it keeps inodes as file handles).
    pub path_only: u64,
}

impl OpenFiles {
    /// `O_PATH` on Linux (octal, as fdinfo's `flags:` shows it).
    const O_PATH: u64 = 0o10_000_000;

    /// Counts the descriptors from their fdinfo `flags:` values (octal).
    pub fn from_flags<'a>(flags: impl IntoIterator<Item = &'a str>) -> Self {
        let mut o = OpenFiles::default();
        for f in flags {
            o.total += 1;
            if u64::from_str_radix(f.trim(), 8).is_ok_and(|v| v & Self::O_PATH != 0) {
                o.path_only += 1;
            }
        }
        o
    }
}

/// virtiofsd's descriptors on both sides of a hop.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtiofsdHeld {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<OpenFiles>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<OpenFiles>,
    /// Why a side could not be counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unmeasured: Vec<String>,
}

/// The guest of a record written before runs had several.
pub fn first_guest() -> u32 {
    1
}

/// The source's CephFS client told to write back what it holds of the guest's files while the
/// guest is stopped before the switch-over, as an orchestrator could before fencing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flush {
    /// From the pause to the flush's end: part of QEMU's downtime (its `held` part).
    pub ms: f64,
    /// Files fsynced through the source's mount.
    pub files: u32,
    /// What failed (the switch-over went on regardless).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MigrationRecord {
    pub fn completed(&self) -> bool {
        self.outcome == Outcome::Completed
    }

    /// Hop 1, c1 → c2, started at `started_ms`, with nothing measured: for tests (this crate's,
    /// and those of crates that enable the `samples` feature as a dev-dependency).
    #[cfg(any(test, feature = "samples"))]
    pub fn sample(outcome: Outcome, started_ms: f64) -> Self {
        let mut m = Self::unmeasured(1, 1, "c1", "c2", outcome, MigrationParams::default(), started_ms);
        m.uri = "tcp:10.77.0.12:4444".into();
        m
    }

    /// A hop with its outcome and nothing measured (one QEMU refused before it began, say).
    pub fn unmeasured(
        hop: u32,
        guest: u32,
        from: &str,
        to: &str,
        outcome: Outcome,
        params: MigrationParams,
        started_ms: f64,
    ) -> Self {
        MigrationRecord {
            hop,
            guest,
            from: from.into(),
            to: to.into(),
            outcome,
            params,
            uri: String::new(),
            started_ms,
            total_time_ms: None,
            downtime_ms: None,
            setup_time_ms: None,
            transferred_bytes: None,
            ram_total_bytes: None,
            dirty_sync_count: None,
            mbps: None,
            wall_ms: 0.0,
            longest_qmp_wait_ms: None,
            phases: Phases::default(),
            timeline: vec![],
            follow_up: false,
            cleanup_error: None,
            expected_downtime_ms: None,
            bytes_after_stop: None,
            flush: None,
            virtiofsd: None,
            convergence: Convergence::default(),
            downtime_parts: None,
            downtime_parts_problem: None,
            host_cpu: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every outcome round-trips inside a record: the outcome is flattened into it, so no
    /// variant's field may share a name with the record's own (`dirty_sync_count` did).
    #[test]
    fn every_outcome_round_trips_flattened_into_its_record() {
        let outcomes = [
            Outcome::Completed,
            Outcome::Failed { error: "e".into(), source_running: true },
            Outcome::TimedOut { after_ms: 5, source_running: true },
            Outcome::Unsupported { error: "Postcopy is not supported".into() },
            Outcome::NotConverged { after_ms: 9, source_running: true, passes: 4, remaining_bytes: 7 },
        ];
        for o in outcomes {
            let mut m = MigrationRecord::sample(o, 1.0);
            m.dirty_sync_count = Some(3);
            m.params.tuning.auto_converge = Some(AutoConverge { initial_pct: 60, increment_pct: 20 });
            m.convergence.passes.push(Pass { dirty_sync_count: 2, ..Pass::default() });
            let back: MigrationRecord =
                serde_json::from_str(&serde_json::to_string(&m).expect("serializes")).expect("parses back");
            assert_eq!(back, m);
        }
    }

    #[test]
    fn descriptors_are_told_apart_by_o_path() {
        // fdinfo of virtiofsd: a socket, an O_PATH inode (O_PATH|O_CLOEXEC), an open file.
        let o = OpenFiles::from_flags(["02", "012000000", "0100002", "not octal"]);
        assert_eq!(o, OpenFiles { total: 4, path_only: 1 });
    }

    fn ev(t: f64, side: Side, event: QmpEvent) -> TimelineEvent {
        TimelineEvent { t_ms: t, side, event }
    }

    fn st(status: MigrationStatus) -> QmpEvent {
        QmpEvent::Migration { status }
    }

    /// The events a real TCG migration of 512 MiB delivered, shuffled as two QMP streams may
    /// interleave them.
    #[test]
    fn phases_come_from_a_scripted_event_sequence() {
        use MigrationStatus as M;
        use Side::*;
        let events = vec![
            ev(920.0, Destination, QmpEvent::Resume),
            ev(0.4, Source, st(M::Setup)),
            ev(1.1, Source, st(M::Active)),
            ev(1.2, Source, QmpEvent::MigrationPass { pass: 1 }),
            ev(-3.0, Destination, st(M::Setup)),
            ev(640.0, Source, QmpEvent::MigrationPass { pass: 2 }),
            ev(880.0, Source, QmpEvent::Stop),
            ev(881.0, Source, st(M::Device)),
            ev(905.0, Source, st(M::Completed)),
            ev(30.0, Destination, st(M::Active)),
            ev(919.0, Destination, st(M::Completed)),
        ];
        let p = Phases::from_timeline(&events);
        assert_eq!(p.active_ms, Some(1.1));
        assert_eq!(p.stop_ms, Some(880.0));
        assert_eq!(p.device_ms, Some(881.0));
        assert_eq!(p.resume_ms, Some(920.0));
        assert_eq!(p.end_ms, Some(905.0));
        assert_eq!(p.paused_ms, Some(40.0));
        assert_eq!(p.passes, 2);
    }

    #[test]
    fn a_failed_migration_has_no_pause() {
        use MigrationStatus as M;
        use Side::*;
        let events = vec![
            ev(1.0, Source, st(M::Active)),
            ev(500.0, Source, QmpEvent::Stop),
            ev(510.0, Source, st(M::Failed)),
            ev(512.0, Source, QmpEvent::Resume),
        ];
        let p = Phases::from_timeline(&events);
        assert_eq!(p.end_ms, Some(510.0));
        assert_eq!(p.resume_ms, None, "the source's RESUME is not the destination's");
        assert_eq!(p.paused_ms, None);
    }

    #[test]
    fn statuses_round_trip_through_qemus_names() {
        for s in MigrationStatus::ALL {
            assert_eq!(MigrationStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).expect("json"), s.as_str());
        }
        assert_eq!(MigrationStatus::parse("bogus"), None);
    }

    #[test]
    fn records_serialize_with_their_outcome_and_typed_events() {
        let r = MigrationRecord {
            wall_ms: 12.0,
            timeline: vec![ev(1501.0, Side::Source, st(MigrationStatus::Active))],
            ..MigrationRecord::sample(
                Outcome::Failed { error: "Unable to write to socket".into(), source_running: true },
                1500.0,
            )
        };
        let j = serde_json::to_value(&r).expect("json");
        assert_eq!(j["outcome"], "failed");
        assert_eq!(j["error"], "Unable to write to socket");
        assert_eq!(j["timeline"][0]["event"], "MIGRATION");
        assert_eq!(j["timeline"][0]["status"], "active");
        let back: MigrationRecord = serde_json::from_value(j).expect("back");
        assert_eq!(back, r);
    }

    /// Multifd channels have one home, the tuning; a result written when they sat beside it
    /// reads back with them there.
    #[test]
    fn multifd_channels_live_in_the_tuning_and_old_results_read_back() {
        let old: MigrationParams = serde_json::from_str(
            r#"{"downtime_limit_ms":null,"max_bandwidth":16777216,"multifd_channels":4,"tuning":{"multifd_compression":"zstd"}}"#,
        )
        .expect("an old result's params");
        assert_eq!(old.multifd_channels(), Some(4));
        assert_eq!(old.tuning.multifd_compression.as_deref(), Some("zstd"));
        let j = serde_json::to_value(&old).expect("json");
        assert!(j.get("multifd_channels").is_none() && j["tuning"]["multifd_channels"] == 4, "{j}");
        assert_eq!(serde_json::from_value::<MigrationParams>(j).expect("back"), old);
    }
}
