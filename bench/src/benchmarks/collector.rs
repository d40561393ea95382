//! The collector's memory over a long run at a high op rate: a synthetic stream fed as fast as
//! it goes, RSS before and after.

use crate::clock::RunClock;
use crate::collect::Collector;
use miglab_workloads::record::{Op, OpRecord, Record};
use std::time::{Duration, Instant};

fn rss_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Feeds the collector `minutes` of host time at `rate` ops/s and prints its memory.
pub fn run(minutes: u64, rate: u64) {
    let (rss0, _) = rss_kib();
    let clock = RunClock::start();
    let t0 = clock.zero();
    let mut c = Collector::new(clock);
    let per_ms = (rate / 1000).max(1);
    let mut chunk = Vec::with_capacity((per_ms as usize + 1) * 32);
    let mut g = 1_000_000_000u64;
    let start = Instant::now();
    let total_ms = minutes * 60_000;
    for ms in 0..total_ms {
        chunk.clear();
        for i in 0..per_ms {
            let lat = 200_000 + (i * 7919 + ms) % 600_000;
            chunk.extend_from_slice(&Record::Op(OpRecord::done(Op::Read, g - lat, g, 4096)).to_bytes());
            g += 1_000_000 / per_ms;
        }
        chunk.extend_from_slice(&Record::Heartbeat { seq: ms as u32, guest_ns: g }.to_bytes());
        c.feed(&chunk, t0 + Duration::from_millis(ms));
    }
    let (rss1, hwm) = rss_kib();
    let fed = start.elapsed();
    let r = c.finish(t0 + Duration::from_millis(total_ms));
    println!(
        "collector: {minutes} min at {rate} ops/s = {} records in {:.1} s; RSS {} MiB before, {} MiB after (peak {} MiB); series {} buckets, interval log {} KiB",
        r.records,
        fed.as_secs_f64(),
        rss0 / 1024,
        rss1 / 1024,
        hwm / 1024,
        r.series.len(),
        r.hlog.len() / 1024
    );
}
