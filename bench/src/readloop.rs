//! The seed's workload, driven from the host: a file on CephFS that the guest reads in a loop,
//! the check that the loop went on across a migration, and `miglab migrate`'s hops with it.

use crate::migration::{self, Hop, MigrationError, MigrationOptions};
use crate::observe::Bus;
use miglab_infra::topology::{next_host, Host, Site};
use miglab_infra::vm::{Vm, VmError};
use miglab_model::{MigrationRecord, Outcome};
use miglab_workloads::control::{Command, Status};
use miglab_workloads::job::{ReadLoopJob, Workload};
use std::sync::Arc;
use std::time::Duration;

/// The file the read loop reads, relative to CephFS's root, and what it holds.
pub const HELLO_FILE: &str = "miglab/hello";
pub const HELLO_TEXT: &str = "Hello world\n";

const AGENT_TIMEOUT: Duration = Duration::from_secs(10);

/// The seed's job: [`HELLO_TEXT`] in [`HELLO_FILE`].
pub fn hello_job() -> ReadLoopJob {
    ReadLoopJob { path: HELLO_FILE.into(), content: HELLO_TEXT.into(), pause_us: 0, runtime: None }
}

/// Writes the file a read-loop job reads, through `host`'s CephFS mount.
pub fn prepare(host: &dyn Host, job: &ReadLoopJob) -> Result<(), VmError> {
    let path = host.mount_point().join(&job.path);
    host.write(&path, job.content.as_bytes()).map_err(|source| VmError::Io {
        what: format!("write {} on {}", path.display(), host.name()),
        source,
    })
}

/// Writes the seed's file through `host`'s CephFS mount.
pub fn write_hello(host: &dyn Host) -> Result<(), VmError> {
    prepare(host, &hello_job())
}

/// Starts the read loop in the guest.
pub async fn start_read_loop(vm: &mut Vm) -> Result<(), VmError> {
    let cmd = Command::Start { workload: Workload::ReadLoop(hello_job()), seed: 0, nonce: 0 };
    vm.control.request(cmd, AGENT_TIMEOUT).await?;
    Ok(())
}

/// The read loop's counters, now.
pub async fn status(vm: &mut Vm) -> Result<Status, VmError> {
    Ok(vm.control.status(AGENT_TIMEOUT).await?)
}

/// The read loop across a hop: it must have gone on, without errors, in the same boot.
pub fn check_continuity(before: &Status, after: &Status) -> Result<(), String> {
    if after.boot_id != before.boot_id {
        return Err(format!("the guest rebooted (boot id {} became {})", before.boot_id, after.boot_id));
    }
    if after.ops <= before.ops {
        return Err(format!(
            "the read loop made no progress ({} reads before, {} after)",
            before.ops, after.ops
        ));
    }
    if after.errors != before.errors || after.mismatches != before.mismatches {
        return Err(format!(
            "the read loop had {} errors and {} mismatched reads: {}",
            after.errors - before.errors,
            after.mismatches - before.mismatches,
            after.last_error.as_deref().unwrap_or("?")
        ));
    }
    Ok(())
}

/// One hop of `miglab migrate`, and what the read loop did across it.
#[derive(Debug)]
pub struct HopSeen {
    pub record: MigrationRecord,
    /// Reads the loop completed between just before the hop and just after it.
    pub reads: u64,
    pub continuity: Result<(), String>,
}

impl HopSeen {
    /// What went wrong in this hop, one line each: a migration that did not complete, a read
    /// loop that did not go on.
    pub fn problems(&self) -> Vec<String> {
        let n = self.record.hop;
        let mut p = Vec::new();
        if let Err(e) = &self.continuity {
            p.push(format!("hop {n}: {e}"));
        }
        match &self.record.outcome {
            Outcome::Completed => {}
            Outcome::Failed { error, .. } => p.push(format!("hop {n}: migration failed: {error}")),
            Outcome::TimedOut { after_ms, .. } => p.push(format!("hop {n}: cancelled after {after_ms} ms")),
            Outcome::Unsupported { error } => p.push(format!("hop {n}: refused by QEMU: {error}")),
            Outcome::NotConverged { after_ms, .. } => {
                p.push(format!("hop {n}: not converged, cancelled after {after_ms} ms"))
            }
        }
        p
    }
}

/// `count` hops of `vm` from host to host (the read loop started if it is not running), each
/// told to `each` as it ends.
pub async fn hops(
    site: &Arc<dyn Site>,
    bus: &Bus,
    vm: &mut Vm,
    opts: &MigrationOptions,
    count: u32,
    mut each: impl FnMut(&HopSeen),
) -> Result<Vec<HopSeen>, MigrationError> {
    if !status(vm).await?.running {
        start_read_loop(vm).await?;
    }
    let hosts = site.host_names();
    let mut seen = Vec::new();
    for n in 1..=count {
        let before = status(vm).await?;
        let to = next_host(&hosts, vm.host());
        let record = migration::migrate(&Hop::new(site, bus, None, n), vm, &to, opts).await?;
        // Let the guest run a little on its new host before judging the read loop.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let after = status(vm).await?;
        let hop =
            HopSeen { record, reads: after.ops - before.ops, continuity: check_continuity(&before, &after) };
        each(&hop);
        seen.push(hop);
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuity_needs_progress_no_errors_and_the_same_boot() {
        let s = |boot: &str, ops, errors| Status { boot_id: boot.into(), ops, errors, ..Status::default() };
        assert!(check_continuity(&s("a", 10, 0), &s("a", 20, 0)).is_ok());
        assert!(check_continuity(&s("a", 10, 0), &s("a", 10, 0))
            .expect_err("stalled")
            .contains("no progress"));
        assert!(check_continuity(&s("a", 10, 0), &s("a", 20, 1)).expect_err("errors").contains("1 errors"));
        assert!(check_continuity(&s("a", 10, 0), &s("b", 20, 0)).expect_err("reboot").contains("rebooted"));
    }
}
