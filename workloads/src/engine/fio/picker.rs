//! What a job does next: read or write, which file (round robin, fio's default
//! `file_service_type`), which offset (sequential with its `rw=...:skip`, or random by the
//! job's distribution, with or without fio's random map), how large, and when a pass ends.

use crate::engine::Rng;
use crate::job::{BlockSizes, FioJob};
use crate::pattern::Sampler;

/// One op to issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Next {
    pub read: bool,
    /// Index into the job's regions.
    pub file: usize,
    /// Byte offset in the file.
    pub off: u64,
    pub len: u64,
}

/// A job's part of one file: `start..start+len`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Region {
    pub start: u64,
    pub len: u64,
}

struct FilePos {
    region: Region,
    /// Next sequential offset of reads and of writes (fio keeps one per direction).
    seq: [u64; 2],
    /// The random map: slots in a random order, and how many were used this pass.
    order: Vec<u64>,
    used: usize,
    sampler: Option<Sampler>,
    slots: u64,
}

pub(super) struct Picker {
    rng: Rng,
    files: Vec<FilePos>,
    rr: usize,
    sizes: [BlockSizes; 2],
    read_pct: u64,
    random: bool,
    percentage_random: u64,
    random_map: bool,
    align: u64,
    unit: u64,
    min_bs: u64,
    skip: i64,
    pass_bytes: u64,
    issued: u64,
    pub passes: u32,
}

impl Picker {
    pub fn new(j: &FioJob, regions: &[Region], seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let align = j.align();
        let min_bs = j.min_bs();
        let random_map = j.rw.random() && !j.norandommap && j.random_distribution.uniform();
        let files = regions
            .iter()
            .map(|r| {
                let slots = if r.len >= min_bs { (r.len - min_bs) / align + 1 } else { 0 };
                let sampler = (!j.random_distribution.uniform())
                    .then(|| Sampler::new(&j.random_distribution, slots, rng.next_u64()));
                FilePos {
                    region: *r,
                    seq: [r.start; 2],
                    order: if random_map { (0..slots).collect() } else { Vec::new() },
                    used: 0,
                    sampler,
                    slots,
                }
            })
            .collect();
        Self {
            rng,
            files,
            rr: 0,
            sizes: [j.sizes(true), j.sizes(false)],
            read_pct: u64::from(j.rw.read_percent(j.rwmixread)),
            random: j.rw.random(),
            percentage_random: u64::from(j.percentage_random),
            random_map,
            align,
            unit: j.unit(),
            min_bs,
            skip: j.rw_skip,
            pass_bytes: j.pass_bytes().max(1),
            issued: 0,
            passes: 0,
        }
    }

    pub fn next(&mut self) -> Next {
        let read = self.rng.below(100) < self.read_pct;
        let file = self.rr % self.files.len().max(1);
        self.rr = self.rr.wrapping_add(1);
        let mut want = self.sizes[usize::from(!read)].pick(self.rng.next_u64());
        let random = self.random && self.rng.below(100) < self.percentage_random;
        let off = if random { self.random_offset(file) } else { self.seq_offset(file, read, want) };
        let f = self.files[file].region;
        // As fio: a size that does not fit before the end is drawn again.
        for _ in 0..16 {
            if off + want <= f.start + f.len {
                break;
            }
            want = self.sizes[usize::from(!read)].pick(self.rng.next_u64());
        }
        if off + want > f.start + f.len {
            // Still too large: the largest size of the job's that fits.
            let room = f.start + f.len - off;
            want = self.sizes[usize::from(!read)]
                .sizes()
                .into_iter()
                .filter(|s| *s <= room)
                .max()
                .unwrap_or(want);
        }
        // An op that would run past the region's end is cut there, in whole units, as fio
        // cuts it at the file's end.
        let room = f.start + f.len - off;
        let len = if want <= room { want } else { (room - room % self.unit).max(self.min_bs.min(room)) };
        if !random {
            self.advance(file, read, off, len);
        }
        self.issued += len;
        if self.issued >= self.pass_bytes {
            self.issued = 0;
            self.passes += 1;
        }
        Next { read, file, off, len }
    }

    fn random_offset(&mut self, file: usize) -> u64 {
        let align = self.align;
        let fp = &mut self.files[file];
        let slot = if let Some(s) = &fp.sampler {
            let rng = &mut self.rng;
            s.next(&mut || rng.next_u64())
        } else if self.random_map {
            if fp.used == 0 {
                for k in (1..fp.order.len()).rev() {
                    fp.order.swap(k, self.rng.below(k as u64 + 1) as usize);
                }
            }
            let s = fp.order[fp.used];
            fp.used = (fp.used + 1) % fp.order.len().max(1);
            s
        } else {
            self.rng.below(fp.slots)
        };
        fp.region.start + slot * align
    }

    fn seq_offset(&mut self, file: usize, read: bool, want: u64) -> u64 {
        let fp = &mut self.files[file];
        let r = fp.region;
        let p = &mut fp.seq[usize::from(!read)];
        if *p + want.min(self.min_bs) > r.start + r.len || *p < r.start {
            *p = r.start;
        }
        *p
    }

    /// The next sequential offset: after this op, plus the skip of `rw=read:8k` (backwards
    /// when negative, wrapping to the region's last block).
    fn advance(&mut self, file: usize, read: bool, off: u64, len: u64) {
        let fp = &mut self.files[file];
        let r = fp.region;
        let next = off as i64 + len as i64 + self.skip;
        let last = (r.start + r.len).saturating_sub(self.min_bs) as i64;
        fp.seq[usize::from(!read)] = if next < r.start as i64 {
            (last - (last - r.start as i64) % self.unit as i64) as u64
        } else {
            next as u64
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Rw, Size};

    fn ops(j: &FioJob, regions: &[Region], n: usize) -> Vec<Next> {
        let mut p = Picker::new(j, regions, 1);
        (0..n).map(|_| p.next()).collect()
    }

    #[test]
    fn a_random_map_visits_every_block_once_per_pass() {
        let mut j = FioJob::new("r", Rw::Randread);
        j.size = Size(64 * 4096);
        let v = ops(&j, &[Region { start: 0, len: 64 * 4096 }], 64);
        let mut offs: Vec<u64> = v.iter().map(|n| n.off).collect();
        offs.sort_unstable();
        offs.dedup();
        assert_eq!(offs.len(), 64);
        // Without it (norandommap), blocks repeat within a pass.
        j.norandommap = true;
        let v = ops(&j, &[Region { start: 0, len: 64 * 4096 }], 64);
        let mut offs: Vec<u64> = v.iter().map(|n| n.off).collect();
        offs.sort_unstable();
        offs.dedup();
        assert!(offs.len() < 64);
    }

    /// Files are served round robin; sequential ops walk each file; `rw=read:-8k` with 4k
    /// blocks goes backwards by 4k, as fio's backwards-read example does.
    #[test]
    fn sequential_ops_walk_files_round_robin_and_skip() {
        let mut j = FioJob::new("s", Rw::Read);
        j.nrfiles = 2;
        let regions = [Region { start: 0, len: 4 * 4096 }, Region { start: 0, len: 4 * 4096 }];
        let v = ops(&j, &regions, 4);
        let got: Vec<(usize, u64)> = v.iter().map(|n| (n.file, n.off)).collect();
        assert_eq!(got, vec![(0, 0), (1, 0), (0, 4096), (1, 4096)]);
        j.nrfiles = 1;
        j.rw_skip = -8192;
        let v = ops(&j, &[Region { start: 0, len: 4 * 4096 }], 5);
        let offs: Vec<u64> = v.iter().map(|n| n.off / 4096).collect();
        assert_eq!(offs, vec![0, 3, 2, 1, 0]);
    }

    /// bssplit sizes at offsets aligned to the smallest block, never past the region's end;
    /// a pass ends after `size` bytes.
    #[test]
    fn mixed_sizes_stay_inside_and_passes_count_bytes() {
        let mut j = FioJob::new("m", Rw::Randrw);
        j.bs_read = Some(BlockSizes::Split(vec![(Size(4096), 50), (Size(65536), 50)]));
        j.bs_write = j.bs_read.clone();
        j.size = Size(1 << 20);
        let region = Region { start: 0, len: 1 << 20 };
        let mut p = Picker::new(&j, &[region], 3);
        let mut bytes = 0;
        while p.passes == 0 {
            let n = p.next();
            assert_eq!(n.off % 4096, 0);
            assert!(n.off + n.len <= 1 << 20 && n.len % 4096 == 0 && n.len > 0, "{n:?}");
            bytes += n.len;
        }
        assert!((1 << 20..(1 << 20) + 65536).contains(&bytes));
        // percentage_random=0 makes a random job sequential.
        j.percentage_random = 0;
        j.bs_read = None;
        j.bs_write = None;
        let v = ops(&j, &[region], 3);
        assert!(v.iter().all(|n| n.off % 4096 == 0));
    }
}
