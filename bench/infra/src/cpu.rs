//! This machine's CPU time as `/proc/stat` counts it, so a timing can say how much CPU the
//! hypervisor took meanwhile: these machines are virtual, and steal (time a vCPU was ready but
//! not run) has been seen at 11.6 % since boot, enough to move a figure by a third.

/// The whole machine's CPU ticks: all of them, the stolen ones, and the idle ones (iowait
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    pub total: u64,
    pub steal: u64,
    pub idle: u64,
}

impl CpuTimes {
    /// Now, or None where `/proc/stat` cannot be read.
    pub fn now() -> Option<Self> {
        Self::parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// From `/proc/stat`'s first line: `cpu user nice system idle iowait irq softirq steal ...`
    /// (guest times are already inside user and nice, so they are not added again).
    pub fn parse(stat: &str) -> Option<Self> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line.split_whitespace().skip(1).map_while(|x| x.parse().ok()).collect();
        if v.len() < 8 {
            return None;
        }
        Some(CpuTimes { total: v[..8].iter().sum(), steal: v[7], idle: v[3] + v[4] })
    }

    /// The share of CPU time stolen between `self` and `later`, in percent.
    pub fn steal_pct(&self, later: &CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|t| *t > 0)?;
        Some(later.steal.saturating_sub(self.steal) as f64 * 100.0 / total as f64)
    }

    /// The share of CPU time spent running something (neither idle nor stolen) between `self`
    /// and `later`, in percent: how busy the machine was.
    pub fn busy_pct(&self, later: &CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|t| *t > 0)?;
        let idle = later.idle.saturating_sub(self.idle) + later.steal.saturating_sub(self.steal);
        Some(total.saturating_sub(idle) as f64 * 100.0 / total as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_eighth_column_over_the_first_eight() {
        let a = CpuTimes::parse("cpu  474 0 621 8965 31 0 11 0 0 0\ncpu0 1 2 3 4 5 6 7 8\n").expect("parsed");
        assert_eq!(a, CpuTimes { total: 10102, steal: 0, idle: 8996 });
        let b = CpuTimes::parse("cpu  574 0 621 8965 31 0 11 100 0 0\n").expect("parsed");
        assert_eq!(a.steal_pct(&b), Some(50.0));
        assert_eq!(a.busy_pct(&b), Some(50.0), "100 ticks of user, 100 stolen");
        assert_eq!(b.steal_pct(&b), None, "no time passed");
        assert_eq!(CpuTimes::parse("intr 1 2"), None);
    }
}
