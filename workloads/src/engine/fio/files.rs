//! The files of a fio workload and what each of their verification units should hold.
//!
//! A file may be shared: fio's `filename` gives every clone of a job (and every job that names
//! it) the same file. Each unit therefore has a lock word — a write holds its units alone, a
//! read shares them with other reads — so that at most one write is in flight per unit and the
//! generation each unit should hold is always known exactly, whoever wrote it.

use crate::verify::{check_block, fill_block, Expected, Problem, RunTag};
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

/// A unit's lock word: free, held by this many reads, or by one write.
const WRITER: u32 = u32::MAX;

pub(super) struct FileState {
    pub path: PathBuf,
    /// The file's number in the block headers.
    pub number: u32,
    pub unit: u64,
    /// Bytes laid out.
    pub size: u64,
    /// Its units carry verify headers and the verify pass reads them back (every job naming
    /// it has `verify`); otherwise its contents are whatever the jobs wrote, judged by no one.
    pub verified: bool,
    /// Generation of the last acknowledged write, per unit.
    acked: Vec<AtomicU32>,
    /// Generation of the last write that returned an error, per unit (0: none).
    errored: Vec<AtomicU32>,
    lock: Vec<AtomicU32>,
    /// A handle the guest's workload kept open after it stopped: the verify pass reads the
    /// file the guest wrote through it, whatever a third party did to its path since.
    held: Mutex<Option<File>>,
}

impl FileState {
    pub fn new(path: PathBuf, number: u32, unit: u64, size: u64, verified: bool) -> Self {
        let units = (size / unit) as usize;
        let zeros = || (0..units).map(|_| AtomicU32::new(0)).collect::<Vec<_>>();
        Self {
            path,
            number,
            unit,
            size,
            verified,
            acked: zeros(),
            errored: zeros(),
            lock: zeros(),
            held: Mutex::new(None),
        }
    }

    pub fn units(&self) -> u64 {
        self.acked.len() as u64
    }

    fn range(&self, off: u64, len: u64) -> std::ops::Range<usize> {
        (off / self.unit) as usize..((off + len) / self.unit) as usize
    }

    /// Takes units `off..off+len` for a write (alone) or a read (shared with reads); false if
    /// another op holds one of them.
    pub fn claim(&self, off: u64, len: u64, write: bool) -> bool {
        let r = self.range(off, len);
        for u in r.clone() {
            let ok = if write {
                self.lock[u].compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed).is_ok()
            } else {
                self.lock[u]
                    .fetch_update(Ordering::Acquire, Ordering::Relaxed, |v| (v < WRITER - 1).then(|| v + 1))
                    .is_ok()
            };
            if !ok {
                self.release_units(r.start..u, write);
                return false;
            }
        }
        true
    }

    pub fn release(&self, off: u64, len: u64, write: bool) {
        self.release_units(self.range(off, len), write);
    }

    fn release_units(&self, r: std::ops::Range<usize>, write: bool) {
        for u in r {
            if write {
                self.lock[u].store(0, Ordering::Release);
            } else {
                self.lock[u].fetch_sub(1, Ordering::Release);
            }
        }
    }

    pub fn expected(&self, u: u64, tag: RunTag) -> Expected {
        let i = u as usize;
        Expected {
            file: self.number,
            offset: u * self.unit,
            generation: self.acked[i].load(Ordering::Relaxed),
            errored: self.errored[i].load(Ordering::Relaxed),
            tag,
        }
    }

    /// Fills `buf` with the next generation of every unit it covers at `off` (the units are
    /// claimed for writing).
    pub fn fill(&self, buf: &mut [u8], off: u64, tag: RunTag) {
        for (k, chunk) in buf.chunks_exact_mut(self.unit as usize).enumerate() {
            let u = off / self.unit + k as u64;
            let g = self.acked[u as usize].load(Ordering::Relaxed) + 1;
            fill_block(chunk, self.number, u * self.unit, g, tag);
        }
    }

    /// Generation `g` of every unit from `off`: laid out, or written with fill's content.
    pub fn set_generation(&self, off: u64, len: u64, g: u32) {
        for u in self.range(off, len) {
            self.acked[u].store(g, Ordering::Relaxed);
        }
    }

    /// A write of `off..off+len` was acknowledged (`ok`) or returned an error (it may still
    /// have landed: the verify pass tells).
    pub fn written(&self, off: u64, len: u64, ok: bool) {
        for u in self.range(off, len) {
            let g = self.acked[u].load(Ordering::Relaxed) + 1;
            if ok {
                self.acked[u].store(g, Ordering::Relaxed);
            } else {
                self.errored[u].store(g, Ordering::Relaxed);
            }
        }
    }

    /// Checks `n` bytes read at `off` unit by unit; the first problem, if any.
    pub fn check(&self, buf: &[u8], n: usize, off: u64, tag: RunTag) -> Result<(), Problem> {
        let unit = self.unit as usize;
        for (k, chunk) in buf.chunks_exact(unit).enumerate() {
            let got = n.saturating_sub(k * unit).min(unit);
            check_block(chunk, got, &self.expected(off / self.unit + k as u64, tag))?;
        }
        Ok(())
    }

    /// Keeps a stopped worker's handle for the verify pass (the first one kept stays).
    pub fn hold(&self, fh: File) {
        if let Ok(mut h) = self.held.lock() {
            h.get_or_insert(fh);
        }
    }

    /// As if the workload had closed its handles.
    #[cfg(test)]
    pub fn forget_handle(&self) {
        if let Ok(mut h) = self.held.lock() {
            *h = None;
        }
    }

    /// The held handle: its descriptor and its file's identity (device, inode).
    pub fn held(&self) -> Option<(i32, u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        use std::os::unix::io::AsRawFd;
        let h = self.held.lock().ok()?;
        let fh = h.as_ref()?;
        let m = fh.metadata().ok()?;
        Some((fh.as_raw_fd(), m.dev(), m.ino()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_holds_its_units_alone_and_reads_share() {
        let f = FileState::new("x".into(), 0, 4096, 16 * 4096, true);
        assert!(f.claim(0, 8192, true));
        assert!(!f.claim(4096, 4096, false), "a read of a unit being written waits");
        assert!(!f.claim(4096, 8192, true));
        assert!(f.claim(8192, 4096, false), "the next unit is free");
        f.release(0, 8192, true);
        assert!(f.claim(0, 4096, false) && f.claim(0, 4096, false), "reads share");
        assert!(!f.claim(0, 4096, true));
        f.release(0, 4096, false);
        f.release(0, 4096, false);
        assert!(f.claim(0, 4096, true), "free again");
        // A failed claim took nothing.
        assert!(f.claim(12 * 4096, 4096, true));
        assert!(!f.claim(10 * 4096, 4 * 4096, true));
        assert!(f.claim(10 * 4096, 2 * 4096, true), "the units before the held one were given back");
    }

    #[test]
    fn units_of_one_op_carry_their_own_generations() {
        let tag = RunTag { seed: 1, nonce: 2 };
        let f = FileState::new("x".into(), 3, 512, 8 * 512, true);
        f.set_generation(0, 8 * 512, 1);
        f.written(1024, 512, true);
        let mut buf = vec![0u8; 2048];
        f.fill(&mut buf, 512, tag);
        f.written(512, 2048, true);
        assert!(f.check(&buf, 2048, 512, tag).is_ok());
        assert_eq!(f.expected(2, tag).generation, 3, "written twice after the layout");
        assert_eq!(f.expected(1, tag).generation, 2);
        // A short read leaves the last unit missing.
        assert_eq!(f.check(&buf, 1536, 512, tag), Err(Problem::Missing));
    }
}
