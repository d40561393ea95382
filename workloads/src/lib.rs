//! miglab-workloads: what runs inside the guest. The control protocol spoken between the host
//! and the guest agent, the workloads the agent runs, and the agent itself
//! (`src/bin/miglab-agent.rs`, built static and placed in the guest image as `/init`).
//!
//! This crate knows nothing of QEMU or Ceph: the host side only needs [`control`].

pub mod control;
pub mod dirty;
pub mod engine;
pub mod fio;
pub mod job;
pub mod pattern;
pub mod record;
pub mod verify;
