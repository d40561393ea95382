//! miglab-reports: what reads results — the judgement of one (`classify`, `verdict`, `fleet`),
//! its tables and HTML pages, and what reads many (`compare`, `noise`, `ab`, `sweep`, `trend`).
//! The result schema itself is `miglab-model`'s.

pub mod ab;
pub mod charts;
pub mod classify;
pub mod compare;
pub mod findings;
pub mod fleet;
pub mod html;
pub mod noise;
pub mod stats;
pub mod sweep;
pub mod tables;
pub mod trend;
pub mod verdict;
