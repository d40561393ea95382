//! Execution → RunResult, assembled once, one source per figure: migrations from the hop driver,
//! windows, ops and the series from the collector, verification from the agent's pass (with the
//! inline mismatches from the record stream), the run's status from [`verdict::problems`]. And
//! the result directory's files, written atomically.

use crate::clock::rfc3339;
use crate::collect::Collected;
use crate::plan::Plan;
use crate::run::{ExecError, Execution, GuestRun};
use miglab_infra::binaries::{self, BinaryChoice};
use miglab_infra::paths;
use miglab_model::result::write_atomic;
use miglab_model::{
    Clock, JobSummary, MemoryResult, OpSummary, Provenance, RunResult, StreamHealth, Verification,
};
use miglab_reports::sweep::Rep;
use miglab_reports::tables::{event_rows, events_csv, timeline_csv};
use miglab_reports::verdict;
use miglab_workloads::job::Workload;
use miglab_workloads::verify::VerifyReport;
use std::path::Path;

/// What produced the numbers: versions, accelerator, CPU, commit, and the builds that ran the
/// guest (`binaries`; `image`: the guest image of a chosen kernel, None for the current one).
pub fn provenance(
    accel: miglab_infra::accel::Accel,
    how: &str,
    binaries: &BinaryChoice,
    image: Option<&Path>,
) -> Provenance {
    let detected = miglab_infra::accel::detect();
    let image = match image {
        Some(d) => miglab_infra::image::GuestImage::at(d).ok(),
        None => miglab_infra::image::GuestImage::current(&paths::cache()).ok(),
    };
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let qemu = binaries::info("qemu", &binaries.qemu_path());
    let virtiofsd = binaries::info("virtiofsd", &binaries.virtiofsd_path());
    let kernel = image.as_ref().map(binaries::kernel_info);
    Provenance {
        miglab_version: env!("CARGO_PKG_VERSION").into(),
        git_commit: miglab_infra::image::source_commit(),
        miglab_binary: std::env::current_exe().ok().map(|p| p.display().to_string()),
        qemu: qemu.version.clone(),
        virtiofsd: virtiofsd.version.clone(),
        ceph: binaries::version(&paths::tool("ceph")),
        guest_kernel: image.as_ref().map(|i| i.manifest.kernel_release.clone()),
        guest_image: image.as_ref().map(|i| i.manifest.key.clone()),
        binaries: [Some(qemu), Some(virtiofsd), kernel].into_iter().flatten().collect(),
        accelerator: accel.to_string(),
        accelerator_reason: if how.is_empty() {
            if accel == detected.accel {
                detected.reason
            } else {
                "forced by the scenario".into()
            }
        } else {
            how.into()
        },
        host_cpu: cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().into()),
        host_kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().into()),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().into()),
        topology: None,
    }
}

/// A run on an external topology: the builds that ran are the hosts' (the first host's stand
/// for the run; every host's are in the topology record), and so is the accelerator.
pub fn on_topology(prov: &mut Provenance, t: miglab_model::TopologyRecord) {
    if let Some(h) = t.hosts.first() {
        prov.qemu = h.qemu.as_ref().and_then(|b| b.version.clone());
        prov.virtiofsd = h.virtiofsd.as_ref().and_then(|b| b.version.clone());
        prov.binaries.retain(|b| b.role == "kernel");
        prov.binaries.extend(h.qemu.iter().chain(h.virtiofsd.iter()).cloned());
        prov.accelerator_reason = format!("{}: {}", h.name, h.accelerator_reason);
        prov.host_kernel = h.kernel.clone();
        prov.hostname = Some(h.ssh.clone());
    }
    prov.ceph = t.ceph_version.clone();
    prov.topology = Some(t);
}

/// The result of a repetition before anything ran: what a run that never finishes leaves.
pub fn begun(plan: &Plan, scenario_text: &str, provenance: Provenance) -> RunResult {
    let mut r = RunResult::new(&plan.scenario, plan.repetition, plan.seed);
    r.scenario_text = scenario_text.into();
    r.plan = serde_json::to_value(plan).unwrap_or_default();
    r.workload = serde_json::to_value(&plan.workload).unwrap_or_default();
    r.provenance = provenance;
    r.error = Some("the run did not finish (interrupted or killed)".into());
    r
}

fn verification(v: &VerifyReport, inline: u64, through: &str, incomplete: bool) -> Verification {
    Verification {
        blocks: v.blocks,
        mismatched: v.mismatched(),
        missing: v.missing(),
        errored_write_landed: v.counts.errored_write_landed,
        inline_mismatches: inline,
        counts: v.counts,
        read_mode: v.read_mode.clone(),
        read_through: through.into(),
        incomplete,
        bad: v.bad.iter().filter_map(|b| serde_json::to_value(b).ok()).collect(),
        replaced: v.replaced.clone(),
        unverified_files: v.unverified_files,
    }
}

/// A job file's figures per job (its clones together) and per reporting group, from the
/// clones' figures: the record's `job` indexes the file's clones in order.
pub fn job_summaries(
    file: &miglab_workloads::job::FioFile,
    clones: &[crate::collect::CloneOps],
) -> (Vec<JobSummary>, Vec<JobSummary>) {
    use crate::collect::CloneOps;
    use miglab_workloads::record::Op;
    type ByOp = std::collections::BTreeMap<Op, CloneOps>;
    let instances = file.instances();
    let groups = file.groups();
    let n_groups = groups.last().map_or(0, |g| *g as usize + 1);
    let (mut jobs, mut by_group): (Vec<ByOp>, Vec<ByOp>) =
        (vec![ByOp::new(); file.jobs.len()], vec![ByOp::new(); n_groups]);
    // One pass over the clones' figures, each added to its job's and its group's.
    for c in clones {
        let Some((j, _)) = instances.get(usize::from(c.clone)) else { continue };
        for t in [&mut jobs[*j], &mut by_group[groups[*j] as usize]] {
            let t = t.entry(c.op).or_insert_with(|| CloneOps::new(c.clone, c.op));
            let _ = t.guest.add(&c.guest);
            t.count += c.count;
            t.failed += c.failed;
            t.mismatches += c.mismatches;
            t.bytes += c.bytes;
        }
    }
    let ops = |by: ByOp| -> Vec<OpSummary> {
        by.into_values()
            .map(|c| OpSummary {
                op: c.op.as_str().into(),
                count: c.count,
                failed: c.failed,
                mismatches: c.mismatches,
                bytes: c.bytes,
                guest: crate::collect::latency(&c.guest),
                ..OpSummary::default()
            })
            .collect()
    };
    let jobs = file
        .jobs
        .iter()
        .zip(jobs)
        .enumerate()
        .map(|(j, (job, by))| JobSummary {
            name: job.name.clone(),
            description: job.description.clone(),
            group: groups[j],
            clones: job.numjobs,
            ops: ops(by),
        })
        .collect();
    let by_group = by_group
        .into_iter()
        .enumerate()
        .map(|(g, by)| JobSummary {
            name: format!("group {g}"),
            description: String::new(),
            group: g as u32,
            clones: file
                .jobs
                .iter()
                .zip(&groups)
                .filter(|(_, k)| **k as usize == g)
                .map(|(j, _)| j.numjobs)
                .sum(),
            ops: ops(by),
        })
        .collect();
    (jobs, by_group)
}

/// Reads during the run whose data did not verify (the verify pass's own are counted there).
fn inline_mismatches(c: &Collected) -> u64 {
    c.ops.iter().filter(|o| o.op != "verify").map(|o| o.mismatches).sum()
}

/// One guest's figures, as a run of its own (on the run's common fields in `base`), with its
/// outcome.
fn guest_figures(
    base: &RunResult,
    plan: &Plan,
    g: &GuestRun,
    migrations: Vec<miglab_model::MigrationRecord>,
) -> RunResult {
    let mut r = base.clone();
    r.migrations = migrations;
    if let Some(w) = &g.workload {
        r.workload = serde_json::to_value(w).unwrap_or_default();
    }
    if let Some(c) = &g.collected {
        r.ops = c.ops.clone();
        if let Some(Workload::FioFile(f)) = &g.workload {
            (r.jobs, r.groups) = job_summaries(f, &c.clones);
        }
        r.windows = c.windows.clone();
        r.series = c.series.clone();
        r.stream = StreamHealth {
            records: c.records,
            heartbeats: c.heartbeats,
            heartbeats_missing: c.heartbeats_missing,
            bad_frames: c.bad_frames,
            records_dropped: g.agent.as_ref().map(|a| a.records_dropped),
            first_heartbeat_ms: c.first_heartbeat_ms,
            last_heartbeat_ms: c.last_heartbeat_ms,
            last_op_ms: c.last_op_ms,
            longest_io_stall_ms: c.longest_stall.map(|(_, d)| d),
            longest_io_stall_start_ms: c.longest_stall.map(|(t, _)| t),
            ended_ms: Some(c.ended_ms),
        };
    }
    let inline = g.collected.as_ref().map_or(0, inline_mismatches);
    r.verification = g
        .verify
        .as_ref()
        .map(|v| verification(v, inline, g.verify_host.as_deref().unwrap_or(""), g.verify_incomplete));
    if r.verification.is_none() && (inline > 0 || g.verify_incomplete) {
        let empty = VerifyReport::default();
        r.verification = Some(verification(&empty, inline, "", g.verify_incomplete));
    }
    r.memory = plan.dirty.map(|spec| MemoryResult { spec: Some(spec), checks: g.memory.clone() });
    let (o, why) = miglab_reports::classify::classify(&r, &plan.thresholds);
    // A run that failed before any op completed says nothing about the migration: it has no
    // outcome to match (and must not read `completed`).
    let measured = r.stream.last_op_ms.is_some() || r.error.is_none();
    r.outcome = measured.then_some(o);
    r.outcome_why = if measured { why } else { vec!["no op completed before the run failed".into()] };
    r
}

/// The whole result of a repetition: the figures, the outcome, and whether the run passes —
/// nothing wrong, or (when the plan expects an outcome) that outcome and no data lost.
pub fn assemble(mut r: RunResult, plan: &Plan, ex: &Execution, duration_ms: f64) -> RunResult {
    r.clock = Clock {
        started_at: rfc3339(ex.clock.wall_zero()),
        started_unix_ms: ex.clock.unix_ms(),
        unit: Clock::UNIT.into(),
    };
    r.nonce = format!("{:016x}", ex.nonce);
    r.duration_ms = duration_ms;
    r.error = ex.error.as_ref().map(|e| e.to_string());
    r.ceph_settings = ex.ceph_settings.clone();
    // The injector accounts for every planned fault; none at all means it never started.
    r.faults = if ex.faults.is_empty() && !plan.faults.is_empty() {
        crate::inject::never_started(&plan.faults, r.error.as_deref().unwrap_or("no error recorded"))
    } else {
        ex.faults.clone()
    };
    let none = GuestRun::default();
    let runs: Vec<&GuestRun> = if ex.guests.is_empty() { vec![&none] } else { ex.guests.iter().collect() };
    let mut views: Vec<RunResult> = runs
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let number = i as u32 + 1;
            let mine = ex.migrations.iter().filter(|m| m.guest == number).cloned().collect();
            guest_figures(&r, plan, g, mine)
        })
        .collect();
    if views.len() > 1 {
        let guests: Vec<_> = views
            .iter()
            .zip(&runs)
            .enumerate()
            .map(|(i, (v, g))| miglab_reports::fleet::guest_of(v, i as u32 + 1, &g.name))
            .collect();
        // The run's outcome is its worst guest's; a guest that measured nothing leaves the run
        // without one (it must not read `completed`).
        let outcomes: Option<Vec<_>> = guests.iter().map(|g| g.outcome).collect();
        let worst = outcomes.and_then(|o| o.into_iter().min());
        let why = guests
            .iter()
            .filter(|g| g.outcome != Some(miglab_model::RunOutcome::Completed))
            .flat_map(|g| g.outcome_why.iter().map(move |w| format!("guest {}: {w}", g.guest)))
            .collect();
        let fleet = miglab_reports::fleet::summarize(&guests, plan.in_flight());
        let mut first = views.swap_remove(0);
        first.workload = r.workload.clone();
        (first.outcome, first.outcome_why) = (worst, why);
        (first.guests, first.fleet) = (guests, Some(fleet));
        r = first;
    } else {
        r = views.swap_remove(0);
    }
    r.expected = plan.expect.clone();
    let end = verdict::RunEnd {
        error: r.error.clone(),
        error_is_an_outcome: matches!(
            ex.error,
            Some(ExecError::FsHung(_) | ExecError::GuestLost(_) | ExecError::Migration(_))
        ),
        interrupted: ex.interrupted(),
        // Faults that did not happen as planned make the run say nothing about them; one the
        // scenario marked optional may not have happened at all.
        fault_problems: r
            .faults
            .iter()
            .filter(|f| !(f.optional && f.injected_ms.is_none()))
            .filter_map(|f| f.error.as_ref().map(|e| format!("{}: {e}", f.name)))
            .collect(),
        cleanup_problems: ex.cleanup.clone(),
    };
    (r.problems, r.status) = verdict::judge(&r, &end);
    r
}

/// Writes `result.json` atomically.
pub fn write_result(dir: &Path, r: &RunResult) -> std::io::Result<()> {
    let json = serde_json::to_vec_pretty(r).map_err(std::io::Error::other)?;
    write_atomic(&dir.join("result.json"), &json)
}

/// Writes every file of a result directory: `result.json`, `timeline.csv`, `events.csv`,
/// `latency.hlog` (when the stream was read), `report.html`; in a run of several guests each
/// further guest's own `timeline-g<N>.csv`, `events-g<N>.csv` and `latency-g<N>.hlog` beside
/// the first's.
pub fn write_outputs(dir: &Path, r: &RunResult, hlogs: &[Option<&[u8]>]) -> std::io::Result<()> {
    write_result(dir, r)?;
    let csv = std::io::Error::other;
    for (g, v) in miglab_reports::fleet::views(r) {
        let suffix = match g {
            Some(n) if n > 1 => format!("-g{n}"),
            _ => String::new(),
        };
        write_atomic(&dir.join(format!("timeline{suffix}.csv")), &timeline_csv(&v.series).map_err(csv)?)?;
        write_atomic(&dir.join(format!("events{suffix}.csv")), &events_csv(&event_rows(&v)).map_err(csv)?)?;
        let i = g.unwrap_or(1) as usize - 1;
        if let Some(Some(h)) = hlogs.get(i) {
            write_atomic(&dir.join(format!("latency{suffix}.hlog")), h)?;
        }
    }
    // The numbers are written; a report that cannot be drawn says why and can be made later
    // (`miglab report`).
    if let Err(e) = write_report(dir, r) {
        eprintln!("miglab: {}/report.html not written: {e}", dir.display());
    }
    Ok(())
}

/// Renders `report.html` of the result in `dir`.
pub fn write_report(dir: &Path, r: &RunResult) -> Result<std::path::PathBuf, ReportError> {
    let html = miglab_reports::html::run_report(r)?;
    let p = dir.join("report.html");
    write_atomic(&p, html.as_bytes()).map_err(|source| ReportError::Write { path: p.clone(), source })?;
    Ok(p)
}

/// `miglab report`: a directory's page rendered again from its files alone — a result
/// directory's report.html, or a sweep's sweep.html and sweep.csv; returns what was written.
pub fn report(dir: &Path) -> Result<std::path::PathBuf, ReportError> {
    if dir.join("result.json").exists() {
        report_dir(dir)
    } else {
        report_sweep_dir(dir)
    }
}

/// Reads `dir/result.json` and renders its report again.
pub fn report_dir(dir: &Path) -> Result<std::path::PathBuf, ReportError> {
    write_report(dir, &read_result(dir)?)
}

/// The result a directory holds (its `result.json`).
pub fn read_result(dir: &Path) -> Result<RunResult, ReportError> {
    let p = dir.join("result.json");
    let bytes = std::fs::read(&p).map_err(|source| ReportError::Read { path: p.clone(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| ReportError::Parse { path: p.clone(), why: e.to_string() })
}

/// `sweep.csv` and `sweep.html` of a sweep's repetitions, in `dir`.
pub fn write_sweep(dir: &Path, name: &str, reps: &[Rep]) -> Result<std::path::PathBuf, ReportError> {
    let csv = miglab_reports::sweep::csv(reps).map_err(|e| ReportError::Csv(e.to_string()))?;
    let p = dir.join("sweep.csv");
    write_atomic(&p, &csv).map_err(|source| ReportError::Write { path: p.clone(), source })?;
    let html = miglab_reports::sweep::report(name, reps)?;
    let p = dir.join("sweep.html");
    write_atomic(&p, html.as_bytes()).map_err(|source| ReportError::Write { path: p.clone(), source })?;
    Ok(p)
}

/// Renders a sweep's `sweep.csv` and `sweep.html` again from the results under `dir`
/// (`<cell>/<repetition>/result.json`), cells in the order they ran.
pub fn report_sweep_dir(dir: &Path) -> Result<std::path::PathBuf, ReportError> {
    let mut reps = Vec::new();
    let entries = |d: &Path| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect()
    };
    for cell in entries(dir) {
        for rep in entries(&cell) {
            if rep.join("result.json").exists() {
                let result = read_result(&rep)?;
                // The cell the run's own plan names (its directory is named after it).
                let name = cell.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let cell = miglab_model::SweepCell::of_plan(&result.plan)
                    .unwrap_or_else(|| miglab_model::SweepCell::from_name(&name));
                reps.push(Rep { cell, result });
            }
        }
    }
    if reps.is_empty() {
        return Err(ReportError::NotAResultDir(dir.to_path_buf()));
    }
    reps.sort_by_key(|r| (r.result.clock.started_unix_ms, r.result.repetition));
    let name = reps[0].result.scenario.clone();
    write_sweep(dir, &name, &reps)
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{} holds neither result.json nor a sweep's <cell>/<repetition>/result.json; give a result directory (results/smoke/1) or a sweep's (results/downtime-sweep)", .0.display())]
    NotAResultDir(std::path::PathBuf),
    #[error("could not encode sweep.csv: {0}")]
    Csv(String),
    #[error("could not read {path}: {source}; give a result directory (it holds result.json)")]
    Read { path: std::path::PathBuf, source: std::io::Error },
    #[error("{path} is not a miglab result ({why})")]
    Parse { path: std::path::PathBuf, why: String },
    #[error(transparent)]
    Chart(#[from] miglab_reports::charts::ChartError),
    #[error("could not write {path}: {source}")]
    Write { path: std::path::PathBuf, source: std::io::Error },
}

/// An empty result directory for one repetition (a previous one of the same name is replaced).
pub fn fresh_dir(dir: &Path) -> std::io::Result<()> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir.join("logs"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::CloneOps;
    use miglab_workloads::record::Op;

    /// Clones' figures land in their job's and their group's sums.
    #[test]
    fn clones_add_up_per_job_and_per_group() {
        let text =
            "[a]\nrw=read\nsize=1m\nnumjobs=2\n[b]\nrw=write\nsize=1m\n[c]\nstonewall\nrw=read\nsize=1m\n";
        let f = miglab_workloads::fio::import(text, "f", &Default::default()).expect("file").file;
        let ops = |clone: u16, op: Op, count: u64| {
            let mut c = CloneOps::new(clone, op);
            c.count = count;
            c.bytes = count * 4096;
            let _ = c.guest.record(100);
            c
        };
        let clones = [ops(0, Op::Read, 10), ops(1, Op::Read, 5), ops(2, Op::Write, 7), ops(3, Op::Read, 3)];
        let (jobs, groups) = job_summaries(&f, &clones);
        type Row = (String, u32, u32, Vec<(String, u64)>);
        let counts: Vec<Row> = jobs
            .iter()
            .map(|j| {
                (j.name.clone(), j.group, j.clones, j.ops.iter().map(|o| (o.op.clone(), o.count)).collect())
            })
            .collect();
        assert_eq!(
            counts,
            vec![
                ("a".into(), 0, 2, vec![("read".into(), 15)]),
                ("b".into(), 0, 1, vec![("write".into(), 7)]),
                ("c".into(), 1, 1, vec![("read".into(), 3)]),
            ]
        );
        assert_eq!(jobs[0].ops[0].guest.count, 2, "both clones' latencies");
        assert_eq!(groups.len(), 2);
        assert_eq!((groups[0].clones, groups[0].ops.len(), groups[1].ops[0].count), (3, 2, 3));
    }
}
