//! miglab-workloads: the I/O workloads a guest runs during a migration, their job specs, the
//! record wire format and data verification.
//!
//! The lab issue only lays out the workspace; the guest agent and the engine arrive with the
//! workload issue. Nothing here is used yet.
