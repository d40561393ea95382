//! miglab-model: what every layer reads and writes — a run's result (`result.json`), its
//! migration records, outcomes, timings and QEMU's downtime split into parts. Plain data with
//! its serde form and the few rules that belong to the data itself; the statistics, tables,
//! charts and pages that read it live in `miglab-reports`.

pub mod cell;
pub mod downtime;
pub mod finding;
pub mod migration;
pub mod outcome;
pub mod result;
pub mod timings;

pub use cell::{CellValue, SweepCell};
pub use downtime::{DowntimePart, DowntimeParts, PartName};
pub use finding::{Bound, Finding};
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
