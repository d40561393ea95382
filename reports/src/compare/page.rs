//! `compare.html`: the table, what the sides differ in, and both sides' runs per metric.

use super::render::{all_cells, head, summary};
use super::{Call, Comparison, Row};
use crate::charts::{draw, svg, ChartError, PALETTE};
use crate::html::{esc, STYLE};
use plotters::prelude::*;
use std::fmt::Write as _;

/// Every run of both sides on one axis, the medians marked.
fn strip(r: &Row) -> Result<String, ChartError> {
    let all = r.base.iter().chain(&r.cand).copied();
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let pad = ((hi - lo) * 0.1).max(hi.abs() * 0.02).max(1e-3);
    let (lo, hi) = ((lo - pad).max(0.0), hi + pad);
    svg(760, 120, |root| {
        let mut c = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(80)
            .build_cartesian_2d(lo..hi, 0f64..2f64)
            .map_err(draw)?;
        let names = ["candidate", "baseline"];
        c.configure_mesh()
            .x_desc(format!("{} ({})", r.metric.key, r.metric.unit))
            .y_labels(5)
            .y_label_formatter(&|y| {
                let i = (y * 2.0).round() as i64;
                match i {
                    1 => names[1].into(),
                    3 => names[0].into(),
                    _ => String::new(),
                }
            })
            .disable_y_mesh()
            .light_line_style(WHITE)
            .draw()
            .map_err(draw)?;
        for (row, (vals, col)) in [(&r.base, PALETTE[0]), (&r.cand, PALETTE[1])].into_iter().enumerate() {
            let y = 0.5 + row as f64;
            let n = vals.len().max(1) as f64;
            c.draw_series(vals.iter().enumerate().map(|(i, v)| {
                // A little vertical spread so that equal values stay visible.
                Circle::new((*v, y - 0.25 + 0.5 * i as f64 / n), 4, col.mix(0.8).filled())
            }))
            .map_err(draw)?;
            let m = crate::stats::median(vals);
            if m.is_finite() {
                c.draw_series(std::iter::once(PathElement::new(
                    vec![(m, y - 0.4), (m, y + 0.4)],
                    col.stroke_width(2),
                )))
                .map_err(draw)?;
            }
        }
        Ok(())
    })
}

/// The page.
pub fn page(c: &Comparison, base: &str, cand: &str) -> Result<String, ChartError> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>miglab compare</title><style>{STYLE}</style></head><body><h1>miglab compare</h1><p class=\"sub\">baseline {} · candidate {}</p>",
        esc(base),
        esc(cand)
    );
    let verdict = if c.findings() > 0 {
        ("bad", format!("{} new failure(s), {} regression(s)", c.new_failures(), c.regressions()))
    } else if c.inconclusive() > 0 {
        ("warn", format!("no regression called; {} inconclusive: these runs cannot tell", c.inconclusive()))
    } else {
        ("ok", "no regression".to_string())
    };
    let _ = write!(h, "<p id=\"verdict\" class=\"{}\">{}</p>", verdict.0, esc(&verdict.1));
    h.push_str("<ul>");
    for l in summary(c).lines() {
        let _ = write!(h, "<li>{}</li>", esc(l));
    }
    h.push_str("</ul><h2>Outcomes and metrics</h2><table id=\"calls\"><tr>");
    for (i, t) in head(c).iter().enumerate() {
        let _ = write!(h, "<th{}>{}</th>", if i < 2 { " class=\"l\"" } else { "" }, esc(t));
    }
    h.push_str("<th class=\"l\">why</th></tr>");
    for (cl, call, why) in all_cells(c) {
        let class = match call {
            Call::Regression | Call::NewFailures => "bad",
            Call::Improvement => "ok",
            Call::Inconclusive => "warn",
            Call::Unchanged => "",
        };
        h.push_str("<tr>");
        for (i, cell) in cl.iter().enumerate() {
            let cls = match (i, i == 6) {
                (_, true) => format!(" class=\"{class}\""),
                (0 | 1, _) => " class=\"l\"".into(),
                _ => String::new(),
            };
            let _ = write!(h, "<td{cls}>{}</td>", esc(cell));
        }
        let _ = write!(h, "<td class=\"l\">{}</td></tr>", esc(&why));
    }
    h.push_str("</table><h2>Every run</h2><p class=\"sub\">One dot per run; the bar is the median.</p>");
    let mut group = "";
    for r in &c.rows {
        if r.group != group {
            group = &r.group;
            let _ = write!(h, "<h3>{}</h3>", esc(group));
        }
        let _ = write!(h, "<div class=\"strip\">{}</div>", strip(r)?);
    }
    h.push_str("</body></html>\n");
    Ok(h)
}
