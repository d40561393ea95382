//! `miglab run` end to end, data verification against a corrupted block, interrupts, replay.
//! Real lab, real guest; ignored by a plain `cargo test`, run by `ci/test`.

mod common;

use common::*;
use miglab::readloop::status;
use miglab::session::{run, RunOptions, Source};
use miglab_infra::topology::lab::{Lab, LabOptions};
use miglab_infra::topology::Site;
use miglab_infra::vm::{Vm, VmSpec};
use miglab_model::{RunResult, RunStatus};
use miglab_workloads::control::{Command, Message};
use miglab_workloads::job::{FioJob, Rw, Size, Workload};
use miglab_workloads::verify::Problem;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios").join(format!("{name}.toml"))
}

fn result(dir: &Path) -> RunResult {
    read_result(dir)
}

fn opts(source: Source, out: &Path, root: &Path, lab: &str) -> RunOptions {
    run_options(source, out, root, lab)
}

/// The smoke scenario: every figure there, on one clock, nothing lost; then its plan replayed.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn the_smoke_scenario_measures_the_pause_loses_nothing_and_replays() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-smoke", root: root.path() };
    let out = root.path().join("results");
    let dirs = run(&opts(Source::Scenario(scenario("smoke")), &out, root.path(), "t-smoke"))
        .unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(dirs, vec![out.join("smoke/1")]);
    let dir = &dirs[0];
    let r = result(dir);
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.error, r.problems);
    assert_eq!(r.schema_version, miglab_model::result::SCHEMA_VERSION);
    assert!(
        r.provenance.qemu.is_some() && r.provenance.ceph.is_some() && r.provenance.guest_kernel.is_some()
    );
    assert!(r.workload.is_object(), "the workload is a JSON object: {}", r.workload);
    assert_eq!(r.plan["scenario"], "smoke");
    let reads = r.ops.iter().find(|o| o.op == "readfile").expect("read-loop ops");
    assert!(reads.count > 10 && reads.guest.count == reads.count, "a non-empty histogram: {reads:?}");
    assert_eq!(reads.failed + reads.mismatches, 0);
    assert_eq!(r.migrations.len(), 1);
    let m = &r.migrations[0];
    assert!(m.completed(), "{:?}", m.outcome);
    let w = r.migration_window(1).expect("window of migration 1");
    let downtime = m.downtime_ms.expect("QEMU's downtime") as f64;
    let gap = w.heartbeat_gap_ms.unwrap_or_else(|| panic!("{:?}", w.unmeasured));
    // The guest-visible pause is never shorter than QEMU's downtime minus one heartbeat.
    assert!(gap >= downtime - 1.0, "heartbeat gap {gap} < downtime {downtime} - 1");
    let guest_gap = w.guest_clock_gap_ms.expect("guest clock gap");
    assert!(guest_gap < gap, "the guest clock stood still during the pause: {w:?}");
    assert!(!w.heartbeat_gap_unended && !w.io_stall_unended && w.io_stall_ms.is_some(), "{w:?}");
    // One clock: the window holds the migration's events; heartbeats came after it closed.
    assert!(w.start_ms <= m.started_ms && m.phases.resume_ms.expect("resume") <= w.end_ms, "{w:?} {m:?}");
    assert!(r.stream.last_heartbeat_ms.expect("heartbeats") > w.end_ms, "heartbeats after the window");
    assert_eq!((r.stream.bad_frames, r.stream.records_dropped, r.stream.heartbeats_missing), (0, Some(0), 0));
    assert!(r.stream.heartbeats > 1000);
    let v = r.verification.as_ref().expect("verified");
    assert_eq!((v.mismatched, v.missing, v.inline_mismatches), (0, 0, 0));
    assert_eq!(v.read_through, m.to);
    for f in ["timeline.csv", "events.csv", "latency.hlog", "logs/c1.0/console.log", "logs/lab/cluster.log"] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    // events.csv: one clock, in order, the window around the migration.
    let events = std::fs::read_to_string(dir.join("events.csv")).expect("events.csv");
    assert!(events.starts_with("run_ms,source,side,event,detail\n"), "{events}");
    let rows: Vec<(f64, String)> = events
        .lines()
        .skip(1)
        .map(|l| {
            let mut it = l.split(',');
            (it.next().and_then(|t| t.parse().ok()).expect("run_ms"), it.nth(2).unwrap_or("").to_string())
        })
        .collect();
    assert!(rows.windows(2).all(|p| p[0].0 <= p[1].0), "ordered: {events}");
    let at = |e: &str| rows.iter().position(|r| r.1 == e).unwrap_or_else(|| panic!("{e} in {events}"));
    assert!(at("window-open") < at("migrate") && at("RESUME") < at("window-close"), "{events}");
    let hlog = std::fs::read_to_string(dir.join("latency.hlog")).expect("hlog");
    assert!(hlog.contains("#[Histogram log format version 1.3]") && hlog.contains("Tag=readfile,"));
    hlog_agrees_with(&dir.join("latency.hlog"), &r.ops);
    // The run brought its lab up, so it took it down again.
    assert!(!root.path().join("t-smoke/state.json").exists());

    // The same plan again, from the result alone.
    let again = root.path().join("again");
    let dirs = run(&opts(Source::Replay(dir.join("result.json")), &again, root.path(), "t-smoke"))
        .unwrap_or_else(|e| panic!("replay: {e}"));
    let replayed = result(&dirs[0]);
    assert_eq!(replayed.plan, r.plan, "replay runs exactly that plan");
    assert_ne!(replayed.nonce, r.nonce, "but marks its blocks as its own");
    assert_eq!(replayed.status, RunStatus::Completed, "{:?}", replayed.problems);
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_byte_flipped_from_the_host_is_the_one_block_verify_reports() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-flip", root: root.path() };
    let lab = Arc::new(
        Lab::up(&LabOptions { name: "t-flip".into(), root: root.path().into(), ..LabOptions::default() })
            .unwrap_or_else(|e| panic!("lab up: {e}")),
    );
    let site: Arc<dyn Site> = lab.clone();
    let rt = miglab_infra::wait::runtime().expect("rt");
    rt.block_on(async {
        let mut vm =
            Vm::start(&site, &VmSpec::new("vm0"), "c1", 0, false).await.unwrap_or_else(|e| panic!("{e}"));
        let mut job = FioJob::new("flip", Rw::Randread);
        job.size = Size(1 << 20);
        let start = Command::Start { workload: Workload::Fio(job), seed: 11, nonce: 99 };
        assert!(matches!(vm.control.request(start, Duration::from_secs(30)).await, Ok(Message::Ok { .. })));
        let deadline = Instant::now() + Duration::from_secs(120);
        while status(&mut vm).await.expect("status").laying_out > 0 {
            assert!(Instant::now() < deadline, "layout never finished");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The guest reads for a while before the flip.
        let read = status(&mut vm).await.expect("status").ops;
        while status(&mut vm).await.expect("status").ops < read + 50 {
            assert!(Instant::now() < deadline, "no reads");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Flip one byte of block 37 through the host's own CephFS mount, while the guest reads.
        let file = site.host("c1").expect("c1").mount_point().join("miglab/flip/flip.0.0");
        let mut data = std::fs::read(&file).expect("read through c1");
        data[37 * 4096 + 1234] ^= 0x01;
        std::fs::write(&file, &data).expect("write through c1");
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
        // Around the caches, and through the guest's own open handle: the flip went into the
        // very file the guest holds, so it is found there.
        assert_eq!(
            report.read_mode, "O_DIRECT, through the guest's open handles",
            "the pass reads around the caches"
        );
        assert!(report.replaced.is_empty(), "the path still names the guest's file: {:?}", report.replaced);
        // While a guest runs on the lab, a run refuses it: that guest would write into the
        // run's file system and its blocks would read as the run's lost data.
        let out = miglab()
            .args(["run", &scenario("smoke").display().to_string(), "--lab", "t-flip", "--root"])
            .arg(root.path())
            .arg("--out")
            .arg(root.path().join("busy"))
            .output()
            .expect("miglab run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains("already runs vm0") && err.contains("miglab vm down --name t-flip --vm vm0"),
            "{err}"
        );
        assert!(!root.path().join("busy/smoke/1").exists(), "nothing ran");
        vm.stop().await.expect("stop");
    });
    drop(site);
    Arc::try_unwrap(lab).unwrap_or_else(|_| panic!("shared")).down().unwrap_or_else(|e| panic!("down: {e}"));
}

/// Ctrl-C while a migration is under way (a slow one), and while a verify pass reads: the run
/// ends within a second or two, the result says aborted, nothing is left running.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn ctrl_c_during_a_migration_or_a_verify_pass_takes_effect_at_once() {
    MachineLoad::test_begins();
    let root = lab_root();
    let _down = DownOnDrop { name: "t-abort", root: root.path() };
    // The lab is brought up once and reused by both runs (a run never tears down a lab it did
    // not bring up).
    let lab =
        Lab::up(&LabOptions { name: "t-abort".into(), root: root.path().into(), ..LabOptions::default() })
            .unwrap_or_else(|e| panic!("lab up: {e}"));
    let dir = tempfile::tempdir().expect("tmp");
    // A migration capped at 2 MB/s takes minutes: interrupted while it runs.
    let slow = dir.path().join("slow-hop.toml");
    std::fs::write(
        &slow,
        "name = \"slow-hop\"\nseed = 1\n[workload]\nkind = \"read-loop\"\n[migration]\nwarmup_s = 0.5\nmax_bandwidth = 2000000\n",
    )
    .expect("write");
    // A verify pass over 1 GiB of 4 KiB blocks takes minutes: interrupted while it reads.
    let verify = dir.path().join("long-verify.toml");
    std::fs::write(
        &verify,
        "name = \"long-verify\"\nseed = 1\n[guest]\nmemory_mib = 512\n[workload]\nkind = \"fio\"\nrw = \"randread\"\nbs = \"4k\"\nsize = \"1g\"\n[migration]\ncount = 0\nwarmup_s = 0.5\n[run]\ncooldown_s = 0\n",
    )
    .expect("write");
    for (scenario, phase) in [(&slow, "migration 1:"), (&verify, "workload 'job' running")] {
        let name = scenario.file_stem().and_then(|s| s.to_str()).expect("name").to_string();
        let out = root.path().join("results");
        let mut child = miglab()
            .args(["run", "--lab", "t-abort", "--root"])
            .arg(root.path())
            .arg("--out")
            .arg(&out)
            .arg(scenario)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(240);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("the run reached its phase");
            if line.contains(phase) {
                break;
            }
        }
        // Into the phase (the verify pass starts after the cooldown, at once).
        std::thread::sleep(Duration::from_secs(2));
        let state = lab.state();
        let t = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .expect("SIGINT");
        let status = within("the run to stop", Duration::from_secs(60), move || child.wait().expect("wait"));
        let took = t.elapsed();
        assert_eq!(status.code(), Some(130), "{name}");
        // Stopping the guest's processes takes at most the supervisor's grace and reap (5 s
        // each, by construction) and the run itself gives up within ~50 ms: 2 s of margin.
        let bound = {
            let p = miglab_infra::process::StopPolicy::default();
            p.grace + p.reap + Duration::from_secs(2)
        };
        assert!(
            took < bound,
            "{name}: took {took:?}, more than {bound:?} ({})",
            MachineLoad::of_test().said()
        );
        let r = result(&out.join(&name).join("1"));
        assert_eq!(r.status, RunStatus::Aborted, "{name}");
        assert!(r.stream.heartbeats > 0, "{name}: what was measured is kept");
        for p in
            state.processes.iter().filter(|p| p.name.starts_with("qemu.") || p.name.starts_with("virtiofsd."))
        {
            assert!(!miglab_infra::process::is_alive(p), "{name}: {} still runs", p.name);
        }
        assert!(miglab_infra::vm::ledger::all(&lab).is_empty(), "{name}: VM records left");
    }
    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(&state);
}

/// A run that measured nothing (its workload ends before doing an op) ends `failed` with exit
/// 1, not `completed`.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_run_that_measured_nothing_is_failed() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-fail", root: root.path() };
    let dir = tempfile::tempdir().expect("tmp");
    let s = dir.path().join("nothing.toml");
    std::fs::write(&s, "name = \"nothing\"\n[workload]\nkind = \"read-loop\"\nruntime = 0.0\n[migration]\ncount = 0\nwarmup_s = 1\n")
        .expect("write");
    let out = root.path().join("results");
    let o = miglab()
        .args(["run", "--lab", "t-fail", "--root"])
        .arg(root.path())
        .arg("--out")
        .arg(&out)
        .arg(&s)
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let r = result(&out.join("nothing/1"));
    assert_eq!(r.status, RunStatus::Failed);
    assert!(r.problems.iter().any(|p| p.contains("completed no op")), "{:?}", r.problems);
    assert!(!root.path().join("t-fail").exists(), "the lab it brought up is gone");
}

/// An asynchronous guest: io_uring with 16 requests in flight across a migration, every block
/// verified after (a block never has two writes in flight, so generations stay exact).
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn an_io_uring_job_at_depth_16_crosses_a_migration_and_every_block_verifies() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-qd16", root: root.path() };
    let out = root.path().join("results");
    let dirs = run(&opts(Source::Scenario(scenario("randrw-qd16")), &out, root.path(), "t-qd16"))
        .unwrap_or_else(|e| panic!("run: {e}"));
    let r = result(&dirs[0]);
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.error, r.problems);
    assert_eq!(
        (r.workload["ioengine"].as_str(), r.workload["iodepth"].as_u64()),
        (Some("io_uring"), Some(16))
    );
    assert!(r.migrations.len() == 1 && r.migrations[0].completed(), "{:?}", r.migrations);
    for kind in ["read", "write"] {
        let o = r.ops.iter().find(|o| o.op == kind).unwrap_or_else(|| panic!("{kind} ops"));
        assert!(o.count > 100 && o.failed == 0 && o.mismatches == 0, "{o:?}");
    }
    let v = r.verification.expect("verified");
    assert_eq!(v.blocks, 4096, "16 MiB of 4 KiB blocks");
    assert!(v.mismatched == 0 && v.missing == 0 && v.inline_mismatches == 0 && !v.incomplete, "{v:?}");
    assert!(r.stream.records_dropped == Some(0), "{:?}", r.stream);
}
