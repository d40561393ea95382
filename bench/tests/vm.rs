//! VMs and live migration on the lab, for real: QEMU (TCG here), virtiofsd on ceph-fuse, the
//! guest image and its agent. Ignored by a plain `cargo test`; `ci/test` runs them.

mod common;

use common::*;
use miglab::migration::{self, MigrationOptions, Quiet};
use miglab::readloop::{check_continuity, start_read_loop, status, write_hello};
use miglab::topology::lab::{Lab, LabOptions};
use miglab::vm::{Vm, VmError, VmSpec};
use miglab::Topology;
use miglab_reports::{MigrationParams, Outcome, Side, TimelineEvent};
use std::time::Duration;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn lab(name: &str, root: &std::path::Path) -> Lab {
    Lab::up(&LabOptions { name: name.into(), root: root.into(), ..LabOptions::default() })
        .unwrap_or_else(|e| panic!("lab up: {e}"))
}

/// Boots vm0 on c1 with the read loop running.
async fn boot(lab: &Lab) -> Vm {
    write_hello(lab.host("c1").expect("c1")).expect("hello file");
    let mut vm =
        Vm::start(lab, &VmSpec::new("vm0"), "c1", 0, false).await.unwrap_or_else(|e| panic!("vm start: {e}"));
    let hello = vm.hello.clone().expect("booted");
    assert!(hello.fs_mounted, "virtio-fs not mounted: {:?}", hello.setup_error);
    assert_eq!(hello.setup_error, None);
    start_read_loop(&mut vm).await.expect("read loop");
    vm
}

fn no_vm_processes_left(lab: &Lab) {
    assert!(lab.vms().is_empty(), "VM records left: {:?}", lab.vms());
    for p in lab.state().processes {
        if p.name.starts_with("qemu.") || p.name.starts_with("virtiofsd.") {
            assert!(!miglab::process::is_alive(&p), "{} still runs", p.name);
        }
    }
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_guest_reading_cephfs_migrates_three_hops_without_a_gap_in_its_reads() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-vm", root: root.path() };
    let lab = lab("t-vm", root.path());
    runtime().block_on(async {
        let mut vm = boot(&lab).await;
        let opts = MigrationOptions::default();
        for (hop, to) in ["c2", "c1", "c2"].into_iter().enumerate() {
            let before = status(&mut vm).await.expect("status before");
            let (next, rec) =
                migration::migrate(&lab, vm, to, &opts, &mut Quiet, None).await.expect("migrate");
            vm = next;
            assert!(rec.completed(), "hop {hop}: {:?}", rec.outcome);
            assert_eq!(vm.record.host, to);
            assert!(rec.downtime_ms.is_some() && rec.total_time_ms.is_some(), "QEMU's figures: {rec:?}");
            assert!(rec.transferred_bytes.unwrap_or(0) > 1 << 20, "RAM was sent");
            let p = &rec.phases;
            assert!(
                p.stop_ms.is_some() && p.resume_ms.is_some(),
                "source STOP and destination RESUME: {:?}",
                rec.timeline
            );
            assert!(p.paused_ms.expect("paused") >= 0.0);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let after = status(&mut vm).await.expect("status after");
            check_continuity(&before, &after).unwrap_or_else(|e| panic!("hop {hop}: {e}"));
            assert_eq!(after.errors, 0);
        }
        // Only the current instance runs: every source was stopped, its virtiofsd gone too.
        assert_eq!(lab.vms().len(), 1);
        vm.stop(&lab).await.expect("stop");
        no_vm_processes_left(&lab);
    });
    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn killing_the_destination_virtiofsd_fails_the_migration_and_the_source_goes_on() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-vfsd", root: root.path() };
    let lab = lab("t-vfsd", root.path());
    runtime().block_on(async {
        let mut vm = boot(&lab).await;
        let before = status(&mut vm).await.expect("status");
        let sup = lab.supervisor();
        let mut killed = false;
        let mut kill_dst_virtiofsd = |e: &TimelineEvent, _src: &Vm, dst: &Vm| {
            if !killed
                && e.side == Side::Source
                && e.event == "MIGRATION"
                && e.detail.as_deref() == Some("active")
            {
                sup.signal(&dst.virtiofsd, nix::sys::signal::Signal::SIGKILL).expect("kill virtiofsd");
                killed = true;
            }
        };
        let (mut vm, rec) =
            migration::migrate(&lab, vm, "c2", &MigrationOptions::default(), &mut kill_dst_virtiofsd, None)
                .await
                .expect("migrate");
        assert!(killed, "the migration never went active: {:?}", rec.timeline);
        match &rec.outcome {
            Outcome::Failed { error } => assert!(!error.is_empty()),
            o => panic!("expected a failed migration, got {o:?}"),
        }
        assert_eq!(vm.record.host, "c1", "the guest stays on the source");
        assert!(vm.qmp.running().await.expect("query-status"), "return-path resumed the source");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = status(&mut vm).await.expect("status after");
        check_continuity(&before, &after).unwrap_or_else(|e| panic!("{e}"));
        // The failed destination is gone.
        assert_eq!(lab.vms().len(), 1);
        vm.stop(&lab).await.expect("stop");
        no_vm_processes_left(&lab);
    });
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn vm_failures_are_named_and_clean_up_after_themselves() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-vmbad", root: root.path() };
    let lab = lab("t-vmbad", root.path());
    runtime().block_on(async {
        // A guest that never says hello: a shell instead of the agent.
        let spec = VmSpec {
            cmdline_extra: Some("rdinit=/bin/sh".into()),
            boot_timeout_ms: 5_000,
            ..VmSpec::new("vm-sh")
        };
        let e = Vm::start(&lab, &spec, "c1", 0, false).await.expect_err("never says hello");
        assert!(matches!(e, VmError::NeverBooted { .. }), "{e}");
        no_vm_processes_left(&lab);

        // A kernel that panics: QEMU exits, and the console says why.
        let spec = VmSpec { cmdline_extra: Some("rdinit=/nonexistent".into()), ..VmSpec::new("vm-panic") };
        let e = Vm::start(&lab, &spec, "c1", 0, false).await.expect_err("panics");
        assert!(matches!(e, VmError::QemuDied { .. }), "{e}");
        assert!(e.to_string().contains("Kernel panic"), "{e}");
        no_vm_processes_left(&lab);

        // A virtiofsd that dies before QEMU connects.
        let spec = VmSpec { virtiofsd_args: vec!["--no-such-option".into()], ..VmSpec::new("vm-vfsd") };
        let e = Vm::start(&lab, &spec, "c1", 0, false).await.expect_err("virtiofsd dies");
        assert!(matches!(e, VmError::VirtiofsdDied { .. }), "{e}");
        assert!(e.to_string().contains("no-such-option"), "{e}");
        no_vm_processes_left(&lab);

        // A migration that cannot converge (100 kB/s for 512 MiB): deadline, cancel, report;
        // the guest goes on at the source.
        let mut vm = boot(&lab).await;
        let before = status(&mut vm).await.expect("status");
        let opts = MigrationOptions {
            params: MigrationParams { max_bandwidth: Some(100_000), ..MigrationParams::default() },
            timeout: Duration::from_secs(2),
            ..MigrationOptions::default()
        };
        let (mut vm, rec) =
            migration::migrate(&lab, vm, "c2", &opts, &mut Quiet, None).await.expect("migrate");
        assert!(matches!(rec.outcome, Outcome::TimedOut { after_ms: 2000 }), "{:?}", rec.outcome);
        assert_eq!(vm.record.host, "c1");
        assert!(vm.qmp.running().await.expect("query-status"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        check_continuity(&before, &status(&mut vm).await.expect("status")).unwrap_or_else(|e| panic!("{e}"));
        vm.stop(&lab).await.expect("stop");
        no_vm_processes_left(&lab);
    });

    // No image: the error says which command builds it.
    let out = miglab()
        .args(["vm", "up", "--name", "t-vmbad", "--root"])
        .arg(root.path())
        .env("MIGLAB_CACHE", "/nonexistent/cache")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("miglab image build"), "{err}");
    assert!(lab.vms().is_empty());
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
}
