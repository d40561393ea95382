//! How long a long run's report takes to render and how big it is. A real result is repeated
//! end to end until it lasts the asked minutes (its series, migrations, windows and faults
//! shifted in time), so the charts draw what a long run really holds.

use crate::assemble::ReportError;
use miglab_model::result::{RunResult, WindowKind};
use std::path::Path;
use std::time::Instant;

fn shift(t: &mut Option<f64>, by: f64) {
    if let Some(v) = t {
        *v += by;
    }
}

/// `r` repeated back to back until it lasts at least `minutes`.
pub fn stretch(r: &RunResult, minutes: f64) -> RunResult {
    let d = r.duration_ms.max(1.0);
    let copies = ((minutes * 60_000.0) / d).ceil().max(1.0) as u32;
    let mut out = r.clone();
    out.series.clear();
    out.migrations.clear();
    out.windows.clear();
    out.faults.clear();
    let hops = r.migrations.iter().map(|m| m.hop).max().unwrap_or(0);
    let faults = r.faults.len() as u32;
    for k in 0..copies {
        let by = k as f64 * d;
        out.series.extend(r.series.iter().map(|b| {
            let mut b = b.clone();
            b.t_ms += by as u64;
            b
        }));
        for m in &r.migrations {
            let mut m = m.clone();
            m.hop += k * hops;
            m.started_ms += by;
            for t in [
                &mut m.phases.active_ms,
                &mut m.phases.stop_ms,
                &mut m.phases.device_ms,
                &mut m.phases.resume_ms,
                &mut m.phases.end_ms,
            ] {
                shift(t, by);
            }
            for e in &mut m.timeline {
                e.t_ms += by;
            }
            out.migrations.push(m);
        }
        for w in &r.windows {
            let mut w = w.clone();
            w.start_ms += by;
            w.end_ms += by;
            match &mut w.kind {
                WindowKind::Migration { hop } => {
                    *hop += k * hops;
                    w.name = format!("migration {hop}");
                }
                WindowKind::Fault { index } => {
                    *index += k * faults;
                    w.name = format!("fault {}", *index + 1);
                }
            }
            out.windows.push(w);
        }
        for f in &r.faults {
            let mut f = f.clone();
            f.index += k * faults;
            for t in [&mut f.anchor_ms, &mut f.due_ms, &mut f.began_ms, &mut f.injected_ms, &mut f.cleared_ms]
            {
                shift(t, by);
            }
            out.faults.push(f);
        }
    }
    for o in &mut out.ops {
        o.count *= copies as u64;
        o.failed *= copies as u64;
        o.bytes *= copies as u64;
    }
    out.duration_ms = d * copies as f64;
    out
}

/// Renders a `minutes`-long stretch of the result in `dir` `rounds` times and prints the time
/// and the size, with what the size is made of.
pub fn run(dir: &Path, minutes: f64, rounds: u32) -> Result<(), ReportError> {
    let r = crate::assemble::read_result(dir)?;
    let long = stretch(&r, minutes);
    let mut times = Vec::new();
    let mut html = String::new();
    for _ in 0..rounds.max(1) {
        let t = Instant::now();
        html = miglab_reports::html::run_report(&long)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let svg: usize = html.split("<svg").skip(1).map(|s| s.split("</svg>").next().map_or(0, str::len)).sum();
    let json = serde_json::to_string(&long).map_or(0, |s| s.len());
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "report of a {:.1}-minute run ({} buckets of 100 ms, {} migrations, {} faults, from {}):",
        long.duration_ms / 60_000.0,
        long.series.len(),
        long.migrations.len(),
        long.faults.len(),
        dir.display()
    );
    println!(
        "  render: median {:.0} ms, min {:.0} ms, max {:.0} ms over {} rounds (charts are drawn from at most 1200 points)",
        super::median(&times),
        sorted[0],
        sorted[sorted.len() - 1],
        times.len()
    );
    println!(
        "  size: {:.0} KiB ({:.0} KiB of SVG charts, {:.0} KiB of embedded result.json before escaping)",
        html.len() as f64 / 1024.0,
        svg as f64 / 1024.0,
        json as f64 / 1024.0
    );
    Ok(())
}
