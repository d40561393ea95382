//! `miglab check` and `miglab doctor`.

use super::CliError;
use crate::doctor;
use crate::exit::Finished;
use std::path::Path;

pub(super) fn check(scenario: &Path) -> Result<Finished, CliError> {
    println!("{}", crate::preflight::check(scenario)?);
    Ok(Finished::Clean)
}

pub(super) fn doctor(
    json: bool,
    binaries: &miglab_infra::binaries::BinaryChoice,
    topology: Option<&Path>,
) -> Result<Finished, CliError> {
    let report = match topology {
        Some(t) => {
            let spec = miglab_infra::topology::external::TopologySpec::load(t)
                .map_err(miglab_infra::topology::external::ExternalError::from)?;
            doctor::remote(&spec, t)
        }
        None => doctor::run(binaries),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!("{report}");
    }
    Ok(if report.lab_can_run() { Finished::Clean } else { Finished::Found })
}
