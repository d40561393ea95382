//! Windows: the longest heartbeat gap and the longest I/O stall that overlap a stretch of time
//! (a migration, a fault). A gap is measured between two events (heartbeats, successful
//! completions) that both arrived; a figure that cannot be measured that way is absent, with
//! the reason, never 0. A gap still open when its window closes is measured to the event that
//! ends it, or marked unended if the stream ends first.

use miglab_model::{Window, WindowKind};
use std::time::{Duration, Instant};

/// The longest gap between consecutive events seen so far.
#[derive(Debug, Clone, Default)]
pub(super) struct Gaps {
    /// The last event: when it arrived, and the guest's clock at it (heartbeats only).
    last: Option<(Instant, Option<u64>)>,
    /// The longest gap: its length, and how far the guest's clock moved across it.
    max: Option<(Duration, Option<u64>)>,
}

impl Gaps {
    /// Starts from the last event before the window (if any).
    pub(super) fn from(last: Option<(Instant, Option<u64>)>) -> Self {
        Self { last, max: None }
    }

    pub(super) fn event(&mut self, at: Instant, guest_ns: Option<u64>) {
        if let Some((t, g)) = self.last {
            let gap = at.saturating_duration_since(t);
            if self.max.is_none_or(|(m, _)| gap > m) {
                let guest = match (g, guest_ns) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                self.max = Some((gap, guest));
            }
        }
        self.last = Some((at, guest_ns));
    }

    /// At the window's close: the gap still open then (since the last event), whatever its
    /// length so far — it may outlast the window and become its longest.
    fn open_gap_at(&self, at: Instant) -> Option<(Instant, Option<u64>, Duration)> {
        let (t, g) = self.last?;
        Some((t, g, at.saturating_duration_since(t)))
    }
}

/// Which figure a trailing gap belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Figure {
    Heartbeat,
    Stall,
}

/// A gap that outlived its window: measured when the next event arrives.
#[derive(Debug, Clone)]
pub(super) struct Trailing {
    pub window: usize,
    pub figure: Figure,
    pub start: Instant,
    pub guest_ns: Option<u64>,
}

/// A window being measured.
#[derive(Debug, Clone)]
pub(super) struct OpenWindow {
    pub name: String,
    pub kind: WindowKind,
    pub start: Instant,
    pub heartbeats: Gaps,
    pub stalls: Gaps,
    pub ops: u64,
    pub errors: u64,
}

impl OpenWindow {
    pub(super) fn new(
        name: &str,
        kind: WindowKind,
        start: Instant,
        last_hb: Option<(Instant, u64)>,
        last_completion: Option<Instant>,
    ) -> Self {
        Self {
            name: name.into(),
            kind,
            start,
            heartbeats: Gaps::from(last_hb.map(|(t, g)| (t, Some(g)))),
            stalls: Gaps::from(last_completion.map(|t| (t, None))),
            ops: 0,
            errors: 0,
        }
    }

    /// Closes the window at `at` (times in ms through `ms`); returns it and the gaps that are
    /// still open and the longest so far.
    pub(super) fn close(
        self,
        at: Instant,
        ms: impl Fn(Instant) -> f64,
    ) -> (Window, Vec<(Figure, Instant, Option<u64>)>) {
        let mut trailing = Vec::new();
        let mut unmeasured = Vec::new();
        let hb_open = self.heartbeats.open_gap_at(at);
        let (heartbeat_gap_ms, guest_clock_gap_ms) = match (self.heartbeats.max, hb_open) {
            (max, Some((t, g, open))) => {
                trailing.push((Figure::Heartbeat, t, g));
                // Provisional until the heartbeat that ends the open gap arrives.
                match max {
                    Some((gap, gg)) if gap > open => {
                        (Some(gap.as_secs_f64() * 1e3), gg.map(|g| g as f64 / 1e6))
                    }
                    _ => (Some(open.as_secs_f64() * 1e3), None),
                }
            }
            (Some((gap, g)), None) => (Some(gap.as_secs_f64() * 1e3), g.map(|g| g as f64 / 1e6)),
            (None, None) => {
                unmeasured.push("heartbeat gap: no heartbeat arrived before or in the window".into());
                (None, None)
            }
        };
        let stall_open = self.stalls.open_gap_at(at);
        let io_stall_ms = match (self.stalls.max, stall_open) {
            (max, Some((t, _, open))) => {
                trailing.push((Figure::Stall, t, None));
                Some(max.map_or(open, |(m, _)| m.max(open)).as_secs_f64() * 1e3)
            }
            (Some((gap, _)), None) => Some(gap.as_secs_f64() * 1e3),
            (None, None) => {
                unmeasured.push("I/O stall: no op completed successfully before or in the window".into());
                None
            }
        };
        let window = Window {
            name: self.name,
            kind: self.kind,
            start_ms: ms(self.start),
            end_ms: ms(at),
            heartbeat_gap_ms,
            heartbeat_gap_unended: false,
            guest_clock_gap_ms,
            io_stall_ms,
            io_stall_unended: stall_open.is_some(),
            unmeasured,
            recovered_after_ms: None,
            ops: self.ops,
            errors: self.errors,
        };
        (window, trailing)
    }
}

/// Ends a trailing gap of `w` at `at` (an event, or the stream's end when `unended`): it is the
/// window's figure if it turned out the longest.
pub(super) fn end_trailing(w: &mut Window, t: &Trailing, at: Instant, guest_ns: Option<u64>, unended: bool) {
    let gap = at.saturating_duration_since(t.start).as_secs_f64() * 1e3;
    match t.figure {
        Figure::Heartbeat => {
            // The stream ended in this gap: the guest was lost in it, longest or not.
            w.heartbeat_gap_unended = unended;
            if gap >= w.heartbeat_gap_ms.unwrap_or(0.0) {
                w.heartbeat_gap_ms = Some(gap);
                w.guest_clock_gap_ms = match (t.guest_ns, guest_ns) {
                    (Some(a), Some(b)) if !unended => Some(b.saturating_sub(a) as f64 / 1e6),
                    _ => None,
                };
                if unended {
                    w.unmeasured.push(
                        "guest clock gap: the stream ended during the longest heartbeat gap (no heartbeat ended it)"
                            .into(),
                    );
                }
            }
        }
        Figure::Stall => {
            w.io_stall_ms = Some(w.io_stall_ms.unwrap_or(0.0).max(gap));
            w.io_stall_unended = unended;
        }
    }
}
