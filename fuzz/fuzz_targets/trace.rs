//! QEMU trace logs of any shape, split at any byte into the source's and the destination's,
//! must never panic the parser or the split; a split that succeeds adds up to its traced
//! downtime exactly, and the parts one side's clock bounds are never negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miglab_model::downtime::{attribute, parse_trace, Clocks, PartClock};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let at = (cut as usize * text.len() / 255).min(text.len());
    let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    let (src, dst) = text.split_at(at);
    let (src, dst) = (parse_trace(src), parse_trace(dst));
    for clocks in
        [Clocks::OneHost, Clocks::Offset { destination_minus_source_ms: f64::from(cut) - 128.0, rtt_ms: 1.0 }]
    {
        let since = src.first().map_or(0, |e| e.unix_us);
        if let Ok(p) = attribute(&src, &dst, since, clocks) {
            let sum: f64 = p.parts.iter().map(|x| x.ms).sum();
            assert!((sum - p.traced_ms).abs() < 1e-6 * p.traced_ms.abs().max(1.0), "{sum} v {}", p.traced_ms);
            for x in p.parts.iter().filter(|x| x.clock != PartClock::Both) {
                assert!(x.ms >= 0.0, "{x:?}");
            }
        }
    }
});
