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
    /// fio's random map: a bit per slot used this pass, and how many are set.
    map: Vec<u64>,
    used: u64,
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
                    map: if random_map { vec![0; slots.div_ceil(64) as usize] } else { Vec::new() },
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
        let mut len = if want <= room { want } else { (room - room % self.unit).max(self.min_bs.min(room)) };
        if random && self.random_map {
            len = self.mark(file, off, len);
        }
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
            // fio's map: a random slot, or the next free one after it if it was used.
            let r = self.rng.below(fp.slots);
            next_free(&fp.map, r, fp.slots).unwrap_or(r)
        } else {
            self.rng.below(fp.slots)
        };
        fp.region.start + slot * align
    }

    /// Marks the slots an op at `off` covers in the random map, up to the first one already
    /// used: the op is cut there, as fio's `mark_random_map` cuts it. A full map starts a new
    /// pass.
    fn mark(&mut self, file: usize, off: u64, len: u64) -> u64 {
        let align = self.align;
        let fp = &mut self.files[file];
        let first = (off - fp.region.start) / align;
        let mut n = 0;
        while n * align < len && first + n < fp.slots {
            let s = first + n;
            let (w, b) = ((s / 64) as usize, s % 64);
            if fp.map[w] & (1 << b) != 0 {
                break;
            }
            fp.map[w] |= 1 << b;
            n += 1;
        }
        fp.used += n;
        if fp.used >= fp.slots {
            fp.map.iter_mut().for_each(|w| *w = 0);
            fp.used = 0;
        }
        let cut = (n * align).min(len);
        if n == 0 || cut < self.min_bs {
            len
        } else {
            cut - cut % self.unit
        }
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

/// The first unset bit at or after `from` (wrapping), if any.
fn next_free(map: &[u64], from: u64, slots: u64) -> Option<u64> {
    let free = |s: u64| map[(s / 64) as usize] & (1 << (s % 64)) == 0;
    if free(from) {
        return Some(from);
    }
    let words = map.len();
    let start = (from / 64) as usize;
    for k in 0..=words {
        let w = (start + k) % words;
        let mut bits = !map[w];
        if k == 0 {
            // Only the bits after `from` in its own word.
            bits = !map[w] & (u64::MAX.checked_shl((from % 64 + 1) as u32).unwrap_or(0));
        }
        while bits != 0 {
            let s = w as u64 * 64 + u64::from(bits.trailing_zeros());
            if s < slots {
                return Some(s);
            }
            bits &= bits - 1;
        }
    }
    None
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
    fn the_next_free_slot_wraps_round_the_map() {
        let mut map = vec![0u64; 2];
        map[0] = u64::MAX;
        assert_eq!(next_free(&map, 3, 100), Some(64));
        map[1] = (1 << 36) - 1;
        assert_eq!(next_free(&map, 70, 100), None, "every slot used (bits past the end do not count)");
        map[0] = !1;
        assert_eq!(next_free(&map, 70, 100), Some(0), "wraps to the start");
    }

    /// With fio's random map, mixed sizes are cut at the first used slot, so a pass covers
    /// every slot exactly once and large ops shrink as it fills, as fio's do.
    #[test]
    fn the_random_map_cuts_ops_at_used_slots() {
        let mut j = FioJob::new("m", Rw::Randread);
        j.bs_read = Some(BlockSizes::Split(vec![(Size(4096), 50), (Size(65536), 50)]));
        j.size = Size(1 << 20);
        let mut p = Picker::new(&j, &[Region { start: 0, len: 1 << 20 }], 9);
        let mut covered = vec![0u32; 256];
        while p.passes == 0 {
            let n = p.next();
            for b in n.off / 4096..(n.off + n.len) / 4096 {
                covered[b as usize] += 1;
            }
        }
        assert!(covered.iter().all(|c| *c == 1), "{covered:?}");
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
