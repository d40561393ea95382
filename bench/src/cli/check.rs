//! `miglab check` and `miglab doctor`.

use super::CliError;
use crate::doctor;
use std::path::Path;
use std::process::ExitCode;

pub(super) fn check(scenario: &Path) -> Result<ExitCode, CliError> {
    println!("{}", crate::check::check(scenario)?);
    Ok(ExitCode::SUCCESS)
}

pub(super) fn doctor(json: bool, binaries: &crate::binaries::BinaryChoice) -> ExitCode {
    let report = doctor::run(binaries);
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("{report}");
    }
    if report.lab_can_run() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
