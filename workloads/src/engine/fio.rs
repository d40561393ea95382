//! fio-style jobs: the layout (large sequential writes, as fio lays out files), the timed loop
//! (one request in flight per job with a synchronous engine), and the verify pass.
//!
//! A job owns its files. For every block it keeps the generation of the last acknowledged
//! write and of the last write that returned an error, so that a verify pass can tell a lost
//! write, a write that errored but landed, and a block of another run apart.

mod uring;

use super::{errno, now_ns, spawn, Counters, Ctx, OpError, Pacer, Rng, Sink};
use crate::job::FioJob;
use crate::record::Op;
use crate::verify::{
    check_block, fill_block, BadBlock, Expected, Problem, ReplacedPath, RunTag, VerifyReport,
};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::JoinHandle;

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

/// One job's files and what each block should hold.
struct JobFiles {
    paths: Vec<PathBuf>,
    /// The file number of the first file (files are numbered across jobs).
    first_file: u32,
    blocks_per_file: u64,
    /// Generation of the last acknowledged write, per block.
    acked: Vec<AtomicU32>,
    /// Generation of the last write that returned an error, per block (0: none).
    errored: Vec<AtomicU32>,
    /// The worker's open handles, kept after it stops: the verify pass reads the file the
    /// guest wrote through them, whatever a third party did to its path since.
    held: std::sync::Mutex<Vec<Option<File>>>,
}

impl JobFiles {
    /// Keeps a stopped worker's handles for the verify pass.
    fn hold(&self, handles: Vec<std::io::Result<File>>) {
        if let Ok(mut h) = self.held.lock() {
            for (slot, fh) in h.iter_mut().zip(handles) {
                *slot = fh.ok();
            }
        }
    }

    /// File `f`'s held handle: its descriptor and its file's identity (device, inode).
    fn held(&self, f: usize) -> Option<(i32, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        let h = self.held.lock().ok()?;
        let fh = h.get(f)?.as_ref()?;
        let m = fh.metadata().ok()?;
        Some((fh.as_raw_fd(), m.dev(), m.ino()))
    }

    /// The file and block of a block index across the job's files.
    fn locate(&self, idx: u64) -> (usize, u64) {
        ((idx / self.blocks_per_file) as usize, idx % self.blocks_per_file)
    }

    fn index(&self, f: usize, b: u64) -> usize {
        f * self.blocks_per_file as usize + b as usize
    }

    fn expected(&self, f: usize, b: u64, bs: u64, tag: RunTag) -> Expected {
        let i = self.index(f, b);
        Expected {
            file: self.first_file + f as u32,
            offset: b * bs,
            generation: self.acked[i].load(Ordering::Relaxed),
            errored: self.errored[i].load(Ordering::Relaxed),
            tag,
        }
    }
}

fn open_file(path: &Path, direct: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
}

fn drop_cache(f: &File) {
    // SAFETY: posix_fadvise only reads its arguments; the fd is open.
    unsafe { libc::posix_fadvise(std::os::unix::io::AsRawFd::as_raw_fd(f), 0, 0, libc::POSIX_FADV_DONTNEED) };
}

/// Creates the job's files and starts one worker per job.
pub(super) fn start(
    j: &FioJob,
    root: &Path,
    sink: &Arc<dyn Sink>,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    tag: RunTag,
) -> Result<(Vec<JoinHandle<()>>, Verifier), String> {
    let dir = root.join(j.dir());
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let (bpf, file_size) = (j.blocks_per_file(), j.file_size());
    let mut jobs = Vec::new();
    for n in 0..j.numjobs {
        let paths: Vec<PathBuf> = (0..j.nrfiles).map(|f| dir.join(format!("{}.{n}.{f}", j.name))).collect();
        for p in &paths {
            let f = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(p)
                .map_err(|e| format!("create {}: {e}", p.display()))?;
            f.set_len(file_size).map_err(|e| format!("size {}: {e}", p.display()))?;
        }
        let blocks = (bpf * j.nrfiles as u64) as usize;
        jobs.push(Arc::new(JobFiles {
            paths,
            first_file: n * j.nrfiles,
            blocks_per_file: bpf,
            acked: (0..blocks).map(|_| AtomicU32::new(0)).collect(),
            errored: (0..blocks).map(|_| AtomicU32::new(0)).collect(),
            held: std::sync::Mutex::new((0..j.nrfiles).map(|_| None).collect()),
        }));
    }
    counters.layout_total.store(file_size * u64::from(j.nrfiles) * u64::from(j.numjobs), Ordering::Relaxed);
    counters.laying_out.store(j.numjobs, Ordering::Relaxed);
    // Every job lays out its files, then all start their timed loops together, as fio's do.
    let barrier = Arc::new(Barrier::new(j.numjobs as usize));
    let mut threads = Vec::new();
    for (n, files) in jobs.iter().enumerate() {
        let w = Worker {
            job: j.clone(),
            n: n as u16,
            files: files.clone(),
            tag,
            sink: sink.clone(),
            stop: stop.clone(),
            counters: counters.clone(),
        };
        let barrier = barrier.clone();
        threads.push(spawn(format!("{}.{n}", j.name), move || {
            w.lay_out();
            w.counters.laying_out.fetch_sub(1, Ordering::Relaxed);
            barrier.wait();
            w.run();
        })?);
    }
    Ok((threads, Verifier { jobs, bs: j.bs.0, root: root.to_path_buf(), tag }))
}

struct Worker {
    job: FioJob,
    n: u16,
    files: Arc<JobFiles>,
    tag: RunTag,
    sink: Arc<dyn Sink>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
}

impl Worker {
    /// Writes generation 1 of every block in large sequential writes, then makes it durable
    /// and (as fio's `invalidate`) drops it from the page cache.
    fn lay_out(&self) {
        let bs = self.job.bs.0;
        let per_chunk = (LAYOUT_CHUNK / bs).max(1);
        let mut buf = vec![0u8; (per_chunk * bs) as usize];
        let mut rng = Rng::new(self.tag.seed ^ u64::from(self.n));
        if !self.job.verify {
            buf.iter_mut().for_each(|b| *b = rng.next_u64() as u8);
        }
        for (f, path) in self.files.paths.iter().enumerate() {
            let fh = match open_file(path, false) {
                Ok(fh) => fh,
                Err(e) => {
                    self.counters.layout_failed(format!("opening {}: {e}", path.display()));
                    continue;
                }
            };
            let mut b = 0;
            while b < self.files.blocks_per_file && !self.stop.load(Ordering::Relaxed) {
                let n = per_chunk.min(self.files.blocks_per_file - b);
                let chunk = &mut buf[..(n * bs) as usize];
                if self.job.verify {
                    for (k, block) in chunk.chunks_exact_mut(bs as usize).enumerate() {
                        let file = self.files.first_file + f as u32;
                        fill_block(block, file, (b + k as u64) * bs, 1, self.tag);
                    }
                }
                match fh.write_all_at(chunk, b * bs) {
                    Ok(()) => {
                        for k in b..b + n {
                            self.files.acked[self.files.index(f, k)].store(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        self.counters.layout_failed(format!("writing {} at {}: {e}", path.display(), b * bs))
                    }
                }
                self.counters.layout_done.fetch_add(n * bs, Ordering::Relaxed);
                b += n;
            }
            if let Err(e) = fh.sync_all() {
                self.counters.layout_failed(format!("syncing {}: {e}", path.display()));
            }
            if self.job.invalidate {
                drop_cache(&fh);
            }
        }
    }

    /// The timed loop: until stopped, the runtime is over, or (without `time_based`) one pass.
    fn run(&self) {
        if self.job.ioengine.asynchronous() {
            return self.run_async();
        }
        let j = &self.job;
        let c = Ctx::new(&self.stop, &self.counters, &self.sink, j.ramp_time, j.runtime);
        let bs = j.bs.0;
        let handles: Vec<std::io::Result<File>> =
            self.files.paths.iter().map(|p| open_file(p, j.direct)).collect();
        let mut buf = Aligned::new(bs as usize);
        let mut pacer = Pacer::new(j.ops_rate());
        let mut pick = Picker::new(j, &self.files, self.tag.seed ^ (u64::from(self.n) << 32));
        let mut writes = 0u64;
        while !c.done() && (j.time_based || pick.issued < pick.total) {
            pacer.wait();
            let (read, idx) = pick.next();
            let (f, b) = self.files.locate(idx);
            let fh = match &handles[f] {
                Ok(fh) => fh,
                Err(e) => {
                    self.open_failed(&c, read, f, e);
                    continue;
                }
            };
            if read {
                self.read(&c, fh, f, b, buf.as_mut());
            } else {
                self.write(&c, fh, f, b, buf.as_mut());
                writes += 1;
                if j.sync_due(writes) {
                    self.sync(&c, fh, j.fsync > 0);
                }
            }
        }
        if j.end_fsync {
            for fh in handles.iter().flatten() {
                self.sync(&c, fh, true);
            }
        }
        self.files.hold(handles);
    }

    fn open_failed(&self, c: &Ctx, read: bool, f: usize, e: &std::io::Error) {
        let op = if read { Op::Read } else { Op::Write };
        let why = format!("open {}: {e}", self.files.paths[f].display());
        c.record(op, self.n, now_ns(), 0, Err((errno(e), why)), false);
        std::thread::sleep(std::time::Duration::from_millis(10));
    }

    fn read(&self, c: &Ctx, fh: &File, f: usize, b: u64, buf: &mut [u8]) {
        let offset = b * self.job.bs.0;
        let submit = now_ns();
        let r = fh.read_at(buf, offset);
        let complete = now_ns();
        match r {
            Ok(n) => {
                // Checked after the completion time is taken: verification is not latency.
                let mismatch = self.inline_mismatch(buf, n, f, b);
                c.record_at(Op::Read, self.n, submit, complete, n as u64, Ok(()), mismatch);
            }
            Err(e) => {
                let why = format!("read {}: {e}", self.files.paths[f].display());
                c.record_at(Op::Read, self.n, submit, complete, 0, Err((errno(&e), why)), false)
            }
        }
    }

    /// Whether a read of block `b` of file `f` found something other than what the run last
    /// wrote (a missing block too); an errored write that landed is the verify pass's to report.
    fn inline_mismatch(&self, buf: &[u8], n: usize, f: usize, b: u64) -> bool {
        self.job.verify
            && !matches!(
                check_block(buf, n, &self.files.expected(f, b, self.job.bs.0, self.tag)),
                Ok(()) | Err(Problem::ErroredWriteLanded { .. })
            )
    }

    fn write(&self, c: &Ctx, fh: &File, f: usize, b: u64, buf: &mut [u8]) {
        let bs = self.job.bs.0;
        let i = self.files.index(f, b);
        let g = self.files.acked[i].load(Ordering::Relaxed) + 1;
        if self.job.verify {
            fill_block(buf, self.files.first_file + f as u32, b * bs, g, self.tag);
        }
        let submit = now_ns();
        match fh.write_all_at(buf, b * bs) {
            Ok(()) => {
                self.files.acked[i].store(g, Ordering::Relaxed);
                c.record(Op::Write, self.n, submit, bs, Ok(()), false);
            }
            Err(e) => {
                // It may still have landed: the verify pass tells.
                self.files.errored[i].store(g, Ordering::Relaxed);
                let why = format!("write {}: {e}", self.files.paths[f].display());
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

/// Which block comes next, and whether it is read: random jobs visit every block once per
/// pass in a new random order (fio's random map); sequential ones walk the blocks in order,
/// reads and writes each on their own.
struct Picker {
    rng: Rng,
    random: bool,
    read_pct: u64,
    order: Vec<u64>,
    pos: u64,
    pos_read: u64,
    pos_write: u64,
    total: u64,
    issued: u64,
}

impl Picker {
    fn new(j: &FioJob, files: &JobFiles, seed: u64) -> Self {
        let total = files.blocks_per_file * files.paths.len() as u64;
        Self {
            rng: Rng::new(seed),
            random: j.rw.random(),
            read_pct: j.rw.read_percent(j.rwmixread) as u64,
            order: (0..total).collect(),
            pos: 0,
            pos_read: 0,
            pos_write: 0,
            total,
            issued: 0,
        }
    }

    fn next(&mut self) -> (bool, u64) {
        let read = self.rng.below(100) < self.read_pct;
        let idx = if self.random {
            if self.pos == 0 {
                for k in (1..self.order.len()).rev() {
                    self.order.swap(k, self.rng.below(k as u64 + 1) as usize);
                }
            }
            let i = self.order[self.pos as usize];
            self.pos = (self.pos + 1) % self.total;
            i
        } else {
            let p = if read { &mut self.pos_read } else { &mut self.pos_write };
            let i = *p;
            *p = (*p + 1) % self.total;
            i
        };
        self.issued += 1;
        (read, idx)
    }
}

/// Reads every block of every job back.
pub(super) struct Verifier {
    jobs: Vec<Arc<JobFiles>>,
    bs: u64,
    root: PathBuf,
    tag: RunTag,
}

impl Verifier {
    /// Opens `path` so that reads reach the file system, not a cache: O_DIRECT where the file
    /// system takes it, else after writing back and dropping the file's cached pages.
    fn open_uncached(&self, path: &Path) -> std::io::Result<(File, String)> {
        if self.bs % 4096 == 0 {
            match open_file(path, true) {
                Ok(f) => return Ok((f, "O_DIRECT".into())),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(e),
            }
        }
        let f = open_file(path, false)?;
        let _ = f.sync_all();
        drop_cache(&f);
        let why = if self.bs % 4096 == 0 { "O_DIRECT refused" } else { "bs not a multiple of 4 KiB" };
        Ok((f, format!("buffered after fadvise(DONTNEED) ({why})")))
    }

    pub(super) fn verify(&self, sink: &dyn Sink, give_up: &dyn Fn() -> bool) -> VerifyReport {
        let mut report = VerifyReport::default();
        let mut buf = Aligned::new(self.bs as usize);
        for (j, files) in self.jobs.iter().enumerate() {
            for (f, path) in files.paths.iter().enumerate() {
                let rel = path.strip_prefix(&self.root).unwrap_or(path).display().to_string();
                // The truth about the guest's data is the file it holds open (reopened through
                // /proc, uncached): its path may name another file by now.
                let held = files.held(f);
                let file = match held {
                    Some((fd, ..)) => self
                        .open_uncached(Path::new(&format!("/proc/self/fd/{fd}")))
                        .map(|(fh, mode)| (fh, format!("{mode}, through the guest's open handles"))),
                    None => self.open_uncached(path),
                };
                if let Ok((_, mode)) = &file {
                    if report.read_mode.is_empty() {
                        report.read_mode = mode.clone();
                    }
                }
                for b in 0..files.blocks_per_file {
                    if give_up() {
                        return report;
                    }
                    let offset = b * self.bs;
                    let submit = now_ns();
                    let (got, status) = match &file {
                        Ok((fh, _)) => read_full(fh, buf.as_mut(), offset),
                        // No file: its blocks are not there (missing).
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            buf.as_mut().fill(0);
                            (0, 0)
                        }
                        Err(e) => (0, errno(e)),
                    };
                    let complete = now_ns();
                    report.blocks += 1;
                    // A block the pass could not read is unreadable, not lost: nothing says
                    // what it holds.
                    let result = if status != 0 {
                        Err(Problem::Unreadable { errno: status })
                    } else {
                        check_block(buf.as_mut(), got, &files.expected(f, b, self.bs, self.tag))
                    };
                    let mismatch = result.is_err();
                    if let Err(problem) = result {
                        report.add(BadBlock { path: rel.clone(), offset, problem });
                    }
                    sink.push(super::verify_record(j as u16, submit, complete, got as u32, status, mismatch));
                }
                if let Some((_, dev, ino)) = held {
                    report.replaced.extend(self.path_check(path, rel, (dev, ino), files, f, buf.as_mut()));
                }
            }
        }
        report
    }

    /// Whether `path` still names the file the guest holds open; if not, what it holds.
    fn path_check(
        &self,
        path: &Path,
        rel: String,
        (dev, ino): (u64, u64),
        files: &JobFiles,
        f: usize,
        buf: &mut [u8],
    ) -> Option<ReplacedPath> {
        use std::os::unix::fs::MetadataExt;
        let blocks = files.blocks_per_file;
        match std::fs::metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == (dev, ino) => None,
            Ok(_) => {
                let differ = match self.open_uncached(path) {
                    Ok((fh, _)) => (0..blocks)
                        .filter(|&b| {
                            let (got, status) = read_full(&fh, buf, b * self.bs);
                            status != 0
                                || check_block(buf, got, &files.expected(f, b, self.bs, self.tag)).is_err()
                        })
                        .count() as u64,
                    Err(_) => blocks,
                };
                Some(ReplacedPath { path: rel, now: "another file".into(), blocks_differ: differ, blocks })
            }
            Err(_) => Some(ReplacedPath { path: rel, now: "nothing".into(), blocks_differ: blocks, blocks }),
        }
    }
}

/// Reads a whole block at `offset` (zero-filling what is not there); returns the bytes read
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
        v.jobs[0].hold(vec![Err(std::io::Error::other("closed"))]);
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
