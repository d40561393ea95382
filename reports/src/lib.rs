//! miglab-reports: the result schema shared by every run, its writers, and the judgement of a
//! result. It knows nothing of QEMU or Ceph processes: it reads and writes data.

pub mod ab;
pub mod charts;
pub mod classify;
pub mod compare;
pub mod downtime;
pub mod fleet;
pub mod html;
pub mod migration;
pub mod noise;
pub mod outcome;
pub mod result;
pub mod stats;
pub mod sweep;
pub mod timings;
pub mod trend;
pub mod verdict;

pub use downtime::{DowntimePart, DowntimeParts, PartName};
pub use migration::{
    AutoConverge, Convergence, HostCpu, MigrationParams, MigrationRecord, MigrationStatus, OpenFiles,
    Outcome, Pass, Phases, QmpEvent, Side, TimelineEvent, Tuning, VirtiofsdHeld,
};
pub use outcome::{Expect, RunOutcome, Thresholds};
pub use result::{
    BinaryInfo, Bucket, Clock, Evacuation, FaultRecord, Fleet, GuestResult, HopMemory, HostRecord,
    JobSummary, Latency, MemoryResult, OpSummary, Provenance, RunResult, RunStatus, SpectrumPoint, Spread,
    StreamHealth, TopologyRecord, Verification, Window, WindowKind, SPECTRUM,
};
pub use timings::{Phase, Timings};
