//! fio-style jobs: a whole job file's jobs, each with its clones (`numjobs`), run as fio runs
//! them — concurrently unless `stonewall`/`wait_for` order them. The layout (large sequential
//! writes, as fio lays out files), the timed loop (one request in flight per clone with a
//! synchronous engine, up to `iodepth` on io_uring), and the verify pass.
//!
//! The rooms: [`files`] (the shared files and each unit's generation), [`picker`] (what a job
//! does next), [`uring`] (the asynchronous engine).

mod files;
mod picker;
mod uring;

use super::{errno, now_ns, spawn, Counters, Ctx, OpError, Pacer, Rng, Sink};
use crate::job::{FioFile, FioJob};
use crate::record::Op;
use crate::verify::{Problem, ReplacedPath, RunTag, VerifyReport};
use files::FileState;
use picker::{Next, Picker, Region};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Layout writes at least this much per call: bs-sized direct writes made a 4 KiB job over a
/// few hundred MiB spend minutes laying out.
const LAYOUT_CHUNK: u64 = 4 << 20;

/// A memory buffer aligned for O_DIRECT.
pub(super) struct Aligned {
    ptr: *mut u8,
    len: usize,
    layout: std::alloc::Layout,
}

// SAFETY: the buffer is owned by one thread at a time.
unsafe impl Send for Aligned {}

impl Aligned {
    pub(super) fn new(len: usize) -> Self {
        let layout =
            std::alloc::Layout::from_size_align(len.max(1), 4096).unwrap_or(std::alloc::Layout::new::<u8>());
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Self { ptr, len, layout }
    }
    pub(super) fn as_mut(&mut self) -> &mut [u8] {
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

fn open_file(path: &Path, direct: bool, sync: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    let mut flags = 0;
    if direct {
        flags |= libc::O_DIRECT;
    }
    if sync {
        flags |= libc::O_SYNC;
    }
    o.custom_flags(flags);
    o.open(path)
}

fn drop_cache(f: &File) {
    // SAFETY: posix_fadvise only reads its arguments; the fd is open.
    unsafe { libc::posix_fadvise(std::os::unix::io::AsRawFd::as_raw_fd(f), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Every job's progress, for the ones that wait for it and for fio's `flow`.
struct Shared {
    /// Clones of each job still running.
    running: Vec<AtomicU32>,
    /// Per `flow_id`: ops issued by all jobs with a flow, and their weights' sum.
    flows: BTreeMap<u32, (AtomicU64, i64)>,
}

/// A clone's files: an index into the file states, and its region in each.
type CloneFiles = Vec<(usize, Region)>;

/// The files of every job: one state per path, whoever names it (numbered in the order they
/// are first named), and each clone's files with its region in each.
fn plan_files(file: &FioFile, root: &Path, seed: u64) -> (Vec<Arc<FileState>>, Vec<CloneFiles>) {
    // Each path's number (as `files` numbers them), its unit and verification, and its size.
    let shared = file.files();
    let number: BTreeMap<&str, usize> =
        shared.iter().enumerate().map(|(i, f)| (f.path.as_str(), i)).collect();
    let mut size = vec![0u64; shared.len()];
    let mut rng = Rng::new(seed ^ 0xf11e);
    let regions = file
        .instances()
        .into_iter()
        .map(|(j, n)| {
            let job = &file.jobs[j];
            job.file_names(n)
                .into_iter()
                .map(|name| {
                    let len = job.file_size_with(rng.next_u64());
                    let i = number[format!("{}/{name}", job.dir()).as_str()];
                    size[i] = size[i].max(job.offset.0 + len);
                    (i, Region { start: job.offset.0, len })
                })
                .collect()
        })
        .collect();
    let states = shared
        .iter()
        .zip(size)
        .enumerate()
        .map(|(i, (f, size))| {
            Arc::new(FileState::new(root.join(&f.path), i as u32, f.unit, size - size % f.unit, f.verified))
        })
        .collect();
    (states, regions)
}

/// Creates every file and starts one worker per clone of every job. Each file is laid out by
/// the first clone that names it; all clones then start together (as fio's do), each after
/// the jobs it waits for.
pub(super) fn start(
    file: &FioFile,
    root: &Path,
    sink: &Arc<dyn Sink>,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    tag: RunTag,
) -> Result<(Vec<JoinHandle<()>>, Verifier), String> {
    let (states, regions) = plan_files(file, root, tag.seed);
    for s in &states {
        if let Some(d) = s.path.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("create {}: {e}", d.display()))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&s.path)
            .map_err(|e| format!("create {}: {e}", s.path.display()))?;
        f.set_len(s.size).map_err(|e| format!("size {}: {e}", s.path.display()))?;
    }
    let instances = file.instances();
    // Added to, not set: another room's layout may share the counters (a state job's tree).
    counters.layout_total.fetch_add(states.iter().map(|s| s.size).sum(), Ordering::SeqCst);
    counters.laying_out.fetch_add(instances.len() as u32, Ordering::SeqCst);
    let shared = Arc::new(Shared {
        running: file.jobs.iter().map(|j| AtomicU32::new(j.numjobs)).collect(),
        flows: file.jobs.iter().filter(|j| j.flow != 0).fold(
            BTreeMap::new(),
            |mut m: BTreeMap<u32, (AtomicU64, i64)>, j| {
                m.entry(j.flow_id).or_insert((AtomicU64::new(0), 0)).1 += j.flow.abs();
                m
            },
        ),
    });
    let barrier = Arc::new(Barrier::new(instances.len()));
    let mut laid_out = vec![false; states.len()];
    let mut threads = Vec::new();
    for (i, ((j, n), regions)) in instances.into_iter().zip(regions).enumerate() {
        let job = Arc::new(file.jobs[j].clone());
        let mut lay_out = Vec::new();
        for (f, _) in &regions {
            if !std::mem::replace(&mut laid_out[*f], true) {
                lay_out.push(*f);
            }
        }
        let w = Worker {
            job,
            section: j,
            n: i as u16,
            files: regions.iter().map(|(f, _)| states[*f].clone()).collect(),
            regions: regions.iter().map(|(_, r)| *r).collect(),
            waits_for: file.waits_for(j),
            shared: shared.clone(),
            tag,
            sink: sink.clone(),
            stop: stop.clone(),
            counters: counters.clone(),
            flow_count: AtomicI64::new(0),
        };
        let barrier = barrier.clone();
        let to_lay_out: Vec<Arc<FileState>> = lay_out.iter().map(|f| states[*f].clone()).collect();
        threads.push(spawn(format!("{}.{n}", file.jobs[j].name), move || {
            for f in &to_lay_out {
                w.lay_out(f);
            }
            w.counters.laying_out.fetch_sub(1, Ordering::Relaxed);
            barrier.wait();
            if w.wait_turn() {
                w.run();
            }
            w.shared.running[w.section].fetch_sub(1, Ordering::Release);
        })?);
    }
    Ok((threads, Verifier { files: states, root: root.to_path_buf(), tag }))
}

struct Worker {
    job: Arc<FioJob>,
    /// The job's index in the file, and this clone's index across all clones (the records'
    /// `job`), and among the job's clones.
    section: usize,
    n: u16,
    files: Vec<Arc<FileState>>,
    regions: Vec<Region>,
    waits_for: Vec<usize>,
    shared: Arc<Shared>,
    tag: RunTag,
    sink: Arc<dyn Sink>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    /// Ops this clone issued under `flow`.
    flow_count: AtomicI64,
}

impl Worker {
    /// Writes generation 1 of every unit in large sequential writes, then makes it durable
    /// and (as fio's `invalidate`) drops it from the page cache.
    fn lay_out(&self, file: &FileState) {
        let unit = file.unit;
        let per_chunk = (LAYOUT_CHUNK / unit).max(1);
        let mut buf = vec![0u8; (per_chunk * unit) as usize];
        let mut rng = Rng::new(self.tag.seed ^ u64::from(file.number));
        if !file.verified {
            buf.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        }
        let path = &file.path;
        let fh = match open_file(path, false, false) {
            Ok(fh) => fh,
            Err(e) => return self.counters.layout_failed(format!("opening {}: {e}", path.display())),
        };
        let mut u = 0;
        while u < file.units() && !self.stop.load(Ordering::Relaxed) {
            let n = per_chunk.min(file.units() - u);
            let chunk = &mut buf[..(n * unit) as usize];
            if file.verified {
                file.fill(chunk, u * unit, self.tag);
            }
            match fh.write_all_at(chunk, u * unit) {
                Ok(()) => file.set_generation(u * unit, n * unit, 1),
                Err(e) => {
                    self.counters.layout_failed(format!("writing {} at {}: {e}", path.display(), u * unit))
                }
            }
            self.counters.layout_done.fetch_add(n * unit, Ordering::Relaxed);
            u += n;
        }
        if let Err(e) = fh.sync_all() {
            self.counters.layout_failed(format!("syncing {}: {e}", path.display()));
        }
        if self.job.invalidate {
            drop_cache(&fh);
        }
    }

    /// Waits for the jobs this one waits for, then its `startdelay`; false if stopped first.
    fn wait_turn(&self) -> bool {
        while !self.waits_for.iter().all(|j| self.shared.running[*j].load(Ordering::Acquire) == 0) {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.sleep(Duration::from_secs_f64(self.job.startdelay))
    }

    /// Sleeps `d` unless stopped meanwhile (false then).
    fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
        }
        !self.stop.load(Ordering::Relaxed)
    }

    fn open_all(&self) -> Vec<std::io::Result<File>> {
        self.files.iter().map(|f| open_file(&f.path, self.job.direct, self.job.sync)).collect()
    }

    fn pacer(&self) -> Pacer {
        let j = &self.job;
        Pacer::fio(j.rate.map(|r| r.0), j.rate_iops, j.rate_process, self.tag.seed ^ u64::from(self.n))
    }

    fn picker(&self) -> Picker {
        Picker::new(&self.job, &self.regions, self.tag.seed ^ (u64::from(self.n) << 32))
    }

    /// Whether the job has more to do: a time-based job until its runtime, else `loops` passes.
    fn more(&self, c: &Ctx, pick: &Picker) -> bool {
        !c.done() && (self.job.time_based || pick.passes < self.job.loops)
    }

    /// fio's `flow`: waits while this job is ahead of its share of its flow's ops.
    fn flow_turn(&self, c: &Ctx) {
        let j = &self.job;
        let Some((total, weight)) = self.shared.flows.get(&j.flow_id).filter(|_| j.flow != 0) else { return };
        loop {
            let all = total.load(Ordering::Relaxed).max(1) as f64;
            let mine = self.flow_count.load(Ordering::Relaxed) as f64;
            if mine / all <= j.flow.abs() as f64 / (*weight).max(1) as f64 || c.done() {
                break;
            }
            std::thread::sleep(Duration::from_micros(j.flow_sleep_us.max(100)));
        }
        total.fetch_add(1, Ordering::Relaxed);
        self.flow_count.fetch_add(1, Ordering::Relaxed);
    }

    /// The timed loop of a synchronous engine: one op in flight.
    fn run(&self) {
        if self.job.ioengine.asynchronous() {
            return self.run_async();
        }
        let j = &self.job;
        let c = Ctx::new(&self.stop, &self.counters, &self.sink, j.ramp_time, j.runtime);
        let handles = self.open_all();
        let mut buf = Aligned::new(j.max_bs() as usize);
        let mut pacer = self.pacer();
        let mut pick = self.picker();
        let mut min_rate = MinRate::new(j.rate_min.map(|r| r.0));
        let (mut writes, mut ops) = (0u64, 0u64);
        while self.more(&c, &pick) {
            let next = pick.next();
            pacer.wait(next.len);
            self.flow_turn(&c);
            let fh = match &handles[next.file] {
                Ok(fh) => fh,
                Err(e) => {
                    self.open_failed(&c, next.read, next.file, e);
                    continue;
                }
            };
            if !self.claim(&c, &next) {
                break;
            }
            let buf = &mut buf.as_mut()[..next.len as usize];
            if next.read {
                self.read(&c, fh, &next, buf);
            } else {
                self.write(&c, fh, &next, buf);
                writes += 1;
                if j.sync_due(writes) {
                    self.sync(&c, fh, j.fsync > 0);
                }
            }
            self.files[next.file].release(next.off, next.len, !next.read);
            ops += 1;
            if j.thinktime_us > 0 && ops % u64::from(j.thinktime_blocks) == 0 {
                self.sleep(Duration::from_micros(j.thinktime_us));
            }
            if let Some(why) = min_rate.check(next.len) {
                self.rate_not_met(&c, &next, why);
                break;
            }
        }
        self.close(&c, handles);
    }

    /// Takes the op's units, waiting while another clone's op holds them; false if stopped.
    fn claim(&self, c: &Ctx, next: &Next) -> bool {
        let f = &self.files[next.file];
        while !f.claim(next.off, next.len, !next.read) {
            if c.done() {
                return false;
            }
            std::thread::yield_now();
        }
        true
    }

    /// `end_fsync`, `fsync_on_close`, and the handles kept for the verify pass.
    fn close(&self, c: &Ctx, handles: Vec<std::io::Result<File>>) {
        if self.job.end_fsync || self.job.fsync_on_close {
            for fh in handles.iter().flatten() {
                self.sync(c, fh, true);
            }
        }
        for (f, fh) in self.files.iter().zip(handles) {
            if let Ok(fh) = fh {
                f.hold(fh);
            }
        }
    }

    /// fio ends a job that cannot keep its `rate_min`, saying so: so does the engine.
    fn rate_not_met(&self, c: &Ctx, next: &Next, why: String) {
        let op = if next.read { Op::Read } else { Op::Write };
        let msg = format!("job {}: {why}; the job ends here, as fio's does", self.job.name);
        c.record(op, self.n, now_ns(), 0, Err((libc::ETIME as u32, msg)), false);
    }

    fn open_failed(&self, c: &Ctx, read: bool, f: usize, e: &std::io::Error) {
        let op = if read { Op::Read } else { Op::Write };
        let why = format!("open {}: {e}", self.files[f].path.display());
        c.record(op, self.n, now_ns(), 0, Err((errno(e), why)), false);
        std::thread::sleep(Duration::from_millis(10));
    }

    fn read(&self, c: &Ctx, fh: &File, next: &Next, buf: &mut [u8]) {
        let submit = now_ns();
        let r = fh.read_at(buf, next.off);
        let complete = now_ns();
        match r {
            Ok(n) => {
                // Checked after the completion time is taken: verification is not latency.
                let mismatch = self.inline_mismatch(buf, n, next);
                c.record_at(Op::Read, self.n, submit, complete, n as u64, Ok(()), mismatch);
            }
            Err(e) => {
                let why = format!("read {}: {e}", self.files[next.file].path.display());
                c.record_at(Op::Read, self.n, submit, complete, 0, Err((errno(&e), why)), false)
            }
        }
    }

    /// Whether a read found something other than what the run last wrote (a missing unit
    /// too); an errored write that landed is the verify pass's to report.
    fn inline_mismatch(&self, buf: &[u8], n: usize, next: &Next) -> bool {
        self.files[next.file].verified
            && !matches!(
                self.files[next.file].check(buf, n, next.off, self.tag),
                Ok(()) | Err(Problem::ErroredWriteLanded { .. })
            )
    }

    fn write(&self, c: &Ctx, fh: &File, next: &Next, buf: &mut [u8]) {
        let f = &self.files[next.file];
        if f.verified {
            f.fill(buf, next.off, self.tag);
        }
        let submit = now_ns();
        match fh.write_all_at(buf, next.off) {
            Ok(()) => {
                f.written(next.off, next.len, true);
                c.record(Op::Write, self.n, submit, next.len, Ok(()), false);
            }
            Err(e) => {
                // It may still have landed: the verify pass tells.
                f.written(next.off, next.len, false);
                let why = format!("write {}: {e}", f.path.display());
                c.record(Op::Write, self.n, submit, 0, Err((errno(&e), why)), false);
            }
        }
    }

    fn sync(&self, c: &Ctx, fh: &File, full: bool) {
        let submit = now_ns();
        let r: Result<(), OpError> =
            if full { fh.sync_all() } else { fh.sync_data() }.map_err(|e| (errno(&e), format!("fsync: {e}")));
        c.record(Op::Fsync, self.n, submit, 0, r, false);
    }
}

/// fio's `rate_min` check: at a completion at least a second (fio's `ratecycle`) after the
/// last check, the bytes since then over the time since then.
struct MinRate {
    min: Option<u64>,
    since: Instant,
    bytes: u64,
}

impl MinRate {
    fn new(min: Option<u64>) -> Self {
        Self { min, since: Instant::now(), bytes: 0 }
    }

    /// Counts `bytes` done; why the rate was not kept, if it was not.
    fn check(&mut self, bytes: u64) -> Option<String> {
        let min = self.min?;
        self.bytes += bytes;
        let spent = self.since.elapsed();
        if spent < Duration::from_secs(1) {
            return None;
        }
        let rate = self.bytes as f64 / spent.as_secs_f64();
        self.since = Instant::now();
        self.bytes = 0;
        (rate < min as f64)
            .then(|| format!("min rate {min} B/s not met: {rate:.0} B/s over {:.1} s", spent.as_secs_f64()))
    }
}

/// Reads every unit of every file back.
pub(super) struct Verifier {
    files: Vec<Arc<FileState>>,
    root: PathBuf,
    tag: RunTag,
}

/// The verify pass reads this much at once (whole units).
const VERIFY_CHUNK: u64 = 1 << 20;

impl Verifier {
    /// Opens `path` so that reads reach the file system, not a cache: O_DIRECT where the file
    /// system takes it, else after writing back and dropping the file's cached pages.
    fn open_uncached(&self, path: &Path, unit: u64) -> std::io::Result<(File, String)> {
        if unit % 4096 == 0 {
            match open_file(path, true, false) {
                Ok(f) => return Ok((f, "O_DIRECT".into())),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        let f = open_file(path, false, false)?;
        let _ = f.sync_all();
        drop_cache(&f);
        let why = if unit % 4096 == 0 { "O_DIRECT refused" } else { "bs not a multiple of 4 KiB" };
        Ok((f, format!("buffered after fadvise(DONTNEED) ({why})")))
    }

    pub(super) fn verify(&self, sink: &dyn Sink, give_up: &dyn Fn() -> bool) -> VerifyReport {
        let mut report = VerifyReport::default();
        // Said as the read mode when no file could be opened at all.
        let mut unopened = None;
        for (i, file) in self.files.iter().enumerate() {
            // verify = false: nothing in the file says what it should hold.
            if !file.verified {
                report.unverified_files += 1;
                continue;
            }
            let path = &file.path;
            let rel = path.strip_prefix(&self.root).unwrap_or(path).display().to_string();
            // The truth about the guest's data is the file it holds open (reopened through
            // /proc, uncached): its path may name another file by now.
            let held = file.held();
            let opened = match held {
                Some((fd, ..)) => self
                    .open_uncached(Path::new(&format!("/proc/self/fd/{fd}")), file.unit)
                    .map(|(fh, mode)| (fh, format!("{mode}, through the guest's open handles"))),
                None => self.open_uncached(path, file.unit),
            };
            match &opened {
                Ok((_, mode)) if report.read_mode.is_empty() => report.read_mode = mode.clone(),
                Err(e) => {
                    let how = if held.is_some() { "through the guest's open handle" } else { "by path" };
                    unopened.get_or_insert_with(|| format!("{rel} could not be opened {how}: {e}"));
                }
                _ => {}
            }
            let per = (VERIFY_CHUNK / file.unit).max(1);
            let mut buf = Aligned::new((per * file.unit) as usize);
            let mut u = 0;
            while u < file.units() {
                if give_up() {
                    return report;
                }
                let n = per.min(file.units() - u);
                let chunk = &mut buf.as_mut()[..(n * file.unit) as usize];
                let submit = now_ns();
                let (got, status) = match &opened {
                    Ok((fh, _)) => read_full(fh, chunk, u * file.unit),
                    // No file: its units are not there (missing).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        chunk.fill(0);
                        (0, 0)
                    }
                    Err(e) => (0, errno(e)),
                };
                let complete = now_ns();
                let mut mismatch = false;
                for k in 0..n {
                    let unit = &chunk[(k * file.unit) as usize..((k + 1) * file.unit) as usize];
                    let have = got.saturating_sub((k * file.unit) as usize).min(file.unit as usize);
                    report.blocks += 1;
                    // A unit the pass could not read is unreadable, not lost: nothing says what
                    // it holds.
                    let result = if status != 0 {
                        Err(Problem::Unreadable { errno: status })
                    } else {
                        crate::verify::check_block(unit, have, &file.expected(u + k, self.tag))
                    };
                    if let Err(problem) = result {
                        mismatch = true;
                        let offset = (u + k) * file.unit;
                        report.add(crate::verify::BadBlock { path: rel.clone(), offset, problem });
                    }
                }
                sink.push(super::verify_record(i as u16, submit, complete, got as u32, status, mismatch));
                u += n;
            }
            if let Some((_, dev, ino)) = held {
                report.replaced.extend(self.path_check(file, rel, (dev, ino)));
            }
        }
        if report.read_mode.is_empty() {
            report.read_mode = unopened.unwrap_or_default();
        }
        report
    }

    /// Whether the file's path still names the file the guest holds open; if not, what it
    /// holds.
    fn path_check(&self, file: &FileState, rel: String, (dev, ino): (u64, u64)) -> Option<ReplacedPath> {
        use std::os::unix::fs::MetadataExt;
        let units = file.units();
        match std::fs::metadata(&file.path) {
            Ok(m) if (m.dev(), m.ino()) == (dev, ino) => None,
            Ok(_) => {
                let mut buf = vec![0u8; file.unit as usize];
                let differ = match self.open_uncached(&file.path, file.unit) {
                    Ok((fh, _)) => (0..units)
                        .filter(|&u| {
                            let (got, status) = read_full(&fh, &mut buf, u * file.unit);
                            status != 0
                                || crate::verify::check_block(&buf, got, &file.expected(u, self.tag)).is_err()
                        })
                        .count() as u64,
                    Err(_) => units,
                };
                Some(ReplacedPath {
                    path: rel,
                    now: "another file".into(),
                    blocks_differ: differ,
                    blocks: units,
                })
            }
            Err(_) => {
                Some(ReplacedPath { path: rel, now: "nothing".into(), blocks_differ: units, blocks: units })
            }
        }
    }
}

/// Reads a whole buffer at `offset` (zero-filling what is not there); returns the bytes read
/// and the errno of a failed read (0 if none).
fn read_full(f: &File, buf: &mut [u8], offset: u64) -> (usize, u32) {
    let mut got = 0;
    let mut status = 0;
    while got < buf.len() {
        match f.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => {
                status = errno(&e);
                break;
            }
        }
    }
    buf[got..].fill(0);
    (got, status)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{collect, run_for, start_laid_out, TAG};
    use super::super::{start as start_workload, RecordBuffer, Verifier as AnyVerifier};
    use super::*;
    use crate::job::{IoEngine, Rw, Size, Workload};
    use crate::verify::fill_block;
    use std::time::{Duration, Instant};

    fn never() -> bool {
        false
    }

    #[test]
    fn a_random_write_job_verifies_clean_and_a_flipped_byte_is_found() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("rw", Rw::Randrw);
        j.bs = Size(4096);
        j.size = Size(512 << 10);
        j.nrfiles = 2;
        j.numjobs = 2;
        j.fsync = 8;
        let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 200);
        let recs = collect(&buf);
        assert!(recs.iter().any(|o| o.op == Op::Write) && recs.iter().any(|o| o.op == Op::Read));
        assert!(recs.iter().any(|o| o.op == Op::Fsync));
        assert!(recs.iter().all(|o| !o.failed() && o.flags & crate::record::FLAG_MISMATCH == 0), "clean run");
        assert!(recs.iter().any(|o| o.job == 1), "two jobs ran");
        assert_eq!(r.counters.mismatches.load(Ordering::Relaxed), 0);
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!(report.blocks, 2 * 128, "size is per job, shared by its 2 files");
        assert!(report.clean(), "{:?}", report.bad);
        assert!(!report.read_mode.is_empty());

        // One byte flipped behind the engine's back: exactly that block is reported.
        let file = dir.path().join("miglab/rw/rw.0.1");
        let mut data = std::fs::read(&file).expect("read");
        data[5 * 4096 + 100] ^= 0x40;
        std::fs::write(&file, &data).expect("write");
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
        assert_eq!(report.bad[0].path, "miglab/rw/rw.0.1");
        assert_eq!(report.bad[0].offset, 5 * 4096);
        assert_eq!(report.bad[0].problem, Problem::Corrupt);
        assert_eq!((report.mismatched(), report.missing()), (1, 0));
    }

    /// verify = false is off: the random 4k writes of the new user's job (`bs = 4k`, `size =
    /// 8m`) said "1328 of 2048 blocks mismatched, 720 missing" and failed the run. Now nothing
    /// is read back, and the report says which files were not.
    #[test]
    fn a_job_without_verify_is_not_verified() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("nv", Rw::Randwrite);
        j.bs = Size(4096);
        j.size = Size(512 << 10);
        j.nrfiles = 2;
        j.verify = false;
        let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 200);
        assert!(collect(&buf).iter().any(|o| o.op == Op::Write));
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!((report.blocks, report.unverified_files), (0, 2), "{report:?}");
        assert!(report.clean(), "{:?}", report.bad);
    }

    /// A third party replaces a file the guest holds open (a copy renamed over it) while the
    /// guest goes on writing: the pass reads by path said "mismatched" (lost data); the
    /// guest's writes are intact in the file it holds. Verified through the held handles, the
    /// run is clean, and the path's copy is its own finding.
    #[test]
    fn a_replaced_path_is_a_finding_and_the_guests_file_verifies_through_its_handle() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("rw", Rw::Randwrite);
        j.bs = Size(4096);
        j.size = Size(256 << 10);
        j.nrfiles = 1;
        j.time_based = true;
        let (mut r, buf) = start_laid_out(&Workload::Fio(j), dir.path());
        std::thread::sleep(Duration::from_millis(50));
        let file = dir.path().join("miglab/rw/rw.0.0");
        let copy = file.with_extension("copy");
        std::fs::copy(&file, &copy).expect("copy");
        std::fs::rename(&copy, &file).expect("replace");
        std::thread::sleep(Duration::from_millis(150));
        r.stop();
        let report = r.verify(buf.as_ref(), &never);
        assert!(report.clean(), "the guest's own file: {:?}", report.counts);
        assert_eq!(report.replaced.len(), 1, "{:?}", report.replaced);
        let p = &report.replaced[0];
        assert_eq!((p.path.as_str(), p.now.as_str(), p.blocks), ("miglab/rw/rw.0.0", "another file", 64));
        assert!(p.blocks_differ > 0, "the guest wrote after the copy: {p:?}");
        assert!(report.read_mode.contains("through the guest's open handles"), "{}", report.read_mode);

        // Without the handles (a workload that closed them), a file the pass cannot read (a
        // directory in its place: EISDIR) was "missing", lost data; it is unreadable. A file
        // that is gone is missing.
        let AnyVerifier::Fio(v) = &r.verifier else { panic!("a fio verifier") };
        v.files[0].forget_handle();
        std::fs::remove_file(&file).expect("rm");
        std::fs::create_dir(&file).expect("a directory in its place");
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!(
            (report.counts.unreadable, report.missing(), report.mismatched()),
            (64, 0, 0),
            "{:?}",
            report.counts
        );
        std::fs::remove_dir(&file).expect("rmdir");
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!((report.counts.unreadable, report.missing()), (0, 64), "{:?}", report.counts);
    }

    /// The most requests of one job in flight at once, from the records' own submit and
    /// completion times.
    fn most_in_flight(recs: &[crate::record::OpRecord], job: u16) -> usize {
        let mut edges: Vec<(u64, i32)> = recs
            .iter()
            .filter(|o| o.job == job && matches!(o.op, Op::Read | Op::Write))
            .flat_map(|o| [(o.submit_ns, 1), (o.complete_ns, -1)])
            .collect();
        // A completion at the same instant as a submission ends first.
        edges.sort();
        let (mut now, mut most) = (0i32, 0i32);
        for (_, d) in edges {
            now += d;
            most = most.max(now);
        }
        most as usize
    }

    #[test]
    fn io_uring_keeps_at_most_iodepth_in_flight_and_every_block_verifies() {
        for (engine, depth, batch) in [(IoEngine::IoUring, 8, 1), (IoEngine::Libaio, 16, 4)] {
            let dir = tempfile::tempdir().expect("tmp");
            let mut j = FioJob::new("q", Rw::Randrw);
            j.bs = Size(4096);
            j.size = Size(1 << 20);
            j.numjobs = 2;
            j.ioengine = engine;
            j.iodepth = depth;
            j.iodepth_batch_submit = batch;
            j.time_based = true;
            j.fsync = 32;
            let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 300);
            let recs = collect(&buf);
            assert!(recs.iter().any(|o| o.op == Op::Write) && recs.iter().any(|o| o.op == Op::Read));
            assert!(
                recs.iter().all(|o| !o.failed() && o.flags & crate::record::FLAG_MISMATCH == 0),
                "clean run"
            );
            for job in [0, 1] {
                let most = most_in_flight(&recs, job);
                assert!(
                    most <= depth as usize,
                    "{engine:?}: job {job} had {most} in flight, iodepth {depth}"
                );
                assert!(most > 1, "{engine:?}: job {job} never had two in flight");
            }
            let report = r.verify(buf.as_ref(), &never);
            assert_eq!(report.blocks, 2 * 256);
            assert!(report.clean(), "{engine:?}: {:?}", report.bad);
        }
    }

    /// With many writes in flight the generations stay exact: a block set back to an older
    /// generation behind the engine's back is found stale.
    #[test]
    fn a_lost_write_is_found_after_an_io_uring_job() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("lw", Rw::Randwrite);
        j.size = Size(256 << 10);
        j.ioengine = IoEngine::IoUring;
        j.iodepth = 16;
        j.time_based = true;
        let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 200);
        assert!(r.verify(buf.as_ref(), &never).clean(), "clean before the loss");
        let file = dir.path().join("miglab/lw/lw.0.0");
        let mut old = vec![0u8; 4096];
        fill_block(&mut old, 0, 3 * 4096, 1, TAG);
        OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open")
            .write_all_at(&old, 3 * 4096)
            .expect("write");
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
        assert!(matches!(report.bad[0].problem, Problem::Stale { found: 1, .. }), "{:?}", report.bad);
    }

    /// `io_uring_enter` failing with writes in flight: the writes drained after it are the
    /// generations on disk, so the file verifies. Before, the drain skipped their accounting and
    /// the blocks they wrote read as mismatched.
    #[test]
    fn writes_drained_after_a_failed_enter_are_accounted() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new(uring::enter_fails::JOB, Rw::Randwrite);
        j.size = Size(256 << 10);
        j.ioengine = IoEngine::IoUring;
        j.iodepth = 16;
        j.iodepth_batch_submit = 16;
        j.time_based = true;
        let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 300);
        let recs = collect(&buf);
        let failed: Vec<_> = recs.iter().filter(|o| o.failed()).collect();
        assert_eq!(failed.len(), 1, "one record for the failed enter: {failed:?}");
        let report = r.verify(buf.as_ref(), &never);
        assert!(report.clean(), "every drained write accounted: {:?}", report.bad);
    }

    #[test]
    fn a_lost_write_shows_as_stale_and_an_old_run_as_foreign() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("w", Rw::Write);
        j.size = Size(64 << 10);
        let (r, buf) = run_for(&Workload::Fio(j), dir.path(), 100);
        let file = dir.path().join("miglab/w/w.0.0");
        let f = OpenOptions::new().write(true).open(&file).expect("open");
        // Generation 1 of block 0, as if the latest write never reached the disk.
        let mut old = vec![0u8; 4096];
        fill_block(&mut old, 0, 0, 1, TAG);
        f.write_all_at(&old, 0).expect("write");
        // Block 1 as an earlier run of the same seed left it.
        fill_block(&mut old, 0, 4096, 1, RunTag { nonce: 1, ..TAG });
        f.write_all_at(&old, 4096).expect("write");
        let report = r.verify(buf.as_ref(), &never);
        let problems: Vec<&Problem> = report.bad.iter().map(|b| &b.problem).collect();
        assert!(matches!(problems[0], Problem::Stale { found: 1, .. }), "{problems:?}");
        assert_eq!(problems[1], &Problem::Foreign { seed: TAG.seed, nonce: 1 }, "{problems:?}");
    }

    #[test]
    fn runtime_rate_and_one_pass_are_honoured() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("r", Rw::Read);
        j.size = Size(64 << 10);
        j.runtime = Some(0.3);
        j.rate_iops = Some(100);
        let buf = Arc::new(RecordBuffer::new(1 << 16));
        let r = start_workload(&Workload::Fio(j), dir.path(), buf.clone(), TAG).expect("start");
        let t = Instant::now();
        while !r.finished() {
            assert!(t.elapsed() < Duration::from_secs(5), "runtime not honoured");
            std::thread::sleep(Duration::from_millis(10));
        }
        let n = collect(&buf).len();
        assert!((20..=40).contains(&n), "100 IOPS for 0.3 s gave {n} ops");

        // Without time_based: one pass over the job's 16 blocks, then the job ends.
        let mut j = FioJob::new("once", Rw::Randwrite);
        j.size = Size(64 << 10);
        j.time_based = false;
        j.end_fsync = true;
        let buf = Arc::new(RecordBuffer::new(1 << 16));
        let r = start_workload(&Workload::Fio(j), dir.path(), buf.clone(), TAG).expect("start");
        let t = Instant::now();
        while !r.finished() {
            assert!(t.elapsed() < Duration::from_secs(10), "one pass never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        let recs = collect(&buf);
        assert_eq!(recs.iter().filter(|o| o.op == Op::Write).count(), 16);
        assert_eq!(recs.iter().filter(|o| o.op == Op::Fsync).count(), 1, "end_fsync");
        assert!(r.verify(buf.as_ref(), &never).clean());
    }

    /// A whole job file: two clones writing one shared file at mixed sizes (bssplit) while a
    /// zipf reader reads it, then a stonewalled job that runs only after both: every unit of
    /// the shared file verifies, and the records say which clone did what.
    #[test]
    fn a_job_file_runs_its_jobs_in_order_on_shared_files_and_verifies() {
        let dir = tempfile::tempdir().expect("tmp");
        let text = "[global]\nfilename=shared\nsize=512k\n\n[w]\nrw=randwrite\nbssplit=4k/50:16k/50\nnumjobs=2\nnorandommap\nloops=4\n\n\
                    [r]\nrw=randread\nrandom_distribution=zipf:1.1\nloops=4\n\n[after]\nstonewall\nrw=read\nbs=64k\n";
        let f = crate::fio::import(text, "f", &crate::fio::Context::default()).expect("accepted").file;
        let buf = Arc::new(RecordBuffer::new(1 << 20));
        let r = start_workload(&Workload::FioFile(f), dir.path(), buf.clone(), TAG).expect("start");
        let t = Instant::now();
        while !r.finished() {
            assert!(t.elapsed() < Duration::from_secs(30), "the file never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        let recs = collect(&buf);
        assert!(recs.iter().all(|o| !o.failed() && o.flags & crate::record::FLAG_MISMATCH == 0), "clean");
        for clone in 0..4u16 {
            assert!(recs.iter().any(|o| o.job == clone), "clone {clone} ran");
        }
        let sizes: std::collections::BTreeSet<u32> =
            recs.iter().filter(|o| o.op == Op::Write).map(|o| o.bytes).collect();
        assert_eq!(sizes, [4096, 16384].into_iter().collect(), "bssplit's sizes");
        // The stonewalled job started after the last op of the others.
        let last_before = recs.iter().filter(|o| o.job < 3).map(|o| o.complete_ns).max().expect("ops");
        let first_after = recs.iter().filter(|o| o.job == 3).map(|o| o.submit_ns).min().expect("after ran");
        assert!(first_after >= last_before, "stonewall");
        let report = r.verify(buf.as_ref(), &never);
        assert_eq!(report.blocks, 128, "one shared file of 512k in 4k units");
        assert!(report.clean(), "{:?}", report.bad);
    }

    /// Runs a job file until it ends (at most `secs`), returning its records.
    fn run_file(text: &str, secs: u64) -> (super::super::Running, Vec<crate::record::OpRecord>) {
        let dir = tempfile::tempdir().expect("tmp");
        let f = crate::fio::import(text, "f", &crate::fio::Context::default()).expect("accepted").file;
        let buf = Arc::new(RecordBuffer::new(1 << 20));
        let mut r = start_workload(&Workload::FioFile(f), dir.path(), buf.clone(), TAG).expect("start");
        let t = Instant::now();
        while !r.finished() && t.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_millis(10));
        }
        r.stop();
        (r, collect(&buf))
    }

    /// fio's rate_min: a job paced below it says so once a second has passed, and ends.
    #[test]
    fn a_job_that_cannot_hold_its_rate_min_says_so_and_ends() {
        let (r, recs) =
            run_file("[slow]\nrw=read\nsize=256k\nrate_iops=4\nrate_min=1m\ntime_based\nruntime=10\n", 5);
        let failed: Vec<_> = recs.iter().filter(|o| o.failed()).collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].status, libc::ETIME as u32);
        let why = r.counters.last_error.lock().expect("lock").clone().unwrap_or_default();
        assert!(why.contains("min rate 1048576 B/s not met"), "{why}");
        assert!(recs.iter().filter(|o| !o.failed()).count() < 12, "the job ended at the first check");
    }

    /// wait_for and startdelay order the jobs; thinktime spaces a job's ops; flow keeps two
    /// jobs at the ratio of their weights.
    #[test]
    fn order_delay_thinktime_and_flow_do_what_fio_says() {
        let (_, recs) = run_file(
            "[global]\nsize=256k\nrw=randread\n[a]\ntime_based\nruntime=0.3\n[b]\nwait_for=a\nstartdelay=0.2\ntime_based\nruntime=0.3\n\
             thinktime=20ms\n",
            5,
        );
        let a_end = recs.iter().filter(|o| o.job == 0).map(|o| o.complete_ns).max().expect("a ran");
        let b: Vec<_> = recs.iter().filter(|o| o.job == 1).collect();
        let b_start = b.iter().map(|o| o.submit_ns).min().expect("b ran");
        assert!(b_start >= a_end + 190_000_000, "b started {} ms after a", (b_start - a_end) / 1_000_000);
        assert!(b.len() <= 17, "20 ms of think time after each op: {} ops in 0.3 s", b.len());
        let (_, recs) = run_file(
            "[global]\nsize=256k\nrw=randread\ntime_based\nruntime=0.5\nflow_id=1\n[light]\nflow=1\n[heavy]\nflow=3\n",
            5,
        );
        let n = |j: u16| recs.iter().filter(|o| o.job == j).count() as f64;
        let ratio = n(1) / n(0).max(1.0);
        assert!((2.0..4.5).contains(&ratio), "heavy/light = {ratio} ({} / {})", n(1), n(0));
    }

    #[test]
    fn layout_is_fast_and_reports_progress() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = FioJob::new("big", Rw::Randread);
        j.size = Size(32 << 20);
        j.bs = Size(4096);
        let buf = Arc::new(RecordBuffer::new(1 << 16));
        let mut r = start_workload(&Workload::Fio(j), dir.path(), buf.clone(), TAG).expect("start");
        while r.counters.laying_out.load(Ordering::Relaxed) > 0 {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(r.counters.layout_done.load(Ordering::Relaxed), 32 << 20);
        assert_eq!(r.counters.layout_total.load(Ordering::Relaxed), 32 << 20);
        r.stop();
        assert!(collect(&buf).iter().all(|o| o.flags == 0), "layout blocks read back clean");
    }
}
