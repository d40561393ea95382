//! miglab-reports: the result schema shared by every run, its writers, and the judgement of a
//! result. It knows nothing of QEMU or Ceph processes: it reads and writes data.

pub mod migration;
pub mod result;
pub mod timings;
pub mod verdict;

pub use migration::{
    MigrationParams, MigrationRecord, MigrationStatus, Outcome, Phases, QmpEvent, Side, TimelineEvent,
};
pub use result::{
    Bucket, Clock, Latency, OpSummary, Provenance, RunResult, RunStatus, StreamHealth, Verification, Window,
    WindowKind,
};
pub use timings::{Phase, Timings};
