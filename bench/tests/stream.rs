//! The record stream's promises that need no lab: arrival stamps that nothing on the async
//! runtime can delay, and an interval log that an independent HdrHistogram implementation reads
//! to the same figures as the result.

mod common;

use miglab::clock::RunClock;
use miglab::collect::Collector;
use miglab::observe::Bus;
use miglab::stream::RecordStream;
use miglab_workloads::engine::now_ns;
use miglab_workloads::record::{Op, OpRecord, Record};
use std::io::Write;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

/// A guest on the host's clock writes a heartbeat every millisecond while the async runtime's
/// two workers are blocked (as a synchronous destination start used to block them) and both
/// cores are busy: the reader's stamps stay within a millisecond of the writes.
#[test]
#[ignore = "needs root (real-time scheduling of the reader): cargo test -- --include-ignored"]
fn stamps_are_not_delayed_while_the_runtime_is_busy() {
    assert!(nix::unistd::geteuid().is_root(), "run as root (ci/test does)");
    common::MachineLoad::test_begins();
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("records.sock");
    let l = UnixListener::bind(&p).expect("bind");
    let clock = RunClock::start();
    let bus = Bus::new(clock);
    let stream = RecordStream::connect(&p, clock, &bus, 1).expect("connect");
    assert_eq!(stream.realtime, Ok(()), "the reader runs SCHED_FIFO");
    let (mut w, _) = l.accept().expect("accept");
    let writer = std::thread::spawn(move || {
        // The writer stands for the guest: it must not be the one delayed.
        let param = libc::sched_param { sched_priority: 10 };
        // SAFETY: sched_setscheduler reads the param we own; 0 is this thread.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
        let start = Instant::now();
        let mut seq = 0;
        while start.elapsed() < Duration::from_secs(3) {
            let frame = Record::Heartbeat { seq, guest_ns: now_ns() }.to_bytes();
            w.write_all(&frame).expect("write");
            seq += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        seq
    });
    // Meanwhile: both runtime workers blocked in turn, and both cores spinning.
    let rt = miglab_infra::wait::runtime().expect("rt");
    let spin: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                let t = Instant::now();
                let mut x = 0u64;
                while t.elapsed() < Duration::from_secs(3) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                }
                x
            })
        })
        .collect();
    rt.block_on(async {
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(3) {
            let blockers: Vec<_> = (0..2)
                .map(|_| tokio::spawn(async { std::thread::sleep(Duration::from_millis(200)) }))
                .collect();
            for b in blockers {
                b.await.expect("blocker");
            }
        }
    });
    let sent = writer.join().expect("writer");
    for s in spin {
        s.join().expect("spin");
    }
    let c = stream.finish(Instant::now()).expect("finish");
    assert_eq!(c.heartbeats, u64::from(sent));
    println!(
        "arrival lag over {} heartbeats: p99 {} us, max {} us",
        c.heartbeats, c.arrival_lag.p99_us, c.arrival_lag.max_us
    );
    assert!(
        c.arrival_lag.p99_us < 1000,
        "p99 stamping delay {} us ({})",
        c.arrival_lag.p99_us,
        common::MachineLoad::of_test().said()
    );
}

/// `latency.hlog` of a synthetic run, read by PyPI's `hdrhistogram`: the same counts and
/// percentiles as the result's.
#[test]
#[ignore = "needs the Python venv with `hdrhistogram` that ci/setup makes: cargo test -- --include-ignored"]
fn the_interval_log_reads_the_same_in_an_independent_implementation() {
    let clock = RunClock::start();
    let mut c = Collector::new(clock);
    let t0 = clock.zero();
    let mut g = 1_000_000_000u64;
    // 5 s of reads (100-5000 us) and writes (1-40 ms), a batch a millisecond.
    for ms in 0..5000u64 {
        let mut b = Vec::new();
        let lat = 100_000 + (ms * 7919) % 4_900_000;
        b.extend(Record::Op(OpRecord::done(Op::Read, g - lat, g, 4096)).to_bytes());
        if ms % 10 == 0 {
            let wl = 1_000_000 + (ms * 104_729) % 39_000_000;
            b.extend(Record::Op(OpRecord::done(Op::Write, g - wl, g, 65536)).to_bytes());
        }
        b.extend(Record::Heartbeat { seq: ms as u32, guest_ns: g }.to_bytes());
        c.feed(&b, t0 + Duration::from_millis(ms));
        g += 1_000_000;
    }
    let r = c.finish(t0 + Duration::from_millis(5000));
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("latency.hlog");
    std::fs::write(&log, &r.hlog).expect("write");
    common::hlog_agrees_with(&log, &r.ops);
}
