//! What happened to a run, as one word (the `classify` module finds it from the result), so that a
//! scenario can say which outcome it expects and `run`, `report` and `compare` agree.

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
    /// A migration still iterated pre-copy at its deadline: the guest dirtied memory faster
    /// than it was sent. Cancelled.
    NotConverged,
    /// A migration failed and the source did not run the guest again.
    FailedSourcePaused,
    /// A migration failed; the source runs the guest on.
    FailedSourceRunning,
    /// QEMU refused what a migration asked for (postcopy with virtiofsd) before it began; the
    /// guest ran on where it was.
    Unsupported,
    /// Ceph was not healthy again within its deadline after a fault.
    InfraNotRecovered,
    /// Every migration completed, but the guest saw errors or a stall over the threshold.
    CompletedDegraded,
    Completed,
}

impl RunOutcome {
    pub const ALL: [RunOutcome; 10] = [
        Self::GuestLost,
        Self::FsHung,
        Self::Timeout,
        Self::NotConverged,
        Self::FailedSourcePaused,
        Self::FailedSourceRunning,
        Self::Unsupported,
        Self::InfraNotRecovered,
        Self::CompletedDegraded,
        Self::Completed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::GuestLost => "guest-lost",
            Self::FsHung => "fs-hung",
            Self::Timeout => "timeout",
            Self::NotConverged => "not-converged",
            Self::FailedSourcePaused => "failed-source-paused",
            Self::FailedSourceRunning => "failed-source-running",
            Self::Unsupported => "unsupported",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_round_trip_through_their_names() {
        for o in RunOutcome::ALL {
            assert_eq!(o.as_str().parse::<RunOutcome>(), Ok(o));
        }
        assert!("bogus".parse::<RunOutcome>().expect_err("unknown").contains("completed-degraded"));
    }
}
