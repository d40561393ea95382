//! `miglab migrate`: hops of the running VM, a table of QEMU's figures per hop, and the read
//! loop checked across each.

use super::vm::open_site;
use super::{runtime, CliError, MigrateArgs};
use crate::clock::RunClock;
use crate::exit::Finished;
use crate::migration::{self, Hop, MigrationOptions};
use crate::observe::Bus;
use crate::readloop::{self, check_continuity, start_read_loop};
use miglab_infra::topology::next_host;
use miglab_infra::vm::{ledger, Vm, VmError};
use miglab_reports::{MigrationParams, MigrationRecord, Outcome};
use std::time::Duration;

pub(super) fn migrate_cmd(m: MigrateArgs) -> Result<Finished, CliError> {
    if m.hops == 0 || m.timeout == 0 {
        return Err(CliError::Args("--hops and --timeout must be at least 1".into()));
    }
    let site = open_site(&m.vm)?;
    let opts = MigrationOptions {
        params: MigrationParams {
            downtime_limit_ms: m.downtime_limit_ms,
            max_bandwidth: m.max_bandwidth,
            multifd_channels: m.multifd_channels,
        },
        timeout: Duration::from_secs(m.timeout),
        ..MigrationOptions::default()
    };
    let hosts = site.host_names();
    runtime()?.block_on(async {
        let rec = ledger::current(site.as_ref(), &m.vm.vm).ok_or_else(|| VmError::NoVm(m.vm.vm.clone()))?;
        let mut vm = Vm::attach(&site, &rec).await?;
        let bus = Bus::new(RunClock::start());
        let result = hops(&site, &bus, &mut vm, &hosts, &opts, &m).await;
        // The VM goes on running for the next command, whatever happened here.
        vm.release();
        result
    })
}

async fn hops(
    site: &std::sync::Arc<dyn miglab_infra::topology::Site>,
    bus: &Bus,
    vm: &mut Vm,
    hosts: &[String],
    opts: &MigrationOptions,
    m: &MigrateArgs,
) -> Result<Finished, CliError> {
    if !readloop::status(vm).await?.running {
        start_read_loop(vm).await?;
    }
    let mut records = Vec::new();
    let mut problems = Vec::new();
    if !m.json {
        println!("{}", hop_header());
    }
    for n in 1..=m.hops {
        let before = readloop::status(vm).await?;
        let to = next_host(hosts, vm.host());
        let hop = Hop::new(site, bus, None, n);
        let record = migration::migrate(&hop, vm, &to, opts).await?;
        // Let the guest run a little on its new host before judging the read loop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = readloop::status(vm).await?;
        let continuity = check_continuity(&before, &after);
        if !m.json {
            println!("{}", hop_row(&record, after.ops - before.ops, &continuity));
        }
        if let Err(e) = &continuity {
            problems.push(format!("hop {n}: {e}"));
        }
        match &record.outcome {
            Outcome::Completed => {}
            Outcome::Failed { error, .. } => problems.push(format!("hop {n}: migration failed: {error}")),
            Outcome::TimedOut { after_ms, .. } => {
                problems.push(format!("hop {n}: cancelled after {after_ms} ms"))
            }
        }
        records.push(record);
    }
    if m.json {
        println!("{}", serde_json::to_string_pretty(&records).unwrap_or_default());
    }
    if problems.is_empty() {
        Ok(Finished::Clean)
    } else {
        Err(CliError::Problems(problems))
    }
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

pub fn hop_row(r: &MigrationRecord, reads: u64, continuity: &Result<(), String>) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let outcome = match &r.outcome {
        Outcome::Completed => "completed",
        Outcome::Failed { .. } => "FAILED",
        Outcome::TimedOut { .. } => "TIMED OUT",
    };
    format!(
        "{:>3}  {:<9} {:<10} {:>8} {:>9} {:>9} {:>8.0} {:>8.1} {:>6} {:>9}  {}",
        r.hop,
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
