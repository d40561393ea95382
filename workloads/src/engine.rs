//! The engine that runs a [`Workload`] on a directory — the guest's virtio-fs mount, or a
//! host's CephFS mount in host mode — and reports every completed op as an [`OpRecord`].
//!
//! fio-style jobs run as fio runs them with a synchronous engine: one thread per job, one
//! request in flight. A job owns its files, so the generation each block should hold is always
//! known: that is what makes verification exact. The rooms: [`fio`] (layout, the timed loop,
//! the verify pass), [`metadata`], [`readloop`], [`state`] (what virtiofsd holds).

mod fio;
mod metadata;
mod readloop;
mod state;

pub use state::{lay_out_tree, tree_complete};

use crate::job::Workload;
use crate::record::{Op, OpRecord, Record, FLAG_ERROR, FLAG_MISMATCH, FRAME_LEN};
use crate::verify::{RunTag, VerifyReport};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// CLOCK_MONOTONIC in ns: the clock of every record.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Where records go.
pub trait Sink: Send + Sync {
    fn push(&self, r: OpRecord);
}

/// Encoded records waiting for the next flush, bounded: past the cap, records are dropped
/// and counted, so a stalled reader can never exhaust the guest's memory.
#[derive(Debug)]
pub struct RecordBuffer {
    buf: Mutex<Vec<u8>>,
    cap: usize,
    pub dropped: AtomicU64,
}

impl RecordBuffer {
    pub fn new(cap_records: usize) -> Self {
        Self {
            buf: Mutex::new(Vec::with_capacity(64 * FRAME_LEN)),
            cap: cap_records * FRAME_LEN,
            dropped: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.buf.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push_record(&self, r: &Record) {
        let mut b = self.lock();
        if b.len() + FRAME_LEN > self.cap {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        b.extend_from_slice(&r.to_bytes());
    }

    /// Takes everything buffered, leaving an empty buffer.
    pub fn take(&self, into: &mut Vec<u8>) {
        into.clear();
        std::mem::swap(&mut *self.lock(), into);
    }
}

impl Sink for RecordBuffer {
    fn push(&self, r: OpRecord) {
        self.push_record(&Record::Op(r));
    }
}

/// Encoded records on their way to the records port. What a failed write did not deliver
/// waits for the next attempt (the buffer meanwhile fills up to its cap, and drops what it
/// must with a count): a port error delays records, it never loses a chunk uncounted.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: Vec<u8>,
    sent: usize,
}

impl Outbox {
    /// Nothing waits to be written.
    pub fn is_empty(&self) -> bool {
        self.sent >= self.buf.len()
    }

    /// Takes the buffered records, once everything before them is written.
    pub fn refill(&mut self, records: &RecordBuffer) {
        if self.is_empty() {
            records.take(&mut self.buf);
            self.sent = 0;
        }
    }

    /// Writes what waits; on an error the rest stays, from the first byte not written.
    pub fn send(&mut self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        while self.sent < self.buf.len() {
            match w.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Counters of a running workload.
#[derive(Debug, Default)]
pub struct Counters {
    /// Ops that completed without error.
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub mismatches: AtomicU64,
    pub bytes: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Jobs still laying out files.
    pub laying_out: AtomicU32,
    /// Bytes of files laid out so far, and in all.
    pub layout_done: AtomicU64,
    pub layout_total: AtomicU64,
    /// The first thing that went wrong laying out the files: the run cannot stand on them.
    pub layout_error: Mutex<Option<String>>,
}

impl Counters {
    /// Keeps the first layout error (the rest follow from it, usually).
    pub fn layout_failed(&self, e: String) {
        if let Ok(mut l) = self.layout_error.lock() {
            l.get_or_insert(e);
        }
    }

    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

/// What an op that went wrong returns: its errno and a message.
type OpError = (u32, String);

/// What every worker needs.
struct Ctx {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    sink: Arc<dyn Sink>,
    /// No op before this is recorded (ramp time).
    record_from: Instant,
    until: Option<Instant>,
}

impl Ctx {
    fn new(
        stop: &Arc<AtomicBool>,
        counters: &Arc<Counters>,
        sink: &Arc<dyn Sink>,
        ramp: f64,
        runtime: Option<f64>,
    ) -> Ctx {
        let now = Instant::now();
        Ctx {
            stop: stop.clone(),
            counters: counters.clone(),
            sink: sink.clone(),
            record_from: now + Duration::from_secs_f64(ramp.max(0.0)),
            until: runtime.map(|r| now + Duration::from_secs_f64((ramp + r).max(0.0))),
        }
    }

    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.until.is_some_and(|u| Instant::now() >= u)
    }

    fn record(
        &self,
        op: Op,
        job: u16,
        submit_ns: u64,
        bytes: u64,
        result: Result<(), OpError>,
        mismatch: bool,
    ) {
        self.record_at(op, job, submit_ns, now_ns(), bytes, result, mismatch)
    }

    /// Like `record`, with the completion time taken by the caller (before any checking).
    #[allow(clippy::too_many_arguments)] // one record's fields
    fn record_at(
        &self,
        op: Op,
        job: u16,
        submit_ns: u64,
        complete_ns: u64,
        bytes: u64,
        result: Result<(), OpError>,
        mismatch: bool,
    ) {
        let mut flags = 0;
        let status = match result {
            Ok(()) => {
                self.counters.ops.fetch_add(1, Ordering::Relaxed);
                self.counters.bytes.fetch_add(bytes, Ordering::Relaxed);
                0
            }
            Err((errno, msg)) => {
                flags |= FLAG_ERROR;
                self.counters.error(msg);
                errno
            }
        };
        if mismatch {
            flags |= FLAG_MISMATCH;
            self.counters.mismatches.fetch_add(1, Ordering::Relaxed);
        }
        if Instant::now() >= self.record_from {
            // A failed op moved no bytes.
            let bytes = if flags & FLAG_ERROR != 0 { 0 } else { bytes as u32 };
            self.sink.push(OpRecord { op, flags, job, submit_ns, complete_ns, bytes, status });
        }
    }
}

fn errno(e: &std::io::Error) -> u32 {
    e.raw_os_error().unwrap_or(libc::EIO) as u32
}

/// A small, fast, seedable generator (xorshift64*): reproducible op sequences per seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// Paces a worker to a rate: sleeps until the next op's slot. The gap before an op is the
/// rate's per-op time (`rate_iops`) plus its per-byte time (`rate`) for the op's size, evenly
/// or as a Poisson process (fio's `rate_process`).
struct Pacer {
    per_op: f64,
    per_byte: f64,
    poisson: Option<Rng>,
    next: Instant,
}

impl Pacer {
    fn new(ops_per_s: Option<f64>) -> Self {
        let per_op = ops_per_s.filter(|r| *r > 0.0 && r.is_finite()).map(|r| 1.0 / r).unwrap_or(0.0);
        Self { per_op, per_byte: 0.0, poisson: None, next: Instant::now() }
    }

    /// fio's pacing: `rate` in bytes/s, `rate_iops` in ops/s (the stricter applies).
    fn fio(
        bytes_per_s: Option<u64>,
        iops: Option<u64>,
        process: crate::pattern::RateProcess,
        seed: u64,
    ) -> Self {
        let mut p = Self::new(iops.map(|r| r as f64));
        p.per_byte = bytes_per_s.filter(|r| *r > 0).map(|r| 1.0 / r as f64).unwrap_or(0.0);
        if process == crate::pattern::RateProcess::Poisson {
            p.poisson = Some(Rng::new(seed));
        }
        p
    }

    fn wait(&mut self, bytes: u64) {
        let mean = self.per_op.max(self.per_byte * bytes as f64);
        if mean <= 0.0 {
            return;
        }
        let gap = match &mut self.poisson {
            Some(r) => crate::pattern::RateProcess::Poisson
                .gap(mean, ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64),
            None => mean,
        };
        let i = Duration::from_secs_f64(gap);
        let now = Instant::now();
        if self.next > now {
            std::thread::sleep(self.next - now);
        } else if now - self.next > Duration::from_secs_f64(mean * 100.0) {
            // Far behind (the guest was paused): do not burst to catch up.
            self.next = now;
        }
        self.next += i;
    }
}

/// How a workload's data is checked at the end.
enum Verifier {
    Fio(fio::Verifier),
    ReadLoop(readloop::Verifier),
    Metadata(metadata::Verifier),
    State(Box<state::Verifier>),
}

/// A running workload.
pub struct Running {
    pub name: String,
    pub counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    verifier: Verifier,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Running {
    /// Whether every worker has finished (runtime over, one pass done, or stopped).
    pub fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the workers and waits for them.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }

    /// Reads everything back and reports each bad block (stop first). `give_up` is asked
    /// between blocks, so a verify pass can be cut short.
    pub fn verify(&self, sink: &dyn Sink, give_up: &dyn Fn() -> bool) -> VerifyReport {
        match &self.verifier {
            Verifier::Fio(v) => v.verify(sink, give_up),
            Verifier::ReadLoop(v) => v.verify(),
            Verifier::Metadata(v) => v.verify(sink, give_up),
            Verifier::State(v) => v.verify(sink, give_up),
        }
    }
}

/// The record of one item a verify pass checked: its progress is what tells a slow verify
/// pass (a file system waiting for the MDS, say) from a hung one.
pub(super) fn verify_record(
    job: u16,
    submit_ns: u64,
    complete_ns: u64,
    bytes: u32,
    status: u32,
    mismatch: bool,
) -> OpRecord {
    let mut flags = if mismatch { FLAG_MISMATCH } else { 0 };
    if status != 0 {
        flags |= FLAG_ERROR;
    }
    OpRecord { op: Op::Verify, flags, job, submit_ns, complete_ns, bytes, status }
}

/// Starts `w` under `root` for the run `tag`. Files are laid out by the workers before their
/// timed loop (`Counters::laying_out` says when that is done).
pub fn start(
    w: &Workload,
    root: &std::path::Path,
    sink: Arc<dyn Sink>,
    tag: RunTag,
) -> Result<Running, String> {
    w.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    let (name, threads, verifier) = match w {
        Workload::ReadLoop(j) => {
            let (t, v) = readloop::start(j, root, &sink, &stop, &counters)?;
            ("read-loop".to_string(), t, Verifier::ReadLoop(v))
        }
        Workload::Fio(j) => {
            let file = crate::job::FioFile { name: j.name.clone(), jobs: vec![j.clone()] };
            let (t, v) = fio::start(&file, root, &sink, &stop, &counters, tag)?;
            (j.name.clone(), t, Verifier::Fio(v))
        }
        Workload::FioFile(f) => {
            let (t, v) = fio::start(f, root, &sink, &stop, &counters, tag)?;
            (f.name.clone(), t, Verifier::Fio(v))
        }
        Workload::State(j) => {
            let (t, v) = state::start(j, root, &sink, &stop, &counters, tag)?;
            (j.name.clone(), t, Verifier::State(Box::new(v)))
        }
        Workload::Metadata(j) => {
            let (t, v) = metadata::start(j, root, &sink, &stop, &counters, tag.seed)?;
            (j.name.clone(), t, Verifier::Metadata(v))
        }
    };
    Ok(Running { name, counters, stop, threads, verifier })
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new().name(name.clone()).spawn(f).map_err(|e| format!("start thread {name}: {e}"))
}

#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::record::Decoder;

    pub fn collect(buf: &RecordBuffer) -> Vec<OpRecord> {
        let mut bytes = Vec::new();
        buf.take(&mut bytes);
        let mut out = Vec::new();
        Decoder::new().feed(&bytes, |r| {
            if let Record::Op(o) = r {
                out.push(o)
            }
        });
        out
    }

    pub const TAG: RunTag = RunTag { seed: 7, nonce: 0x5eed };

    /// Starts `w` and waits for its files to be laid out.
    pub fn start_laid_out(w: &Workload, root: &std::path::Path) -> (Running, Arc<RecordBuffer>) {
        let buf = Arc::new(RecordBuffer::new(1 << 20));
        let r = start(w, root, buf.clone(), TAG).expect("start");
        let t = Instant::now();
        while r.counters.laying_out.load(Ordering::Relaxed) > 0 {
            assert!(t.elapsed() < Duration::from_secs(30), "layout never ended");
            std::thread::sleep(Duration::from_millis(5));
        }
        (r, buf)
    }

    pub fn run_for(w: &Workload, root: &std::path::Path, ms: u64) -> (Running, Arc<RecordBuffer>) {
        let (mut r, buf) = start_laid_out(w, root);
        std::thread::sleep(Duration::from_millis(ms));
        r.stop();
        (r, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_and_counts() {
        let b = RecordBuffer::new(2);
        for _ in 0..5 {
            b.push_record(&Record::Heartbeat { seq: 0, guest_ns: 0 });
        }
        assert_eq!(b.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn the_first_layout_error_is_kept() {
        let c = Counters::default();
        c.layout_failed("writing a: ENOSPC".into());
        c.layout_failed("writing b: ENOSPC".into());
        assert_eq!(c.layout_error.lock().expect("lock").as_deref(), Some("writing a: ENOSPC"));
    }

    /// A port that fails mid-write: the agent dropped the whole chunk while records_dropped
    /// said 0. Now the rest is written on the next attempt, every byte once, in order.
    #[test]
    fn a_failed_write_keeps_the_rest_for_the_next() {
        struct Flaky {
            out: Vec<u8>,
            fail_after: Option<usize>,
        }
        impl std::io::Write for Flaky {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                match self.fail_after.take() {
                    Some(0) => Err(std::io::Error::other("port reset")),
                    Some(n) => {
                        let n = n.min(b.len());
                        self.out.extend_from_slice(&b[..n]);
                        self.fail_after = Some(0);
                        Ok(n)
                    }
                    None => {
                        self.out.extend_from_slice(b);
                        Ok(b.len())
                    }
                }
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let b = RecordBuffer::new(64);
        for seq in 0..10 {
            b.push_record(&Record::Heartbeat { seq, guest_ns: seq as u64 });
        }
        let mut want = Vec::new();
        for seq in 0..10 {
            want.extend_from_slice(&Record::Heartbeat { seq, guest_ns: seq as u64 }.to_bytes());
        }
        let mut port = Flaky { out: Vec::new(), fail_after: Some(FRAME_LEN * 3 + 5) };
        let mut o = Outbox::default();
        o.refill(&b);
        assert!(o.send(&mut port).is_err());
        // More records arrive meanwhile: they wait behind the rest.
        b.push_record(&Record::Heartbeat { seq: 10, guest_ns: 10 });
        want.extend_from_slice(&Record::Heartbeat { seq: 10, guest_ns: 10 }.to_bytes());
        o.refill(&b);
        o.send(&mut port).expect("the rest");
        o.refill(&b);
        o.send(&mut port).expect("the newer records");
        assert_eq!(port.out, want);
        assert_eq!(b.dropped.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failed_op_moves_no_bytes_and_counts_as_an_error() {
        let buf = Arc::new(RecordBuffer::new(16));
        let sink: Arc<dyn Sink> = buf.clone();
        let counters = Arc::new(Counters::default());
        let c = Ctx::new(&Arc::new(AtomicBool::new(false)), &counters, &sink, 0.0, None);
        c.record(Op::Write, 0, now_ns(), 4096, Err((5, "EIO".into())), false);
        c.record(Op::Write, 0, now_ns(), 4096, Ok(()), false);
        let recs = testing::collect(&buf);
        assert_eq!((recs[0].bytes, recs[0].failed(), recs[0].status), (0, true, 5));
        assert_eq!((recs[1].bytes, recs[1].failed()), (4096, false));
        assert_eq!(counters.ops.load(Ordering::Relaxed), 1);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 4096);
        assert_eq!(counters.errors.load(Ordering::Relaxed), 1);
    }
}
