//! The result of one run: what ran, on what, and what it measured. `result.json` is this type;
//! the CSV files (`miglab_reports::tables`) are views of parts of it.
//!
//! Every time in a result is on the **run clock**: milliseconds since the run started, on the
//! host's monotonic clock; `clock.started_at` says when that was.

use crate::migration::MigrationRecord;
use miglab_workloads::verify::ProblemCounts;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Bump when a field changes meaning or disappears (adding fields keeps the version).
/// 2: one run clock, absent gaps, failed ops apart, typed timeline, the plan.
pub const SCHEMA_VERSION: u32 = 2;

/// What the run clock is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Clock {
    /// RFC 3339 (UTC, ms) of the run clock's zero.
    pub started_at: String,
    /// When the run clock's 0 was, ms since the Unix epoch.
    pub started_unix_ms: u64,
    /// What the run clock counts (ms since the run started, host CLOCK_MONOTONIC).
    pub unit: String,
}

impl Clock {
    pub const UNIT: &'static str = "ms since the run started (host CLOCK_MONOTONIC)";
}

/// Latency percentiles of one op kind, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Ops in the histogram.
    pub count: u64,
    /// Fastest op, µs.
    pub min_us: u64,
    /// Mean, µs.
    pub mean_us: f64,
    /// Median, µs.
    pub p50_us: u64,
    /// 90th percentile, µs.
    pub p90_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// 99.99th percentile, µs.
    pub p9999_us: u64,
    /// Slowest op, µs.
    pub max_us: u64,
}

/// One job of a fio job file (all its clones), or one reporting group of jobs (fio's
/// `group_reporting`): its ops by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The reporting group (a new one at `stonewall` or `new_group`).
    pub group: u32,
    pub clones: u32,
    /// Ops by kind: counts, bytes and the guest's latency (the host's is in `ops`, whole-run).
    pub ops: Vec<OpSummary>,
}

/// Everything about one op kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    /// The op kind: read, write, open, stat, create, … (`verify` is the verify pass's).
    pub op: String,
    /// Ops that completed without error: the only ones in the latencies, IOPS and throughput.
    pub count: u64,
    /// Ops that returned an error.
    pub failed: u64,
    /// The failed ops by error (`ENOENT`, `EIO`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Reads whose data did not verify.
    pub mismatches: u64,
    /// Bytes moved by the ops that succeeded.
    pub bytes: u64,
    /// On the guest's clock (which stops while the guest is paused). Absent (`null`) when no
    /// op of the kind succeeded: never a row of zeros.
    #[serde(with = "absent_if_empty")]
    pub guest: Latency,
    /// Mapped to the host's clock through heartbeat pairs: includes the pauses. Ops that could
    /// not be mapped are not in it (`host_unmapped`).
    #[serde(with = "absent_if_empty")]
    pub host: Latency,
    /// Successful ops whose ends no heartbeat mapped to the host's clock.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_unmapped: u64,
    /// How long the failed ops took to fail (guest clock).
    #[serde(with = "absent_if_empty")]
    pub failed_latency: Latency,
    /// The percentile spectrum on both clocks ([`SPECTRUM`] points), for charts.
    #[serde(default)]
    pub spectrum: Vec<SpectrumPoint>,
}

/// The percentiles a spectrum is drawn through: the body and nines of the tail.
pub const SPECTRUM: [f64; 24] = [
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 75.0, 80.0, 85.0, 90.0, 92.5, 95.0, 97.0, 98.0, 99.0,
    99.5, 99.9, 99.95, 99.99, 99.995, 99.999, 100.0,
];

/// One percentile of an op kind's latency, on the guest's clock and the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub percentile: f64,
    pub guest_us: u64,
    pub host_us: u64,
}

/// One 100 ms bucket of the time series (host arrival time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, run clock.
    pub t_ms: u64,
    /// The workload's successful ops and their bytes (the verify pass's apart).
    pub ops: u64,
    /// Bytes moved by successful ops in the bucket.
    pub bytes: u64,
    /// Ops that failed in the bucket.
    pub errors: u64,
    /// p99 of the bucket's successful workload op latencies on the guest clock; absent
    /// without ops.
    pub p99_us: Option<u64>,
    /// Heartbeats that arrived in the bucket (100 in a full one: one a ms).
    pub heartbeats: u32,
    /// Blocks the verify pass checked in this bucket: not the workload's ops.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub verify_ops: u64,
    /// How long the bucket is, when shorter than 100 ms (the last one, cut by the stream's end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span_ms: Option<u64>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A latency of no op is `null` in `result.json`, not percentiles of 0.
mod absent_if_empty {
    use super::Latency;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(l: &Latency, s: S) -> Result<S::Ok, S::Error> {
        if l.count == 0 {
            s.serialize_none()
        } else {
            s.serialize_some(l)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Latency, D::Error> {
        Ok(Option::<Latency>::deserialize(d)?.unwrap_or_default())
    }
}

impl Bucket {
    /// The bucket's length in seconds: 0.1, or less for a last bucket cut short.
    pub fn span_s(&self) -> f64 {
        self.span_ms.map_or(0.1, |ms| ms.max(1) as f64 / 1000.0)
    }
}

/// What a window measures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum WindowKind {
    /// Around migration `hop`, from `migrate` to the end of its settle time.
    Migration { hop: u32 },
    /// Around fault `index` of the plan, from its injection to its clearance.
    Fault { index: u32 },
}

/// What the guest saw around a migration or a fault. A figure that could not be measured is
/// absent, and `unmeasured` says why — it never reads 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// `migration N` or `fault N`.
    pub name: String,
    #[serde(flatten)]
    pub kind: WindowKind,
    /// Where it opens, on the run clock (a migration's: its `migrate` command).
    pub start_ms: f64,
    /// Where it closes, on the run clock (a migration's: after its settle time).
    pub end_ms: f64,
    /// The longest time without a heartbeat arriving at the host: how long the guest made no
    /// visible progress.
    pub heartbeat_gap_ms: Option<f64>,
    /// The longest gap had not ended when the stream ended (it counts to that end).
    pub heartbeat_gap_unended: bool,
    /// How far the guest's clock advanced across that gap; the difference to the gap is time
    /// the guest was frozen. Absent when the gap did not end with a heartbeat.
    pub guest_clock_gap_ms: Option<f64>,
    /// The longest time without a successful op completing, of the stalls that overlap the
    /// window. A stall still going when the window closes is measured to the completion that
    /// ends it.
    pub io_stall_ms: Option<f64>,
    /// The stall had not ended as of this report: at the window's close (in the progress line),
    /// or at the end of the stream (in the result; `io_stall_ms` then counts to that end).
    pub io_stall_unended: bool,
    /// Why a figure is absent.
    pub unmeasured: Vec<String>,
    /// For a fault's window: from its clearance to the next successful op (I/O resumed).
    #[serde(default)]
    pub recovered_after_ms: Option<f64>,
    /// Successful and failed ops that completed inside the window.
    pub ops: u64,
    /// Ops that failed inside it.
    pub errors: u64,
}

impl Window {
    /// Migration `hop`'s window from `start_ms` to `end_ms`, with nothing measured in it: for
    /// tests (this crate's, and those of crates that enable the `samples` feature).
    #[cfg(any(test, feature = "samples"))]
    pub fn sample(hop: u32, start_ms: f64, end_ms: f64) -> Self {
        Window {
            name: format!("migration {hop}"),
            kind: WindowKind::Migration { hop },
            start_ms,
            end_ms,
            heartbeat_gap_ms: None,
            heartbeat_gap_unended: false,
            guest_clock_gap_ms: None,
            io_stall_ms: None,
            io_stall_unended: false,
            unmeasured: vec!["no heartbeat before the window opened".into()],
            recovered_after_ms: None,
            ops: 0,
            errors: 0,
        }
    }

    pub fn hop(&self) -> Option<u32> {
        match self.kind {
            WindowKind::Migration { hop } => Some(hop),
            WindowKind::Fault { .. } => None,
        }
    }
}

/// What produced the numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// miglab's version.
    pub miglab_version: String,
    /// The commit miglab was built from.
    pub git_commit: Option<String>,
    /// The miglab binary that ran (two builds compared by `miglab ab --candidate-miglab` are
    /// told apart by it; absent in results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub miglab_binary: Option<String>,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu: Option<String>,
    /// `virtiofsd --version`.
    pub virtiofsd: Option<String>,
    /// `ceph --version` of the cluster's daemons.
    pub ceph: Option<String>,
    /// The guest kernel's release.
    pub guest_kernel: Option<String>,
    /// The guest image's hash (its kernel, initramfs and agent).
    pub guest_image: Option<String>,
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// Why that accelerator (e.g. a PVM host's `/dev/kvm` cannot run a stock guest kernel).
    pub accelerator_reason: String,
    /// The host's CPU model.
    pub host_cpu: Option<String>,
    /// The host's kernel release.
    pub host_kernel: Option<String>,
    /// The host miglab ran on.
    pub hostname: Option<String>,
    /// The builds that ran the guest: QEMU, virtiofsd, the guest kernel (path, version, hash).
    #[serde(default)]
    pub binaries: Vec<BinaryInfo>,
    /// Where the run ran when not on the local lab: the hosts, over SSH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology: Option<TopologyRecord>,
}

/// An external topology, as a result records it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyRecord {
    /// The topology file.
    pub file: String,
    pub hosts: Vec<HostRecord>,
    /// `existing` or `lab`, and the cluster's version as `ceph version` says.
    pub ceph: String,
    pub ceph_version: Option<String>,
}

/// One host of an external topology.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub ssh: String,
    pub address: String,
    pub accelerator: String,
    pub accelerator_reason: String,
    pub kernel: Option<String>,
    pub qemu: Option<BinaryInfo>,
    pub virtiofsd: Option<BinaryInfo>,
    /// The host's clock minus miglab's, ms, and the round trip it was measured over (the
    /// error is within half of it). Arrival stamps are taken on miglab's clock (see docs/scenarios.md, what a run measures).
    pub clock_offset_ms: f64,
    pub clock_rtt_ms: f64,
}

/// One binary a run used: where it was, what it said its version was, and its content hash.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BinaryInfo {
    /// `qemu`, `virtiofsd`, `kernel`.
    pub role: String,
    pub path: String,
    pub version: Option<String>,
    pub sha256: Option<String>,
}

/// One injected fault, on the run clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultRecord {
    /// Its index in the plan.
    pub index: u32,
    /// The fault's name (its `name`, or kind and number).
    pub name: String,
    /// Its kind (`osd-freeze`, …).
    pub kind: String,
    /// When it was to fire, as the scenario said (with the drawn offset).
    pub trigger: String,
    /// What it acted on: `osd.1`, `c2's link`, `virtiofsd of vm0@c2#1`, ...
    pub target: String,
    /// When its anchor came, and when it was due.
    pub anchor_ms: Option<f64>,
    /// When its trigger fired (its anchor plus offset), on the run clock.
    pub due_ms: Option<f64>,
    /// When its action began: a kill is at once, a third party's copy or a Ceph command may
    /// take a while (its effect can start before `injected_ms`).
    #[serde(default)]
    pub began_ms: Option<f64>,
    /// When it took effect (None: it never did, `error` says why).
    pub injected_ms: Option<f64>,
    /// When its undo took effect.
    pub cleared_ms: Option<f64>,
    /// What the undo did.
    pub undo: String,
    /// Why it was not injected, or what failed while it was.
    pub error: Option<String>,
    /// Ceph healthy again (PGs active+clean, an MDS active), ms after the clearance.
    pub healthy_after_ms: Option<f64>,
    /// The cluster was not healthy again after its revert: the run is `infra-not-recovered`.
    pub infra_not_recovered: bool,
    /// The scenario allowed the run to end without it.
    #[serde(default)]
    pub optional: bool,
    /// The guest whose hop anchored it (from 1; none for the workload's start, or a fault
    /// that never fired).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<u32>,
}

/// Verification at the end of a run, and during it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Blocks the verify pass read back.
    pub blocks: u64,
    /// Blocks holding something other than the last successful write.
    pub mismatched: u64,
    /// Blocks that were not there (a short file, a deleted one).
    pub missing: u64,
    /// Writes that returned an error to the guest, yet landed.
    pub errored_write_landed: u64,
    /// Reads during the run whose data did not verify.
    pub inline_mismatches: u64,
    /// Every bad block, by problem.
    pub counts: ProblemCounts,
    /// How the pass read: `O_DIRECT`, or why not.
    pub read_mode: String,
    /// The host whose CephFS client served the pass's reads.
    pub read_through: String,
    /// The pass was cut short (interrupted).
    pub incomplete: bool,
    /// The first bad blocks, as the agent listed them.
    pub bad: Vec<serde_json::Value>,
    /// Paths a third party replaced or moved: the guest's data was verified through its open
    /// handles; these say what the paths hold now (not lost data).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaced: Vec<miglab_workloads::verify::ReplacedPath>,
    /// Files the pass did not read back because their jobs say `verify = false`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unverified_files: u64,
}

/// The guest's record stream as the host received it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamHealth {
    /// Records received.
    pub records: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
    /// Gaps in the heartbeats' sequence numbers.
    pub heartbeats_missing: u64,
    /// Frames that did not decode (a corrupt stream; none in a sound run).
    pub bad_frames: u64,
    /// Records the agent dropped because the port did not keep up; absent when the agent
    /// never reported (it died, or the run ended before it could say).
    pub records_dropped: Option<u64>,
    /// Run clock of the first and last heartbeat.
    pub first_heartbeat_ms: Option<f64>,
    /// The last heartbeat, on the run clock.
    pub last_heartbeat_ms: Option<f64>,
    /// Run clock of the last successful op.
    #[serde(default)]
    pub last_op_ms: Option<f64>,
    /// The longest time between two successful ops over the whole run (in a window or not),
    /// and when it began.
    #[serde(default)]
    pub longest_io_stall_ms: Option<f64>,
    /// Where the run's longest I/O stall began, on the run clock.
    #[serde(default)]
    pub longest_io_stall_start_ms: Option<f64>,
    /// When the host finished reading the stream, on the run clock: a silence from the last
    /// heartbeat to here is the guest's (absent in results written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Everything ran and nothing was wrong (or the run went as the scenario expected).
    Completed,
    /// Something failed or was wrong; `problems` and `error` say what. Whatever was measured
    /// until then is kept.
    Failed,
    /// Interrupted (Ctrl-C) or killed: a partial result.
    Aborted,
}

/// `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// This file's schema (2); a reader refuses another.
    pub schema_version: u32,
    /// The scenario's name.
    pub scenario: String,
    /// Which repetition (1-based).
    pub repetition: u32,
    /// The scenario's seed.
    pub seed: u64,
    /// Random per run (hex): it marks this run's blocks, so an earlier run's cannot pass.
    pub nonce: String,
    /// `completed` (as the scenario expected, nothing lost), `failed` (something went wrong or data was lost: `problems`, `error`) or `aborted` (interrupted).
    pub status: RunStatus,
    /// Why the run failed, one line each (empty when it completed).
    pub problems: Vec<String>,
    /// The error that ended the run early, if one did.
    pub error: Option<String>,
    /// The run clock every time in this file is on.
    pub clock: Clock,
    /// Wall time of the run, ms.
    pub duration_ms: f64,
    /// What produced these figures: builds, versions, accelerator, machine, commit.
    pub provenance: Provenance,
    /// The scenario as it was run (TOML text).
    pub scenario_text: String,
    /// Everything the run did, resolved from the scenario (`miglab run --replay` runs it again).
    pub plan: serde_json::Value,
    /// The workload as it ran (every fio option resolved).
    pub workload: serde_json::Value,
    /// Per op kind of the workload: counts, bytes, latencies.
    pub ops: Vec<OpSummary>,
    /// A fio job file's jobs, each apart (its clones together), in the file's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobSummary>,
    /// ... and its reporting groups, as fio's `group_reporting` sums them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<JobSummary>,
    /// Every hop, in order (the first guest's when there are several).
    pub migrations: Vec<MigrationRecord>,
    /// The windows around each migration and each fault, with the guest-visible figures.
    pub windows: Vec<Window>,
    /// Every planned fault and what became of it.
    #[serde(default)]
    pub faults: Vec<FaultRecord>,
    /// The scenario's `[ceph]` settings as the run made them, each with the value it replaced
    /// (all set back when it ended).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ceph_settings: Vec<String>,
    /// What happened, as one word ([`crate::outcome`]), and why.
    #[serde(default)]
    pub outcome: Option<crate::outcome::RunOutcome>,
    /// Why the outcome is what it is, one line each.
    #[serde(default)]
    pub outcome_why: Vec<String>,
    /// The outcome the scenario expects (then the run passes when it happens).
    #[serde(default)]
    pub expected: Option<crate::outcome::Expect>,
    /// The verify pass: every block the workload wrote, read back after the last hop.
    pub verification: Option<Verification>,
    /// The memory-dirtying load's pages, verified after every hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryResult>,
    /// How the guest's record stream fared.
    pub stream: StreamHealth,
    /// Throughput, p99 and heartbeats every 100 ms, on the run clock.
    pub series: Vec<Bucket>,
    /// A run of several guests: every guest's own figures (the first's are also the run's
    /// fields above, so a reader of one guest reads them unchanged) ...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guests: Vec<GuestResult>,
    /// ... and what they add up to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<Fleet>,
}

/// One guest's figures in a run of several: every figure a run of one guest has.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuestResult {
    /// Its number, from 1.
    pub guest: u32,
    /// The guest's VM name.
    pub vm: String,
    /// Its workload as it ran.
    pub workload: serde_json::Value,
    /// Its own outcome.
    pub outcome: Option<crate::outcome::RunOutcome>,
    /// Why, one line each.
    pub outcome_why: Vec<String>,
    /// Per op kind, as the run's.
    pub ops: Vec<OpSummary>,
    /// Per job of a fio job file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobSummary>,
    /// Per reporting group of a fio job file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<JobSummary>,
    /// Its hops.
    pub migrations: Vec<MigrationRecord>,
    /// Its windows.
    pub windows: Vec<Window>,
    /// Its verify pass.
    pub verification: Option<Verification>,
    /// Its dirtying load's checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryResult>,
    /// Its record stream.
    pub stream: StreamHealth,
    /// Its 100 ms series.
    pub series: Vec<Bucket>,
}

/// A memory-dirtying load and its pages read back after each hop.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryResult {
    /// The dirtying load as it ran.
    pub spec: Option<miglab_workloads::dirty::DirtySpec>,
    /// Every page read back after each hop.
    pub checks: Vec<HopMemory>,
}

/// The pages after one hop (the guest where the hop left it), or why they were not checked.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HopMemory {
    pub hop: u32,
    /// Where the guest ran when its pages were read.
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<miglab_workloads::dirty::MemoryCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why the switch-over could not be marked in the guest (then the check cannot say how
    /// many pages were rewritten since; each was still verified before its rewrite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmarked: Option<String>,
}

impl HopMemory {
    /// One phrase: what the check found, and how much of the memory at the switch-over was
    /// verified (by the read-back, or by the writer before a rewrite).
    pub fn summary(&self) -> String {
        let Some(k) = &self.check else {
            return format!("not checked: {}", self.error.as_deref().unwrap_or("no check"));
        };
        let mut s = format!("{} pages on {}: {} stale, {} corrupt", k.pages, self.host, k.stale, k.corrupt);
        if k.found_by_writer > 0 {
            s.push_str(&format!(" ({} found by the writer before rewriting)", k.found_by_writer));
        }
        match (k.coverage(), k.rewritten_since_mark) {
            (Some(c), Some(n)) => s.push_str(&format!(
                "; {n} rewritten since the switch-over, {} verified first: coverage {:.0} %",
                k.verified_since_mark.unwrap_or(0),
                c * 100.0
            )),
            _ => s.push_str(&format!(
                "; coverage not counted ({})",
                self.unmarked.as_deref().unwrap_or("the switch-over was not marked")
            )),
        }
        s
    }
}

impl MemoryResult {
    /// The guest's memory-update speed over the run, ms/GiB (median of the writer's seconds).
    pub fn median_ms_per_gib(&self) -> Option<f64> {
        let mut v: Vec<f64> = self
            .checks
            .iter()
            .filter_map(|c| c.check.as_ref())
            .flat_map(|c| c.speed.iter().map(|s| s.ms_per_gib))
            .filter(|v| *v > 0.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

/// How a figure spread over the guests' migrations: how many, and its quantiles (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub n: u32,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// One hop of every guest: the host drained (or filled) by it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evacuation {
    /// Which hop.
    pub hop: u32,
    /// The host emptied.
    pub from: String,
    /// Where the guests went.
    pub to: String,
    /// Guests migrated in it, and how many completed.
    pub guests: u32,
    /// Guests whose migration completed.
    pub completed: u32,
    /// From the first `migrate` sent to the last guest running again (on whichever side).
    pub evacuation_ms: f64,
}

/// What the guests of a run add up to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Fleet {
    /// How many guests.
    pub guests: u32,
    /// How many migrated at once.
    pub parallel: u32,
    /// Each hop's evacuation of its source host.
    pub evacuations: Vec<Evacuation>,
    /// QEMU's downtime over every completed migration of every guest.
    pub qemu_downtime_ms: Option<Spread>,
    /// The limit each was given (QEMU's 300 ms when the scenario gives none), and how many
    /// completed migrations exceeded it.
    pub downtime_limit_ms: u64,
    /// Migrations whose QEMU downtime exceeded their downtime limit.
    pub over_limit: u32,
    /// Each phase of the migrations (`setup`, `precopy`, `switchover`, `device_state`, `total`)
    /// across guests, as kube-burner reports its phases.
    pub phases: Vec<(String, Spread)>,
    /// The guests' worst heartbeat gap and I/O stall in each migration's window.
    pub heartbeat_gap_ms: Option<Spread>,
    /// The guests' I/O stalls, spread (median, worst).
    pub io_stall_ms: Option<Spread>,
}

impl Spread {
    /// The spread of `values` (None when there are none).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let rank = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Some(Spread {
            n: v.len() as u32,
            min: v[0],
            p50: rank(0.5),
            p90: rank(0.9),
            p99: rank(0.99),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

impl RunResult {
    pub fn new(scenario: &str, repetition: u32, seed: u64) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            scenario: scenario.into(),
            repetition,
            seed,
            nonce: String::new(),
            status: RunStatus::Aborted,
            problems: Vec::new(),
            error: None,
            clock: Clock::default(),
            duration_ms: 0.0,
            provenance: Provenance::default(),
            scenario_text: String::new(),
            plan: serde_json::Value::Null,
            workload: serde_json::Value::Null,
            ops: Vec::new(),
            jobs: Vec::new(),
            groups: Vec::new(),
            migrations: Vec::new(),
            windows: Vec::new(),
            faults: Vec::new(),
            ceph_settings: Vec::new(),
            outcome: None,
            outcome_why: Vec::new(),
            expected: None,
            verification: None,
            memory: None,
            stream: StreamHealth::default(),
            series: Vec::new(),
            guests: Vec::new(),
            fleet: None,
        }
    }

    /// The window of migration `hop`.
    pub fn migration_window(&self, hop: u32) -> Option<&Window> {
        self.windows.iter().find(|w| w.hop() == Some(hop))
    }
}

/// Writes `bytes` to `path` atomically: a reader sees the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    // The rename itself is durable only once the directory is.
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_with_absent_figures_absent() {
        let mut r = RunResult::new("smoke", 1, 42);
        r.status = RunStatus::Completed;
        r.series.push(Bucket {
            t_ms: 100,
            ops: 12,
            bytes: 49152,
            p99_us: Some(800),
            heartbeats: 100,
            ..Bucket::default()
        });
        // An empty bucket has no p99 (not 0); the last one, cut at 30 ms: 3 ops are 100 ops/s
        // (not 30: ×10 assumed a full bucket).
        r.series.push(Bucket { t_ms: 200, heartbeats: 100, ..Bucket::default() });
        r.series.push(Bucket {
            t_ms: 300,
            ops: 3,
            p99_us: Some(500),
            heartbeats: 30,
            span_ms: Some(30),
            ..Bucket::default()
        });
        // An op kind of which nothing succeeded: its latencies are absent, not zeros.
        r.ops.push(OpSummary { op: "write".into(), failed: 4, ..OpSummary::default() });
        r.windows.push(Window::sample(1, 5.0, 900.0));
        let j = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<RunResult>(&j).expect("back"), r);
        assert!(j.contains("\"schema_version\":2"));
        assert!(j.contains("\"heartbeat_gap_ms\":null"), "absent, not 0: {j}");
        assert!(j.contains("\"kind\":\"migration\",\"hop\":1"), "{j}");
        assert!(j.contains("\"guest\":null,\"host\":null,\"failed_latency\":null"), "{j}");
    }

    #[test]
    fn atomic_writes_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("miglab-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("result.json");
        write_atomic(&p, b"{}").expect("write");
        write_atomic(&p, b"{\"a\":1}").expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"{\"a\":1}");
        assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
