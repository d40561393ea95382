//! A run's outcome from its result: one word for what happened (the guest lost, the file
//! system hung, a hop that timed out or failed, Ceph not healthy again, degraded, completed),
//! and why. Pure; `run` and `report` classify a result the same way.

use miglab_model::migration::Outcome;
use miglab_model::outcome::{RunOutcome, Thresholds};
use miglab_model::result::RunResult;

/// The outcome of `r`, and why.
pub fn classify(r: &RunResult, t: &Thresholds) -> (RunOutcome, Vec<String>) {
    let mut why = Vec::new();
    let end = r.duration_ms;
    let s = &r.stream;
    // When the stream was finished; where the result does not say, the series' last bucket.
    let series_end = r.series.last().map(|b| b.t_ms as f64);
    let lost = match s.last_heartbeat_ms {
        None => s.records == 0 && r.error.is_none(),
        Some(last) => {
            r.windows
                .iter()
                .any(|w| w.heartbeat_gap_unended && w.heartbeat_gap_ms.unwrap_or(0.0) > t.guest_lost_ms)
                || {
                    // A silence until the stream was finished is the guest's. Where the result does
                    // not say when that was, the series' end stands for it (up to a bucket early:
                    // a watchdog that gave up after 5 s could read as 4.95 s).
                    let stream_end = s.ended_ms.or(series_end.map(|e| e + 100.0)).unwrap_or(last);
                    stream_end - last > t.guest_lost_ms && end > 0.0
                }
        }
    };
    if lost {
        let stream_end = s.ended_ms.or(series_end).unwrap_or(0.0);
        why.push(format!(
            "no heartbeat for the last {:.0} ms of the stream",
            stream_end - s.last_heartbeat_ms.unwrap_or(0.0)
        ));
        return (RunOutcome::GuestLost, why);
    }
    // A run cut short by an error while its guest had gone silent for good: the guest went with
    // whatever ended the run (its QEMU killed with its host, say), however briefly the stream
    // outlived its last heartbeat before the run stopped.
    if r.error.is_some() && r.windows.iter().any(|w| w.heartbeat_gap_unended) {
        why.push(format!(
            "the run ended in an error with the guest silent since {:.0} ms, its last heartbeat",
            s.last_heartbeat_ms.unwrap_or(0.0)
        ));
        return (RunOutcome::GuestLost, why);
    }
    let mut hung =
        r.windows.iter().filter(|w| w.io_stall_unended).filter_map(|w| w.io_stall_ms).fold(0.0, f64::max);
    // Outside any window too: heartbeats went on long after the last successful op.
    if let (Some(hb), Some(op)) = (s.last_heartbeat_ms, s.last_op_ms) {
        hung = hung.max(hb - op);
    }
    if hung > t.fs_hung_ms {
        why.push(format!("no op completed for the last {hung:.0} ms while heartbeats arrived"));
        return (RunOutcome::FsHung, why);
    }
    let mut failed: Option<RunOutcome> = None;
    for m in &r.migrations {
        match &m.outcome {
            Outcome::Unsupported { error } => {
                why.push(format!("migration {} was refused: {error}", m.hop));
                failed = Some(failed.map_or(RunOutcome::Unsupported, |f| f.min(RunOutcome::Unsupported)));
            }
            Outcome::TimedOut { after_ms, .. } => {
                why.push(format!("migration {} timed out after {after_ms} ms", m.hop));
                return (RunOutcome::Timeout, why);
            }
            Outcome::NotConverged { after_ms, passes, remaining_bytes, .. } => {
                why.push(format!(
                    "migration {} did not converge in {after_ms} ms: {passes} passes, {:.1} MiB still to send",
                    m.hop,
                    *remaining_bytes as f64 / 1048576.0
                ));
                return (RunOutcome::NotConverged, why);
            }
            Outcome::Failed { error, source_running } => {
                why.push(format!("migration {} failed: {error}", m.hop));
                let o = if *source_running {
                    RunOutcome::FailedSourceRunning
                } else {
                    RunOutcome::FailedSourcePaused
                };
                failed = Some(failed.map_or(o, |f| f.min(o)));
            }
            Outcome::Completed => {}
        }
    }
    if let Some(o) = failed {
        return (o, why);
    }
    if let Some(f) = r.faults.iter().find(|f| f.infra_not_recovered) {
        why.push(format!("{}: Ceph was not healthy again within its deadline", f.name));
        return (RunOutcome::InfraNotRecovered, why);
    }
    let errors: u64 = r.ops.iter().map(|o| o.failed).sum();
    // Inside a window or not: a fault's after-effects can come after its window closed.
    let stall =
        r.windows.iter().filter_map(|w| w.io_stall_ms).chain(s.longest_io_stall_ms).fold(0.0, f64::max);
    if errors > 0 {
        why.push(format!("{errors} ops failed"));
    }
    if stall > t.degraded_stall_ms {
        why.push(format!("an I/O stall of {stall:.0} ms"));
    }
    // Whatever it measured, a run that ended in an error is not `completed`.
    if let Some(e) = &r.error {
        why.push(format!("the run ended in an error: {e}"));
    }
    if why.is_empty() {
        (RunOutcome::Completed, why)
    } else {
        (RunOutcome::CompletedDegraded, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::migration::MigrationRecord;
    use miglab_model::result::{Bucket, FaultRecord, OpSummary, StreamHealth, Window, WindowKind};

    fn base() -> RunResult {
        let mut r = RunResult::new("x", 1, 1);
        r.duration_ms = 10_000.0;
        r.stream = StreamHealth {
            records: 9000,
            heartbeats: 9000,
            last_heartbeat_ms: Some(9_950.0),
            ..StreamHealth::default()
        };
        r.series = (0..100).map(|i| Bucket { t_ms: i * 100, ops: 10, ..Bucket::default() }).collect();
        r.ops.push(OpSummary { op: "read".into(), count: 1000, ..OpSummary::default() });
        r
    }

    /// A host lost mid-migration killed the guest's QEMU; the run ended on the QMP error 0.4 s
    /// later, before any watchdog could call the guest lost, and with no hop record: it read as
    /// `completed`.
    #[test]
    fn a_run_ended_by_an_error_is_never_completed_and_a_silent_guest_in_it_is_lost() {
        let mut r = base();
        r.error = Some("Source QEMU: QMP `query-migrate` failed: QAPI stream disconnected".into());
        let mut w = window(0.0, false);
        w.heartbeat_gap_ms = Some(357.0);
        w.heartbeat_gap_unended = true;
        r.windows.push(w);
        let (o, why) = classify(&r, &Thresholds::default());
        assert_eq!(o, RunOutcome::GuestLost, "{why:?}");
        r.windows[0].heartbeat_gap_unended = false;
        let (o, why) = classify(&r, &Thresholds::default());
        assert_eq!(o, RunOutcome::CompletedDegraded, "{why:?}");
        assert!(why.iter().any(|w| w.contains("QAPI stream disconnected")), "{why:?}");
    }

    fn hop(outcome: Outcome) -> MigrationRecord {
        MigrationRecord::sample(outcome, 1000.0)
    }

    fn window(stall: f64, unended: bool) -> Window {
        Window {
            name: "fault 1".into(),
            kind: WindowKind::Fault { index: 0 },
            start_ms: 1000.0,
            end_ms: 2000.0,
            heartbeat_gap_ms: Some(20.0),
            heartbeat_gap_unended: false,
            guest_clock_gap_ms: Some(19.0),
            io_stall_ms: Some(stall),
            io_stall_unended: unended,
            unmeasured: vec![],
            recovered_after_ms: None,
            ops: 0,
            errors: 0,
        }
    }

    /// The run gave up on the guest 5.06 s after its last heartbeat and finished the stream
    /// then; the series' last full bucket ends 4.95 s after it. The stream's own end decides:
    /// guest lost, as the run said (the series alone read it as completed).
    #[test]
    fn a_guest_the_run_gave_up_on_is_lost_whatever_the_series_last_bucket() {
        let t = Thresholds::default();
        let mut r = base();
        r.stream.last_heartbeat_ms = Some(4_000.0);
        r.series.truncate(89);
        r.stream.ended_ms = Some(9_060.0);
        let (outcome, why) = classify(&r, &t);
        assert_eq!(outcome, RunOutcome::GuestLost, "{why:?}");
        assert_eq!(why, ["no heartbeat for the last 5060 ms of the stream"]);
        // A stream finished 4.9 s after the last heartbeat is a guest stopped on purpose.
        r.stream.ended_ms = Some(8_900.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::Completed);
    }

    #[test]
    fn each_class_from_a_result_that_shows_it() {
        let t = Thresholds::default();
        assert_eq!(classify(&base(), &t).0, RunOutcome::Completed);

        let mut r = base();
        r.windows.push(window(1500.0, false));
        assert_eq!(classify(&r, &t).0, RunOutcome::CompletedDegraded);

        let mut r = base();
        r.migrations.push(hop(Outcome::Failed { error: "x".into(), source_running: true }));
        assert_eq!(classify(&r, &t).0, RunOutcome::FailedSourceRunning);
        r.migrations.push(hop(Outcome::Failed { error: "y".into(), source_running: false }));
        assert_eq!(classify(&r, &t).0, RunOutcome::FailedSourcePaused, "the worse failure wins");
        r.migrations.push(hop(Outcome::TimedOut { after_ms: 5, source_running: true }));
        assert_eq!(classify(&r, &t).0, RunOutcome::Timeout);
        let mut r = base();
        r.migrations.push(hop(Outcome::NotConverged {
            after_ms: 30000,
            source_running: true,
            passes: 12,
            remaining_bytes: 3 << 20,
        }));
        let (o, why) = classify(&r, &t);
        assert_eq!(o, RunOutcome::NotConverged);
        assert!(why[0].contains("did not converge in 30000 ms: 12 passes, 3.0 MiB"), "{why:?}");

        // QEMU refused postcopy: its own class, and a failed hop beside it is still worse.
        let mut r = base();
        r.migrations.push(hop(Outcome::Unsupported { error: "Postcopy is not supported".into() }));
        let (o, why) = classify(&r, &t);
        assert_eq!(o, RunOutcome::Unsupported);
        assert!(why[0].contains("refused: Postcopy is not supported"), "{why:?}");
        r.migrations.push(hop(Outcome::Failed { error: "y".into(), source_running: true }));
        assert_eq!(classify(&r, &t).0, RunOutcome::FailedSourceRunning);
        assert_eq!("unsupported".parse::<RunOutcome>(), Ok(RunOutcome::Unsupported));

        let mut r = base();
        r.stream.longest_io_stall_ms = Some(10_000.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::CompletedDegraded, "a stall outside every window");

        let mut r = base();
        r.windows.push(window(32_000.0, true));
        assert_eq!(classify(&r, &t).0, RunOutcome::FsHung);
        let mut r = base();
        r.stream.last_op_ms = Some(-22_000.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::FsHung, "hung outside any window");

        let mut r = base();
        r.stream.last_heartbeat_ms = Some(3000.0);
        assert_eq!(classify(&r, &t).0, RunOutcome::GuestLost);

        let mut r = base();
        r.faults.push(FaultRecord {
            name: "osd".into(),
            infra_not_recovered: true,
            ..FaultRecord::default()
        });
        assert_eq!(classify(&r, &t).0, RunOutcome::InfraNotRecovered);
    }
}
