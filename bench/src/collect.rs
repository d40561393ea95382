//! The host side of the record stream: frames from the guest's records port, stamped with the
//! host's monotonic clock on arrival, turned into latency histograms (guest clock, and host
//! clock through heartbeat pairs), a 100 ms time series, an HdrHistogram interval log, and the
//! gap figures of each migration or fault window.
//!
//! Memory is bounded whatever the run's length: histograms have fixed size, the heartbeat
//! ring keeps the last [`HEARTBEAT_RING`] heartbeats, and only the 100 ms series (a few dozen
//! bytes a bucket) and the compressed interval log grow with time.

use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
use hdrhistogram::serialization::V2DeflateSerializer;
use hdrhistogram::Histogram;
use miglab_reports::{Bucket, Latency, OpSummary, Window};
use miglab_workloads::record::{Decoder, Op, OpRecord, Record, FLAG_MISMATCH};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

/// Heartbeats kept for mapping guest times to host times (10 s at 1 ms).
pub const HEARTBEAT_RING: usize = 10_000;
/// Highest latency the histograms hold: an hour, in µs.
const MAX_US: u64 = 3_600_000_000;
const BUCKET: Duration = Duration::from_millis(100);
const INTERVAL: Duration = Duration::from_secs(1);

fn hist(sigfig: u8) -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
    Histogram::new_with_bounds(1, MAX_US, sigfig).unwrap_or_else(|e| panic!("histogram bounds: {e}"))
}

fn latency(h: &Histogram<u64>) -> Latency {
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
        max_us: h.max(),
    }
}

struct OpStats {
    guest: Histogram<u64>,
    host: Histogram<u64>,
    interval: Histogram<u64>,
    count: u64,
    errors: u64,
    mismatches: u64,
    bytes: u64,
}

impl OpStats {
    fn new() -> Self {
        Self {
            guest: hist(3),
            host: hist(3),
            interval: hist(3),
            count: 0,
            errors: 0,
            mismatches: 0,
            bytes: 0,
        }
    }
}

/// A window being measured.
#[derive(Debug, Clone)]
struct OpenWindow {
    name: String,
    start: Instant,
    last_hb: Option<(Instant, u64)>,
    last_completion: Option<Instant>,
    max_hb_gap: Duration,
    guest_gap_ns: u64,
    max_stall: Duration,
    ops: u64,
    errors: u64,
}

impl OpenWindow {
    fn heartbeat(&mut self, at: Instant, guest_ns: u64) {
        if let Some((h, g)) = self.last_hb {
            let gap = at.saturating_duration_since(h);
            if gap > self.max_hb_gap {
                self.max_hb_gap = gap;
                self.guest_gap_ns = guest_ns.saturating_sub(g);
            }
        }
        self.last_hb = Some((at, guest_ns));
    }

    fn completion(&mut self, at: Instant, failed: bool) {
        if let Some(c) = self.last_completion {
            self.max_stall = self.max_stall.max(at.saturating_duration_since(c));
        }
        self.last_completion = Some(at);
        self.ops += 1;
        if failed {
            self.errors += 1;
        }
    }
}

/// Everything the collector measured.
#[derive(Debug, Clone, Default)]
pub struct Collected {
    pub ops: Vec<OpSummary>,
    pub series: Vec<Bucket>,
    pub windows: Vec<Window>,
    /// The HdrHistogram interval log (`latency.hlog`), one tagged histogram per op kind and
    /// second, values in µs on the guest clock.
    pub hlog: Vec<u8>,
    pub heartbeats: u64,
    pub heartbeats_missing: u64,
    pub bad_frames: u64,
    pub records: u64,
}

/// The collector; feed it bytes in the guest's order with their arrival time.
pub struct Collector {
    t0: Instant,
    decoder: Decoder,
    ops: BTreeMap<Op, OpStats>,
    ring: VecDeque<(u64, Instant)>,
    last_seq: Option<u32>,
    heartbeats: u64,
    missing: u64,
    records: u64,
    last_completion: Option<Instant>,
    series: Vec<Bucket>,
    bucket: Bucket,
    bucket_hist: Histogram<u64>,
    bucket_start: Instant,
    interval_start: Instant,
    hlog: Vec<u8>,
    serializer: V2DeflateSerializer,
    open: Vec<OpenWindow>,
    closed: Vec<Window>,
    /// Closed windows (index into `closed`) whose longest stall was still going at their end,
    /// with the stall's start: the next completion says how long it really was.
    trailing: Vec<(usize, Instant)>,
    /// Ops waiting for the heartbeat that ends their batch: an op that completed after a pause
    /// must be mapped through the heartbeat after the pause, which arrives just after it.
    pending: Vec<(OpRecord, Instant)>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector").field("records", &self.records).finish_non_exhaustive()
    }
}

impl Collector {
    pub fn new(t0: Instant) -> Self {
        let mut hlog = Vec::new();
        hlog.extend_from_slice(
            b"#[miglab latency log: one histogram per op kind and second, values in us, guest clock]\n",
        );
        hlog.extend_from_slice(
            b"\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        Self {
            t0,
            decoder: Decoder::new(),
            ops: BTreeMap::new(),
            ring: VecDeque::with_capacity(HEARTBEAT_RING),
            last_seq: None,
            heartbeats: 0,
            missing: 0,
            records: 0,
            last_completion: None,
            series: Vec::new(),
            bucket: Bucket::default(),
            bucket_hist: hist(2),
            bucket_start: t0,
            interval_start: t0,
            hlog,
            serializer: V2DeflateSerializer::new(),
            open: Vec::new(),
            closed: Vec::new(),
            trailing: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn ms(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.t0).as_secs_f64() * 1e3
    }

    /// Bytes that arrived at `at`, in the order the guest wrote them.
    pub fn feed(&mut self, chunk: &[u8], at: Instant) {
        self.advance(at);
        let mut decoder = std::mem::take(&mut self.decoder);
        decoder.feed(chunk, |r| self.record(r, at));
        self.decoder = decoder;
    }

    /// Closes the 100 ms buckets and 1 s intervals that ended before `at`.
    fn advance(&mut self, at: Instant) {
        while at.saturating_duration_since(self.bucket_start) >= BUCKET {
            self.bucket.t_ms = self.bucket_start.saturating_duration_since(self.t0).as_millis() as u64;
            self.bucket.p99_us =
                if self.bucket_hist.is_empty() { 0 } else { self.bucket_hist.value_at_quantile(0.99) };
            self.series.push(std::mem::take(&mut self.bucket));
            self.bucket_hist.reset();
            self.bucket_start += BUCKET;
        }
        while at.saturating_duration_since(self.interval_start) >= INTERVAL {
            self.write_interval(self.interval_start, INTERVAL);
            self.interval_start += INTERVAL;
        }
    }

    fn write_interval(&mut self, start: Instant, len: Duration) {
        let offset = start.saturating_duration_since(self.t0);
        for (op, s) in self.ops.iter_mut() {
            if s.interval.is_empty() {
                continue;
            }
            if let Ok(mut w) =
                IntervalLogWriterBuilder::new().begin_log_with(&mut self.hlog, &mut self.serializer)
            {
                let _ = w.write_histogram(&s.interval, offset, len, Tag::new(op.as_str()));
            }
            s.interval.reset();
        }
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
                    self.missing += seq.wrapping_sub(last).saturating_sub(1) as u64;
                }
                self.last_seq = Some(seq);
                self.heartbeats += 1;
                self.bucket.heartbeats += 1;
                if self.ring.len() == HEARTBEAT_RING {
                    self.ring.pop_front();
                }
                self.ring.push_back((guest_ns, at));
                for w in &mut self.open {
                    w.heartbeat(at, guest_ns);
                }
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
        let host_us = match (self.host_of(o.submit_ns), self.host_of(o.complete_ns)) {
            (Some(s), Some(c)) => (c.saturating_duration_since(s).as_micros() as u64).clamp(1, MAX_US),
            _ => guest_us,
        };
        let s = self.ops.entry(o.op).or_insert_with(OpStats::new);
        s.count += 1;
        s.bytes += o.bytes as u64;
        if o.failed() {
            s.errors += 1;
        }
        if o.flags & FLAG_MISMATCH != 0 {
            s.mismatches += 1;
        }
        let _ = s.guest.record(guest_us);
        let _ = s.host.record(host_us);
        let _ = s.interval.record(guest_us);
        let _ = self.bucket_hist.record(guest_us);
        self.bucket.ops += 1;
        self.bucket.bytes += o.bytes as u64;
        if o.failed() {
            self.bucket.errors += 1;
        }
        self.last_completion = Some(at);
        self.end_trailing_stalls(at, false);
        for w in &mut self.open {
            w.completion(at, o.failed());
        }
    }

    /// Starts measuring window `name` at `at`. Gaps that began before it count from the last
    /// heartbeat or completion seen.
    pub fn open_window(&mut self, name: &str, at: Instant) {
        let last_hb = self.ring.back().map(|(g, h)| (*h, *g));
        self.open.push(OpenWindow {
            name: name.into(),
            start: at,
            last_hb,
            last_completion: self.last_completion,
            max_hb_gap: Duration::ZERO,
            guest_gap_ns: 0,
            max_stall: Duration::ZERO,
            ops: 0,
            errors: 0,
        });
    }

    /// Ends window `name` at `at`; a gap still open then counts up to `at`.
    pub fn close_window(&mut self, name: &str, at: Instant) -> Option<Window> {
        self.advance(at);
        let i = self.open.iter().position(|w| w.name == name)?;
        let mut w = self.open.remove(i);
        if let Some((h, _)) = w.last_hb {
            let tail = at.saturating_duration_since(h);
            if tail > w.max_hb_gap {
                w.max_hb_gap = tail;
                w.guest_gap_ns = 0;
            }
        }
        // A stall still going now, if it is the window's longest, is measured to its end later.
        let trailing = w.last_completion.filter(|c| at.saturating_duration_since(*c) >= w.max_stall);
        if let Some(c) = w.last_completion {
            w.max_stall = w.max_stall.max(at.saturating_duration_since(c));
        }
        if let Some(c) = trailing {
            self.trailing.push((self.closed.len(), c));
        }
        let win = Window {
            name: w.name,
            start_ms: self.ms(w.start),
            end_ms: self.ms(at),
            heartbeat_gap_ms: w.max_hb_gap.as_secs_f64() * 1e3,
            guest_clock_gap_ms: w.guest_gap_ns as f64 / 1e6,
            io_stall_ms: w.max_stall.as_secs_f64() * 1e3,
            io_stall_unended: trailing.is_some(),
            ops: w.ops,
            errors: w.errors,
            qemu_downtime_ms: None,
        };
        self.closed.push(win.clone());
        Some(win)
    }

    /// Stalls that outlived their window end at `at` (a completion, or the stream's end).
    fn end_trailing_stalls(&mut self, at: Instant, unended: bool) {
        for (i, start) in self.trailing.drain(..) {
            if let Some(w) = self.closed.get_mut(i) {
                w.io_stall_ms = w.io_stall_ms.max(at.saturating_duration_since(start).as_secs_f64() * 1e3);
                w.io_stall_unended = unended;
            }
        }
    }

    /// Heartbeats and records so far (for progress lines).
    pub fn progress(&self) -> (u64, u64) {
        (self.heartbeats, self.ops.values().map(|s| s.count).sum())
    }

    pub fn finish(mut self, end: Instant) -> Collected {
        self.flush_pending();
        let names: Vec<String> = self.open.iter().map(|w| w.name.clone()).collect();
        for n in names {
            self.close_window(&n, end);
        }
        self.end_trailing_stalls(end, true);
        self.advance(end);
        let rest = end.saturating_duration_since(self.interval_start);
        if !rest.is_zero() {
            self.write_interval(self.interval_start, rest);
        }
        if self.bucket.ops > 0 || self.bucket.heartbeats > 0 {
            self.bucket.t_ms = self.bucket_start.saturating_duration_since(self.t0).as_millis() as u64;
            self.bucket.p99_us =
                if self.bucket_hist.is_empty() { 0 } else { self.bucket_hist.value_at_quantile(0.99) };
            self.series.push(std::mem::take(&mut self.bucket));
        }
        Collected {
            ops: self
                .ops
                .iter()
                .map(|(op, s)| OpSummary {
                    op: op.as_str().into(),
                    count: s.count,
                    errors: s.errors,
                    mismatches: s.mismatches,
                    bytes: s.bytes,
                    guest: latency(&s.guest),
                    host: latency(&s.host),
                })
                .collect(),
            series: self.series,
            windows: self.closed,
            hlog: self.hlog,
            heartbeats: self.heartbeats,
            heartbeats_missing: self.missing,
            bad_frames: self.decoder.bad_frames,
            records: self.records,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hb(seq: u32, g_us: u64) -> Vec<u8> {
        Record::Heartbeat { seq, guest_ns: g_us * 1000 }.to_bytes().to_vec()
    }

    fn op(submit_us: u64, complete_us: u64) -> Vec<u8> {
        Record::Op(OpRecord {
            op: Op::Read,
            flags: 0,
            job: 0,
            submit_ns: submit_us * 1000,
            complete_ns: complete_us * 1000,
            bytes: 4096,
            status: 0,
        })
        .to_bytes()
        .to_vec()
    }

    #[test]
    fn a_stall_that_outlives_its_window_is_measured_to_the_completion_that_ends_it() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = Collector::new(t0);
        let mut seq = 0;
        let mut feed = |c: &mut Collector, ms: u64, with_op: bool| {
            let g = (ms + 1) * 1000;
            let mut b = Vec::new();
            if with_op {
                b.extend(op(g - 500, g));
            }
            b.extend(hb(seq, g));
            seq += 1;
            c.feed(&b, at(ms));
        };
        for ms in 0..100 {
            feed(&mut c, ms, true);
        }
        c.open_window("migration 1", at(100));
        // The guest runs on (heartbeats) but no op completes from 100 ms to 1500 ms.
        for ms in 100..1500 {
            feed(&mut c, ms, false);
        }
        let w = c.close_window("migration 1", at(600)).expect("window");
        assert!(w.io_stall_unended, "{w:?}");
        assert!((w.io_stall_ms - 501.0).abs() < 2.0, "provisional: {w:?}");
        for ms in 1500..1600 {
            feed(&mut c, ms, true);
        }
        // A second window whose stall is still going when the stream ends.
        c.open_window("fault 1", at(1600));
        let r = c.finish(at(2600));
        let m = &r.windows[0];
        assert!(!m.io_stall_unended, "{m:?}");
        assert!((m.io_stall_ms - 1401.0).abs() < 2.0, "to the completion at 1500 ms: {m:?}");
        let f = &r.windows[1];
        assert!(f.io_stall_unended && (f.io_stall_ms - 1001.0).abs() < 2.0, "{f:?}");
    }

    /// A synthetic guest: each millisecond a batch of one 500 µs op and a heartbeat, then a
    /// 300 ms pause during which the guest clock stops (a migration's switch-over), then on
    /// again. The op in flight across the pause takes 1.5 guest-ms but 301 host-ms.
    #[test]
    fn a_pause_shows_as_a_heartbeat_gap_the_guest_clock_did_not_see() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut c = Collector::new(t0);
        let mut seq = 0;
        // Guest time runs with host time until the pause (guest ms = host ms + 1).
        for ms in 0..500u64 {
            let g = (ms + 1) * 1000;
            c.feed(&[op(g - 500, g), hb(seq, g)].concat(), at(ms));
            seq += 1;
        }
        c.open_window("migration 1", at(499));
        // Last heartbeat: guest 500 ms at host 499 ms. Paused 300 ms. Then the op submitted at
        // guest 499.8 ms completes at guest 501.3 ms, and the next heartbeat says 501.5 ms.
        c.feed(&[op(499_800, 501_300), hb(seq, 501_500)].concat(), at(800));
        seq += 1;
        for ms in 801..1300u64 {
            let g = 501_500 + (ms - 800) * 1000;
            c.feed(&[op(g - 500, g), hb(seq, g)].concat(), at(ms));
            seq += 1;
        }
        let w = c.close_window("migration 1", at(1300)).expect("window");
        assert!((w.heartbeat_gap_ms - 301.0).abs() < 1.5, "{w:?}");
        assert!(w.guest_clock_gap_ms < 2.0, "the guest clock stood still: {w:?}");
        assert!((w.io_stall_ms - 301.0).abs() < 1.5, "{w:?}");
        assert!(w.ops > 400);

        let r = c.finish(at(1300));
        let read = &r.ops[0];
        assert_eq!(read.op, "read");
        assert_eq!(read.count, 1000);
        assert!(read.guest.max_us <= 1_600, "guest clock: {:?}", read.guest);
        assert!(read.host.max_us >= 290_000, "host clock includes the pause: {:?}", read.host);
        assert!(read.host.p50_us <= 600, "ops away from the pause are unchanged: {:?}", read.host);
        assert_eq!(r.heartbeats, 1000);
        assert_eq!(r.heartbeats_missing, 0);
        assert_eq!(r.series.len(), 13);
        assert_eq!(r.series[0].ops, 100);
        assert!(r.series.iter().any(|b| b.ops == 0), "the pause is an empty bucket");
        assert!(String::from_utf8_lossy(&r.hlog).matches("Tag=read").count() >= 1);
    }

    #[test]
    fn lost_heartbeats_and_bad_frames_are_counted() {
        let t0 = Instant::now();
        let mut c = Collector::new(t0);
        let mut garbage = hb(9, 9);
        garbage[0] = 0xee;
        c.feed(&[hb(1, 1), hb(4, 4), garbage].concat(), t0);
        let r = c.finish(t0 + Duration::from_millis(1));
        assert_eq!((r.heartbeats, r.heartbeats_missing, r.bad_frames), (2, 2, 1));
    }

    #[test]
    fn a_window_still_open_at_the_end_counts_to_the_end() {
        let t0 = Instant::now();
        let mut c = Collector::new(t0);
        c.feed(&hb(0, 0), t0);
        c.open_window("fault", t0);
        let r = c.finish(t0 + Duration::from_millis(250));
        assert!((r.windows[0].heartbeat_gap_ms - 250.0).abs() < 1.0, "{:?}", r.windows);
    }
}
