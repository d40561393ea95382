//! The trigger machine: observations in, firings out. Pure — no clock of its own, no I/O: every
//! event comes with its time on the run clock, and `advance` is told what time it is. The
//! orchestrator feeds it the bus and carries out what it returns.

use crate::schedule::Resolved;
use crate::trigger::Anchor;
use miglab_model::{MigrationStatus, Side};

/// What the machine can observe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    WorkloadStarted,
    HopStarted { hop: u32 },
    Status { hop: u32, side: Side, status: MigrationStatus },
    Pass { hop: u32, pass: u64 },
    HopEnded { hop: u32 },
}

/// A fault to inject now.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub index: u32,
    /// The guest whose observation anchored it (none for the workload's start).
    pub guest: Option<u32>,
    /// When its anchor was seen, and when it was due (run clock, ms).
    pub anchor_ms: f64,
    pub due_ms: f64,
}

/// A fault that never fired: its anchor never came (`anchor_ms` None), or it did and the fault
/// was still waiting for its offset (`due_ms`) when firing stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfired {
    pub index: u32,
    pub anchor_ms: Option<f64>,
    pub due_ms: Option<f64>,
}

#[derive(Debug, Clone)]
struct Waiting {
    index: u32,
    anchor: Anchor,
    /// Only this guest's observations anchor it.
    guest: Option<u32>,
    offset_ms: u64,
    anchor_ms: Option<f64>,
    anchored_by: Option<u32>,
    fired: bool,
}

/// Faults waiting for their triggers.
#[derive(Debug, Clone)]
pub struct Machine {
    waiting: Vec<Waiting>,
}

fn matches(anchor: &Anchor, e: &Event) -> bool {
    match (anchor, e) {
        (Anchor::WorkloadStart, Event::WorkloadStarted) => true,
        (Anchor::HopStart { hop }, Event::HopStarted { hop: h }) => hop == h,
        (Anchor::HopEnd { hop }, Event::HopEnded { hop: h }) => hop == h,
        (Anchor::Status { hop, status, side }, Event::Status { hop: h, side: s, status: st }) => {
            hop == h && side == s && status == st
        }
        (Anchor::Pass { hop, pass }, Event::Pass { hop: h, pass: p }) => hop == h && pass == p,
        (
            Anchor::PreSwitchover { hop },
            Event::Status { hop: h, side: Side::Source, status: MigrationStatus::PreSwitchover },
        ) => hop == h,
        _ => false,
    }
}

impl Machine {
    pub fn new(faults: &[Resolved]) -> Self {
        Self {
            waiting: faults
                .iter()
                .map(|f| Waiting {
                    index: f.index,
                    anchor: f.trigger.anchor.clone(),
                    guest: f.trigger.guest,
                    offset_ms: f.offset_ms,
                    anchor_ms: None,
                    anchored_by: None,
                    fired: false,
                })
                .collect(),
        }
    }

    /// `e` happened to guest `guest` (1-based; any for the workload's start) at `at_ms`:
    /// anchors it matches start their offsets; returns what is due.
    pub fn observe(&mut self, guest: u32, e: &Event, at_ms: f64) -> Vec<Firing> {
        let any = matches!(e, Event::WorkloadStarted);
        for w in &mut self.waiting {
            let theirs = any || w.guest.is_none_or(|g| g == guest);
            if w.anchor_ms.is_none() && theirs && matches(&w.anchor, e) {
                w.anchor_ms = Some(at_ms);
                w.anchored_by = (!any).then_some(guest);
            }
        }
        self.advance(at_ms)
    }

    /// It is `now_ms`: returns every fault that is due and has not fired.
    pub fn advance(&mut self, now_ms: f64) -> Vec<Firing> {
        let mut out = Vec::new();
        for w in &mut self.waiting {
            if let (false, Some(a)) = (w.fired, w.anchor_ms) {
                let due = a + w.offset_ms as f64;
                if due <= now_ms {
                    w.fired = true;
                    out.push(Firing { index: w.index, guest: w.anchored_by, anchor_ms: a, due_ms: due });
                }
            }
        }
        out
    }

    /// When the next anchored fault is due, if one is.
    pub fn next_due(&self) -> Option<f64> {
        self.waiting
            .iter()
            .filter(|w| !w.fired)
            .filter_map(|w| w.anchor_ms.map(|a| a + w.offset_ms as f64))
            .min_by(f64::total_cmp)
    }

    /// Every fault that has not fired, and why: its anchor never came, or it came and the
    /// offset had not elapsed when the run stopped firing. Nothing planned goes unaccounted.
    pub fn unfired(&self) -> Vec<Unfired> {
        self.waiting
            .iter()
            .filter(|w| !w.fired)
            .map(|w| Unfired {
                index: w.index,
                anchor_ms: w.anchor_ms,
                due_ms: w.anchor_ms.map(|a| a + w.offset_ms as f64),
            })
            .collect()
    }

    /// Whether a fault waits for guest `guest`'s hop `hop` at its pause before the switch-over
    /// (the hop then asks QEMU for that pause).
    pub fn holds_switchover(faults: &[Resolved], hop: u32, guest: u32) -> bool {
        faults.iter().any(|f| f.trigger.anchor == Anchor::PreSwitchover { hop } && f.trigger.keys_on(guest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::{Fault, Pick};
    use crate::trigger::Trigger;

    fn resolved(index: u32, anchor: Anchor, offset_ms: u64) -> Resolved {
        Resolved {
            index,
            name: format!("f{index}"),
            fault: Fault::OsdFreeze { osd: Pick::Id(0), duration_ms: 1000 },
            trigger: Trigger { anchor, offset_ms, random_within_ms: 0, guest: None },
            offset_ms,
            optional: false,
        }
    }

    fn status(hop: u32, side: Side, status: MigrationStatus) -> Event {
        Event::Status { hop, side, status }
    }

    #[test]
    fn anchors_fire_at_once_or_after_their_offset() {
        let faults = [
            resolved(0, Anchor::Status { hop: 1, status: MigrationStatus::Active, side: Side::Source }, 0),
            resolved(1, Anchor::Pass { hop: 1, pass: 2 }, 300),
            resolved(2, Anchor::WorkloadStart, 1000),
            resolved(3, Anchor::HopEnd { hop: 2 }, 0),
        ];
        let mut m = Machine::new(&faults);
        assert_eq!(m.observe(1, &Event::WorkloadStarted, 10.0), vec![]);
        assert_eq!(m.next_due(), Some(1010.0));
        // The destination's `active` is not the source's.
        assert!(m.observe(1, &status(1, Side::Destination, MigrationStatus::Active), 500.0).is_empty());
        let f = m.observe(1, &status(1, Side::Source, MigrationStatus::Active), 520.0);
        assert_eq!(f, vec![Firing { index: 0, guest: Some(1), anchor_ms: 520.0, due_ms: 520.0 }]);
        assert!(m.observe(1, &Event::Pass { hop: 1, pass: 2 }, 800.0).is_empty());
        let f = m.advance(1010.0);
        assert_eq!(f.iter().map(|f| f.index).collect::<Vec<_>>(), vec![2]);
        let f = m.advance(1100.0);
        assert_eq!(f, vec![Firing { index: 1, guest: Some(1), anchor_ms: 800.0, due_ms: 1100.0 }]);
        assert!(m.advance(5000.0).is_empty(), "each fires once");
        assert_eq!(m.unfired(), vec![Unfired { index: 3, anchor_ms: None, due_ms: None }]);
    }

    /// A fault whose anchor came but whose offset had not elapsed when firing stopped is not
    /// lost: it is listed with when it was due.
    #[test]
    fn a_fault_still_waiting_for_its_offset_is_accounted_for() {
        let faults = [resolved(0, Anchor::WorkloadStart, 5000), resolved(1, Anchor::HopStart { hop: 1 }, 0)];
        let mut m = Machine::new(&faults);
        assert!(m.observe(1, &Event::WorkloadStarted, 100.0).is_empty());
        assert_eq!(m.observe(1, &Event::HopStarted { hop: 1 }, 200.0).len(), 1);
        assert_eq!(m.unfired(), vec![Unfired { index: 0, anchor_ms: Some(100.0), due_ms: Some(5100.0) }]);
    }

    #[test]
    fn pre_switchover_is_the_sources_status_of_that_hop() {
        let faults = [resolved(0, Anchor::PreSwitchover { hop: 2 }, 0)];
        assert!(Machine::holds_switchover(&faults, 2, 1) && !Machine::holds_switchover(&faults, 1, 1));
        let mut m = Machine::new(&faults);
        assert!(m.observe(1, &status(1, Side::Source, MigrationStatus::PreSwitchover), 1.0).is_empty());
        assert_eq!(m.observe(1, &status(2, Side::Source, MigrationStatus::PreSwitchover), 2.0).len(), 1);
    }

    /// A trigger that names a guest keys on that guest's hop only; one that names none, on the
    /// first guest's to get there.
    #[test]
    fn a_trigger_naming_a_guest_waits_for_that_guest() {
        let mut named = resolved(0, Anchor::PreSwitchover { hop: 1 }, 0);
        named.trigger.guest = Some(3);
        let any = resolved(1, Anchor::HopStart { hop: 1 }, 0);
        let faults = [named, any];
        assert!(Machine::holds_switchover(&faults, 1, 3) && !Machine::holds_switchover(&faults, 1, 2));
        let mut m = Machine::new(&faults);
        let f = m.observe(2, &Event::HopStarted { hop: 1 }, 5.0);
        assert_eq!(f.iter().map(|f| f.index).collect::<Vec<_>>(), vec![1], "the first guest's start");
        let pre = status(1, Side::Source, MigrationStatus::PreSwitchover);
        assert!(m.observe(2, &pre, 10.0).is_empty(), "guest 2's pause is not guest 3's");
        assert_eq!(
            m.observe(3, &pre, 20.0),
            vec![Firing { index: 0, guest: Some(3), anchor_ms: 20.0, due_ms: 20.0 }]
        );
    }
}
