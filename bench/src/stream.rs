//! Reading the guest's record stream from whichever QEMU runs the guest.
//!
//! During a migration the guest's byte stream is split between two sockets: everything up to
//! the switch-over leaves through the source QEMU, the rest through the destination (a frame
//! may even be cut in two). The destination's socket is connected before the switch-over and
//! what it delivers is held back, stamped on arrival, until the source's socket has ended; then
//! both are fed to one decoder in the guest's order.

use crate::collect::{Collected, Collector};
use miglab_reports::Window;
use std::path::{Path, PathBuf};
use std::time::Instant;
use thiserror::Error;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("could not connect to the records port {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("the record stream's task ended")]
    Gone,
}

enum Ctl {
    Attach(UnixStream),
    Open(String, Instant),
    Close(String, Instant, oneshot::Sender<Option<Window>>),
    Progress(oneshot::Sender<(u64, u64)>),
    Finish(Instant, oneshot::Sender<Collected>),
}

/// The running reader; it owns the collector.
#[derive(Debug)]
pub struct RecordStream {
    tx: mpsc::UnboundedSender<Ctl>,
}

async fn read_some(s: &mut Option<UnixStream>, buf: &mut [u8]) -> std::io::Result<usize> {
    match s {
        Some(s) => s.read(buf).await,
        None => std::future::pending().await,
    }
}

impl RecordStream {
    /// Connects to the records socket of the instance that runs the guest now.
    pub async fn connect(path: &Path, t0: Instant) -> Result<Self, StreamError> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|source| StreamError::Connect { path: path.into(), source })?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Ctl>();
        tokio::spawn(async move {
            let mut c = Collector::new(t0);
            let mut current = Some(s);
            let mut next: Option<UnixStream> = None;
            let mut held: Vec<(Instant, Vec<u8>)> = Vec::new();
            let (mut a, mut b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
            loop {
                tokio::select! {
                    biased;
                    ctl = rx.recv() => match ctl {
                        None => break,
                        Some(Ctl::Attach(s)) => {
                            next = Some(s);
                            held.clear();
                        }
                        Some(Ctl::Open(name, at)) => c.open_window(&name, at),
                        Some(Ctl::Close(name, at, reply)) => {
                            let _ = reply.send(c.close_window(&name, at));
                        }
                        Some(Ctl::Progress(reply)) => {
                            let _ = reply.send(c.progress());
                        }
                        Some(Ctl::Finish(at, reply)) => {
                            let _ = reply.send(c.finish(at));
                            break;
                        }
                    },
                    r = read_some(&mut current, &mut a) => {
                        let at = Instant::now();
                        match r {
                            Ok(n) if n > 0 => c.feed(&a[..n], at),
                            // The source is gone: the destination's bytes come next.
                            _ => {
                                current = next.take();
                                for (t, bytes) in held.drain(..) {
                                    c.feed(&bytes, t);
                                }
                            }
                        }
                    },
                    r = read_some(&mut next, &mut b) => {
                        let at = Instant::now();
                        match r {
                            Ok(n) if n > 0 => held.push((at, b[..n].to_vec())),
                            // The destination went away (a failed migration): forget it.
                            _ => {
                                next = None;
                                held.clear();
                            }
                        }
                    },
                }
            }
        });
        Ok(Self { tx })
    }

    /// Connects to the records socket of a migration's destination, before the switch-over.
    pub async fn attach(&self, path: &Path) -> Result<(), StreamError> {
        let s = UnixStream::connect(path)
            .await
            .map_err(|source| StreamError::Connect { path: path.into(), source })?;
        self.tx.send(Ctl::Attach(s)).map_err(|_| StreamError::Gone)
    }

    pub fn open_window(&self, name: &str, at: Instant) -> Result<(), StreamError> {
        self.tx.send(Ctl::Open(name.into(), at)).map_err(|_| StreamError::Gone)
    }

    pub async fn close_window(&self, name: &str, at: Instant) -> Result<Option<Window>, StreamError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Ctl::Close(name.into(), at, tx)).map_err(|_| StreamError::Gone)?;
        rx.await.map_err(|_| StreamError::Gone)
    }

    /// (heartbeats, ops) so far.
    pub async fn progress(&self) -> Result<(u64, u64), StreamError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Ctl::Progress(tx)).map_err(|_| StreamError::Gone)?;
        rx.await.map_err(|_| StreamError::Gone)
    }

    pub async fn finish(self, at: Instant) -> Result<Collected, StreamError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Ctl::Finish(at, tx)).map_err(|_| StreamError::Gone)?;
        rx.await.map_err(|_| StreamError::Gone)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_workloads::record::Record;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixListener;

    /// A stream split mid-frame between two sockets, the second one's bytes arriving first,
    /// decodes as if it had been one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stream_split_across_two_qemus_is_read_in_the_guests_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let (p1, p2) = (dir.path().join("src.sock"), dir.path().join("dst.sock"));
        let (l1, l2) = (UnixListener::bind(&p1).expect("bind"), UnixListener::bind(&p2).expect("bind"));
        let bytes: Vec<u8> = (0..100u32)
            .flat_map(|i| Record::Heartbeat { seq: i, guest_ns: i as u64 * 1_000_000 }.to_bytes())
            .collect();
        let cut = 50 * 32 + 7;
        let t0 = Instant::now();
        let stream = RecordStream::connect(&p1, t0).await.expect("connect");
        let (mut src, _) = l1.accept().await.expect("accept");
        src.write_all(&bytes[..cut - 100]).await.expect("write");
        stream.attach(&p2).await.expect("attach");
        let (mut dst, _) = l2.accept().await.expect("accept");
        // The destination speaks before the source has finished.
        dst.write_all(&bytes[cut..]).await.expect("write");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        src.write_all(&bytes[cut - 100..cut]).await.expect("write");
        drop(src);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let c = stream.finish(Instant::now()).await.expect("finish");
        assert_eq!((c.heartbeats, c.heartbeats_missing, c.bad_frames), (100, 0, 0));
    }
}
