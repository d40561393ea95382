//! Several guests on the real lab: three migrated at once, there and back, every block of every
//! guest verified and one figure set per guest, with an OSD frozen at guest 3's switch-over
//! only; then two guests one at a time. Ignored by a plain `cargo test`; `ci/test` runs it.

mod common;

use common::*;
use miglab_model::{MigrationStatus, QmpEvent, RunResult, RunStatus, Side};

/// Each guest's own random-write job, verified; an OSD frozen for 1.5 s when guest 3's first
/// hop pauses before its switch-over.
const AT_ONCE: &str = r#"expect = ["completed", "completed-degraded"]
[guest]
memory_mib = 256
[guests]
count = 3
[workload]
kind = "fio"
rw = "randrw"
bs = "4k"
size = "2m"
rate_iops = 100
direct = true
[migration]
count = 2
warmup_s = 1.0
settle_s = 1.0
[run]
cooldown_s = 0.5
[[fault]]
kind = "osd-freeze"
osd = 0
duration_ms = 1500
trigger = { at = "pre-switchover", hop = 1, guest = 3 }
"#;

fn paused_before_switchover(r: &RunResult, guest: usize) -> bool {
    r.guests[guest - 1].migrations[0].timeline.iter().any(|e| {
        e.side == Side::Source && e.event == (QmpEvent::Migration { status: MigrationStatus::PreSwitchover })
    })
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn three_guests_migrate_at_once_each_verified_with_a_figure_set_of_its_own() {
    let t = TestLab::up("tguests");
    let r = t.run(&ScenarioFile::new("three").with(AT_ONCE));
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.problems, r.error);
    assert_eq!(r.guests.len(), 3);
    let mut dirs = Vec::new();
    for g in &r.guests {
        let who = format!("guest {}", g.guest);
        assert_eq!(g.migrations.len(), 2, "{who}: {:?}", g.migrations);
        assert!(g.migrations.iter().all(|m| m.completed() && m.guest == g.guest), "{who}");
        for hop in [1, 2] {
            let w =
                g.windows.iter().find(|w| w.hop() == Some(hop)).unwrap_or_else(|| panic!("{who}: hop {hop}"));
            assert!(w.heartbeat_gap_ms.is_some() && w.io_stall_ms.is_some(), "{who}: {w:?}");
        }
        let v = g.verification.as_ref().unwrap_or_else(|| panic!("{who}: verified"));
        assert!(v.blocks >= 512 && v.mismatched == 0 && v.missing == 0 && !v.incomplete, "{who}: {v:?}");
        assert!(g.ops.iter().any(|o| o.op == "write" && o.count > 0), "{who}: {:?}", g.ops);
        assert!(g.stream.heartbeats > 0 && g.stream.bad_frames == 0, "{who}: {:?}", g.stream);
        dirs.push(g.workload["directory"].as_str().unwrap_or_default().to_string());
    }
    dirs.dedup();
    assert_eq!(dirs.len(), 3, "each guest's files apart: {dirs:?}");
    // At once: every guest's first hop began before any of them ended.
    let hop1: Vec<_> = r.guests.iter().map(|g| &g.migrations[0]).collect();
    let last_start = hop1.iter().map(|m| m.started_ms).fold(0.0, f64::max);
    let first_end = hop1.iter().map(|m| m.started_ms + m.wall_ms).fold(f64::INFINITY, f64::min);
    assert!(last_start < first_end, "the three hops overlapped: {last_start:.0} ≥ {first_end:.0}");
    let f = r.fleet.as_ref().expect("the fleet's figures");
    assert_eq!((f.guests, f.parallel, f.evacuations.len()), (3, 3, 2));
    assert!(
        f.evacuations.iter().all(|e| e.guests == 3 && e.completed == 3 && e.evacuation_ms > 0.0),
        "{f:?}"
    );
    assert_eq!(f.qemu_downtime_ms.map(|d| d.n), Some(6), "{f:?}");
    // The fault keyed on guest 3's switch-over: only guest 3 paused for it, and it says so.
    let fault = &r.faults[0];
    assert_eq!((fault.guest, fault.target.as_str()), (Some(3), "osd.0"), "{fault:?}");
    assert!(paused_before_switchover(&r, 3), "guest 3 was held at its pause");
    assert!(!paused_before_switchover(&r, 1) && !paused_before_switchover(&r, 2), "no other guest was held");
    let m3 = &r.guests[2].migrations[0];
    let injected = fault.injected_ms.expect("injected");
    assert!(
        m3.started_ms < injected && m3.phases.resume_ms.is_some_and(|t| t > injected),
        "{fault:?} {m3:?}"
    );
    // Every guest's own files beside the first's.
    let dir = t.root().join("results/three/1");
    for f in ["timeline-g2.csv", "events-g3.csv", "latency-g3.hlog", "report.html"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let html = std::fs::read_to_string(dir.join("report.html")).expect("report");
    for want in ["id=\"guests\"", "migrations over the run", "osd.0 (at guest 3&#39;s hop)", "g3 "] {
        assert!(html.contains(want) || html.contains(&want.replace("&#39;", "'")), "the report has {want}");
    }

    // One at a time: guest 2's hop starts after guest 1's has ended.
    let one = ScenarioFile::new("one-at-a-time").with(
        "[guest]\nmemory_mib = 256\n[guests]\ncount = 2\n[workload]\nkind = \"read-loop\"\n[migration]\ncount = 1\nparallel = 1\nwarmup_s = 1.0\nsettle_s = 0.5\n[run]\ncooldown_s = 0.2\n",
    );
    let r = t.run(&one);
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.problems, r.error);
    let mut hops: Vec<_> = r.guests.iter().map(|g| g.migrations[0].clone()).collect();
    hops.sort_by(|a, b| a.started_ms.total_cmp(&b.started_ms));
    assert!(hops[1].started_ms >= hops[0].started_ms + hops[0].wall_ms, "{hops:?}");
    let f = r.fleet.as_ref().expect("fleet");
    assert_eq!(f.parallel, 1);
    assert!(f.evacuations[0].evacuation_ms >= hops[0].wall_ms + hops[1].wall_ms, "{f:?}");
    t.down_clean();
}
