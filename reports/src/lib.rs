//! miglab-reports: the result schema shared by every run, and its writers.

pub mod timings;

pub use timings::{Phase, Timings};
