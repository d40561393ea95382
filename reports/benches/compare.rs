//! Micro-benchmarks of what reads results: compare's statistics on realistic sizes (5 against
//! 15 runs, exact; 15 against 15, sampled), the Hodges–Lehmann interval, E-divisive over 60
//! nights (999 permutations), and
//! rendering a run's report.html (docs/example's result.json).

use criterion::{criterion_group, criterion_main, Criterion};
use miglab_model::RunResult;
use miglab_reports::{html, stats};
use std::hint::black_box;

fn values(n: usize, mean: f64, k: u64) -> Vec<f64> {
    (0..n as u64)
        .map(|i| mean * (1.0 + 0.07 * (((i * 7919 + k * 104729) % 97) as f64 / 48.5 - 1.0)))
        .collect()
}

fn benches(c: &mut Criterion) {
    let (a5, b15) = (values(5, 1000.0, 1), values(15, 1100.0, 2));
    let (a15, b15b) = (values(15, 1000.0, 3), values(15, 1100.0, 4));
    let mut g = c.benchmark_group("compare");
    g.bench_function("rank_sum_5_vs_15_exact", |b| {
        b.iter(|| stats::rank_sum_p(black_box(&a5), black_box(&b15), 1))
    });
    g.bench_function("rank_sum_15_vs_15_sampled", |b| {
        b.iter(|| stats::rank_sum_p(black_box(&a15), black_box(&b15b), 1))
    });
    g.bench_function("hodges_lehmann_5_vs_15", |b| {
        b.iter(|| stats::hodges_lehmann(black_box(&a5), black_box(&b15), 0.99))
    });
    let nights: Vec<f64> =
        (0..60).map(|i| if i < 40 { 1000.0 } else { 1200.0 } + (i * 37 % 11) as f64).collect();
    g.bench_function("change_points_60_nights", |b| {
        b.iter(|| stats::change_points(black_box(&nights), 3, 0.05, 999, 1))
    });
    g.finish();

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/example/result.json");
    let r: RunResult =
        serde_json::from_slice(&std::fs::read(path).expect("docs/example/result.json")).expect("a result");
    match html::run_report(&r) {
        Ok(_) => {
            c.bench_function("report/run_report_html", |b| b.iter(|| html::run_report(black_box(&r))));
        }
        Err(e) => eprintln!("report rendering SKIPPED: {e}"),
    }
}

criterion_group!(compare, benches);
criterion_main!(compare);
