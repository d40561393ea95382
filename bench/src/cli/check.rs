//! `miglab check` and `miglab doctor`.

use super::CliError;
use crate::doctor;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn check(scenario: &Path) -> Result<ExitCode, CliError> {
    println!("{}", crate::check::check(scenario)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn doctor(
    json: bool,
    binaries: &miglab_infra::binaries::BinaryChoice,
    topology: Option<&Path>,
) -> Result<ExitCode, CliError> {
    let report = match topology {
        Some(t) => {
            let spec = miglab_infra::topology::external::TopologySpec::load(t)
                .map_err(|e| CliError::BadInput(e.to_string()))?;
            doctor::remote(&spec, t)
        }
        None => doctor::run(binaries),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("{report}");
    }
    Ok(if report.lab_can_run() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
