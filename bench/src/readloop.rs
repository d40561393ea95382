//! The seed's workload, driven from the host: a file on CephFS that the guest reads in a loop,
//! and the check that the loop went on across a migration.

use miglab_infra::topology::Host;
use miglab_infra::vm::{Vm, VmError};
use miglab_workloads::control::{Command, Status};
use miglab_workloads::job::{ReadLoopJob, Workload};
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
