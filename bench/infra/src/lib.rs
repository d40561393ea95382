//! miglab's infrastructure: where guests run and how they are reached — the topologies (the
//! local lab in network namespaces, hosts over SSH) with their Ceph cluster and network, the one
//! process supervisor, VMs and their QMP and control sockets, the guest image and the binaries
//! under test, and the deadlines every wait keeps.
//!
//! It knows nothing of scenarios, runs or results: the experiment pipeline (the `miglab` crate)
//! sits above it, and the compiler keeps it so. See `ARCHITECTURE.md` at the repository's root.

pub mod accel;
pub mod binaries;
pub mod control;
pub mod cpu;
pub mod diagnostics;
pub mod image;
pub mod interrupt;
pub mod link;
pub mod paths;
pub mod process;
pub mod proxy;
pub mod qmp;
pub mod steps;
pub mod topology;
pub mod vm;
pub mod wait;

pub use topology::lab::{Lab, LabOptions};
pub use topology::{DaemonId, Host, Site, Topology};
