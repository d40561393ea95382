//! `cargo bench --bench migration`: end-to-end live migration of a running guest on the real
//! lab — the guest-visible downtime (the longest heartbeat gap around the migration) and the
//! total migration time, each sample one whole `miglab run` repetition of the read loop with
//! one migration (the lab stays up across samples; the guest boots per run, not timed). Flat
//! sampling, 10 samples of 2 runs each: criterion plans by the wall time of an iteration (a
//! whole run, ~6 s) and warns about any sample of one, so the measurement time is set to 1.5
//! runs' wall time per sample, from a pilot run before the first benchmark and from the first
//! benchmark's runs before the second — 1 + 2 × 21 runs in all (each benchmark's first is
//! criterion's warm-up). Output: criterion's lines and one line per run. Where no lab can run
//! (not root, something missing), it prints why and measures nothing.
//!
//! Baselines: `cargo bench --bench migration -- --save-baseline before`, change something,
//! then `cargo bench --bench migration -- --baseline before`.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use miglab::session::{self, RunOptions, Source};
use miglab_infra::topology::lab::{Lab, LabOptions};
use miglab_model::{RunResult, WindowKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

const LAB: &str = "bench";

/// The read loop, one migration, short warm-up and settle: a sample takes ~6 s under TCG.
const SCENARIO: &str = r#"
name = "bench-migration"
seed = 7
[workload]
kind = "read-loop"
[migration]
count = 1
warmup_s = 1.0
settle_s = 0.5
[run]
cooldown_s = 0.2
"#;

/// Why this machine cannot run the lab, if it cannot.
fn cannot_run() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root (the lab needs namespaces and mounts)".into());
    }
    let report = miglab::doctor::run(&Default::default());
    if !report.lab_can_run() {
        return Some(format!("`miglab doctor` reports missing prerequisites:\n{report}"));
    }
    if let Err(e) = miglab_infra::image::GuestImage::current(&miglab_infra::paths::cache()) {
        return Some(e.to_string());
    }
    None
}

/// One repetition on the lab; its result.
fn one_run(scenario: &Path, out: &Path) -> RunResult {
    let opts = RunOptions {
        source: Source::Scenario(scenario.into()),
        out: out.into(),
        lab_root: miglab_infra::paths::lab_root(),
        repetitions: Some(1),
        lab_name: Some(LAB.into()),
        host_mode: None,
        binaries: Default::default(),
        topology: None,
    };
    let dirs = session::run(&opts).unwrap_or_else(|e| panic!("the benchmark's run failed: {e}"));
    let dir = dirs.first().expect("one result directory");
    serde_json::from_slice(&std::fs::read(dir.join("result.json")).expect("result.json")).expect("a result")
}

/// One run, with a line that says what it measured; its result and its wall time.
fn measured_run(scenario: &Path, out: &Path, label: &str) -> (RunResult, Duration) {
    let t = std::time::Instant::now();
    let r = one_run(scenario, out);
    let wall = t.elapsed();
    eprintln!(
        "  {label}: guest-visible downtime {:.0} ms, QEMU downtime {} ms, total migration {:.0} ms ({:.1} s)",
        guest_visible_downtime_ms(&r),
        r.migrations.first().and_then(|m| m.downtime_ms).map_or("—".into(), |d| d.to_string()),
        total_ms(&r),
        wall.as_secs_f64()
    );
    (r, wall)
}

/// The figure in ms as a duration (at least 1 µs: criterion divides by it).
fn as_duration(ms: f64) -> Duration {
    Duration::from_secs_f64(ms.max(1e-3) / 1e3)
}

fn guest_visible_downtime_ms(r: &RunResult) -> f64 {
    r.windows
        .iter()
        .find(|w| matches!(w.kind, WindowKind::Migration { .. }))
        .and_then(|w| w.heartbeat_gap_ms)
        .expect("the migration window has a heartbeat gap")
}

fn total_ms(r: &RunResult) -> f64 {
    r.migrations.first().and_then(|m| m.total_time_ms).expect("the migration's total time") as f64
}

fn benches(c: &mut Criterion) {
    if let Some(why) = cannot_run() {
        eprintln!("migration benchmarks SKIPPED: {why}");
        return;
    }
    let work = tempfile::tempdir().expect("tmp");
    let scenario: PathBuf = work.path().join("bench-migration.toml");
    std::fs::write(&scenario, SCENARIO).expect("scenario");
    // The lab stays up across samples: brought up here unless one named `bench` runs already.
    let state = miglab_infra::paths::lab_root().join(LAB).join("state.json");
    let ours = if miglab_infra::topology::state::StateFile::load(&state).is_ok() {
        None
    } else {
        Some(
            Lab::up(&LabOptions { name: LAB.into(), ..LabOptions::default() })
                .unwrap_or_else(|e| panic!("lab up: {e}")),
        )
    };
    let out = work.path().join("results");
    miglab::progress::set_quiet(true);
    const SAMPLES: usize = 10;
    type Figure = fn(&RunResult) -> f64;
    let figures: [(&str, Figure); 2] =
        [("guest_visible_downtime", guest_visible_downtime_ms), ("total_migration_time", total_ms)];
    let (_, mut wall) = measured_run(&scenario, &out, "pilot run (not a sample)");
    let mut g = c.benchmark_group("live_migration");
    for (name, figure) in figures {
        // 1.5 runs of wall time per sample: criterion makes each sample 2 runs.
        g.sampling_mode(SamplingMode::Flat)
            .sample_size(SAMPLES)
            .warm_up_time(Duration::from_millis(1))
            .measurement_time(wall.mul_f64(1.5 * SAMPLES as f64));
        let (mut n, mut walls) = (0usize, Duration::ZERO);
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        let (r, w) = measured_run(&scenario, &out, &format!("{name} run {n}"));
                        walls += w;
                        as_duration(figure(&r))
                    })
                    .sum()
            })
        });
        if n > 0 {
            wall = walls / n as u32;
        }
    }
    g.finish();
    miglab::progress::set_quiet(false);
    if let Some(lab) = ours {
        if let Err(e) = lab.down() {
            eprintln!("lab down: {e}");
        }
    }
}

criterion_group!(migration, benches);
criterion_main!(migration);
