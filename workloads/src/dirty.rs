//! A memory-dirtying load beside any I/O workload: a working set of `size_mib` MiB whose pages
//! are rewritten in order at `rate_mib_s` (0: as fast as the guest can), each page stamped with
//! its index, its generation and the run's nonce, the rest of it filled from them.
//!
//! Every page is checked by construction, whatever the writer does after a switch-over: the
//! writer verifies a page's generation **before it rewrites it** (as fio verifies before it
//! overwrites), and after a hop the host asks for a [`MemoryCheck`] that reads every page back
//! against the generation it must hold. A page that holds an older one is a dirty page the
//! migration lost, whether the writer or the check found it. The host marks the switch-over
//! ([`Dirtier::mark`]) so each check can say how many pages were rewritten since — the pages a
//! read-back alone could no longer have judged — and how many of those were verified first.
//! Like QEMU's own migration test, it also measures how fast the guest updates its memory
//! (guestperf's ms/GiB): pre-copy converges only when it outruns that.

use crate::engine::now_ns;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub const PAGE: usize = 4096;
const WORDS: usize = PAGE / 8;
const MAGIC: u64 = 0x6d69_676c_6162_6d65; // "miglabme"
/// The writer's time slice: the rate is held per slice, and a check waits at most one.
const SLICE_NS: u64 = 10_000_000;
/// At most this many speed samples wait for the next check (one a second: an hour's worth).
const MAX_SAMPLES: usize = 3600;
/// The first bad pages listed in a check (all are counted).
const MAX_LISTED: usize = 16;

/// What to dirty, and how fast.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirtySpec {
    /// The working set, in MiB of guest memory.
    pub size_mib: u64,
    /// Page writes per second over it, in MiB (pages × 4 KiB); 0 writes as fast as it can.
    pub rate_mib_s: f64,
}

/// One second of the writer: how fast it wrote and how long writing took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct SpeedSample {
    /// Guest CLOCK_MONOTONIC at the end of the second, in ms.
    pub guest_ms: u64,
    /// MiB of pages written in it.
    pub mib_s: f64,
    /// Time spent writing per GiB written (guestperf's figure: lower is a faster guest).
    pub ms_per_gib: f64,
}

/// A page that does not hold what it must.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BadPage {
    pub page: u64,
    /// The generation it must hold, and the one its stamp says (None: no valid stamp).
    pub expected: u64,
    pub found: Option<u64>,
}

/// Every page read back against the generation it must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryCheck {
    pub pages: u64,
    /// Page writes since the load began, and complete sweeps over the working set.
    pub written: u64,
    pub sweeps: u64,
    /// Pages holding an older generation than their last write: lost dirty pages.
    pub stale: u64,
    /// Pages whose stamp or contents are not any generation's.
    pub corrupt: u64,
    /// Of `stale` and `corrupt`, those the writer found before rewriting them (since the
    /// previous check); the rest were found by the read-back.
    #[serde(default)]
    pub found_by_writer: u64,
    pub bad: Vec<BadPage>,
    /// Pages the read-back verified (every page: it reads them all).
    #[serde(default)]
    pub checked: u64,
    /// Distinct pages the writer rewrote since the host's mark of the switch-over (None: no
    /// mark since the previous check), and how many of them it verified before rewriting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten_since_mark: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_since_mark: Option<u64>,
    /// How long the read-back took (the writer paused meanwhile).
    pub check_ms: f64,
    /// The writer's seconds since the previous check.
    pub speed: Vec<SpeedSample>,
}

impl MemoryCheck {
    pub fn clean(&self) -> bool {
        self.stale == 0 && self.corrupt == 0
    }

    /// The share of pages whose contents at the mark were verified: those not rewritten since,
    /// by the read-back; those rewritten, by the writer before it rewrote them. None without a
    /// mark (or from an agent that did not count).
    pub fn coverage(&self) -> Option<f64> {
        let (rewritten, verified) = (self.rewritten_since_mark?, self.verified_since_mark?);
        if self.pages == 0 {
            return None;
        }
        let untouched_checked = self.checked.min(self.pages.saturating_sub(rewritten));
        Some((untouched_checked + verified.min(rewritten)) as f64 / self.pages as f64)
    }

    /// What a read-back alone would have covered: the pages not rewritten since the mark (the
    /// check before the writer verified its pages).
    pub fn readback_coverage(&self) -> Option<f64> {
        let rewritten = self.rewritten_since_mark?;
        (self.pages > 0).then(|| self.pages.saturating_sub(rewritten) as f64 / self.pages as f64)
    }
}

fn mix(mut x: u64) -> u64 {
    // splitmix64's finaliser: every input bit reaches every output bit.
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn base(page: u64, generation: u64, nonce: u64) -> u64 {
    mix(nonce ^ mix(page ^ generation.rotate_left(40)))
}

/// The body's words: a xorshift stream from the stamp, so that neither compression nor
/// XBZRLE's delta against the previous generation has anything to find (as in a real guest's
/// fresh data, not its zero pages).
fn body(b: u64) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(b | 1), |x| {
        let mut x = *x;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        Some(x)
    })
}

/// Writes one page's generation: the stamp, then words derived from it.
fn fill(p: &mut [u64], page: u64, generation: u64, nonce: u64) {
    p[0] = MAGIC;
    p[1] = page;
    p[2] = generation;
    p[3] = nonce;
    for (w, v) in p.iter_mut().skip(4).zip(body(base(page, generation, nonce))) {
        *w = v;
    }
}

/// What a page holds: Ok(generation) when it is one, whole; Err(stamped generation) otherwise.
fn read(p: &[u64], page: u64, nonce: u64) -> Result<u64, Option<u64>> {
    if p[0] != MAGIC || p[1] != page || p[3] != nonce {
        return Err(None);
    }
    if p.iter().skip(4).zip(body(base(page, p[2], nonce))).all(|(w, v)| *w == v) {
        Ok(p[2])
    } else {
        Err(Some(p[2]))
    }
}

/// The working set and where the writer is in it: pages below `cursor` hold `sweep + 1`, the
/// others `sweep`.
struct Region {
    words: Vec<u64>,
    pages: u64,
    nonce: u64,
    sweep: u64,
    cursor: u64,
    written: u64,
    samples: Vec<SpeedSample>,
    /// What the writer found wrong before rewriting, since the previous check.
    found: Found,
    /// Writes, and writes verified first, since the host's last mark (None: no mark since the
    /// previous check).
    since_mark: Option<(u64, u64)>,
}

#[derive(Default)]
struct Found {
    stale: u64,
    corrupt: u64,
    bad: Vec<BadPage>,
}

impl Found {
    /// Page `page` should hold `want` and holds `got` (a `read` result): counted if it does not.
    fn judge(&mut self, page: u64, want: u64, got: Result<u64, Option<u64>>) {
        let found = match got {
            Ok(g) if g == want => return,
            Ok(g) if g < want => {
                self.stale += 1;
                Some(g)
            }
            Ok(g) => {
                self.corrupt += 1;
                Some(g)
            }
            Err(g) => {
                self.corrupt += 1;
                g
            }
        };
        if self.bad.len() < MAX_LISTED {
            self.bad.push(BadPage { page, expected: want, found });
        }
    }
}

impl Region {
    fn new(spec: &DirtySpec, nonce: u64) -> Self {
        let pages = spec.size_mib * (1 << 20) / PAGE as u64;
        let mut r = Region {
            words: vec![0; pages as usize * WORDS],
            pages,
            nonce,
            sweep: 0,
            cursor: 0,
            written: 0,
            samples: Vec::new(),
            found: Found::default(),
            since_mark: None,
        };
        // Generation 0 everywhere: every page is the guest's (touched) before the timed part.
        for i in 0..pages {
            fill(r.page_mut(i), i, 0, nonce);
        }
        r
    }

    fn page_mut(&mut self, i: u64) -> &mut [u64] {
        let at = i as usize * WORDS;
        &mut self.words[at..at + WORDS]
    }

    /// Verifies the next page holds its current generation, then rewrites it with the next.
    fn write_next(&mut self) {
        let (i, generation, nonce) = (self.cursor, self.sweep + 1, self.nonce);
        let held = read(self.page_mut(i), i, nonce);
        self.found.judge(i, self.sweep, held);
        fill(self.page_mut(i), i, generation, nonce);
        if let Some((writes, verified)) = &mut self.since_mark {
            *writes += 1;
            *verified += 1;
        }
        self.written += 1;
        self.cursor += 1;
        if self.cursor == self.pages {
            self.cursor = 0;
            self.sweep += 1;
        }
    }

    fn expected(&self, i: u64) -> u64 {
        if i < self.cursor {
            self.sweep + 1
        } else {
            self.sweep
        }
    }

    /// The switch-over is behind: count the writes from here.
    fn mark(&mut self) {
        self.since_mark = Some((0, 0));
    }

    fn check(&mut self) -> MemoryCheck {
        let t = now_ns();
        let by_writer = std::mem::take(&mut self.found);
        let found_by_writer = by_writer.stale + by_writer.corrupt;
        let mut f = by_writer;
        for i in 0..self.pages {
            let at = i as usize * WORDS;
            f.judge(i, self.expected(i), read(&self.words[at..at + WORDS], i, self.nonce));
        }
        // Writes are in page order, so the distinct pages are the writes, up to the whole set.
        let distinct = |n: u64| n.min(self.pages);
        let since = self.since_mark.take();
        MemoryCheck {
            pages: self.pages,
            written: self.written,
            sweeps: self.sweep,
            stale: f.stale,
            corrupt: f.corrupt,
            found_by_writer,
            bad: f.bad,
            checked: self.pages,
            rewritten_since_mark: since.map(|(w, _)| distinct(w)),
            verified_since_mark: since.map(|(_, v)| distinct(v)),
            check_ms: (now_ns() - t) as f64 / 1e6,
            speed: std::mem::take(&mut self.samples),
        }
    }
}

/// The running load: a writer thread over the shared [`Region`].
pub struct Dirtier {
    region: Arc<Mutex<Region>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Dirtier {
    /// Fills the working set (generation 0), then starts the writer.
    pub fn start(spec: DirtySpec, nonce: u64) -> Result<Dirtier, String> {
        if spec.size_mib == 0 || !(spec.rate_mib_s >= 0.0 && spec.rate_mib_s.is_finite()) {
            return Err(format!("a dirtying load needs size_mib > 0 and a rate ≥ 0: {spec:?}"));
        }
        let region = Arc::new(Mutex::new(Region::new(&spec, nonce)));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (region.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("dirty".into())
            .spawn(move || write_loop(&r, &s, spec.rate_mib_s))
            .map_err(|e| format!("the dirtying thread: {e}"))?;
        Ok(Dirtier { region, stop, thread: Some(thread) })
    }

    /// The host's word that a switch-over is behind: the next check counts the pages
    /// rewritten from here.
    pub fn mark(&self) {
        self.region.lock().unwrap_or_else(|e| e.into_inner()).mark();
    }

    /// Pauses the writer (for at most one slice), reads every page back, resumes it.
    pub fn check(&self) -> MemoryCheck {
        self.region.lock().unwrap_or_else(|e| e.into_inner()).check()
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl std::fmt::Debug for Dirtier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dirtier").field("running", &self.thread.is_some()).finish()
    }
}

impl Drop for Dirtier {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Per slice: the slice's pages written under the lock, then the rest of the slice asleep. A
/// guest too slow for the rate writes as fast as it can (the samples say so).
fn write_loop(region: &Mutex<Region>, stop: &AtomicBool, rate_mib_s: f64) {
    let pages_per_ns = rate_mib_s * (1 << 20) as f64 / PAGE as f64 / 1e9;
    let mut owed = 0.0f64;
    let (mut second_start, mut busy_ns, mut pages_in_second) = (now_ns(), 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let slice_start = now_ns();
        let n = if rate_mib_s == 0.0 {
            256
        } else {
            owed += pages_per_ns * SLICE_NS as f64;
            let n = owed.floor();
            owed -= n;
            n as u64
        };
        {
            let mut r = region.lock().unwrap_or_else(|e| e.into_inner());
            let t = now_ns();
            for _ in 0..n {
                r.write_next();
            }
            busy_ns += now_ns() - t;
            pages_in_second += n;
            let now = now_ns();
            if now - second_start >= 1_000_000_000 {
                let secs = (now - second_start) as f64 / 1e9;
                let gib = pages_in_second as f64 * PAGE as f64 / (1u64 << 30) as f64;
                if r.samples.len() < MAX_SAMPLES {
                    r.samples.push(SpeedSample {
                        guest_ms: now / 1_000_000,
                        mib_s: gib * 1024.0 / secs,
                        ms_per_gib: if gib > 0.0 { busy_ns as f64 / 1e6 / gib } else { 0.0 },
                    });
                }
                (second_start, busy_ns, pages_in_second) = (now, 0, 0);
            }
        }
        if rate_mib_s > 0.0 {
            let left = (slice_start + SLICE_NS).saturating_sub(now_ns());
            std::thread::sleep(Duration::from_nanos(left));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After any number of writes, every page checks out; a page set back to an older
    /// generation (what a lost dirty page looks like) is stale, a flipped word corrupt.
    #[test]
    fn every_page_checks_out_and_a_lost_or_torn_page_is_named() {
        let spec = DirtySpec { size_mib: 1, rate_mib_s: 0.0 };
        let mut r = Region::new(&spec, 77);
        assert_eq!(r.pages, 256);
        for _ in 0..(256 * 2 + 100) {
            r.write_next();
        }
        let c = r.check();
        assert!(c.clean() && c.pages == 256 && c.sweeps == 2 && c.written == 612, "{c:?}");
        // Page 5 back at the previous sweep's contents; page 200 torn.
        fill(r.page_mut(5), 5, 2, 77);
        r.page_mut(200)[100] ^= 1;
        let c = r.check();
        assert_eq!((c.stale, c.corrupt), (1, 1), "{c:?}");
        assert_eq!(c.bad[0], BadPage { page: 5, expected: 3, found: Some(2) });
        assert_eq!(c.bad[1], BadPage { page: 200, expected: 2, found: Some(2) });
        // Another run's page (another nonce) is not this run's.
        fill(r.page_mut(7), 7, 3, 78);
        assert_eq!(r.check().corrupt, 2);
    }

    /// A page the migration lost and the writer then rewrote is still found: the writer
    /// verifies it first. Before, the read-back saw only the new generation and passed. Each
    /// check says how many pages were rewritten since the mark and that all were verified.
    #[test]
    fn a_lost_page_the_writer_rewrites_is_found_before_it_is_overwritten() {
        let mut r = Region::new(&DirtySpec { size_mib: 1, rate_mib_s: 0.0 }, 9);
        for _ in 0..300 {
            r.write_next();
        }
        assert!(r.check().clean());
        // The switch-over: page 50 (cursor at 44, sweep 1: it holds 1) comes back at 0.
        fill(r.page_mut(50), 50, 0, 9);
        r.mark();
        for _ in 0..100 {
            r.write_next(); // rewrites pages 44..144, page 50 among them
        }
        let c = r.check();
        assert_eq!((c.stale, c.corrupt, c.found_by_writer), (1, 0, 1), "{c:?}");
        assert_eq!(c.bad[0], BadPage { page: 50, expected: 1, found: Some(0) });
        assert_eq!((c.checked, c.rewritten_since_mark, c.verified_since_mark), (256, Some(100), Some(100)));
        assert_eq!(c.coverage(), Some(1.0));
        assert_eq!(c.readback_coverage(), Some(156.0 / 256.0));
        // Faster than the set: every page rewritten, all verified; no mark, no figure.
        r.mark();
        for _ in 0..1000 {
            r.write_next();
        }
        let c = r.check();
        assert!(c.clean(), "{c:?}");
        assert_eq!(
            (c.rewritten_since_mark, c.coverage(), c.readback_coverage()),
            (Some(256), Some(1.0), Some(0.0))
        );
        assert_eq!(r.check().coverage(), None);
    }

    /// The writer holds its rate (within a loose bound: this is a correctness check, not a
    /// timing target) and a check taken while it runs is clean.
    #[test]
    fn the_writer_runs_and_checks_clean_while_running() {
        let mut d = Dirtier::start(DirtySpec { size_mib: 2, rate_mib_s: 40.0 }, 5).expect("starts");
        std::thread::sleep(Duration::from_millis(300));
        let c = d.check();
        assert!(c.clean(), "{c:?}");
        assert!(c.written > 0, "the writer wrote: {c:?}");
        d.stop();
        assert!(Dirtier::start(DirtySpec { size_mib: 0, rate_mib_s: 1.0 }, 5).is_err());
        assert!(Dirtier::start(DirtySpec { size_mib: 1, rate_mib_s: f64::NAN }, 5).is_err());
    }
}
