//! `miglab bench ...`.

use super::vm::open_site;
use super::{runtime, BenchCmd, CliError, VmName};
use crate::benchmarks;
use miglab_infra::topology::lab::Lab;
use miglab_infra::topology::Site;
use miglab_infra::vm::VmSpec;
use std::process::ExitCode;

pub(super) fn bench_cmd(cmd: BenchCmd) -> Result<ExitCode, CliError> {
    match cmd {
        BenchCmd::Fio { lab, host, secs, rounds, job } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            let mount = l.host(&host)?.mount_point();
            let mut jobs = Vec::new();
            for f in &job {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| CliError::BadInput(format!("could not read {}: {e}", f.display())))?;
                jobs.extend(
                    miglab_workloads::fio::parse(&text)
                        .map_err(|e| CliError::BadInput(format!("{}: {e}", f.display())))?,
                );
            }
            if jobs.is_empty() {
                jobs = benchmarks::fio::default_jobs();
            }
            benchmarks::fio::run(jobs, &mount, secs, rounds).map_err(|e| CliError::Bench(e.to_string()))?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Collector { minutes, rate } => {
            benchmarks::collector::run(minutes, rate);
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Report { dir, minutes, rounds } => {
            benchmarks::report::run(&dir, minutes, rounds)?;
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Boot { vm, host, count, accel, memory_mib } => {
            let site = open_site(&VmName { lab: vm.lab, vm: vm.vm.clone() })?;
            let spec =
                VmSpec { accel: accel.resolve(), memory_mib, ..VmSpec::new(&format!("{}-boot", vm.vm)) };
            runtime()?.block_on(benchmarks::boot::run(&site, &spec, &host, count))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
