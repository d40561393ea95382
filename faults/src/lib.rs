//! miglab-faults: what can go wrong, and when. The fault catalog ([`catalog`]), triggers keyed
//! to the migration ([`trigger`]), seeded schedules ([`schedule`]) and the pure trigger machine
//! ([`machine`]) that turns observations into firings. This crate knows nothing of how a
//! topology carries a fault out: the orchestrator's injector does, through its topology.

pub mod actions;
pub mod catalog;
pub mod machine;
pub mod schedule;
pub mod trigger;

pub use actions::{DaemonAction, LinkShape, UnknownAction};
pub use catalog::{Fault, FaultEntry, HostRef, Pick, Side, StorageTarget};
pub use machine::{Event, Firing, Machine, Unfired};
pub use schedule::{resolve, Resolved, Span, Universe};
pub use trigger::{Anchor, Trigger};
