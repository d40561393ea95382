//! The collector on synthetic streams: pauses, stalls, failures, windows with nothing to
//! measure, and a stream that stops.

use super::*;
use miglab_workloads::record::FLAG_ERROR;

fn hb(seq: u32, g_us: u64) -> Vec<u8> {
    Record::Heartbeat { seq, guest_ns: g_us * 1000 }.to_bytes().to_vec()
}

fn op_with(submit_us: u64, complete_us: u64, flags: u8) -> Vec<u8> {
    Record::Op(OpRecord {
        op: Op::Read,
        flags,
        job: 0,
        submit_ns: submit_us * 1000,
        complete_ns: complete_us * 1000,
        bytes: if flags & FLAG_ERROR != 0 { 0 } else { 4096 },
        status: if flags & FLAG_ERROR != 0 { 5 } else { 0 },
    })
    .to_bytes()
    .to_vec()
}

fn op(submit_us: u64, complete_us: u64) -> Vec<u8> {
    op_with(submit_us, complete_us, 0)
}

const MIG: WindowKind = WindowKind::Migration { hop: 1 };

/// A guest on the run clock: batch `ms` (one op if `with_op`, then a heartbeat) arrives at
/// host `ms`, with guest time `ms + 1` (in ms).
struct Guest {
    clock: RunClock,
    seq: u32,
}

impl Guest {
    fn at(&self, ms: u64) -> Instant {
        self.clock.zero() + Duration::from_millis(ms)
    }
    fn batch(&mut self, c: &mut Collector, ms: u64, with_op: bool, failed: bool) {
        let g = (ms + 1) * 1000;
        let mut b = Vec::new();
        if with_op {
            b.extend(op_with(g - 500, g, if failed { FLAG_ERROR } else { 0 }));
        }
        b.extend(hb(self.seq, g));
        self.seq += 1;
        c.feed(&b, self.at(ms));
    }
}

fn guest() -> (Collector, Guest) {
    let clock = RunClock::start();
    (Collector::new(clock), Guest { clock, seq: 0 })
}

#[test]
fn a_stall_that_outlives_its_window_is_measured_to_the_completion_that_ends_it() {
    let (mut c, mut g) = guest();
    for ms in 0..100 {
        g.batch(&mut c, ms, true, false);
    }
    c.open_window("migration 1", MIG, g.at(100));
    // The guest runs on (heartbeats) but no op completes from 100 ms to 1500 ms.
    for ms in 100..1500 {
        g.batch(&mut c, ms, false, false);
    }
    let w = c.close_window("migration 1", g.at(600)).expect("window");
    assert!(w.io_stall_unended, "{w:?}");
    assert!((w.io_stall_ms.expect("provisional") - 501.0).abs() < 2.0, "provisional: {w:?}");
    for ms in 1500..1600 {
        g.batch(&mut c, ms, true, false);
    }
    // A second window whose stall is still going when the stream ends.
    c.open_window("fault 1", WindowKind::Fault { index: 0 }, g.at(1600));
    let r = c.finish(g.at(2600));
    let m = &r.windows[0];
    assert!(!m.io_stall_unended, "{m:?}");
    assert!((m.io_stall_ms.expect("stall") - 1401.0).abs() < 2.0, "to the completion at 1500 ms: {m:?}");
    let f = &r.windows[1];
    assert!(f.io_stall_unended && (f.io_stall_ms.expect("stall") - 1001.0).abs() < 2.0, "{f:?}");
    assert!(f.heartbeat_gap_unended, "no heartbeat after 1599 ms: {f:?}");
    assert_eq!(f.guest_clock_gap_ms, None, "unknown: no heartbeat ended the gap");
    assert!(!f.unmeasured.is_empty());
}

/// A synthetic guest: each millisecond a batch of one 500 µs op and a heartbeat, then a
/// 300 ms pause during which the guest clock stops (a migration's switch-over), then on
/// again. The op in flight across the pause takes 1.5 guest-ms but 301 host-ms.
#[test]
fn a_pause_shows_as_a_heartbeat_gap_the_guest_clock_did_not_see() {
    let (mut c, g) = guest();
    let at = |ms: u64| g.at(ms);
    let mut seq = 0;
    for ms in 0..500u64 {
        let gt = (ms + 1) * 1000;
        c.feed(&[op(gt - 500, gt), hb(seq, gt)].concat(), at(ms));
        seq += 1;
    }
    c.open_window("migration 1", MIG, at(499));
    // Last heartbeat: guest 500 ms at host 499 ms. Paused 300 ms. Then the op submitted at
    // guest 499.8 ms completes at guest 501.3 ms, and the next heartbeat says 501.5 ms.
    c.feed(&[op(499_800, 501_300), hb(seq, 501_500)].concat(), at(800));
    seq += 1;
    for ms in 801..1300u64 {
        let gt = 501_500 + (ms - 800) * 1000;
        c.feed(&[op(gt - 500, gt), hb(seq, gt)].concat(), at(ms));
        seq += 1;
    }
    let w = c.close_window("migration 1", at(1300)).expect("window");
    assert!((w.heartbeat_gap_ms.expect("gap") - 301.0).abs() < 1.5, "{w:?}");
    assert!(w.guest_clock_gap_ms.expect("guest gap") < 2.0, "the guest clock stood still: {w:?}");
    assert!((w.io_stall_ms.expect("stall") - 301.0).abs() < 1.5, "{w:?}");
    assert!(w.ops > 400);
    assert!(w.unmeasured.is_empty());

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
    let hlog = String::from_utf8_lossy(&r.hlog);
    assert!(hlog.starts_with("#[miglab"), "{hlog}");
    assert!(hlog.contains("#[Histogram log format version 1.3]"));
    assert_eq!(hlog.matches("Tag=read,").count(), 2, "seconds 0 and 1: {hlog}");
    assert_eq!(r.last_heartbeat_ms.map(|t| t.round()), Some(1299.0));
}

/// Failed ops are not completions: they end no stall, enter no latency histogram, no IOPS.
#[test]
fn failed_ops_are_counted_apart_and_end_no_stall() {
    let (mut c, mut g) = guest();
    for ms in 0..100 {
        g.batch(&mut c, ms, true, false);
    }
    c.open_window("migration 1", MIG, g.at(100));
    // 100 ms to 400 ms: every op fails.
    for ms in 100..400 {
        g.batch(&mut c, ms, true, true);
    }
    for ms in 400..500 {
        g.batch(&mut c, ms, true, false);
    }
    let w = c.close_window("migration 1", g.at(500)).expect("window");
    assert!((w.io_stall_ms.expect("stall") - 301.0).abs() < 1.5, "failures do not end a stall: {w:?}");
    assert_eq!((w.ops, w.errors), (100, 300));
    let r = c.finish(g.at(500));
    let read = &r.ops[0];
    assert_eq!((read.count, read.failed, read.bytes), (200, 300, 200 * 4096));
    assert_eq!(read.guest.count, 200, "only successful ops have a latency");
    assert_eq!(read.failed_latency.count, 300);
    assert_eq!(read.errors.get("EIO"), Some(&300), "failures by errno: {:?}", read.errors);
    let ops: u64 = r.series.iter().map(|b| b.ops).sum();
    let errors: u64 = r.series.iter().map(|b| b.errors).sum();
    assert_eq!((ops, errors), (200, 300));
}

/// A window opened before anything arrived, closed before two heartbeats: absent, with why.
#[test]
fn a_window_with_nothing_to_measure_says_so_instead_of_zero() {
    let (mut c, g) = guest();
    c.open_window("migration 1", MIG, g.at(0));
    let w = c.close_window("migration 1", g.at(50)).expect("window");
    assert_eq!((w.heartbeat_gap_ms, w.guest_clock_gap_ms, w.io_stall_ms), (None, None, None));
    assert_eq!(w.unmeasured.len(), 2, "{w:?}");
    let r = c.finish(g.at(60));
    assert_eq!(r.windows[0].heartbeat_gap_ms, None);
    assert_eq!(r.first_heartbeat_ms, None);
}

/// An op with no heartbeat after it is held until the end; progress counts it as `finish`
/// does (before, it was missing from progress: the `collect` fuzz target's first finding).
#[test]
fn progress_counts_the_ops_held_for_the_next_heartbeat() {
    let (mut c, g) = guest();
    c.feed(&[hb(0, 1), op(1500, 2000), op_with(2000, 2500, FLAG_ERROR)].concat(), g.at(2));
    assert_eq!(c.progress(), (1, 1));
    let r = c.finish(g.at(3));
    assert_eq!(r.ops.iter().map(|o| o.count).sum::<u64>(), 1);
}

#[test]
fn lost_heartbeats_and_bad_frames_are_counted() {
    let (mut c, g) = guest();
    let mut garbage = hb(9, 9);
    garbage[0] = 0xee;
    c.feed(&[hb(1, 1), hb(4, 4), garbage].concat(), g.at(0));
    let r = c.finish(g.at(1));
    assert_eq!((r.heartbeats, r.heartbeats_missing, r.bad_frames), (2, 2, 1));
}

#[test]
fn a_window_still_open_at_the_end_counts_to_the_end_and_is_unended() {
    let (mut c, g) = guest();
    c.feed(&hb(0, 0), g.at(0));
    c.open_window("fault", WindowKind::Fault { index: 0 }, g.at(0));
    let r = c.finish(g.at(250));
    let w = &r.windows[0];
    assert!((w.heartbeat_gap_ms.expect("gap") - 250.0).abs() < 1.0, "{w:?}");
    assert!(w.heartbeat_gap_unended);
}

/// A heartbeat gap still open when its window closes is measured to the heartbeat that ends
/// it, with the guest clock's advance across it.
#[test]
fn a_heartbeat_gap_that_outlives_its_window_ends_at_the_next_heartbeat() {
    let (mut c, g) = guest();
    c.feed(&hb(0, 1000), g.at(0));
    c.open_window("migration 1", MIG, g.at(1));
    let w = c.close_window("migration 1", g.at(100)).expect("window");
    assert!((w.heartbeat_gap_ms.expect("provisional") - 100.0).abs() < 1.0);
    c.feed(&hb(1, 3000), g.at(400));
    let r = c.finish(g.at(401));
    let w = &r.windows[0];
    assert!((w.heartbeat_gap_ms.expect("gap") - 400.0).abs() < 1.0, "{w:?}");
    assert!(!w.heartbeat_gap_unended);
    assert!((w.guest_clock_gap_ms.expect("guest") - 2.0).abs() < 0.01, "{w:?}");
}

/// A fault's window says how long after its clearance the I/O resumed.
#[test]
fn a_fault_window_measures_the_recovery_after_its_clearance() {
    let (mut c, mut g) = guest();
    for ms in 0..100 {
        g.batch(&mut c, ms, true, false);
    }
    c.open_window("fault 1", WindowKind::Fault { index: 0 }, g.at(100));
    for ms in 100..400 {
        g.batch(&mut c, ms, false, false);
    }
    c.close_window("fault 1", g.at(300));
    for ms in 400..500 {
        g.batch(&mut c, ms, true, false);
    }
    let r = c.finish(g.at(500));
    let w = &r.windows[0];
    assert!((w.recovered_after_ms.expect("recovered") - 100.0).abs() < 1.5, "{w:?}");
}

/// A stall that starts inside a window and outlasts it was dropped unless it was already the
/// window's longest at the close: a 50 ms stall before a 20 ms-old one at the close hid a
/// 300 ms stall — worst for fault windows, which close at the clearance.
#[test]
fn a_gap_shorter_than_the_longest_at_the_close_still_counts_when_it_outlasts_the_window() {
    let (mut c, g) = guest();
    let at = |ms| g.at(ms);
    let opr = |ms: u64| op((ms + 1) * 1000 - 100, (ms + 1) * 1000);
    c.feed(&[opr(0), hb(0, 1000)].concat(), at(0));
    c.open_window("fault 1", WindowKind::Fault { index: 0 }, at(1));
    // 50 ms without a completion or a heartbeat, then one of each at 50 ms.
    c.feed(&[opr(50), hb(1, 51_000)].concat(), at(50));
    // The window closes at 70 ms: the open gaps are 20 ms old, shorter than the 50 ms ones.
    let w = c.close_window("fault 1", at(70)).expect("window");
    assert!((w.io_stall_ms.expect("provisional") - 50.0).abs() < 1.0, "{w:?}");
    // Nothing until 350 ms: the gaps that began at 50 ms are 300 ms long.
    c.feed(&[opr(350), hb(2, 351_000)].concat(), at(350));
    let r = c.finish(at(360));
    let w = &r.windows[0];
    assert!((w.io_stall_ms.expect("stall") - 300.0).abs() < 1.0, "{w:?}");
    assert!((w.heartbeat_gap_ms.expect("gap") - 300.0).abs() < 1.0, "{w:?}");
    assert!((w.guest_clock_gap_ms.expect("guest") - 300.0).abs() < 0.01, "{w:?}");
    assert!(!w.io_stall_unended && !w.heartbeat_gap_unended);
}

/// A heartbeat sequence that goes back (an agent restarted) counted ~2³² missing heartbeats.
#[test]
fn a_heartbeat_sequence_that_goes_back_is_not_four_billion_missing() {
    let (mut c, g) = guest();
    c.feed(&[hb(5, 1000), hb(3, 2000), hb(4, 3000), hb(7, 4000)].concat(), g.at(5));
    let r = c.finish(g.at(10));
    assert_eq!(r.heartbeats_missing, 2, "5 and 6 between 4 and 7");
}

/// An op no heartbeat maps entered the host histogram with its guest latency, uncounted; the
/// verify pass's reads entered the workload's series.
#[test]
fn unmapped_ops_are_counted_apart_and_verify_reads_are_not_the_workloads() {
    // No heartbeat ever arrives: nothing maps the op to the host clock.
    let (mut c, g) = guest();
    c.feed(&op(500, 1000), g.at(1));
    let r = c.finish(g.at(50));
    let read = r.ops.iter().find(|o| o.op == "read").expect("read");
    assert_eq!((read.count, read.host_unmapped, read.host.count), (1, 1, 0), "{read:?}");

    let (mut c, g) = guest();
    let v = Record::Op(OpRecord {
        op: Op::Verify,
        flags: 0,
        job: 0,
        submit_ns: 1_500_000,
        complete_ns: 1_600_000,
        bytes: 4096,
        status: 0,
    })
    .to_bytes()
    .to_vec();
    c.feed(&[hb(0, 1000), op(1100, 1200), v, hb(1, 3000)].concat(), g.at(3));
    let r = c.finish(g.at(250));
    let ops: u64 = r.series.iter().map(|b| b.ops).sum();
    let verify: u64 = r.series.iter().map(|b| b.verify_ops).sum();
    assert_eq!((ops, verify), (1, 1), "{:?}", r.series);
}

/// The last bucket, cut short by the stream's end, says how long it lasted.
#[test]
fn the_last_bucket_knows_it_was_cut_short() {
    let (mut c, mut g) = guest();
    for ms in 0..130 {
        g.batch(&mut c, ms, true, false);
    }
    let r = c.finish(g.at(130));
    let last = r.series.last().expect("a bucket");
    assert_eq!((last.t_ms, last.span_ms), (100, Some(30)), "{last:?}");
    assert_eq!(r.series[0].span_ms, None);
    assert!(r.series.iter().all(|b| b.p99_us.is_some()));
}
