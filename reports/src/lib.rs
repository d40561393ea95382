//! miglab-reports: the result schema shared by every run, and its writers.

pub mod migration;
pub mod timings;

pub use migration::{MigrationParams, MigrationRecord, Outcome, Phases, Side, TimelineEvent};
pub use timings::{Phase, Timings};
