//! miglab: live-migration benchmarking and fault injection for QEMU guests whose file system is
//! CephFS shared through virtio-fs.
//!
//! The library is the whole tool; `main.rs` only parses arguments and calls [`cli::run`]. See
//! `ARCHITECTURE.md` at the repository's root for the rooms and the one-way flow between them.

pub mod assemble;
pub mod benchmarks;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod doctor;
pub mod exit;
pub mod hostmode;
pub mod inject;
pub mod migration;
pub mod observe;
pub mod plan;
pub mod preflight;
pub mod progress;
pub mod readloop;
pub mod run;
pub mod scenario;
pub mod session;
pub mod stream;
