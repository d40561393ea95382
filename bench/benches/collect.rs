//! Micro-benchmarks of the host's hot path: decoding record frames and ingesting them into
//! the histograms. Target: ≥ 10 M records/s on one core.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use miglab::clock::RunClock;
use miglab::collect::Collector;
use miglab_workloads::record::{Decoder, Op, OpRecord, Record};
use std::hint::black_box;
use std::time::Duration;

/// A realistic stream: batches of 9 ops (4k reads of 100–900 µs) closed by a heartbeat.
fn stream(records: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(records * 32);
    let mut t = 1_000_000_000u64;
    let mut seq = 0;
    for i in 0..records {
        let r = if i % 10 == 9 {
            seq += 1;
            Record::Heartbeat { seq, guest_ns: t }
        } else {
            let lat = 100_000 + (i as u64 * 7919) % 800_000;
            t += 1000;
            Record::Op(OpRecord::done(Op::Read, t - lat, t, 4096))
        };
        out.extend_from_slice(&r.to_bytes());
    }
    out
}

fn benches(c: &mut Criterion) {
    let n = 1_000_000;
    let bytes = stream(n);
    let mut g = c.benchmark_group("records");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut d = Decoder::new();
            let mut k = 0u64;
            d.feed(black_box(&bytes), |_| k += 1);
            k
        })
    });
    g.bench_function("decode+ingest", |b| {
        b.iter(|| {
            let clock = RunClock::start();
            let t0 = clock.zero();
            let mut c = Collector::new(clock);
            // 64 KiB reads, as the stream reader does, each with its arrival time.
            for (i, chunk) in bytes.chunks(64 * 1024).enumerate() {
                c.feed(black_box(chunk), t0 + Duration::from_micros(i as u64 * 200));
            }
            c.progress()
        })
    });
    g.finish();
}

criterion_group! {
    name = collect;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(5));
    targets = benches
}
criterion_main!(collect);
