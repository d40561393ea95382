//! VMs and live migration on the lab, for real: QEMU (TCG here), virtiofsd on ceph-fuse, the
//! guest image and its agent. Ignored by a plain `cargo test`; `ci/test` runs them.

mod common;

use common::*;
use miglab::clock::RunClock;
use miglab::migration::{self, Hop, MigrationOptions};
use miglab::observe::{Bus, Observed};
use miglab::readloop::{check_continuity, start_read_loop, status, write_hello};
use miglab::stream::RecordStream;
use miglab_infra::topology::lab::{Lab, LabOptions};
use miglab_infra::topology::Site;
use miglab_infra::vm::{ledger, Vm, VmError, VmSpec};
use miglab_model::{MigrationParams, MigrationStatus, Outcome, QmpEvent, Side};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn runtime() -> tokio::runtime::Runtime {
    miglab_infra::wait::runtime().expect("runtime")
}

fn lab(name: &str, root: &std::path::Path) -> Arc<Lab> {
    Arc::new(
        Lab::up(&LabOptions { name: name.into(), root: root.into(), ..LabOptions::default() })
            .unwrap_or_else(|e| panic!("lab up: {e}")),
    )
}

/// Boots vm0 on c1 with the read loop running.
async fn boot(site: &Arc<dyn Site>) -> Vm {
    write_hello(site.host("c1").expect("c1")).expect("hello file");
    let mut vm = Vm::start(site, &VmSpec::new("vm0"), "c1", 0, false)
        .await
        .unwrap_or_else(|e| panic!("vm start: {e}"));
    let hello = vm.hello.clone().expect("booted");
    assert!(hello.fs_mounted, "virtio-fs not mounted: {:?}", hello.setup_error);
    assert_eq!(hello.setup_error, None);
    start_read_loop(&mut vm).await.expect("read loop");
    vm
}

fn no_vm_processes_left(lab: &Lab) {
    assert!(ledger::all(lab).is_empty(), "VM records left: {:?}", ledger::all(lab));
    for p in lab.state().processes {
        if p.name.starts_with("qemu.") || p.name.starts_with("virtiofsd.") {
            assert!(!miglab_infra::process::is_alive(&p), "{} still runs", p.name);
        }
    }
}

fn down(lab: Arc<Lab>) {
    let state = lab.state();
    Arc::try_unwrap(lab)
        .unwrap_or_else(|_| panic!("the lab is still shared"))
        .down()
        .unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}

/// Three hops with the read loop running and the record stream following the guest: every
/// heartbeat arrives (none missing, no bad frame), the reads never stop, every window has its
/// figures.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_guest_reading_cephfs_migrates_three_hops_and_its_record_stream_follows() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-vm", root: root.path() };
    let lab = lab("t-vm", root.path());
    let site: Arc<dyn Site> = lab.clone();
    runtime().block_on(async {
        let mut vm = boot(&site).await;
        let clock = RunClock::start();
        let bus = Bus::new(clock);
        let stream = RecordStream::connect(&vm.record.files.records(), clock, &bus, 1).expect("records");
        let opts = MigrationOptions::default();
        for (i, to) in ["c2", "c1", "c2"].into_iter().enumerate() {
            let n = i as u32 + 1;
            let before = status(&mut vm).await.expect("status before");
            let hop = Hop::new(&site, &bus, Some(&stream), n);
            let rec = migration::migrate(&hop, &mut vm, to, &opts).await.expect("migrate");
            assert!(rec.completed(), "hop {n}: {:?}", rec.outcome);
            assert_eq!(vm.host(), to);
            assert!(rec.downtime_ms.is_some() && rec.total_time_ms.is_some(), "QEMU's figures: {rec:?}");
            assert!(rec.transferred_bytes.unwrap_or(0) > 1 << 20, "RAM was sent");
            let p = &rec.phases;
            assert!(
                p.stop_ms.is_some() && p.resume_ms.is_some(),
                "source STOP and destination RESUME: {:?}",
                rec.timeline
            );
            assert!(p.paused_ms.expect("paused") >= 0.0);
            assert!(rec.started_ms > 0.0 && p.resume_ms.expect("resume") > rec.started_ms, "one clock");
            // The guest keeps reading on its new host.
            let deadline = Instant::now() + Duration::from_secs(10);
            let after = loop {
                let s = status(&mut vm).await.expect("status after");
                if s.ops > before.ops || Instant::now() > deadline {
                    break s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            check_continuity(&before, &after).unwrap_or_else(|e| panic!("hop {n}: {e}"));
            assert_eq!(after.errors, 0);
            bus.publish(Observed::Settled { guest: 1, hop: n });
        }
        // Heartbeats arrive after the last switch-over too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let c = tokio::task::spawn_blocking(move || stream.finish(Instant::now()))
            .await
            .expect("join")
            .expect("finish");
        assert_eq!((c.heartbeats_missing, c.bad_frames), (0, 0), "the stream followed the guest");
        assert_eq!(c.windows.len(), 3);
        for w in &c.windows {
            let gap = w.heartbeat_gap_ms.unwrap_or_else(|| panic!("{}: {:?}", w.name, w.unmeasured));
            assert!(gap > 0.0 && w.guest_clock_gap_ms.is_some() && !w.heartbeat_gap_unended, "{w:?}");
            assert!(w.io_stall_ms.is_some() && !w.io_stall_unended, "{w:?}");
        }
        let last_resume = c.windows.last().map(|w| w.end_ms).unwrap_or_default();
        assert!(c.last_heartbeat_ms.expect("heartbeats") > last_resume, "heard after the last hop");
        // Only the current instance runs: every source was stopped, its virtiofsd gone too.
        assert_eq!(ledger::all(lab.as_ref()).len(), 1);
        vm.stop().await.expect("stop");
        no_vm_processes_left(&lab);
    });
    drop(site);
    down(lab);
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn killing_the_destination_virtiofsd_fails_the_migration_and_the_source_goes_on() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-vfsd", root: root.path() };
    let lab = lab("t-vfsd", root.path());
    let site: Arc<dyn Site> = lab.clone();
    runtime().block_on(async {
        let mut vm = boot(&site).await;
        let before = status(&mut vm).await.expect("status");
        let bus = Bus::new(RunClock::start());
        // A subscriber kills the destination's virtiofsd once the source says `active`.
        let mut seen = bus.subscribe();
        let killer_site = site.clone();
        let killer = tokio::spawn(async move {
            while let Some(o) = seen.recv().await {
                if let Observed::Qmp {
                    side: Side::Source,
                    event: QmpEvent::Migration { status: MigrationStatus::Active },
                    ..
                } = o.what
                {
                    let dst = ledger::all(killer_site.as_ref())
                        .into_iter()
                        .find(|r| r.incoming)
                        .expect("destination");
                    let p = killer_site.process(&dst.virtiofsd_name()).expect("its virtiofsd");
                    killer_site.signal(&p, nix::sys::signal::Signal::SIGKILL).expect("kill virtiofsd");
                    return true;
                }
            }
            false
        });
        let hop = Hop::new(&site, &bus, None, 1);
        let rec =
            migration::migrate(&hop, &mut vm, "c2", &MigrationOptions::default()).await.expect("migrate");
        assert!(killer.await.expect("killer"), "the migration never went active: {:?}", rec.timeline);
        match &rec.outcome {
            Outcome::Failed { error, source_running } => {
                assert!(!error.is_empty());
                assert!(source_running, "return-path resumed the source");
            }
            o => panic!("expected a failed migration, got {o:?}"),
        }
        assert_eq!(vm.host(), "c1", "the guest stays on the source");
        assert!(vm.qmp.running().await.expect("query-status"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = status(&mut vm).await.expect("status after");
        check_continuity(&before, &after).unwrap_or_else(|e| panic!("{e}"));
        // The failed destination is gone.
        assert_eq!(ledger::all(lab.as_ref()).len(), 1);
        vm.stop().await.expect("stop");
        no_vm_processes_left(&lab);
    });
    drop(site);
    down(lab);
}

/// Kill the destination's QEMU, or the source's, at each step of a hop; or drop a hop halfway
/// (an interrupt): nothing of either instance is left, and the errors say what happened.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_hop_that_breaks_at_any_step_leaves_nothing_behind() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-break", root: root.path() };
    let lab = lab("t-break", root.path());
    let site: Arc<dyn Site> = lab.clone();
    runtime().block_on(async {
        let steps = [
            (Side::Destination, MigrationStatus::Setup),
            (Side::Source, MigrationStatus::Active),
            (Side::Source, MigrationStatus::Device),
        ];
        for (i, (victim, at)) in steps.into_iter().enumerate() {
            let mut vm = boot(&site).await;
            let bus = Bus::new(RunClock::start());
            let mut seen = bus.subscribe();
            let s = site.clone();
            let killer = tokio::spawn(async move {
                while let Some(o) = seen.recv().await {
                    if let Observed::Qmp {
                        side: Side::Source, event: QmpEvent::Migration { status }, ..
                    } = o.what
                    {
                        if status == at || (at == MigrationStatus::Setup && status == MigrationStatus::Active)
                        {
                            let recs = ledger::all(s.as_ref());
                            let r = recs
                                .iter()
                                .find(|r| r.incoming == (victim == Side::Destination))
                                .expect("instance");
                            let p = s.process(&r.qemu_name()).expect("its qemu");
                            s.signal(&p, nix::sys::signal::Signal::SIGKILL).expect("kill qemu");
                            return;
                        }
                    }
                }
            });
            let hop = Hop::new(&site, &bus, None, 1);
            let r = migration::migrate(&hop, &mut vm, "c2", &MigrationOptions::default()).await;
            killer.abort();
            match r {
                Ok(rec) => {
                    assert!(!rec.completed(), "step {i}: a killed QEMU cannot complete a migration: {rec:?}")
                }
                Err(e) => assert!(!e.to_string().is_empty(), "step {i}"),
            }
            // Whatever state it is in, stopping what the caller holds cleans up.
            let _ = vm.stop().await;
            no_vm_processes_left(&lab);
        }
        // A hop dropped halfway (what an interrupt does): the guard stops the destination,
        // the caller stops the source.
        let mut vm = boot(&site).await;
        let bus = Bus::new(RunClock::start());
        let opts = MigrationOptions {
            params: MigrationParams { max_bandwidth: Some(1_000_000), ..MigrationParams::default() },
            ..MigrationOptions::default()
        };
        let hop = Hop::new(&site, &bus, None, 1);
        let r = tokio::time::timeout(Duration::from_secs(3), migration::migrate(&hop, &mut vm, "c2", &opts))
            .await;
        assert!(r.is_err(), "a 1 MB/s migration of 512 MiB cannot be done in 3 s");
        vm.stop().await.expect("stop the source");
        no_vm_processes_left(&lab);
    });
    drop(site);
    down(lab);
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn vm_failures_are_named_and_clean_up_after_themselves() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-vmbad", root: root.path() };
    let lab = lab("t-vmbad", root.path());
    let site: Arc<dyn Site> = lab.clone();
    runtime().block_on(async {
        // A guest that never says hello: a shell instead of the agent.
        let spec = VmSpec {
            cmdline_extra: Some("rdinit=/bin/sh".into()),
            boot_timeout_ms: 5_000,
            ..VmSpec::new("vm-sh")
        };
        let e = Vm::start(&site, &spec, "c1", 0, false).await.expect_err("never says hello");
        assert!(matches!(e, VmError::NeverBooted { .. }), "{e}");
        no_vm_processes_left(&lab);

        // A kernel that panics: QEMU exits, and the console says why.
        let spec = VmSpec { cmdline_extra: Some("rdinit=/nonexistent".into()), ..VmSpec::new("vm-panic") };
        let e = Vm::start(&site, &spec, "c1", 0, false).await.expect_err("panics");
        assert!(matches!(e, VmError::QemuDied { .. }), "{e}");
        assert!(e.to_string().contains("Kernel panic"), "{e}");
        no_vm_processes_left(&lab);

        // A virtiofsd that dies before QEMU connects.
        let spec = VmSpec { virtiofsd_args: vec!["--no-such-option".into()], ..VmSpec::new("vm-vfsd") };
        let e = Vm::start(&site, &spec, "c1", 0, false).await.expect_err("virtiofsd dies");
        assert!(matches!(e, VmError::VirtiofsdDied { .. }), "{e}");
        assert!(e.to_string().contains("no-such-option"), "{e}");
        no_vm_processes_left(&lab);

        // A migration that cannot converge (100 kB/s for 512 MiB): deadline, cancel, report;
        // the guest goes on at the source.
        let mut vm = boot(&site).await;
        let before = status(&mut vm).await.expect("status");
        let opts = MigrationOptions {
            params: MigrationParams { max_bandwidth: Some(100_000), ..MigrationParams::default() },
            timeout: Duration::from_secs(2),
            ..MigrationOptions::default()
        };
        let bus = Bus::new(RunClock::start());
        let hop = Hop::new(&site, &bus, None, 1);
        let rec = migration::migrate(&hop, &mut vm, "c2", &opts).await.expect("migrate");
        assert!(
            matches!(rec.outcome, Outcome::TimedOut { after_ms: 2000, source_running: true }),
            "{:?}",
            rec.outcome
        );
        assert_eq!(vm.host(), "c1");
        tokio::time::sleep(Duration::from_millis(300)).await;
        check_continuity(&before, &status(&mut vm).await.expect("status")).unwrap_or_else(|e| panic!("{e}"));
        vm.stop().await.expect("stop");
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
    assert!(ledger::all(lab.as_ref()).is_empty());
    drop(site);
    down(lab);
}

/// Listening sockets of every lab process (Ceph, ceph-fuse, QEMU waiting for a migration,
/// virtiofsd) in every namespace of the lab, as `ss` lists them with their owners.
fn lab_listeners(lab: &Lab) -> Vec<(String, String)> {
    let state = lab.state();
    let groups: Vec<i32> = state.processes.iter().map(|p| p.pid).collect();
    let mut cmds = vec![std::process::Command::new("ss")];
    for c in &state.layout.clients {
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", &c.netns, "ss"]);
        cmds.push(cmd);
    }
    let mut out = Vec::new();
    for mut cmd in cmds {
        let o = cmd.args(["-Hltunp"]).output().expect("ss");
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let local = line.split_whitespace().nth(4).unwrap_or("").to_string();
            let pids: Vec<i32> = line
                .split("pid=")
                .skip(1)
                .filter_map(|p| p.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
                .collect();
            let ours = pids
                .iter()
                .any(|pid| miglab_infra::process::proc_stat(*pid).is_some_and(|s| groups.contains(&s.pgrp)));
            if ours {
                out.push((local, line.to_string()));
            }
        }
    }
    out
}

/// Nothing of the lab listens outside loopback and the lab's own addresses; its keyring and
/// its directory (where every QMP and control socket lives) are root's alone.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn nothing_of_the_lab_listens_outside_its_network_and_its_secrets_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = lab_root();
    let _down = DownOnDrop { name: "t-sec", root: root.path() };
    let lab = lab("t-sec", root.path());
    let site: Arc<dyn Site> = lab.clone();
    let layout = lab.layout().clone();
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&layout.keyring()), 0o600, "the keyring");
    assert_eq!(mode(&layout.dir), 0o700, "the lab directory");
    runtime().block_on(async {
        let vm = boot(&site).await;
        // A destination waiting for a migration listens on c2's address.
        let dst = Vm::start(&site, &VmSpec::new("vm0"), "c2", 1, true).await.expect("incoming");
        dst.qmp
            .execute(qapi::qmp::migrate_incoming {
                uri: Some(format!("tcp:{}:4444", layout.clients[1].addr)),
                channels: None,
                exit_on_error: Some(false),
            })
            .await
            .expect("migrate-incoming");
        let allowed: Vec<String> = std::iter::once(layout.gateway.to_string())
            .chain(layout.clients.iter().map(|c| c.addr.to_string()))
            .chain(["127.0.0.1".to_string(), "[::1]".to_string()])
            .collect();
        let listeners = lab_listeners(&lab);
        assert!(
            listeners.iter().any(|(l, _)| l.ends_with(":4444")),
            "the incoming QEMU is seen: {listeners:?}"
        );
        assert!(
            listeners.iter().any(|(l, _)| l.starts_with(&layout.gateway.to_string())),
            "the monitor is seen"
        );
        for (local, line) in &listeners {
            let host = local.rsplit_once(':').map(|(h, _)| h).unwrap_or(local);
            assert!(allowed.iter().any(|a| a == host), "listens outside the lab: {line}");
        }
        dst.stop().await.expect("stop dst");
        vm.stop().await.expect("stop");
    });
    drop(site);
    down(lab);
}
