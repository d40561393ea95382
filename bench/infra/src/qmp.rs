//! QMP over a unix socket through the `qapi` crate: typed commands with a deadline, and the
//! event stream polled on its own task, every event stamped with the host's monotonic clock
//! the moment it arrives (QMP's own timestamps are wall clock).

use futures::StreamExt;
use miglab_model::{MigrationStatus, QmpEvent};
use qapi::futures::{QapiService, QmpStreamTokio};
use qapi::qmp;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::WriteHalf;
use tokio::net::UnixStream;
use tokio::sync::mpsc;

type Service = QapiService<QmpStreamTokio<WriteHalf<UnixStream>>>;

#[derive(Debug, Error)]
pub enum QmpError {
    #[error("no QMP greeting on {path} within {timeout:.0?}")]
    Connect { path: PathBuf, timeout: Duration },
    #[error("QMP `{command}` failed: {error}")]
    Command { command: &'static str, error: String },
    #[error("QMP `{command}` got no answer within {timeout:.0?}")]
    TimedOut { command: &'static str, timeout: Duration },
    #[error("QMP `{command}` not sent: an earlier command on this connection never got its answer, so the next answer could be that one's")]
    Unusable { command: &'static str },
}

/// A QMP event and when it reached miglab.
#[derive(Debug, Clone)]
pub struct Stamped {
    pub at: Instant,
    pub event: qmp::Event,
}

impl Stamped {
    /// The event as the timeline keeps it.
    pub fn typed(&self) -> QmpEvent {
        typed(&self.event)
    }
}

/// A QMP event as the timeline keeps it: the migration's own events typed, others by name.
pub fn typed(event: &qmp::Event) -> QmpEvent {
    match event {
        qmp::Event::MIGRATION { data, .. } => match status_of(&data.status) {
            Some(status) => QmpEvent::Migration { status },
            None => QmpEvent::Other { name: "MIGRATION".into() },
        },
        qmp::Event::MIGRATION_PASS { data, .. } => QmpEvent::MigrationPass { pass: data.pass as u64 },
        qmp::Event::STOP { .. } => QmpEvent::Stop,
        qmp::Event::RESUME { .. } => QmpEvent::Resume,
        other => {
            let v = serde_json::to_value(other).unwrap_or_default();
            QmpEvent::Other { name: v.get("event").and_then(|e| e.as_str()).unwrap_or("?").to_string() }
        }
    }
}

/// QEMU's status, as miglab's type.
pub fn status_of(s: &qmp::MigrationStatus) -> Option<MigrationStatus> {
    serde_json::to_value(s).ok().and_then(|v| v.as_str().and_then(MigrationStatus::parse))
}

/// One QMP connection.
pub struct Qmp {
    path: PathBuf,
    service: Service,
    events: mpsc::UnboundedReceiver<Stamped>,
    reader: tokio::task::JoinHandle<()>,
    timeout: Duration,
    /// Set once a command was abandoned before its answer (a deadline, or its future dropped).
    /// QEMU without out-of-band support answers in order and without ids (qapi files every
    /// command under id 0), so the connection cannot be used again.
    abandoned: std::sync::atomic::AtomicBool,
}

/// Marks the connection abandoned if the command's future goes before its answer came.
struct InFlight<'a> {
    abandoned: &'a std::sync::atomic::AtomicBool,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.abandoned.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for Qmp {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Qmp {
    /// Connects (retrying until the socket accepts) and negotiates capabilities. `gone` is
    /// asked between attempts, so a QEMU that died is reported at once, not at the deadline.
    pub async fn connect<E>(
        path: &Path,
        timeout: Duration,
        mut gone: impl FnMut() -> Result<(), E>,
    ) -> Result<Result<Self, QmpError>, E> {
        let start = Instant::now();
        loop {
            gone()?;
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(Err(QmpError::Connect { path: path.into(), timeout }));
            }
            let attempt = async {
                let negotiation = QmpStreamTokio::open_uds(path).await.ok()?;
                negotiation.negotiate().await.ok()
            };
            if let Ok(Some(stream)) = tokio::time::timeout(left, attempt).await {
                let (service, mut events) = stream.into_parts();
                let (tx, rx) = mpsc::unbounded_channel();
                // The event stream must be polled for command replies to arrive too.
                let reader = tokio::spawn(async move {
                    while let Some(item) = events.next().await {
                        match item {
                            Ok(event) => {
                                if tx.send(Stamped { at: Instant::now(), event }).is_err() {
                                    break;
                                }
                            }
                            // An event this schema does not know: skip it, keep reading.
                            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => continue,
                            Err(_) => break,
                        }
                    }
                });
                return Ok(Ok(Self {
                    path: path.into(),
                    service,
                    events: rx,
                    reader,
                    timeout: Duration::from_secs(10),
                    abandoned: Default::default(),
                }));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs a command with the connection's deadline. After a command that got no answer the
    /// connection refuses further commands (their answers could not be told apart).
    pub async fn execute<C>(&self, command: C) -> Result<C::Ok, QmpError>
    where
        C: qapi::Command,
        QmpStreamTokio<WriteHalf<UnixStream>>:
            futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        self.execute_within(command, self.timeout).await
    }

    /// Like `execute`, with a deadline of the caller's (a migration waits for a QEMU whose main
    /// loop is blocked as long as the migration may take, not the usual 10 s).
    pub async fn execute_within<C>(&self, command: C, timeout: Duration) -> Result<C::Ok, QmpError>
    where
        C: qapi::Command,
        QmpStreamTokio<WriteHalf<UnixStream>>:
            futures::Sink<qapi::Execute<C, u32>, Error = std::io::Error> + Unpin,
    {
        if self.abandoned.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(QmpError::Unusable { command: C::NAME });
        }
        let mut flight = InFlight { abandoned: &self.abandoned, answered: false };
        let r = tokio::time::timeout(timeout, self.service.execute(command)).await;
        flight.answered = r.is_ok();
        drop(flight);
        match r {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(QmpError::Command { command: C::NAME, error: e.to_string() }),
            Err(_) => {
                tracing::warn!(command = C::NAME, path = %self.path.display(), "QMP command unanswered; connection abandoned");
                Err(QmpError::TimedOut { command: C::NAME, timeout })
            }
        }
    }

    /// The next event; `None` once the connection is gone (then never ready again, so that a
    /// `select!` over both sides keeps serving the other).
    pub async fn event(&mut self) -> Option<Stamped> {
        match self.events.recv().await {
            Some(e) => Some(e),
            None => std::future::pending().await,
        }
    }

    /// Every event that has already arrived.
    pub fn drain_events(&mut self) -> Vec<Stamped> {
        let mut v = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            v.push(e);
        }
        v
    }

    /// Whether the guest is running (`query-status`).
    pub async fn running(&self) -> Result<bool, QmpError> {
        Ok(self.execute(qmp::query_status {}).await?.running)
    }
}
