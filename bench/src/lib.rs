//! miglab: live-migration benchmarking and fault injection for QEMU guests whose file system is
//! CephFS shared through virtio-fs.
//!
//! The library is the whole tool; `main.rs` only parses arguments and calls [`cli::run`].

pub mod accel;
pub mod cli;
pub mod collect;
pub mod control;
pub mod doctor;
pub mod hostmode;
pub mod image;
pub mod interrupt;
pub mod migration;
pub mod paths;
pub mod process;
pub mod qmp;
pub mod readloop;
pub mod run;
pub mod scenario;
pub mod stream;
pub mod topology;
pub mod vm;
pub mod wait;

pub use topology::lab::{Lab, LabOptions};
pub use topology::{DaemonId, Host, Topology};
