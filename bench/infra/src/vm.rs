//! VMs on a site's client hosts. The rooms: [`spec`] (what a VM and its instances are, as
//! data), [`cmdline`] (QEMU's, virtiofsd's and the kernel's command lines), [`instance`] (a
//! running instance, owned by a guard), [`ledger`] (instances in the site's ledger).
//!
//! A VM that migrates is several *instances* over time: `vm0` on c1 (generation 0), then `vm0`
//! on c2 (generation 1), ... Each has its own directory, sockets and logs. VMs act only
//! through the [`crate::topology::Site`] trait, so they run on any topology.

pub mod cmdline;
pub mod instance;
pub mod ledger;
pub mod spec;

pub use cmdline::{check_qemu, console_summary, kernel_cmdline, qemu_args, virtiofsd_args, virtiofsd_spec};
pub use instance::Vm;
pub use spec::{FsCache, InstanceId, VmFiles, VmRecord, VmSpec};

use crate::binaries::QEMU_MIN;
use crate::control::ControlError;
use crate::image::ImageError;
use crate::qmp::QmpError;
use crate::topology::TopologyError;
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum VmError {
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Qmp(#[from] QmpError),
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("QEMU {found} cannot migrate a vhost-user-fs device; QEMU >= {}.{} is needed (`ci/setup` installs it)", QEMU_MIN.0, QEMU_MIN.1)]
    QemuTooOld { found: String },
    #[error("could not run qemu-system-x86_64: {0}; `ci/setup` installs it")]
    NoQemu(String),
    #[error("virtiofsd for {instance} died before QEMU connected ({status}); the end of its log:\n{tail}")]
    VirtiofsdDied { instance: String, status: String, tail: String },
    #[error("virtiofsd for {instance} did not create its socket within {timeout:.0?}; the end of its log:\n{tail}")]
    VirtiofsdNoSocket { instance: String, timeout: Duration, tail: String },
    #[error("QEMU for {instance} exited ({status}); the end of its log:\n{tail}")]
    QemuDied { instance: String, status: String, tail: String },
    #[error("the guest {instance} did not say hello within {timeout:.0?}; the end of its console ({console}):\n{tail}")]
    NeverBooted { instance: String, timeout: Duration, console: PathBuf, tail: String },
    #[error(
        "the guest {instance} runs another miglab's agent ({why}): run `miglab image build` with this miglab"
    )]
    AgentMismatch { instance: String, why: String },
    /// The destination's niceness (`[migration] destination_nice`) could not be set: a
    /// niceness below 0 needs root (or CAP_SYS_NICE) on that host.
    #[error(
        "could not set the QEMU's niceness: {0}; leave [migration] destination_nice out, or run as root"
    )]
    Renice(String),
    #[error("no VM '{0}' in this lab: start one with `miglab vm up`")]
    NoVm(String),
    #[error("VM '{0}' already runs in this lab: `miglab vm down` first, or choose another --vm")]
    VmExists(String),
    #[error("could not {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("interrupted while waiting for {0}")]
    Interrupted(String),
}
