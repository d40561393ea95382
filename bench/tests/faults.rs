//! Every fault kind on the real lab: injected at its trigger, its effect seen in what was
//! measured, its undo done, nothing left behind. One lab, a small scenario per fault kind (runs
//! reuse a running lab). Ignored by a plain `cargo test`; `ci/test` runs them.

mod common;

use common::*;
use miglab::session::{run, RunOptions, Source};
use miglab::topology::lab::{self, Lab, LabOptions};
use miglab::topology::{Site, Topology};
use miglab_reports::{FaultRecord, Outcome, RunOutcome, RunResult, RunStatus};
use std::path::Path;

const LAB: &str = "t-faults";

/// Runs `toml` (a scenario without its name) on the lab; returns its result, whatever its status.
fn scenario(root: &Path, name: &str, toml: &str) -> RunResult {
    let dir = root.join("scenarios");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, format!("name = \"{name}\"\nseed = 5\n{toml}")).expect("write");
    let out = root.join("results");
    let opts = RunOptions {
        source: Source::Scenario(p),
        out: out.clone(),
        lab_root: root.into(),
        repetitions: None,
        lab_name: Some(LAB.into()),
        host_mode: None,
        binaries: Default::default(),
        topology: None,
    };
    if let Err(e) = run(&opts) {
        eprintln!("{name}: {e}");
    }
    serde_json::from_slice(&std::fs::read(out.join(name).join("1/result.json")).expect("result.json"))
        .expect("parses")
}

fn fault(r: &RunResult) -> &FaultRecord {
    let f = r.faults.first().unwrap_or_else(|| panic!("{}: no fault record: {:?}", r.scenario, r.problems));
    assert!(f.error.is_none(), "{}: {:?}", r.scenario, f.error);
    assert!(f.injected_ms.is_some(), "{}: never injected: {f:?}", r.scenario);
    f
}

/// O_DIRECT all the way to the OSDs (virtiofsd passes it on, ceph-fuse then skips its cache):
/// a fault on the storage shows in the guest's I/O.
const RANDRW: &str =
    "[workload]\nkind = \"fio\"\nname = \"rw\"\nrw = \"randrw\"\nbs = \"4k\"\nsize = \"8m\"\ndirect = true\n";
const NO_HOP: &str = "[migration]\ncount = 0\nwarmup_s = 8.0\n[run]\ncooldown_s = 1.0\n";
const ONE_HOP: &str = "[migration]\nwarmup_s = 2.0\nsettle_s = 2.0\n";

/// The window of fault 1.
fn window(r: &RunResult) -> &miglab_reports::Window {
    r.windows
        .iter()
        .find(|w| w.name == "fault 1")
        .unwrap_or_else(|| panic!("{}: no fault window", r.scenario))
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn every_fault_kind_has_its_effect_and_its_undo() {
    let root = lab_root();
    let _down = DownOnDrop { name: LAB, root: root.path() };
    let lab = Lab::up(&LabOptions { name: LAB.into(), root: root.path().into(), ..LabOptions::default() })
        .unwrap_or_else(|e| panic!("lab up: {e}"));
    let r = root.path();
    let healthy = |name: &str| {
        let (ok, summary) = lab.health().expect("health");
        assert!(ok, "{name}: Ceph not healthy after the run: {summary}");
        let st = lab::status(LAB, r).expect("status");
        let dead: Vec<_> = st.processes.iter().filter(|p| p.state != "running").map(|p| &p.name).collect();
        assert!(dead.is_empty(), "{name}: {dead:?} not running after the run");
    };

    // Daemons: the OSD goes away and comes back, Ceph is healthy again, and the guest's I/O
    // stalled meanwhile.
    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"osd-kill\"\nosd = 1\nrevive_after_ms = 3000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-osd-kill", &t);
    let f = fault(&res);
    assert_eq!((f.target.as_str(), f.undo.as_str()), ("osd.1", "osd.1 restarted"));
    assert!(f.cleared_ms.expect("cleared") - f.injected_ms.expect("injected") >= 3000.0, "{f:?}");
    assert!(f.healthy_after_ms.is_some() && !f.infra_not_recovered, "{f:?}");
    assert_eq!(res.status, RunStatus::Completed, "{:?}", res.problems);
    healthy("osd-kill");

    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"osd-freeze\"\nosd = 0\nduration_ms = 3000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-osd-freeze", &t);
    assert_eq!(fault(&res).undo, "osd.0 resumed");
    assert!(
        window(&res).io_stall_ms.expect("stall") > 500.0,
        "a frozen OSD stalls the writes: {:?}",
        window(&res)
    );
    healthy("osd-freeze");

    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"osd-out\"\nosd = 2\nduration_ms = 2000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-osd-out", &t);
    assert_eq!(fault(&res).undo, "osd.2 in");
    assert!(fault(&res).healthy_after_ms.is_some());
    healthy("osd-out");

    let meta = "[workload]\nkind = \"metadata\"\nfiles = 32\n";
    let t = format!("{meta}{NO_HOP}[[fault]]\nkind = \"mds-kill\"\nrevive_after_ms = 3000\ntrigger = {{ at = \"workload-start\", offset_ms = 500 }}\n");
    let res = scenario(r, "f-mds-kill", &t);
    let f = fault(&res);
    assert!(f.target.starts_with("mds."), "{f:?}");
    assert!(f.healthy_after_ms.is_some(), "the standby took over and the killed one came back: {f:?}");
    healthy("mds-kill");

    let t = format!("{meta}{NO_HOP}[[fault]]\nkind = \"mds-fail\"\ntrigger = {{ at = \"workload-start\", offset_ms = 500 }}\n");
    let res = scenario(r, "f-mds-fail", &t);
    assert!(fault(&res).healthy_after_ms.is_some(), "{:?}", res.faults);
    healthy("mds-fail");

    // The storage network: delay raises the measured latency of the reads it covers.
    let rd = "[workload]\nkind = \"fio\"\nname = \"rd\"\nrw = \"randread\"\nbs = \"4k\"\nsize = \"8m\"\ndirect = true\n";
    let t = format!("{rd}{NO_HOP}[[fault]]\nkind = \"storage-delay\"\ntarget = \"osds\"\nmax_ms = 100\nprobability = 1.0\nduration_ms = 3000\ntrigger = {{ at = \"workload-start\", offset_ms = 3000 }}\n");
    let res = scenario(r, "f-delay", &t);
    let f = fault(&res);
    assert_eq!(f.target, "every OSD");
    let (from, to) = (f.injected_ms.expect("in") as u64, f.cleared_ms.expect("out") as u64);
    let p99 = |inside: bool| {
        let mut v: Vec<u64> = res
            .series
            .iter()
            .filter(|b| {
                b.ops > 0
                    && (b.t_ms >= from && b.t_ms + 100 <= to) == inside
                    && (inside || b.t_ms + 100 < from)
            })
            .map(|b| b.p99_us)
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let (before, during) = (p99(false), p99(true));
    assert!(
        during > 3 * before && during > 20_000,
        "delay raises read latency: p99 {before} us before, {during} us during"
    );
    assert_eq!(res.status, RunStatus::Completed, "{:?}", res.problems);

    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"socket-failures\"\ntarget = \"client:c1\"\none_in = 20\nduration_ms = 3000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-sockets", &t);
    assert_eq!(fault(&res).target, "client.c1");
    let log = std::fs::read_to_string(r.join(LAB).join("logs/client.c1.log")).unwrap_or_default();
    assert!(log.contains("injecting socket failure"), "the client's messenger failed its sockets");
    assert!(fault(&res).undo.contains("no more socket failures"));

    let wr = "[workload]\nkind = \"fio\"\nname = \"wr\"\nrw = \"write\"\nbs = \"64k\"\nsize = \"32m\"\ndirect = true\n";
    let t = format!("{wr}{NO_HOP}[[fault]]\nkind = \"link-rate\"\nhost = \"c1\"\nrate_kbit = 4000\nduration_ms = 3000\ntrigger = {{ at = \"workload-start\", offset_ms = 2000 }}\n");
    let res = scenario(r, "f-rate", &t);
    let f = fault(&res);
    let (from, to) = (f.injected_ms.expect("in") as u64, f.cleared_ms.expect("out") as u64);
    let mb = |a: u64, b: u64| {
        let bytes: u64 =
            res.series.iter().filter(|x| x.t_ms >= a && x.t_ms + 100 <= b).map(|x| x.bytes).sum();
        bytes as f64 / ((b - a) as f64 / 1000.0) / 1e6
    };
    let during = mb(from + 500, to);
    assert!(during < 1.0, "4 Mbit/s holds writes to ~0.5 MB/s, measured {during:.2} MB/s");
    assert_eq!(f.undo, "unshaped");

    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"partition\"\nhost = \"c1\"\nduration_ms = 4000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-partition", &t);
    let w = window(&res);
    assert!(w.io_stall_ms.expect("stall") >= 3000.0, "no I/O while cut off: {w:?}");
    assert!(w.recovered_after_ms.is_some(), "I/O resumed after the heal: {w:?}");
    assert!(fault(&res).undo.starts_with("healed"), "{:?}", fault(&res));
    healthy("partition");

    // The migration stream: a cap lengthens the migration by about what it predicts.
    let rl = "[workload]\nkind = \"read-loop\"\n";
    let t = format!("{rl}{ONE_HOP}[[fault]]\nkind = \"migration-link\"\nrate_kbit = 160000\ntrigger = {{ at = \"hop-start\", hop = 1 }}\n");
    let res = scenario(r, "f-link", &t);
    let m = &res.migrations[0];
    assert!(m.completed() && m.uri.contains(&lab.layout().gateway.to_string()), "through the proxy: {m:?}");
    let predicted = m.transferred_bytes.expect("bytes") as f64 / (160e6 / 8.0) * 1000.0;
    let took = m.total_time_ms.expect("total") as f64;
    assert!(took >= 0.8 * predicted, "a 160 Mbit/s cap: {took} ms for {predicted:.0} ms of bytes");
    assert_eq!(res.status, RunStatus::Completed, "{:?}", res.problems);

    // virtiofsd and QEMU.
    let t = format!("expect = \"failed-source-running\"\n{RANDRW}{ONE_HOP}[[fault]]\nkind = \"virtiofsd-kill\"\nside = \"destination\"\ntrigger = {{ at = \"status\", status = \"active\", hop = 1 }}\n");
    let res = scenario(r, "f-vfsd-dst", &t);
    let m = &res.migrations[0];
    assert!(matches!(m.outcome, Outcome::Failed { source_running: true, .. }), "{:?}", m.outcome);
    let follow = res.migrations.iter().find(|m| m.follow_up).expect("a follow-up migration");
    assert!(follow.completed(), "the guest can still move: {:?}", follow.outcome);
    assert_eq!(res.outcome, Some(RunOutcome::FailedSourceRunning));
    assert_eq!(res.status, RunStatus::Completed, "the expected outcome: {:?}", res.problems);

    let t = format!("expect = \"failed-source-running\"\n{RANDRW}{ONE_HOP}[[fault]]\nkind = \"qemu-kill\"\nside = \"destination\"\ntrigger = {{ at = \"status\", status = \"active\", hop = 1 }}\n");
    let res = scenario(r, "f-qemu-dst", &t);
    assert!(
        matches!(res.migrations[0].outcome, Outcome::Failed { source_running: true, .. }),
        "{:?}",
        res.migrations[0].outcome
    );
    assert_eq!(res.status, RunStatus::Completed, "{:?}", res.problems);

    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"virtiofsd-freeze\"\nside = \"source\"\nduration_ms = 2000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-vfsd-freeze", &t);
    assert!(window(&res).io_stall_ms.expect("stall") >= 1500.0, "{:?}", window(&res));
    assert_eq!(fault(&res).undo, "resumed");
    assert_eq!(res.status, RunStatus::Completed, "{:?}", res.problems);

    let t = format!("expect = \"failed-source-running\"\n{rl}[migration]\nwarmup_s = 1.0\nmax_bandwidth = 2000000\nfollow_up = false\n[[fault]]\nkind = \"migrate-cancel\"\ntrigger = {{ at = \"hop-start\", hop = 1, offset_ms = 1000 }}\n");
    let res = scenario(r, "f-cancel", &t);
    let Outcome::Failed { error, source_running } = &res.migrations[0].outcome else {
        panic!("{:?}", res.migrations[0].outcome)
    };
    assert!(error.contains("cancel") && *source_running, "{error}");

    // A third party on the shared file system renames the guest's files away and back.
    let t = format!("{RANDRW}{NO_HOP}[[fault]]\nkind = \"third-party-rename\"\nhost = \"c2\"\nduration_ms = 1000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n");
    let res = scenario(r, "f-rename", &t);
    assert!(fault(&res).undo.ends_with("files renamed back"), "{:?}", fault(&res));
    assert!(lab.host("c1").expect("c1").mount_point().join("miglab/rw/rw.0.0").exists());

    // Nothing of any fault is left: every process runs, no link shaped or cut.
    healthy("the end");
    let state = lab.state();
    assert!(state.partitioned.is_empty());
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}

/// A fault's trigger at the pause before the switch-over: QEMU waits there until the OSD is
/// frozen, so the fault lands exactly at the switch-over; and the same seed gives the same
/// schedule on replay.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_fault_lands_exactly_at_the_switchover_and_replays() {
    let root = lab_root();
    let _down = DownOnDrop { name: LAB, root: root.path() };
    let lab = Lab::up(&LabOptions { name: LAB.into(), root: root.path().into(), ..LabOptions::default() })
        .unwrap_or_else(|e| panic!("lab up: {e}"));
    let t = format!("{RANDRW}{ONE_HOP}[[fault]]\nkind = \"osd-freeze\"\nosd = \"random\"\nduration_ms = 2000\ntrigger = {{ at = \"pre-switchover\", hop = 1 }}\n");
    let res = scenario(root.path(), "f-switch", &t);
    let f = fault(&res);
    let m = &res.migrations[0];
    assert!(m.completed(), "{:?}", m.outcome);
    let pre = m
        .timeline
        .iter()
        .find(|e| {
            matches!(
                e.event,
                miglab_reports::QmpEvent::Migration {
                    status: miglab_reports::MigrationStatus::PreSwitchover
                }
            )
        })
        .expect("the hop paused before its switch-over");
    // With pause-before-switchover QEMU stops the guest, then says pre-switchover, then waits.
    let resume = m.phases.resume_ms.expect("RESUME");
    let injected = f.injected_ms.expect("injected");
    assert!(
        pre.t_ms <= injected && injected <= resume,
        "frozen between pre-switchover ({}) and the destination's RESUME ({resume}): {injected}",
        pre.t_ms
    );
    // Replay: the same OSD.
    let again = root.path().join("again");
    let opts = RunOptions {
        source: Source::Replay(root.path().join("results/f-switch/1/result.json")),
        out: again.clone(),
        lab_root: root.path().into(),
        repetitions: None,
        lab_name: Some(LAB.into()),
        host_mode: None,
        binaries: Default::default(),
        topology: None,
    };
    let _ = run(&opts);
    let replayed: RunResult =
        serde_json::from_slice(&std::fs::read(again.join("f-switch/1/result.json")).expect("result"))
            .expect("parses");
    assert_eq!(replayed.plan["faults"], res.plan["faults"]);
    assert_eq!(fault(&replayed).target, f.target, "the same OSD");
    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}
