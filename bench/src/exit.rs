//! Exit codes, decided in one place however deep an error sits: 0 success, 1 the run or the
//! lab failed (or a check found a problem), 2 bad input (a file, a flag), 130 interrupted. Every
//! error kind is mapped variant by variant (no wildcard arm): a new variant has to be placed.

use crate::assemble::ReportError;
use crate::migration::MigrationError;
use crate::plan::PlanError;
use crate::preflight::PreflightError;
use crate::run::ExecError;
use crate::scenario::ScenarioError;
use crate::session::RunError;
use miglab_infra::binaries::BinariesError;
use miglab_infra::image::ImageError;
use miglab_infra::topology::external::ExternalError;
use miglab_infra::topology::lab::LabError;
use miglab_infra::topology::layout::LayoutError;
use miglab_infra::topology::TopologyError;
use miglab_infra::vm::VmError;
use std::path::PathBuf;
use std::process::ExitCode;
use thiserror::Error;

/// Everything a command can fail with; printed once, then mapped to the exit code here.
#[derive(Debug, Error)]
pub enum CliError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Binaries(#[from] BinariesError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Migration(#[from] MigrationError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error(transparent)]
    External(#[from] ExternalError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    #[error("could not start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error(transparent)]
    Compare(#[from] miglab_reports::compare::CompareError),
    /// Options that do not go together, or a value out of range.
    #[error("{0}")]
    Args(String),
    /// A file or directory the user named cannot be read.
    #[error("could not read {}: {source}{hint}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error, hint: &'static str },
    /// Where the user asked for output cannot be written.
    #[error("could not write {}: {source}", path.display())]
    Unwritable { path: PathBuf, source: std::io::Error },
    /// An fio job file that does not parse.
    #[error("{}: {message}", path.display())]
    FioFile { path: PathBuf, message: String },
    /// Charts of a page could not be drawn.
    #[error("{what}'s charts: {why}")]
    Charts { what: &'static str, why: String },
    /// `miglab bench fio` could not run.
    #[error("{0}")]
    FioBench(String),
    /// What a command checked after it acted went wrong (a hop that failed, a VM that would
    /// not stop), one line each.
    #[error("{}", .0.join("\n"))]
    Problems(Vec<String>),
}

/// How a command that ran to its end ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Done; nothing found.
    Clean,
    /// It found what it looks for: a regression, new failures, a missing prerequisite (exit 1).
    Found,
    /// `lab exec`: the command's own exit status, passed through.
    Passthrough(u8),
}

/// The exit code of a command's result.
pub fn code(result: &Result<Finished, CliError>) -> ExitCode {
    ExitCode::from(match result {
        Ok(Finished::Clean) => 0,
        Ok(Finished::Found) => Exit::Failed.code(),
        Ok(Finished::Passthrough(c)) => *c,
        Err(e) => e.exit().code(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Failed,
    BadInput,
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Failed => 1,
            Exit::BadInput => 2,
            Exit::Interrupted => 130,
        }
    }
}

/// What kind of failure an error is.
pub trait Classify {
    fn exit(&self) -> Exit;
}

impl Classify for LabError {
    fn exit(&self) -> Exit {
        match self {
            LabError::Interrupted(_) => Exit::Interrupted,
            LabError::Layout(_)
            | LabError::NotFound { .. }
            | LabError::UnknownHost(_)
            | LabError::UnknownDaemon(_) => Exit::BadInput,
            LabError::NotRoot
            | LabError::MissingTool { .. }
            | LabError::Exists { .. }
            | LabError::PortBusy { .. }
            | LabError::Slot(_)
            | LabError::State(_)
            | LabError::Net(_)
            | LabError::Process(_)
            | LabError::Tool(_)
            | LabError::Admin(_)
            | LabError::Io { .. }
            | LabError::DaemonDied { .. }
            | LabError::NotReady { .. }
            | LabError::MountFailed { .. }
            | LabError::ClientStatus { .. }
            | LabError::Wait(_)
            | LabError::Leftovers { .. } => Exit::Failed,
        }
    }
}

impl Classify for ReportError {
    fn exit(&self) -> Exit {
        match self {
            ReportError::Read { .. } | ReportError::Parse { .. } | ReportError::NotAResultDir(_) => {
                Exit::BadInput
            }
            ReportError::Csv(_) | ReportError::Chart(_) | ReportError::Write { .. } => Exit::Failed,
        }
    }
}

impl Classify for LayoutError {
    fn exit(&self) -> Exit {
        Exit::BadInput
    }
}

impl Classify for TopologyError {
    fn exit(&self) -> Exit {
        match self {
            TopologyError::Lab(e) => e.exit(),
            TopologyError::Process(_) | TopologyError::Journal(_) => Exit::Failed,
            TopologyError::External(e) => e.exit(),
        }
    }
}

impl Classify for ExternalError {
    fn exit(&self) -> Exit {
        use ExternalError as E;
        match self {
            E::File(_) | E::NoHost(_) | E::Refused { .. } | E::Busy { .. } | E::InUse { .. } => {
                Exit::BadInput
            }
            E::Ssh(_)
            | E::State(_)
            | E::Remote { .. }
            | E::ConnectionLost { .. }
            | E::HostLacks { .. }
            | E::Unsupported(_)
            | E::Io { .. } => Exit::Failed,
        }
    }
}

impl Classify for VmError {
    fn exit(&self) -> Exit {
        match self {
            VmError::Topology(e) => e.exit(),
            VmError::Image(e) => e.exit(),
            VmError::NoVm(_) | VmError::VmExists(_) | VmError::AgentMismatch { .. } => Exit::BadInput,
            VmError::Interrupted(_) => Exit::Interrupted,
            VmError::Qmp(_)
            | VmError::Control(_)
            | VmError::QemuTooOld { .. }
            | VmError::NoQemu(_)
            | VmError::VirtiofsdDied { .. }
            | VmError::VirtiofsdNoSocket { .. }
            | VmError::QemuDied { .. }
            | VmError::NeverBooted { .. }
            | VmError::Io { .. }
            | VmError::Renice(_) => Exit::Failed,
        }
    }
}

impl Classify for MigrationError {
    fn exit(&self) -> Exit {
        match self {
            MigrationError::Vm(e) => e.exit(),
            MigrationError::Topology(e) => e.exit(),
            MigrationError::SameHost(_) => Exit::BadInput,
            MigrationError::Cleanup { error, .. } => error.exit(),
            MigrationError::Qmp { .. } | MigrationError::Records(_) | MigrationError::Refused { .. } => {
                Exit::Failed
            }
        }
    }
}

impl Classify for ExecError {
    fn exit(&self) -> Exit {
        match self {
            ExecError::Interrupted => Exit::Interrupted,
            ExecError::Vm(e) => e.exit(),
            ExecError::Topology(e) => e.exit(),
            ExecError::Migration(e) => e.exit(),
            ExecError::Records(_)
            | ExecError::Control(_)
            | ExecError::Workload(_)
            | ExecError::Layout(..)
            | ExecError::LayoutFailed(_)
            | ExecError::FsHung(_)
            | ExecError::GuestLost(_)
            | ExecError::Faults(_)
            | ExecError::Settings(_)
            | ExecError::ConnectionLost(_)
            | ExecError::MountHung { .. }
            | ExecError::Mount(_) => Exit::Failed,
        }
    }
}

impl Classify for ScenarioError {
    fn exit(&self) -> Exit {
        Exit::BadInput
    }
}

impl Classify for PlanError {
    fn exit(&self) -> Exit {
        match self {
            PlanError::TooFewHosts(_) => Exit::Failed,
            PlanError::NoPlan { .. }
            | PlanError::Version { .. }
            | PlanError::Faults(_)
            | PlanError::Invalid { .. } => Exit::BadInput,
        }
    }
}

impl Classify for ImageError {
    fn exit(&self) -> Exit {
        match self {
            // Fixed by the user (`miglab image build`), like a missing tool.
            ImageError::OtherAgent { .. } => Exit::BadInput,
            ImageError::NoKernel(_)
            | ImageError::NoAgent(_)
            | ImageError::NotBuilt(_)
            | ImageError::Io { .. }
            | ImageError::Kernel { .. }
            | ImageError::Kmod(_)
            | ImageError::Manifest { .. }
            | ImageError::AgentBuild(_) => Exit::Failed,
        }
    }
}

impl Classify for RunError {
    fn exit(&self) -> Exit {
        match self {
            RunError::Preflight(e) => e.exit(),
            RunError::Lab(e) => e.exit(),
            RunError::LabBusy { .. }
            | RunError::LabIncomplete { .. }
            | RunError::LabAltered { .. }
            | RunError::NotHere(_) => Exit::BadInput,
            RunError::External(e) => e.exit(),
            RunError::Interrupted(_) | RunError::InterruptedBefore(_) => Exit::Interrupted,
            RunError::Io { .. }
            | RunError::Runtime(_)
            | RunError::Failed { .. }
            | RunError::UndoFailed { .. }
            | RunError::LabUnhealthy { .. } => Exit::Failed,
        }
    }
}

impl Classify for PreflightError {
    fn exit(&self) -> Exit {
        match self {
            PreflightError::Scenario(e) => e.exit(),
            PreflightError::Plan(e) => e.exit(),
            PreflightError::Binaries(e) => e.exit(),
            PreflightError::Image(e) => e.exit(),
            PreflightError::Replay { .. } | PreflightError::NotHere(_) => Exit::BadInput,
        }
    }
}

impl Classify for BinariesError {
    fn exit(&self) -> Exit {
        match self {
            BinariesError::Image { .. }
            | BinariesError::Missing { .. }
            | BinariesError::NotExecutable { .. }
            | BinariesError::NotKernelPackage(_) => Exit::BadInput,
        }
    }
}

impl Classify for miglab_reports::compare::CompareError {
    fn exit(&self) -> Exit {
        use miglab_reports::compare::CompareError as E;
        match self {
            E::Io { .. } => Exit::Failed,
            E::Empty(..) | E::NothingInCommon(..) | E::TooFew { .. } | E::Undeclared { .. } => Exit::BadInput,
        }
    }
}

impl Classify for CliError {
    fn exit(&self) -> Exit {
        match self {
            CliError::Lab(e) => e.exit(),
            CliError::Image(e) => e.exit(),
            CliError::Vm(e) => e.exit(),
            CliError::Migration(e) => e.exit(),
            CliError::Run(e) => e.exit(),
            CliError::Preflight(e) => e.exit(),
            CliError::Scenario(e) => e.exit(),
            CliError::Exec(e) => e.exit(),
            CliError::Topology(e) => e.exit(),
            CliError::External(e) => e.exit(),
            CliError::Binaries(e) => e.exit(),
            CliError::Report(e) => e.exit(),
            CliError::Compare(e) => e.exit(),
            CliError::Args(_)
            | CliError::Unreadable { .. }
            | CliError::Unwritable { .. }
            | CliError::FioFile { .. } => Exit::BadInput,
            CliError::Runtime(_)
            | CliError::Problems(_)
            | CliError::Charts { .. }
            | CliError::FioBench(_) => Exit::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The code is found however deep the error sits.
    #[test]
    fn nested_errors_map_to_their_kind() {
        let lab_interrupted = LabError::Interrupted("lab up".into());
        let deep =
            CliError::Migration(MigrationError::Vm(VmError::Topology(TopologyError::from(lab_interrupted))));
        assert_eq!(deep.exit().code(), 130);
        let bad = CliError::Run(RunError::Preflight(PreflightError::Scenario(ScenarioError::Parse {
            path: PathBuf::from("s.toml"),
            line: 1,
            column: 1,
            message: "x".into(),
        })));
        assert_eq!(bad.exit().code(), 2);
        let failed =
            CliError::Run(RunError::Failed { total: 1, failed: vec![(PathBuf::from("r"), "why".into())] });
        assert_eq!(failed.exit().code(), 1);
        assert_eq!(CliError::Exec(ExecError::Interrupted).exit().code(), 130);
        // An image error under a VM is judged as an image error (another agent: the user's fix).
        let other = ImageError::OtherAgent { images: "i".into(), ours: "a".into(), found: "b".into() };
        assert_eq!(CliError::Vm(VmError::Image(other)).exit().code(), 2);
        assert_eq!(CliError::Binaries(BinariesError::NotKernelPackage("k".into())).exit().code(), 2);
    }

    /// A command that ran to its end and found something exits 1; `lab exec` passes its code on.
    #[test]
    fn findings_and_passthrough_have_their_codes() {
        let as_u8 = |r: &Result<Finished, CliError>| format!("{:?}", code(r));
        assert_eq!(as_u8(&Ok(Finished::Clean)), format!("{:?}", ExitCode::SUCCESS));
        assert_eq!(as_u8(&Ok(Finished::Found)), format!("{:?}", ExitCode::from(1)));
        assert_eq!(as_u8(&Ok(Finished::Passthrough(7))), format!("{:?}", ExitCode::from(7)));
        let args = Err(CliError::Args("--hops 0".into()));
        assert_eq!(as_u8(&args), format!("{:?}", ExitCode::from(2)));
    }
}
