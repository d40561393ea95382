//! What a verifiable block costs the engine per op: filling it before a write, checking it
//! after a read. Both happen outside the timed syscall, but they take CPU from the storage
//! stack on a small machine, so they should stay far below the op's own time (a 1 MiB write to
//! ceph-fuse takes ~25 ms here, a 4 KiB read ~400 µs).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use miglab_workloads::verify::{check_block, fill_block, Expected, RunTag};
use std::hint::black_box;
use std::time::Duration;

fn benches(c: &mut Criterion) {
    let tag = RunTag { seed: 42, nonce: 0xfeed };
    let want = Expected { file: 3, offset: 1 << 30, generation: 7, errored: 0, tag };
    let mut g = c.benchmark_group("block");
    for bs in [4096usize, 1 << 20] {
        let mut buf = vec![0u8; bs];
        g.throughput(Throughput::Bytes(bs as u64));
        g.bench_with_input(BenchmarkId::new("fill", bs), &bs, |b, _| {
            b.iter(|| fill_block(black_box(&mut buf), 3, 1 << 30, 7, tag))
        });
        fill_block(&mut buf, 3, 1 << 30, 7, tag);
        g.bench_with_input(BenchmarkId::new("check", bs), &bs, |b, _| {
            b.iter(|| check_block(black_box(&buf), bs, &want))
        });
    }
    g.finish();
}

criterion_group! {
    name = blocks;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = benches
}
criterion_main!(blocks);
