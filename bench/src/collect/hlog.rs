//! `latency.hlog`: an HdrHistogram interval log in the standard format (version 1.3), so that
//! HdrHistogram's Java, C, Python and Rust readers all read it. One histogram per op kind and
//! second of the run clock, values in µs on the guest clock; an op goes into the second in
//! which it completed (host time), whenever its record arrived.

use hdrhistogram::serialization::{Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;
use miglab_workloads::record::Op;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) const INTERVAL: Duration = Duration::from_secs(1);

/// Intervals still open (ops may complete into them late), and the log written so far.
pub(super) struct IntervalLog {
    text: String,
    open: BTreeMap<u64, BTreeMap<Op, Histogram<u64>>>,
    serializer: V2DeflateSerializer,
    buf: Vec<u8>,
    max_us: u64,
    /// Intervals before this one are written: a late record goes to the oldest still open.
    written_until: u64,
}

impl IntervalLog {
    /// A log whose timestamps count from `start` (the run clock's zero).
    pub(super) fn new(start: SystemTime, max_us: u64) -> Self {
        let secs = start.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let mut text = String::new();
        text.push_str(
            "#[miglab latency log: one histogram per op kind and second of the run, values in us on the guest clock]\n",
        );
        text.push_str("#[Histogram log format version 1.3]\n");
        let _ =
            writeln!(text, "#[StartTime: {secs:.3} (seconds since epoch), {}]", crate::clock::rfc3339(start));
        // Timestamps are relative to BaseTime, which is the run's start.
        let _ = writeln!(text, "#[BaseTime: {secs:.3} (seconds since epoch)]");
        text.push_str(
            "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\"\n",
        );
        Self {
            text,
            open: BTreeMap::new(),
            serializer: V2DeflateSerializer::new(),
            buf: Vec::new(),
            max_us,
            written_until: 0,
        }
    }

    /// Records an op of kind `op` that completed `completed` after the run's start.
    pub(super) fn record(&mut self, op: Op, completed: Duration, latency_us: u64) {
        // An interval already written cannot take it: the log's intervals stay in time order.
        let idx = completed.as_secs().max(self.written_until);
        let max = self.max_us;
        let h = self.open.entry(idx).or_default().entry(op).or_insert_with(|| {
            Histogram::new_with_bounds(1, max, 3).unwrap_or_else(|e| panic!("bounds: {e}"))
        });
        let _ = h.record(latency_us.clamp(1, max));
    }

    /// Writes every interval that ended before `before` (ops arrive in batches of at most a few
    /// ms: the previous second stays open until the current one is well under way).
    pub(super) fn flush_before(&mut self, before: Duration) {
        let keep_from = before.saturating_sub(Duration::from_millis(500)).as_secs();
        self.written_until = self.written_until.max(keep_from);
        let done: Vec<u64> = self.open.range(..keep_from).map(|(k, _)| *k).collect();
        for k in done {
            if let Some(hists) = self.open.remove(&k) {
                self.write(k, INTERVAL, &hists);
            }
        }
    }

    /// Writes every interval left, the last one cut at `end`; returns the log.
    pub(super) fn finish(mut self, end: Duration) -> Vec<u8> {
        for (k, hists) in std::mem::take(&mut self.open) {
            let start = Duration::from_secs(k);
            let len = end.saturating_sub(start).clamp(Duration::from_millis(1), INTERVAL);
            self.write(k, len, &hists);
        }
        self.text.into_bytes()
    }

    fn write(&mut self, idx: u64, len: Duration, hists: &BTreeMap<Op, Histogram<u64>>) {
        use base64::Engine;
        for (op, h) in hists {
            self.buf.clear();
            if self.serializer.serialize(h, &mut self.buf).is_err() {
                continue;
            }
            let _ = writeln!(
                self.text,
                "Tag={},{:.3},{:.3},{:.3},{}",
                op.as_str(),
                idx as f64,
                len.as_secs_f64(),
                h.max() as f64,
                base64::engine::general_purpose::STANDARD.encode(&self.buf)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    use hdrhistogram::serialization::Deserializer;

    /// The log reads back with the hdrhistogram crate's own reader, every op in the second it
    /// completed in, whatever the order it was recorded in.
    #[test]
    fn the_log_has_the_standard_header_and_reads_back() {
        let start = UNIX_EPOCH + Duration::from_millis(1_764_542_096_789);
        let mut log = IntervalLog::new(start, 3_600_000_000);
        log.record(Op::Read, Duration::from_millis(200), 100);
        log.record(Op::Read, Duration::from_millis(1200), 300);
        // Late: completed in second 0, recorded after second 1 began.
        log.record(Op::Read, Duration::from_millis(990), 200);
        log.record(Op::Write, Duration::from_millis(1500), 5000);
        log.flush_before(Duration::from_millis(1600));
        let text = String::from_utf8(log.finish(Duration::from_millis(1800))).expect("utf8");
        assert!(text.contains("#[Histogram log format version 1.3]\n"), "{text}");
        assert!(text.contains("#[StartTime: 1764542096.789 (seconds since epoch), 2025-11-30T22:34:56.789Z]"));
        assert!(text.contains("#[BaseTime: 1764542096.789 (seconds since epoch)]"));
        let mut got = Vec::new();
        for e in IntervalLogIterator::new(text.as_bytes()) {
            if let Ok(LogEntry::Interval(i)) = e {
                let bytes = base64::engine::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    i.encoded_histogram(),
                )
                .expect("base64");
                let h: Histogram<u64> = Deserializer::new().deserialize(&mut &bytes[..]).expect("histogram");
                got.push((
                    i.tag().map(|t| t.as_str().to_string()),
                    i.start_timestamp().as_secs(),
                    h.len(),
                    h.max(),
                ));
            }
        }
        assert_eq!(
            got,
            vec![
                (Some("read".into()), 0, 2, 200),
                (Some("read".into()), 1, 1, 300),
                (Some("write".into()), 1, 1, 5003)
            ]
        );
    }

    /// A record that arrives after its second was written (a late batch) went into a new
    /// interval older than the last one written: the log was out of order.
    #[test]
    fn a_late_record_keeps_the_intervals_in_time_order() {
        let mut log = IntervalLog::new(UNIX_EPOCH, 3_600_000_000);
        log.record(Op::Read, Duration::from_millis(200), 100);
        log.record(Op::Read, Duration::from_millis(2200), 100);
        log.flush_before(Duration::from_millis(3600));
        log.record(Op::Read, Duration::from_millis(500), 100);
        let text = String::from_utf8(log.finish(Duration::from_millis(3800))).expect("utf8");
        let starts: Vec<f64> = text
            .lines()
            .filter(|l| l.starts_with("Tag="))
            .map(|l| l.split(',').nth(1).and_then(|v| v.parse().ok()).expect("a start"))
            .collect();
        assert_eq!(starts, vec![0.0, 2.0, 3.0], "{text}");
    }
}
