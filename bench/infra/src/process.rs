//! The one supervisor every child process of miglab belongs to.
//!
//! Each child runs in its own process group with its output appended to a log file, so that a
//! whole daemon (and anything it forks) can be signalled at once and nothing is inherited from
//! the terminal. Stopping is SIGTERM, a grace period, SIGKILL, and reaping with a deadline; a
//! process that survives all of that is an error, never silently ignored.
//!
//! Every child is also written to a [`Ledger`] (the lab's state file) the moment it exists, so
//! a later `miglab` can stop it by pid even after this one was killed. Records carry the
//! process start time, which protects against pid reuse.

mod tool;

pub use tool::{describe, run_tool, run_tool_with_input, ToolError, ToolOutput};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ProcessError {
    #[error("could not open the log {path} for {name}: {source}")]
    OpenLog { name: String, path: PathBuf, source: std::io::Error },
    #[error("could not open the network namespace {path} for {name}: {source}")]
    OpenNetns { name: String, path: PathBuf, source: std::io::Error },
    #[error("could not start {name} ({program}): {source}; `miglab doctor` lists what is missing")]
    Spawn { name: String, program: String, source: std::io::Error },
    #[error("could not signal {name} (pid {pid}) with {signal}: {source}")]
    Signal { name: String, pid: i32, signal: Signal, source: nix::Error },
    #[error("{name} (pid {pid}) still runs after SIGKILL and {waited:.1?}: pids {survivors:?} linger")]
    Lingering { name: String, pid: i32, waited: Duration, survivors: Vec<i32> },
    /// The process runs (or was stopped) but its record could not be written: a later
    /// `lab down` may not know of it.
    #[error("{name} (pid {pid}): the lab's state file could not record it ({source}); stop it with `kill -- -{pid}` if `lab down` leaves it")]
    Ledger { name: String, pid: i32, source: LedgerError },
}

/// When a process stops at teardown, relative to the others: guests first (virtiofsd holds
/// files open on the CephFS mounts), then clients, then the daemons that report their shutdown
/// to the monitor (an OSD whose monitor is gone waits 5 s for it), the monitor last.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Guest,
    #[default]
    Client,
    Daemon,
    Monitor,
}

impl Tier {
    pub const ORDER: [Tier; 4] = [Tier::Guest, Tier::Client, Tier::Daemon, Tier::Monitor];
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub name: String,
    pub tier: Tier,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// Enter this network namespace (only the network one: mounts stay shared) before exec.
    pub netns: Option<PathBuf>,
    pub log: PathBuf,
    /// stdin and stdout are pipes (taken with [`Supervisor::take_pipes`]) instead of null/log.
    pub piped: bool,
}

impl ProcessSpec {
    pub fn new(name: impl Into<String>, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            tier: Tier::default(),
            program: program.into(),
            args: Vec::new(),
            netns: None,
            log: log.into(),
            piped: false,
        }
    }

    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = tier;
        self
    }

    pub fn piped(mut self) -> Self {
        self.piped = true;
        self
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn in_netns(mut self, path: Option<PathBuf>) -> Self {
        self.netns = path;
        self
    }

    fn command_line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }
}

/// A started process, as it is remembered in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    pub name: String,
    pub pid: i32,
    /// `starttime` from /proc/<pid>/stat: a pid with another start time is somebody else.
    pub start_ticks: u64,
    pub log: PathBuf,
    #[serde(default)]
    pub tier: Tier,
}

/// Where started and ended processes are written down (the lab's state file).
pub trait Ledger: Send + Sync {
    fn started(&self, rec: &ProcRecord) -> Result<(), LedgerError>;
    fn ended(&self, rec: &ProcRecord) -> Result<(), LedgerError>;
}

/// A ledger could not write a record down.
#[derive(Debug, Error)]
#[error("{0}")]
pub struct LedgerError(pub String);

/// Timeouts of the supervisor: configuration, not constants in code.
#[derive(Debug, Clone, Copy)]
pub struct StopPolicy {
    pub grace: Duration,
    pub reap: Duration,
}

impl Default for StopPolicy {
    fn default() -> Self {
        Self { grace: Duration::from_secs(5), reap: Duration::from_secs(5) }
    }
}

pub struct Supervisor {
    policy: StopPolicy,
    children: Mutex<HashMap<i32, Child>>,
    ledger: Option<Arc<dyn Ledger>>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Supervisor {
    pub fn new(policy: StopPolicy, ledger: Option<Arc<dyn Ledger>>) -> Self {
        Self { policy, children: Mutex::new(HashMap::new()), ledger }
    }

    /// Starts `spec` in its own process group, output appended to its log.
    pub fn spawn(&self, spec: &ProcessSpec) -> Result<ProcRecord, ProcessError> {
        let mut log = OpenOptions::new().create(true).append(true).open(&spec.log).map_err(|source| {
            ProcessError::OpenLog { name: spec.name.clone(), path: spec.log.clone(), source }
        })?;
        // A header separates restarts of the same daemon in one log.
        let _ = writeln!(log, "==== miglab: {} starts: {}", spec.name, spec.command_line());
        let stderr = log.try_clone().map_err(|source| ProcessError::OpenLog {
            name: spec.name.clone(),
            path: spec.log.clone(),
            source,
        })?;
        let mut cmd = Command::new(&spec.program);
        cmd.args(&spec.args).stderr(Stdio::from(stderr)).process_group(0);
        if spec.piped {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stdout(Stdio::from(log));
        }
        if let Some(ns) = &spec.netns {
            enter_netns(&mut cmd, ns).map_err(|source| ProcessError::OpenNetns {
                name: spec.name.clone(),
                path: ns.clone(),
                source,
            })?;
        }
        let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
            name: spec.name.clone(),
            program: spec.program.display().to_string(),
            source,
        })?;
        let pid = child.id() as i32;
        let rec = ProcRecord {
            name: spec.name.clone(),
            pid,
            start_ticks: proc_stat(pid).map(|s| s.start_ticks).unwrap_or(0),
            log: spec.log.clone(),
            tier: spec.tier,
        };
        self.lock().insert(pid, child);
        tracing::info!(name = %rec.name, pid, log = %rec.log.display(), "started");
        tracing::debug!(name = %rec.name, command = %spec.command_line(), "command line");
        if let Some(l) = &self.ledger {
            if let Err(source) = l.started(&rec) {
                // Unrecorded, it could outlive us: stop it now rather than leak it.
                let _ = self.stop_group(&rec);
                return Err(ProcessError::Ledger { name: rec.name.clone(), pid, source });
            }
        }
        Ok(rec)
    }

    /// The pipes of a child started with [`ProcessSpec::piped`].
    pub fn take_pipes(
        &self,
        rec: &ProcRecord,
    ) -> Option<(std::process::ChildStdin, std::process::ChildStdout)> {
        let mut children = self.lock();
        let child = children.get_mut(&rec.pid)?;
        Some((child.stdin.take()?, child.stdout.take()?))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Child>> {
        // A poisoned map still holds valid children; keep using it.
        self.children.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Reaps our own child if it has exited; returns its exit description.
    fn reap(&self, pid: i32) -> Option<String> {
        let mut children = self.lock();
        let child = children.get_mut(&pid)?;
        match child.try_wait() {
            Ok(Some(status)) => {
                children.remove(&pid);
                Some(status.to_string())
            }
            _ => None,
        }
    }

    /// `Some(description)` once the process has exited (reaping it if it is ours).
    pub fn exit_status(&self, rec: &ProcRecord) -> Option<String> {
        if let Some(s) = self.reap(rec.pid) {
            return Some(s);
        }
        if is_alive(rec) {
            None
        } else {
            Some("exited".to_string())
        }
    }

    /// Sends `signal` to the whole process group of `rec`, if it is still the same process.
    pub fn signal(&self, rec: &ProcRecord, signal: Signal) -> Result<(), ProcessError> {
        if !is_alive(rec) {
            return Ok(());
        }
        tracing::info!(name = %rec.name, pid = rec.pid, ?signal, "signal");
        match killpg(Pid::from_raw(rec.pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(ProcessError::Signal { name: rec.name.clone(), pid: rec.pid, signal, source }),
        }
    }

    /// SIGTERM → grace → SIGKILL → reap with a deadline. Errors if anything of the group lingers.
    pub fn stop(&self, rec: &ProcRecord) -> Result<(), ProcessError> {
        tracing::info!(name = %rec.name, pid = rec.pid, "stopping");
        self.stop_group(rec)?;
        if let Some(l) = &self.ledger {
            l.ended(rec).map_err(|source| ProcessError::Ledger {
                name: rec.name.clone(),
                pid: rec.pid,
                source,
            })?;
        }
        Ok(())
    }

    fn stop_group(&self, rec: &ProcRecord) -> Result<(), ProcessError> {
        let pgid = rec.pid;
        let gone = |s: &Self| {
            s.reap(pgid);
            !is_alive(rec) && !group_exists(pgid)
        };
        if gone(self) {
            return Ok(());
        }
        self.signal_group(rec, Signal::SIGTERM)?;
        // A frozen (SIGSTOPped) process only acts on SIGTERM once it runs again.
        self.signal_group(rec, Signal::SIGCONT)?;
        if poll(self.policy.grace, || gone(self)) {
            return Ok(());
        }
        self.signal_group(rec, Signal::SIGKILL)?;
        if poll(self.policy.reap, || gone(self)) {
            return Ok(());
        }
        Err(ProcessError::Lingering {
            name: rec.name.clone(),
            pid: rec.pid,
            waited: self.policy.grace + self.policy.reap,
            survivors: group_members(pgid),
        })
    }

    fn signal_group(&self, rec: &ProcRecord, signal: Signal) -> Result<(), ProcessError> {
        // The group may outlive its leader, so this does not check the leader's identity.
        if !group_exists(rec.pid) && !is_alive(rec) {
            return Ok(());
        }
        match killpg(Pid::from_raw(rec.pid), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(source) => Err(ProcessError::Signal { name: rec.name.clone(), pid: rec.pid, signal, source }),
        }
    }
}

/// Makes `cmd` enter the network namespace at `path` (and only that one: the mount namespace
/// stays shared, so FUSE mounts made inside remain visible to everyone) before exec.
pub fn enter_netns(cmd: &mut Command, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    if !path.exists() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, "no such network namespace"));
    }
    let cpath = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: open, setns and close are async-signal-safe syscalls; cpath is owned by the
    // closure and outlives the fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(cpath.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let r = libc::setns(fd, libc::CLONE_NEWNET);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if r != 0 {
                return Err(err);
            }
            Ok(())
        });
    }
    Ok(())
}

fn poll(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The fields of /proc/<pid>/stat miglab needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub start_ticks: u64,
    /// CPU time used, user and system, in clock ticks (`utime` + `stime`).
    pub cpu_ticks: u64,
}

pub fn parse_stat(text: &str) -> Option<ProcStat> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
        cpu_ticks: fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?,
    })
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// The CPU time the processes of `recs` that are still themselves have used, in ms (None when
/// none could be read).
pub fn cpu_ms(recs: &[ProcRecord]) -> Option<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let ticks: Vec<u64> = recs.iter().filter_map(own_stat).map(|s| s.cpu_ticks).collect();
    (!ticks.is_empty()).then(|| ticks.iter().sum::<u64>() as f64 * 1e3 / hz)
}

/// The stat of the process `rec` names, if its pid is still that process (not a reused pid).
fn own_stat(rec: &ProcRecord) -> Option<ProcStat> {
    proc_stat(rec.pid).filter(|s| rec.start_ticks == 0 || s.start_ticks == rec.start_ticks)
}

/// Whether the process `rec` names still exists (zombies count as gone).
pub fn is_alive(rec: &ProcRecord) -> bool {
    own_stat(rec).is_some_and(|s| s.state != 'Z')
}

/// Whether any live process is in group `pgid`. `kill(-pgid, 0)` is exact where a scan of
/// /proc can miss entries while processes come and go; a group of only zombies is gone.
pub fn group_exists(pgid: i32) -> bool {
    match killpg(Pid::from_raw(pgid), None) {
        Err(nix::Error::ESRCH) => false,
        _ => {
            let members = std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
                .filter_map(|pid| proc_stat(pid).filter(|s| s.pgrp == pgid))
                .collect::<Vec<_>>();
            members.is_empty() || members.iter().any(|s| s.state != 'Z')
        }
    }
}

/// Live (non-zombie) members of process group `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| matches!(proc_stat(pid), Some(s) if s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

/// Resident memory of a process in KiB.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The last `lines` lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    // Ceph doubles the newlines it writes to stderr; blank lines carry nothing.
    // miglab's own start headers (a whole command line) are noise in an error message.
    let all: Vec<&str> =
        text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("==== miglab:")).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_a_hostile_command_name() {
        let line = "4242 (a) b (c)) S 1 4240 4240 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_stat(line).expect("parses");
        assert_eq!(s, ProcStat { state: 'S', pgrp: 4240, start_ticks: 987654, cpu_ticks: 3 });
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.log");
        std::fs::write(&p, "1\n2\n3\n4\n").expect("write");
        assert_eq!(log_tail(&p, 2), "3\n4");
        assert!(log_tail(&dir.path().join("none"), 2).contains("no log"));
    }

    struct Book(Mutex<Vec<String>>);
    impl Ledger for Book {
        fn started(&self, rec: &ProcRecord) -> Result<(), LedgerError> {
            self.0.lock().expect("book").push(format!("+{}", rec.name));
            Ok(())
        }
        fn ended(&self, rec: &ProcRecord) -> Result<(), LedgerError> {
            self.0.lock().expect("book").push(format!("-{}", rec.name));
            Ok(())
        }
    }

    struct Broken;
    impl Ledger for Broken {
        fn started(&self, _: &ProcRecord) -> Result<(), LedgerError> {
            Err(LedgerError("disk full".into()))
        }
        fn ended(&self, _: &ProcRecord) -> Result<(), LedgerError> {
            Err(LedgerError("disk full".into()))
        }
    }

    /// A process whose record cannot be written is stopped again and the error says so.
    #[test]
    fn a_ledger_that_cannot_write_is_an_error_and_leaks_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sup = Supervisor::new(StopPolicy::default(), Some(Arc::new(Broken)));
        let e = sup
            .spawn(&ProcessSpec::new("sleeper", "/bin/sleep", dir.path().join("s.log")).arg("30"))
            .expect_err("unrecorded");
        let ProcessError::Ledger { pid, .. } = e else { panic!("{e}") };
        assert!(!group_exists(pid), "the unrecorded process was stopped");
        assert!(e.to_string().contains("disk full"));
    }

    /// A child that ignores SIGTERM (and has a grandchild that does too) is killed after the
    /// grace period, the whole group is reaped, and the ledger hears of both ends.
    #[test]
    fn escalates_to_sigkill_on_a_child_that_ignores_sigterm() {
        let dir = tempfile::tempdir().expect("tempdir");
        let book = Arc::new(Book(Mutex::new(Vec::new())));
        let policy = StopPolicy { grace: Duration::from_millis(300), reap: Duration::from_secs(5) };
        let sup = Supervisor::new(policy, Some(book.clone()));
        let spec = ProcessSpec::new("stubborn", "/bin/sh", dir.path().join("stubborn.log"))
            .arg("-c")
            .arg("trap '' TERM; sh -c \"trap '' TERM; echo grandchild; sleep 30\" & echo ready; wait");
        let rec = sup.spawn(&spec).expect("spawn");
        assert!(poll(Duration::from_secs(5), || log_tail(&rec.log, 5).contains("grandchild")));
        assert!(
            poll(Duration::from_secs(5), || group_members(rec.pid).len() >= 2),
            "child and grandchild share the group"
        );

        let start = Instant::now();
        sup.stop(&rec).expect("stopped");
        let took = start.elapsed();
        assert!(took >= policy.grace, "SIGTERM alone must not have stopped it ({took:?})");
        assert!(!is_alive(&rec));
        assert!(!group_exists(rec.pid), "grandchild reaped too");
        assert_eq!(*book.0.lock().expect("book"), vec!["+stubborn", "-stubborn"]);
        let log = std::fs::read_to_string(&rec.log).expect("log");
        assert!(log.contains("miglab: stubborn starts"));
    }

    #[test]
    fn a_polite_child_stops_within_the_grace_period() {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy = StopPolicy { grace: Duration::from_secs(10), reap: Duration::from_secs(5) };
        let sup = Supervisor::new(policy, None);
        let rec = sup
            .spawn(&ProcessSpec::new("sleeper", "/bin/sleep", dir.path().join("s.log")).arg("30"))
            .expect("spawn");
        let start = Instant::now();
        sup.stop(&rec).expect("stopped");
        assert!(start.elapsed() < policy.grace);
        assert_eq!(sup.exit_status(&rec).as_deref(), Some("exited"));
    }

    #[test]
    fn a_missing_program_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sup = Supervisor::new(StopPolicy::default(), None);
        let err = sup
            .spawn(&ProcessSpec::new("ghost", "/nonexistent/ceph-ghost", dir.path().join("g.log")))
            .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("/nonexistent/ceph-ghost") && msg.contains("miglab doctor"), "{msg}");
    }
}
