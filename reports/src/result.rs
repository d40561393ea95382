//! The result of one run: what ran, on what, and what it measured. `result.json` is this type;
//! the CSV files are views of parts of it.

use crate::migration::MigrationRecord;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// Bump when a field changes meaning or disappears (adding fields keeps the version).
pub const SCHEMA_VERSION: u32 = 1;

/// Latency percentiles of one op kind, in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
}

/// Everything about one op kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub op: String,
    pub count: u64,
    pub errors: u64,
    pub mismatches: u64,
    pub bytes: u64,
    /// On the guest's clock (which stops while the guest is paused).
    pub guest: Latency,
    /// Mapped to the host's clock through heartbeat pairs: includes the pauses.
    pub host: Latency,
}

/// One 100 ms bucket of the time series (host arrival time).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Start of the bucket, ms since the collector started.
    pub t_ms: u64,
    pub ops: u64,
    pub bytes: u64,
    pub errors: u64,
    /// p99 of the bucket's op latencies on the guest clock; 0 without ops.
    pub p99_us: u64,
    pub heartbeats: u32,
}

/// What the guest saw around a migration or a fault.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
    /// The longest time without a heartbeat arriving at the host: how long the guest made no
    /// visible progress.
    pub heartbeat_gap_ms: f64,
    /// How far the guest's clock advanced across that gap; the difference to the gap is time
    /// the guest was frozen.
    pub guest_clock_gap_ms: f64,
    /// The longest time without an op completing, of the stalls that overlap the window. A
    /// stall still going when the window closes is measured to the completion that ends it.
    pub io_stall_ms: f64,
    /// The stall had not ended as of this report: at the window's close (in the progress line),
    /// or at the end of the stream (in the result; `io_stall_ms` then counts to that end).
    #[serde(default)]
    pub io_stall_unended: bool,
    pub ops: u64,
    pub errors: u64,
    /// QEMU's own downtime, for a migration window.
    pub qemu_downtime_ms: Option<u64>,
}

/// What produced the numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    pub miglab_version: String,
    pub git_commit: Option<String>,
    pub qemu: Option<String>,
    pub virtiofsd: Option<String>,
    pub ceph: Option<String>,
    pub guest_kernel: Option<String>,
    pub guest_image: Option<String>,
    pub accelerator: String,
    pub accelerator_reason: String,
    pub host_cpu: Option<String>,
    pub host_kernel: Option<String>,
    pub hostname: Option<String>,
}

/// Verification at the end of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    pub blocks: u64,
    pub mismatched: u64,
    pub missing: u64,
    /// The first bad blocks, as the agent listed them.
    pub bad: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Completed,
    /// Something failed; `error` says what. Whatever was measured until then is kept.
    Failed,
    /// Interrupted (Ctrl-C) or killed: a partial result.
    Aborted,
}

/// `result.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema_version: u32,
    pub scenario: String,
    pub repetition: u32,
    pub seed: u64,
    pub status: RunStatus,
    pub error: Option<String>,
    pub started_at: String,
    pub duration_ms: f64,
    pub provenance: Provenance,
    /// The scenario as it was run (TOML text).
    pub scenario_text: String,
    pub workload: String,
    pub ops: Vec<OpSummary>,
    pub migrations: Vec<MigrationRecord>,
    pub windows: Vec<Window>,
    pub verification: Option<Verification>,
    pub heartbeats: u64,
    pub heartbeats_missing: u64,
    pub records_dropped: u64,
    pub bad_frames: u64,
    pub series: Vec<Bucket>,
}

impl RunResult {
    pub fn new(scenario: &str, repetition: u32, seed: u64) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            scenario: scenario.into(),
            repetition,
            seed,
            status: RunStatus::Aborted,
            error: None,
            started_at: String::new(),
            duration_ms: 0.0,
            provenance: Provenance::default(),
            scenario_text: String::new(),
            workload: String::new(),
            ops: Vec::new(),
            migrations: Vec::new(),
            windows: Vec::new(),
            verification: None,
            heartbeats: 0,
            heartbeats_missing: 0,
            records_dropped: 0,
            bad_frames: 0,
            series: Vec::new(),
        }
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
    std::fs::rename(&tmp, path)
}

/// `timeline.csv`: the 100 ms series.
pub fn timeline_csv(series: &[Bucket]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["t_ms", "ops_per_s", "mb_per_s", "p99_us", "errors", "heartbeats"])?;
    for b in series {
        w.write_record([
            b.t_ms.to_string(),
            (b.ops * 10).to_string(),
            format!("{:.3}", b.bytes as f64 * 10.0 / 1e6),
            b.p99_us.to_string(),
            b.errors.to_string(),
            b.heartbeats.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// `events.csv`: migration phases and other events, in time order.
pub fn events_csv(result: &RunResult) -> Result<Vec<u8>, csv::Error> {
    let mut rows: Vec<(f64, String, String, String, String)> = Vec::new();
    for (i, m) in result.migrations.iter().enumerate() {
        for e in &m.timeline {
            rows.push((
                e.t_ms,
                format!("migration {}", i + 1),
                format!("{:?}", e.side).to_lowercase(),
                e.event.clone(),
                e.detail.clone().unwrap_or_default(),
            ));
        }
    }
    for w in &result.windows {
        rows.push((w.start_ms, w.name.clone(), "host".into(), "window-open".into(), String::new()));
        rows.push((w.end_ms, w.name.clone(), "host".into(), "window-close".into(), String::new()));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["t_ms", "source", "side", "event", "detail"])?;
    for (t, s, side, e, d) in rows {
        w.write_record([format!("{t:.3}"), s, side, e, d])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_and_its_csvs_have_headers() {
        let mut r = RunResult::new("smoke", 1, 42);
        r.status = RunStatus::Completed;
        r.series.push(Bucket { t_ms: 100, ops: 12, bytes: 49152, errors: 0, p99_us: 800, heartbeats: 100 });
        r.windows.push(Window {
            name: "migration 1".into(),
            start_ms: 5.0,
            end_ms: 900.0,
            ..Window::default()
        });
        let j = serde_json::to_string(&r).expect("json");
        assert_eq!(serde_json::from_str::<RunResult>(&j).expect("back"), r);
        assert!(j.contains("\"schema_version\":1"));
        let t = String::from_utf8(timeline_csv(&r.series).expect("csv")).expect("utf8");
        assert_eq!(t, "t_ms,ops_per_s,mb_per_s,p99_us,errors,heartbeats\n100,120,0.492,800,0,100\n");
        let e = String::from_utf8(events_csv(&r).expect("csv")).expect("utf8");
        assert!(e.starts_with("t_ms,source,side,event,detail\n5.000,migration 1,host,window-open,"));
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
