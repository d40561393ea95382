//! Exit codes, decided in one place however deep an error sits: 0 success, 1 the run or the
//! lab failed (or a check found a problem), 2 bad input (a file, a flag), 130 interrupted.

use crate::assemble::ReportError;
use crate::cli::CliError;
use crate::migration::MigrationError;
use crate::plan::PlanError;
use crate::run::ExecError;
use crate::scenario::ScenarioError;
use crate::session::RunError;
use miglab_infra::image::ImageError;
use miglab_infra::topology::lab::LabError;
use miglab_infra::topology::layout::LayoutError;
use miglab_infra::topology::TopologyError;
use miglab_infra::vm::VmError;

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
            _ => Exit::Failed,
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

impl Classify for miglab_infra::topology::external::ExternalError {
    fn exit(&self) -> Exit {
        use miglab_infra::topology::external::ExternalError as E;
        match self {
            E::File(_) | E::NoHost(_) | E::Refused { .. } | E::Busy { .. } => Exit::BadInput,
            _ => Exit::Failed,
        }
    }
}

impl Classify for VmError {
    fn exit(&self) -> Exit {
        match self {
            VmError::Topology(e) => e.exit(),
            VmError::NoVm(_) | VmError::VmExists(_) | VmError::AgentMismatch { .. } => Exit::BadInput,
            _ => Exit::Failed,
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
            _ => Exit::Failed,
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
            _ => Exit::Failed,
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
            _ => Exit::Failed,
        }
    }
}

impl Classify for RunError {
    fn exit(&self) -> Exit {
        match self {
            RunError::Scenario(e) => e.exit(),
            RunError::Plan(e) => e.exit(),
            RunError::Lab(e) => e.exit(),
            RunError::Replay { .. }
            | RunError::LabBusy { .. }
            | RunError::LabIncomplete { .. }
            | RunError::LabAltered { .. }
            | RunError::Binaries(_)
            | RunError::NotHere(_) => Exit::BadInput,
            RunError::External(e) => e.exit(),
            RunError::Image(e) => e.exit(),
            RunError::Interrupted(_) | RunError::InterruptedBefore(_) => Exit::Interrupted,
            RunError::Io { .. }
            | RunError::Runtime(_)
            | RunError::Failed { .. }
            | RunError::LabUnhealthy { .. } => Exit::Failed,
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
            CliError::Scenario(e) => e.exit(),
            CliError::Exec(e) => e.exit(),
            CliError::Topology(e) => e.exit(),
            CliError::BadInput(_) => Exit::BadInput,
            CliError::Report(e) => e.exit(),
            CliError::Compare(e) => e.exit(),
            CliError::Runtime(_) | CliError::Check(_) | CliError::Bench(_) => Exit::Failed,
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
        let bad = CliError::Run(RunError::Scenario(ScenarioError::Parse {
            path: PathBuf::from("s.toml"),
            line: 1,
            column: 1,
            message: "x".into(),
        }));
        assert_eq!(bad.exit().code(), 2);
        let failed =
            CliError::Run(RunError::Failed { total: 1, failed: vec![(PathBuf::from("r"), "why".into())] });
        assert_eq!(failed.exit().code(), 1);
        assert_eq!(CliError::Exec(ExecError::Interrupted).exit().code(), 130);
    }
}
