//! `miglab bench ...`.

use super::vm::open_site;
use super::{runtime, BenchCmd, CliError, VmName};
use crate::benchmarks;
use crate::exit::Finished;
use miglab_infra::topology::lab::Lab;
use miglab_infra::topology::Site;
use miglab_infra::vm::VmSpec;

pub(super) fn bench_cmd(cmd: BenchCmd) -> Result<Finished, CliError> {
    match cmd {
        BenchCmd::Fio { lab, host, secs, rounds, job, whole, no_verify } => {
            let l = Lab::open(&lab.name, &lab.root())?;
            let mount = l.host(&host)?.mount_point();
            let mut files = Vec::new();
            for f in &job {
                let import = super::read_job_file(f, &Default::default())?;
                files.push(
                    import.map_err(|e| CliError::FioFile { path: f.clone(), message: e.to_string() })?.file,
                );
            }
            for j in files.iter_mut().flat_map(|f| f.jobs.iter_mut()) {
                j.verify = !no_verify;
            }
            if whole {
                benchmarks::fio::run_files(files, &mount, secs, rounds)
                    .map_err(|e| CliError::FioBench(e.to_string()))?;
                return Ok(Finished::Clean);
            }
            let mut jobs: Vec<_> = files.into_iter().flat_map(|f| f.jobs).collect();
            if jobs.is_empty() {
                jobs = benchmarks::fio::default_jobs();
                jobs.iter_mut().for_each(|j| j.verify = !no_verify);
            }
            benchmarks::fio::run(jobs, &mount, secs, rounds)
                .map_err(|e| CliError::FioBench(e.to_string()))?;
            Ok(Finished::Clean)
        }
        BenchCmd::Lab { name, root, count } => {
            let opts = miglab_infra::topology::lab::LabOptions {
                name,
                root: root.unwrap_or_else(miglab_infra::paths::lab_root),
                ..Default::default()
            };
            benchmarks::lab::run(&opts, count)?;
            Ok(Finished::Clean)
        }
        BenchCmd::Collector { minutes, rate } => {
            benchmarks::collector::run(minutes, rate);
            Ok(Finished::Clean)
        }
        BenchCmd::Report { dir, minutes, rounds } => {
            benchmarks::report::run(&dir, minutes, rounds)?;
            Ok(Finished::Clean)
        }
        BenchCmd::Boot { vm, host, count, accel, memory_mib } => {
            let site = open_site(&VmName { lab: vm.lab, vm: vm.vm.clone() })?;
            let spec =
                VmSpec { accel: accel.resolve(), memory_mib, ..VmSpec::new(&format!("{}-boot", vm.vm)) };
            runtime()?.block_on(benchmarks::boot::run(&site, &spec, &host, count))?;
            Ok(Finished::Clean)
        }
    }
}
