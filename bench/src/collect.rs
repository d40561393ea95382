//! The host side of the record stream: frames from the guest's records port, stamped with the
//! host's monotonic clock on arrival, turned into latency histograms (guest clock, and host
//! clock through heartbeat pairs), a 100 ms time series, an HdrHistogram interval log
//! ([`hlog`]), and the gap figures of each migration or fault window ([`gaps`]). Every time is
//! on the run clock.
//!
//! Only successful ops count as completions: they alone enter the latency histograms, the
//! series' IOPS and throughput, and end an I/O stall. Failed ops are counted per kind, with a
//! histogram of how long they took to fail.
//!
//! Memory is bounded whatever the run's length: histograms have fixed size, the heartbeat
//! ring keeps the last [`HEARTBEAT_RING`] heartbeats, and only the 100 ms series (a few dozen
//! bytes a bucket) and the compressed interval log grow with time.

mod gaps;
mod hlog;

use crate::clock::RunClock;
use gaps::{end_trailing, Figure, OpenWindow, Trailing};
use hdrhistogram::Histogram;
use hlog::IntervalLog;
use miglab_model::{Bucket, Latency, OpSummary, Window, WindowKind};
use miglab_workloads::record::{Decoder, Op, OpRecord, Record, FLAG_MISMATCH};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Heartbeats kept for mapping guest times to host times (10 s at 1 ms).
pub const HEARTBEAT_RING: usize = 10_000;
/// Highest latency the histograms hold: an hour, in µs.
const MAX_US: u64 = 3_600_000_000;
const BUCKET: Duration = Duration::from_millis(100);

fn hist(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, MAX_US, sigfig).unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

/// The percentiles a result keeps of a histogram.
pub fn latency(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        count: h.len(),
        min_us: h.min(),
        mean_us: h.mean(),
        p50_us: h.value_at_quantile(0.5),
        p90_us: h.value_at_quantile(0.9),
        p99_us: h.value_at_quantile(0.99),
        p999_us: h.value_at_quantile(0.999),
        p9999_us: h.value_at_quantile(0.9999),
        max_us: h.max(),
    }
}

/// The percentile spectrum of an op kind on both clocks.
fn spectrum(guest: &Histogram<u64>, host: &Histogram<u64>) -> Vec<miglab_model::SpectrumPoint> {
    if guest.is_empty() {
        return Vec::new();
    }
    miglab_model::SPECTRUM
        .iter()
        .map(|&p| miglab_model::SpectrumPoint {
            percentile: p,
            guest_us: guest.value_at_quantile(p / 100.0),
            host_us: host.value_at_quantile(p / 100.0),
        })
        .collect()
}

/// `ENOENT` for 2; the number for what the host's libc does not know.
fn errno_name(e: u32) -> String {
    match nix::errno::Errno::from_raw(e as i32) {
        nix::errno::Errno::UnknownErrno => format!("errno {e}"),
        known => format!("{known:?}"),
    }
}

struct OpStats {
    guest: Histogram<u64>,
    host: Histogram<u64>,
    failed: Histogram<u64>,
    count: u64,
    failures: u64,
    /// The failures by errno.
    errnos: std::collections::BTreeMap<u32, u64>,
    mismatches: u64,
    bytes: u64,
    /// Successful ops no heartbeat mapped to the host's clock: not in `host`.
    unmapped: u64,
}

impl OpStats {
    fn new() -> Self {
        Self {
            guest: hist(3),
            host: hist(3),
            failed: hist(2),
            count: 0,
            failures: 0,
            errnos: Default::default(),
            mismatches: 0,
            bytes: 0,
            unmapped: 0,
        }
    }
}

/// Arrival time minus the heartbeat's own guest time, relative to the smallest seen: how much
/// later than its best a heartbeat was stamped. With a guest on the same clock as the host
/// (host mode, tests) it is the delivery and stamping delay; across a migration pause it also
/// jumps by the time the guest's clock stood still.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArrivalLag {
    pub p99_us: u64,
    pub max_us: u64,
}

/// One clone's ops of one kind (the record's `job`: an index into the job file's clones).
#[derive(Debug, Clone)]
pub struct CloneOps {
    pub clone: u16,
    pub op: Op,
    pub count: u64,
    pub failed: u64,
    pub mismatches: u64,
    pub bytes: u64,
    /// Successful ops' guest latency, µs.
    pub guest: Histogram<u64>,
}

impl CloneOps {
    pub fn new(clone: u16, op: Op) -> Self {
        Self { clone, op, count: 0, failed: 0, mismatches: 0, bytes: 0, guest: hist(3) }
    }
}

/// Everything the collector measured.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub ops: Vec<OpSummary>,
    /// The workload's ops per clone and kind (not the verify pass's).
    pub clones: Vec<CloneOps>,
    pub series: Vec<Bucket>,
    pub windows: Vec<Window>,
    /// The HdrHistogram interval log (`latency.hlog`).
    pub hlog: Vec<u8>,
    pub heartbeats: u64,
    pub heartbeats_missing: u64,
    pub bad_frames: u64,
    pub records: u64,
    /// Run clock of the first and last heartbeat.
    pub first_heartbeat_ms: Option<f64>,
    pub last_heartbeat_ms: Option<f64>,
    /// Run clock of the last successful op.
    pub last_op_ms: Option<f64>,
    /// The longest time between two successful ops over the whole stream: (start, length) ms.
    pub longest_stall: Option<(f64, f64)>,
    pub arrival_lag: ArrivalLag,
    /// When the stream was finished, on the run clock.
    pub ended_ms: f64,
}

/// The collector; feed it bytes in the guest's order with their arrival time.
pub struct Collector {
    clock: RunClock,
    decoder: Decoder,
    ops: BTreeMap<Op, OpStats>,
    clones: BTreeMap<(u16, Op), CloneOps>,
    ring: VecDeque<(u64, Instant)>,
    last_seq: Option<u32>,
    heartbeats: u64,
    missing: u64,
    records: u64,
    first_hb: Option<Instant>,
    last_completion: Option<Instant>,
    series: Vec<Bucket>,
    bucket: Bucket,
    bucket_hist: Histogram<u64>,
    /// None until the first bytes arrive: the series starts there, not at the run's start.
    bucket_start: Option<Instant>,
    hlog: IntervalLog,
    open: Vec<OpenWindow>,
    closed: Vec<Window>,
    /// Gaps that outlived their windows: the next event says how long they really were.
    trailing: Vec<Trailing>,
    /// Fault windows (index into `closed`) waiting for the first successful op after the
    /// fault cleared, with the clearance.
    recovering: Vec<(usize, Instant)>,
    /// The longest gap between successful ops over the whole stream: its start and length.
    longest_stall: Option<(Instant, Duration)>,
    /// Ops waiting for the heartbeat that ends their batch: an op that completed after a pause
    /// must be mapped through the heartbeat after the pause, which arrives just after it.
    pending: Vec<(OpRecord, Instant)>,
    /// An instant and its CLOCK_MONOTONIC ns, to put arrival stamps on the guest's scale.
    mono_base: (Instant, u64),
    lag_min: Option<i128>,
    lag: Histogram<u64>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("records", &self.records).finish_non_exhaustive()
    }
}

impl Collector {
    pub fn new(clock: RunClock) -> Self {
        Self {
            clock,
            decoder: Decoder::new(),
            ops: BTreeMap::new(),
            clones: BTreeMap::new(),
            ring: VecDeque::with_capacity(HEARTBEAT_RING),
            last_seq: None,
            heartbeats: 0,
            missing: 0,
            records: 0,
            first_hb: None,
            last_completion: None,
            series: Vec::new(),
            bucket: Bucket::default(),
            bucket_hist: hist(2),
            bucket_start: None,
            hlog: IntervalLog::new(clock.wall_zero(), MAX_US),
            open: Vec::new(),
            closed: Vec::new(),
            trailing: Vec::new(),
            recovering: Vec::new(),
            longest_stall: None,
            pending: Vec::new(),
            mono_base: (Instant::now(), miglab_workloads::engine::now_ns()),
            lag_min: None,
            lag: hist(2),
        }
    }

    /// CLOCK_MONOTONIC ns of `at` (what the guest's stamps are on, when it is this host).
    fn mono_ns(&self, at: Instant) -> i128 {
        let (i, ns) = self.mono_base;
        match at.checked_duration_since(i) {
            Some(d) => ns as i128 + d.as_nanos() as i128,
            None => ns as i128 - i.duration_since(at).as_nanos() as i128,
        }
    }

    /// Bytes that arrived at `at`, in the order the guest wrote them.
    pub fn feed(&mut self, chunk: &[u8], at: Instant) {
        self.advance(at);
        let mut decoder = std::mem::take(&mut self.decoder);
        decoder.feed(chunk, |r| self.record(r, at));
        self.decoder = decoder;
    }

    /// Closes the 100 ms buckets and the log's intervals that ended before `at`.
    fn advance(&mut self, at: Instant) {
        let zero = self.clock.zero();
        let start = *self.bucket_start.get_or_insert_with(|| {
            // The first bucket is the 100 ms slot of the run clock the stream began in.
            let since = at.saturating_duration_since(zero).as_millis() as u64;
            zero + Duration::from_millis(since - since % BUCKET.as_millis() as u64)
        });
        let mut start = start;
        while at.saturating_duration_since(start) >= BUCKET {
            self.close_bucket(start);
            start += BUCKET;
        }
        self.bucket_start = Some(start);
        self.hlog.flush_before(at.saturating_duration_since(zero));
    }

    fn close_bucket(&mut self, start: Instant) {
        self.bucket.t_ms = start.saturating_duration_since(self.clock.zero()).as_millis() as u64;
        self.bucket.p99_us = (!self.bucket_hist.is_empty()).then(|| self.bucket_hist.value_at_quantile(0.99));
        self.series.push(std::mem::take(&mut self.bucket));
        self.bucket_hist.reset();
    }

    /// The host time of guest time `g`, through the oldest heartbeat at or after it. A guest
    /// time between the last heartbeat before a pause and the first after it is taken to be
    /// after the pause: within one heartbeat period (the resolution) nothing tells which.
    fn host_of(&self, g: u64) -> Option<Instant> {
        let n = self.ring.len();
        // Fast path: most ops belong to the newest batch, between the last two heartbeats.
        let i = if n >= 2 && self.ring[n - 2].0 < g && g <= self.ring[n - 1].0 {
            n - 1
        } else {
            self.ring.partition_point(|(hg, _)| *hg < g)
        };
        let (hg, hh) = if i == self.ring.len() { *self.ring.back()? } else { self.ring[i] };
        Some(if g >= hg {
            hh + Duration::from_nanos(g - hg)
        } else {
            hh.checked_sub(Duration::from_nanos(hg - g))?
        })
    }

    fn record(&mut self, r: Record, at: Instant) {
        self.records += 1;
        match r {
            Record::Heartbeat { seq, guest_ns } => {
                if let Some(last) = self.last_seq {
                    // Forward (with wrap-around) by less than half the sequence space: the
                    // ones between are missing. A sequence that went back (an agent that
                    // restarted, a reordered frame) is not 4 billion lost heartbeats.
                    let ahead = seq.wrapping_sub(last);
                    if ahead < 1 << 31 {
                        self.missing += ahead.saturating_sub(1) as u64;
                    }
                }
                self.last_seq = Some(seq);
                self.heartbeats += 1;
                self.first_hb.get_or_insert(at);
                self.bucket.heartbeats += 1;
                if self.ring.len() == HEARTBEAT_RING {
                    self.ring.pop_front();
                }
                self.ring.push_back((guest_ns, at));
                let lag = self.mono_ns(at) - guest_ns as i128;
                let min = *self.lag_min.get_or_insert(lag);
                if lag < min {
                    self.lag_min = Some(lag);
                }
                let _ = self.lag.record(((lag - self.lag_min.unwrap_or(lag)).max(0) / 1000) as u64 + 1);
                for w in &mut self.open {
                    w.heartbeats.event(at, Some(guest_ns));
                }
                self.end_trailing(Figure::Heartbeat, at, Some(guest_ns));
                self.flush_pending();
            }
            Record::Op(o) => {
                self.pending.push((o, at));
                // The agent ends every batch with a heartbeat; this only bounds a stream that
                // does not.
                if self.pending.len() >= 65_536 {
                    self.flush_pending();
                }
            }
        }
    }

    fn flush_pending(&mut self) {
        let pending = std::mem::take(&mut self.pending);
        for (o, at) in &pending {
            self.op(*o, *at);
        }
        self.pending = pending;
        self.pending.clear();
    }

    fn op(&mut self, o: OpRecord, at: Instant) {
        let guest_us = (o.latency_ns() / 1000).clamp(1, MAX_US);
        // Host latency: both ends mapped through the heartbeats in effect when they happened,
        // so a pause between submit and completion is counted.
        let (submit, complete) = (self.host_of(o.submit_ns), self.host_of(o.complete_ns));
        if o.op != Op::Verify {
            let k = self.clones.entry((o.job, o.op)).or_insert_with(|| CloneOps::new(o.job, o.op));
            if o.failed() {
                k.failed += 1;
            } else {
                k.count += 1;
                k.bytes += u64::from(o.bytes);
                let _ = k.guest.record(guest_us);
            }
            k.mismatches += u64::from(o.flags & FLAG_MISMATCH != 0);
        }
        let s = self.ops.entry(o.op).or_insert_with(OpStats::new);
        if o.flags & FLAG_MISMATCH != 0 {
            s.mismatches += 1;
        }
        if o.failed() {
            s.failures += 1;
            *s.errnos.entry(o.status).or_default() += 1;
            let _ = s.failed.record(guest_us);
            self.bucket.errors += 1;
            for w in &mut self.open {
                w.errors += 1;
            }
            return;
        }
        s.count += 1;
        s.bytes += o.bytes as u64;
        let _ = s.guest.record(guest_us);
        // Host latency only where both ends mapped: a guest latency in the host histogram
        // would hide the pause it was meant to show.
        match (submit, complete) {
            (Some(a), Some(c)) => {
                let _ = s.host.record((c.saturating_duration_since(a).as_micros() as u64).clamp(1, MAX_US));
            }
            _ => s.unmapped += 1,
        }
        let completed = complete.unwrap_or(at).saturating_duration_since(self.clock.zero());
        self.hlog.record(o.op, completed, guest_us);
        if o.op == Op::Verify {
            // The verify pass's reads: counted apart, not the workload's throughput or p99.
            self.bucket.verify_ops += 1;
        } else {
            let _ = self.bucket_hist.record(guest_us);
            self.bucket.ops += 1;
            self.bucket.bytes += o.bytes as u64;
        }
        if let Some(last) = self.last_completion {
            let gap = at.saturating_duration_since(last);
            if self.longest_stall.is_none_or(|(_, d)| gap > d) {
                self.longest_stall = Some((last, gap));
            }
        }
        self.last_completion = Some(at);
        for w in &mut self.open {
            w.ops += 1;
            w.stalls.event(at, None);
        }
        self.end_trailing(Figure::Stall, at, None);
        for (i, cleared) in self.recovering.drain(..) {
            if let Some(w) = self.closed.get_mut(i) {
                w.recovered_after_ms = Some(at.saturating_duration_since(cleared).as_secs_f64() * 1e3);
            }
        }
    }

    /// Gaps of `figure` that outlived their windows end at `at`.
    fn end_trailing(&mut self, figure: Figure, at: Instant, guest_ns: Option<u64>) {
        let closed = &mut self.closed;
        self.trailing.retain(|t| {
            if t.figure != figure {
                return true;
            }
            if let Some(w) = closed.get_mut(t.window) {
                end_trailing(w, t, at, guest_ns, false);
            }
            false
        });
    }

    /// Starts measuring window `name` at `at`. Gaps that began before it count from the last
    /// heartbeat or completion seen.
    pub fn open_window(&mut self, name: &str, kind: WindowKind, at: Instant) {
        let last_hb = self.ring.back().map(|(g, h)| (*h, *g));
        self.open.push(OpenWindow::new(name, kind, at, last_hb, self.last_completion));
    }

    /// Ends window `name` at `at`; a gap still open then is measured to the event that ends
    /// it, and reported provisionally (to `at`) here.
    pub fn close_window(&mut self, name: &str, at: Instant) -> Option<Window> {
        self.advance(at);
        let i = self.open.iter().position(|w| w.name == name)?;
        let clock = self.clock;
        let (win, trailing) = self.open.remove(i).close(at, |t| clock.ms(t));
        let index = self.closed.len();
        for (figure, start, guest_ns) in trailing {
            self.trailing.push(Trailing { window: index, figure, start, guest_ns });
        }
        if matches!(win.kind, WindowKind::Fault { .. }) {
            self.recovering.push((index, at));
        }
        self.closed.push(win.clone());
        Some(win)
    }

    /// When the last successful op and the last heartbeat arrived.
    pub fn last_arrivals(&self) -> (Option<Instant>, Option<Instant>) {
        (self.last_completion, self.ring.back().map(|(_, h)| *h))
    }

    /// Heartbeats and successful ops so far, the ops still held for the next heartbeat
    /// included (the fuzz target found an op that `finish` counted and this did not).
    pub fn progress(&self) -> (u64, u64) {
        let held = self.pending.iter().filter(|(o, _)| !o.failed()).count() as u64;
        (self.heartbeats, self.ops.values().map(|s| s.count).sum::<u64>() + held)
    }

    pub fn finish(mut self, end: Instant) -> Collected {
        self.flush_pending();
        let names: Vec<String> = self.open.iter().map(|w| w.name.clone()).collect();
        for n in names {
            self.close_window(&n, end);
        }
        for t in std::mem::take(&mut self.trailing) {
            if let Some(w) = self.closed.get_mut(t.window) {
                end_trailing(w, &t, end, None, true);
            }
        }
        for (i, _) in std::mem::take(&mut self.recovering) {
            if let Some(w) = self.closed.get_mut(i) {
                w.unmeasured.push("recovery: no op completed successfully after the fault cleared".into());
            }
        }
        if self.bucket_start.is_some() {
            self.advance(end);
            if self.bucket.ops > 0
                || self.bucket.heartbeats > 0
                || self.bucket.errors > 0
                || self.bucket.verify_ops > 0
            {
                let start = self.bucket_start.unwrap_or(end);
                self.close_bucket(start);
                // Cut short by the stream's end: its rates are over what it lasted.
                let span = end.saturating_duration_since(start).as_millis() as u64;
                if let Some(b) = self.series.last_mut().filter(|_| span < BUCKET.as_millis() as u64) {
                    b.span_ms = Some(span.max(1));
                }
            }
        }
        let last_hb = self.ring.back().map(|(_, h)| *h);
        Collected {
            ops: self
                .ops
                .iter()
                .map(|(op, s)| OpSummary {
                    op: op.as_str().into(),
                    count: s.count,
                    failed: s.failures,
                    errors: s.errnos.iter().map(|(e, n)| (errno_name(*e), *n)).collect(),
                    mismatches: s.mismatches,
                    bytes: s.bytes,
                    guest: latency(&s.guest),
                    host: latency(&s.host),
                    host_unmapped: s.unmapped,
                    failed_latency: latency(&s.failed),
                    spectrum: spectrum(&s.guest, &s.host),
                })
                .collect(),
            clones: std::mem::take(&mut self.clones).into_values().collect(),
            series: self.series,
            windows: self.closed,
            hlog: self.hlog.finish(end.saturating_duration_since(self.clock.zero())),
            heartbeats: self.heartbeats,
            heartbeats_missing: self.missing,
            bad_frames: self.decoder.bad_frames,
            records: self.records,
            first_heartbeat_ms: self.first_hb.map(|t| self.clock.ms(t)),
            last_heartbeat_ms: last_hb.map(|t| self.clock.ms(t)),
            last_op_ms: self.last_completion.map(|t| self.clock.ms(t)),
            longest_stall: self.longest_stall.map(|(t, d)| (self.clock.ms(t), d.as_secs_f64() * 1e3)),
            ended_ms: self.clock.ms(end),
            arrival_lag: ArrivalLag {
                p99_us: if self.lag.is_empty() { 0 } else { self.lag.value_at_quantile(0.99) - 1 },
                max_us: if self.lag.is_empty() { 0 } else { self.lag.max() - 1 },
            },
        }
    }
}

#[cfg(test)]
mod tests;
