//! A host reached over SSH: the system's `ssh` (so the user's config, agent and jump hosts
//! apply) through the `openssh` crate, one multiplexed connection per host; every command has
//! a deadline.

use openssh::{KnownHosts, Session, SessionBuilder};
use std::path::Path;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SshError {
    #[error("{host}: cannot connect over SSH to '{dest}': {why}. Check that `ssh{config} {dest} true` works without a password (a key, or the agent)")]
    Connect { host: String, dest: String, config: String, why: String },
    #[error("{host}: `{command}` did not finish within {timeout:?}")]
    Timeout { host: String, command: String, timeout: Duration },
    #[error("{host}: `{command}`: {why}")]
    Command { host: String, command: String, why: String },
}

/// One host's connection.
#[derive(Debug)]
pub struct SshHost {
    pub name: String,
    session: Session,
}

/// A host's clock against this machine's.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClockOffset {
    /// The host's clock minus ours, ms (within ± half the round trip).
    pub offset_ms: f64,
    pub rtt_ms: f64,
}

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl SshHost {
    /// Connects to `dest` (strict host key checking: a lab or a user's known_hosts says who the
    /// host is), with `config` as the SSH config if given.
    pub async fn connect(
        name: &str,
        dest: &str,
        config: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, SshError> {
        Self::connect_in(name, dest, config, timeout, None).await
    }

    /// [`SshHost::connect`], the connection's control socket below `control_dir`.
    pub async fn connect_in(
        name: &str,
        dest: &str,
        config: Option<&Path>,
        timeout: Duration,
        control_dir: Option<&Path>,
    ) -> Result<Self, SshError> {
        let mut b = SessionBuilder::default();
        if let Some(d) = control_dir {
            b.control_directory(d);
        }
        b.known_hosts_check(KnownHosts::Strict)
            .connect_timeout(timeout)
            .server_alive_interval(Duration::from_secs(5));
        if let Some(c) = config {
            b.config_file(c);
        }
        let err = |why: String| SshError::Connect {
            host: name.into(),
            dest: dest.into(),
            config: config.map(|c| format!(" -F {}", c.display())).unwrap_or_default(),
            why,
        };
        // The connection's own deadline is ssh's ConnectTimeout; this one covers the rest
        // (a host that accepts the TCP connection and then says nothing).
        let session = tokio::time::timeout(timeout + Duration::from_secs(5), b.connect(dest))
            .await
            .map_err(|_| err(format!("no answer within {timeout:?}")))?
            .map_err(|e| err(e.to_string()))?;
        Ok(Self { name: name.into(), session })
    }

    /// Runs `script` with `sh -c` on the host.
    pub async fn sh(&self, script: &str, timeout: Duration) -> Result<Output, SshError> {
        let mut cmd = self.session.command("sh");
        cmd.arg("-c").arg(script);
        let out = tokio::time::timeout(timeout, cmd.output())
            .await
            .map_err(|_| SshError::Timeout { host: self.name.clone(), command: script.into(), timeout })?
            .map_err(|e| SshError::Command {
                host: self.name.clone(),
                command: script.into(),
                why: e.to_string(),
            })?;
        Ok(Output {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// The host's clock minus this machine's, and the round trip it was measured over: the
    /// best of `rounds` exchanges with one shell kept open (so a round trip is the channel's,
    /// not the start of a command), the one with the shortest round trip bounding the error by
    /// half of it. Results never depend on synchronised clocks; this says how far apart they
    /// are.
    pub async fn clock_offset(&self, rounds: u32) -> Result<ClockOffset, SshError> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let what = "date +%s.%N (a shell kept open)";
        let err = |why: String| SshError::Command { host: self.name.clone(), command: what.into(), why };
        let mut cmd = self.session.command("sh");
        cmd.stdin(openssh::Stdio::piped()).stdout(openssh::Stdio::piped());
        let mut child = cmd.spawn().await.map_err(|e| err(e.to_string()))?;
        let mut stdin = child.stdin().take().ok_or_else(|| err("no stdin".into()))?;
        let stdout = child.stdout().take().ok_or_else(|| err("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let secs = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
        };
        let mut best: Option<ClockOffset> = None;
        for _ in 0..rounds.max(1) + 1 {
            let t0 = std::time::SystemTime::now();
            stdin.write_all(b"date +%s.%N\n").await.map_err(|e| err(e.to_string()))?;
            stdin.flush().await.map_err(|e| err(e.to_string()))?;
            let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
                .await
                .map_err(|_| err("no answer within 10 s".into()))?
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err("the shell ended".into()))?;
            let t1 = std::time::SystemTime::now();
            let remote: f64 = line.trim().parse().map_err(|_| err(format!("'{line}' is not a time")))?;
            let (a, b) = (secs(t0), secs(t1));
            let c = ClockOffset { offset_ms: (remote - (a + b) / 2.0) * 1e3, rtt_ms: (b - a) * 1e3 };
            if best.is_none_or(|x| c.rtt_ms < x.rtt_ms) {
                best = Some(c);
            }
        }
        drop(stdin);
        let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
        Ok(best.unwrap_or_default())
    }

    /// Leaves the connection running for `ssh -S`; returns its control socket. Whoever
    /// detaches ends it (`ssh -O exit`).
    pub fn detach(self) -> std::path::PathBuf {
        self.session.detach().0.into_path_buf()
    }

    pub async fn close(self) {
        let _ = self.session.close().await;
    }
}

/// Quotes `s` for a POSIX shell.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn quoting_survives_quotes_and_spaces() {
        assert_eq!(super::quote("a b"), "'a b'");
        assert_eq!(super::quote("it's"), r"'it'\''s'");
    }
}
