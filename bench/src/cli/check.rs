//! `miglab check` and `miglab doctor`.

use super::CliError;
use crate::doctor;
use crate::exit::Finished;
use std::path::Path;

pub(super) fn check(scenario: &Path) -> Result<Finished, CliError> {
    println!("{}", crate::preflight::check(scenario)?);
    Ok(Finished::Clean)
}

/// How each job file maps: its jobs, and every option run, mapped or ignored; a file miglab
/// refuses says where and why (then the exit is bad input).
pub(super) fn fio_files(files: &[std::path::PathBuf], mount: Option<String>) -> Result<Finished, CliError> {
    use miglab_workloads::fio::{self, Treatment};
    let ctx = fio::Context { mount };
    let mut refused: Vec<&std::path::Path> = Vec::new();
    for path in files {
        let import = match super::read_job_file(path, &ctx)? {
            Ok(i) => i,
            Err(e) => {
                refused.push(path);
                println!("{}: refused: {e}", path.display());
                continue;
            }
        };
        let n = import.file.jobs.len();
        println!("{}: accepted, {n} job{}", path.display(), if n == 1 { "" } else { "s" });
        for (j, notes) in import.notes.iter().enumerate() {
            println!("  {}", fio::describe_job(&import.file, j));
            let ran: Vec<&str> =
                notes.iter().filter(|o| o.treatment == Treatment::Ran).map(|o| o.option.as_str()).collect();
            println!("    run: {}", ran.join(", "));
            for o in notes {
                match &o.treatment {
                    Treatment::Ran => {}
                    Treatment::Mapped(how) => println!("    mapped: {}={} ({how})", o.option, o.value),
                    Treatment::Ignored(why) => println!("    ignored: {}={} ({why})", o.option, o.value),
                }
            }
        }
    }
    if files.len() > 1 {
        println!("{} of {} accepted", files.len() - refused.len(), files.len());
    }
    match refused.first() {
        None => Ok(Finished::Clean),
        Some(first) => Err(CliError::FioFile {
            path: first.to_path_buf(),
            message: format!(
                "{} of {} job files refused, each with its reason above",
                refused.len(),
                files.len()
            ),
        }),
    }
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
