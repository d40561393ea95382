//! The charts of a report, as inline SVG drawn with plotters. Text is laid out with a font
//! registered through `ab_glyph` (plotters' default font backend needs system font lookups and
//! can panic); the SVG itself names `sans-serif`, which every browser has.

use miglab_model::migration::{MigrationRecord, QmpEvent, Side};
use miglab_model::result::{Bucket, RunResult};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("no font to lay the charts' text out with ({0}); install fonts-dejavu-core (ci/setup does) or point MIGLAB_FONT at a .ttf")]
    Font(String),
    #[error("drawing a chart failed: {0}")]
    Draw(String),
}

/// Where a font is looked for: `$MIGLAB_FONT`, then DejaVu Sans (Debian's fonts-dejavu-core).
const FONTS: &[&str] =
    &["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/dejavu/DejaVuSans.ttf"];

/// Registers the font once per process.
pub fn font() -> Result<(), ChartError> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("MIGLAB_FONT")
            .ok()
            .into_iter()
            .chain(FONTS.iter().map(|s| s.to_string()))
            .collect();
        let (path, bytes) = candidates
            .iter()
            .find_map(|p| std::fs::read(p).ok().map(|b| (p.clone(), b)))
            .ok_or_else(|| format!("none of {}", candidates.join(", ")))?;
        // plotters keeps a reference for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a font plotters can read"))
    })
    .clone()
    .map_err(ChartError::Font)
}

pub(crate) type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

pub(crate) fn draw(e: impl std::fmt::Display) -> ChartError {
    ChartError::Draw(e.to_string())
}

/// Renders `f` on a `w` × `h` SVG.
pub(crate) fn svg(
    w: u32,
    h: u32,
    f: impl FnOnce(&Area<'_>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    font()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw)?;
        f(&root)?;
        root.present().map_err(draw)?;
    }
    Ok(out)
}

const SETUP: RGBColor = RGBColor(220, 220, 220);
const RAM: RGBColor = RGBColor(198, 219, 239);
const PAUSE: RGBColor = RGBColor(253, 174, 107);
const DEVICE: RGBColor = RGBColor(241, 105, 19);
const DONE: RGBColor = RGBColor(35, 139, 69);
const FAULT: RGBColor = RGBColor(222, 45, 38);
/// The verify pass: grey, behind everything.
const VERIFY: RGBColor = RGBColor(150, 150, 150);
const OPS: RGBColor = RGBColor(33, 113, 181);
const P99: RGBColor = RGBColor(230, 85, 13);
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(33, 113, 181),
    RGBColor(230, 85, 13),
    RGBColor(49, 163, 84),
    RGBColor(117, 107, 177),
    RGBColor(99, 99, 99),
    RGBColor(214, 39, 40),
];

/// QEMU's downtime parts, in [`miglab_model::PartName::ALL`]'s order: the source's in blues, the
/// hand-over in gold, the destination's in teals (apart from the guest-side bars' colours).
const PARTS: [RGBColor; 7] = [
    RGBColor(158, 202, 225),
    RGBColor(200, 200, 200),
    RGBColor(66, 146, 198),
    RGBColor(8, 69, 148),
    RGBColor(240, 200, 40),
    RGBColor(102, 194, 165),
    RGBColor(0, 109, 119),
];

fn part_colour(p: miglab_model::PartName) -> RGBColor {
    PARTS[miglab_model::PartName::ALL.iter().position(|x| *x == p).unwrap_or(0)]
}

/// Draws the series' labels, boxed, at `pos`.
pub(crate) fn legend<'a, X, Y>(
    c: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<X, Y>>,
    pos: SeriesLabelPosition,
) -> Result<(), ChartError>
where
    X: Ranged,
    Y: Ranged,
{
    c.configure_series_labels()
        .position(pos)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 12))
        .draw()
        .map_err(draw)
}

/// Labels of a category axis (category `i` spans `i..i+1`): each name once, at its middle.
/// Use with `x_labels(2 * n + 1)`, which puts ticks at every half.
pub(crate) fn category_labels(names: Vec<String>) -> impl Fn(&f64) -> String {
    move |x: &f64| {
        if (x.fract() - 0.5).abs() < 0.01 {
            names.get(x.floor() as usize).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }
}

/// How a series looks in a legend.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Swatch {
    Line(RGBColor, u32),
    Area(RGBColor),
    Bar(RGBColor),
}

/// Splits `root` into the plot (left) and a legend column (right, `width` px) and draws the
/// legend there, so it never covers data.
pub(crate) fn side_legend<'a>(
    root: &Area<'a>,
    width: u32,
    items: &[(&str, Swatch)],
) -> Result<Area<'a>, ChartError> {
    let (w, _) = root.dim_in_pixel();
    let (plot, side) = root.split_horizontally(w.saturating_sub(width));
    for (i, (name, sw)) in items.iter().enumerate() {
        let y = 60 + 20 * i as i32;
        match *sw {
            Swatch::Line(c, width) => {
                side.draw(&PathElement::new(vec![(4, y), (24, y)], c.stroke_width(width))).map_err(draw)?
            }
            Swatch::Area(c) => {
                side.draw(&Rectangle::new([(4, y - 6), (24, y + 6)], c.mix(0.6).filled())).map_err(draw)?
            }
            Swatch::Bar(c) => {
                side.draw(&Rectangle::new([(4, y - 6), (24, y + 6)], c.filled())).map_err(draw)?
            }
        }
        side.draw(&Text::new(name.to_string(), (30, y - 7), ("sans-serif", 12))).map_err(draw)?;
    }
    Ok(plot)
}

/// At most `max` points: neighbouring buckets merged (ops, bytes and spans summed, the worst p99
/// kept), so a long run stays quick to draw and small; rates divide by the merged span.
pub fn decimate(series: &[Bucket], max: usize) -> Vec<Bucket> {
    if series.len() <= max {
        return series.to_vec();
    }
    let per = series.len().div_ceil(max);
    series
        .chunks(per)
        .map(|c| Bucket {
            t_ms: c[0].t_ms,
            ops: c.iter().map(|b| b.ops).sum(),
            bytes: c.iter().map(|b| b.bytes).sum(),
            errors: c.iter().map(|b| b.errors).sum(),
            p99_us: c.iter().filter_map(|b| b.p99_us).max(),
            heartbeats: c.iter().map(|b| b.heartbeats).sum(),
            verify_ops: c.iter().map(|b| b.verify_ops).sum(),
            span_ms: Some(c.iter().map(|b| (b.span_s() * 1000.0).round() as u64).sum()),
        })
        .collect()
}

/// Where the verify pass ran (run clock, s): the buckets in which it checked blocks.
pub fn verify_span(series: &[Bucket]) -> Option<(f64, f64)> {
    let first = series.iter().find(|b| b.verify_ops > 0)?;
    let last = series.iter().rev().find(|b| b.verify_ops > 0)?;
    Some((first.t_ms as f64 / 1000.0, last.t_ms as f64 / 1000.0 + last.span_s()))
}

/// The phases of a migration as spans on the run clock: setup, RAM passes, and the pause split
/// at the `device` status into stop-and-copy (RAM) and device state (virtio-fs included).
fn spans(m: &MigrationRecord) -> Vec<(f64, f64, RGBColor)> {
    let p = &m.phases;
    let end = p.end_ms.or(p.resume_ms).unwrap_or(m.started_ms + m.wall_ms);
    let mut v = Vec::new();
    let active = p.active_ms.unwrap_or(m.started_ms);
    v.push((m.started_ms, active, SETUP));
    v.push((active, p.stop_ms.unwrap_or(end), RAM));
    if let Some(s) = p.stop_ms {
        let r = p.resume_ms.unwrap_or(end);
        match p.device_ms.filter(|d| *d >= s && *d <= r) {
            Some(d) => {
                v.push((s, d, PAUSE));
                v.push((d, r, DEVICE));
            }
            None => v.push((s, r, PAUSE)),
        }
    }
    v
}

/// Throughput and p99 over the run (the 100 ms series), each migration's phases shaded, RAM
/// passes as thin lines, every fault marked from its injection to its clearance, the verify
/// pass shaded apart (its reads are not the workload's).
pub fn timeline(r: &RunResult) -> Result<String, ChartError> {
    timeline_in(r, None, "Throughput and p99 latency over the run")
}

/// The same, zoomed to `from_s..to_s` of the run clock: one migration or fault window.
pub fn zoom(r: &RunResult, from_s: f64, to_s: f64, caption: &str) -> Result<String, ChartError> {
    timeline_in(r, Some((from_s, to_s.max(from_s + 0.2))), caption)
}

fn timeline_in(r: &RunResult, range: Option<(f64, f64)>, caption: &str) -> Result<String, ChartError> {
    let inside: Vec<Bucket> = match range {
        Some((a, b)) => r
            .series
            .iter()
            .filter(|x| (x.t_ms as f64 / 1000.0 + x.span_s()) > a && (x.t_ms as f64 / 1000.0) < b)
            .cloned()
            .collect(),
        None => r.series.clone(),
    };
    let series = decimate(&inside, 1200);
    let start_s = range.map_or(0.0, |(a, _)| a);
    let end_s = match range {
        Some((_, b)) => b,
        None => series
            .last()
            .map(|b| b.t_ms as f64 / 1000.0 + b.span_s())
            .unwrap_or(r.duration_ms / 1000.0)
            .max(1.0),
    };
    let verify = verify_span(&r.series);
    let ops = |b: &Bucket| b.ops as f64 / b.span_s();
    let ymax = series.iter().map(ops).fold(1.0, f64::max) * 1.15;
    let pmax = series.iter().filter_map(|b| b.p99_us).map(|p| p as f64 / 1000.0).fold(1.0, f64::max) * 1.15;
    svg(960, 360, |root| {
        let plot = side_legend(
            root,
            170,
            &[
                ("ops/s", Swatch::Line(OPS, 2)),
                ("p99 (ms)", Swatch::Line(P99, 1)),
                ("setup", Swatch::Area(SETUP)),
                ("RAM passes", Swatch::Area(RAM)),
                ("paused: stop-and-copy", Swatch::Area(PAUSE)),
                ("paused: device state", Swatch::Area(DEVICE)),
                ("migration ended", Swatch::Line(DONE, 2)),
                ("fault", Swatch::Area(FAULT)),
                ("verify pass (not the workload)", Swatch::Area(VERIFY)),
            ],
        )?;
        let mut c = ChartBuilder::on(&plot)
            .caption(caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .right_y_label_area_size(62)
            .build_cartesian_2d(start_s..end_s, 0f64..ymax)
            .map_err(draw)?
            .set_secondary_coord(start_s..end_s, 0f64..pmax);
        c.configure_mesh()
            .x_desc("run time (s)")
            .y_desc("successful ops/s")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .draw()
            .map_err(draw)?;
        c.configure_secondary_axes()
            .y_desc("p99 latency (ms, guest clock)")
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()
            .map_err(draw)?;
        let clip = |v: f64| v.clamp(start_s, end_s);
        if let Some((a, b)) = verify.filter(|(a, b)| *b > start_s && *a < end_s) {
            c.draw_series(std::iter::once(Rectangle::new(
                [(clip(a), 0.0), (clip(b), ymax)],
                VERIFY.mix(0.35).filled(),
            )))
            .map_err(draw)?;
            c.draw_series(std::iter::once(Text::new(
                "verify pass",
                (clip(a) + (end_s - start_s) * 0.005, ymax * 0.88),
                ("sans-serif", 12),
            )))
            .map_err(draw)?;
        }
        for m in &r.migrations {
            let rects = spans(m).into_iter().map(|(a, b, col)| {
                Rectangle::new(
                    [(clip(a / 1000.0), 0.0), (clip(b.max(a) / 1000.0), ymax)],
                    col.mix(0.55).filled(),
                )
            });
            c.draw_series(rects).map_err(draw)?;
            let passes = m
                .timeline
                .iter()
                .filter(|e| e.side == Side::Source && matches!(e.event, QmpEvent::MigrationPass { .. }));
            c.draw_series(passes.filter(|e| (start_s..=end_s).contains(&(e.t_ms / 1000.0))).map(|e| {
                PathElement::new(vec![(e.t_ms / 1000.0, 0.0), (e.t_ms / 1000.0, ymax)], BLUE.mix(0.4))
            }))
            .map_err(draw)?;
            if let Some(e) = m.phases.end_ms.filter(|e| (start_s..=end_s).contains(&(e / 1000.0))) {
                c.draw_series(std::iter::once(PathElement::new(
                    vec![(e / 1000.0, 0.0), (e / 1000.0, ymax)],
                    DONE.stroke_width(2),
                )))
                .map_err(draw)?;
            }
        }
        for f in &r.faults {
            if let Some(a) = f.injected_ms {
                let b = f.cleared_ms.unwrap_or(a).max(a + 50.0);
                if b / 1000.0 < start_s || a / 1000.0 > end_s {
                    continue;
                }
                c.draw_series(std::iter::once(Rectangle::new(
                    [(clip(a / 1000.0), ymax * 0.93), (clip(b / 1000.0), ymax)],
                    FAULT.mix(0.7).filled(),
                )))
                .map_err(draw)?;
            }
        }
        c.draw_series(LineSeries::new(
            series.iter().map(|b| (b.t_ms as f64 / 1000.0, ops(b))),
            OPS.stroke_width(2),
        ))
        .map_err(draw)?;
        // A bucket without a completed op has no p99: the line breaks there rather than
        // drawing a slope across a stall.
        let runs = series.split(|b| b.p99_us.is_none()).filter(|run| !run.is_empty()).map(|run| {
            PathElement::new(
                run.iter()
                    .filter_map(|b| Some((b.t_ms as f64 / 1000.0, b.p99_us? as f64 / 1000.0)))
                    .collect::<Vec<_>>(),
                P99.stroke_width(1),
            )
        });
        c.draw_secondary_series(runs).map_err(draw)?;
        Ok(())
    })
}

/// The nines scale: 0 → 0, 90 → 1, 99 → 2, 99.9 → 3, ...; 100 (the max) a little past 99.999.
fn nines(p: f64) -> f64 {
    if p >= 100.0 {
        5.5
    } else {
        -(1.0 - p / 100.0).log10()
    }
}

fn nines_label(x: &f64) -> String {
    match x.round() as i64 {
        0 => "p0".into(),
        1 => "p90".into(),
        2 => "p99".into(),
        3 => "p99.9".into(),
        4 => "p99.99".into(),
        5 => "p99.999".into(),
        _ => "max".into(),
    }
}

/// A latency in µs as a reader says it: 100 µs, 10 ms, 5 s.
pub fn micros(v: &f64) -> String {
    let v = *v;
    if v >= 1e6 {
        format!("{} s", trim(v / 1e6))
    } else if v >= 1e3 {
        format!("{} ms", trim(v / 1e3))
    } else {
        format!("{} µs", trim(v))
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// One curve of a spectrum chart: (percentile, µs) points, and optionally a dashed companion
/// of the same colour (the host clock's).
#[derive(Debug)]
pub(crate) struct Curve {
    pub name: String,
    pub solid: Vec<(f64, u64)>,
    pub dashed: Option<Vec<(f64, u64)>>,
}

/// Percentile spectra, p0 to the max on the nines scale, latency log-scaled.
pub(crate) fn spectrum_chart(caption: &str, curves: &[Curve]) -> Result<String, ChartError> {
    let all = || curves.iter().flat_map(|c| c.solid.iter().chain(c.dashed.iter().flatten())).map(|p| p.1);
    let ymax = all().max().unwrap_or(10).max(10) as f64 * 1.5;
    let ymin = all().min().unwrap_or(1).max(1) as f64 / 1.5;
    let xy = |v: &[(f64, u64)]| -> Vec<(f64, f64)> {
        v.iter().map(|(p, us)| (nines(*p), (*us).max(1) as f64)).collect()
    };
    svg(960, 360, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..5.6, (ymin..ymax).log_scale())
            .map_err(draw)?;
        c.configure_mesh()
            .x_desc("percentile")
            .y_desc("latency")
            .y_label_formatter(&micros)
            .y_labels(8)
            .x_labels(7)
            .x_label_formatter(&nines_label)
            .draw()
            .map_err(draw)?;
        for (i, curve) in curves.iter().enumerate() {
            let col = PALETTE[i % PALETTE.len()];
            c.draw_series(LineSeries::new(xy(&curve.solid), col.stroke_width(2)))
                .map_err(draw)?
                .label(curve.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
            if let Some(d) = &curve.dashed {
                c.draw_series(DashedLineSeries::new(xy(d), 6, 4, col.stroke_width(1))).map_err(draw)?;
            }
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    })
}

/// Every op kind's latency percentile spectrum, p0 to the max, log-scaled: on the guest's clock
/// (solid) and the host's, which includes the pauses (dashed).
pub fn spectrum(r: &RunResult) -> Result<String, ChartError> {
    let curves: Vec<Curve> = r
        .ops
        .iter()
        .filter(|o| !o.spectrum.is_empty())
        .map(|o| Curve {
            name: o.op.clone(),
            solid: o.spectrum.iter().map(|p| (p.percentile, p.guest_us)).collect(),
            dashed: Some(o.spectrum.iter().map(|p| (p.percentile, p.host_us)).collect()),
        })
        .collect();
    spectrum_chart(
        "Latency percentile spectrum per op kind (solid: guest clock, dashed: host clock)",
        &curves,
    )
}

/// Per migration: QEMU's downtime (stacked by its parts where its tracepoints split it), the
/// guest-visible pause (heartbeat gap), the part of it the guest's clock stood still, and the
/// I/O stall.
pub fn downtime(r: &RunResult) -> Result<String, ChartError> {
    let rows: Vec<(String, [Option<f64>; 4])> = r
        .migrations
        .iter()
        .map(|m| {
            let w = r.migration_window(m.hop);
            let gap = w.and_then(|w| w.heartbeat_gap_ms);
            let frozen = match (gap, w.and_then(|w| w.guest_clock_gap_ms)) {
                (Some(g), Some(c)) => Some((g - c).max(0.0)),
                _ => None,
            };
            (
                format!("migration {}", m.hop),
                [m.downtime_ms.map(|d| d as f64), gap, frozen, w.and_then(|w| w.io_stall_ms)],
            )
        })
        .collect();
    let ymax = rows.iter().flat_map(|(_, v)| v.iter().flatten().copied()).fold(1.0, f64::max) * 1.15;
    let n = rows.len().max(1) as f64;
    let names =
        ["QEMU downtime", "heartbeat gap (guest-visible pause)", "guest clock stood still", "I/O stall"];
    let split = r.migrations.iter().any(|m| m.downtime_parts.is_some());
    let part_names: Vec<String> =
        miglab_model::PartName::ALL.iter().map(|p| format!("  {}", p.label())).collect();
    svg(960, if split { 400 } else { 320 }, |root| {
        let mut items: Vec<(&str, Swatch)> =
            names.iter().enumerate().map(|(k, n)| (*n, Swatch::Bar(PALETTE[k]))).collect();
        if split {
            items.extend(
                miglab_model::PartName::ALL
                    .iter()
                    .zip(&part_names)
                    .map(|(p, n)| (n.as_str(), Swatch::Bar(part_colour(*p)))),
            );
        }
        let plot = side_legend(root, 250, &items)?;
        let mut c = ChartBuilder::on(&plot)
            .caption("Downtime decomposition per migration", ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(0f64..n, 0f64..ymax)
            .map_err(draw)?;
        let fmt = category_labels(rows.iter().map(|(l, _)| l.clone()).collect());
        c.configure_mesh()
            .x_desc("migration")
            .y_desc("ms")
            .x_labels(rows.len().max(1) * 2 + 1)
            .x_label_formatter(&fmt)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .disable_x_mesh()
            .draw()
            .map_err(draw)?;
        for k in 0..names.len() {
            let col = PALETTE[k];
            let bars = rows.iter().enumerate().filter_map(|(i, (_, v))| {
                let val = v[k]?;
                let x0 = i as f64 + 0.1 + k as f64 * 0.2;
                Some(Rectangle::new([(x0, 0.0), (x0 + 0.18, val)], col.filled()))
            });
            c.draw_series(bars).map_err(draw)?;
            // QEMU's downtime split: its parts stacked over the plain bar, bottom up in order.
            if k == 0 {
                for (i, m) in r.migrations.iter().enumerate() {
                    let Some(p) = &m.downtime_parts else { continue };
                    let x0 = i as f64 + 0.1;
                    let mut y = 0.0;
                    let stack = p.parts.iter().map(|part| {
                        let bar = Rectangle::new(
                            [(x0, y), (x0 + 0.18, y + part.ms)],
                            part_colour(part.part).filled(),
                        );
                        y += part.ms;
                        bar
                    });
                    c.draw_series(stack.collect::<Vec<_>>()).map_err(draw)?;
                }
            }
            let values = rows.iter().enumerate().filter_map(|(i, (_, v))| {
                let val = v[k]?;
                let x0 = i as f64 + 0.1 + k as f64 * 0.2;
                Some(Text::new(format!("{val:.0}"), (x0, val + ymax * 0.01), ("sans-serif", 11)))
            });
            c.draw_series(values).map_err(draw)?;
        }
        Ok(())
    })
}

/// One lane per guest over the run: each migration's phases (setup, RAM, paused, device
/// state) on its guest's lane, the p99 of its I/O as a line above the lane, every fault shaded
/// across all lanes.
pub fn lanes(r: &RunResult) -> Result<String, ChartError> {
    let n = r.guests.len().max(1);
    let end_s = r.guests.iter().flat_map(|g| &g.series).map(|b| b.t_ms as f64 / 1e3).fold(1.0, f64::max);
    let end_s = r
        .guests
        .iter()
        .flat_map(|g| &g.migrations)
        .map(|m| (m.started_ms + m.wall_ms) / 1e3)
        .fold(end_s, f64::max);
    let height = (90 + 46 * n as u32).max(220);
    svg(960, height, |root| {
        let items = [
            ("setup", Swatch::Bar(SETUP)),
            ("RAM sent", Swatch::Bar(RAM)),
            ("guest paused", Swatch::Bar(PAUSE)),
            ("device state", Swatch::Bar(DEVICE)),
            ("fault in effect", Swatch::Area(FAULT)),
            ("I/O p99 (lane's scale)", Swatch::Line(P99, 1)),
        ];
        let plot = side_legend(root, 190, &items)?;
        let mut c = ChartBuilder::on(&plot)
            .caption("Each guest's migrations over the run", ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(70)
            .build_cartesian_2d(0f64..end_s * 1.02, 0f64..n as f64)
            .map_err(draw)?;
        let names: Vec<String> = r.guests.iter().rev().map(|g| format!("guest {}", g.guest)).collect();
        let fmt = category_labels(names);
        c.configure_mesh()
            .x_desc("run time (s)")
            .y_labels(2 * n + 1)
            .y_label_formatter(&fmt)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .disable_y_mesh()
            .draw()
            .map_err(draw)?;
        for f in &r.faults {
            if let Some(t) = f.injected_ms {
                let until = f.cleared_ms.unwrap_or(t + 100.0).max(t + 50.0);
                c.draw_series([Rectangle::new(
                    [(t / 1e3, 0.0), (until / 1e3, n as f64)],
                    FAULT.mix(0.15).filled(),
                )])
                .map_err(draw)?;
            }
        }
        // Guest 1 on top: lane k (from the bottom) is guest n - k.
        for (i, g) in r.guests.iter().enumerate() {
            let lane = (n - 1 - i) as f64;
            for m in &g.migrations {
                let bars = spans(m).into_iter().map(|(a, b, col)| {
                    Rectangle::new([(a / 1e3, lane + 0.2), (b.max(a) / 1e3, lane + 0.55)], col.filled())
                });
                c.draw_series(bars).map_err(draw)?;
            }
            let top = g.series.iter().filter_map(|b| b.p99_us).max().unwrap_or(0).max(1) as f64;
            let line = g.series.iter().filter_map(|b| {
                b.p99_us.map(|p| (b.t_ms as f64 / 1e3, lane + 0.6 + 0.35 * (p as f64 / top)))
            });
            c.draw_series(LineSeries::new(line, P99.stroke_width(1))).map_err(draw)?;
        }
        Ok(())
    })
}

/// Each guest's QEMU downtime and guest-visible pause per migration (a point each), against
/// the downtime limit: the spread over guests, and which guests missed it.
pub fn guest_downtimes(r: &RunResult) -> Result<String, ChartError> {
    let n = r.guests.len().max(1);
    let limit = r.fleet.as_ref().map(|f| f.downtime_limit_ms as f64);
    let points = |f: &dyn Fn(
        &miglab_model::MigrationRecord,
        Option<&miglab_model::Window>,
    ) -> Option<f64>|
     -> Vec<(f64, f64)> {
        r.guests
            .iter()
            .enumerate()
            .flat_map(|(i, g)| {
                g.migrations.iter().enumerate().filter_map(move |(k, m)| {
                    let w = g.windows.iter().find(|w| w.hop() == Some(m.hop));
                    f(m, w).map(|v| {
                        (i as f64 + 0.3 + 0.4 * (k as f64 + 0.5) / g.migrations.len().max(1) as f64, v)
                    })
                })
            })
            .collect()
    };
    let qemu = points(&|m, _| m.downtime_ms.map(|d| d as f64));
    let gap = points(&|_, w| w.and_then(|w| w.heartbeat_gap_ms));
    let ymax = qemu.iter().chain(&gap).map(|p| p.1).chain(limit).fold(1.0, f64::max) * 1.15;
    svg(960, 320, |root| {
        let items = [
            ("QEMU downtime", Swatch::Bar(PALETTE[0])),
            ("heartbeat gap", Swatch::Bar(PALETTE[1])),
            ("downtime limit", Swatch::Line(FAULT, 1)),
        ];
        let plot = side_legend(root, 190, &items)?;
        let mut c = ChartBuilder::on(&plot)
            .caption("Downtime per guest (a point per migration)", ("sans-serif", 17))
            .margin(12)
            .x_label_area_size(38)
            .y_label_area_size(62)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(draw)?;
        let fmt = category_labels(r.guests.iter().map(|g| format!("guest {}", g.guest)).collect());
        c.configure_mesh()
            .x_desc("guest")
            .y_desc("ms")
            .x_labels(2 * n + 1)
            .x_label_formatter(&fmt)
            .y_label_formatter(&|v| format!("{v:.0}"))
            .light_line_style(WHITE)
            .disable_x_mesh()
            .draw()
            .map_err(draw)?;
        if let Some(l) = limit {
            c.draw_series(LineSeries::new([(0.0, l), (n as f64, l)], FAULT.stroke_width(1))).map_err(draw)?;
        }
        c.draw_series(qemu.iter().map(|&(x, y)| Circle::new((x - 0.04, y), 4, PALETTE[0].filled())))
            .map_err(draw)?;
        c.draw_series(gap.iter().map(|&(x, y)| TriangleMarker::new((x + 0.04, y), 5, PALETTE[1].filled())))
            .map_err(draw)?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ops/s line of a run over 120 s was too low by the decimation factor: the merged
    /// buckets averaged their ops and the rate then divided by the wider spacing.
    #[test]
    fn decimation_keeps_the_worst_p99_and_the_rate() {
        let s: Vec<Bucket> = (0..3000)
            .map(|i| Bucket {
                t_ms: i * 100,
                ops: 10,
                p99_us: if i == 1234 { Some(9999) } else { Some(5) },
                verify_ops: u64::from(i >= 2990),
                ..Bucket::default()
            })
            .collect();
        let d = decimate(&s, 1000);
        assert!(d.len() <= 1000);
        // 10 ops per 100 ms is 100 ops/s however many buckets were merged.
        assert!(d.iter().all(|b| (b.ops as f64 / b.span_s() - 100.0).abs() < 1e-9), "{:?}", &d[..2]);
        assert_eq!(d.iter().filter_map(|b| b.p99_us).max(), Some(9999));
        // The verify pass ran in the last 10 buckets (299.0–300.0 s); merged by threes, the
        // chunk it begins in starts at 298.8 s.
        let (a, b) = verify_span(&s).expect("the verify pass");
        assert!((a - 299.0).abs() < 0.01 && (b - 300.0).abs() < 0.01, "{a} {b}");
        let (a, b) = verify_span(&d).expect("the verify pass, decimated");
        assert!((a - 298.8).abs() < 0.01 && (b - 300.0).abs() < 0.01, "{a} {b}");
    }

    #[test]
    fn the_nines_scale_puts_each_nine_one_apart() {
        assert_eq!(nines(0.0), 0.0);
        assert!((nines(99.0) - 2.0).abs() < 1e-9 && (nines(99.99) - 4.0).abs() < 1e-6);
        assert_eq!(nines_label(&3.0), "p99.9");
    }

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(micros(&100.0), "100 µs");
        assert_eq!(micros(&2500.0), "2.5 ms");
        assert_eq!(micros(&5_000_000.0), "5 s");
    }
}
