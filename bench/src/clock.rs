//! The run clock. Every event, window, fault and hop of a run is stamped on it: milliseconds
//! since the run started, on the host's monotonic clock. The wall time of its zero is kept, so a
//! result can say when that was; nothing is ever stamped with the wall clock itself.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy)]
pub struct RunClock {
    t0: Instant,
    wall: SystemTime,
}

impl RunClock {
    /// A clock whose zero is now.
    pub fn start() -> Self {
        Self { t0: Instant::now(), wall: SystemTime::now() }
    }

    /// `at` on this clock, in ms (negative before the zero).
    pub fn ms(&self, at: Instant) -> f64 {
        match at.checked_duration_since(self.t0) {
            Some(d) => d.as_secs_f64() * 1e3,
            None => -(self.t0.duration_since(at).as_secs_f64() * 1e3),
        }
    }

    pub fn now_ms(&self) -> f64 {
        self.ms(Instant::now())
    }

    /// The instant `ms` after the zero.
    pub fn at(&self, ms: f64) -> Instant {
        self.t0 + Duration::from_secs_f64(ms.max(0.0) / 1e3)
    }

    pub fn zero(&self) -> Instant {
        self.t0
    }

    pub fn wall_zero(&self) -> SystemTime {
        self.wall
    }

    /// `ms` on this clock as µs since the epoch (the wall clock of its zero, plus `ms`).
    pub fn unix_us(&self, ms: f64) -> i64 {
        let zero = self.wall.duration_since(UNIX_EPOCH).unwrap_or_default();
        zero.as_micros() as i64 + (ms * 1e3) as i64
    }

    pub fn unix_ms(&self) -> u64 {
        self.wall.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
    }
}

/// `t` as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_exact() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_542_096_789);
        assert_eq!(rfc3339(t), "2025-11-30T22:34:56.789Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }

    #[test]
    fn the_clock_maps_instants_both_ways() {
        let c = RunClock::start();
        let later = c.zero() + Duration::from_millis(1500);
        assert!((c.ms(later) - 1500.0).abs() < 1e-6);
        assert!(c.ms(c.zero() - Duration::from_millis(3)) < 0.0);
        assert!((c.ms(c.at(250.0)) - 250.0).abs() < 1e-3);
    }
}
