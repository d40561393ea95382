//! A sweep's report: its cells compared. `sweep.csv` has a row per repetition; `sweep.html`
//! shows every repetition's downtime per cell (QEMU's figure against the guest-visible one), the
//! cells' latency spectra overlaid, total migration time and bytes per cell, and a table of
//! medians and spreads.

use crate::charts::{self, draw, legend, svg, ChartError, Curve};
use crate::html::{esc, table, STYLE};
use crate::result::RunResult;
use plotters::prelude::*;
use std::fmt::Write as _;

/// One repetition of one cell.
#[derive(Debug, Clone)]
pub struct Rep {
    pub cell: String,
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
}

/// The figures of a run's first migration (follow-ups aside).
pub fn figures(r: &RunResult) -> Figures {
    r.migrations
        .iter()
        .find(|m| !m.follow_up)
        .map(|m| hop_figures(r, m))
        .unwrap_or_else(|| Figures { p99_us: busiest_p99(r), ..Figures::default() })
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
pub fn hop_figures(r: &RunResult, m: &crate::MigrationRecord) -> Figures {
    let w = r.migration_window(m.hop);
    Figures {
        qemu_downtime_ms: m.downtime_ms.map(|d| d as f64),
        heartbeat_gap_ms: w.and_then(|w| w.heartbeat_gap_ms),
        io_stall_ms: w.and_then(|w| w.io_stall_ms),
        total_ms: m.total_time_ms.map(|d| d as f64),
        mb_sent: m.transferred_bytes.map(|b| b as f64 / 1e6),
        p99_us: busiest_p99(r),
        window_ops_per_s: w.and_then(|w| {
            let inside: Vec<&crate::Bucket> = r
                .series
                .iter()
                .filter(|b| b.t_ms as f64 >= w.start_ms && (b.t_ms as f64) < w.end_ms)
                .collect();
            (!inside.is_empty())
                .then(|| inside.iter().map(|b| b.ops).sum::<u64>() as f64 / (inside.len() as f64 * 0.1))
        }),
    }
}

fn cells(reps: &[Rep]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
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
    ])?;
    let o = |v: Option<f64>| v.map(|v| format!("{v:.3}")).unwrap_or_default();
    for r in reps {
        let f = figures(&r.result);
        w.write_record([
            r.cell.clone(),
            r.result.repetition.to_string(),
            format!("{:?}", r.result.status).to_lowercase(),
            r.result.outcome.map(|o| o.to_string()).unwrap_or_default(),
            o(f.qemu_downtime_ms),
            o(f.heartbeat_gap_ms),
            o(f.io_stall_ms),
            o(f.total_ms),
            o(f.mb_sent),
            o(f.p99_us),
        ])?;
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// A cell's name as an axis label: its values only (`20 · read-loop` for
/// `downtime_limit_ms=20,workload=read-loop`); the tables give the full names.
fn short(cell: &str) -> String {
    cell.split(',').map(|kv| kv.split_once('=').map_or(kv, |(_, v)| v)).collect::<Vec<_>>().join(" · ")
}

/// What the values of a cell's label are: `downtime_limit_ms · workload`.
fn axes(cell: &str) -> String {
    cell.split(',').map(|kv| kv.split_once('=').map_or("cell", |(k, _)| k)).collect::<Vec<_>>().join(" · ")
}

/// A figure of a repetition, named for the legend.
type Figure = (&'static str, fn(&Figures) -> Option<f64>);

/// Every repetition's `figures`, per cell, side by side so that every one is seen.
fn strips(
    reps: &[Rep],
    names: &[String],
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
        let fmt = charts::category_labels(names.iter().map(|n| short(n)).collect());
        c.configure_mesh()
            .x_desc(names.first().map(|n| axes(n)).unwrap_or_else(|| "cell".into()))
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
fn spectra(reps: &[Rep], names: &[String]) -> Result<String, ChartError> {
    let curves: Vec<Curve> = names
        .iter()
        .filter_map(|n| reps.iter().find(|r| r.cell == *n).map(|r| (n, &r.result)))
        .filter_map(|(n, r)| {
            let o = r.ops.iter().filter(|o| o.op != "verify").max_by_key(|o| o.count)?;
            Some(Curve {
                name: n.clone(),
                solid: o.spectrum.iter().map(|p| (p.percentile, p.guest_us)).collect(),
                dashed: None,
            })
        })
        .collect();
    charts::spectrum_chart("Latency spectra of the cells (busiest op kind, guest clock)", &curves)
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
                .filter(|r| r.cell == *n && r.result.status == crate::result::RunStatus::Completed)
                .count();
            vec![
                n.clone(),
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
    h.push_str("<h2>Latency spectra</h2>");
    h.push_str(&spectra(reps, &names)?);
    h.push_str("<h2>Every repetition</h2>");
    let rows: Vec<Vec<String>> = reps
        .iter()
        .map(|r| {
            let f = figures(&r.result);
            let o = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into());
            vec![
                r.cell.clone(),
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
    fn a_cells_axis_label_is_its_values() {
        assert_eq!(short("downtime_limit_ms=20,workload=read-loop"), "20 · read-loop");
        assert_eq!(axes("downtime_limit_ms=20,workload=read-loop"), "downtime_limit_ms · workload");
    }

    /// 4 cells of 2 runs were titled "4 cells × 8 runs" (the runs of every cell).
    #[test]
    fn the_title_counts_runs_per_cell() {
        assert_eq!(cells_and_runs(4, 8), "4 cells × 2 runs");
        assert_eq!(cells_and_runs(3, 7), "3 cells, 7 runs in all");
    }
}
