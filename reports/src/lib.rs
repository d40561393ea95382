//! miglab-reports: the result schema shared by every run, and its writers.

pub mod migration;
pub mod result;
pub mod timings;

pub use migration::{MigrationParams, MigrationRecord, Outcome, Phases, Side, TimelineEvent};
pub use result::{Bucket, Latency, OpSummary, Provenance, RunResult, RunStatus, Verification, Window};
pub use timings::{Phase, Timings};
