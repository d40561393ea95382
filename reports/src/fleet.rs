//! A run of several guests: each guest seen as a run of its own (so everything that judges or
//! draws one guest serves each), and what they add up to — the evacuation of a host, the
//! spread of downtime, how many migrations missed their limit, each phase's quantiles.

use miglab_model::migration::QEMU_DEFAULT_DOWNTIME_LIMIT_MS;
use miglab_model::result::{Evacuation, Fleet, GuestResult, RunResult, Spread};
use miglab_model::{MigrationRecord, Outcome};

/// `r` as guest `g`'s own run: its figures in the run's fields, nothing of the other guests.
pub fn view(r: &RunResult, g: &GuestResult) -> RunResult {
    RunResult {
        workload: g.workload.clone(),
        outcome: g.outcome,
        outcome_why: g.outcome_why.clone(),
        ops: g.ops.clone(),
        jobs: g.jobs.clone(),
        groups: g.groups.clone(),
        migrations: g.migrations.clone(),
        windows: g.windows.clone(),
        verification: g.verification.clone(),
        memory: g.memory.clone(),
        stream: g.stream.clone(),
        series: g.series.clone(),
        guests: Vec::new(),
        fleet: None,
        ..r.clone()
    }
}

/// Each guest's run, with its number: the run itself when it has one guest.
pub fn views(r: &RunResult) -> Vec<(Option<u32>, std::borrow::Cow<'_, RunResult>)> {
    if r.guests.is_empty() {
        vec![(None, std::borrow::Cow::Borrowed(r))]
    } else {
        r.guests.iter().map(|g| (Some(g.guest), std::borrow::Cow::Owned(view(r, g)))).collect()
    }
}

/// `line` said of guest `guest` (unchanged for a run of one).
pub fn whose(guest: Option<u32>, line: &str) -> String {
    match guest {
        Some(g) => format!("guest {g}: {line}"),
        None => line.to_string(),
    }
}

/// The guests' own results as one guest's: `r`'s figures moved into a [`GuestResult`].
pub fn guest_of(r: &RunResult, guest: u32, vm: &str) -> GuestResult {
    GuestResult {
        guest,
        vm: vm.into(),
        workload: r.workload.clone(),
        outcome: r.outcome,
        outcome_why: r.outcome_why.clone(),
        ops: r.ops.clone(),
        jobs: r.jobs.clone(),
        groups: r.groups.clone(),
        migrations: r.migrations.clone(),
        windows: r.windows.clone(),
        verification: r.verification.clone(),
        memory: r.memory.clone(),
        stream: r.stream.clone(),
        series: r.series.clone(),
    }
}

/// What the guests add up to, `parallel` of them migrating at once.
pub fn summarize(guests: &[GuestResult], parallel: u32) -> Fleet {
    let all: Vec<&MigrationRecord> = guests.iter().flat_map(|g| &g.migrations).collect();
    let done: Vec<&&MigrationRecord> =
        all.iter().filter(|m| matches!(m.outcome, Outcome::Completed)).collect();
    let mut hops: Vec<u32> = all.iter().map(|m| m.hop).collect();
    hops.sort_unstable();
    hops.dedup();
    let evacuations = hops
        .iter()
        .map(|&hop| {
            let of: Vec<&&MigrationRecord> = all.iter().filter(|m| m.hop == hop).collect();
            let start = of.iter().map(|m| m.started_ms).fold(f64::INFINITY, f64::min);
            let end = of.iter().map(|m| m.started_ms + m.wall_ms).fold(f64::NEG_INFINITY, f64::max);
            Evacuation {
                hop,
                from: of.first().map(|m| m.from.clone()).unwrap_or_default(),
                to: of.first().map(|m| m.to.clone()).unwrap_or_default(),
                guests: of.len() as u32,
                completed: of.iter().filter(|m| matches!(m.outcome, Outcome::Completed)).count() as u32,
                evacuation_ms: end - start,
            }
        })
        .collect();
    let downtimes: Vec<f64> = done.iter().filter_map(|m| m.downtime_ms.map(|d| d as f64)).collect();
    let limit = all.first().map_or(QEMU_DEFAULT_DOWNTIME_LIMIT_MS, |m| m.params.downtime_limit());
    let over_limit =
        done.iter().filter(|m| m.downtime_ms.is_some_and(|d| d > m.params.downtime_limit())).count() as u32;
    let phase = |f: &dyn Fn(&MigrationRecord) -> Option<f64>| -> Option<Spread> {
        Spread::of(&done.iter().filter_map(|m| f(m)).collect::<Vec<_>>())
    };
    let between = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    };
    let phases: Vec<(String, Spread)> = [
        ("setup", phase(&|m| m.setup_time_ms.map(|v| v as f64))),
        ("precopy", phase(&|m| between(m.phases.active_ms, m.phases.stop_ms))),
        ("switchover", phase(&|m| m.phases.paused_ms)),
        ("device_state", phase(&|m| m.phases.device_state_ms())),
        ("total", phase(&|m| Some(m.wall_ms))),
    ]
    .into_iter()
    .filter_map(|(name, s)| s.map(|s| (name.to_string(), s)))
    .collect();
    let window = |f: &dyn Fn(&miglab_model::Window) -> Option<f64>| {
        let v: Vec<f64> =
            guests.iter().flat_map(|g| &g.windows).filter(|w| w.hop().is_some()).filter_map(f).collect();
        Spread::of(&v)
    };
    Fleet {
        guests: guests.len() as u32,
        parallel,
        evacuations,
        qemu_downtime_ms: Spread::of(&downtimes),
        downtime_limit_ms: limit,
        over_limit,
        phases,
        heartbeat_gap_ms: window(&|w| w.heartbeat_gap_ms),
        io_stall_ms: window(&|w| w.io_stall_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use miglab_model::{MigrationParams, Phases};

    fn hop(hop: u32, guest: u32, started: f64, wall: f64, downtime: u64, ok: bool) -> MigrationRecord {
        let outcome =
            if ok { Outcome::Completed } else { Outcome::Failed { error: "x".into(), source_running: true } };
        MigrationRecord {
            hop,
            guest,
            params: MigrationParams { downtime_limit_ms: Some(100), ..MigrationParams::default() },
            wall_ms: wall,
            downtime_ms: Some(downtime),
            phases: Phases { paused_ms: Some(downtime as f64 + 5.0), ..Phases::default() },
            ..MigrationRecord::sample(outcome, started)
        }
    }

    #[test]
    fn spreads_are_nearest_rank_and_absent_when_empty() {
        let s = Spread::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).expect("some");
        assert_eq!((s.n, s.min, s.p50, s.p90, s.max, s.mean), (5, 1.0, 3.0, 5.0, 5.0, 3.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
    }

    /// Three guests at once: the evacuation spans the first start to the last end; a failed
    /// migration counts in the evacuation but not in the downtime; the limit is the one given.
    #[test]
    fn the_fleet_adds_up_its_guests() {
        let g = |n: u32, ms: Vec<MigrationRecord>| GuestResult {
            guest: n,
            migrations: ms,
            ..GuestResult::default()
        };
        let guests = [
            g(1, vec![hop(1, 1, 1000.0, 2000.0, 50, true), hop(2, 1, 5000.0, 1000.0, 40, true)]),
            g(2, vec![hop(1, 2, 1010.0, 2500.0, 150, true), hop(2, 2, 5000.0, 900.0, 30, true)]),
            g(3, vec![hop(1, 3, 1020.0, 4000.0, 0, false)]),
        ];
        let f = summarize(&guests, 3);
        assert_eq!((f.guests, f.parallel, f.downtime_limit_ms, f.over_limit), (3, 3, 100, 1));
        assert_eq!(f.evacuations.len(), 2);
        let e = &f.evacuations[0];
        assert_eq!((e.hop, e.guests, e.completed, e.evacuation_ms), (1, 3, 2, 4020.0));
        assert_eq!(f.evacuations[1].evacuation_ms, 1000.0);
        let d = f.qemu_downtime_ms.expect("downtimes");
        assert_eq!((d.n, d.min, d.max), (4, 30.0, 150.0));
        let sw = f.phases.iter().find(|(p, _)| p == "switchover").expect("switchover").1;
        assert_eq!((sw.n, sw.max), (4, 155.0));
        assert!(f.phases.iter().all(|(p, _)| p != "device_state"), "no device status seen: no phase");
    }
}
