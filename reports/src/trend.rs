//! The nightly trend: each scenario's headline metrics night by night (median and range of
//! the night's runs), with change points found by E-divisive on the per-night medians.

use crate::charts::{draw, legend, svg, ChartError, PALETTE};
use crate::compare::{headline, metric, Side};
use crate::html::{esc, table, STYLE};
use crate::stats;
use plotters::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// A night: its name (`2026-12-01-1a2b3c4d5e6f`) and its runs.
#[derive(Debug, Clone)]
pub struct Night {
    pub name: String,
    pub side: Side,
}

/// One metric of one scenario across the nights that have it.
#[derive(Debug, Clone)]
pub struct Series {
    pub group: String,
    pub metric: String,
    pub unit: &'static str,
    /// (night index, median, min, max, runs)
    pub points: Vec<(usize, f64, f64, f64, usize)>,
    /// Night indices where a new regime starts.
    pub changes: Vec<usize>,
}

/// A regime lasts at least this many nights.
const MIN_NIGHTS: usize = 3;

pub fn series(nights: &[Night], seed: u64) -> Vec<Series> {
    let mut per: BTreeMap<(String, String), BTreeMap<usize, Vec<f64>>> = BTreeMap::new();
    for (i, n) in nights.iter().enumerate() {
        for r in &n.side.runs {
            for (k, v) in headline(r) {
                per.entry((crate::compare::group(r), k)).or_default().entry(i).or_default().push(v);
            }
        }
    }
    per.into_iter()
        .map(|((group, key), by_night)| {
            let points: Vec<(usize, f64, f64, f64, usize)> = by_night
                .into_iter()
                .map(|(i, v)| {
                    let (lo, hi) =
                        v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(*x), b.max(*x)));
                    (i, stats::median(&v), lo, hi, v.len())
                })
                .collect();
            let medians: Vec<f64> = points.iter().map(|p| p.1).collect();
            let changes = stats::change_points(&medians, MIN_NIGHTS, 0.05, seed)
                .into_iter()
                .map(|k| points[k].0)
                .collect();
            Series { unit: metric(&key).unit, group, metric: key, points, changes }
        })
        .collect()
}

fn chart(s: &Series, nights: &[Night]) -> Result<String, ChartError> {
    let ymax = s.points.iter().map(|p| p.3).fold(0.0, f64::max) * 1.15 + 1e-9;
    let n = nights.len().max(2) as f64;
    svg(960, 260, |root| {
        let mut c = ChartBuilder::on(root)
            .caption(format!("{} — {} ({})", s.group, s.metric, s.unit), ("sans-serif", 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(62)
            .build_cartesian_2d(-0.5f64..n - 0.5, 0f64..ymax)
            .map_err(draw)?;
        // `2026-12-01T0428-1c5040558b4f` → `12-01T0428-1c50`: the day, the hour and the commit.
        let names: Vec<String> = nights.iter().map(|n| n.name.chars().skip(5).take(15).collect()).collect();
        c.configure_mesh()
            .x_desc("night")
            .y_desc(s.unit)
            .x_labels(nights.len().min(12))
            .x_label_formatter(&|x| names.get(x.round().max(0.0) as usize).cloned().unwrap_or_default())
            .light_line_style(WHITE)
            .draw()
            .map_err(draw)?;
        let col = PALETTE[0];
        c.draw_series(s.points.iter().map(|p| {
            PathElement::new(vec![(p.0 as f64, p.2), (p.0 as f64, p.3)], col.mix(0.5).stroke_width(2))
        }))
        .map_err(draw)?
        .label("min–max of the night's runs")
        .legend(move |(x, y)| PathElement::new(vec![(x, y - 5), (x, y + 5)], col.mix(0.5).stroke_width(2)));
        c.draw_series(LineSeries::new(s.points.iter().map(|p| (p.0 as f64, p.1)), col.stroke_width(2)))
            .map_err(draw)?
            .label("median")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], col.stroke_width(2)));
        c.draw_series(s.points.iter().map(|p| Circle::new((p.0 as f64, p.1), 3, col.filled())))
            .map_err(draw)?;
        let red = PALETTE[5];
        if !s.changes.is_empty() {
            c.draw_series(s.changes.iter().map(|&k| {
                PathElement::new(vec![(k as f64 - 0.5, 0.0), (k as f64 - 0.5, ymax)], red.stroke_width(2))
            }))
            .map_err(draw)?
            .label("change point")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x + 8, y - 6), (x + 8, y + 6)], red.stroke_width(2))
            });
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)
    })
}

/// `trend.html`.
pub fn page(nights: &[Night], seed: u64) -> Result<(String, Vec<Series>), ChartError> {
    let all = series(nights, seed);
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>miglab nightly trend</title><style>{STYLE}</style></head><body><h1>miglab nightly trend</h1><p class=\"sub\">{} nights, {} to {}; per night the median and range of its runs; change points by E-divisive on the per-night medians (α = 0.05, regimes of {MIN_NIGHTS} nights or more)</p>",
        nights.len(),
        esc(nights.first().map(|n| n.name.as_str()).unwrap_or("—")),
        esc(nights.last().map(|n| n.name.as_str()).unwrap_or("—")),
    );
    let rows: Vec<Vec<String>> = all
        .iter()
        .flat_map(|s| {
            s.changes.iter().map(move |&k| {
                let before: Vec<f64> = s.points.iter().filter(|p| p.0 < k).map(|p| p.1).collect();
                let after: Vec<f64> = s.points.iter().filter(|p| p.0 >= k).map(|p| p.1).collect();
                let (b, a) = (stats::median(&before), stats::median(&after));
                vec![
                    s.group.clone(),
                    s.metric.clone(),
                    nights[k].name.clone(),
                    format!("{b:.1} → {a:.1} {} ({:+.1} %)", s.unit, (a / b - 1.0) * 100.0),
                ]
            })
        })
        .collect();
    h.push_str("<h2>Change points</h2>");
    if rows.is_empty() {
        h.push_str("<p id=\"changes\">none</p>");
    } else {
        h.push_str(&table(
            &["scenario", "metric", "first night of the new regime", "median before → after"],
            &rows,
        ));
    }
    h.push_str("<h2>Nights</h2>");
    let groups: BTreeSet<&String> = all.iter().map(|s| &s.group).collect();
    h.push_str(&table(
        &["night", "runs", "left out (not completed)"],
        &nights
            .iter()
            .map(|n| vec![n.name.clone(), n.side.runs.len().to_string(), n.side.skipped.len().to_string()])
            .collect::<Vec<_>>(),
    ));
    for g in groups {
        let _ = write!(h, "<h2>{}</h2>", esc(g));
        for s in all.iter().filter(|s| &s.group == g) {
            let _ = write!(h, "<div class=\"trend\">{}</div>", chart(s, nights)?);
        }
    }
    h.push_str("</body></html>\n");
    Ok((h, all))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MigrationRecord, Outcome, RunResult, RunStatus};

    fn night(name: &str, total: f64) -> Night {
        let runs = (0..5)
            .map(|i| {
                let mut r = RunResult::new("smoke", i + 1, 1);
                r.status = RunStatus::Completed;
                let mut m = MigrationRecord::sample(Outcome::Completed, 1000.0);
                m.total_time_ms = Some((total * (1.0 + 0.01 * i as f64)) as u64);
                r.migrations.push(m);
                r
            })
            .collect();
        Night { name: name.into(), side: Side { runs, skipped: Vec::new() } }
    }

    #[test]
    fn a_step_between_nights_is_one_change_point_at_the_first_night_after_it() {
        let nights: Vec<Night> = (0..12)
            .map(|i| {
                night(
                    &format!("2026-11-{:02}-abc", i + 1),
                    if i < 7 { 1000.0 + (i % 3) as f64 * 8.0 } else { 1400.0 },
                )
            })
            .collect();
        let s = series(&nights, 1);
        let total = s.iter().find(|s| s.metric == "total_ms").expect("total_ms");
        assert_eq!(total.points.len(), 12);
        assert_eq!(total.changes, vec![7]);
        charts_or_skip(&nights);
    }

    fn charts_or_skip(nights: &[Night]) {
        match page(nights, 1) {
            Ok((h, _)) => {
                assert!(h.contains("2026-11-08-abc") && h.contains("<svg"));
            }
            Err(ChartError::Font(_)) if std::env::var_os("MIGLAB_REQUIRE_ALL").is_none() => {
                eprintln!("SKIPPED: no font for the charts")
            }
            Err(e) => panic!("{e}"),
        }
    }
}
