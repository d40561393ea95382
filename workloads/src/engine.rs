//! The engine that runs a [`Workload`] on a directory — the guest's virtio-fs mount, or a
//! host's CephFS mount in host mode — and reports every completed op as an [`OpRecord`].
//!
//! fio-style jobs use synchronous I/O: `numjobs` jobs, each with `iodepth` worker threads.
//! Each worker owns every `iodepth`-th block of its job's files, so no two threads ever write
//! the same block and the generation each block should hold is always known: that is what
//! makes verification exact.

use crate::job::{FioJob, MetadataJob, ReadLoopJob, Workload};
use crate::record::{Op, OpRecord, Record, FLAG_ERROR, FLAG_MISMATCH, FRAME_LEN};
use crate::verify::{check_block, fill_block, BadBlock, Problem, VerifyReport};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
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

/// Counters of a running workload.
#[derive(Debug, Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub mismatches: AtomicU64,
    pub bytes: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    /// Workers still laying out files.
    pub laying_out: AtomicU32,
}

impl Counters {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

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
    fn done(&self) -> bool {
        self.stop.load(Ordering::Relaxed) || self.until.is_some_and(|u| Instant::now() >= u)
    }

    fn record(
        &self,
        op: Op,
        job: u16,
        submit_ns: u64,
        bytes: u64,
        result: Result<(), (u32, String)>,
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
        result: Result<(), (u32, String)>,
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
            self.sink.push(OpRecord { op, flags, job, submit_ns, complete_ns, bytes: bytes as u32, status });
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

/// Paces a worker to a rate: sleeps until the next op's slot.
struct Pacer {
    interval: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(ops_per_s: Option<f64>) -> Self {
        Self {
            interval: ops_per_s.filter(|r| *r > 0.0).map(|r| Duration::from_secs_f64(1.0 / r)),
            next: Instant::now(),
        }
    }
    fn wait(&mut self) {
        if let Some(i) = self.interval {
            let now = Instant::now();
            if self.next > now {
                std::thread::sleep(self.next - now);
            } else if now - self.next > i * 100 {
                // Far behind (the guest was paused): do not burst to catch up.
                self.next = now;
            }
            self.next += i;
        }
    }
}

/// A memory buffer aligned for O_DIRECT.
struct Aligned {
    ptr: *mut u8,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is owned by one worker thread at a time.
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(len: usize) -> Self {
        let layout =
            std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap_or(std::alloc::Layout::new::<u8>());
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Self { ptr, len, layout }
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is valid for len bytes and uniquely borrowed through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// A fio job's files and the generation each block should hold.
struct FioFiles {
    paths: Vec<PathBuf>,
    blocks_per_file: u64,
    generations: Vec<AtomicU32>,
}

impl FioFiles {
    fn generation(&self, file: usize, block: u64) -> &AtomicU32 {
        &self.generations[file * self.blocks_per_file as usize + block as usize]
    }
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

enum Verifier {
    Fio { jobs: Vec<Arc<FioFiles>>, bs: u64, root: PathBuf },
    ReadLoop { path: PathBuf, content: Vec<u8> },
    Metadata { live: Vec<Arc<Mutex<Vec<String>>>>, dirs: Vec<PathBuf> },
}

impl Running {
    /// Whether every worker has finished (runtime over, or stopped).
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

    /// Reads everything back and reports each bad block (stop first).
    pub fn verify(&self, sink: &dyn Sink) -> VerifyReport {
        let mut report = VerifyReport::default();
        match &self.verifier {
            Verifier::Fio { jobs, bs, root } => {
                let mut buf = vec![0u8; *bs as usize];
                for (j, files) in jobs.iter().enumerate() {
                    for (f, path) in files.paths.iter().enumerate() {
                        let rel = path.strip_prefix(root).unwrap_or(path).display().to_string();
                        let file = File::open(path);
                        for b in 0..files.blocks_per_file {
                            let offset = b * bs;
                            let expected = files.generation(f, b).load(Ordering::Relaxed);
                            let submit = now_ns();
                            let got = match &file {
                                Ok(fh) => read_full(fh, &mut buf, offset),
                                Err(_) => 0,
                            };
                            let id = (j * files.paths.len() + f) as u32;
                            let result = check_block(&buf, got, id, offset, expected);
                            report.blocks += 1;
                            let mismatch = result.is_err();
                            if let Err(problem) = result {
                                report.add(BadBlock { path: rel.clone(), offset, problem });
                            }
                            sink.push(OpRecord {
                                op: Op::Verify,
                                flags: if mismatch { FLAG_MISMATCH } else { 0 },
                                job: j as u16,
                                submit_ns: submit,
                                complete_ns: now_ns(),
                                bytes: got as u32,
                                status: 0,
                            });
                        }
                    }
                }
            }
            Verifier::ReadLoop { path, content } => {
                report.blocks = 1;
                match std::fs::read(path) {
                    Ok(d) if d == *content => {}
                    Ok(_) => report.add(BadBlock {
                        path: path.display().to_string(),
                        offset: 0,
                        problem: Problem::Corrupt,
                    }),
                    Err(_) => report.add(BadBlock {
                        path: path.display().to_string(),
                        offset: 0,
                        problem: Problem::Missing,
                    }),
                }
            }
            Verifier::Metadata { live, dirs } => {
                for (names, dir) in live.iter().zip(dirs) {
                    let names = names.lock().map(|n| n.clone()).unwrap_or_default();
                    for n in names {
                        report.blocks += 1;
                        if !dir.join(&n).exists() {
                            report.add(BadBlock {
                                path: dir.join(&n).display().to_string(),
                                offset: 0,
                                problem: Problem::Missing,
                            });
                        }
                    }
                }
            }
        }
        report
    }
}

fn read_full(f: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut got = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    buf[got..].fill(0);
    got
}

/// Starts `w` under `root`. Files are laid out by the workers before their timed loop.
pub fn start(w: &Workload, root: &Path, sink: Arc<dyn Sink>, seed: u64) -> Result<Running, String> {
    w.validate()?;
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(Counters::default());
    match w {
        Workload::ReadLoop(j) => start_read_loop(j, root, sink, stop, counters),
        Workload::Fio(j) => start_fio(j, root, sink, stop, counters, seed),
        Workload::Metadata(j) => start_metadata(j, root, sink, stop, counters, seed),
    }
}

fn ctx(
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

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>, String> {
    std::thread::Builder::new().name(name.clone()).spawn(f).map_err(|e| format!("start thread {name}: {e}"))
}

fn start_read_loop(
    j: &ReadLoopJob,
    root: &Path,
    sink: Arc<dyn Sink>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) -> Result<Running, String> {
    let path = root.join(&j.path);
    let content = j.content.clone().into_bytes();
    let c = ctx(&stop, &counters, &sink, 0.0, j.runtime);
    let (p, want, pause) = (path.clone(), content.clone(), Duration::from_micros(j.pause_us));
    let t = spawn("read-loop".into(), move || {
        while !c.done() {
            let submit = now_ns();
            match std::fs::read(&p) {
                Ok(d) => {
                    let n = d.len() as u64;
                    c.record(Op::ReadFile, 0, submit, n, Ok(()), d != want);
                }
                Err(e) => c.record(
                    Op::ReadFile,
                    0,
                    submit,
                    0,
                    Err((errno(&e), format!("read {}: {e}", p.display()))),
                    false,
                ),
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    })?;
    Ok(Running {
        name: "read-loop".into(),
        counters,
        stop,
        threads: vec![t],
        verifier: Verifier::ReadLoop { path, content },
    })
}

fn open_file(path: &Path, direct: bool, create: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create(true);
    }
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

fn start_fio(
    j: &FioJob,
    root: &Path,
    sink: Arc<dyn Sink>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    seed: u64,
) -> Result<Running, String> {
    let dir = root.join(j.dir());
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let blocks_per_file = j.size.0 / j.bs.0;
    let mut jobs = Vec::new();
    for n in 0..j.numjobs {
        let paths: Vec<PathBuf> = (0..j.nrfiles).map(|f| dir.join(format!("{}.{n}.{f}", j.name))).collect();
        for p in &paths {
            let f = open_file(p, false, true).map_err(|e| format!("create {}: {e}", p.display()))?;
            f.set_len(j.size.0).map_err(|e| format!("size {}: {e}", p.display()))?;
        }
        let generations = (0..blocks_per_file * j.nrfiles as u64).map(|_| AtomicU32::new(0)).collect();
        jobs.push(Arc::new(FioFiles { paths, blocks_per_file, generations }));
    }
    let workers = (j.numjobs * j.iodepth) as usize;
    // Every worker lays out its blocks, then all start the timed loop together.
    let barrier = Arc::new(Barrier::new(workers));
    counters.laying_out.store(workers as u32, Ordering::Relaxed);
    let mut threads = Vec::new();
    for (n, files) in jobs.iter().enumerate() {
        for w in 0..j.iodepth {
            let (job, files, sink, stop, counters, barrier) =
                (j.clone(), files.clone(), sink.clone(), stop.clone(), counters.clone(), barrier.clone());
            let worker_seed = seed ^ ((n as u64) << 32) ^ w as u64;
            let file_base = (n * job.nrfiles as usize) as u32;
            threads.push(spawn(format!("{}.{n}.{w}", j.name), move || {
                fio_worker(
                    &job,
                    n as u16,
                    w as u64,
                    &files,
                    file_base,
                    worker_seed,
                    seed,
                    &sink,
                    &stop,
                    &counters,
                    &barrier,
                )
            })?);
        }
    }
    Ok(Running {
        name: j.name.clone(),
        counters,
        stop,
        threads,
        verifier: Verifier::Fio { jobs, bs: j.bs.0, root: root.to_path_buf() },
    })
}

#[allow(clippy::too_many_arguments)] // one worker's whole world; a struct would only rename it
fn fio_worker(
    j: &FioJob,
    job: u16,
    worker: u64,
    files: &FioFiles,
    file_base: u32,
    worker_seed: u64,
    seed: u64,
    sink: &Arc<dyn Sink>,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    barrier: &Barrier,
) {
    let bs = j.bs.0;
    let iodepth = j.iodepth as u64;
    let mut buf = Aligned::new(bs as usize);
    let handles: Vec<std::io::Result<File>> =
        files.paths.iter().map(|p| open_file(p, j.direct, false)).collect();
    // The blocks this worker owns: every iodepth-th, across the job's files.
    let owned: Vec<(usize, u64)> = (0..files.paths.len())
        .flat_map(|f| (0..files.blocks_per_file).map(move |b| (f, b)))
        .enumerate()
        .filter(|(i, _)| *i as u64 % iodepth == worker)
        .map(|(_, fb)| fb)
        .collect();
    for &(f, b) in &owned {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if let Ok(fh) = &handles[f] {
            fill_block(buf.as_mut(), file_base + f as u32, b * bs, 1, seed);
            if fh.write_all_at(buf.as_mut(), b * bs).is_ok() {
                files.generation(f, b).store(1, Ordering::Relaxed);
            }
        }
    }
    if j.invalidate {
        for fh in handles.iter().flatten() {
            let _ = fh.sync_data();
            // SAFETY: posix_fadvise only reads its arguments; the fd is open.
            unsafe {
                libc::posix_fadvise(
                    std::os::unix::io::AsRawFd::as_raw_fd(fh),
                    0,
                    0,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
    }
    counters.laying_out.fetch_sub(1, Ordering::Relaxed);
    barrier.wait();
    if owned.is_empty() {
        return;
    }
    let c = ctx(stop, counters, sink, j.ramp_time, j.runtime);
    let ops_rate = match (j.rate_iops, j.rate) {
        (Some(iops), _) => Some(iops as f64 / iodepth as f64),
        (None, Some(r)) => Some(r.0 as f64 / bs as f64 / iodepth as f64),
        _ => None,
    };
    let mut pacer = Pacer::new(ops_rate);
    let mut rng = Rng::new(worker_seed);
    let read_pct = j.rw.read_percent(j.rwmixread) as u64;
    let mut next = 0usize;
    let mut writes = 0u64;
    let mut order: Vec<usize> = (0..owned.len()).collect();
    while !c.done() {
        pacer.wait();
        // Random jobs visit every block once per pass in a new random order, as fio does by
        // default (its "random map"); sequential jobs walk the blocks in order.
        if j.rw.random() && next == 0 {
            for k in (1..order.len()).rev() {
                order.swap(k, rng.below(k as u64 + 1) as usize);
            }
        }
        let i = order[next];
        next = (next + 1) % order.len();
        let (f, b) = owned[i];
        let offset = b * bs;
        let fh = match &handles[f] {
            Ok(fh) => fh,
            Err(e) => {
                c.record(
                    Op::Read,
                    job,
                    now_ns(),
                    0,
                    Err((errno(e), format!("open {}: {e}", files.paths[f].display()))),
                    false,
                );
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        let gen = files.generation(f, b);
        if rng.below(100) < read_pct {
            let submit = now_ns();
            let r = fh.read_at(buf.as_mut(), offset);
            let complete = now_ns();
            match r {
                Ok(n) => {
                    // Checked after the completion time is taken: verification is not latency.
                    let mismatch = j.verify
                        && check_block(
                            buf.as_mut(),
                            n,
                            file_base + f as u32,
                            offset,
                            gen.load(Ordering::Relaxed),
                        )
                        .is_err();
                    c.record_at(Op::Read, job, submit, complete, n as u64, Ok(()), mismatch);
                }
                Err(e) => c.record_at(
                    Op::Read,
                    job,
                    submit,
                    complete,
                    0,
                    Err((errno(&e), format!("read {}: {e}", files.paths[f].display()))),
                    false,
                ),
            }
        } else {
            let g = gen.load(Ordering::Relaxed) + 1;
            fill_block(buf.as_mut(), file_base + f as u32, offset, g, seed);
            let submit = now_ns();
            match fh.write_all_at(buf.as_mut(), offset) {
                Ok(()) => {
                    gen.store(g, Ordering::Relaxed);
                    c.record(Op::Write, job, submit, bs, Ok(()), false);
                }
                Err(e) => c.record(
                    Op::Write,
                    job,
                    submit,
                    0,
                    Err((errno(&e), format!("write {}: {e}", files.paths[f].display()))),
                    false,
                ),
            }
            writes += 1;
            let every = if j.fsync > 0 { j.fsync } else { j.fdatasync } as u64;
            if every > 0 && writes % every == 0 {
                let submit = now_ns();
                let r = if j.fsync > 0 { fh.sync_all() } else { fh.sync_data() };
                c.record(Op::Fsync, job, submit, 0, r.map_err(|e| (errno(&e), format!("fsync: {e}"))), false);
            }
        }
    }
}

fn start_metadata(
    j: &MetadataJob,
    root: &Path,
    sink: Arc<dyn Sink>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    seed: u64,
) -> Result<Running, String> {
    let mut threads = Vec::new();
    let mut live = Vec::new();
    let mut dirs = Vec::new();
    for n in 0..j.numjobs {
        let dir = root.join(j.dir()).join(n.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let names = Arc::new(Mutex::new(Vec::new()));
        live.push(names.clone());
        dirs.push(dir.clone());
        let c = ctx(&stop, &counters, &sink, 0.0, j.runtime);
        let (job, mix, target) = (j.clone(), j.mix, j.files as usize);
        threads.push(spawn(format!("{}.{n}", j.name), move || {
            let mut rng = Rng::new(seed ^ n as u64);
            let mut pacer = Pacer::new(job.rate_iops.map(|r| r as f64));
            let mut counter = 0u64;
            let mut local: VecDeque<String> = VecDeque::new();
            let total = (mix.create + mix.stat + mix.rename + mix.unlink).max(1) as u64;
            while !c.done() {
                pacer.wait();
                let mut pick = rng.below(total) as u32;
                // Keep the population near its target.
                if local.len() < target / 2 {
                    pick = 0;
                } else if local.len() > target * 2 {
                    pick = mix.create + mix.stat + mix.rename;
                }
                let submit = now_ns();
                let (op, r) = if pick < mix.create || local.is_empty() {
                    counter += 1;
                    let name = format!("f{counter}");
                    let r = File::create(dir.join(&name)).map(|_| ());
                    if r.is_ok() {
                        local.push_back(name);
                    }
                    (Op::Create, r)
                } else if pick < mix.create + mix.stat {
                    let name = &local[rng.below(local.len() as u64) as usize];
                    (Op::Stat, std::fs::metadata(dir.join(name)).map(|_| ()))
                } else if pick < mix.create + mix.stat + mix.rename {
                    let i = rng.below(local.len() as u64) as usize;
                    counter += 1;
                    let to = format!("f{counter}");
                    let r = std::fs::rename(dir.join(&local[i]), dir.join(&to));
                    if r.is_ok() {
                        local[i] = to;
                    }
                    (Op::Rename, r)
                } else {
                    let i = rng.below(local.len() as u64) as usize;
                    let name = local.swap_remove_back(i).unwrap_or_default();
                    (Op::Unlink, std::fs::remove_file(dir.join(name)))
                };
                c.record(op, n as u16, submit, 0, r.map_err(|e| (errno(&e), format!("{op}: {e}"))), false);
                if let Ok(mut l) = names.lock() {
                    l.clear();
                    l.extend(local.iter().cloned());
                }
            }
        })?);
    }
    Ok(Running { name: j.name.clone(), counters, stop, threads, verifier: Verifier::Metadata { live, dirs } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Rw, Size};
    use crate::record::Decoder;

    fn collect(buf: &RecordBuffer) -> Vec<OpRecord> {
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

    fn run_for(w: &Workload, root: &Path, ms: u64) -> (Running, Arc<RecordBuffer>) {
        let buf = Arc::new(RecordBuffer::new(1 << 20));
        let mut r = start(w, root, buf.clone(), 7).expect("start");
        std::thread::sleep(Duration::from_millis(ms));
        r.stop();
        (r, buf)
    }

    #[test]
    fn a_random_write_job_verifies_clean_and_a_flipped_byte_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("rw", Rw::Randrw);
        j.bs = Size(4096);
        j.size = Size(256 << 10);
        j.nrfiles = 2;
        j.iodepth = 2;
        j.fsync = 8;
        let w = Workload::Fio(j);
        let (r, buf) = run_for(&w, dir.path(), 200);
        let recs = collect(&buf);
        assert!(recs.iter().any(|o| o.op == Op::Write) && recs.iter().any(|o| o.op == Op::Read));
        assert!(recs.iter().any(|o| o.op == Op::Fsync));
        assert!(recs.iter().all(|o| !o.failed() && o.flags & FLAG_MISMATCH == 0), "clean run");
        assert_eq!(r.counters.mismatches.load(Ordering::Relaxed), 0);
        let report = r.verify(buf.as_ref());
        assert_eq!(report.blocks, 128);
        assert!(report.clean(), "{:?}", report.bad);

        // One byte flipped behind the engine's back: exactly that block is reported.
        let file = dir.path().join("miglab/rw/rw.0.1");
        let mut data = std::fs::read(&file).expect("read");
        data[5 * 4096 + 100] ^= 0x40;
        std::fs::write(&file, &data).expect("write");
        let report = r.verify(buf.as_ref());
        assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
        assert_eq!(report.bad[0].path, "miglab/rw/rw.0.1");
        assert_eq!(report.bad[0].offset, 5 * 4096);
        assert_eq!(report.bad[0].problem, Problem::Corrupt);
    }

    #[test]
    fn a_lost_write_shows_as_stale() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("w", Rw::Write);
        j.size = Size(64 << 10);
        let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 100);
        let file = dir.path().join("miglab/w/w.0.0");
        // Put back generation 1 of block 0 (as if the latest write never reached the disk).
        let mut old = vec![0u8; 4096];
        fill_block(&mut old, 0, 0, 1, 7);
        let f = OpenOptions::new().write(true).open(&file).expect("open");
        f.write_all_at(&old, 0).expect("write");
        let report = r.verify(buf.as_ref());
        assert!(
            matches!(report.bad.first().map(|b| &b.problem), Some(Problem::Stale { found: 1, .. })),
            "{:?}",
            report.bad
        );
    }

    #[test]
    fn runtime_and_rate_are_honoured() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("r", Rw::Read);
        j.size = Size(64 << 10);
        j.runtime = Some(0.3);
        j.rate_iops = Some(100);
        let buf = Arc::new(RecordBuffer::new(1 << 16));
        let r = start(&Workload::Fio(j), dir.path(), buf.clone(), 1).expect("start");
        let t = Instant::now();
        while !r.finished() {
            assert!(t.elapsed() < Duration::from_secs(5), "runtime not honoured");
            std::thread::sleep(Duration::from_millis(10));
        }
        let n = collect(&buf).len();
        assert!((20..=40).contains(&n), "100 IOPS for 0.3 s gave {n} ops");
    }

    #[test]
    fn metadata_and_read_loop_run_and_verify() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = Workload::Metadata(MetadataJob { files: 8, ..toml::from_str("").expect("defaults") });
        let (r, buf) = run_for(&m, dir.path(), 100);
        let ops: Vec<Op> = collect(&buf).iter().map(|o| o.op).collect();
        assert!(ops.contains(&Op::Create) && ops.contains(&Op::Stat), "{ops:?}");
        assert_eq!(
            r.counters.errors.load(Ordering::Relaxed),
            0,
            "{:?}",
            r.counters.last_error.lock().map(|e| e.clone())
        );
        assert!(r.verify(buf.as_ref()).clean());

        std::fs::create_dir_all(dir.path().join("miglab")).expect("mkdir");
        std::fs::write(dir.path().join("miglab/hello"), "Hello world\n").expect("write");
        let (r, buf) = run_for(&Workload::ReadLoop(ReadLoopJob::default()), dir.path(), 50);
        assert!(collect(&buf).iter().all(|o| o.op == Op::ReadFile && o.flags == 0));
        assert!(r.verify(buf.as_ref()).clean());
    }

    #[test]
    fn a_full_buffer_drops_and_counts() {
        let b = RecordBuffer::new(2);
        for _ in 0..5 {
            b.push_record(&Record::Heartbeat { seq: 0, guest_ns: 0 });
        }
        assert_eq!(b.dropped.load(Ordering::Relaxed), 3);
    }
}
