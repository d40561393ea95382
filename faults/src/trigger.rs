//! When a fault fires: at an anchor of the run (the workload's start, a hop's start or end, a
//! migration status of either side, RAM pass N, the pause before the switch-over), plus a fixed
//! offset, plus a random offset inside a window (from the plan's fault-timing seed).

use miglab_model::{MigrationStatus, Side};
use serde::{Deserialize, Serialize};
use std::fmt;

fn first() -> u32 {
    1
}

fn source() -> Side {
    Side::Source
}

/// What a trigger waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "at", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Anchor {
    /// The workload's timed part began (its files are laid out).
    WorkloadStart,
    /// `migrate` was sent for hop `hop`.
    HopStart {
        #[serde(default = "first")]
        hop: u32,
    },
    /// `side`'s QEMU reported `status` during hop `hop`.
    Status {
        #[serde(default = "first")]
        hop: u32,
        status: MigrationStatus,
        #[serde(default = "source")]
        side: Side,
    },
    /// The source started RAM pass `pass` of hop `hop`.
    Pass {
        #[serde(default = "first")]
        hop: u32,
        pass: u64,
    },
    /// Hop `hop` is paused right before its switch-over (QEMU's `pause-before-switchover`):
    /// the switch-over waits until the fault is in place.
    PreSwitchover {
        #[serde(default = "first")]
        hop: u32,
    },
    /// Hop `hop` ended (the guest runs again, on one side or the other).
    HopEnd {
        #[serde(default = "first")]
        hop: u32,
    },
}

impl Anchor {
    /// The hop the anchor belongs to, if any.
    pub fn hop(&self) -> Option<u32> {
        match self {
            Anchor::WorkloadStart => None,
            Anchor::HopStart { hop }
            | Anchor::Status { hop, .. }
            | Anchor::Pass { hop, .. }
            | Anchor::PreSwitchover { hop }
            | Anchor::HopEnd { hop } => Some(*hop),
        }
    }
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Anchor::WorkloadStart => f.write_str("workload start"),
            Anchor::HopStart { hop } => write!(f, "hop {hop} start"),
            Anchor::Status { hop, status, side } => write!(f, "hop {hop} {} {status}", side.as_str()),
            Anchor::Pass { hop, pass } => write!(f, "hop {hop} RAM pass {pass}"),
            Anchor::PreSwitchover { hop } => write!(f, "hop {hop} pre-switchover"),
            Anchor::HopEnd { hop } => write!(f, "hop {hop} end"),
        }
    }
}

/// When a fault fires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trigger {
    #[serde(flatten)]
    pub anchor: Anchor,
    /// Milliseconds after the anchor.
    #[serde(default)]
    pub offset_ms: u64,
    /// Plus a random offset in [0, this), drawn from the plan's fault-timing seed.
    #[serde(default)]
    pub random_within_ms: u64,
    /// Only guest `guest`'s hop (1-based) is the anchor; without it, the first guest's hop to
    /// reach it is. A run of one guest has only guest 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest: Option<u32>,
}

impl Trigger {
    /// Whether guest `guest`'s observation may be this trigger's anchor.
    pub fn keys_on(&self, guest: u32) -> bool {
        self.guest.is_none_or(|g| g == guest)
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(g) = self.guest {
            write!(f, "guest {g}'s ")?;
        }
        write!(f, "{}", self.anchor)?;
        if self.offset_ms > 0 {
            write!(f, " + {} ms", self.offset_ms)?;
        }
        if self.random_within_ms > 0 {
            write!(f, " + random < {} ms", self.random_within_ms)?;
        }
        Ok(())
    }
}
