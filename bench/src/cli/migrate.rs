//! `miglab migrate`: hops of the running VM, a table of QEMU's figures per hop, and the read
//! loop checked across each.

use super::vm::open_site;
use super::{runtime, CliError, MigrateArgs};
use crate::clock::RunClock;
use crate::exit::Finished;
use crate::migration::MigrationOptions;
use crate::observe::Bus;
use crate::readloop::{self, HopSeen};
use miglab_infra::vm::{ledger, Vm, VmError};
use miglab_model::{MigrationParams, MigrationRecord, Outcome, Tuning};
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
            postcopy: false,
            tuning: Tuning { multifd_channels: m.multifd_channels, ..Tuning::default() },
        },
        timeout: Duration::from_secs(m.timeout),
        ..MigrationOptions::default()
    };
    runtime()?.block_on(async {
        let rec = ledger::current(site.as_ref(), &m.vm.vm).ok_or_else(|| VmError::NoVm(m.vm.vm.clone()))?;
        let mut vm = Vm::attach(&site, &rec).await?;
        let bus = Bus::new(RunClock::start());
        if !m.json {
            println!("{}", hop_header());
        }
        let seen = readloop::hops(&site, &bus, &mut vm, &opts, m.hops, |h| {
            if !m.json {
                println!("{}", hop_row(&h.record, h.reads, &h.continuity));
            }
        })
        .await;
        // The VM goes on running for the next command, whatever happened here.
        vm.release();
        let seen = seen?;
        if m.json {
            let records: Vec<&MigrationRecord> = seen.iter().map(|h| &h.record).collect();
            println!("{}", serde_json::to_string_pretty(&records).unwrap_or_default());
        }
        let problems: Vec<String> = seen.iter().flat_map(HopSeen::problems).collect();
        if problems.is_empty() {
            Ok(Finished::Clean)
        } else {
            Err(CliError::Problems(problems))
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

pub fn hop_row(r: &MigrationRecord, reads: u64, continuity: &Result<(), String>) -> String {
    let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let outcome = match &r.outcome {
        Outcome::Completed => "completed",
        Outcome::Failed { .. } => "FAILED",
        Outcome::TimedOut { .. } => "TIMED OUT",
        Outcome::Unsupported { .. } => "REFUSED",
        Outcome::NotConverged { .. } => "NOT CONVERGED",
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
