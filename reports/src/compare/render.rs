//! A comparison written out: the console's text, Markdown for a pull request, JUnit for CI.
//! The HTML page is `page`'s.

use super::{listed, Call, Comparison, OutcomeRow, Row};
use crate::html::esc;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub(super) fn num(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.is_infinite() {
        if v > 0.0 { "∞" } else { "−∞" }.into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

pub(super) fn pct(v: f64) -> String {
    if v.is_nan() {
        "—".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+∞" } else { "−∞" }.into()
    } else {
        format!("{:+.1} %", v * 100.0)
    }
}

fn p_text(p: f64) -> String {
    if p < 0.001 {
        "<0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// The table's cells of a row.
fn cells(r: &Row) -> Vec<String> {
    vec![
        r.group.clone(),
        format!("{} ({})", r.metric.key, r.metric.unit),
        format!("{} (n={})", num(r.base_median), r.base.len()),
        format!("{} (n={})", num(r.cand_median), r.cand.len()),
        format!("{} [{}, {}]", pct(r.change), pct(r.ci.0), pct(r.ci.1)),
        p_text(r.p),
        r.call.as_str().into(),
    ]
}

/// The table's cells of an outcome row.
fn outcome_cells(r: &OutcomeRow) -> Vec<String> {
    vec![
        r.group.clone(),
        "outcomes (runs)".into(),
        r.base.to_string(),
        r.cand.to_string(),
        format!("failed {}/{} → {}/{}", r.base.bad(), r.base.total(), r.cand.bad(), r.cand.total()),
        p_text(r.p),
        r.call.as_str().into(),
    ]
}

pub(super) fn head(c: &Comparison) -> [String; 7] {
    [
        "scenario".into(),
        "metric".into(),
        "baseline".into(),
        "candidate".into(),
        format!("shift [{} % CI]", fmt_level(c.options.alpha)),
        "p".into(),
        "call".into(),
    ]
}

/// 1 − α as a percentage: 99, 95, 99.9.
fn fmt_level(alpha: f64) -> String {
    let l = (1.0 - alpha) * 100.0;
    if (l - l.round()).abs() < 1e-9 {
        format!("{l:.0}")
    } else {
        format!("{l}")
    }
}

/// A line of the table: its cells, its call and why.
type Line = (Vec<String>, Call, String);

/// Every row's cells, the outcomes first in each group.
pub(super) fn all_cells(c: &Comparison) -> Vec<Line> {
    let mut out = Vec::new();
    for o in &c.outcomes {
        out.push((outcome_cells(o), o.call, o.why.clone()));
        for r in c.rows.iter().filter(|r| r.group == o.group) {
            out.push((cells(r), r.call, r.why.clone()));
        }
    }
    out
}

/// A plain-text table for the terminal, and what was not called and why.
pub fn text(c: &Comparison) -> String {
    let head = head(c);
    let rows = all_cells(c);
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            rows.iter().map(|r| r.0[i].chars().count()).chain([head[i].chars().count()]).max().unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    let line = |cells: &[String]| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(s, "{}", line(&head));
    for r in &rows {
        let _ = writeln!(s, "{}", line(&r.0));
    }
    let notes: Vec<&Line> =
        rows.iter().filter(|r| matches!(r.1, Call::Inconclusive | Call::NewFailures)).collect();
    if !notes.is_empty() {
        s.push('\n');
        for r in notes {
            let _ = writeln!(s, "{} {}: {}: {}", r.0[0], r.0[1], r.1.as_str(), r.2);
        }
    }
    s.push_str(&summary(c));
    s
}

pub(super) fn summary(c: &Comparison) -> String {
    let mut s = String::new();
    for d in &c.differences {
        let how = if c.options.variables.contains(&d.what) {
            "declared with --variable"
        } else {
            "allowed by --allow-different"
        };
        let _ = writeln!(
            s,
            "the sides differ in {} ({how}): baseline {} · candidate {}",
            d.what,
            listed(&d.base),
            listed(&d.cand)
        );
    }
    for g in &c.unmatched {
        let _ = writeln!(s, "on one side only, not compared: {g}");
    }
    if !c.skipped.is_empty() {
        let _ = writeln!(s, "left out (unreadable): {} file(s)", c.skipped.len());
    }
    let _ = writeln!(
        s,
        "{} new failure(s), {} regression(s), {} improvement(s), {} inconclusive in {} group(s) and {} metric(s); a change needs p < {} and a Hodges–Lehmann shift beyond the band (the noise threshold, {:.0} % of the baseline median, or the metric's floor){}; unchanged needs the shift's {} % interval inside the band",
        c.new_failures(),
        c.regressions(),
        c.improvements(),
        c.inconclusive(),
        c.outcomes.len(),
        c.rows.len(),
        c.options.alpha,
        c.options.threshold * 100.0,
        if c.options.family { ", in two groups or more (family rule)" } else { "" },
        fmt_level(c.options.alpha),
    );
    s
}

/// The same as markdown.
pub fn markdown(c: &Comparison) -> String {
    let mut s = String::from("# miglab compare\n\n");
    let head = head(c);
    let _ = writeln!(s, "| {} | why |", head.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(head.len() + 1));
    for (mut cl, call, why) in all_cells(c) {
        if call.fails() {
            cl[6] = format!("**{}**", cl[6]);
        }
        let _ = writeln!(s, "| {} | {} |", cl.join(" | "), why.replace('|', "\\|"));
    }
    s.push('\n');
    for l in summary(c).lines() {
        let _ = writeln!(s, "* {l}");
    }
    s
}

/// JUnit XML: a test suite per scenario, a test case for its outcomes and one per metric; a
/// regression or new failures is a failure, an inconclusive call is skipped (not a pass).
pub fn junit(c: &Comparison) -> String {
    let rows = all_cells(c);
    let mut groups: BTreeMap<&str, Vec<&Line>> = BTreeMap::new();
    for r in &rows {
        groups.entry(&r.0[0]).or_default().push(r);
    }
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        s,
        "<testsuites name=\"miglab compare\" tests=\"{}\" failures=\"{}\" errors=\"0\" time=\"0\">",
        rows.len(),
        c.findings()
    );
    for (i, (g, rows)) in groups.iter().enumerate() {
        let failures = rows.iter().filter(|r| r.1.fails()).count();
        let skipped = rows.iter().filter(|r| r.1 == Call::Inconclusive).count();
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" id=\"{i}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"0\">",
            esc(g),
            rows.len()
        );
        for (cl, call, why) in rows.iter().map(|r| (&r.0, r.1, &r.2)) {
            let detail = format!("baseline {}, candidate {}, shift {}, p = {}", cl[2], cl[3], cl[4], cl[5]);
            let name = cl[1].split(' ').next().unwrap_or_default();
            let _ = write!(
                s,
                "    <testcase classname=\"miglab.compare.{}\" name=\"{}\" time=\"0\"",
                esc(&g.replace(' ', "_")),
                esc(name)
            );
            let full = if why.is_empty() { detail.clone() } else { format!("{detail} ({why})") };
            match call {
                Call::Regression | Call::NewFailures => {
                    let kind = if call == Call::Regression { "regression" } else { "new-failures" };
                    let _ = writeln!(
                        s,
                        ">\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n    </testcase>",
                        esc(&full),
                        esc(&full)
                    );
                }
                Call::Inconclusive => {
                    let _ = writeln!(
                        s,
                        ">\n      <skipped message=\"inconclusive: {}\"/>\n    </testcase>",
                        esc(&full)
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        ">\n      <system-out>{}: {}</system-out>\n    </testcase>",
                        call.as_str(),
                        esc(&full)
                    );
                }
            }
        }
        s.push_str("  </testsuite>\n");
    }
    s.push_str("</testsuites>\n");
    s
}
