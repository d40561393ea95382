//! What happened to a run, as one word: classified from the result alone (pure), so that a
//! scenario can say which outcome it expects and `run`, `report` and `compare` agree.

use crate::migration::Outcome;
use crate::result::RunResult;
use serde::{Deserialize, Serialize};
use std::fmt;

/// The classes, most severe first: a run is the first that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunOutcome {
    /// No heartbeat for the last part of the run: the VM died or hangs.
    GuestLost,
    /// Heartbeats arrive, but no op completed successfully for longer than the threshold up to
    /// the end: the guest's file system hangs.
    FsHung,
    /// A migration did not finish by its deadline and was cancelled.
    Timeout,
    /// A migration failed and the source did not run the guest again.
    FailedSourcePaused,
    /// A migration failed; the source runs the guest on.
    FailedSourceRunning,
    /// Ceph was not healthy again within its deadline after a fault.
    InfraNotRecovered,
    /// Every migration completed, but the guest saw errors or a stall over the threshold.
    CompletedDegraded,
    Completed,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 8] = [
        Self::GuestLost,
        Self::FsHung,
        Self::Timeout,
        Self::FailedSourcePaused,
        Self::FailedSourceRunning,
        Self::InfraNotRecovered,
        Self::CompletedDegraded,
        Self::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuestLost => "guest-lost",
            Self::FsHung => "fs-hung",
            Self::Timeout => "timeout",
            Self::FailedSourcePaused => "failed-source-paused",
            Self::FailedSourceRunning => "failed-source-running",
            Self::InfraNotRecovered => "infra-not-recovered",
            Self::CompletedDegraded => "completed-degraded",
            Self::Completed => "completed",
        }
    }
}

impl fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for RunOutcome {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|o| o.as_str() == s).ok_or_else(|| {
            format!("'{s}' is not an outcome: use one of {}", Self::ALL.map(|o| o.as_str()).join(", "))
        })
    }
}

/// The outcomes a scenario expects: one (`expect = "fs-hung"`) or any of several
/// (`expect = ["completed", "completed-degraded"]`, for a fault the guest may or may not notice).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect(pub Vec<RunOutcome>);

impl Expect {
    pub fn allows(&self, o: RunOutcome) -> bool {
        self.0.contains(&o)
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|o| o.as_str()).collect();
        f.write_str(&names.join(" or "))
    }
}

impl Serialize for Expect {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Expect {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Expect;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an outcome, or a list of outcomes")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Expect, E> {
                v.parse().map(|o| Expect(vec![o])).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Expect, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s.parse().map_err(serde::de::Error::custom)?);
                }
                if v.is_empty() {
                    return Err(serde::de::Error::custom("give at least one outcome"));
                }
                Ok(Expect(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where the classes' lines are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// An I/O stall longer than this degrades a completed run.
    pub degraded_stall_ms: f64,
    /// No successful op for longer than this up to the end of the stream: the file system hangs.
    pub fs_hung_ms: f64,
    /// No heartbeat for longer than this up to the end of the run: the guest is lost.
    pub guest_lost_ms: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        // A Ceph OSD that comes back can hold a write for ~10 s while its PGs peer (seen here):
        // a hang is longer than that.
        Self { degraded_stall_ms: 1000.0, fs_hung_ms: 30_000.0, guest_lost_ms: 5_000.0 }
    }
}

/// The outcome of `r`, and why.
pub fn classify(r: &RunResult, t: &Thresholds) -> (RunOutcome, Vec<String>) {
    let mut why = Vec::new();
    let end = r.duration_ms;
    let s = &r.stream;
    let lost = match s.last_heartbeat_ms {
        None => s.records == 0 && r.error.is_none(),
        Some(last) => {
            r.windows
                .iter()
                .any(|w| w.heartbeat_gap_unended && w.heartbeat_gap_ms.unwrap_or(0.0) > t.guest_lost_ms)
                || {
                    // The stream is finished at the end of the run: a silence before that is the guest's.
                    let stream_end = r.series.last().map(|b| b.t_ms as f64 + 100.0).unwrap_or(last);
                    stream_end - last > t.guest_lost_ms && end > 0.0
                }
        }
    };
    if lost {
        why.push(format!(
            "no heartbeat for the last {:.0} ms of the stream",
            r.series.last().map(|b| b.t_ms as f64).unwrap_or(0.0) - s.last_heartbeat_ms.unwrap_or(0.0)
        ));
        return (RunOutcome::GuestLost, why);
    }
    let mut hung =
        r.windows.iter().filter(|w| w.io_stall_unended).filter_map(|w| w.io_stall_ms).fold(0.0, f64::max);
    // Outside any window too: heartbeats went on long after the last successful op.
    if let (Some(hb), Some(op)) = (s.last_heartbeat_ms, s.last_op_ms) {
        hung = hung.max(hb - op);
    }
    if hung > t.fs_hung_ms {
        why.push(format!("no op completed for the last {hung:.0} ms while heartbeats arrived"));
        return (RunOutcome::FsHung, why);
    }
    let mut failed: Option<RunOutcome> = None;
    for m in &r.migrations {
        match &m.outcome {
            Outcome::TimedOut { after_ms, .. } => {
                why.push(format!("migration {} timed out after {after_ms} ms", m.hop));
                return (RunOutcome::Timeout, why);
            }
            Outcome::Failed { error, source_running } => {
                why.push(format!("migration {} failed: {error}", m.hop));
                let o = if *source_running {
                    RunOutcome::FailedSourceRunning
                } else {
                    RunOutcome::FailedSourcePaused
                };
                failed = Some(failed.map_or(o, |f| f.min(o)));
            }
            Outcome::Completed => {}
        }
    }
    if let Some(o) = failed {
        return (o, why);
    }
    if let Some(f) = r.faults.iter().find(|f| f.infra_not_recovered) {
        why.push(format!("{}: Ceph was not healthy again within its deadline", f.name));
        return (RunOutcome::InfraNotRecovered, why);
    }
    let errors: u64 = r.ops.iter().map(|o| o.failed).sum();
    // Inside a window or not: a fault's after-effects can come after its window closed.
    let stall =
        r.windows.iter().filter_map(|w| w.io_stall_ms).chain(s.longest_io_stall_ms).fold(0.0, f64::max);
    if errors > 0 {
        why.push(format!("{errors} ops failed"));
    }
    if stall > t.degraded_stall_ms {
        why.push(format!("an I/O stall of {stall:.0} ms"));
    }
    if why.is_empty() {
        (RunOutcome::Completed, why)
    } else {
        (RunOutcome::CompletedDegraded, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::migration::MigrationRecord;
    use crate::result::{Bucket, FaultRecord, OpSummary, StreamHealth, Window, WindowKind};

    fn base() -> RunResult {
        let mut r = RunResult::new("x", 1, 1);
        r.duration_ms = 10_000.0;
        r.stream = StreamHealth {
            records: 9000,
            heartbeats: 9000,
            last_heartbeat_ms: Some(9_950.0),
            ..StreamHealth::default()
        };
        r.series = (0..100).map(|i| Bucket { t_ms: i * 100, ops: 10, ..Bucket::default() }).collect();
        r.ops.push(OpSummary { op: "read".into(), count: 1000, ..OpSummary::default() });
        r
    }

    fn hop(outcome: Outcome) -> MigrationRecord {
        MigrationRecord::sample(outcome, 1000.0)
    }

    fn window(stall: f64, unended: bool) -> Window {
        Window {
            name: "fault 1".into(),
            kind: WindowKind::Fault { index: 0 },
            start_ms: 1000.0,
            end_ms: 2000.0,
            heartbeat_gap_ms: Some(20.0),
            heartbeat_gap_unended: false,
            guest_clock_gap_ms: Some(19.0),
            io_stall_ms: Some(stall),
            io_stall_unended: unended,
            unmeasured: vec![],
            recovered_after_ms: None,
            ops: 0,
            errors: 0,
        }
    }

    #[test]
    fn each_class_from_a_result_that_shows_it() {
        let t = Thresholds::default();
        assert_eq!(classify(&base(), &t).0, RunOutcome::Completed);

        let mut r = base();
        r.windows.push(window(1500.0, false));
        assert_eq!(classify(&r, &t).0, RunOutcome::CompletedDegraded);

        let mut r = base();
        r.migrations.push(hop(Outcome::Failed { error: "x".into(), source_running: true }));
        assert_eq!(classify(&r, &t).0, RunOutcome::FailedSourceRunning);
        r.migrations.push(hop(Outcome::Failed { error: "y".into(), source_running: false }));
        assert_eq!(classify(&r, &t).0, RunOutcome::FailedSourcePaused, "the worse failure wins");
        r.migrations.push(hop(Outcome::TimedOut { after_ms: 5, source_running: true }));
        assert_eq!(classify(&r, &t).0, RunOutcome::Timeout);

        let mut r = base();
        r.stream.longest_io_stall_ms = Some(10_000.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::CompletedDegraded, "a stall outside every window");

        let mut r = base();
        r.windows.push(window(32_000.0, true));
        assert_eq!(classify(&r, &t).0, RunOutcome::FsHung);
        let mut r = base();
        r.stream.last_op_ms = Some(-22_000.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::FsHung, "hung outside any window");

        let mut r = base();
        r.stream.last_heartbeat_ms = Some(3000.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::GuestLost);

        let mut r = base();
        r.faults.push(FaultRecord {
            name: "osd".into(),
            infra_not_recovered: true,
            ..FaultRecord::default()
        });
        assert_eq!(classify(&r, &t).0, RunOutcome::InfraNotRecovered);
    }

    #[test]
    fn outcomes_round_trip_through_their_names() {
        for o in RunOutcome::ALL {
            assert_eq!(o.as_str().parse::<RunOutcome>(), Ok(o));
        }
        assert!("bogus".parse::<RunOutcome>().expect_err("unknown").contains("completed-degraded"));
    }
}
