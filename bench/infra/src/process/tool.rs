//! Short-lived tools (ip, tc, nft, ceph-mon --mkfs, fio, ...): run in their own process
//! group, fed on stdin if need be, killed with their whole group at a deadline.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use thiserror::Error;

/// The outcome of a short-lived tool (ip, tc, nft, ceph-mon --mkfs, ...).
#[derive(Debug)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug, Error)]
pub enum ToolError {
    #[error("could not run {program}: {source}; `miglab doctor` lists what is missing")]
    Spawn { program: String, source: std::io::Error },
    #[error("`{command}` did not finish within {timeout:.0?} and was killed")]
    TimedOut { command: String, timeout: Duration },
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed { command: String, status: String, stderr: String },
}

/// Runs a short-lived tool in its own process group, with a deadline after which the whole
/// group is killed. Non-zero exit is an error carrying stderr.
pub fn run_tool(cmd: &mut Command, timeout: Duration) -> Result<ToolOutput, ToolError> {
    run_tool_with_input(cmd, None, timeout)
}

/// Like [`run_tool`], feeding `input` to the tool's stdin (a script for `ip -batch -` or
/// `nft -f -`: no file anyone else could replace between writing and reading it).
pub fn run_tool_with_input(
    cmd: &mut Command,
    input: Option<&[u8]>,
    timeout: Duration,
) -> Result<ToolOutput, ToolError> {
    let command = describe(cmd);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|source| ToolError::Spawn { program, source })?;
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        let bytes = bytes.to_vec();
        // On a thread: a tool that does not read its input must not block us past the deadline.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    // Drain both pipes on threads so that a chatty tool cannot block on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut s);
            }
            s
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as Box<dyn Read + Send>));
    let start = Instant::now();
    let status = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status;
        }
        if start.elapsed() >= timeout {
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            tracing::warn!(%command, ?timeout, "tool timed out; its process group was killed");
            return Err(ToolError::TimedOut { command, timeout });
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    tracing::debug!(%command, %status, ms = start.elapsed().as_millis() as u64, "tool");
    if status.success() {
        Ok(ToolOutput { stdout, stderr })
    } else {
        Err(ToolError::Failed { command, status: status.to_string(), stderr: stderr.trim().to_string() })
    }
}

/// `program arg arg`, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_reads_its_input_from_stdin() {
        let out = run_tool_with_input(&mut Command::new("cat"), Some(b"script\n"), Duration::from_secs(5))
            .expect("cat");
        assert_eq!(out.stdout, "script\n");
    }

    #[test]
    fn a_tool_that_hangs_is_killed_at_its_deadline() {
        let e = run_tool(Command::new("sleep").arg("30"), Duration::from_millis(100)).expect_err("hangs");
        assert!(matches!(e, ToolError::TimedOut { .. }), "{e}");
        let e = run_tool(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]), Duration::from_secs(5))
            .expect_err("fails");
        assert!(e.to_string().contains("oops"), "{e}");
        let ok = run_tool(Command::new("echo").arg("hi"), Duration::from_secs(5)).expect("runs");
        assert_eq!(ok.stdout, "hi\n");
    }
}
