//! A client host reached over SSH, as a [`Host`]: every command goes through the one
//! multiplexed connection the `openssh` crate opened (`ssh -S <control socket>`), so a command
//! costs a channel, not a handshake, and each has a deadline.
//!
//! Processes started here are detached on the host (`setsid`, no terminal, output to a log): a
//! dropped connection does not end them. Each writes `<pid> <start time>` into the run
//! directory's `pids/` before anything else happens, so that `down --topology` finds them
//! with nothing but the host; the pid is a process group's (the wrapper that records the exit
//! status, and the program).

use super::ssh::quote;
use super::ExternalError;
use crate::process::{run_tool_with_input, ToolError};
use crate::topology::Host;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The deadline of a command that only looks (exists, cat, kill).
pub const QUICK: Duration = Duration::from_secs(15);

/// Whether the process group `$1` has a process that is not a zombie (a host's init may be
/// slow to reap, and a zombie is not running). Groups are signalled with `kill -SIG -pgid`:
/// dash's kill takes no `--`.
const ALIVE: &str =
    "alive() { ps -e -o pgid=,stat= | awk -v g=\"$1\" '$1==g && $2 !~ /^Z/ {f=1} END {exit !f}'; }";

#[derive(Debug, Clone)]
pub struct RemoteHost {
    pub name: String,
    /// The SSH destination.
    pub dest: String,
    /// The multiplexed connection's control socket.
    pub ctl: PathBuf,
    pub config: Option<PathBuf>,
    pub address: std::net::Ipv4Addr,
    /// CephFS below the directory miglab owns: what virtiofsd shares.
    pub mount: PathBuf,
    pub qemu: PathBuf,
    pub virtiofsd: PathBuf,
    /// This topology's run directory on the host (instances, logs, pid records).
    pub work: PathBuf,
    /// Where guest images are cached on the host, by hash (outlives `down`).
    pub images: PathBuf,
    /// Set once the master was gone and a new connection failed too: every later command of
    /// this process fails at once instead of waiting out another connect timeout (a run's
    /// cleanup of an unreachable host took ~28 s of them; `down --topology` is a new process
    /// and tries again).
    pub unreachable: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// What a command printed.
#[derive(Debug, Clone)]
pub struct Out {
    pub stdout: String,
}

impl RemoteHost {
    /// `ssh` through the connection, without a command yet.
    pub fn ssh(&self) -> Command {
        let mut c = Command::new(crate::paths::tool("ssh"));
        if let Some(f) = &self.config {
            c.arg("-F").arg(f);
        }
        // Without the master (it died), ssh connects anew: bounded, so that an unreachable
        // host fails a command in seconds.
        c.arg("-S").arg(&self.ctl).args([
            "-o",
            "ControlMaster=no",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
        ]);
        c
    }

    /// Runs `script` with `sh -c` on the host; a non-zero exit is an error with its stderr.
    pub fn sh(&self, script: &str, timeout: Duration) -> Result<Out, ExternalError> {
        self.sh_with_input(script, None, timeout)
    }

    pub fn sh_with_input(
        &self,
        script: &str,
        input: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Out, ExternalError> {
        if self.is_unreachable() {
            return Err(ExternalError::ConnectionLost {
                host: self.name.clone(),
                why: "unreachable earlier in this run (no connection could be made)".into(),
            });
        }
        let mut c = self.ssh();
        c.arg(&self.dest).arg("--").arg(format!("sh -c {}", quote(script)));
        match run_tool_with_input(&mut c, input, timeout) {
            Ok(o) => Ok(Out { stdout: o.stdout.trim_end().to_string() }),
            Err(e) => Err(self.failure(script, e)),
        }
    }

    /// A failed command's error; a connection that is gone says so (ssh exits 255).
    fn failure(&self, script: &str, e: ToolError) -> ExternalError {
        let what = script.lines().next().unwrap_or_default().chars().take(120).collect::<String>();
        match e {
            ToolError::Failed { status, stderr, .. } if status.contains("255") && !self.connected() => {
                self.unreachable.store(true, std::sync::atomic::Ordering::SeqCst);
                ExternalError::ConnectionLost { host: self.name.clone(), why: stderr }
            }
            ToolError::Failed { stderr, status, .. } => {
                ExternalError::Remote { host: self.name.clone(), what, why: format!("{status}: {stderr}") }
            }
            e => ExternalError::Remote { host: self.name.clone(), what, why: e.to_string() },
        }
    }

    fn is_unreachable(&self) -> bool {
        self.unreachable.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the multiplexed connection still runs.
    pub fn connected(&self) -> bool {
        if self.is_unreachable() {
            return false;
        }
        let mut c = self.ssh();
        c.args(["-O", "check"]).arg(&self.dest);
        run_tool_with_input(&mut c, None, Duration::from_secs(5)).is_ok()
    }

    /// Ends the connection's master.
    pub fn disconnect(&self) {
        let mut c = self.ssh();
        c.args(["-O", "exit"]).arg(&self.dest);
        let _ = run_tool_with_input(&mut c, None, Duration::from_secs(5));
    }

    /// Forwards the host's unix socket `remote` to `local` on this machine.
    pub fn forward(&self, local: &Path, remote: &Path, cancel: bool) -> Result<(), ExternalError> {
        let mut c = self.ssh();
        c.args(["-O", if cancel { "cancel" } else { "forward" }, "-L"])
            .arg(format!("{}:{}", local.display(), remote.display()))
            .arg(&self.dest);
        run_tool_with_input(&mut c, None, QUICK).map(|_| ()).map_err(|e| ExternalError::Remote {
            host: self.name.clone(),
            what: format!("forward {} to {}", remote.display(), local.display()),
            why: e.to_string(),
        })
    }

    /// Where a process's pid record is.
    pub fn pid_file(&self, name: &str) -> PathBuf {
        self.work.join("pids").join(name.replace('/', "_"))
    }

    /// Starts `program args` detached, output appended to `log`; returns its process group
    /// and its start time.
    pub fn spawn(
        &self,
        name: &str,
        program: &Path,
        args: &[std::ffi::OsString],
        log: &Path,
    ) -> Result<(i32, u64), ExternalError> {
        let pids = self.pid_file(name);
        let mut cmd = format!("{} ", quote(&program.display().to_string()));
        for a in args {
            cmd.push_str(&quote(&a.to_string_lossy()));
            cmd.push(' ');
        }
        let log_q = quote(&log.display().to_string());
        let script = format!(
            "set -e\nmkdir -p \"$(dirname {log_q})\" \"$(dirname {pf})\"\nrm -f {log_q}.exit\ncd /\n\
             setsid sh -c '\"$@\" >>\"$0\" 2>&1 </dev/null; echo $? >\"$0.exit\"' {log_q} {cmd} >/dev/null 2>&1 </dev/null &\n\
             pid=$!\nst=$(sed 's/.*) //' /proc/$pid/stat | cut -d' ' -f20)\necho \"$pid $st\" >{pf}\necho \"$pid $st\"",
            pf = quote(&pids.display().to_string()),
        );
        let out = self.sh(&script, QUICK)?;
        let mut it = out.stdout.split_whitespace();
        let bad = || ExternalError::Remote {
            host: self.name.clone(),
            what: format!("start {name}"),
            why: format!("no pid in '{}'", out.stdout),
        };
        let pid = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let start = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        Ok((pid, start))
    }

    /// `Some(how)` once the process group has ended.
    pub fn exit_status(&self, pgid: i32, log: &Path) -> Result<Option<String>, ExternalError> {
        let exit = quote(&format!("{}.exit", log.display()));
        let script = format!(
            "{ALIVE}\nif alive {pgid}; then echo running; elif [ -f {exit} ]; then echo \"exited with status $(cat {exit})\"; else echo 'ended by a signal'; fi"
        );
        let out = self.sh(&script, QUICK)?;
        Ok(Some(out.stdout).filter(|s| s != "running"))
    }

    /// Signals the whole process group.
    pub fn signal(&self, pgid: i32, signal: &str) -> Result<(), ExternalError> {
        self.sh(&format!("{ALIVE}\n! alive {pgid} || kill -{signal} -{pgid}"), QUICK).map(|_| ())
    }

    /// SIGTERM, `grace`, SIGKILL; the pid record goes.
    pub fn stop(&self, name: &str, pgid: i32, grace: Duration) -> Result<(), ExternalError> {
        let tenths = (grace.as_millis() / 100).max(1);
        let script = format!(
            "{ALIVE}\nif alive {pgid}; then kill -CONT -{pgid} 2>/dev/null || true; kill -TERM -{pgid} 2>/dev/null || true\n\
             i=0; while alive {pgid} && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done\n\
             if alive {pgid}; then kill -KILL -{pgid} 2>/dev/null || true; sleep 0.2; fi; fi\n\
             if alive {pgid}; then echo 'still running after SIGKILL' >&2; exit 1; fi\n\
             rm -f {}",
            quote(&self.pid_file(name).display().to_string())
        );
        self.sh(&script, grace + QUICK).map(|_| ())
    }

    /// Ends every process recorded in the run directory and removes it; returns what it did.
    pub fn clean(&self, grace: Duration) -> Result<String, ExternalError> {
        let tenths = (grace.as_millis() / 100).max(1);
        let w = quote(&self.work.display().to_string());
        // A leader whose start time differs is someone else's process that got the pid.
        let script = format!(
            "{ALIVE}\nw={w}\nours() {{ [ ! -e /proc/$1 ] || [ \"$(sed 's/.*) //' /proc/$1/stat | cut -d' ' -f20)\" = \"$2\" ]; }}\n\
             each() {{ for f in \"$w\"/pids/*; do [ -f \"$f\" ] || continue; read pid st <\"$f\"; ours $pid $st && alive $pid && \"$@\" $pid; done; }}\n\
             term() {{ kill -CONT -$1 2>/dev/null; kill -TERM -$1 2>/dev/null; echo \"stopped process group $1\"; }}\n\
             kill9() {{ kill -KILL -$1 2>/dev/null; echo \"killed process group $1\"; }}\n\
             yes1() {{ echo $1; }}\n\
             each term\ni=0; while [ -n \"$(each yes1)\" ] && [ $i -lt {tenths} ]; do sleep 0.1; i=$((i+1)); done\n\
             each kill9\nsleep 0.2\nif [ -n \"$(each yes1)\" ]; then echo \"still running after SIGKILL: $(each yes1)\" >&2; exit 1; fi\n\
             rm -rf \"$w\"\necho \"removed $w\""
        );
        Ok(self.sh(&script, grace + QUICK)?.stdout)
    }
}

fn io_error(e: ExternalError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Host for RemoteHost {
    fn name(&self) -> &str {
        &self.name
    }
    fn address(&self) -> std::net::Ipv4Addr {
        self.address
    }
    fn mount_point(&self) -> PathBuf {
        self.mount.clone()
    }
    fn command(&self, program: &str) -> Command {
        let mut c = self.ssh();
        c.arg(&self.dest).arg("--").arg(program);
        c
    }
    fn netns_path(&self) -> Option<PathBuf> {
        None
    }
    fn remote(&self) -> bool {
        true
    }
    // The host's own builds (`run` refuses a choice of them with `--topology`).
    fn qemu(&self, _chosen: &Path) -> PathBuf {
        self.qemu.clone()
    }
    fn virtiofsd(&self, _chosen: &Path) -> PathBuf {
        self.virtiofsd.clone()
    }
    fn exists(&self, path: &Path) -> bool {
        self.sh(&format!("test -e {}", quote(&path.display().to_string())), QUICK).is_ok()
    }
    fn tail(&self, path: &Path, lines: usize) -> String {
        let p = quote(&path.display().to_string());
        match self.sh(&format!("tail -n {lines} {p}"), QUICK) {
            Ok(o) => o.stdout,
            Err(e) => format!("(no log on {}: {e})", self.name),
        }
    }
    fn open_files(&self, pid: i32) -> std::io::Result<miglab_model::OpenFiles> {
        // The process and its descendants (virtiofsd serves from a child in its sandbox).
        let script = format!(
            "count() {{ for f in /proc/$1/fdinfo/*; do sed -n 's/^flags:[[:space:]]*//p' \"$f\" 2>/dev/null; done; \
             for c in $(cat /proc/$1/task/*/children 2>/dev/null); do count $c; done; }}; \
             test -d /proc/{pid} && count {pid}"
        );
        let out = self.sh(&script, QUICK).map_err(io_error)?;
        Ok(miglab_model::OpenFiles::from_flags(out.stdout.lines()))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        let p = quote(&path.display().to_string());
        self.sh(&format!("cat {p}"), QUICK).map(|o| o.stdout.into_bytes()).map_err(io_error)
    }
    fn write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
        let p = quote(&path.display().to_string());
        self.sh_with_input(
            &format!("mkdir -p \"$(dirname {p})\" && cat >{p}.tmp && mv {p}.tmp {p}"),
            Some(data),
            QUICK,
        )
        .map(|_| ())
        .map_err(io_error)
    }
    fn make_dir(&self, path: &Path) -> std::io::Result<()> {
        let p = quote(&path.display().to_string());
        self.sh(&format!("mkdir -p {p}"), QUICK).map(|_| ()).map_err(io_error)
    }
    fn remove_all(&self, path: &Path) -> std::io::Result<()> {
        let p = quote(&path.display().to_string());
        self.sh(&format!("rm -rf {p}"), Duration::from_secs(60)).map(|_| ()).map_err(io_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host nothing answers for (a closed port on loopback, no master): the first command
    /// finds the connection lost, and every later one says so at once, without trying again.
    #[test]
    fn a_host_found_unreachable_fails_later_commands_at_once() {
        if crate::paths::find_tool("ssh").is_none() {
            eprintln!("skipped: no ssh client on this machine");
            return;
        }
        let dir = tempfile::tempdir().expect("tmp");
        // Port 1 on loopback: refused at once, as a dead host's port would be after a timeout.
        let h = RemoteHost {
            name: "gone".into(),
            dest: "ssh://nobody@127.0.0.1:1".into(),
            ctl: dir.path().join("master"),
            config: None,
            address: std::net::Ipv4Addr::LOCALHOST,
            mount: PathBuf::new(),
            qemu: PathBuf::new(),
            virtiofsd: PathBuf::new(),
            work: PathBuf::new(),
            images: PathBuf::new(),
            unreachable: Default::default(),
        };
        let first = h.sh("true", QUICK).expect_err("nothing answers");
        assert!(matches!(first, ExternalError::ConnectionLost { .. }), "{first}");
        let clone = h.clone();
        let again = clone.sh("true", QUICK).expect_err("still gone");
        assert!(again.to_string().contains("unreachable earlier in this run"), "{again}");
        assert!(!h.connected());
    }
}
