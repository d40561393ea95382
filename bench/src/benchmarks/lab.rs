//! `lab up` and `lab down`, timed over several cycles of a lab of the benchmark's own: what every
//! lab test and every fresh `miglab run` pays before and after its measurement.

use super::median;
use miglab_infra::cpu::CpuTimes;
use miglab_infra::topology::lab::{Lab, LabError, LabOptions};
use std::time::Instant;

/// One cycle's figures, in ms.
#[derive(Debug, Clone, Default)]
pub struct Cycle {
    /// `lab up`'s own total (as `lab up --timings` prints it).
    pub up_ms: f64,
    pub down_ms: f64,
    /// Each bring-up phase's duration, in the order `lab up --timings` prints them.
    pub phases: Vec<(String, f64)>,
}

/// Brings lab `opts` up and down `count` times; prints each cycle, then the medians (and the
/// CPU the hypervisor took meanwhile: a starved machine reads slow).
pub fn run(opts: &LabOptions, count: u32) -> Result<Vec<Cycle>, LabError> {
    println!(
        "lab: {count} cycles of `lab up` and `lab down` of lab '{}' in {}",
        opts.name,
        opts.root.display()
    );
    let before = CpuTimes::now();
    let mut cycles = Vec::new();
    for i in 1..=count {
        let lab = Lab::up(opts)?;
        let t = lab.timings();
        let phases = t.phases.iter().map(|p| (p.name.clone(), p.duration_ms)).collect();
        let down = Instant::now();
        lab.down()?;
        let c = Cycle { up_ms: t.total_ms, down_ms: down.elapsed().as_secs_f64() * 1e3, phases };
        println!("  cycle {i}: up {:>6.0} ms  down {:>6.0} ms", c.up_ms, c.down_ms);
        cycles.push(c);
    }
    let steal = before.zip(CpuTimes::now()).and_then(|(a, b)| a.steal_pct(&b));
    print_summary(&cycles);
    if let Some(s) = steal {
        println!("CPU stolen by the hypervisor meanwhile: {s:.1} %");
    }
    Ok(cycles)
}

fn print_summary(cycles: &[Cycle]) {
    let of = |f: &dyn Fn(&Cycle) -> f64| -> (f64, f64, f64) {
        let v: Vec<f64> = cycles.iter().map(f).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (median(&v), lo, hi)
    };
    let Some(first) = cycles.first() else { return };
    println!("phase (median of {} cycles)   took ms", cycles.len());
    for (name, _) in &first.phases {
        let (m, _, _) = of(&|c: &Cycle| c.phases.iter().find(|(n, _)| n == name).map_or(0.0, |p| p.1));
        println!("  {name:<28} {m:>7.0}");
    }
    let (m, lo, hi) = of(&|c: &Cycle| c.up_ms);
    println!("lab up:   median {m:.0} ms, min {lo:.0} ms, max {hi:.0} ms");
    let (m, lo, hi) = of(&|c: &Cycle| c.down_ms);
    println!("lab down: median {m:.0} ms, min {lo:.0} ms, max {hi:.0} ms");
}
