//! `miglab run`.

use super::{CliError, RunArgs};
use crate::exit::Finished;
use crate::session::{self, RunOptions, Source};
use miglab_infra::paths;
use std::time::Duration;

pub(super) fn run_cmd(a: RunArgs) -> Result<Finished, CliError> {
    let RunArgs { scenario, replay, out, root, repetitions, lab, host_mode, topology, binaries } = a;
    let source = match (scenario, replay) {
        (Some(s), None) => Source::Scenario(s),
        (None, Some(r)) => Source::Replay(r),
        _ => return Err(CliError::Args("give a scenario or --replay RESULT_JSON, not both".into())),
    };
    let host_mode = match host_mode {
        Some(s) if !(s.is_finite() && s > 0.0) => {
            return Err(CliError::Args(format!("--host-mode {s}: give a number of seconds, more than 0")))
        }
        s => s.map(Duration::from_secs_f64),
    };
    if repetitions == Some(0) {
        return Err(CliError::Args("--repetitions 0: give 1 or more".into()));
    }
    let opts = RunOptions {
        source,
        out,
        lab_root: root.unwrap_or_else(paths::lab_root),
        repetitions,
        lab_name: lab,
        host_mode,
        binaries: binaries.choice(),
        topology,
    };
    session::run(&opts)?;
    Ok(Finished::Clean)
}
