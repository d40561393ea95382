//! Reading the guest's record stream from whichever QEMU runs the guest, on a thread of its own.
//!
//! Arrival stamps are only as good as the promptness of the reader, so the reader is a thread
//! that does nothing else: it waits in `poll(2)` on the sockets, stamps bytes the moment `read`
//! returns them, and feeds the collector. Nothing on the async runtime (a destination QEMU
//! starting, QMP, fault injection) can delay it; where the system allows it runs SCHED_FIFO.
//!
//! During a migration the guest's byte stream is split between two sockets: everything up to
//! the switch-over leaves through the source QEMU, the rest through the destination (a frame
//! may even be cut in two). The destination's socket is connected before the switch-over and
//! what it delivers is held back, stamped on arrival, until the source's socket has ended; then
//! both are fed to one decoder in the guest's order.
//!
//! Windows open and close on the run's [`Bus`]: a hop's window opens at its `HopStarted` and
//! closes at its `Settled`; the collector's figures for it go back on the bus as `WindowClosed`.

use crate::clock::RunClock;
use crate::collect::{Collected, Collector};
use crate::observe::{Bus, Observed};
use miglab_model::WindowKind;
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Instant;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum StreamError {
    #[error("could not connect to the records port {path}: {source}")]
    Connect { path: PathBuf, source: std::io::Error },
    #[error("could not start the record reader: {0}")]
    Thread(std::io::Error),
    #[error("the record reader ended early")]
    Gone,
}

enum Ctl {
    Attach(UnixStream),
    Finish(Instant),
}

/// When the last heartbeat and the last successful op arrived (run clock ms, as f64 bits;
/// NaN: none yet), for watchdogs that must not ask the reader.
#[derive(Debug)]
struct Arrivals {
    heartbeat: AtomicU64,
    op: AtomicU64,
}

impl Arrivals {
    fn load(a: &AtomicU64) -> Option<f64> {
        Some(f64::from_bits(a.load(Ordering::Relaxed))).filter(|v| !v.is_nan())
    }
}

/// The running reader; it owns the collector.
#[derive(Debug)]
pub struct RecordStream {
    tx: mpsc::Sender<Ctl>,
    thread: Option<JoinHandle<Collected>>,
    arrivals: Arc<Arrivals>,
    /// Whether the reader runs SCHED_FIFO (and if not, why).
    pub realtime: Result<(), String>,
}

fn connect(path: &Path) -> Result<UnixStream, StreamError> {
    let s = UnixStream::connect(path).map_err(|source| StreamError::Connect { path: path.into(), source })?;
    s.set_nonblocking(true).map_err(|source| StreamError::Connect { path: path.into(), source })?;
    Ok(s)
}

/// Asks for SCHED_FIFO for the calling thread: a stamp must not wait for a busy core.
fn make_realtime() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads the param we own; 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error().to_string())
    }
}

enum Got {
    Data(usize),
    Nothing,
    Closed,
}

fn read_some(s: &mut UnixStream, buf: &mut [u8]) -> Got {
    match s.read(buf) {
        Ok(0) => Got::Closed,
        Ok(n) => Got::Data(n),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted =>
        {
            Got::Nothing
        }
        Err(_) => Got::Closed,
    }
}

fn readable(s: &Option<UnixStream>) -> libc::pollfd {
    libc::pollfd { fd: s.as_ref().map_or(-1, |s| s.as_raw_fd()), events: libc::POLLIN, revents: 0 }
}

impl RecordStream {
    /// Connects to the records socket of the instance that runs the guest now.
    /// The records of guest `guest` (from 1): its windows open and close with its own hops.
    pub fn connect(path: &Path, clock: RunClock, bus: &Bus, guest: u32) -> Result<Self, StreamError> {
        let first = connect(path)?;
        let (tx, rx) = mpsc::channel::<Ctl>();
        let mut observations = bus.subscribe();
        let bus = bus.clone();
        let (rt_tx, rt_rx) = mpsc::channel();
        let arrivals = Arc::new(Arrivals {
            heartbeat: AtomicU64::new(f64::NAN.to_bits()),
            op: AtomicU64::new(f64::NAN.to_bits()),
        });
        let seen = arrivals.clone();
        let thread = std::thread::Builder::new()
            .name("records".into())
            .spawn(move || {
                let _ = rt_tx.send(make_realtime());
                let mut c = Collector::new(clock);
                let mut current = Some(first);
                let mut next: Option<UnixStream> = None;
                let mut held: Vec<(Instant, Vec<u8>)> = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    // Short timeouts: control and observations are looked at between reads.
                    let mut fds = [readable(&current), readable(&next)];
                    // SAFETY: fds is a valid array of pollfd for the duration of the call.
                    unsafe { libc::poll(fds.as_mut_ptr(), 2, 5) };
                    if fds[0].revents != 0 {
                        if let Some(s) = current.as_mut() {
                            loop {
                                match read_some(s, &mut buf) {
                                    Got::Data(n) => c.feed(&buf[..n], Instant::now()),
                                    Got::Nothing => break,
                                    Got::Closed => {
                                        // The source is gone: the destination's bytes come next.
                                        current = next.take();
                                        for (t, bytes) in held.drain(..) {
                                            c.feed(&bytes, t);
                                        }
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    if fds[1].revents != 0 {
                        if let Some(s) = next.as_mut() {
                            loop {
                                match read_some(s, &mut buf) {
                                    Got::Data(n) => held.push((Instant::now(), buf[..n].to_vec())),
                                    Got::Nothing => break,
                                    Got::Closed => {
                                        // The destination went away (a failed migration).
                                        next = None;
                                        held.clear();
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    let (op, hb) = c.last_arrivals();
                    if let Some(t) = op {
                        seen.op.store(clock.ms(t).to_bits(), Ordering::Relaxed);
                    }
                    if let Some(t) = hb {
                        seen.heartbeat.store(clock.ms(t).to_bits(), Ordering::Relaxed);
                    }
                    while let Ok(o) = observations.try_recv() {
                        match o.what {
                            Observed::HopStarted { guest: g, hop, .. } if g == guest => c.open_window(
                                &format!("migration {hop}"),
                                WindowKind::Migration { hop },
                                o.at,
                            ),
                            Observed::Settled { guest: g, hop } if g == guest => {
                                if let Some(w) = c.close_window(&format!("migration {hop}"), o.at) {
                                    bus.publish_at(
                                        o.at,
                                        Observed::WindowClosed { guest, window: Box::new(w) },
                                    );
                                }
                            }
                            Observed::FaultInjected { index, .. } => c.open_window(
                                &format!("fault {}", index + 1),
                                WindowKind::Fault { index },
                                o.at,
                            ),
                            Observed::FaultCleared { index } => {
                                if let Some(w) = c.close_window(&format!("fault {}", index + 1), o.at) {
                                    bus.publish_at(
                                        o.at,
                                        Observed::WindowClosed { guest, window: Box::new(w) },
                                    );
                                }
                            }
                            _ => {}
                        }
                    }
                    match rx.try_recv() {
                        Ok(Ctl::Attach(s)) => {
                            next = Some(s);
                            held.clear();
                        }
                        Ok(Ctl::Finish(at)) => {
                            // Whatever arrived up to now belongs to the run.
                            if let Some(s) = current.as_mut() {
                                while let Got::Data(n) = read_some(s, &mut buf) {
                                    c.feed(&buf[..n], Instant::now());
                                }
                            }
                            return c.finish(at);
                        }
                        Err(mpsc::TryRecvError::Empty) => {}
                        Err(mpsc::TryRecvError::Disconnected) => return c.finish(Instant::now()),
                    }
                }
            })
            .map_err(StreamError::Thread)?;
        let realtime = rt_rx.recv().unwrap_or_else(|_| Err("the reader did not start".into()));
        Ok(Self { tx, thread: Some(thread), arrivals, realtime })
    }

    /// Run clock of the last heartbeat that arrived.
    pub fn last_heartbeat_ms(&self) -> Option<f64> {
        Arrivals::load(&self.arrivals.heartbeat)
    }

    /// Run clock of the last successful op that arrived.
    pub fn last_op_ms(&self) -> Option<f64> {
        Arrivals::load(&self.arrivals.op)
    }

    /// Connects to the records socket of a migration's destination, before the switch-over.
    pub fn attach(&self, path: &Path) -> Result<(), StreamError> {
        let s = connect(path)?;
        self.tx.send(Ctl::Attach(s)).map_err(|_| StreamError::Gone)
    }

    /// Stops reading (what arrived until now counts) and returns what was measured. Blocks
    /// until the reader has finished: call it off the async runtime.
    pub fn finish(mut self, at: Instant) -> Result<Collected, StreamError> {
        let _ = self.tx.send(Ctl::Finish(at));
        let t = self.thread.take().ok_or(StreamError::Gone)?;
        t.join().map_err(|_| StreamError::Gone)
    }
}

impl Drop for RecordStream {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Ctl::Finish(Instant::now()));
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_workloads::record::Record;
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::time::Duration;

    /// A stream split mid-frame between two sockets, the second one's bytes arriving first,
    /// decodes as if it had been one.
    #[test]
    fn a_stream_split_across_two_qemus_is_read_in_the_guests_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let (p1, p2) = (dir.path().join("src.sock"), dir.path().join("dst.sock"));
        let (l1, l2) = (UnixListener::bind(&p1).expect("bind"), UnixListener::bind(&p2).expect("bind"));
        let bytes: Vec<u8> = (0..100u32)
            .flat_map(|i| Record::Heartbeat { seq: i, guest_ns: i as u64 * 1_000_000 }.to_bytes())
            .collect();
        let cut = 50 * 32 + 7;
        let clock = RunClock::start();
        let bus = Bus::new(clock);
        let stream = RecordStream::connect(&p1, clock, &bus, 1).expect("connect");
        let (mut src, _) = l1.accept().expect("accept");
        src.write_all(&bytes[..cut - 100]).expect("write");
        stream.attach(&p2).expect("attach");
        let (mut dst, _) = l2.accept().expect("accept");
        // The destination speaks before the source has finished.
        dst.write_all(&bytes[cut..]).expect("write");
        std::thread::sleep(Duration::from_millis(50));
        src.write_all(&bytes[cut - 100..cut]).expect("write");
        drop(src);
        std::thread::sleep(Duration::from_millis(50));
        let c = stream.finish(Instant::now()).expect("finish");
        assert_eq!((c.heartbeats, c.heartbeats_missing, c.bad_frames), (100, 0, 0));
    }

    /// Windows follow the bus: a hop's window opens at HopStarted, closes at Settled, and its
    /// figures come back on the bus.
    #[test]
    fn windows_open_and_close_on_the_bus() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("r.sock");
        let l = UnixListener::bind(&p).expect("bind");
        let clock = RunClock::start();
        let bus = Bus::new(clock);
        let mut seen = bus.subscribe();
        let stream = RecordStream::connect(&p, clock, &bus, 1).expect("connect");
        let (mut w, _) = l.accept().expect("accept");
        w.write_all(&Record::Heartbeat { seq: 0, guest_ns: 1 }.to_bytes()).expect("write");
        bus.publish(Observed::HopStarted { guest: 1, hop: 1, from: "c1".into(), to: "c2".into() });
        std::thread::sleep(Duration::from_millis(30));
        w.write_all(&Record::Heartbeat { seq: 1, guest_ns: 2 }.to_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(30));
        bus.publish(Observed::Settled { guest: 1, hop: 1 });
        let deadline = Instant::now() + Duration::from_secs(5);
        let closed = loop {
            assert!(Instant::now() < deadline, "no WindowClosed on the bus");
            match seen.try_recv() {
                Ok(o) => {
                    if let Observed::WindowClosed { window: w, .. } = o.what {
                        break w;
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        assert_eq!(closed.name, "migration 1");
        assert!(closed.heartbeat_gap_ms.expect("gap") >= 20.0, "{closed:?}");
        let c = stream.finish(Instant::now()).expect("finish");
        assert_eq!(c.windows.len(), 1);
    }
}
