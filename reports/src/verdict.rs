//! Whether a run measured what it set out to measure and lost nothing: a pure function of the
//! result, so that `run`, `report` and `compare` judge a result the same way.

use miglab_model::migration::Outcome;
use miglab_model::outcome::RunOutcome;
use miglab_model::result::{RunResult, RunStatus};

/// Op kinds that are not the workload's own (the verify pass's reads).
const NOT_WORKLOAD: &[&str] = &["verify"];

/// Everything wrong with `r`, one line each; empty when the run is sound.
pub fn problems(r: &RunResult) -> Vec<String> {
    let mut p = outcome_problems(r);
    p.extend(integrity_problems(r));
    p
}

/// `f`'s lines for each guest of `r`, each said of its guest when there are several.
fn per_guest(r: &RunResult, f: fn(&RunResult) -> Vec<String>) -> Vec<String> {
    crate::fleet::views(r)
        .iter()
        .flat_map(|(g, v)| f(v).into_iter().map(|l| crate::fleet::whose(*g, &l)).collect::<Vec<_>>())
        .collect()
}

/// What went wrong that an outcome can explain (and a scenario can expect): a migration that
/// failed, ops that failed or never ran, a guest no longer heard, a verify pass cut short —
/// of any guest.
pub fn outcome_problems(r: &RunResult) -> Vec<String> {
    per_guest(r, outcome_problems_of)
}

/// What no outcome excuses, of any guest: data lost or corrupted, and figures that miss what
/// happened.
pub fn integrity_problems(r: &RunResult) -> Vec<String> {
    per_guest(r, integrity_problems_of)
}

fn outcome_problems_of(r: &RunResult) -> Vec<String> {
    let mut p = Vec::new();
    for m in &r.migrations {
        if let Some(e) = &m.cleanup_error {
            p.push(format!("migration {} completed, but its clean-up failed: {e}", m.hop));
        }
        match &m.outcome {
            Outcome::Completed => {}
            Outcome::Failed { error, .. } => p.push(format!("migration {} failed: {error}", m.hop)),
            Outcome::Unsupported { error } => {
                p.push(format!("migration {} was refused by QEMU: {error}", m.hop))
            }
            Outcome::TimedOut { after_ms, .. } => {
                p.push(format!("migration {} did not finish within {after_ms} ms and was cancelled", m.hop))
            }
            Outcome::NotConverged { after_ms, .. } => p.push(format!(
                "migration {} had not converged within {after_ms} ms and was cancelled",
                m.hop
            )),
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
    for h in r.memory.iter().flat_map(|m| &m.checks).filter(|h| h.check.is_none()) {
        p.push(format!(
            "the dirtying load's memory after migration {} was not verified: {}",
            h.hop,
            h.error.as_deref().unwrap_or("no check")
        ));
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

/// Whether any guest of `r` lost data: blocks mismatched or missing, reads that did not verify
/// during the run, or memory pages stale or corrupt after a hop.
pub fn lost_data(r: &RunResult) -> bool {
    crate::fleet::views(r).iter().any(|(_, v)| {
        v.verification.as_ref().is_some_and(|v| v.mismatched > 0 || v.missing > 0 || v.inline_mismatches > 0)
            || v.memory.iter().flat_map(|m| &m.checks).any(|h| h.check.as_ref().is_some_and(|c| !c.clean()))
    })
}

fn integrity_problems_of(r: &RunResult) -> Vec<String> {
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
    if let Some(m) = &r.memory {
        for h in &m.checks {
            match (&h.check, &h.error) {
                (Some(c), _) if !c.clean() => p.push(format!(
                    "memory after migration {}: {} of {} pages stale (lost dirty pages), {} corrupt",
                    h.hop, c.stale, c.pages, c.corrupt
                )),
                _ => {}
            }
        }
    }
    p
}

/// How the run ended, as far as the verdict cares.
#[derive(Debug, Clone, Default)]
pub struct RunEnd {
    /// The run's error, if it ended in one.
    pub error: Option<String>,
    /// The error is what an outcome describes (a hang, a lost guest, a failed hop), so a
    /// scenario that expects that outcome expects the error too.
    pub error_is_an_outcome: bool,
    pub interrupted: bool,
    /// Faults that did not happen as planned, and what cleaning up could not undo.
    pub fault_problems: Vec<String>,
    pub cleanup_problems: Vec<String>,
}

/// Everything wrong with `r` and its status, under its expected outcome (`r.expected`): without
/// one, any problem fails the run; with one, that outcome is a pass as long as no data was lost
/// and the run measured something (`r.outcome` is set).
pub fn judge(r: &RunResult, end: &RunEnd) -> (Vec<String>, RunStatus) {
    let mut p = match (&r.expected, r.outcome) {
        (None, _) => {
            let mut p = problems(r);
            p.extend(end.error.iter().filter(|_| !end.interrupted).cloned());
            p
        }
        (Some(want), o) => {
            let mut p = integrity_problems(r);
            match o {
                None => p.insert(
                    0,
                    format!("expected outcome {want}, got none: no op completed before the run failed"),
                ),
                Some(o) if !want.allows(o) => {
                    p.insert(0, format!("expected outcome {want}, got {o} ({})", r.outcome_why.join("; ")));
                    p.extend(outcome_problems(r));
                }
                Some(_) => {}
            }
            // A run that ended in an error is never explained by a completed outcome.
            let explained = end.error_is_an_outcome
                && o.is_some_and(|o| !matches!(o, RunOutcome::Completed | RunOutcome::CompletedDegraded));
            if !explained && !end.interrupted {
                p.extend(end.error.iter().cloned());
            }
            p
        }
    };
    p.extend(end.fault_problems.iter().cloned());
    p.extend(end.cleanup_problems.iter().cloned());
    let status = if end.interrupted {
        RunStatus::Aborted
    } else if p.is_empty() {
        RunStatus::Completed
    } else {
        RunStatus::Failed
    };
    (p, status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::result::{OpSummary, StreamHealth, Verification};

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

    /// Of three guests, the third lost a block: the run says so, of guest 3, even though the
    /// run's own fields (guest 1's) are sound.
    #[test]
    fn a_guest_that_lost_data_fails_the_run_whichever_it_is() {
        let mut r = sound();
        r.guests = (1..=3).map(|g| crate::fleet::guest_of(&sound(), g, &format!("x-1-g{g}"))).collect();
        assert_eq!(problems(&r), Vec::<String>::new());
        r.guests[2].verification =
            Some(Verification { blocks: 10, mismatched: 1, ..Verification::default() });
        assert_eq!(
            integrity_problems(&r),
            vec!["guest 3: verification: 1 of 10 blocks mismatched, 0 missing"]
        );
        r.expected = Some(miglab_model::outcome::Expect(vec![RunOutcome::Completed]));
        r.outcome = Some(RunOutcome::Completed);
        let (p, status) = judge(&r, &RunEnd::default());
        assert_eq!(status, RunStatus::Failed, "{p:?}");
    }

    /// Guest 2's stale pages fail the run and are said of guest 2, though guest 1's memory (the
    /// run's own field) is clean; they count as lost data.
    #[test]
    fn a_guest_whose_pages_went_stale_fails_the_run_whichever_it_is() {
        use miglab_model::result::{HopMemory, MemoryResult};
        use miglab_workloads::dirty::MemoryCheck;
        let clean = MemoryCheck { pages: 100, ..MemoryCheck::default() };
        let memory = |c: MemoryCheck| {
            Some(MemoryResult {
                spec: None,
                checks: vec![HopMemory { hop: 1, check: Some(c), ..HopMemory::default() }],
            })
        };
        let mut one = sound();
        one.memory = memory(clean.clone());
        let mut r = one.clone();
        r.guests = (1..=2).map(|g| crate::fleet::guest_of(&one, g, &format!("x-1-g{g}"))).collect();
        assert!(problems(&r).is_empty() && !lost_data(&r), "{:?}", problems(&r));
        r.guests[1].memory = memory(MemoryCheck { stale: 3, ..clean });
        assert_eq!(
            integrity_problems(&r),
            vec!["guest 2: memory after migration 1: 3 of 100 pages stale (lost dirty pages), 0 corrupt"]
        );
        assert!(lost_data(&r));
        assert_eq!(judge(&r, &RunEnd::default()).1, RunStatus::Failed);
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
        let mut m = miglab_model::MigrationRecord::sample(Outcome::Completed, 10.0);
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

    /// The expected-outcome policy: the expected outcome passes with its error, an unexpected
    /// one fails, a completed outcome never explains an error, and lost data always fails.
    #[test]
    fn an_expected_outcome_passes_only_with_nothing_lost() {
        use miglab_model::outcome::Expect;
        let hung = |expect: Option<Vec<RunOutcome>>, o: Option<RunOutcome>| {
            let mut r = sound();
            r.expected = expect.map(Expect);
            r.outcome = o;
            r.outcome_why = vec!["no op completed for 40000 ms".into()];
            r
        };
        let err = RunEnd {
            error: Some("the file system hung".into()),
            error_is_an_outcome: true,
            ..RunEnd::default()
        };
        let want = Some(vec![RunOutcome::FsHung]);

        let (p, s) = judge(&hung(want.clone(), Some(RunOutcome::FsHung)), &err);
        assert_eq!((p, s), (vec![], RunStatus::Completed));

        let (p, s) = judge(&hung(None, Some(RunOutcome::FsHung)), &err);
        assert_eq!(s, RunStatus::Failed);
        assert!(p.contains(&"the file system hung".to_string()), "{p:?}");

        let (p, s) = judge(&hung(want.clone(), Some(RunOutcome::Completed)), &err);
        assert_eq!(s, RunStatus::Failed);
        assert!(p[0].starts_with("expected outcome fs-hung, got completed"), "{p:?}");
        assert!(p.contains(&"the file system hung".to_string()), "{p:?}");

        let (p, _) = judge(&hung(want.clone(), None), &err);
        assert!(p[0].contains("got none"), "{p:?}");

        let mut lost = hung(want.clone(), Some(RunOutcome::FsHung));
        lost.verification = Some(Verification { blocks: 10, mismatched: 1, ..Verification::default() });
        assert_eq!(judge(&lost, &err).1, RunStatus::Failed);

        let faults = RunEnd { fault_problems: vec!["kill-osd: never fired".into()], ..err.clone() };
        assert_eq!(judge(&hung(want.clone(), Some(RunOutcome::FsHung)), &faults).1, RunStatus::Failed);

        let stopped = RunEnd { interrupted: true, ..err };
        let (p, s) = judge(&hung(want, Some(RunOutcome::FsHung)), &stopped);
        assert_eq!((p, s), (vec![], RunStatus::Aborted));
    }
}
