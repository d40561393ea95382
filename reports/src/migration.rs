//! What one live migration did: QEMU's own figures and the phase timeline stamped on arrival.

use serde::{Deserialize, Serialize};

/// Which QEMU an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Source,
    Destination,
}

/// One QMP event (or miglab action) on the migration's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Host monotonic time since the `migrate` command was sent (negative: before it).
    pub t_ms: f64,
    pub side: Side,
    /// `MIGRATION`, `MIGRATION_PASS`, `STOP`, `RESUME`, or a miglab action such as `fault`.
    pub event: String,
    /// The status of a MIGRATION event, the pass number of MIGRATION_PASS, a fault's name.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Completed,
    /// QEMU's error text; the source kept (or resumed) running the guest.
    Failed {
        error: String,
    },
    /// The deadline passed; the migration was cancelled.
    TimedOut {
        after_ms: u64,
    },
}

/// The migration parameters that were set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MigrationParams {
    pub downtime_limit_ms: Option<u64>,
    /// Bytes per second.
    pub max_bandwidth: Option<u64>,
    pub multifd_channels: Option<u8>,
}

/// The phases derived from the timeline, in ms since `migrate`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phases {
    /// Source status `active`: setup is over, RAM is being sent.
    pub active_ms: Option<f64>,
    /// Source `STOP`: the guest is paused for the switch-over.
    pub stop_ms: Option<f64>,
    /// Destination `RESUME`: the guest runs again, on the destination.
    pub resume_ms: Option<f64>,
    /// Source status `completed`, `failed` or `cancelled`.
    pub end_ms: Option<f64>,
    /// From source STOP to destination RESUME, as the host saw the events arrive.
    pub paused_ms: Option<f64>,
    pub passes: u32,
}

impl Phases {
    /// Derives the phases from a timeline in any order.
    pub fn from_timeline(events: &[TimelineEvent]) -> Self {
        let mut ev: Vec<&TimelineEvent> = events.iter().collect();
        ev.sort_by(|a, b| a.t_ms.total_cmp(&b.t_ms));
        let first = |side: Side, name: &str, detail: Option<&str>| {
            ev.iter()
                .find(|e| {
                    e.side == side && e.event == name && (detail.is_none() || e.detail.as_deref() == detail)
                })
                .map(|e| e.t_ms)
        };
        let end = ev
            .iter()
            .find(|e| {
                e.side == Side::Source
                    && e.event == "MIGRATION"
                    && matches!(e.detail.as_deref(), Some("completed" | "failed" | "cancelled"))
            })
            .map(|e| e.t_ms);
        let stop_ms = first(Side::Source, "STOP", None);
        let resume_ms = first(Side::Destination, "RESUME", None);
        Phases {
            active_ms: first(Side::Source, "MIGRATION", Some("active")),
            stop_ms,
            resume_ms,
            end_ms: end,
            paused_ms: match (stop_ms, resume_ms) {
                (Some(s), Some(r)) if r >= s => Some(r - s),
                _ => None,
            },
            passes: ev.iter().filter(|e| e.side == Side::Source && e.event == "MIGRATION_PASS").count()
                as u32,
        }
    }
}

/// One hop of a guest from one host to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationRecord {
    pub from: String,
    pub to: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub params: MigrationParams,
    /// QEMU's figures from `query-migrate` on the source.
    pub total_time_ms: Option<u64>,
    pub downtime_ms: Option<u64>,
    pub setup_time_ms: Option<u64>,
    pub transferred_bytes: Option<u64>,
    pub ram_total_bytes: Option<u64>,
    /// Dirty-sync passes over RAM.
    pub dirty_sync_count: Option<u64>,
    pub mbps: Option<f64>,
    /// From `migrate` to the destination's RESUME (or the failure), on the host's clock.
    pub wall_ms: f64,
    pub phases: Phases,
    pub timeline: Vec<TimelineEvent>,
}

impl MigrationRecord {
    pub fn completed(&self) -> bool {
        self.outcome == Outcome::Completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: f64, side: Side, event: &str, detail: Option<&str>) -> TimelineEvent {
        TimelineEvent { t_ms: t, side, event: event.into(), detail: detail.map(Into::into) }
    }

    /// The events a real TCG migration of 512 MiB delivered, shuffled as two QMP streams may
    /// interleave them.
    #[test]
    fn phases_come_from_a_scripted_event_sequence() {
        use Side::*;
        let events = vec![
            ev(920.0, Destination, "RESUME", None),
            ev(0.4, Source, "MIGRATION", Some("setup")),
            ev(1.1, Source, "MIGRATION", Some("active")),
            ev(1.2, Source, "MIGRATION_PASS", Some("1")),
            ev(-3.0, Destination, "MIGRATION", Some("setup")),
            ev(640.0, Source, "MIGRATION_PASS", Some("2")),
            ev(880.0, Source, "STOP", None),
            ev(881.0, Source, "MIGRATION", Some("device")),
            ev(905.0, Source, "MIGRATION", Some("completed")),
            ev(30.0, Destination, "MIGRATION", Some("active")),
            ev(919.0, Destination, "MIGRATION", Some("completed")),
        ];
        let p = Phases::from_timeline(&events);
        assert_eq!(p.active_ms, Some(1.1));
        assert_eq!(p.stop_ms, Some(880.0));
        assert_eq!(p.resume_ms, Some(920.0));
        assert_eq!(p.end_ms, Some(905.0));
        assert_eq!(p.paused_ms, Some(40.0));
        assert_eq!(p.passes, 2);
    }

    #[test]
    fn a_failed_migration_has_no_pause() {
        use Side::*;
        let events = vec![
            ev(1.0, Source, "MIGRATION", Some("active")),
            ev(500.0, Source, "STOP", None),
            ev(510.0, Source, "MIGRATION", Some("failed")),
            ev(512.0, Source, "RESUME", None),
        ];
        let p = Phases::from_timeline(&events);
        assert_eq!(p.end_ms, Some(510.0));
        assert_eq!(p.resume_ms, None, "the source's RESUME is not the destination's");
        assert_eq!(p.paused_ms, None);
    }

    #[test]
    fn records_serialize_with_their_outcome() {
        let r = MigrationRecord {
            from: "c1".into(),
            to: "c2".into(),
            outcome: Outcome::Failed { error: "Unable to write to socket".into() },
            params: MigrationParams::default(),
            total_time_ms: None,
            downtime_ms: None,
            setup_time_ms: None,
            transferred_bytes: None,
            ram_total_bytes: None,
            dirty_sync_count: None,
            mbps: None,
            wall_ms: 12.0,
            phases: Phases::default(),
            timeline: vec![],
        };
        let j = serde_json::to_value(&r).expect("json");
        assert_eq!(j["outcome"], "failed");
        assert_eq!(j["error"], "Unable to write to socket");
        let back: MigrationRecord = serde_json::from_value(j).expect("back");
        assert_eq!(back, r);
    }
}
