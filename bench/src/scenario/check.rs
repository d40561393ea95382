//! What `miglab check` refuses in a scenario that parses: every field's range, the knobs'
//! combinations, a finding's bounds, a workload that would not fit its guest — each problem with
//! its line and what to write instead.

use super::*;

/// Limits a scenario's times must respect.
const MAX_SECONDS: f64 = 86_400.0;

/// Collects problems with their lines.
pub(super) struct Checker<'a> {
    pub(super) text: &'a str,
    pub(super) list: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn add(&mut self, table: &str, key: &str, message: String) {
        let field = match (table.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => table.to_string(),
            (false, false) => format!("{table}.{key}"),
        };
        self.list.push(Problem { line: line_of(self.text, table, key), field, message });
    }

    pub(super) fn seconds(&mut self, table: &str, key: &str, v: f64, positive: bool) {
        let bad = !v.is_finite() || v < 0.0 || (positive && v == 0.0) || v > MAX_SECONDS;
        if bad {
            let want = if positive { "more than 0" } else { "0 or more" };
            self.add(
                table,
                key,
                format!("{v} is not a time: give seconds, {want} and at most {MAX_SECONDS}"),
            );
        }
    }
}

impl Scenario {
    pub(super) fn check_fields(&self, c: &mut Checker<'_>) {
        if let Some(why) = name_problem(&self.name) {
            c.add("", "name", why);
        }
        if let Some(f) = &self.finding {
            self.check_finding(f, c);
        }
        if self.repetitions == 0 || self.repetitions > 10_000 {
            c.add("", "repetitions", format!("{} must be between 1 and 10000", self.repetitions));
        }
        if miglab_infra::topology::layout::validate_name(&self.lab.name).is_err() {
            c.add(
                "lab",
                "name",
                format!("'{}': use 1 to 16 characters from a-z, 0-9 and '-'", self.lab.name),
            );
        }
        for (field, why) in self.guest.problems() {
            c.add("guest", field, why);
        }
        for (field, why) in self.guests.problems() {
            c.add("guests", field, why);
        }
        if self.migration.parallel == Some(0) {
            c.add(
                "migration",
                "parallel",
                "0: give 1 or more (as many as guests.count or more: all at once), or leave it out".into(),
            );
        }
        let m = &self.migration;
        if m.count > 1000 {
            c.add(
                "migration",
                "count",
                format!("{} migrations is more than the 1000 a run may make", m.count),
            );
        }
        c.seconds("migration", "warmup_s", m.warmup_s, false);
        c.seconds("migration", "settle_s", m.settle_s, false);
        c.seconds("migration", "timeout_s", m.timeout_s, true);
        c.seconds("migration", "switchover_hold_s", m.switchover_hold_s, true);
        if m.downtime_limit_ms == Some(0) {
            c.add(
                "migration",
                "downtime_limit_ms",
                "must be more than 0 (leave it out for QEMU's default)".into(),
            );
        }
        if m.max_bandwidth == Some(0) {
            c.add(
                "migration",
                "max_bandwidth",
                "must be more than 0 bytes/s (leave it out for QEMU's default)".into(),
            );
        }
        if let Some(n) = m.destination_nice.filter(|n| !(-20..=19).contains(n)) {
            c.add("migration", "destination_nice", format!("{n}: give a niceness from -20 to 19, e.g. -10"));
        }
        self.check_tuning(c);
        for (key, v) in [
            ("degraded_stall_ms", self.outcome.degraded_stall_ms),
            ("fs_hung_ms", self.outcome.fs_hung_ms),
            ("guest_lost_ms", self.outcome.guest_lost_ms),
        ] {
            if !(v.is_finite() && v > 0.0) {
                c.add("outcome", key, format!("{v}: give milliseconds, more than 0"));
            }
        }
        // Faults are checked as the plan will resolve them (the lab's 3 OSDs).
        let u = self.fault_universe(
            &(0..miglab_infra::topology::ceph::ClusterSpec::DEFAULT_OSDS).collect::<Vec<_>>(),
        );
        if let Err(miglab_faults::schedule::ScheduleError::Invalid { index, why, .. }) =
            miglab_faults::resolve(&self.faults, 0, 0, &u)
        {
            let line = self.fault_line(c.text, index as usize);
            c.list.push(Problem { line, field: format!("fault[{}]", index + 1), message: why });
        }
        for (key, why) in self.ceph.problems() {
            c.add("ceph", key, why);
        }
        c.seconds("run", "cooldown_s", self.run.cooldown_s, false);
        c.seconds("run", "layout_timeout_s", self.run.layout_timeout_s, true);
        match (&self.workload, &self.fio_file) {
            (Some(w), None) => {
                if let Err(e) = w.validate() {
                    c.add("workload", "", e);
                }
            }
            (None, Some(f)) => {
                if f.as_os_str().is_empty() {
                    c.add("", "fio_file", "names no file: give the job file's path".into());
                }
            }
            _ => c.add(
                "",
                "workload",
                "give either a [workload] table or fio_file = \"job.fio\", not both or neither".into(),
            ),
        }
    }

    /// A finding's claim must be one its runs can judge.
    fn check_finding(&self, f: &miglab_model::Finding, c: &mut Checker<'_>) {
        if !f.doc.starts_with('#') {
            c.add(
                "finding",
                "doc",
                format!("'{}': give the heading's anchor in docs/findings.md, '#…'", f.doc),
            );
        }
        if f.holds.is_empty() && self.expect.is_none() {
            c.add("finding", "holds", "a claim needs a bound on a figure or an `expect` to be judged".into());
        }
        for b in &f.holds {
            if !miglab_reports::findings::is_figure(&b.figure) {
                c.add(
                    "finding",
                    "holds",
                    format!(
                        "figure '{}': use one `miglab compare` knows ({}, {}, p99_us.<op>, downtime.<part>_ms) or {}, max_us.<op>",
                        b.figure,
                        miglab_reports::compare::METRIC_KINDS.join(", "),
                        miglab_reports::compare::FLEET_KINDS.join(", "),
                        miglab_reports::findings::OWN_FIGURES.join(", ")
                    ),
                );
            }
            let finite = |v: Option<f64>| v.is_none_or(f64::is_finite);
            let ordered = match (b.at_least, b.at_most) {
                (Some(lo), Some(hi)) => lo <= hi,
                (None, None) => false,
                _ => true,
            };
            if !finite(b.at_least) || !finite(b.at_most) || !ordered {
                c.add(
                    "finding",
                    "holds",
                    format!("figure '{}': give at_least and/or at_most, at_least ≤ at_most", b.figure),
                );
            }
        }
    }

    /// The knobs of `[migration.tuning]`, the dirty-rate window and the dirtying load.
    fn check_tuning(&self, c: &mut Checker<'_>) {
        let (m, t) = (&self.migration, &self.migration.tuning);
        let at = "migration.tuning";
        if t.multifd_channels == Some(0) {
            c.add(at, "multifd_channels", "must be 1 or more (leave it out for no multifd)".into());
        }
        if let Some(z) = &t.multifd_compression {
            if !Tuning::COMPRESSIONS.contains(&z.as_str()) {
                c.add(
                    at,
                    "multifd_compression",
                    format!("'{z}': use one of {}", Tuning::COMPRESSIONS.join(", ")),
                );
            } else if t.multifd_channels.is_none() {
                c.add(
                    at,
                    "multifd_compression",
                    "compresses multifd channels: give multifd_channels too".into(),
                );
            }
        }
        if let Some(a) = &t.auto_converge {
            if !(1..=99).contains(&a.initial_pct) || !(1..=100).contains(&a.increment_pct) {
                c.add(
                    at,
                    "auto_converge",
                    format!(
                        "initial_pct {} and increment_pct {}: give 1-99 and 1-100 (QEMU's defaults: 20, 10)",
                        a.initial_pct, a.increment_pct
                    ),
                );
            }
        }
        for (key, v) in [
            ("xbzrle_cache_mib", t.xbzrle_cache_mib),
            ("avail_switchover_bandwidth", t.avail_switchover_bandwidth),
            ("dirty_limit_mib_s", t.dirty_limit_mib_s),
        ] {
            if v == Some(0) {
                c.add(at, key, "must be more than 0 (leave it out for QEMU's default)".into());
            }
        }
        if let Some(w) = m.calc_dirty_rate_s {
            if !(w.is_finite() && (w == 0.0 || (0.1..=60.0).contains(&w))) {
                c.add(
                    "migration",
                    "calc_dirty_rate_s",
                    format!("{w}: give 0.1 to 60 seconds, or 0 for never"),
                );
            }
        }
        if let Some(d) = &self.dirty {
            if d.size_mib == 0 {
                c.add("dirty", "size_mib", "must be 1 or more MiB".into());
            }
            if !(d.rate_mib_s.is_finite() && d.rate_mib_s >= 0.0) {
                c.add(
                    "dirty",
                    "rate_mib_s",
                    format!("{}: give MiB/s, 0 for as fast as the guest can", d.rate_mib_s),
                );
            }
        }
    }

    /// Every guest's memory must hold what the engine tracks per block of its workload, and
    /// the dirtying load's working set.
    pub(super) fn check_workload_fits(&self, w: &Workload, c: &mut Checker<'_>) {
        if let Some(d) = &self.dirty {
            let least =
                (1..=self.guests.count).map(|i| self.guests.memory_mib(&self.guest, i)).min().unwrap_or(0);
            if d.size_mib > least / 2 {
                c.add(
                    "dirty",
                    "size_mib",
                    format!(
                        "{} MiB is more than half of the smallest guest's {least} MiB: the guest's kernel, page cache and workload need the rest; use a smaller size_mib or more guest.memory_mib",
                        d.size_mib
                    ),
                );
            }
        }
        for i in 1..=self.guests.count {
            let memory = self.guests.memory_mib(&self.guest, i);
            let need = self.guests.workload(w, i).tracked_bytes();
            if need > memory * (1 << 20) / 4 {
                let whose = if self.guests.count > 1 { format!("guest {i}'s") } else { "the guest's".into() };
                c.add(
                    "workload",
                    "size",
                    format!(
                        "the engine keeps {} MiB of state for this workload (12 bytes per verified unit), more than a quarter of {whose} {memory} MiB: use a larger bs, a smaller size, or more guest.memory_mib",
                        need >> 20,
                    ),
                );
                return;
            }
        }
    }
}
