//! A sweep's report: its cells compared. `sweep.csv` has a row per repetition; `sweep.html`
//! shows every repetition's downtime per cell (QEMU's figure against the guest-visible one), the
//! cells' latency spectra overlaid, total migration time and bytes per cell, and a table of
//! medians and spreads.

use crate::charts::{self, draw, legend, svg, ChartError, Curve};
use crate::html::{esc, table, STYLE};
use miglab_model::result::RunResult;
use miglab_model::SweepCell;
use plotters::prelude::*;
use std::fmt::Write as _;

/// One repetition of one cell.
#[derive(Debug, Clone)]
pub struct Rep {
    pub cell: SweepCell,
    pub result: RunResult,
}

/// The figures a sweep compares, of one repetition (its first migration).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub qemu_downtime_ms: Option<f64>,
    pub heartbeat_gap_ms: Option<f64>,
    pub io_stall_ms: Option<f64>,
    pub total_ms: Option<f64>,
    pub mb_sent: Option<f64>,
    /// The busiest op kind's p99 (guest clock), µs.
    pub p99_us: Option<f64>,
    /// Successful ops per second inside the migration's window (from the 100 ms series).
    pub window_ops_per_s: Option<f64>,
    /// From the source's `device` status to the destination's RESUME (with `device_phase`).
    pub device_state_ms: Option<f64>,
    /// virtiofsd's state inside QEMU's downtime: from the source beginning to save
    /// vhost-user-fs to the destination having loaded it (QEMU's tracepoints).
    pub virtiofsd_state_ms: Option<f64>,
    /// QEMU's `expected-downtime` before the guest stopped.
    pub expected_downtime_ms: Option<f64>,
    /// The longest the source's QEMU left `query-migrate` unanswered (its main loop blocked,
    /// e.g. saving virtiofsd's state).
    pub source_blocked_ms: Option<f64>,
    /// A run of several guests: the first hop's evacuation (first `migrate` to last guest
    /// running), and QEMU's downtime over every guest's migrations (median and worst).
    pub evacuation_ms: Option<f64>,
    pub guests_downtime_p50_ms: Option<f64>,
    pub guests_downtime_max_ms: Option<f64>,
    /// Pre-copy against the guest's dirtying: QEMU's dirty rate before the hop, the rate the
    /// link achieved (bytes sent over the total time), the passes, the highest throttle.
    pub dirty_rate_mib_s: Option<f64>,
    pub achieved_mib_s: Option<f64>,
    pub passes: Option<f64>,
    pub throttle_pct: Option<f64>,
}

/// The figures of a run's first migration (follow-ups aside).
pub fn figures(r: &RunResult) -> Figures {
    let mut f = r
        .migrations
        .iter()
        .find(|m| !m.follow_up)
        .map(|m| hop_figures(r, m))
        .unwrap_or_else(|| Figures { p99_us: busiest_p99(r), ..Figures::default() });
    if let Some(fleet) = &r.fleet {
        f.evacuation_ms = fleet.evacuations.first().map(|e| e.evacuation_ms);
        f.guests_downtime_p50_ms = fleet.qemu_downtime_ms.map(|d| d.p50);
        f.guests_downtime_max_ms = fleet.qemu_downtime_ms.map(|d| d.max);
    }
    f
}

/// The busiest workload op kind's p99 (guest clock), µs.
fn busiest_p99(r: &RunResult) -> Option<f64> {
    r.ops
        .iter()
        .filter(|o| o.op != "verify" && o.count > 0)
        .max_by_key(|o| o.count)
        .map(|o| o.guest.p99_us as f64)
}

/// The figures of one migration of a run.
pub fn hop_figures(r: &RunResult, m: &miglab_model::MigrationRecord) -> Figures {
    let w = r.migration_window(m.hop);
    Figures {
        qemu_downtime_ms: m.downtime_ms.map(|d| d as f64),
        heartbeat_gap_ms: w.and_then(|w| w.heartbeat_gap_ms),
        io_stall_ms: w.and_then(|w| w.io_stall_ms),
        total_ms: m.total_time_ms.map(|d| d as f64),
        mb_sent: m.transferred_bytes.map(|b| b as f64 / 1e6),
        p99_us: busiest_p99(r),
        device_state_ms: m.phases.device_state_ms(),
        virtiofsd_state_ms: m.downtime_parts.as_ref().and_then(|p| p.vhost_user_fs_ms),
        expected_downtime_ms: m.expected_downtime_ms.map(|d| d as f64),
        source_blocked_ms: m.longest_qmp_wait_ms,
        evacuation_ms: None,
        guests_downtime_p50_ms: None,
        guests_downtime_max_ms: None,
        dirty_rate_mib_s: m.convergence.dirty_rate_mib_s,
        achieved_mib_s: m
            .transferred_bytes
            .zip(m.total_time_ms.filter(|t| *t > 0))
            .map(|(b, t)| b as f64 / 1048576.0 / (t as f64 / 1000.0)),
        passes: (!m.convergence.passes.is_empty()).then_some(m.convergence.passes.len() as f64),
        throttle_pct: m.convergence.max_throttle_pct.map(|t| t as f64),
        window_ops_per_s: w.and_then(|w| {
            let inside: Vec<&miglab_model::Bucket> = r
                .series
                .iter()
                .filter(|b| b.t_ms as f64 >= w.start_ms && (b.t_ms as f64) < w.end_ms)
                .collect();
            (!inside.is_empty())
                .then(|| inside.iter().map(|b| b.ops).sum::<u64>() as f64 / (inside.len() as f64 * 0.1))
        }),
    }
}

fn cells(reps: &[Rep]) -> Vec<SweepCell> {
    let mut v: Vec<SweepCell> = Vec::new();
    for r in reps {
        if !v.contains(&r.cell) {
            v.push(r.cell.clone());
        }
    }
    v
}

/// "4 cells × 2 runs", or "3 cells, 7 runs in all" when the cells ran unequal numbers.
fn cells_and_runs(cells: usize, runs: usize) -> String {
    match cells {
        0 => format!("no cell, {runs} runs"),
        c if runs % c == 0 => format!("{c} cells × {} runs", runs / c),
        c => format!("{c} cells, {runs} runs in all"),
    }
}

/// Median and range of what is there.
fn spread(v: &[Option<f64>]) -> String {
    let mut x: Vec<f64> = v.iter().flatten().copied().collect();
    if x.is_empty() {
        return "—".into();
    }
    x.sort_by(f64::total_cmp);
    let med = if x.len() % 2 == 1 { x[x.len() / 2] } else { (x[x.len() / 2 - 1] + x[x.len() / 2]) / 2.0 };
    if x.len() == 1 {
        format!("{med:.0}")
    } else {
        format!("{med:.0} ({:.0}–{:.0})", x[0], x[x.len() - 1])
    }
}

/// `sweep.csv`: a row per repetition.
pub fn csv(reps: &[Rep]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "cell",
        "repetition",
        "status",
        "outcome",
        "qemu_downtime_ms",
        "heartbeat_gap_ms",
        "io_stall_ms",
        "total_ms",
        "mb_sent",
        "p99_us",
        "device_state_ms",
        "virtiofsd_state_ms",
        "expected_downtime_ms",
        "source_blocked_ms",
        "evacuation_ms",
        "guests_downtime_p50_ms",
        "guests_downtime_max_ms",
        "dirty_rate_mib_s",
        "achieved_mib_s",
        "passes",
        "throttle_pct",
    ])?;
    let o = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    for r in reps {
        let f = figures(&r.result);
        w.write_record([
            r.cell.name(),
            r.result.repetition.to_string(),
            format!("{:?}", r.result.status).to_lowercase(),
            r.result.outcome.map(|o| o.to_string()).unwrap_or_default(),
            o(f.qemu_downtime_ms),
            o(f.heartbeat_gap_ms),
            o(f.io_stall_ms),
            o(f.total_ms),
            o(f.mb_sent),
            o(f.p99_us),
            o(f.device_state_ms),
            o(f.virtiofsd_state_ms),
            o(f.expected_downtime_ms),
            o(f.source_blocked_ms),
            o(f.evacuation_ms),
            o(f.guests_downtime_p50_ms),
            o(f.guests_downtime_max_ms),
            o(f.dirty_rate_mib_s),
            o(f.achieved_mib_s),
            o(f.passes),
            o(f.throttle_pct),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A line of the scale chart as its legend names it: its values, or `all`.
fn line_label(line: &SweepCell) -> String {
    if line.values.is_empty() {
        "all".into()
    } else {
        line.short()
    }
}

/// A figure of a repetition, named for the legend.
type Figure = (&'static str, fn(&Figures) -> Option<f64>);

/// Every repetition's `figures`, per cell, side by side so that every one is seen.
fn strips(
    reps: &[Rep],
    names: &[SweepCell],
    caption: &str,
    unit: &str,
    shown: &[Figure],
) -> Result<String, ChartError> {
    let ymax = reps
        .iter()
        .flat_map(|r| {
            let f = figures(&r.result);
            shown.iter().map(move |(_, g)| g(&f)).collect::<Vec<_>>()
        })
        .flatten()
        .fold(1.0, f64::max)
        * 1.3;
    let n = names.len().max(1) as f64;
    let lane = 0.8 / shown.len().max(1) as f64;
    svg(960, 320, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(62)
            .build_cartesian_2d(0f64..n, 0f64..ymax)
            .map_err(draw)?;
        let fmt = charts::category_labels(names.iter().map(SweepCell::short).collect());
        c.configure_mesh()
            .x_desc(names.first().map(SweepCell::axes).unwrap_or_else(|| "cell".into()))
            .y_desc(unit)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .x_labels(names.len() * 2 + 1)
            .x_label_formatter(&fmt)
            .disable_x_mesh()
            .draw()
            .map_err(draw)?;
        for (k, (name, g)) in shown.iter().enumerate() {
            let col = charts::PALETTE[k % charts::PALETTE.len()];
            let dots: Vec<Circle<(f64, f64), i32>> = reps
                .iter()
                .filter_map(|r| {
                    let i = names.iter().position(|n| *n == r.cell)? as f64;
                    let v = g(&figures(&r.result))?;
                    let x = i + 0.1 + lane * (k as f64 + 0.3) + 0.02 * (r.result.repetition % 8) as f64;
                    Some(Circle::new((x, v), 4, col.filled()))
                })
                .collect();
            c.draw_series(dots)
                .map_err(draw)?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, col.filled()));
        }
        legend(&mut c, SeriesLabelPosition::UpperRight)
    })
}

/// Each cell's spectrum (its first repetition's busiest op kind) overlaid.
fn spectra(reps: &[Rep], names: &[SweepCell]) -> Result<String, ChartError> {
    let curves: Vec<Curve> = names
        .iter()
        .filter_map(|n| reps.iter().find(|r| r.cell == *n).map(|r| (n, &r.result)))
        .filter_map(|(n, r)| {
            let o = r.ops.iter().filter(|o| o.op != "verify").max_by_key(|o| o.count)?;
            Some(Curve {
                name: n.name(),
                solid: o.spectrum.iter().map(|p| (p.percentile, p.guest_us)).collect(),
                dashed: None,
            })
        })
        .collect();
    charts::spectrum_chart("Latency spectra of the cells (busiest op kind, guest clock)", &curves)
}

/// The axis a sweep scales along: the first whose every value is a positive number, with at
/// least three values (`files` of `files=100,virtiofsd_args=none`).
fn scale_axis(names: &[SweepCell]) -> Option<String> {
    let first = names.first()?;
    first.values.iter().map(|v| v.key().to_string()).find(|key| {
        let mut values: Vec<f64> = Vec::new();
        let numeric = names.iter().all(|n| match n.value(key).and_then(|v| v.number) {
            Some(v) if v > 0.0 => {
                if !values.contains(&v) {
                    values.push(v);
                }
                true
            }
            _ => false,
        });
        numeric && values.len() >= 3
    })
}

/// Every repetition's (scale, figure) per line, lines in the order of the cells.
fn scale_points(
    reps: &[Rep],
    key: &str,
    g: fn(&Figures) -> Option<f64>,
) -> Vec<(SweepCell, Vec<(f64, f64)>)> {
    let mut lines: Vec<(SweepCell, Vec<(f64, f64)>)> = Vec::new();
    for r in reps {
        let Some(x) = r.cell.value(key).and_then(|v| v.number) else { continue };
        let Some(y) = g(&figures(&r.result)) else { continue };
        let line = r.cell.without(key);
        match lines.iter_mut().find(|(l, _)| *l == line) {
            Some((_, v)) => v.push((x, y)),
            None => lines.push((line, vec![(x, y)])),
        }
    }
    lines
}

/// A figure against the scale axis on a log axis: a line per rest of the cell through its
/// medians, every repetition a point.
fn scale_chart(
    reps: &[Rep],
    key: &str,
    caption: &str,
    g: fn(&Figures) -> Option<f64>,
) -> Result<String, ChartError> {
    let lines = scale_points(reps, key, g);
    let all = || lines.iter().flat_map(|(_, v)| v.iter());
    let xmin = all().map(|p| p.0).fold(f64::INFINITY, f64::min).max(1e-9) / 1.6;
    let xmax = all().map(|p| p.0).fold(1.0, f64::max) * 1.6;
    let ymax = all().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    svg(960, 380, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(62)
            .build_cartesian_2d((xmin..xmax).log_scale(), 0f64..ymax)
            .map_err(draw)?;
        c.configure_mesh()
            .x_desc(format!("{key} (log scale)"))
            .y_desc("ms")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(draw)?;
        for (k, (name, points)) in lines.iter().enumerate() {
            let col = charts::PALETTE[k % charts::PALETTE.len()];
            let mut xs: Vec<f64> = points.iter().map(|p| p.0).collect();
            xs.sort_by(f64::total_cmp);
            xs.dedup();
            let medians: Vec<(f64, f64)> = xs
                .iter()
                .map(|x| {
                    let ys: Vec<f64> = points.iter().filter(|p| p.0 == *x).map(|p| p.1).collect();
                    (*x, crate::stats::median(&ys))
                })
                .collect();
            c.draw_series(LineSeries::new(medians, col.stroke_width(2)))
                .map_err(draw)?
                .label(line_label(name))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
            c.draw_series(points.iter().map(|p| Circle::new(*p, 4, col.filled()))).map_err(draw)?;
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    })
}

/// QEMU's default downtime limit, ms: what the scale table prices a unit against.
const LIMIT: f64 = miglab_model::migration::QEMU_DEFAULT_DOWNTIME_LIMIT_MS as f64;

/// The fitted cost per unit of the scale axis, per line: µs per unit, with its 95 % interval.
fn scale_table(reps: &[Rep], key: &str) -> String {
    // Rounded before printing, so that a slope of -0.3 µs reads 0, not "-0".
    let us = |ms: f64| {
        let v = (ms * 1000.0).round();
        if v == 0.0 {
            0.0
        } else {
            v
        }
    };
    let fmt = |f: Option<crate::stats::Fit>| match f {
        Some(f) => format!("{:.0} ({:.0}–{:.0})", us(f.slope), us(f.slope_lo), us(f.slope_hi)),
        None => "—".into(),
    };
    let downtime = scale_points(reps, key, |f| f.qemu_downtime_ms);
    let device = scale_points(reps, key, |f| f.device_state_ms);
    let state = scale_points(reps, key, |f| f.virtiofsd_state_ms);
    let blocked = scale_points(reps, key, |f| f.source_blocked_ms);
    let fit_of = |lines: &[(SweepCell, Vec<(f64, f64)>)], line: &SweepCell| {
        lines.iter().find(|(l, _)| l == line).and_then(|(_, p)| crate::stats::linear_fit(p, 0.95))
    };
    let rows: Vec<Vec<String>> = downtime
        .iter()
        .map(|(line, pts)| {
            let fit = crate::stats::linear_fit(pts, 0.95);
            vec![
                if line.values.is_empty() { "all".into() } else { line.name() },
                pts.len().to_string(),
                fmt(fit),
                fmt(fit_of(&device, line)),
                fmt(fit_of(&state, line)),
                fmt(fit_of(&blocked, line)),
                // How many units cost QEMU's default 300 ms downtime limit by themselves.
                fit.filter(|f| f.slope > 0.0)
                    .map(|f| {
                        let at = |slope: f64| {
                            if slope > 0.0 {
                                format!("{:.0}", LIMIT / slope)
                            } else {
                                "∞".into()
                            }
                        };
                        format!("{} ({}–{})", at(f.slope), at(f.slope_hi), at(f.slope_lo))
                    })
                    .unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    let mut h = table(
        &[
            "line",
            "runs",
            &format!("QEMU downtime, µs per unit of {key}"),
            &format!("device state, µs per unit of {key}"),
            &format!("virtiofsd's state (vhost-user-fs save → load), µs per unit of {key}"),
            &format!("source QEMU blocked, µs per unit of {key}"),
            &format!("{key} costing {LIMIT} ms"),
        ],
        &rows,
    );
    h.push_str(
        "<p class=\"sub\">least-squares line through every repetition; 95 % interval of the slope (Student's t); virtiofsd's state runs from vhost-user-fs's save beginning on the source to its load ending on the destination (QEMU's downtime tracepoints); the source's QEMU blocked is the longest it left <code>query-migrate</code> unanswered (polled every 50 ms: its main loop saving the device state); the last column is how many units add QEMU's default downtime limit by themselves (the limit over the slope, with the slope's interval)</p>"
    );
    h
}

/// `sweep.html`.
pub fn report(scenario: &str, reps: &[Rep]) -> Result<String, ChartError> {
    let names = cells(reps);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>miglab sweep: {}</title><style>{STYLE}</style></head><body>",
        esc(scenario)
    );
    let _ = write!(h, "<h1>{} — sweep of {}</h1>", esc(scenario), cells_and_runs(names.len(), reps.len()));
    h.push_str("<h2>Cells</h2>");
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|n| {
            let f: Vec<Figures> = reps.iter().filter(|r| r.cell == *n).map(|r| figures(&r.result)).collect();
            let col = |g: fn(&Figures) -> Option<f64>| spread(&f.iter().map(g).collect::<Vec<_>>());
            let done = reps
                .iter()
                .filter(|r| r.cell == *n && r.result.status == miglab_model::result::RunStatus::Completed)
                .count();
            vec![
                n.name(),
                format!("{done}/{}", f.len()),
                col(|f| f.qemu_downtime_ms),
                col(|f| f.heartbeat_gap_ms),
                col(|f| f.io_stall_ms),
                col(|f| f.total_ms),
                col(|f| f.mb_sent),
                col(|f| f.p99_us),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "cell",
            "completed",
            "QEMU downtime ms",
            "heartbeat gap ms",
            "I/O stall ms",
            "migration total ms",
            "MB sent",
            "p99 µs",
        ],
        &rows,
    ));
    h.push_str("<p class=\"sub\">median (min–max) over the cell's repetitions; figures of each repetition's first migration</p>");
    h.push_str("<h2>Downtime</h2>");
    h.push_str(&strips(
        reps,
        &names,
        "Downtime per cell: QEMU's figure and the guest-visible pause, every repetition",
        "ms",
        &[
            ("QEMU downtime", |f| f.qemu_downtime_ms),
            ("heartbeat gap (guest-visible)", |f| f.heartbeat_gap_ms),
        ],
    )?);
    if reps.iter().any(|r| r.result.fleet.is_some()) {
        h.push_str("<h2>Guests</h2>");
        h.push_str(&strips(
            reps,
            &names,
            "Evacuating the host (first migrate → last guest running), every repetition",
            "ms",
            &[("evacuation", |f| f.evacuation_ms)],
        )?);
        h.push_str(&strips(
            reps,
            &names,
            "QEMU downtime over every guest's migrations: median and worst, every repetition",
            "ms",
            &[
                ("median over guests", |f| f.guests_downtime_p50_ms),
                ("worst guest", |f| f.guests_downtime_max_ms),
            ],
        )?);
    }
    if let Some(key) = scale_axis(&names) {
        let _ = write!(h, "<h2>Scaling with {}</h2>", esc(&key));
        h.push_str(&scale_table(reps, &key));
        h.push_str(&scale_chart(
            reps,
            &key,
            &format!("QEMU downtime against {key}, every repetition"),
            |f| f.qemu_downtime_ms,
        )?);
        if reps.iter().any(|r| figures(&r.result).device_state_ms.is_some()) {
            h.push_str(&scale_chart(
                reps,
                &key,
                &format!("Device state (QEMU's `device` → destination RESUME) against {key}"),
                |f| f.device_state_ms,
            )?);
        }
    }
    h.push_str("<h2>Migration cost</h2>");
    h.push_str(&strips(
        reps,
        &names,
        "Total migration time per cell, every repetition",
        "ms",
        &[("migration total", |f| f.total_ms)],
    )?);
    h.push_str(&strips(
        reps,
        &names,
        "Data sent per cell, every repetition",
        "MB",
        &[("MB sent", |f| f.mb_sent)],
    )?);
    if reps.iter().any(|r| figures(&r.result).passes.is_some()) {
        h.push_str("<h2>Convergence</h2>");
        h.push_str(&strips(
            reps,
            &names,
            "The guest's dirty rate (QEMU's calc-dirty-rate before the hop) and the rate the link achieved",
            "MiB/s",
            &[("dirty rate", |f| f.dirty_rate_mib_s), ("achieved", |f| f.achieved_mib_s)],
        )?);
        h.push_str(&strips(
            reps,
            &names,
            "Pre-copy passes and the highest vCPU throttle (auto-converge), every repetition",
            "passes / %",
            &[("passes", |f| f.passes), ("throttle %", |f| f.throttle_pct)],
        )?);
    }
    h.push_str("<h2>Latency spectra</h2>");
    h.push_str(&spectra(reps, &names)?);
    h.push_str("<h2>Every repetition</h2>");
    let rows: Vec<Vec<String>> = reps
        .iter()
        .map(|r| {
            let f = figures(&r.result);
            let o = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
            vec![
                r.cell.name(),
                r.result.repetition.to_string(),
                format!("{:?}", r.result.status),
                r.result.outcome.map(|o| o.to_string()).unwrap_or_default(),
                o(f.qemu_downtime_ms),
                o(f.heartbeat_gap_ms),
                o(f.io_stall_ms),
                o(f.total_ms),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "cell",
            "rep",
            "status",
            "outcome",
            "QEMU downtime ms",
            "heartbeat gap ms",
            "I/O stall ms",
            "total ms",
        ],
        &rows,
    ));
    h.push_str("</body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_axis_with_three_values_is_the_scale() {
        let names: Vec<SweepCell> = ["files=100,args=none", "files=1000,args=none", "files=10000,args=fh"]
            .iter()
            .map(|s| SweepCell::from_name(s))
            .collect();
        assert_eq!(scale_axis(&names).as_deref(), Some("files"));
        assert_eq!(names[0].without("files").name(), "args=none");
        assert_eq!(scale_axis(&names[..2]), None, "two values are no scale");
        let limits: Vec<SweepCell> =
            ["limit=20,w=a", "limit=300,w=b"].iter().map(|s| SweepCell::from_name(s)).collect();
        assert_eq!(scale_axis(&limits), None);
        assert_eq!(line_label(&SweepCell { values: Vec::new() }), "all");
    }

    /// 4 cells of 2 runs were titled "4 cells × 8 runs" (the runs of every cell).
    #[test]
    fn the_title_counts_runs_per_cell() {
        assert_eq!(cells_and_runs(4, 8), "4 cells × 2 runs");
        assert_eq!(cells_and_runs(3, 7), "3 cells, 7 runs in all");
    }
}
