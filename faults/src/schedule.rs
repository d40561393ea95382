//! Seeded schedules: a scenario's faults with every choice made (which OSD) and every random
//! offset drawn. Each fault draws from its own stream (the plan's sub-seed and its index), so
//! adding a fault shifts nobody else's choices; the same seeds give the same schedule.

use crate::catalog::{Fault, FaultEntry, Pick, StorageTarget};
use crate::trigger::{Anchor, Trigger};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// What choices can be made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Universe {
    /// The cluster's OSD ids, as it numbers them (a real cluster has gaps).
    pub osds: Vec<u32>,
    pub hops: u32,
    /// The guests the run migrates (a trigger may name one of them).
    pub guests: u32,
    /// How long the run can last: an offset past it could never fire.
    pub span: Span,
}

/// The run's own timings, in milliseconds: the longest it can go on after each anchor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// From the workload's start to the first hop.
    pub warmup_ms: u64,
    /// One hop at its longest: its deadline plus the settling after it.
    pub hop_ms: u64,
    /// After the last hop, before the faults stop firing.
    pub cooldown_ms: u64,
    /// Whether a failed hop may be followed by one more (a follow-up migration).
    pub follow_up: bool,
}

impl Span {
    /// No bound but the catalog's own (an hour): for schedules checked without a run.
    pub const UNBOUNDED: Span = Span { warmup_ms: HOUR, hop_ms: HOUR, cooldown_ms: HOUR, follow_up: true };

    /// The longest the run can go on after `anchor` (of a run of `hops` hops) before its
    /// faults stop firing.
    pub fn after(&self, anchor: &Anchor, hops: u32) -> u64 {
        let hops_left = match anchor.hop() {
            None => u64::from(hops),
            Some(h) => u64::from(hops.saturating_sub(h) + 1),
        } + u64::from(self.follow_up);
        let warmup = if anchor.hop().is_none() { self.warmup_ms } else { 0 };
        warmup.saturating_add(hops_left.saturating_mul(self.hop_ms)).saturating_add(self.cooldown_ms)
    }
}

const HOUR: u64 = 3_600_000;

/// A fault as the plan carries it: choices made, offsets drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Resolved {
    /// 0-based, in the scenario's order.
    pub index: u32,
    pub name: String,
    pub fault: Fault,
    pub trigger: Trigger,
    /// The trigger's offset plus the random one: milliseconds after the anchor.
    pub offset_ms: u64,
    /// The run may end without it.
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("fault {index} ({kind}): {why}")]
    Invalid { index: u32, kind: &'static str, why: String },
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick(p: Pick, osds: &[u32], rng: &mut impl Rng) -> Result<Pick, String> {
    match p {
        Pick::Id(n) if osds.contains(&n) => Ok(Pick::Id(n)),
        Pick::Id(n) => Err(format!(
            "osd {n} does not exist (the cluster has {})",
            osds.iter().map(|i| format!("osd.{i}")).collect::<Vec<_>>().join(", ")
        )),
        Pick::Random if osds.is_empty() => Err("the cluster has no OSD to pick".into()),
        Pick::Random => Ok(Pick::Id(osds[rng.gen_range(0..osds.len())])),
    }
}

/// Resolves `entries` for a run with `u`, from the plan's fault-timing and choice seeds.
pub fn resolve(
    entries: &[FaultEntry],
    timing_seed: u64,
    choice_seed: u64,
    u: &Universe,
) -> Result<Vec<Resolved>, ScheduleError> {
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let index = i as u32;
            let kind = e.fault.kind();
            let invalid = |why: String| ScheduleError::Invalid { index, kind, why };
            e.fault.check(&e.trigger).map_err(invalid)?;
            if let Some(h) = e.trigger.anchor.hop() {
                if h == 0 || h > u.hops {
                    return Err(invalid(format!(
                        "its trigger names hop {h}, but the run makes {} migration(s)",
                        u.hops
                    )));
                }
            }
            match (e.trigger.guest, e.trigger.anchor.hop()) {
                (Some(_), None) => {
                    return Err(invalid(format!(
                        "its trigger names a guest, but {} is the same moment for every guest: leave guest out",
                        e.trigger.anchor
                    )))
                }
                (Some(g), Some(_)) if g == 0 || g > u.guests => {
                    return Err(invalid(format!(
                        "its trigger names guest {g}, but the run has {} guest(s) (numbered from 1)",
                        u.guests
                    )))
                }
                _ => {}
            }
            let mut timing = rand::rngs::StdRng::seed_from_u64(mix(timing_seed ^ mix(u64::from(index))));
            let mut choice = rand::rngs::StdRng::seed_from_u64(mix(choice_seed ^ mix(u64::from(index))));
            // An offset the run cannot reach would never fire: refused now, not found missing
            // at the end of a run.
            let latest = e.trigger.offset_ms.saturating_add(e.trigger.random_within_ms);
            let bound = u.span.after(&e.trigger.anchor, u.hops).min(HOUR);
            if latest > bound {
                return Err(invalid(format!(
                    "offset_ms {} + random_within_ms {} reaches {latest} ms after {}, but the run lasts at most {bound} ms after it (warm-up, each hop's timeout_s and settle_s, cooldown_s): it could never fire",
                    e.trigger.offset_ms, e.trigger.random_within_ms, e.trigger.anchor
                )));
            }
            let random = if e.trigger.random_within_ms > 0 {
                timing.gen_range(0..e.trigger.random_within_ms)
            } else {
                0
            };
            let mut fault = e.fault.clone();
            match &mut fault {
                Fault::OsdKill { osd, .. } | Fault::OsdFreeze { osd, .. } | Fault::OsdOut { osd, .. } => {
                    *osd = pick(*osd, &u.osds, &mut choice).map_err(invalid)?;
                }
                Fault::StorageDelay { target: StorageTarget::Osd(p), .. }
                | Fault::SocketFailures { target: StorageTarget::Osd(p), .. } => {
                    *p = pick(*p, &u.osds, &mut choice).map_err(invalid)?;
                }
                _ => {}
            }
            Ok(Resolved {
                index,
                name: e.name.clone().unwrap_or_else(|| format!("fault {} ({kind})", index + 1)),
                fault,
                trigger: e.trigger.clone(),
                offset_ms: e.trigger.offset_ms + random,
                optional: e.optional,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fault: Fault, anchor: Anchor, random_within_ms: u64) -> FaultEntry {
        FaultEntry {
            name: None,
            trigger: Trigger { anchor, offset_ms: 100, random_within_ms, guest: None },
            optional: false,
            fault,
        }
    }

    fn u() -> Universe {
        Universe { osds: vec![0, 1, 2], hops: 2, guests: 1, span: Span::UNBOUNDED }
    }

    fn two() -> Vec<FaultEntry> {
        vec![
            entry(Fault::OsdKill { osd: Pick::Random, revive_after_ms: 5000 }, Anchor::WorkloadStart, 3000),
            entry(
                Fault::OsdFreeze { osd: Pick::Random, duration_ms: 2000 },
                Anchor::HopStart { hop: 2 },
                1000,
            ),
        ]
    }

    #[test]
    fn the_same_seeds_give_the_same_schedule_and_others_another() {
        let a = resolve(&two(), 1, 2, &u()).expect("schedule");
        assert_eq!(a, resolve(&two(), 1, 2, &u()).expect("schedule"));
        let differs = (3..40).any(|s| resolve(&two(), s, s, &u()).expect("schedule") != a);
        assert!(differs, "other seeds give other schedules");
        for r in &a {
            assert!(
                matches!(
                    r.fault,
                    Fault::OsdKill { osd: Pick::Id(0..=2), .. }
                        | Fault::OsdFreeze { osd: Pick::Id(0..=2), .. }
                ),
                "{r:?}"
            );
            assert!((100..100 + r.trigger.random_within_ms).contains(&r.offset_ms), "{r:?}");
        }
    }

    /// A new fault at the end shifts none of the others' choices or times.
    #[test]
    fn adding_a_fault_shifts_nobody_else() {
        let a = resolve(&two(), 7, 8, &u()).expect("schedule");
        let mut three = two();
        three.push(entry(Fault::MdsFail {}, Anchor::WorkloadStart, 500));
        let b = resolve(&three, 7, 8, &u()).expect("schedule");
        assert_eq!(&b[..2], &a[..]);
    }

    #[test]
    fn impossible_choices_and_hops_are_refused() {
        let e = resolve(
            &[entry(Fault::OsdKill { osd: Pick::Id(5), revive_after_ms: 1 }, Anchor::WorkloadStart, 0)],
            1,
            1,
            &u(),
        )
        .expect_err("osd 5");
        assert!(e.to_string().contains("osd 5 does not exist"), "{e}");
        // A real cluster's ids have gaps: only those are drawn.
        let gaps = Universe { osds: vec![3, 7, 12], ..u() };
        for seed in 0..50 {
            let r = resolve(
                &[entry(Fault::OsdOut { osd: Pick::Random, duration_ms: 1 }, Anchor::WorkloadStart, 0)],
                1,
                seed,
                &gaps,
            )
            .expect("schedule");
            assert!(
                matches!(r[0].fault, Fault::OsdOut { osd: Pick::Id(3 | 7 | 12), .. }),
                "{:?}",
                r[0].fault
            );
        }
        assert!(resolve(
            &[entry(Fault::OsdOut { osd: Pick::Id(1), duration_ms: 1 }, Anchor::WorkloadStart, 0)],
            1,
            1,
            &gaps
        )
        .is_err());
        let e = resolve(&[entry(Fault::MdsFail {}, Anchor::HopStart { hop: 3 }, 0)], 1, 1, &u())
            .expect_err("hop 3");
        assert!(e.to_string().contains("hop 3"), "{e}");
    }

    /// Offsets are bounded by the run's own timings; a huge one neither overflows nor passes.
    #[test]
    fn an_offset_the_run_cannot_reach_is_refused() {
        let run = Universe {
            osds: vec![0, 1, 2],
            hops: 2,
            guests: 1,
            span: Span { warmup_ms: 2000, hop_ms: 11_000, cooldown_ms: 1000, follow_up: false },
        };
        let at = |anchor, offset_ms, random_within_ms| FaultEntry {
            name: None,
            trigger: Trigger { anchor, offset_ms, random_within_ms, guest: None },
            optional: false,
            fault: Fault::MdsFail {},
        };
        // Workload start: 2 s + 2 hops of 11 s + 1 s = 25 s; hop 2: 11 s + 1 s = 12 s.
        assert!(resolve(&[at(Anchor::WorkloadStart, 24_000, 1000)], 1, 1, &run).is_ok());
        let e = resolve(&[at(Anchor::WorkloadStart, 24_000, 1001)], 1, 1, &run).expect_err("too late");
        assert!(e.to_string().contains("could never fire"), "{e}");
        assert!(resolve(&[at(Anchor::HopStart { hop: 2 }, 12_000, 0)], 1, 1, &run).is_ok());
        assert!(resolve(&[at(Anchor::HopStart { hop: 2 }, 12_001, 0)], 1, 1, &run).is_err());
        let e = resolve(&[at(Anchor::WorkloadStart, u64::MAX, u64::MAX)], 1, 1, &u()).expect_err("overflow");
        assert!(e.to_string().contains("could never fire"), "{e}");
    }

    /// A trigger may name one guest of the run's, and only for a moment that is a guest's.
    #[test]
    fn a_trigger_names_a_guest_the_run_has() {
        let run = Universe { guests: 3, ..u() };
        let at = |anchor, guest| FaultEntry {
            name: None,
            trigger: Trigger { anchor, offset_ms: 0, random_within_ms: 0, guest },
            optional: false,
            fault: Fault::MdsFail {},
        };
        let ok = resolve(&[at(Anchor::PreSwitchover { hop: 1 }, Some(3))], 1, 1, &run).expect("guest 3");
        assert_eq!(ok[0].trigger.guest, Some(3));
        for (guest, want) in [(4, "has 3 guest(s)"), (0, "has 3 guest(s)")] {
            let e = resolve(&[at(Anchor::HopStart { hop: 1 }, Some(guest))], 1, 1, &run)
                .expect_err("no such guest");
            assert!(e.to_string().contains(want), "{e}");
        }
        let e = resolve(&[at(Anchor::WorkloadStart, Some(2))], 1, 1, &run).expect_err("every guest's");
        assert!(e.to_string().contains("leave guest out"), "{e}");
    }
}
