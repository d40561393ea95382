//! The lab's admin channel to Ceph: one persistent librados connection (a small Python helper
//! using the distribution's `rados` binding) fed many commands, instead of one `ceph` process
//! per command. Readiness polling every 100 ms is only affordable this way.

use super::ceph::Status;
use crate::process::{ProcRecord, ProcessError, ProcessSpec, Supervisor};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::ChildStdin;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;
use thiserror::Error;

const SCRIPT: &str = include_str!("admin.py");

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("could not write the admin helper to {path}: {source}")]
    WriteScript { path: String, source: std::io::Error },
    #[error(transparent)]
    Start(#[from] ProcessError),
    #[error("the admin helper has no pipes")]
    NoPipes,
    #[error("could not connect to the monitor: {0}")]
    Connect(String),
    #[error("the admin helper did not answer `{command}` within {timeout:.0?}")]
    TimedOut { command: String, timeout: Duration },
    #[error("the admin helper exited (its log: {log})")]
    Gone { log: String },
    #[error("the admin helper sent something unreadable: {0}")]
    Protocol(String),
    #[error("`{command}` failed ({rc}): {err}")]
    Command { command: String, rc: i64, err: String },
    #[error("could not parse `ceph status`: {0}")]
    Status(#[from] serde_json::Error),
}

#[derive(Debug)]
pub struct Admin {
    rec: ProcRecord,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    timeout: Duration,
}

impl Admin {
    /// Starts the helper and waits (up to `timeout`) for it to reach the monitor.
    pub fn connect(
        sup: &Supervisor,
        python: &Path,
        dir: &Path,
        conf: &Path,
        keyring: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Result<Self, AdminError> {
        let script = dir.join("admin.py");
        std::fs::write(&script, SCRIPT)
            .map_err(|source| AdminError::WriteScript { path: script.display().to_string(), source })?;
        let secs = timeout.as_secs().max(1).to_string();
        let spec = ProcessSpec::new("admin", python, log)
            .args([script.as_os_str(), conf.as_os_str(), keyring.as_os_str()])
            .arg(&secs)
            .piped();
        let rec = sup.spawn(&spec)?;
        let (stdin, stdout) = sup.take_pipes(&rec).ok_or(AdminError::NoPipes)?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("ceph-admin".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .map_err(|source| AdminError::WriteScript { path: "reader thread".into(), source })?;
        let mut admin = Self { rec, stdin: Some(stdin), lines, timeout };
        // The first reply says whether the connection was made (librados enforces `timeout`;
        // the extra seconds cover the Python start-up).
        let first = admin.receive("connect", timeout + Duration::from_secs(5))?;
        if first.rc != 0 {
            return Err(AdminError::Connect(first.err));
        }
        Ok(admin)
    }

    fn receive(&mut self, command: &str, timeout: Duration) -> Result<Reply, AdminError> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => serde_json::from_str(&line).map_err(|_| AdminError::Protocol(line)),
            Err(RecvTimeoutError::Timeout) => {
                Err(AdminError::TimedOut { command: command.to_string(), timeout })
            }
            Err(RecvTimeoutError::Disconnected) => {
                Err(AdminError::Gone { log: self.rec.log.display().to_string() })
            }
        }
    }

    /// Sends one command (`{"prefix": ..., ...}`; `_target` may name `mgr` or `osd.N`) and
    /// returns its output.
    pub fn command(&mut self, cmd: Value) -> Result<String, AdminError> {
        let text = cmd.to_string();
        let stdin =
            self.stdin.as_mut().ok_or(AdminError::Gone { log: self.rec.log.display().to_string() })?;
        writeln!(stdin, "{text}")
            .and_then(|_| stdin.flush())
            .map_err(|_| AdminError::Gone { log: self.rec.log.display().to_string() })?;
        let reply = self.receive(&text, self.timeout + Duration::from_secs(5))?;
        if reply.rc != 0 {
            return Err(AdminError::Command { command: text, rc: reply.rc, err: reply.err });
        }
        Ok(reply.out)
    }

    /// Like [`Admin::command`] for a monitor command given as prefix and arguments.
    pub fn mon(&mut self, prefix: &str, args: Value) -> Result<String, AdminError> {
        let mut cmd = json!({ "prefix": prefix, "format": "json" });
        if let (Some(c), Value::Object(a)) = (cmd.as_object_mut(), args) {
            c.extend(a);
        }
        self.command(cmd)
    }

    pub fn status(&mut self) -> Result<Status, AdminError> {
        Ok(Status::parse(&self.mon("status", json!({}))?)?)
    }

    /// The raw `ceph status -f json`, for fixtures and error messages.
    pub fn status_json(&mut self) -> Result<String, AdminError> {
        self.mon("status", json!({}))
    }

    /// Closes stdin (the helper exits by itself) and stops it through the supervisor.
    pub fn close(mut self, sup: &Supervisor) -> Result<(), ProcessError> {
        self.stdin.take();
        sup.stop(&self.rec)
    }
}

#[derive(Debug, serde::Deserialize)]
struct Reply {
    rc: i64,
    out: String,
    err: String,
}
