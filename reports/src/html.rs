//! `report.html`: one self-contained page per run, rendered from `result.json` alone. Charts are
//! inline SVG, styles inline, no script and no reference to anything outside the file; the raw
//! result is embedded, so the one file carries everything.

use crate::charts::{self, ChartError};
use miglab_model::migration::Outcome;
use miglab_model::result::{RunResult, RunStatus};
use std::fmt::Write as _;

/// Escapes text for HTML.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Escapes text for an element's content (not an attribute), where quotes may stay as they
/// are: the embedded result.json stays about its own size.
pub fn esc_text(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + s.len() / 16);
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            c => o.push(c),
        }
    }
    o
}

pub const STYLE: &str = "body{font-family:sans-serif;margin:24px auto;max-width:1000px;color:#222}\
h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}\
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}\
th{background:#f4f4f4}td.l,th.l{text-align:left}.ok{color:#2a7d2a;font-weight:bold}.bad{color:#b3261e;font-weight:bold}\
.warn{color:#a35d00;font-weight:bold}pre{background:#f7f7f7;padding:8px;font-size:12px;overflow:auto;max-height:420px}\
.sub{color:#666;font-size:13px}svg{max-width:100%;height:auto}";

fn opt(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "—".into())
}

/// A table from a header and rows of cells (the first column left-aligned).
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut t = String::from("<table><tr>");
    for (i, h) in head.iter().enumerate() {
        let _ = write!(t, "<th{}>{}</th>", if i == 0 { " class=\"l\"" } else { "" }, esc(h));
    }
    t.push_str("</tr>");
    for r in rows {
        t.push_str("<tr>");
        for (i, c) in r.iter().enumerate() {
            let _ = write!(t, "<td{}>{}</td>", if i == 0 { " class=\"l\"" } else { "" }, esc(c));
        }
        t.push_str("</tr>");
    }
    t.push_str("</table>");
    t
}

/// A latency cell: "—" when no op of the kind succeeded (there is no latency, not one of 0).
fn us(count: u64, v: u64) -> String {
    if count == 0 {
        "—".into()
    } else {
        v.to_string()
    }
}

fn status_class(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Completed => "ok",
        RunStatus::Failed => "bad",
        RunStatus::Aborted => "warn",
    }
}

/// The page's headline and its colour: the outcome first, then what the run made of it.
pub fn headline(r: &RunResult) -> (String, &'static str) {
    use miglab_model::outcome::RunOutcome;
    let status = match r.status {
        RunStatus::Completed => "",
        RunStatus::Failed => "run failed",
        RunStatus::Aborted => "run aborted",
    };
    match r.outcome {
        None => (format!("{:?}", r.status).to_lowercase(), status_class(r.status)),
        Some(o) => {
            let class = match (r.status, o) {
                (RunStatus::Completed, RunOutcome::Completed) => "ok",
                (RunStatus::Completed, _) | (RunStatus::Aborted, _) => "warn",
                (RunStatus::Failed, _) => "bad",
            };
            let text = match (r.status, o, &r.expected) {
                (RunStatus::Completed, RunOutcome::Completed, _) => o.to_string(),
                (RunStatus::Completed, _, Some(_)) => format!("{o} (expected)"),
                (RunStatus::Completed, _, None) => o.to_string(),
                _ => format!("{o} — {status}"),
            };
            (text, class)
        }
    }
}

/// The whole page of `r`: each section in turn.
pub fn run_report(r: &RunResult) -> Result<String, ChartError> {
    let mut h = String::new();
    outcome_section(&mut h, r);
    guests_section(&mut h, r)?;
    each_guest(&mut h, r, true)?;
    faults_section(&mut h, r);
    provenance_section(&mut h, r);
    Ok(h)
}

/// Every guest's own sections (figures, convergence and memory, jobs, charts, verification),
/// each under its guest's heading when there are several: guest 1's alone hid the others'
/// lost pages and blocks.
fn each_guest(h: &mut String, r: &RunResult, charts: bool) -> Result<(), ChartError> {
    for (g, v) in crate::fleet::views(r) {
        if let Some(g) = g {
            let vm = r.guests.iter().find(|x| x.guest == g).map(|x| x.vm.as_str()).unwrap_or_default();
            let _ = write!(
                h,
                "<h2 class=\"guest\" id=\"guest-{g}\">Guest {g} <span class=\"sub\">{}</span></h2>",
                esc(vm)
            );
        }
        figures_section(h, &v);
        convergence_section(h, &v);
        jobs_section(h, &v);
        if charts {
            over_time_section(h, &v)?;
        }
        verification_section(h, &v);
    }
    Ok(())
}

/// The page's head, the headline and the outcome with every problem.
fn outcome_section(h: &mut String, r: &RunResult) {
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>miglab: {} #{}</title><style>{STYLE}</style></head><body>",
        esc(&r.scenario),
        r.repetition
    );
    // The headline is what happened (the outcome), and whether that was what the scenario
    // expected (the status): a completed-degraded run with a 5 s stall is not a green
    // "Completed".
    let (what, class) = headline(r);
    let _ = write!(
        h,
        "<h1>{} #{} — <span id=\"headline\" class=\"{}\">{}</span></h1><p class=\"sub\">started {} · {:.1} s · seed {} · nonce {} · {} on {}</p>",
        esc(&r.scenario),
        r.repetition,
        class,
        esc(&what),
        esc(&r.clock.started_at),
        r.duration_ms / 1000.0,
        r.seed,
        esc(&r.nonce),
        esc(&r.provenance.accelerator),
        esc(r.provenance.hostname.as_deref().unwrap_or("?"))
    );
    h.push_str("<h2>Outcome</h2>");
    let outcome = r.outcome.map(|o| o.to_string()).unwrap_or_else(|| "—".into());
    let expected = r.expected.as_ref().map(|e| format!(" (expected: {e})")).unwrap_or_default();
    let _ = write!(
        h,
        "<p><b>{}</b>{}{}</p>",
        esc(&outcome),
        esc(&expected),
        esc(&if r.outcome_why.is_empty() {
            String::new()
        } else {
            format!(": {}", r.outcome_why.join("; "))
        })
    );
    if !r.problems.is_empty() || r.error.is_some() {
        h.push_str("<ul>");
        for p in r.problems.iter().chain(r.error.iter()) {
            let _ = write!(h, "<li class=\"bad\">{}</li>", esc(p));
        }
        h.push_str("</ul>");
    }
}

/// A run of several guests: what they add up to (each host's evacuation, the spread of
/// downtime and of each phase), each guest's own line, one lane per guest over the run, and
/// each guest's downtime against the limit. The sections after it are guest 1's.
fn guests_section(h: &mut String, r: &RunResult) -> Result<(), ChartError> {
    let Some(f) = &r.fleet else { return Ok(()) };
    let _ = write!(
        h,
        "<h2 id=\"guests\">Guests</h2><p>{} guests, {} migrating at once.</p>",
        f.guests, f.parallel
    );
    let evac: Vec<Vec<String>> = f
        .evacuations
        .iter()
        .map(|e| {
            vec![
                format!("{} {} → {}", e.hop, e.from, e.to),
                format!("{} of {}", e.completed, e.guests),
                format!("{:.0}", e.evacuation_ms),
            ]
        })
        .collect();
    h.push_str(&table(
        &["migration", "guests completed", "evacuation ms (first migrate → last guest running)"],
        &evac,
    ));
    let spread = |name: &str, s: &miglab_model::Spread| {
        vec![
            name.to_string(),
            s.n.to_string(),
            format!("{:.0}", s.min),
            format!("{:.0}", s.p50),
            format!("{:.0}", s.p90),
            format!("{:.0}", s.p99),
            format!("{:.0}", s.max),
        ]
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Some(d) = &f.qemu_downtime_ms {
        rows.push(spread("QEMU downtime", d));
    }
    for (name, s) in &f.phases {
        rows.push(spread(&format!("phase: {name}"), s));
    }
    if let Some(s) = &f.heartbeat_gap_ms {
        rows.push(spread("heartbeat gap", s));
    }
    if let Some(s) = &f.io_stall_ms {
        rows.push(spread("I/O stall", s));
    }
    h.push_str(&table(&["across guests' migrations (ms)", "n", "min", "p50", "p90", "p99", "max"], &rows));
    let _ = write!(
        h,
        "<p>{} completed migration(s) over the {} ms downtime limit.</p>",
        f.over_limit, f.downtime_limit_ms
    );
    let per: Vec<Vec<String>> = r
        .guests
        .iter()
        .map(|g| {
            let hops: Vec<String> = g
                .migrations
                .iter()
                .map(|m| {
                    let w = g.windows.iter().find(|w| w.hop() == Some(m.hop));
                    format!(
                        "#{}: {} / {} / {}",
                        m.hop,
                        opt(m.downtime_ms.map(|d| d as f64)),
                        opt(w.and_then(|w| w.heartbeat_gap_ms)),
                        opt(w.and_then(|w| w.io_stall_ms))
                    )
                })
                .collect();
            let ops: u64 = g.ops.iter().filter(|o| o.op != "verify").map(|o| o.count).sum();
            let failed: u64 = g.ops.iter().filter(|o| o.op != "verify").map(|o| o.failed).sum();
            let p99 = g.ops.iter().filter(|o| o.op != "verify").map(|o| o.guest.p99_us).max().unwrap_or(0);
            let verify = g
                .verification
                .as_ref()
                .map(|v| format!("{} blocks: {} mismatched, {} missing", v.blocks, v.mismatched, v.missing))
                .unwrap_or_else(|| "—".into());
            vec![
                format!("{} ({})", g.guest, g.vm),
                g.workload.get("kind").and_then(|k| k.as_str()).unwrap_or("?").to_string(),
                g.outcome.map(|o| o.to_string()).unwrap_or_else(|| "—".into()),
                hops.join("; "),
                format!("{ops} ({failed} failed), p99 {}", us(ops, p99)),
                verify,
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "guest",
            "workload",
            "outcome",
            "per migration: QEMU downtime / heartbeat gap / I/O stall ms",
            "ops",
            "verified",
        ],
        &per,
    ));
    h.push_str(&charts::lanes(r)?);
    h.push_str(&charts::guest_downtimes(r)?);
    h.push_str("<p class=\"sub\">The sections below are guest 1's; every guest's figures are in <code>result.json</code> (<code>guests</code>), and each guest's series in <code>timeline-g&lt;N&gt;.csv</code>.</p>");
    Ok(())
}

/// Each migration's figures and each op kind's.
fn figures_section(h: &mut String, r: &RunResult) {
    h.push_str("<h2>Figures</h2>");
    let mig: Vec<Vec<String>> = r
        .migrations
        .iter()
        .map(|m| {
            let w = r.migration_window(m.hop);
            let outcome = match &m.outcome {
                Outcome::Completed => "completed".to_string(),
                Outcome::Failed { error, .. } => format!("failed: {error}"),
                Outcome::TimedOut { after_ms, .. } => format!("timed out after {after_ms} ms"),
                Outcome::Unsupported { error } => format!("refused: {error}"),
                Outcome::NotConverged { after_ms, passes, .. } => {
                    format!("not converged after {after_ms} ms ({passes} passes)")
                }
            };
            vec![
                format!("{}{} {} → {}", m.hop, if m.follow_up { " (follow-up)" } else { "" }, m.from, m.to),
                outcome,
                opt(m.downtime_ms.map(|d| d as f64)),
                opt(w.and_then(|w| w.heartbeat_gap_ms)),
                opt(w.and_then(|w| w.guest_clock_gap_ms)),
                opt(w.and_then(|w| w.io_stall_ms)),
                opt(m.total_time_ms.map(|d| d as f64)),
                m.transferred_bytes.map(|b| format!("{:.1}", b as f64 / 1e6)).unwrap_or_else(|| "—".into()),
                m.phases.passes.to_string(),
                opt(m.longest_qmp_wait_ms),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "migration",
            "outcome",
            "QEMU downtime ms",
            "heartbeat gap ms",
            "guest clock gap ms",
            "I/O stall ms",
            "total ms",
            "MB sent",
            "dirty-log syncs (QEMU's pass events)",
            "longest QMP wait ms",
        ],
        &mig,
    ));
    switch_over_table(h, r);
    let ops: Vec<Vec<String>> = r
        .ops
        .iter()
        .map(|o| {
            vec![
                o.op.clone(),
                o.count.to_string(),
                if o.errors.is_empty() {
                    o.failed.to_string()
                } else {
                    let e: Vec<String> = o.errors.iter().map(|(k, n)| format!("{k} ×{n}")).collect();
                    format!("{} ({})", o.failed, e.join(", "))
                },
                us(o.guest.count, o.guest.p50_us),
                us(o.guest.count, o.guest.p99_us),
                us(o.guest.count, o.guest.max_us),
                us(o.host.count, o.host.p99_us),
                us(o.host.count, o.host.max_us),
                o.host_unmapped.to_string(),
            ]
        })
        .collect();
    h.push_str(&table(
        &[
            "op",
            "successful",
            "failed",
            "guest p50 µs",
            "guest p99 µs",
            "guest max µs",
            "host p99 µs",
            "host max µs",
            "unmapped to host clock",
        ],
        &ops,
    ));
    if let Some(d) = r.stream.longest_io_stall_ms {
        let _ = write!(
            h,
            "<p class=\"sub\">Longest I/O stall of the run: {d:.0} ms from {:.0} ms. Record stream: {} heartbeats ({} missing), {} bad frames, {} records dropped.</p>",
            r.stream.longest_io_stall_start_ms.unwrap_or_default(),
            r.stream.heartbeats,
            r.stream.heartbeats_missing,
            r.stream.bad_frames,
            r.stream.records_dropped.map_or("an unknown number of (the agent never reported)".into(), |d| d.to_string())
        );
    }
}

/// A job file's jobs, each apart, and its reporting groups (fio's `group_reporting`).
fn jobs_section(h: &mut String, r: &RunResult) {
    if r.jobs.is_empty() {
        return;
    }
    h.push_str("<h2>Jobs</h2>");
    let rows = |list: &[miglab_model::JobSummary]| -> Vec<Vec<String>> {
        list.iter()
            .flat_map(|j| {
                j.ops.iter().map(move |o| {
                    vec![
                        j.name.clone(),
                        j.description.clone(),
                        j.group.to_string(),
                        j.clones.to_string(),
                        o.op.clone(),
                        o.count.to_string(),
                        o.failed.to_string(),
                        o.mismatches.to_string(),
                        format!("{:.1}", o.bytes as f64 / 1e6),
                        us(o.guest.count, o.guest.p50_us),
                        us(o.guest.count, o.guest.p99_us),
                        us(o.guest.count, o.guest.max_us),
                    ]
                })
            })
            .collect()
    };
    let head = [
        "job",
        "description",
        "group",
        "clones",
        "op",
        "successful",
        "failed",
        "mismatched",
        "MB",
        "guest p50 µs",
        "guest p99 µs",
        "guest max µs",
    ];
    h.push_str(&table(&head, &rows(&r.jobs)));
    if r.groups.len() > 1 {
        h.push_str("<p class=\"sub\">By reporting group (a new group at stonewall or new_group), as fio's group_reporting sums them:</p>");
        h.push_str(&table(&head, &rows(&r.groups)));
    }
}

/// The charts: the whole run, each window zoomed, the latency spectrum, the downtime.
fn over_time_section(h: &mut String, r: &RunResult) -> Result<(), ChartError> {
    h.push_str("<h2>Over time</h2>");
    h.push_str(&charts::timeline(r)?);
    // Each migration and fault window on its own axis: a long verify pass would squeeze
    // them into a sliver of the whole run's chart.
    for w in &r.windows {
        let tail = w.recovered_after_ms.unwrap_or(0.0).min(10_000.0);
        let (a, b) = ((w.start_ms / 1000.0 - 1.0).max(0.0), (w.end_ms + tail) / 1000.0 + 1.0);
        let _ = write!(h, "<h3 class=\"zoom\">{} (zoomed: {:.1}–{:.1} s)</h3>", esc(&w.name), a, b);
        h.push_str(&charts::zoom(r, a, b, &format!("{} — throughput and p99", w.name))?);
    }
    h.push_str("<h2>Latency spectrum</h2>");
    h.push_str(&charts::spectrum(r)?);
    if !r.migrations.is_empty() {
        h.push_str("<h2>Downtime decomposition</h2>");
        h.push_str(&charts::downtime(r)?);
        downtime_parts_table(h, r);
    }

    Ok(())
}

/// Each fault: when, on what, its undo and its effect.
fn faults_section(h: &mut String, r: &RunResult) {
    if !r.faults.is_empty() {
        h.push_str("<h2>Faults</h2>");
        let rows: Vec<Vec<String>> = r
            .faults
            .iter()
            .map(|f| {
                let name = format!("fault {}", f.index + 1);
                let w = r.windows.iter().find(|w| w.name == name);
                // Several guests: each guest's window of the fault, so whose I/O stalled shows.
                let each = |g: &dyn Fn(&miglab_model::Window) -> Option<f64>| {
                    if r.guests.is_empty() {
                        return opt(w.and_then(g));
                    }
                    r.guests
                        .iter()
                        .map(|x| {
                            let v = x.windows.iter().find(|w| w.name == name).and_then(g);
                            format!("g{} {}", x.guest, opt(v))
                        })
                        .collect::<Vec<_>>()
                        .join(" · ")
                };
                let on = match (f.guest, r.guests.is_empty()) {
                    (Some(g), false) => format!("{} (at guest {g}'s hop)", f.target),
                    _ => f.target.clone(),
                };
                vec![
                    f.name.clone(),
                    on,
                    f.trigger.clone(),
                    match (f.began_ms, f.injected_ms) {
                        (Some(b), Some(i)) if i - b >= 10.0 => format!("{i:.0} (began {b:.0})"),
                        (_, i) => opt(i),
                    },
                    opt(f.cleared_ms),
                    f.undo.clone(),
                    each(&|w| w.io_stall_ms),
                    each(&|w| w.recovered_after_ms),
                    opt(f.healthy_after_ms),
                    f.error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        h.push_str(&table(
            &[
                "fault",
                "on",
                "trigger",
                "injected ms",
                "cleared ms",
                "undo",
                "I/O stall ms",
                "I/O resumed after ms",
                "Ceph healthy after ms",
                "error",
            ],
            &rows,
        ));
    }
}

/// The verify pass, and paths a third party replaced.
fn verification_section(h: &mut String, r: &RunResult) {
    h.push_str("<h2>Verification</h2>");
    match &r.verification {
        Some(v) => {
            let cls = if v.mismatched + v.missing == 0 && v.inline_mismatches == 0 {
                if v.counts.unreadable == 0 {
                    "ok"
                } else {
                    "warn"
                }
            } else {
                "bad"
            };
            let _ = write!(
                h,
                "<p class=\"{cls}\">{} blocks read back through {} ({}): {} mismatched, {} missing, {} unreadable, {} errored writes landed; {} reads mismatched during the run{}</p>",
                v.blocks,
                esc(&v.read_through),
                esc(&v.read_mode),
                v.mismatched,
                v.missing,
                v.counts.unreadable,
                v.errored_write_landed,
                v.inline_mismatches,
                if v.incomplete { "; the pass was cut short" } else { "" }
            );
        }
        None => h.push_str("<p class=\"sub\">not verified</p>"),
    }
    if let Some(v) = r.verification.as_ref().filter(|v| !v.replaced.is_empty()) {
        h.push_str("<p class=\"warn\">Paths that no longer name the guest's file (a third party replaced or moved them; the guest's data above was read through its own open handles):</p>");
        let rows: Vec<Vec<String>> = v
            .replaced
            .iter()
            .map(|p| vec![p.path.clone(), p.now.clone(), format!("{} of {}", p.blocks_differ, p.blocks)])
            .collect();
        h.push_str(&table(&["path", "names now", "blocks not as the guest wrote them"], &rows));
    }
}

/// What produced the figures, the plan, the scenario and the result itself; the page's end.
fn provenance_section(h: &mut String, r: &RunResult) {
    h.push_str("<h2>Provenance</h2>");
    let p = &r.provenance;
    let pv = |v: &Option<String>| v.clone().unwrap_or_else(|| "—".into());
    let mut rows = vec![
        vec!["miglab".into(), format!("{} ({})", p.miglab_version, pv(&p.git_commit))],
        vec!["QEMU".into(), pv(&p.qemu)],
        vec!["virtiofsd".into(), pv(&p.virtiofsd)],
        vec!["Ceph".into(), pv(&p.ceph)],
        vec!["guest kernel".into(), format!("{} (image {})", pv(&p.guest_kernel), pv(&p.guest_image))],
        vec!["accelerator".into(), format!("{} — {}", p.accelerator, p.accelerator_reason)],
        vec![
            "host".into(),
            format!("{} · {} · kernel {}", pv(&p.hostname), pv(&p.host_cpu), pv(&p.host_kernel)),
        ],
        vec!["clock".into(), format!("{}; zero at {}", r.clock.unit, r.clock.started_at)],
    ];
    for b in &p.binaries {
        rows.push(vec![
            format!("{} binary", b.role),
            format!(
                "{} · sha256 {}",
                b.path,
                b.sha256.as_deref().map(|s| &s[..s.len().min(16)]).unwrap_or("?")
            ),
        ]);
    }
    h.push_str(&table(&["what", "value"], &rows));
    h.push_str("<h2>Plan</h2>");
    let _ = write!(h, "<pre>{}</pre>", esc_text(&serde_json::to_string_pretty(&r.plan).unwrap_or_default()));
    h.push_str("<h2>Scenario</h2>");
    let _ = write!(h, "<pre>{}</pre>", esc_text(&r.scenario_text));
    h.push_str("<h2>result.json</h2><details><summary>the whole result, as written</summary>");
    let _ = write!(
        h,
        "<pre id=\"result-json\">{}</pre></details>",
        esc_text(&serde_json::to_string(r).unwrap_or_default())
    );
    h.push_str("</body></html>\n");
}

/// What a report is made of, for snapshot tests: its section titles, how many charts, and each
/// chart's words (caption, axis titles, legend, named ticks; numbers left out, they follow the
/// data).
pub fn structure(html: &str) -> String {
    let mut out = String::new();
    for part in html.split("<h2>").skip(1) {
        let title = part.split("</h2>").next().unwrap_or("");
        let _ = writeln!(out, "section: {title}");
    }
    let _ = writeln!(out, "charts: {}", html.matches("<svg").count());
    for svg in html.split("<svg").skip(1) {
        let body = svg.split("</svg>").next().unwrap_or("");
        let mut words: Vec<&str> = Vec::new();
        for t in body.split("<text").skip(1) {
            let Some(text) = t.split_once('>').and_then(|(_, rest)| rest.split("</text>").next()) else {
                continue;
            };
            let text = text.trim();
            let numeric = text.chars().all(|c| c.is_ascii_digit() || ".-e+ ".contains(c));
            if !numeric && !words.contains(&text) {
                words.push(text);
            }
        }
        let _ = writeln!(out, "chart: {}", words.join(" | "));
    }
    out
}

/// Whether `html` references anything outside itself (a URL, a file, a script).
pub fn external_references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for needle in
        ["<script", "src=", "href=\"http", "href='http", "url(", "@import", "<link", "<iframe", "<img"]
    {
        if lower.contains(needle) {
            found.push(needle.to_string());
        }
    }
    found
}

mod migration;
use migration::{convergence_section, downtime_parts_table, switch_over_table};

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::outcome::{Expect, RunOutcome};

    /// The report showed guest 1's figures, memory and verification only: guest 2's stale
    /// pages and lost blocks were in result.json alone.
    #[test]
    fn every_guest_has_its_own_figures_memory_and_verification() {
        use miglab_model::result::{HopMemory, MemoryResult};
        let mut r = RunResult::new("s", 1, 1);
        r.migrations.push(miglab_model::MigrationRecord::sample(miglab_model::Outcome::Completed, 1000.0));
        r.verification = Some(miglab_model::Verification { blocks: 10, ..Default::default() });
        r.memory = Some(MemoryResult {
            spec: None,
            checks: vec![HopMemory {
                hop: 1,
                host: "c2".into(),
                check: Some(Default::default()),
                ..Default::default()
            }],
        });
        r.guests = (1..=2).map(|g| crate::fleet::guest_of(&r, g, &format!("s-1-g{g}"))).collect();
        let g2 = &mut r.guests[1];
        g2.verification = Some(miglab_model::Verification { blocks: 10, missing: 4, ..Default::default() });
        g2.memory.as_mut().expect("memory").checks[0].check =
            Some(miglab_workloads::dirty::MemoryCheck { pages: 77, stale: 5, ..Default::default() });
        let mut h = String::new();
        each_guest(&mut h, &r, false).expect("no charts");
        let at = h.find("Guest 2").expect("guest 2's heading");
        assert!(h[..at].contains("Guest 1") && h[at..].contains("s-1-g2"), "{h}");
        assert!(h[at..].contains("77 pages on c2: 5 stale"), "guest 2's memory: {h}");
        assert!(h[at..].contains("4 missing") || h[at..].contains(">4<"), "guest 2's verification: {h}");
    }

    #[test]
    fn what_a_switch_over_carried_is_tabled_only_where_measured() {
        let mut r = RunResult::new("s", 1, 1);
        r.migrations.push(miglab_model::MigrationRecord::sample(miglab_model::Outcome::Completed, 1000.0));
        let mut h = String::new();
        switch_over_table(&mut h, &r);
        assert!(h.is_empty(), "nothing measured, no table");
        let m = &mut r.migrations[0];
        m.virtiofsd = Some(miglab_model::VirtiofsdHeld {
            source: Some(miglab_model::OpenFiles { total: 48, path_only: 2 }),
            ..Default::default()
        });
        m.phases.device_ms = Some(1500.0);
        m.phases.resume_ms = Some(3500.0);
        m.expected_downtime_ms = Some(300);
        switch_over_table(&mut h, &r);
        assert!(h.contains("48 (2 O_PATH)") && h.contains("2000") && h.contains("300"), "{h}");
    }

    /// A completed-degraded run with a 5 s stall was titled "Completed" in green.
    #[test]
    fn the_headline_is_the_outcome_not_the_status() {
        let mut r = RunResult::new("s", 1, 1);
        r.status = RunStatus::Completed;
        r.outcome = Some(RunOutcome::CompletedDegraded);
        assert_eq!(headline(&r), ("completed-degraded".to_string(), "warn"));
        r.expected = Some(Expect(vec![RunOutcome::CompletedDegraded]));
        assert_eq!(headline(&r), ("completed-degraded (expected)".to_string(), "warn"));
        r.outcome = Some(RunOutcome::Completed);
        assert_eq!(headline(&r), ("completed".to_string(), "ok"));
        r.status = RunStatus::Failed;
        r.outcome = Some(RunOutcome::FailedSourceRunning);
        assert_eq!(headline(&r), ("failed-source-running — run failed".to_string(), "bad"));
    }
}
