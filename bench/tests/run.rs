//! `miglab run` end to end, and data verification against a corrupted block. Real lab, real
//! guest; ignored by a plain `cargo test`, run by `ci/test`.

mod common;

use common::*;
use miglab::readloop::status;
use miglab::run::{run, RunOptions};
use miglab::topology::lab::{Lab, LabOptions};
use miglab::vm::{Vm, VmSpec};
use miglab::Topology;
use miglab_reports::{RunResult, RunStatus};
use miglab_workloads::control::{Command, Message};
use miglab_workloads::job::{FioJob, Rw, Size, Workload};
use miglab_workloads::verify::Problem;
use std::path::Path;
use std::time::{Duration, Instant};

fn scenario(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"))
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn the_smoke_scenario_measures_the_pause_and_loses_nothing() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-smoke", root: root.path() };
    let out = root.path().join("results");
    let opts = RunOptions {
        scenario: scenario("smoke"),
        out: out.clone(),
        lab_root: root.path().into(),
        repetitions: None,
        lab_name: Some("t-smoke".into()),
        host_mode: None,
    };
    let dirs = run(&opts).unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(dirs, vec![out.join("smoke/1")]);
    let dir = &dirs[0];
    let r: RunResult = serde_json::from_slice(&std::fs::read(dir.join("result.json")).expect("result.json"))
        .expect("parses");
    assert_eq!(r.status, RunStatus::Completed, "{:?}", r.error);
    assert_eq!(r.schema_version, miglab_reports::result::SCHEMA_VERSION);
    assert!(
        r.provenance.qemu.is_some() && r.provenance.ceph.is_some() && r.provenance.guest_kernel.is_some()
    );
    let reads = r.ops.iter().find(|o| o.op == "readfile").expect("read-loop ops");
    assert!(reads.count > 10 && reads.guest.count == reads.count, "a non-empty histogram: {reads:?}");
    assert_eq!(reads.errors + reads.mismatches, 0);
    assert_eq!(r.migrations.len(), 1);
    assert!(r.migrations[0].completed(), "{:?}", r.migrations[0].outcome);
    let w = &r.windows[0];
    let downtime = w.qemu_downtime_ms.expect("QEMU's downtime") as f64;
    // The guest-visible pause is never shorter than QEMU's downtime minus one heartbeat.
    assert!(
        w.heartbeat_gap_ms >= downtime - 1.0,
        "heartbeat gap {} < downtime {downtime} - 1",
        w.heartbeat_gap_ms
    );
    assert!(w.guest_clock_gap_ms < w.heartbeat_gap_ms, "the guest clock stood still during the pause: {w:?}");
    let v = r.verification.as_ref().expect("verified");
    assert_eq!((v.mismatched, v.missing), (0, 0));
    assert!(
        r.heartbeats > 1000 && r.heartbeats_missing == 0,
        "{} heartbeats, {} missing",
        r.heartbeats,
        r.heartbeats_missing
    );
    for f in ["timeline.csv", "events.csv", "latency.hlog", "logs/c1.0/console.log", "logs/lab/cluster.log"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let hlog = std::fs::read_to_string(dir.join("latency.hlog")).expect("hlog");
    assert!(hlog.contains("Tag=readfile,"), "interval log has histograms");
    // The run brought its lab up, so it took it down again.
    assert!(!root.path().join("t-smoke/state.json").exists());
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_byte_flipped_from_the_host_is_the_one_block_verify_reports() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-flip", root: root.path() };
    let lab =
        Lab::up(&LabOptions { name: "t-flip".into(), root: root.path().into(), ..LabOptions::default() })
            .unwrap_or_else(|e| panic!("lab up: {e}"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    rt.block_on(async {
        let mut vm =
            Vm::start(&lab, &VmSpec::new("vm0"), "c1", 0, false).await.unwrap_or_else(|e| panic!("{e}"));
        let mut job = FioJob::new("flip", Rw::Randread);
        job.size = Size(1 << 20);
        let start = Command::Start { workload: Workload::Fio(job), seed: 11 };
        assert!(matches!(vm.control.request(start, Duration::from_secs(30)).await, Ok(Message::Ok { .. })));
        let deadline = Instant::now() + Duration::from_secs(120);
        while status(&mut vm).await.expect("status").laying_out > 0 {
            assert!(Instant::now() < deadline, "layout never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Flip one byte of block 37 through the host's own CephFS mount, while the guest reads.
        let file = lab.host("c1").expect("c1").mount_point().join("miglab/flip/flip.0.0");
        let mut data = std::fs::read(&file).expect("read through c1");
        data[37 * 4096 + 1234] ^= 0x01;
        std::fs::write(&file, &data).expect("write through c1");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let report =
            match vm.control.request(Command::Verify, Duration::from_secs(120)).await.expect("verify") {
                Message::Verify(r) => r,
                m => panic!("verify answered {m:?}"),
            };
        assert_eq!(report.blocks, 256);
        assert_eq!(report.bad.len(), 1, "{:?}", report.bad);
        assert_eq!(report.bad[0].path, "miglab/flip/flip.0.0");
        assert_eq!(report.bad[0].offset, 37 * 4096);
        assert_eq!(report.bad[0].problem, Problem::Corrupt);
        vm.stop(&lab).await.expect("stop");
    });
    lab.down().unwrap_or_else(|e| panic!("down: {e}"));
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn an_interrupted_run_leaves_a_result_marked_aborted_and_nothing_running() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-abort", root: root.path() };
    let out = root.path().join("results");
    let child = miglab()
        .args(["run", "--lab", "t-abort", "--root"])
        .arg(root.path())
        .arg("--out")
        .arg(&out)
        .arg(scenario("read-loop"))
        .spawn()
        .expect("spawn");
    let result = out.join("read-loop/1/result.json");
    eventually("the run to reach its guest", Duration::from_secs(90), || {
        std::fs::read_to_string(root.path().join("t-abort/state.json")).is_ok_and(|s| s.contains("qemu."))
    });
    std::thread::sleep(Duration::from_secs(2));
    let state = state_of(root.path(), "t-abort").expect("state");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .expect("SIGINT");
    let out =
        within("the run to stop", Duration::from_secs(120), move || child.wait_with_output().expect("wait"));
    assert_eq!(out.status.code(), Some(130));
    let r: RunResult = serde_json::from_slice(&std::fs::read(&result).expect("result.json")).expect("parses");
    assert_eq!(r.status, RunStatus::Aborted);
    assert!(r.heartbeats > 0, "what was measured is kept");
    assert_nothing_left(&state);
}
