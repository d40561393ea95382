//! The control protocol: JSON lines over the `miglab.control` virtio-serial port. The host
//! sends [`Command`]s, the agent answers with [`Message`]s. Every command gets exactly one
//! answer; the agent also sends a `Hello` by itself once it has booted.

use crate::dirty::{DirtySpec, MemoryCheck};
use crate::job::Workload;
use crate::verify::VerifyReport;
use serde::{Deserialize, Serialize};

/// The virtio-serial port names, as given to QEMU and found by the agent in sysfs.
pub const CONTROL_PORT: &str = "miglab.control";
pub const RECORDS_PORT: &str = "miglab.records";
/// The virtio-fs tag under which the host's CephFS mount is shared.
pub const FS_TAG: &str = "cephfs";
/// Where the agent mounts it in the guest.
pub const GUEST_MOUNT: &str = "/mnt/cephfs";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
#[allow(clippy::large_enum_variant)] // a handful per run, never in a hot path
pub enum Command {
    /// Answered with `Hello` (the host may send it until the agent is up).
    Hello,
    /// Answered with `Status`.
    Status,
    /// Starts a workload (files are laid out first; `Status.laying_out` says when that is
    /// done). Op records and heartbeats flow on the records port.
    Start {
        workload: Workload,
        #[serde(default)]
        seed: u64,
        /// Random per run: with the seed, it marks every block this run writes.
        #[serde(default)]
        nonce: u64,
    },
    /// Starts the memory-dirtying load beside the workload (answered with `Ok` once its
    /// working set is filled).
    Dirty {
        spec: DirtySpec,
        #[serde(default)]
        nonce: u64,
    },
    /// A switch-over is behind: the dirtying load counts its rewrites from here (answered with
    /// `Ok`).
    MemoryMark,
    /// Reads every page of the dirtying load back (answered with `Memory`).
    MemoryCheck,
    /// Stops the workload, then reads back everything it wrote (answered with `Verify`).
    Verify,
    /// Stops the running workload (answered with the final `Status`).
    Stop,
    /// Powers the guest off (answered with `Ok` first).
    Poweroff,
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Hello => "hello",
            Command::Status => "status",
            Command::Start { .. } => "start",
            Command::Dirty { .. } => "dirty",
            Command::MemoryMark => "memory-mark",
            Command::MemoryCheck => "memory-check",
            Command::Verify => "verify",
            Command::Stop => "stop",
            Command::Poweroff => "poweroff",
        }
    }
}

/// The control protocol's version: bumped when a message changes shape.
pub const PROTOCOL: u32 = 4;

/// The agent's build: a hash of this crate's sources (see `build.rs`), the same in the agent and
/// in the miglab built from the same tree.
pub const AGENT_BUILD: &str = env!("MIGLAB_AGENT_BUILD");

/// What the agent knows about itself, sent once it has booted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    pub agent_version: String,
    /// [`PROTOCOL`] of the agent (0: an agent older than the field).
    #[serde(default)]
    pub protocol: u32,
    /// [`AGENT_BUILD`] of the agent (empty: an agent older than the field).
    #[serde(default)]
    pub build: String,
    /// `uname -r` of the guest.
    pub kernel: String,
    /// Random per boot: a different one after a migration means the guest rebooted.
    pub boot_id: String,
    /// Guest uptime (CLOCK_BOOTTIME) when the hello was sent.
    pub uptime_ms: u64,
    /// Time spent loading kernel modules in the agent.
    pub modules_ms: u64,
    /// Whether the virtio-fs mount worked.
    pub fs_mounted: bool,
    /// Why setup went wrong, if it did (the agent keeps running to say so).
    pub setup_error: Option<String>,
}

impl Hello {
    /// Why this agent cannot serve a miglab of build [`AGENT_BUILD`], if it cannot.
    pub fn mismatch(&self) -> Option<String> {
        if self.protocol == PROTOCOL && self.build == AGENT_BUILD {
            return None;
        }
        let build = if self.build.is_empty() { "an older one" } else { self.build.as_str() };
        Some(format!(
            "the guest image's agent is build {build} (protocol {}), this miglab's is {AGENT_BUILD} (protocol {PROTOCOL})",
            self.protocol
        ))
    }
}

/// Counters of the running (or last) workload.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub boot_id: String,
    pub workload: Option<String>,
    pub running: bool,
    /// Jobs still laying out files (the timed part has not begun).
    #[serde(default)]
    pub laying_out: u32,
    /// Bytes laid out so far, and in all.
    #[serde(default)]
    pub layout_done: u64,
    #[serde(default)]
    pub layout_total: u64,
    /// What went wrong laying out the files (the first thing): the run cannot stand on them.
    #[serde(default)]
    pub layout_error: Option<String>,
    /// Completed ops without error.
    pub ops: u64,
    pub errors: u64,
    /// Reads whose data did not verify.
    #[serde(default)]
    pub mismatches: u64,
    #[serde(default)]
    pub bytes: u64,
    pub last_error: Option<String>,
    /// Records dropped because the records port did not keep up.
    #[serde(default)]
    pub records_dropped: u64,
    /// Guest monotonic clock at the answer.
    pub uptime_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "kebab-case")]
pub enum Message {
    Hello(Hello),
    Status(Status),
    Verify(VerifyReport),
    Memory(MemoryCheck),
    Ok { cmd: String },
    Error { cmd: Option<String>, error: String },
}

/// Encodes one line (with the trailing newline).
pub fn encode<T: Serialize>(v: &T) -> String {
    // These types always serialize: no maps with non-string keys, no failing Serialize impls.
    let mut s =
        serde_json::to_string(v).unwrap_or_else(|e| format!("{{\"msg\":\"error\",\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::ReadLoopJob;

    #[test]
    fn commands_and_messages_round_trip_as_lines() {
        let cmds = [
            Command::Hello,
            Command::Status,
            Command::Start { workload: Workload::ReadLoop(ReadLoopJob::default()), seed: 3, nonce: 9 },
            Command::Dirty { spec: DirtySpec { size_mib: 64, rate_mib_s: 32.0 }, nonce: 9 },
            Command::MemoryMark,
            Command::MemoryCheck,
            Command::Verify,
            Command::Stop,
            Command::Poweroff,
        ];
        for c in cmds {
            let line = encode(&c);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            assert_eq!(serde_json::from_str::<Command>(&line).expect("parses"), c);
        }
        let m = Message::Status(Status { ops: 7, boot_id: "b".into(), ..Status::default() });
        assert_eq!(serde_json::from_str::<Message>(&encode(&m)).expect("parses"), m);
        let wire = r#"{"cmd":"start","workload":{"kind":"fio","rw":"randread"}}"#;
        assert!(matches!(serde_json::from_str::<Command>(wire), Ok(Command::Start { seed: 0, .. })));
    }

    /// An agent of another build, or one older than the build field, is told apart from ours.
    #[test]
    fn a_hello_of_another_build_is_a_mismatch() {
        let ours = Hello { protocol: PROTOCOL, build: AGENT_BUILD.into(), ..Hello::default() };
        assert_eq!(ours.mismatch(), None);
        let old: Hello = serde_json::from_str(r#"{"agent_version":"0.1.0","kernel":"6.1","boot_id":"b","uptime_ms":1,"modules_ms":1,"fs_mounted":true,"setup_error":null}"#)
            .expect("an old agent's hello still parses");
        assert!(old.mismatch().is_some_and(|m| m.contains("an older one")));
        let other = Hello { build: "0123456789abcdef".into(), ..ours };
        assert!(other.mismatch().is_some_and(|m| m.contains("0123456789abcdef")));
        assert_eq!(AGENT_BUILD.len(), 16);
    }
}
