//! State held in virtiofsd across a migration: a tree of files, every one looked up and held,
//! some open, and verified I/O beside them. virtiofsd keeps an inode for every file the guest
//! holds and a handle for every open one, and moves them all inside the switch-over; this room
//! makes the guest hold them and checks afterwards that every held inode and handle still names
//! its own file.
//!
//! A lookup is held with an `O_PATH` descriptor: it pins the guest's dentry and inode (so the
//! guest sends no FORGET, and virtiofsd keeps its inode) without a FUSE open. Each file holds a
//! tag naming it, written once; the tree is kept for the next run of the same shape.

use super::{errno, now_ns, spawn, Counters, Sink};
use crate::job::{FioFile, StateJob};
use crate::verify::{BadBlock, Problem, RunTag, VerifyReport};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The verify records of the tree check carry this job number (the I/O job's clones count
/// from 0).
const TREE_JOB: u16 = u16::MAX;

/// What file `i` of a tree holds.
fn tag(i: u32, path: &str) -> String {
    format!("miglab-state {i} {path}\n")
}

/// The file a tag names, or what is wrong with it.
fn read_tag(bytes: &[u8], want: u32) -> Result<(), Problem> {
    if bytes.is_empty() {
        return Err(Problem::Missing);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| Problem::NoHeader)?;
    let found = text
        .strip_prefix("miglab-state ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or(Problem::NoHeader)?;
    if found == want {
        Ok(())
    } else {
        Err(Problem::Misplaced { file: found, offset: 0 })
    }
}

/// The tree's hold on virtiofsd: a descriptor per file (`O_PATH`), and the open ones.
#[derive(Default)]
struct Held {
    looked_up: Vec<OwnedFd>,
    open: Vec<(u32, File)>,
}

pub(super) struct Verifier {
    io: super::fio::Verifier,
    job: StateJob,
    dir: PathBuf,
    held: Arc<Mutex<Held>>,
}

pub(super) fn start(
    j: &StateJob,
    root: &Path,
    sink: &Arc<dyn Sink>,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    tag: RunTag,
) -> Result<(Vec<JoinHandle<()>>, Verifier), String> {
    raise_fd_limit(u64::from(j.files) + u64::from(j.open) + 4096)?;
    // The tree's layout counts before the I/O job's can end: the host waits for both.
    counters.laying_out.fetch_add(1, Ordering::SeqCst);
    let io = FioFile { name: j.name.clone(), jobs: vec![j.io_job()] };
    if j.io.directory.is_none() && j.io.filename.is_none() {
        // New files (new inodes) every run: the other client may still cache the pages of the
        // last run's files under the same inodes, and a read served from them after the
        // switch-over is another finding than the one this workload is for (docs/findings.md).
        let _ = std::fs::remove_dir_all(root.join(io.jobs[0].dir()));
    }
    let (mut threads, io) = match super::fio::start(&io, root, sink, stop, counters, tag) {
        Ok(started) => started,
        Err(e) => {
            counters.laying_out.fetch_sub(1, Ordering::SeqCst);
            return Err(e);
        }
    };
    let dir = root.join(j.dir());
    let held = Arc::new(Mutex::new(Held::default()));
    let (job, d, h, c, s) = (j.clone(), dir.clone(), held.clone(), counters.clone(), stop.clone());
    threads.push(spawn(format!("{}.tree", j.name), move || {
        match lay_out(&job, &d, tag.nonce, &c, &s).and_then(|()| hold(&job, &d, &c, &s)) {
            Ok(got) => *h.lock().unwrap_or_else(|e| e.into_inner()) = got,
            Err(e) => c.layout_failed(e),
        }
        c.laying_out.fetch_sub(1, Ordering::SeqCst);
    })?);
    Ok((threads, Verifier { io, job: j.clone(), dir, held }))
}

/// The guest holds a descriptor per file: its limit must allow them (the agent is root).
fn raise_fd_limit(want: u64) -> Result<(), String> {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) } != 0 {
        return Err(format!("getrlimit: {}", std::io::Error::last_os_error()));
    }
    if l.rlim_cur >= want {
        return Ok(());
    }
    let n = libc::rlimit { rlim_cur: want, rlim_max: want.max(l.rlim_max) };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &n) } != 0 {
        return Err(format!(
            "holding {want} descriptors needs RLIMIT_NOFILE {want} (it is {}): {}",
            l.rlim_cur,
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The tree's shape, written last: a tree with it is complete. A tree not to be reused is
/// complete for its own run only (the host may lay it out before the guest starts).
fn shape(j: &StateJob, nonce: u64) -> String {
    let run = if j.reuse { String::new() } else { format!(" run={nonce:x}") };
    format!("files={} fanout={} depth={}{run}\n", j.files, j.fanout, j.depth)
}

/// The bytes of all the tree's tags (what its layout counts).
fn tag_bytes(j: &StateJob) -> u64 {
    (0..j.files).map(|i| tag(i, &j.file_path(i)).len() as u64).sum()
}

/// Whether a complete tree of `j`'s shape for run `nonce` is at `dir`.
pub fn tree_complete(j: &StateJob, dir: &Path, nonce: u64) -> bool {
    std::fs::read_to_string(dir.join("complete")).is_ok_and(|s| s == shape(j, nonce))
}

/// How many threads lay a tree out.
const LAYOUT_THREADS: u32 = 8;

/// Creates `j`'s tree at `dir` (a guest's mount, or a host's CephFS mount: the host lays a
/// large tree out ten times faster than a guest through virtiofsd), unless a complete one is
/// there. `done` is told the bytes of each file's tag as it is written; `stop` ends it early.
pub fn lay_out_tree(
    j: &StateJob,
    dir: &Path,
    nonce: u64,
    stop: &AtomicBool,
    done: &(dyn Fn(u64) + Sync),
) -> Result<(), String> {
    if tree_complete(j, dir, nonce) {
        return Ok(());
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("remove the old tree {}: {e}", dir.display()))
        }
        _ => {}
    }
    // Creates are round trips to the MDS, not work: a few threads, each on leaves of its own,
    // lay a large tree out several times faster than one.
    let leaves = j.fanout.max(1).saturating_pow(j.depth).max(1);
    let threads = LAYOUT_THREADS.min(leaves).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                scope.spawn(move || -> Result<(), String> {
                    for i in (0..j.files).filter(|i| (i % leaves) % threads == k) {
                        if stop.load(Ordering::Relaxed) {
                            return Err("stopped while creating the tree".into());
                        }
                        let rel = j.file_path(i);
                        let p = dir.join(&rel);
                        if let Some(parent) = p.parent() {
                            if !parent.exists() {
                                std::fs::create_dir_all(parent)
                                    .map_err(|e| format!("create {}: {e}", parent.display()))?;
                            }
                        }
                        let t = tag(i, &rel);
                        File::create(&p)
                            .and_then(|mut f| f.write_all(t.as_bytes()))
                            .map_err(|e| format!("create {}: {e}", p.display()))?;
                        done(t.len() as u64);
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().unwrap_or_else(|_| Err("a layout thread panicked".into())))
    })?;
    let marker = dir.join("complete");
    std::fs::write(&marker, shape(j, nonce)).map_err(|e| format!("write {}: {e}", marker.display()))
}

/// The tree laid out (counted twice when it is created here: once creating, once holding).
fn lay_out(j: &StateJob, dir: &Path, nonce: u64, c: &Counters, stop: &AtomicBool) -> Result<(), String> {
    let tags = tag_bytes(j);
    let phases = if tree_complete(j, dir, nonce) { 1 } else { 2 };
    c.layout_total.fetch_add(phases * tags, Ordering::SeqCst);
    lay_out_tree(j, dir, nonce, stop, &|n| {
        c.layout_done.fetch_add(n, Ordering::Relaxed);
    })
}

/// Looks every file up and holds it; opens the chosen ones.
fn hold(j: &StateJob, dir: &Path, c: &Counters, stop: &AtomicBool) -> Result<Held, String> {
    let mut held = Held { looked_up: Vec::with_capacity(j.files as usize), open: Vec::new() };
    // Each file is looked up relative to its directory, held open meanwhile: one FUSE lookup
    // a file, where a whole path (the guest revalidates every component with cache=never)
    // took one a component.
    let mut dirs: std::collections::HashMap<PathBuf, File> = std::collections::HashMap::new();
    for i in 0..j.files {
        if stop.load(Ordering::Relaxed) {
            return Err("stopped while looking the tree up".into());
        }
        let rel = j.file_path(i);
        let p = dir.join(&rel);
        let parent = p.parent().unwrap_or(dir).to_path_buf();
        if !dirs.contains_key(&parent) {
            let d = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
                .open(&parent)
                .map_err(|e| format!("look up {}: {e}", parent.display()))?;
            dirs.insert(parent.clone(), d);
        }
        let name = std::ffi::CString::new(p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", p.display()))?;
        let d = dirs[&parent].as_raw_fd();
        // SAFETY: openat with a directory descriptor we hold and a NUL-terminated name.
        let fd = unsafe { libc::openat(d, name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!("look up {}: {}", p.display(), std::io::Error::last_os_error()));
        }
        // SAFETY: openat returned a new descriptor that nothing else owns.
        held.looked_up.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) });
        c.layout_done.fetch_add(tag(i, &rel).len() as u64, Ordering::Relaxed);
    }
    for i in j.opened() {
        let p = dir.join(j.file_path(i));
        let f = File::open(&p).map_err(|e| format!("open {}: {e}", p.display()))?;
        held.open.push((i, f));
    }
    Ok(held)
}

impl Verifier {
    /// The I/O job's data, then every open handle and every held inode (or `check` of them,
    /// evenly spaced): each must still hold its own file's tag.
    pub(super) fn verify(&self, sink: &dyn Sink, give_up: &dyn Fn() -> bool) -> VerifyReport {
        let mut report = self.io.verify(sink, give_up);
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let j = &self.job;
        let check =
            |report: &mut VerifyReport, i: u32, read: &mut dyn FnMut(&mut [u8]) -> std::io::Result<usize>| {
                let rel = j.file_path(i);
                let want = tag(i, &rel);
                let mut buf = vec![0u8; want.len()];
                let submit = now_ns();
                let got = read(&mut buf);
                let complete = now_ns();
                report.blocks += 1;
                let (status, problem) = match got {
                    Ok(n) => (0, read_tag(&buf[..n], i).err()),
                    Err(e) => (errno(&e), Some(Problem::Unreadable { errno: errno(&e) })),
                };
                let bad = problem.is_some();
                if let Some(problem) = problem {
                    let path = self.dir.join(&rel).display().to_string();
                    report.add(BadBlock { path, offset: 0, problem });
                }
                sink.push(super::verify_record(TREE_JOB, submit, complete, want.len() as u32, status, bad));
            };
        for (i, f) in &held.open {
            if give_up() {
                return report;
            }
            check(&mut report, *i, &mut |buf| f.read_at(buf, 0));
        }
        let n = held.looked_up.len() as u64;
        let k = u64::from(self.job.check.unwrap_or(u32::MAX)).min(n);
        for s in 0..k {
            if give_up() {
                return report;
            }
            let i = (s * n / k.max(1)) as u32;
            let fd = held.looked_up[i as usize].as_raw_fd();
            // Reopening the held inode is a FUSE open of the inode virtiofsd kept (migrated).
            check(&mut report, i, &mut |buf| {
                let mut f = File::open(format!("/proc/self/fd/{fd}"))?;
                f.read(buf)
            });
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{collect, run_for};
    use super::*;
    use crate::job::Workload;
    use crate::record::Op;

    fn job(files: u32) -> StateJob {
        let mut j: StateJob =
            toml::from_str(&format!("files = {files}\nfanout = 4\ndepth = 2\nopen = 5")).expect("state job");
        j.io.size = crate::job::Size(64 << 10);
        j
    }

    #[test]
    fn a_tag_names_its_file() {
        assert_eq!(read_tag(tag(7, "d1/d3/f7").as_bytes(), 7), Ok(()));
        assert_eq!(
            read_tag(tag(8, "d0/d2/f8").as_bytes(), 7),
            Err(Problem::Misplaced { file: 8, offset: 0 })
        );
        assert_eq!(read_tag(b"", 7), Err(Problem::Missing));
        assert_eq!(read_tag(b"hello", 7), Err(Problem::NoHeader));
    }

    #[test]
    fn the_tree_is_held_checked_and_reused() {
        let dir = tempfile::tempdir().expect("tmp");
        let w = Workload::State(job(40));
        let (r, buf) = run_for(&w, dir.path(), 100);
        let tree = dir.path().join(job(40).dir());
        assert_eq!(std::fs::read_to_string(tree.join("complete")).expect("marker"), shape(&job(40), 0));
        assert!(tree.join(job(40).file_path(39)).exists());
        let ran = collect(&buf); // drains what the run recorded
        assert!(ran.iter().any(|o| o.op == Op::Write), "the I/O job ran");
        let v = r.verify(buf.as_ref(), &|| false);
        assert!(v.clean(), "{v:?}");
        let tree_checks = collect(&buf).iter().filter(|o| o.op == Op::Verify && o.job == TREE_JOB).count();
        assert_eq!(tree_checks, 40 + 5, "every held inode and every open handle: {v:?}");
        drop(r);

        // The next run reuses the tree; a file whose contents somebody replaced is found.
        let moved = tree.join(job(40).file_path(3));
        std::fs::write(&moved, tag(9, "elsewhere")).expect("overwrite");
        let (r, buf) = run_for(&w, dir.path(), 50);
        let v = r.verify(buf.as_ref(), &|| false);
        assert_eq!(v.counts.misplaced, 1, "{v:?}");
        assert_eq!(v.bad.len(), 1, "{v:?}");
        assert!(matches!(v.bad[0].problem, Problem::Misplaced { file: 9, .. }), "{v:?}");
    }

    #[test]
    fn shapes_are_checked() {
        let mut j = job(10);
        j.open = 11;
        assert!(j.validate().is_err());
        let mut j = job(10);
        j.fanout = 64;
        j.depth = 3;
        assert!(j.validate().expect_err("too many directories").contains("directories"));
        assert_eq!(job(40).file_path(5), "d1/d1/f5");
        assert_eq!(job(40).opened().collect::<Vec<_>>(), vec![0, 8, 16, 24, 32]);
    }

    #[test]
    fn a_tree_not_to_be_reused_is_complete_for_its_own_run_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut j = job(8);
        j.reuse = false;
        let never = AtomicBool::new(false);
        lay_out_tree(&j, dir.path(), 1, &never, &|_| {}).expect("lay out");
        assert!(tree_complete(&j, dir.path(), 1), "laid out by the host for run 1: the guest keeps it");
        assert!(!tree_complete(&j, dir.path(), 2), "run 2 lays out its own");
        j.reuse = true;
        assert!(!tree_complete(&j, dir.path(), 1), "a run's own tree is no tree to reuse");
    }
}
