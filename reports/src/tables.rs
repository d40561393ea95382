//! `timeline.csv` and `events.csv`: views of a [`RunResult`] as tables, on the run clock.

use miglab_model::{Bucket, RunResult};

fn finish(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, csv::Error> {
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

/// `timeline.csv`: the 100 ms series, on the run clock.
pub fn timeline_csv(series: &[Bucket]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "run_ms",
        "ops_per_s",
        "mb_per_s",
        "p99_us",
        "errors",
        "heartbeats",
        "verify_ops_per_s",
    ])?;
    for b in series {
        // Rates over the bucket's own length: the last one may be cut short.
        let s = b.span_s();
        w.write_record([
            b.t_ms.to_string(),
            format!("{:.0}", b.ops as f64 / s),
            format!("{:.3}", b.bytes as f64 / s / 1e6),
            b.p99_us.map(|v| v.to_string()).unwrap_or_default(),
            b.errors.to_string(),
            b.heartbeats.to_string(),
            format!("{:.0}", b.verify_ops as f64 / s),
        ])?;
    }
    finish(w)
}

/// One row of `events.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    pub run_ms: f64,
    /// What the event belongs to: `migration 2`, `fault 1`, ...
    pub source: String,
    /// `source`, `destination` (a QEMU), `host` (miglab itself).
    pub side: String,
    pub event: String,
    pub detail: String,
}

/// Every event of a run on the run clock, in time order: both QEMUs' migration events, the
/// windows, and whatever else the caller adds (faults).
pub fn event_rows(result: &RunResult) -> Vec<EventRow> {
    let mut rows = Vec::new();
    for m in &result.migrations {
        let source = format!("migration {}", m.hop);
        rows.push(EventRow {
            run_ms: m.started_ms,
            source: source.clone(),
            side: "host".into(),
            event: "migrate".into(),
            detail: format!("{} -> {} {}", m.from, m.to, m.uri),
        });
        for e in &m.timeline {
            let (event, detail) = e.event.describe();
            rows.push(EventRow {
                run_ms: e.t_ms,
                source: source.clone(),
                side: e.side.as_str().into(),
                event,
                detail,
            });
        }
    }
    for f in &result.faults {
        let source = format!("fault {}", f.index + 1);
        let rows_of = [
            (f.injected_ms, "inject", format!("{} {} ({})", f.kind, f.target, f.trigger)),
            (f.cleared_ms, "clear", f.undo.clone()),
        ];
        for (t, event, detail) in rows_of {
            if let Some(t) = t {
                rows.push(EventRow {
                    run_ms: t,
                    source: source.clone(),
                    side: "host".into(),
                    event: event.into(),
                    detail,
                });
            }
        }
    }
    for w in &result.windows {
        for (t, event) in [(w.start_ms, "window-open"), (w.end_ms, "window-close")] {
            rows.push(EventRow {
                run_ms: t,
                source: w.name.clone(),
                side: "host".into(),
                event: event.into(),
                detail: String::new(),
            });
        }
    }
    // On a tie a window opens before what happens at that instant, and closes after it.
    let rank = |r: &EventRow| match r.event.as_str() {
        "window-open" => 0,
        "window-close" => 2,
        _ => 1,
    };
    rows.sort_by(|a, b| a.run_ms.total_cmp(&b.run_ms).then(rank(a).cmp(&rank(b))));
    rows
}

/// `events.csv`: [`event_rows`] with a header that names the clock.
pub fn events_csv(rows: &[EventRow]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["run_ms", "source", "side", "event", "detail"])?;
    for r in rows {
        w.write_record([
            format!("{:.3}", r.run_ms),
            r.source.clone(),
            r.side.clone(),
            r.event.clone(),
            r.detail.clone(),
        ])?;
    }
    finish(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::{MigrationRecord, MigrationStatus, Outcome, QmpEvent, Side, TimelineEvent, Window};

    #[test]
    fn the_timeline_names_the_clock_and_an_empty_bucket_has_no_p99() {
        let mut series = vec![Bucket {
            t_ms: 100,
            ops: 12,
            bytes: 49152,
            p99_us: Some(800),
            heartbeats: 100,
            ..Bucket::default()
        }];
        // An empty bucket has no p99 (not 0); the last one, cut at 30 ms: 3 ops are 100 ops/s
        // (not 30: ×10 assumed a full bucket).
        series.push(Bucket { t_ms: 200, heartbeats: 100, ..Bucket::default() });
        series.push(Bucket {
            t_ms: 300,
            ops: 3,
            p99_us: Some(500),
            heartbeats: 30,
            span_ms: Some(30),
            ..Bucket::default()
        });
        let t = String::from_utf8(timeline_csv(&series).expect("csv")).expect("utf8");
        assert_eq!(
            t,
            "run_ms,ops_per_s,mb_per_s,p99_us,errors,heartbeats,verify_ops_per_s\n100,120,0.492,800,0,100,0\n200,0,0.000,,0,100,0\n300,100,0.000,500,0,30,0\n"
        );
    }

    #[test]
    fn events_name_the_clock() {
        let mut r = RunResult::new("smoke", 1, 42);
        r.windows.push(Window::sample(1, 5.0, 900.0));
        let e = String::from_utf8(events_csv(&event_rows(&r)).expect("csv")).expect("utf8");
        assert!(e.starts_with("run_ms,source,side,event,detail\n5.000,migration 1,host,window-open,"), "{e}");
    }

    /// A migration's events and its window, on one clock, come out in time order.
    #[test]
    fn events_of_migrations_and_windows_interleave_in_time_order() {
        let mut r = RunResult::new("x", 1, 1);
        r.windows.push(Window::sample(1, 1000.5, 1950.0));
        r.migrations.push(MigrationRecord {
            total_time_ms: Some(900),
            downtime_ms: Some(20),
            setup_time_ms: Some(1),
            wall_ms: 950.0,
            timeline: vec![
                TimelineEvent { t_ms: 1950.0, side: Side::Destination, event: QmpEvent::Resume },
                TimelineEvent {
                    t_ms: 1001.0,
                    side: Side::Source,
                    event: QmpEvent::Migration { status: MigrationStatus::Setup },
                },
            ],
            ..MigrationRecord::sample(Outcome::Completed, 1000.5)
        });
        let rows = event_rows(&r);
        let names: Vec<&str> = rows.iter().map(|r| r.event.as_str()).collect();
        assert_eq!(names, ["window-open", "migrate", "MIGRATION", "RESUME", "window-close"]);
        assert!(rows.windows(2).all(|w| w[0].run_ms <= w[1].run_ms));
    }
}
