//! The collector on arbitrary input: bytes in arbitrary chunks at arbitrary (non-decreasing)
//! arrival times, windows opened and closed at arbitrary points. It must never panic, every
//! figure must be a finite non-negative number or absent, and the counts must add up.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miglab::clock::RunClock;
use miglab::collect::Collector;
use miglab_model::WindowKind;
use std::time::Duration;

fuzz_target!(|data: &[u8]| {
    let clock = RunClock::start();
    let mut c = Collector::new(clock);
    let mut at = clock.zero();
    let mut open: Vec<String> = Vec::new();
    let mut n = 0u32;
    let mut rest = data;
    // Each step: a control byte (what to do), a time step, then a chunk of stream bytes.
    while let [ctl, step, tail @ ..] = rest {
        at += Duration::from_micros(u64::from(*step) * 97);
        let len = (usize::from(*ctl) & 0x3f).min(tail.len());
        let (chunk, more) = tail.split_at(len);
        match ctl >> 6 {
            0 | 1 => c.feed(chunk, at),
            2 => {
                n += 1;
                let name = format!("w{n}");
                c.open_window(&name, WindowKind::Fault { index: n }, at);
                open.push(name);
                c.feed(chunk, at);
            }
            _ => {
                if let Some(name) = open.pop() {
                    let w = c.close_window(&name, at).expect("an open window closes");
                    assert!(w.end_ms >= w.start_ms);
                }
                c.feed(chunk, at);
            }
        }
        rest = more;
    }
    let (hb, ops) = c.progress();
    let r = c.finish(at + Duration::from_millis(1));
    assert_eq!(r.heartbeats, hb);
    assert_eq!(r.ops.iter().map(|o| o.count).sum::<u64>(), ops);
    assert!(r.records >= r.heartbeats);
    for w in &r.windows {
        for v in [w.heartbeat_gap_ms, w.guest_clock_gap_ms, w.io_stall_ms].into_iter().flatten() {
            assert!(v.is_finite() && v >= 0.0, "{w:?}");
        }
        assert!(w.heartbeat_gap_ms.is_some() || !w.unmeasured.is_empty(), "absent without a reason: {w:?}");
    }
    let series_ops: u64 = r.series.iter().map(|b| b.ops).sum();
    assert_eq!(series_ops, ops, "the series holds every successful op");
});
