//! What can be done to a Ceph daemon and to a host's link: the actions a topology implements.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What can be done to a Ceph daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DaemonAction {
    /// SIGTERM, a grace period, then SIGKILL: a clean shutdown.
    Stop,
    /// SIGSTOP: a hung daemon, which peers only notice through missed heartbeats.
    Freeze,
    /// SIGCONT after a freeze.
    Resume,
    /// SIGKILL: a crash.
    Kill,
    /// Start again (after a stop or kill) with the same identity and data.
    Restart,
}

impl DaemonAction {
    pub const ALL: [DaemonAction; 5] = [Self::Stop, Self::Freeze, Self::Resume, Self::Kill, Self::Restart];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Freeze => "freeze",
            Self::Resume => "resume",
            Self::Kill => "kill",
            Self::Restart => "restart",
        }
    }
}

impl fmt::Display for DaemonAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown daemon action '{0}': use one of stop, freeze, resume, kill, restart")]
pub struct UnknownAction(pub String);

impl FromStr for DaemonAction {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|a| a.as_str() == s).ok_or_else(|| UnknownAction(s.to_string()))
    }
}

/// A token-bucket shape for a host's link (tbf: the kernel here has no netem).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkShape {
    pub rate_kbit: u64,
    /// Bucket size in bytes; at least one MTU, more allows bursts.
    pub burst_bytes: u64,
    /// How long a packet may wait in the queue before it is dropped.
    pub latency_ms: u64,
}

impl LinkShape {
    pub fn rate(rate_kbit: u64) -> Self {
        // Big enough to reach the rate at 1000 Hz timers, small enough to shape.
        let burst_bytes = (rate_kbit * 1000 / 8 / 100).max(16 * 1024);
        Self { rate_kbit, burst_bytes, latency_ms: 100 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_their_names() {
        for a in DaemonAction::ALL {
            assert_eq!(a.as_str().parse::<DaemonAction>().expect("parses"), a);
        }
        let e = "explode".parse::<DaemonAction>().expect_err("unknown");
        assert!(e.to_string().contains("explode") && e.to_string().contains("restart"));
    }

    #[test]
    fn a_shape_has_a_useful_burst() {
        assert_eq!(LinkShape::rate(50_000).burst_bytes, 62_500);
        assert_eq!(LinkShape::rate(100).burst_bytes, 16 * 1024);
    }
}
