//! `miglab vm ...` and `miglab migrate`.

use super::{BenchCmd, CliError, MigrateArgs, VmCmd, VmName};
use crate::migration::{self, next_host, MigrationOptions, Quiet};
use crate::readloop::{self, check_continuity, start_read_loop, write_hello, HELLO_FILE};
use crate::topology::lab::Lab;
use crate::topology::Host;
use crate::vm::{Vm, VmError, VmRecord, VmSpec};
use miglab_reports::{MigrationParams, MigrationRecord, Outcome};
use std::process::ExitCode;
use std::time::Duration;

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)
}

fn open_lab(v: &VmName) -> Result<Lab, CliError> {
    Ok(Lab::open(&v.lab.name, &v.lab.root())?)
}

/// The instance that currently runs the guest.
fn current(lab: &Lab, vm: &str) -> Result<VmRecord, CliError> {
    lab.vms()
        .into_iter()
        .filter(|r| r.spec.name == vm && !r.incoming)
        .max_by_key(|r| r.generation)
        .ok_or_else(|| VmError::NoVm(vm.into()).into())
}

pub(super) fn vm_cmd(cmd: VmCmd) -> Result<ExitCode, CliError> {
    match cmd {
        VmCmd::Up {
            vm,
            host,
            memory_mib,
            vcpus,
            accel,
            fs_cache,
            cmdline,
            virtiofsd_args,
            no_workload,
            boot_timeout,
        } => {
            let lab = open_lab(&vm)?;
            if lab.vms().iter().any(|r| r.spec.name == vm.vm) {
                return Err(VmError::VmExists(vm.vm).into());
            }
            let spec = VmSpec {
                name: vm.vm.clone(),
                vcpus,
                memory_mib,
                accel: accel.resolve(),
                fs_cache,
                cmdline_extra: cmdline,
                bzimage: false,
                boot_timeout_ms: boot_timeout * 1000,
                virtiofsd_args,
            };
            runtime()?.block_on(async {
                let mut v = match Vm::start(&lab, &spec, &host, 0, false).await {
                    Ok(v) => v,
                    Err(e) => {
                        stop_all(&lab, &spec.name).await;
                        return Err(CliError::from(e));
                    }
                };
                let hello = v.hello.clone();
                println!(
                    "{} is up on {host} ({}, {} MiB, {} vCPU): agent hello after {:.0} ms, kernel {}",
                    v.instance(),
                    spec.accel,
                    spec.memory_mib,
                    spec.vcpus,
                    v.boot_ms.unwrap_or_default(),
                    hello.as_ref().map(|h| h.kernel.as_str()).unwrap_or("?"),
                );
                if let Some(e) = hello.and_then(|h| h.setup_error) {
                    println!("warning: the agent reported a setup problem: {e}");
                }
                if !no_workload {
                    write_hello(lab.lab_host(&host)?)?;
                    start_read_loop(&mut v).await?;
                    println!("read loop running on /mnt/cephfs/{HELLO_FILE}");
                }
                Ok(ExitCode::SUCCESS)
            })
        }
        VmCmd::Down { vm } => {
            let lab = open_lab(&vm)?;
            if !lab.vms().iter().any(|r| r.spec.name == vm.vm) {
                return Err(VmError::NoVm(vm.vm).into());
            }
            runtime()?.block_on(stop_all(&lab, &vm.vm));
            println!("{} is down", vm.vm);
            Ok(ExitCode::SUCCESS)
        }
        VmCmd::Console { vm } => {
            let lab = open_lab(&vm)?;
            let dir = lab.layout().dir.join("vms").join(&vm.vm);
            let mut instances: Vec<_> = std::fs::read_dir(&dir)
                .map_err(|_| VmError::NoVm(vm.vm.clone()))?
                .flatten()
                .map(|e| e.path())
                .collect();
            // host.generation: order by generation.
            instances
                .sort_by_key(|p| p.extension().and_then(|e| e.to_str()).and_then(|g| g.parse::<u32>().ok()));
            for p in instances {
                println!("==== {} ====", p.display());
                print!("{}", std::fs::read_to_string(p.join("console.log")).unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Stops every instance of `vm`, through QMP where it answers, else through the supervisor.
async fn stop_all(lab: &Lab, vm: &str) {
    for r in lab.vms().into_iter().filter(|r| r.spec.name == vm) {
        match Vm::attach(lab, &r).await {
            Ok(v) => {
                if let Err(e) = v.stop(lab).await {
                    eprintln!("miglab: stopping {}: {e}", r.instance());
                }
            }
            Err(_) => {
                for name in [r.qemu_name(), r.virtiofsd_name()] {
                    if let Some(p) = lab.process(&name) {
                        let _ = tokio::task::block_in_place(|| lab.supervisor().stop(&p));
                    }
                }
                let _ = lab.forget_vm(&r.instance());
            }
        }
    }
}

pub(super) fn migrate_cmd(m: MigrateArgs) -> Result<ExitCode, CliError> {
    let lab = open_lab(&m.vm)?;
    let opts = MigrationOptions {
        params: MigrationParams {
            downtime_limit_ms: m.downtime_limit_ms,
            max_bandwidth: m.max_bandwidth,
            multifd_channels: m.multifd_channels,
        },
        timeout: Duration::from_secs(m.timeout),
        ..MigrationOptions::default()
    };
    let hosts: Vec<String> = lab.layout().clients.iter().map(|c| c.name.clone()).collect();
    runtime()?.block_on(async {
        let rec = current(&lab, &m.vm.vm)?;
        let mut vm = Vm::attach(&lab, &rec).await?;
        if !readloop::status(&mut vm).await?.running {
            start_read_loop(&mut vm).await?;
        }
        let mut records = Vec::new();
        let mut problems = Vec::new();
        if !m.json {
            println!("{}", hop_header());
        }
        for hop in 1..=m.hops {
            let before = readloop::status(&mut vm).await?;
            let to = next_host(&hosts, &vm.record.host);
            let (next, record) = migration::migrate(&lab, vm, &to, &opts, &mut Quiet, None).await?;
            vm = next;
            // Let the guest run a little on its new host before judging the read loop.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let after = readloop::status(&mut vm).await?;
            let continuity = check_continuity(&before, &after);
            if !m.json {
                println!("{}", hop_row(hop, &record, after.ops - before.ops, &continuity));
            }
            if let Err(e) = &continuity {
                problems.push(format!("hop {hop}: {e}"));
            }
            if let Outcome::Failed { error } = &record.outcome {
                problems.push(format!("hop {hop}: migration failed: {error}"));
            }
            if let Outcome::TimedOut { after_ms } = &record.outcome {
                problems.push(format!("hop {hop}: cancelled after {after_ms} ms"));
            }
            records.push(record);
        }
        if m.json {
            println!("{}", serde_json::to_string_pretty(&records).unwrap_or_default());
        }
        if problems.is_empty() {
            Ok(ExitCode::SUCCESS)
        } else {
            Err(CliError::Check(problems.join("\n")))
        }
    })
}

pub fn hop_header() -> String {
    format!(
        "{:>3}  {:<9} {:<10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6} {:>9}  read loop",
        "hop",
        "route",
        "outcome",
        "total ms",
        "downtime",
        "paused ms",
        "wall ms",
        "MB sent",
        "passes",
        "reads"
    )
}

pub fn hop_row(hop: u32, r: &MigrationRecord, reads: u64, continuity: &Result<(), String>) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let outcome = match &r.outcome {
        Outcome::Completed => "completed".to_string(),
        Outcome::Failed { .. } => "FAILED".to_string(),
        Outcome::TimedOut { .. } => "TIMED OUT".to_string(),
    };
    format!(
        "{:>3}  {:<9} {:<10} {:>8} {:>9} {:>9} {:>8.0} {:>8.1} {:>6} {:>9}  {}",
        hop,
        format!("{}→{}", r.from, r.to),
        outcome,
        opt(r.total_time_ms),
        opt(r.downtime_ms),
        r.phases.paused_ms.map(|p| format!("{p:.0}")).unwrap_or_else(|| "-".into()),
        r.wall_ms,
        r.transferred_bytes.unwrap_or(0) as f64 / 1e6,
        r.phases.passes,
        reads,
        match continuity {
            Ok(()) => "continuous".to_string(),
            Err(e) => format!("BROKEN: {e}"),
        }
    )
}

pub(super) fn bench_cmd(cmd: BenchCmd) -> Result<ExitCode, CliError> {
    match cmd {
        BenchCmd::Fio { lab, host, secs, rounds, job } => bench_fio(&lab, &host, secs, rounds, &job),
        BenchCmd::Collector { minutes, rate } => {
            bench_collector(minutes, rate);
            Ok(ExitCode::SUCCESS)
        }
        BenchCmd::Boot { vm, host, count, accel, memory_mib } => {
            let lab = open_lab(&vm)?;
            let name = format!("{}-boot", vm.vm);
            let spec = VmSpec { accel: accel.resolve(), memory_mib, ..VmSpec::new(&name) };
            let image = crate::image::GuestImage::current(&crate::paths::cache())?;
            println!(
                "boot: QEMU start → agent hello, {} MiB, {} on {host}, image {} (kernel {}, initramfs {:?} {:.1} MiB)",
                spec.memory_mib,
                spec.accel,
                image.manifest.key,
                image.manifest.kernel_release,
                image.manifest.compression,
                image.manifest.initramfs_bytes as f64 / 1048576.0
            );
            let mut ms = Vec::new();
            runtime()?.block_on(async {
                for i in 1..=count {
                    let v = Vm::start(&lab, &spec, &host, i, false).await?;
                    let boot = v.boot_ms.unwrap_or_default();
                    let h = v.hello.clone().unwrap_or_default();
                    println!(
                        "  boot {i}: {boot:>6.0} ms  (guest uptime at hello {} ms, modules {} ms)",
                        h.uptime_ms, h.modules_ms
                    );
                    ms.push(boot);
                    v.stop(&lab).await?;
                }
                Ok::<(), CliError>(())
            })?;
            ms.sort_by(f64::total_cmp);
            let median = ms[ms.len() / 2];
            println!(
                "median {median:.0} ms, min {:.0} ms, max {:.0} ms over {} boots",
                ms[0],
                ms[ms.len() - 1],
                ms.len()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn default_fio_jobs() -> Vec<miglab_workloads::job::FioJob> {
    use miglab_workloads::job::{FioJob, Rw, Size};
    // direct=1, as the storage baselines in FIELD-NOTES: the page cache would measure memory.
    let mut r = FioJob::new("randread-4k", Rw::Randread);
    r.bs = Size(4096);
    r.size = Size(64 << 20);
    r.direct = true;
    let mut w = FioJob::new("seqwrite-1m", Rw::Write);
    w.bs = Size(1 << 20);
    w.size = Size(256 << 20);
    w.direct = true;
    vec![r, w]
}

fn bench_fio(
    lab: &super::LabName,
    host: &str,
    secs: u64,
    rounds: u32,
    files: &[std::path::PathBuf],
) -> Result<ExitCode, CliError> {
    use crate::hostmode::{self, Figures};
    let l = Lab::open(&lab.name, &lab.root())?;
    let mount = l.lab_host(host)?.mount_point();
    let mut jobs = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).map_err(|e| CliError::Check(format!("read {}: {e}", f.display())))?;
        jobs.extend(
            miglab_workloads::fio::parse(&text)
                .map_err(|e| CliError::Check(format!("{}: {e}", f.display())))?,
        );
    }
    if jobs.is_empty() {
        jobs = default_fio_jobs();
    }
    let rounds = rounds.max(1);
    println!("engine vs fio on {host}'s CephFS mount (ceph-fuse), host mode, psync, {rounds} alternating rounds of {secs} s; medians\nof each tool, and median and range of the ratios of neighbouring rounds");
    println!("{:<14} {:<7} {:>10} {:>9} {:>9} {:>9}", "job", "tool", "IOPS", "MiB/s", "p50 us", "p99 us");
    for job in jobs {
        let mut job = job;
        job.runtime = None;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let w = miglab_workloads::job::Workload::Fio(job.clone());
            let (c, _) = hostmode::run(&w, &mount, Duration::from_secs(secs), 1, false)
                .map_err(|e| CliError::Check(e.to_string()))?;
            ours.push(hostmode::engine_figures(&c, &job, secs as f64));
            let dir = mount.join(format!("fio-{}", job.name));
            theirs.push(hostmode::run_fio(&job, &dir, secs).map_err(|e| CliError::Check(e.to_string()))?);
        }
        let row = |tool: &str, x: &Figures| {
            println!(
                "{:<14} {:<7} {:>10.0} {:>9.1} {:>9.0} {:>9.0}",
                job.name, tool, x.iops, x.mib_s, x.p50_us, x.p99_us
            )
        };
        row("miglab", &Figures::median(&ours));
        row("fio", &Figures::median(&theirs));
        // Ratios are taken per round, between neighbours in time, so that the machine's slow
        // drifts cancel; their median and range are shown.
        let paired: Vec<Figures> = ours.iter().zip(&theirs).map(|(e, f)| e.ratio_to(f)).collect();
        let (mid, lo, hi) = (Figures::median(&paired), Figures::min(&paired), Figures::max(&paired));
        println!(
            "{:<14} {:<7} {:>9.2}x {:>8.2}x {:>8.2}x {:>8.2}x",
            job.name, "ratio", mid.iops, mid.mib_s, mid.p50_us, mid.p99_us
        );
        println!(
            "{:<14} {:<7} {:>10} {:>9} {:>9} {:>9}",
            job.name,
            "range",
            format!("{:.2}-{:.2}", lo.iops, hi.iops),
            format!("{:.2}-{:.2}", lo.mib_s, hi.mib_s),
            format!("{:.2}-{:.2}", lo.p50_us, hi.p50_us),
            format!("{:.2}-{:.2}", lo.p99_us, hi.p99_us)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Feeds the collector a synthetic stream of `minutes` of host time at `rate` ops/s and prints
/// its memory before and after.
fn bench_collector(minutes: u64, rate: u64) {
    use crate::collect::Collector;
    use miglab_workloads::record::{Op, OpRecord, Record};
    use std::time::Instant;
    let (rss0, _) = rss_kib();
    let t0 = Instant::now();
    let mut c = Collector::new(t0);
    let per_ms = (rate / 1000).max(1);
    let mut chunk = Vec::with_capacity((per_ms as usize + 1) * 32);
    let mut g = 1_000_000_000u64;
    let start = Instant::now();
    let total_ms = minutes * 60_000;
    for ms in 0..total_ms {
        chunk.clear();
        for i in 0..per_ms {
            let lat = 200_000 + (i * 7919 + ms) % 600_000;
            let op = OpRecord {
                op: Op::Read,
                flags: 0,
                job: 0,
                submit_ns: g - lat,
                complete_ns: g,
                bytes: 4096,
                status: 0,
            };
            chunk.extend_from_slice(&Record::Op(op).to_bytes());
            g += 1_000_000 / per_ms;
        }
        chunk.extend_from_slice(&Record::Heartbeat { seq: ms as u32, guest_ns: g }.to_bytes());
        c.feed(&chunk, t0 + Duration::from_millis(ms));
    }
    let (rss1, hwm) = rss_kib();
    let fed = start.elapsed();
    let r = c.finish(t0 + Duration::from_millis(total_ms));
    println!(
        "collector: {minutes} min at {rate} ops/s = {} records in {:.1} s; RSS {} MiB before, {} MiB after (peak {} MiB); series {} buckets, interval log {} KiB",
        r.records,
        fed.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
        hwm / 1024,
        r.series.len(),
        r.hlog.len() / 1024
    );
}
