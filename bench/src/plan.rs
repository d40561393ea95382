//! Scenario → Plan: everything one repetition will do, resolved before anything starts and
//! written into `result.json` (`miglab run --replay` runs exactly that plan again).
//!
//! Deriving a plan is pure. Randomness comes from sub-seeds, one per purpose, each derived
//! from the scenario's seed and the repetition: adding a fault never shifts the workload's
//! random sequence, and repetitions differ from each other but not from run to run.

use crate::scenario::{GuestSpec, GuestsSpec, LabSpec, RunSpec, Scenario};
use miglab_faults::schedule::ScheduleError;
use miglab_faults::Resolved;
use miglab_infra::binaries::BinaryChoice;
use miglab_infra::topology::next_host;
use miglab_model::{Expect, MigrationParams, Thresholds};
use miglab_workloads::job::Workload;
use serde::{Deserialize, Serialize};

/// Bump when a field changes meaning: a replay refuses plans of another version.
pub const PLAN_VERSION: u32 = 1;

/// One seed per purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seeds {
    /// The workload's op sequence (the agent's engine).
    pub workload: u64,
    /// When faults fire inside their windows.
    pub fault_timing: u64,
    /// Which daemon, host or file a fault picks.
    pub choices: u64,
}

/// splitmix64: a well-mixed 64-bit value from a counter.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Seeds {
    /// The sub-seeds of repetition `rep` of a scenario seeded with `seed`.
    pub fn derive(seed: u64, rep: u32) -> Self {
        let base = mix(seed ^ mix(u64::from(rep)));
        Self { workload: mix(base ^ 1), fault_timing: mix(base ^ 2), choices: mix(base ^ 3) }
    }

    /// Guest `i`'s workload seed (from 1): the first guest's is the run's, so a run of one
    /// guest is what it always was; the others' differ from it and from each other.
    pub fn guest_workload(&self, i: u32) -> u64 {
        if i <= 1 {
            self.workload
        } else {
            mix(self.workload ^ mix(u64::from(i)))
        }
    }
}

/// One migration of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HopPlan {
    pub hop: u32,
    pub from: String,
    pub to: String,
}

/// How the migrations run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationSettings {
    pub params: MigrationParams,
    pub warmup_s: f64,
    pub settle_s: f64,
    pub timeout_s: f64,
    /// After a failed hop, one more to the same host.
    pub follow_up: bool,
    /// How long a hop waits at its pause before the switch-over for the faults anchored there.
    #[serde(default = "crate::scenario::MigrationPlan::default_switchover_hold")]
    pub switchover_hold_s: f64,
    /// Pause at the switch-over to mark the device-state phase and the bytes after STOP.
    #[serde(default)]
    pub device_phase: bool,
    /// How many guests migrate at once (all when None).
    #[serde(default)]
    pub parallel: Option<u32>,
    /// Seconds of `calc-dirty-rate` before each hop, if any.
    #[serde(default)]
    pub calc_dirty_rate_s: Option<f64>,
    /// The destination QEMU's niceness, if set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_nice: Option<i32>,
    /// The source's client flushed at the pause before the switch-over.
    #[serde(default)]
    pub flush_before_switchover: bool,
}

/// Everything one repetition does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub scenario: String,
    /// The sweep cell this plan is (named `downtime_limit_ms=50,bs=4k`), if the scenario sweeps.
    #[serde(default)]
    pub cell: Option<miglab_model::SweepCell>,
    pub repetition: u32,
    pub seed: u64,
    pub seeds: Seeds,
    pub lab: LabSpec,
    pub vm: String,
    pub guest: GuestSpec,
    /// The guests migrated together (one unless the scenario says more).
    #[serde(default)]
    pub guests: GuestsSpec,
    /// The builds under test, paths absolute (default: the installed ones).
    #[serde(default)]
    pub binaries: BinaryChoice,
    /// The guest image of a chosen kernel, found when the run starts (not part of the plan: a
    /// replay on another machine finds its own).
    #[serde(skip)]
    pub image: Option<std::path::PathBuf>,
    pub workload: Workload,
    /// The memory-dirtying load beside it, in every guest.
    #[serde(default)]
    pub dirty: Option<miglab_workloads::dirty::DirtySpec>,
    /// The host the guest boots on.
    pub start_host: String,
    pub hops: Vec<HopPlan>,
    pub migration: MigrationSettings,
    pub run: RunSpec,
    /// Ceph settings for the run's duration.
    #[serde(default)]
    pub ceph: crate::scenario::CephSettings,
    /// The faults, every choice made and every random offset drawn.
    pub faults: Vec<Resolved>,
    pub expect: Option<Expect>,
    pub thresholds: Thresholds,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("the topology has {0} client hosts; a migration needs at least 2")]
    TooFewHosts(usize),
    #[error("{path}: no plan in it ({why}); replay needs a result.json written by `miglab run`")]
    NoPlan { path: std::path::PathBuf, why: String },
    #[error("{path}: a plan of version {found}, this miglab replays version {PLAN_VERSION}")]
    Version { path: std::path::PathBuf, found: u32 },
    #[error(transparent)]
    Faults(#[from] ScheduleError),
    #[error("{path}: its plan is not one miglab would run:\n{}", .problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid { path: std::path::PathBuf, problems: Vec<String> },
}

impl Plan {
    /// How many guests migrate at once.
    pub fn in_flight(&self) -> u32 {
        self.migration.parallel.unwrap_or(self.guests.count).clamp(1, self.guests.count.max(1))
    }

    /// The plan of repetition `rep` of `s` (with its workload resolved) on `hosts`, whose
    /// cluster has `osds` OSDs.
    pub fn derive(
        s: &Scenario,
        workload: &Workload,
        rep: u32,
        hosts: &[String],
        osds: &[u32],
    ) -> Result<Plan, PlanError> {
        if hosts.len() < 2 && s.migration.count > 0 || hosts.is_empty() {
            return Err(PlanError::TooFewHosts(hosts.len()));
        }
        let start = hosts[0].clone();
        let mut at = start.clone();
        let hops = (1..=s.migration.count)
            .map(|hop| {
                let to = next_host(hosts, &at);
                let h = HopPlan { hop, from: at.clone(), to: to.clone() };
                at = to;
                h
            })
            .collect();
        let seeds = Seeds::derive(s.seed, rep);
        let faults =
            miglab_faults::resolve(&s.faults, seeds.fault_timing, seeds.choices, &s.fault_universe(osds))?;
        Ok(Plan {
            version: PLAN_VERSION,
            scenario: s.name.clone(),
            cell: None,
            repetition: rep,
            seed: s.seed,
            seeds,
            lab: s.lab.clone(),
            vm: format!("{}-{rep}", s.name),
            guest: s.guest.clone(),
            guests: s.guests.clone(),
            binaries: s.binaries.clone(),
            image: None,
            workload: workload.clone(),
            dirty: s.dirty,
            start_host: start,
            hops,
            migration: MigrationSettings {
                params: s.migration.params(),
                warmup_s: s.migration.warmup_s,
                settle_s: s.migration.settle_s,
                timeout_s: s.migration.timeout_s,
                follow_up: s.migration.follow_up,
                switchover_hold_s: s.migration.switchover_hold_s,
                device_phase: s.migration.device_phase,
                parallel: s.migration.parallel,
                calc_dirty_rate_s: s.migration.dirty_rate_window(s.dirty.is_some()),
                destination_nice: s.migration.destination_nice,
                flush_before_switchover: s.migration.flush_before_switchover,
            },
            run: s.run.clone(),
            ceph: s.ceph.clone(),
            faults,
            expect: s.expect.clone(),
            thresholds: s.outcome.thresholds(),
        })
    }

    /// The plan a result was run with.
    pub fn from_result(path: &std::path::Path, plan: &serde_json::Value) -> Result<Plan, PlanError> {
        let version = plan.get("version").and_then(|v| v.as_u64()).unwrap_or(0) as u32;
        if version != PLAN_VERSION {
            return Err(PlanError::Version { path: path.into(), found: version });
        }
        let plan: Plan = serde_json::from_value(plan.clone())
            .map_err(|e| PlanError::NoPlan { path: path.into(), why: e.to_string() })?;
        let problems = plan.problems();
        if problems.is_empty() {
            Ok(plan)
        } else {
            Err(PlanError::Invalid { path: path.into(), problems })
        }
    }

    /// What is wrong with a plan read from a file (`field: why`): a result.json is input like a
    /// scenario, and a replay runs as root — it gets the checks a scenario gets.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (field, name) in [("scenario", &self.scenario), ("vm", &self.vm)] {
            if let Some(why) = crate::scenario::name_problem(name) {
                p.push(format!("{field}: {why}"));
            }
        }
        if let Some(cell) = self.cell.as_ref().map(|c| c.name()) {
            if cell.contains('/') || cell.contains("..") {
                p.push(format!("cell: '{cell}' must not name a path"));
            }
        }
        if miglab_infra::topology::layout::validate_name(&self.lab.name).is_err() {
            p.push(format!("lab.name: '{}': use 1 to 16 characters from a-z, 0-9 and '-'", self.lab.name));
        }
        p.extend(self.guest.problems().into_iter().map(|(f, why)| format!("guest.{f}: {why}")));
        p.extend(self.guests.problems().into_iter().map(|(f, why)| format!("guests.{f}: {why}")));
        if self.migration.parallel == Some(0) {
            p.push("migration.parallel: 0".into());
        }
        if let Err(e) = self.workload.validate() {
            p.push(format!("workload: {e}"));
        }
        let m = &self.migration;
        for (f, v) in [
            ("warmup_s", m.warmup_s),
            ("settle_s", m.settle_s),
            ("timeout_s", m.timeout_s),
            ("switchover_hold_s", m.switchover_hold_s),
        ] {
            if !(v.is_finite() && (0.0..=86_400.0).contains(&v)) {
                p.push(format!("migration.{f}: {v} is not a time"));
            }
        }
        for f in &self.faults {
            if let Err(why) = f.fault.check(&f.trigger) {
                p.push(format!("faults[{}] ({}): {why}", f.index, f.fault.kind()));
            }
        }
        p
    }
}

/// A hop of a run: one the plan made, or the follow-up after planned hop `of` did not complete
/// (one more try to the same host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HopId {
    Planned(u32),
    FollowUp { of: u32 },
}

impl HopId {
    /// In results (and to the trigger machine) a follow-up is numbered above any planned hop (a
    /// run plans at most 1000), so that no trigger of the plan keys on it.
    pub const FOLLOW_UP_BASE: u32 = 1000;

    pub fn number(self) -> u32 {
        match self {
            HopId::Planned(n) => n,
            HopId::FollowUp { of } => Self::FOLLOW_UP_BASE + of,
        }
    }

    pub fn is_follow_up(self) -> bool {
        matches!(self, HopId::FollowUp { .. })
    }
}

/// Which hops run, in order: the plan's; after one that did not complete, either one follow-up
/// to the same host and nothing more, or nothing more.
#[derive(Debug, Clone)]
pub struct Schedule {
    queue: std::collections::VecDeque<(HopId, String)>,
    follow_up: bool,
}

/// What comes after a hop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum After {
    /// The next planned hop, if any.
    Next,
    /// The hop did not complete and the guest is still where it was: one more try to `to`.
    FollowUp { to: String },
    /// The hop did not complete: the remaining hops are skipped.
    Stop,
}

impl Schedule {
    pub fn new(plan: &Plan) -> Self {
        Self {
            queue: plan.hops.iter().map(|h| (HopId::Planned(h.hop), h.to.clone())).collect(),
            follow_up: plan.migration.follow_up,
        }
    }

    pub fn next_hop(&mut self) -> Option<(HopId, String)> {
        self.queue.pop_front()
    }

    /// What follows `hop` to `to`, now that it ended; `guest_stayed`: the guest still runs
    /// where the hop started.
    pub fn after(&mut self, hop: HopId, to: &str, completed: bool, guest_stayed: bool) -> After {
        if completed {
            return After::Next;
        }
        self.queue.clear();
        match hop {
            HopId::Planned(of) if self.follow_up && guest_stayed => {
                self.queue.push_back((HopId::FollowUp { of }, to.to_string()));
                After::FollowUp { to: to.to_string() }
            }
            HopId::Planned(_) | HopId::FollowUp { .. } => After::Stop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn scenario(count: u32) -> Scenario {
        let text = format!(
            "name = \"p\"\nseed = 9\n[workload]\nkind = \"read-loop\"\n[migration]\ncount = {count}\n"
        );
        Scenario::parse(&text, Path::new("p.toml")).expect("parses")
    }

    fn hosts() -> Vec<String> {
        vec!["c1".into(), "c2".into()]
    }

    #[test]
    fn hops_ping_pong_and_the_plan_round_trips() {
        let s = scenario(3);
        let w = s.workload.clone().expect("inline");
        let p = Plan::derive(&s, &w, 2, &hosts(), &[0, 1, 2]).expect("plan");
        let route: Vec<(&str, &str)> = p.hops.iter().map(|h| (h.from.as_str(), h.to.as_str())).collect();
        assert_eq!(route, [("c1", "c2"), ("c2", "c1"), ("c1", "c2")]);
        assert_eq!(p.vm, "p-2");
        let json = serde_json::to_value(&p).expect("json");
        assert_eq!(Plan::from_result(Path::new("r.json"), &json).expect("back"), p);
        // A sweep cell is typed in the plan; a plan written when it was only a name replays.
        let mut swept = p.clone();
        swept.cell = Some(miglab_model::SweepCell::from_name("downtime_limit_ms=20"));
        let json = serde_json::to_value(&swept).expect("json");
        assert_eq!(json["cell"]["values"][0]["number"], 20.0);
        assert_eq!(Plan::from_result(Path::new("r.json"), &json).expect("back"), swept);
        let mut old = json.clone();
        old["cell"] = serde_json::Value::String("downtime_limit_ms=20".into());
        assert_eq!(Plan::from_result(Path::new("r.json"), &old).expect("an older plan").cell, swept.cell);
    }

    #[test]
    fn same_seed_same_plan_and_sub_seeds_are_independent() {
        let s = scenario(1);
        let w = s.workload.clone().expect("inline");
        assert_eq!(
            Plan::derive(&s, &w, 1, &hosts(), &[0, 1, 2]).ok(),
            Plan::derive(&s, &w, 1, &hosts(), &[0, 1, 2]).ok()
        );
        let a = Seeds::derive(9, 1);
        assert_ne!(a, Seeds::derive(9, 2), "repetitions differ");
        assert_ne!(a, Seeds::derive(10, 1), "seeds differ");
        assert!(a.workload != a.fault_timing && a.fault_timing != a.choices);
    }

    #[test]
    fn a_plan_needs_two_hosts_to_migrate() {
        let s = scenario(1);
        let w = s.workload.clone().expect("inline");
        assert!(matches!(
            Plan::derive(&s, &w, 1, &["c1".into()], &[0, 1, 2]),
            Err(PlanError::TooFewHosts(1))
        ));
        assert!(Plan::derive(&scenario(0), &w, 1, &["c1".into()], &[0, 1, 2]).is_ok());
    }

    /// The plan carries the faults resolved; the workload's seed does not move when a fault
    /// is added.
    #[test]
    fn faults_are_resolved_into_the_plan_without_moving_the_workload() {
        let text = "name = \"p\"\nseed = 9\n[workload]\nkind = \"read-loop\"\n[[fault]]\nkind = \"osd-kill\"\nrevive_after_ms = 1000\ntrigger = { at = \"hop-start\", random_within_ms = 500 }\n";
        let with = Scenario::parse(text, Path::new("p.toml")).expect("parses");
        let without = scenario(1);
        let w = with.workload.clone().expect("inline");
        let (a, b) = (
            Plan::derive(&with, &w, 1, &hosts(), &[0, 1, 2]).expect("plan"),
            Plan::derive(&without, &w, 1, &hosts(), &[0, 1, 2]).expect("plan"),
        );
        assert_eq!(a.faults.len(), 1);
        assert!(matches!(
            a.faults[0].fault,
            miglab_faults::Fault::OsdKill { osd: miglab_faults::Pick::Id(0..=2), .. }
        ));
        assert_eq!(a.seeds.workload, b.seeds.workload);
    }

    #[test]
    fn a_plan_of_another_version_is_refused() {
        let e =
            Plan::from_result(Path::new("r.json"), &serde_json::json!({"version": 99})).expect_err("version");
        assert!(e.to_string().contains("version 99"), "{e}");
    }

    /// A result.json edited to write outside the share or to pass reserved options is refused
    /// by replay, with each field and why.
    #[test]
    fn a_tampered_plan_is_refused() {
        let w = Workload::ReadLoop(miglab_workloads::job::ReadLoopJob::default());
        let good = Plan::derive(&scenario(1), &w, 1, &hosts(), &[0, 1, 2]).expect("plan");
        let mut v = serde_json::to_value(&good).expect("json");
        assert!(Plan::from_result(Path::new("r.json"), &v).is_ok());
        v["scenario"] = "../../etc".into();
        v["guest"]["virtiofsd_args"] = serde_json::json!(["-osource=/"]);
        v["workload"]["path"] = "/etc/passwd".into();
        let e = Plan::from_result(Path::new("r.json"), &v).expect_err("tampered").to_string();
        for want in ["scenario: '../../etc'", "guest.virtiofsd_args: '-o'", "workload:"] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    fn three_hops(follow_up: bool) -> Plan {
        let text = "name = \"p\"\nseed = 9\n[workload]\nkind = \"read-loop\"\n[migration]\ncount = 3\n";
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("p.toml");
        std::fs::write(&path, text).expect("write");
        let (s, _, w) = Scenario::load(&path).expect("loads");
        let mut p = Plan::derive(&s, &w, 1, &["c1".into(), "c2".into()], &[0, 1, 2]).expect("plan");
        p.migration.follow_up = follow_up;
        p
    }

    /// A failed hop is followed by one more try to the same host, never by a second follow-up,
    /// and the planned hops after it are skipped.
    #[test]
    fn the_follow_up_schedule() {
        let mut s = Schedule::new(&three_hops(true));
        assert_eq!(s.next_hop(), Some((HopId::Planned(1), "c2".into())));
        assert_eq!(s.after(HopId::Planned(1), "c2", true, false), After::Next);
        assert_eq!(s.next_hop(), Some((HopId::Planned(2), "c1".into())));
        assert_eq!(s.after(HopId::Planned(2), "c1", false, true), After::FollowUp { to: "c1".into() });
        let (id, to) = s.next_hop().expect("the follow-up");
        assert_eq!(
            (id, id.number(), id.is_follow_up(), to.as_str()),
            (HopId::FollowUp { of: 2 }, 1002, true, "c1")
        );
        assert_eq!(s.after(id, "c1", false, true), After::Stop);
        assert_eq!(s.next_hop(), None);

        // Without follow-ups, or with the guest gone from the source, a failed hop ends the hops.
        let mut s = Schedule::new(&three_hops(false));
        let (id, to) = s.next_hop().expect("hop 1");
        assert_eq!(s.after(id, &to, false, true), After::Stop);
        assert_eq!(s.next_hop(), None);
        let mut s = Schedule::new(&three_hops(true));
        let (id, to) = s.next_hop().expect("hop 1");
        assert_eq!(s.after(id, &to, false, false), After::Stop);
        assert!(HopId::Planned(1000).number() < HopId::FollowUp { of: 1 }.number());
    }
}
