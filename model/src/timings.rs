//! Wall-clock timings of named phases (lab bring-up, VM boot, ...), so that every result can
//! say where its time went. Phases may overlap: each keeps its own start offset.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

/// One phase: when it started relative to the whole, and how long it took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub start_ms: f64,
    pub duration_ms: f64,
}

/// The phases of one operation and its total.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timings {
    #[serde(skip, default = "Instant::now")]
    origin: Instant,
    pub phases: Vec<Phase>,
    pub total_ms: f64,
}

impl Default for Timings {
    fn default() -> Self {
        Self::new()
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl Timings {
    pub fn new() -> Self {
        Self { origin: Instant::now(), phases: Vec::new(), total_ms: 0.0 }
    }

    /// Records a phase that ran from `start` until now.
    pub fn record(&mut self, name: &str, start: Instant) {
        let now = Instant::now();
        self.phases.push(Phase {
            name: name.to_string(),
            start_ms: ms(start.saturating_duration_since(self.origin)),
            duration_ms: ms(now.saturating_duration_since(start)),
        });
        self.total_ms = ms(now.saturating_duration_since(self.origin));
    }

    /// Runs `f` as the phase `name`.
    pub fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let out = f();
        self.record(name, start);
        out
    }

    /// Marks the end of the whole operation.
    pub fn finish(&mut self) {
        self.total_ms = ms(self.origin.elapsed());
    }

    pub fn phase(&self, name: &str) -> Option<&Phase> {
        self.phases.iter().find(|p| p.name == name)
    }
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<16} {:>9} {:>9}", "phase", "start ms", "took ms")?;
        for p in &self.phases {
            writeln!(f, "{:<16} {:>9.0} {:>9.0}", p.name, p.start_ms, p.duration_ms)?;
        }
        write!(f, "{:<16} {:>9} {:>9.0}", "total", "", self.total_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_keep_their_order_and_offsets() {
        let mut t = Timings::new();
        let a = Instant::now();
        t.record("network", a);
        t.time("mon", || std::thread::sleep(Duration::from_millis(2)));
        t.finish();
        assert_eq!(t.phases.len(), 2);
        assert_eq!(t.phases[0].name, "network");
        let mon = t.phase("mon").expect("mon phase");
        assert!(mon.duration_ms >= 2.0);
        assert!(mon.start_ms >= t.phases[0].start_ms);
        assert!(t.total_ms >= mon.start_ms + mon.duration_ms - 0.001);
        let text = t.to_string();
        assert!(text.contains("network") && text.contains("total"));
    }
}
