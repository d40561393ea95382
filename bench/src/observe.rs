//! Typed observations of a run, on one bus. The migration driver publishes what QEMU says (each
//! side's status changes, RAM passes, STOP and RESUME, `query-migrate` figures, a tick); the
//! run publishes when a hop's window ends; the collector publishes what the guest saw in each
//! window. Whoever needs them subscribes: the collector's windows, the progress line, the fault
//! trigger machine. Publishers never wait for subscribers (each has an unbounded queue), so a
//! slow subscriber cannot delay the timeline it observes.

use crate::clock::RunClock;
use miglab_model::{MigrationStatus, Outcome, QmpEvent, Side, Window};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What `query-migrate` on the source said.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub status: Option<MigrationStatus>,
    pub transferred_bytes: Option<u64>,
    pub remaining_bytes: Option<u64>,
    pub dirty_sync_count: Option<u64>,
    pub dirty_pages_rate: Option<u64>,
    pub expected_downtime_ms: Option<u64>,
    pub mbps: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// The workload's timed part began (its files are laid out).
    WorkloadStarted,
    /// `migrate` was sent for guest `guest`'s hop `hop` (guests count from 1).
    HopStarted { guest: u32, hop: u32, from: String, to: String },
    /// A QMP event of one side of hop `hop`, stamped when it arrived.
    Qmp { guest: u32, hop: u32, side: Side, event: QmpEvent },
    /// `query-migrate` on the source.
    Figures { guest: u32, hop: u32, figures: Figures },
    /// The hop is over: the guest runs on the destination (completed) or the source.
    HopEnded { guest: u32, hop: u32, outcome: Outcome },
    /// The hop's settle time is over: its window closes.
    Settled { guest: u32, hop: u32 },
    /// A window closed, with what the guest saw in it (the collector's figures).
    WindowClosed { guest: u32, window: Box<Window> },
    /// While a hop runs, every tick period.
    Tick { guest: u32, hop: u32 },
    /// Fault `index` of the plan took effect.
    FaultInjected { index: u32, name: String },
    /// Fault `index`'s undo took effect (or, for one without an undo, right after it).
    FaultCleared { index: u32 },
}

/// One observation on the run clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub at: Instant,
    pub at_ms: f64,
    pub what: Observed,
}

/// The bus. Cloning it gives another handle to the same bus.
#[derive(Debug, Clone)]
pub struct Bus {
    clock: RunClock,
    subscribers: Arc<Mutex<Vec<UnboundedSender<Observation>>>>,
}

impl Bus {
    pub fn new(clock: RunClock) -> Self {
        Self { clock, subscribers: Arc::new(Mutex::new(Vec::new())) }
    }

    pub fn clock(&self) -> RunClock {
        self.clock
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<UnboundedSender<Observation>>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every observation published from now on.
    pub fn subscribe(&self) -> UnboundedReceiver<Observation> {
        let (tx, rx) = unbounded_channel();
        self.lock().push(tx);
        rx
    }

    /// Publishes `what` as having happened now.
    pub fn publish(&self, what: Observed) {
        self.publish_at(Instant::now(), what)
    }

    /// Publishes `what` as having happened at `at` (an arrival stamp taken earlier).
    pub fn publish_at(&self, at: Instant, what: Observed) {
        let o = Observation { at, at_ms: self.clock.ms(at), what };
        match &o.what {
            Observed::Tick { .. } => tracing::trace!(t_ms = o.at_ms, what = ?o.what, "observed"),
            Observed::Qmp { .. } | Observed::Figures { .. } => {
                tracing::debug!(t_ms = o.at_ms, what = ?o.what, "observed")
            }
            _ => tracing::info!(t_ms = o.at_ms, what = ?o.what, "observed"),
        }
        // A subscriber that went away is dropped from the list.
        self.lock().retain(|s| s.send(o.clone()).is_ok());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_subscriber_sees_every_observation_in_order_on_the_run_clock() {
        let bus = Bus::new(RunClock::start());
        let mut a = bus.subscribe();
        let b = bus.subscribe();
        drop(b);
        bus.publish(Observed::HopStarted { guest: 1, hop: 1, from: "c1".into(), to: "c2".into() });
        bus.publish(Observed::Settled { guest: 1, hop: 1 });
        let first = a.try_recv().expect("first");
        let second = a.try_recv().expect("second");
        assert!(matches!(first.what, Observed::HopStarted { hop: 1, .. }));
        assert_eq!(second.what, Observed::Settled { guest: 1, hop: 1 });
        assert!(first.at_ms >= 0.0 && second.at_ms >= first.at_ms);
        assert_eq!(bus.lock().len(), 1, "the dropped subscriber is gone");
    }
}
