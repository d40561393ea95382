//! The host end of the guest agent's control port (`miglab.control`), a unix socket QEMU
//! exposes for the virtio-serial port.

use miglab_workloads::control::{encode, Command, Hello, Message, Status};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("could not connect to the control port {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the control port closed")]
    Closed,
    #[error("the agent did not answer `{command}` within {timeout:.1?}")]
    TimedOut { command: &'static str, timeout: Duration },
    #[error("the agent sent something unreadable: {0}")]
    Protocol(String),
    #[error("the agent refused `{command}`: {error}")]
    Refused { command: &'static str, error: String },
    #[error("control port I/O: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
pub struct Control {
    lines: Lines<BufReader<OwnedReadHalf>>,
    write: OwnedWriteHalf,
    /// A hello that arrived while waiting for something else.
    pub hello: Option<Hello>,
}

impl Control {
    pub async fn connect(path: &Path) -> Result<Self, ControlError> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|source| ControlError::Connect { path: path.into(), source })?;
        let (r, w) = s.into_split();
        Ok(Self { lines: BufReader::new(r).lines(), write: w, hello: None })
    }

    async fn send(&mut self, cmd: &Command) -> Result<(), ControlError> {
        self.write.write_all(encode(cmd).as_bytes()).await?;
        Ok(())
    }

    async fn receive(&mut self, command: &'static str, timeout: Duration) -> Result<Message, ControlError> {
        let line = tokio::time::timeout(timeout, self.lines.next_line())
            .await
            .map_err(|_| ControlError::TimedOut { command, timeout })??
            .ok_or(ControlError::Closed)?;
        serde_json::from_str(&line).map_err(|_| ControlError::Protocol(line))
    }

    /// Waits for the agent's hello, asking for it every `ping` (the unsolicited one may have
    /// been sent before anyone listened).
    pub async fn wait_hello(&mut self, timeout: Duration, ping: Duration) -> Result<Hello, ControlError> {
        if let Some(h) = self.hello.take() {
            return Ok(h);
        }
        let start = Instant::now();
        loop {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(ControlError::TimedOut { command: "hello", timeout });
            }
            match self.receive("hello", ping.min(left)).await {
                Ok(Message::Hello(h)) => return Ok(h),
                Ok(_) | Err(ControlError::TimedOut { .. }) => self.send(&Command::Hello).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a command and returns its answer (hellos in between are kept aside).
    pub async fn request(&mut self, cmd: Command, timeout: Duration) -> Result<Message, ControlError> {
        let name = cmd.name();
        self.send(&cmd).await?;
        loop {
            match self.receive(name, timeout).await? {
                Message::Hello(h) if name != "hello" => self.hello = Some(h),
                Message::Error { error, .. } => return Err(ControlError::Refused { command: name, error }),
                m => return Ok(m),
            }
        }
    }

    pub async fn status(&mut self, timeout: Duration) -> Result<Status, ControlError> {
        match self.request(Command::Status, timeout).await? {
            Message::Status(s) => Ok(s),
            m => Err(ControlError::Protocol(format!("expected a status, got {m:?}"))),
        }
    }
}
