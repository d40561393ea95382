//! miglab: live-migration benchmarking and fault injection for QEMU guests whose file system is
//! CephFS shared through virtio-fs.
//!
//! The library is the whole tool; `main.rs` only parses arguments and calls [`cli::run`]. See
//! `ARCHITECTURE.md` at the repository's root for the rooms and the one-way flow between them.

pub(crate) mod assemble;
pub(crate) mod benchmarks;
pub mod cli;
pub mod clock;
pub mod collect;
pub mod doctor;
pub(crate) mod downtime;
pub(crate) mod exit;
pub(crate) mod hostmode;
pub(crate) mod inject;
pub mod migration;
pub mod observe;
pub(crate) mod plan;
pub(crate) mod preflight;
pub mod progress;
pub mod readloop;
pub(crate) mod run;
pub(crate) mod scenario;
pub mod session;
pub(crate) mod settings;
pub mod stream;
