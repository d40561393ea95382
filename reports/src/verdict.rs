//! Whether a run measured what it set out to measure and lost nothing: a pure function of the
//! result, so that `run`, `report` and `compare` judge a result the same way.

use crate::migration::Outcome;
use crate::result::RunResult;

/// Op kinds that are not the workload's own (the verify pass's reads).
const NOT_WORKLOAD: &[&str] = &["verify"];

/// Everything wrong with `r`, one line each; empty when the run is sound.
pub fn problems(r: &RunResult) -> Vec<String> {
    let mut p = outcome_problems(r);
    p.extend(integrity_problems(r));
    p
}

/// What went wrong that an outcome can explain (and a scenario can expect): a migration that
/// failed, ops that failed or never ran, a guest no longer heard, a verify pass cut short.
pub fn outcome_problems(r: &RunResult) -> Vec<String> {
    let mut p = Vec::new();
    for m in &r.migrations {
        if let Some(e) = &m.cleanup_error {
            p.push(format!("migration {} completed, but its clean-up failed: {e}", m.hop));
        }
        match &m.outcome {
            Outcome::Completed => {}
            Outcome::Failed { error, .. } => p.push(format!("migration {} failed: {error}", m.hop)),
            Outcome::TimedOut { after_ms, .. } => {
                p.push(format!("migration {} did not finish within {after_ms} ms and was cancelled", m.hop))
            }
        }
    }
    let workload: Vec<_> = r.ops.iter().filter(|o| !NOT_WORKLOAD.contains(&o.op.as_str())).collect();
    let (ok, failed): (u64, u64) = workload.iter().fold((0, 0), |(a, b), o| (a + o.count, b + o.failed));
    if ok == 0 && failed > 0 {
        p.push(format!("every one of the workload's {failed} ops failed"));
    } else if ok == 0 && r.stream.heartbeats > 0 {
        p.push("the workload completed no op".into());
    }
    let s = &r.stream;
    if s.heartbeats == 0 {
        p.push("no record stream: not one heartbeat arrived from the guest".into());
    } else {
        // The guest must still be heard after the last switch-over.
        let last_resume = r
            .migrations
            .iter()
            .filter_map(|m| m.phases.resume_ms)
            .fold(None, |a: Option<f64>, t| Some(a.map_or(t, |a| a.max(t))));
        if let (Some(resume), Some(last)) = (last_resume, s.last_heartbeat_ms) {
            if last < resume {
                p.push(format!(
                    "the record stream stopped at {last:.0} ms, before the last switch-over's RESUME at {resume:.0} ms"
                ));
            }
        }
        for w in &r.windows {
            if w.heartbeat_gap_unended {
                p.push(format!(
                    "{}: no heartbeat arrived after a gap that began in it (the stream was lost)",
                    w.name
                ));
            }
        }
    }
    if r.verification.as_ref().is_some_and(|v| v.incomplete) {
        p.push("verification was cut short".into());
    }
    if let Some(v) = r.verification.as_ref().filter(|v| v.counts.unreadable > 0) {
        p.push(format!(
            "verification could not read {} of {} blocks: they are neither verified nor known to be lost",
            v.counts.unreadable, v.blocks
        ));
    }
    // Without the agent's count, records it dropped would be missing from every figure
    // unnoticed: a run whose guest was lost says why elsewhere; this names the gap.
    if s.records_dropped.is_none() && s.records > 0 {
        p.push("the agent never reported how many records it dropped: the figures may miss ops".into());
    }
    p
}

/// What no outcome excuses: data lost or corrupted, and figures that miss what happened.
pub fn integrity_problems(r: &RunResult) -> Vec<String> {
    let mut p = Vec::new();
    let s = &r.stream;
    if s.bad_frames > 0 {
        p.push(format!("{} undecodable frames in the record stream", s.bad_frames));
    }
    if let Some(d) = s.records_dropped.filter(|d| *d > 0) {
        p.push(format!("the agent dropped {d} records (the figures miss their ops)"));
    }
    if s.heartbeats_missing > 0 {
        p.push(format!("{} heartbeats are missing from the stream", s.heartbeats_missing));
    }
    if let Some(v) = &r.verification {
        if v.mismatched > 0 || v.missing > 0 {
            p.push(format!(
                "verification: {} of {} blocks mismatched, {} missing",
                v.mismatched, v.blocks, v.missing
            ));
        }
        if v.inline_mismatches > 0 {
            p.push(format!("{} reads during the run returned data that did not verify", v.inline_mismatches));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{OpSummary, StreamHealth, Verification};

    fn sound() -> RunResult {
        let mut r = RunResult::new("x", 1, 1);
        r.ops.push(OpSummary { op: "read".into(), count: 100, ..OpSummary::default() });
        r.stream = StreamHealth {
            records: 5100,
            heartbeats: 5000,
            records_dropped: Some(0),
            last_heartbeat_ms: Some(9000.0),
            ..StreamHealth::default()
        };
        r.verification = Some(Verification { blocks: 10, ..Verification::default() });
        r
    }

    #[test]
    fn a_sound_run_has_no_problem() {
        assert_eq!(problems(&sound()), Vec::<String>::new());
    }

    /// A run whose every op failed, with its block missing, ended `completed` before.
    #[test]
    fn every_failure_that_read_as_success_is_a_problem() {
        let mut r = sound();
        r.ops[0] = OpSummary { op: "read".into(), count: 0, failed: 50, ..OpSummary::default() };
        r.verification = Some(Verification { blocks: 1, missing: 1, ..Verification::default() });
        let p = problems(&r);
        assert!(p.iter().any(|l| l.contains("every one of the workload's 50 ops failed")), "{p:?}");
        assert!(p.iter().any(|l| l.contains("1 missing")), "{p:?}");

        let mut r = sound();
        r.stream.heartbeats = 0;
        assert!(problems(&r).iter().any(|l| l.contains("no record stream")));

        let mut r = sound();
        r.verification = Some(Verification { blocks: 10, inline_mismatches: 2, ..Verification::default() });
        assert!(problems(&r).iter().any(|l| l.contains("2 reads")));

        let mut r = sound();
        r.stream.records_dropped = Some(3);
        r.stream.bad_frames = 1;
        assert_eq!(problems(&r).len(), 2);

        // A completed hop whose old source would not stop: the record is kept, the run says so.
        let mut r = sound();
        let mut m = crate::MigrationRecord::sample(Outcome::Completed, 10.0);
        m.cleanup_error = Some("stopping the old source: timed out".into());
        r.migrations.push(m);
        assert!(problems(&r).iter().any(|l| l.contains("clean-up failed: stopping the old source")));

        // A read error in the verify pass was "missing" (lost data); it is unreadable.
        let mut r = sound();
        let mut v = Verification { blocks: 10, ..Verification::default() };
        v.counts.unreadable = 2;
        r.verification = Some(v);
        let p = problems(&r);
        assert!(p.iter().any(|l| l.contains("could not read 2 of 10")), "{p:?}");
        assert!(integrity_problems(&r).is_empty(), "not lost data: {p:?}");

        // An agent that never said how many it dropped: 0 was assumed.
        let mut r = sound();
        r.stream.records_dropped = None;
        assert!(problems(&r).iter().any(|l| l.contains("never reported")), "{:?}", problems(&r));
    }
}
