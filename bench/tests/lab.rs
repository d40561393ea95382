//! The local lab, for real: Ceph daemons, namespaces, ceph-fuse. These need root and the
//! packages `ci/setup` installs; a plain `cargo test` lists them as ignored, `ci/test` runs them
//! and they fail if a prerequisite is missing.

mod common;

use common::*;
use miglab_faults::{DaemonAction, LinkShape};
use miglab_infra::topology::ceph::ObjectStore;
use miglab_infra::topology::lab::{self, Lab, LabError, LabOptions};
use miglab_infra::topology::{DaemonId, Site, Topology};
use std::net::{SocketAddrV4, TcpStream};
use std::time::Duration;

fn options(name: &str, root: &std::path::Path) -> LabOptions {
    LabOptions { name: name.into(), root: root.into(), ..LabOptions::default() }
}

/// Connects to `addr` from inside a network namespace (setns applies to this thread only).
fn connects_from(netns: std::path::PathBuf, addr: SocketAddrV4) -> bool {
    std::thread::spawn(move || {
        let f = std::fs::File::open(&netns).expect("netns");
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).is_ok()
    })
    .join()
    .expect("connect thread")
}

#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn lab_serves_cephfs_to_both_hosts_and_survives_an_osd_kill() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-life", root: root.path() };
    let lab = Lab::up(&options("t-life", root.path())).unwrap_or_else(|e| panic!("lab up: {e}"));
    let state = lab.state();
    let c1 = lab.host("c1").expect("c1").mount_point();
    let c2 = lab.host("c2").expect("c2").mount_point();

    // A file written through c1 is read through c2: one CephFS, two clients.
    std::fs::write(c1.join("hello"), b"Hello world\n").expect("write via c1");
    assert_eq!(std::fs::read(c2.join("hello")).expect("read via c2"), b"Hello world\n");

    // Hosts are real namespaces with their own address.
    let out = lab.host("c1").expect("c1").command("ip").args(["-4", "-o", "addr"]).output().expect("ip");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&lab.layout().clients[0].addr.to_string()), "{text}");
    let gateway = format!("inet {}/", lab.layout().gateway);
    assert!(!text.contains(&gateway), "c1 sees the root namespace: {text}");

    // kill -9 osd.1: the cluster notices, I/O through the mounts goes on (degraded).
    let osd1: DaemonId = "osd.1".parse().expect("id");
    lab.daemon(&osd1, DaemonAction::Kill).expect("kill osd.1");
    lab.wait_ready(Duration::from_secs(30), |s| s.osdmap.num_up_osds == 2).expect("osd.1 marked down");
    let (a, b) = (c1.clone(), c2.clone());
    within("I/O with osd.1 down", Duration::from_secs(60), move || {
        for i in 0..20 {
            let data = format!("write {i} while osd.1 is down\n").repeat(1000);
            std::fs::write(a.join(format!("degraded-{i}")), &data).expect("write degraded");
            assert_eq!(std::fs::read_to_string(b.join(format!("degraded-{i}"))).expect("read"), data);
        }
    });

    // Restart it: every OSD up and in, every PG active+clean again.
    lab.daemon(&osd1, DaemonAction::Restart).expect("restart osd.1");
    let s = lab.wait_ready(Duration::from_secs(90), |s| s.healthy(16)).expect("healthy again");
    assert_eq!(s.osdmap.num_up_osds, 3);
    assert_eq!(std::fs::read_to_string(c2.join("degraded-19")).expect("read").lines().count(), 1000);

    // Freeze and resume a daemon; change a setting at runtime.
    let mds_a: DaemonId = "mds.a".parse().expect("id");
    lab.daemon(&mds_a, DaemonAction::Freeze).expect("freeze");
    let st = lab::status("t-life", root.path()).expect("status");
    assert_eq!(st.processes.iter().find(|p| p.name == "mds.a").map(|p| p.state.as_str()), Some("frozen"));
    lab.daemon(&mds_a, DaemonAction::Resume).expect("resume");
    lab.config_set(&osd1, "osd_recovery_sleep", "0.1").expect("tell");

    // Shape c1's link with tbf, then restore it.
    lab.shape_link("c1", Some(LinkShape::rate(50_000))).expect("shape");
    let qd = std::process::Command::new("tc")
        .args(["qdisc", "show", "dev", &state.layout.clients[0].veth])
        .output()
        .expect("tc");
    assert!(String::from_utf8_lossy(&qd.stdout).contains("tbf"), "no tbf on c1's link");
    lab.shape_link("c1", None).expect("unshape");

    // Cut c2 off: it cannot reach the monitor until healed; c1 still can.
    let mon = SocketAddrV4::new(state.layout.gateway, state.layout.mon_port);
    let names = lab.host_names();
    let ns = |i: usize| lab.host(&names[i]).expect("host").netns_path().expect("a lab host has a netns");
    assert!(connects_from(ns(1), mon), "c2 reaches the monitor before the cut");
    lab.cut_link("c2", true).expect("cut");
    assert!(!connects_from(ns(1), mon), "c2 still reaches the monitor while cut");
    assert!(connects_from(ns(0), mon), "c1 lost the monitor though only c2 was cut");
    lab.cut_link("c2", false).expect("heal");
    assert!(connects_from(ns(1), mon), "c2 cannot reach the monitor after the heal");
    lab.cut_link("c2", true).expect("cut again, left for teardown to undo");

    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
    assert!(root.path().join("t-life.logs/osd.1.log").exists(), "logs are kept after down");
}

#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn memstore_lab_comes_up_and_down() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-mem", root: root.path() };
    let opts = LabOptions { objectstore: ObjectStore::Memstore, clients: 1, ..options("t-mem", root.path()) };
    let lab = Lab::up(&opts).unwrap_or_else(|e| panic!("lab up: {e}"));
    assert_eq!(lab.host_names().len(), 1);
    let conf = std::fs::read_to_string(lab.layout().conf()).expect("conf");
    assert!(conf.contains("osd_objectstore = memstore"));
    let m = lab.host("c1").expect("c1").mount_point();
    std::fs::write(m.join("f"), b"x").expect("write");
    let state = lab.state();
    lab.down().expect("down");
    assert_nothing_left(&state);
}

/// `t-slot` and `t-slot327` hash to one slot (223): brought up at once, in two roots as two test
/// binaries would, each gets a slot of its own and serves CephFS; down, both slots are free
/// again. Before slot claims the second failed with a busy port, or worse, raced the first
/// for its bridge.
#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn two_labs_whose_names_share_a_slot_come_up_at_once() {
    use miglab_infra::topology::layout::{slot, LabLayout};
    assert_eq!(
        slot("t-slot"),
        slot("t-slot327"),
        "the two names must collide for this test to mean anything"
    );
    let (ra, rb) = (lab_root(), lab_root());
    let _da = DownOnDrop { name: "t-slot", root: ra.path() };
    let _db = DownOnDrop { name: "t-slot327", root: rb.path() };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Lab::up(&options("t-slot", ra.path())));
        let b = s.spawn(|| Lab::up(&options("t-slot327", rb.path())));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    let (a, b) =
        (a.unwrap_or_else(|e| panic!("t-slot: {e}")), b.unwrap_or_else(|e| panic!("t-slot327: {e}")));
    assert_ne!(a.layout().slot, b.layout().slot);
    assert_ne!(a.layout().bridge, b.layout().bridge);
    for lab in [&a, &b] {
        let m = lab.host("c2").expect("c2").mount_point();
        std::fs::write(m.join("mine"), lab.layout().name.as_bytes()).expect("write");
        assert_eq!(std::fs::read(m.join("mine")).expect("read"), lab.layout().name.as_bytes());
    }
    // The recorded layout is the truth: a command opening the lab by name finds its slot.
    let again = Lab::open("t-slot327", rb.path()).expect("open");
    assert_eq!(again.layout(), b.layout());
    drop(again);
    let moved = b.layout().slot;
    for lab in [a, b] {
        let state = lab.state();
        lab.down().expect("down");
        assert_nothing_left(&state);
    }
    let claims = miglab_infra::topology::slots::claims_dir();
    assert!(!claims.join(moved.to_string()).exists(), "the slot is given back");
    let fresh = LabLayout::new("t-slot327", rb.path(), None, 2).expect("layout");
    assert_eq!(fresh.slot, slot("t-slot327"), "a name's preferred slot does not change");
}
#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn lab_up_killed_midway_is_cleaned_by_lab_down() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-kill", root: root.path() };
    let mut child =
        miglab().args(["lab", "up", "--name", "t-kill", "--root"]).arg(root.path()).spawn().expect("spawn");
    // Midway: daemons are running, the cluster is not ready yet.
    eventually("lab up to start daemons", Duration::from_secs(30), || {
        state_of(root.path(), "t-kill").is_some_and(|s| s.processes.len() >= 4)
    });
    child.kill().expect("SIGKILL miglab");
    child.wait().expect("reap");
    let state = state_of(root.path(), "t-kill").expect("state survives");
    assert!(state.processes.iter().any(miglab_infra::process::is_alive), "daemons outlive a killed miglab");

    let out =
        miglab().args(["lab", "down", "--name", "t-kill", "--root"]).arg(root.path()).output().expect("down");
    assert!(out.status.success(), "lab down failed: {}", String::from_utf8_lossy(&out.stderr));
    // miglab wrote nothing after the kill: the state read then lists everything there was.
    assert_nothing_left(&state);
}

#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn ctrl_c_during_lab_up_tears_everything_down() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-int", root: root.path() };
    let child =
        miglab().args(["lab", "up", "--name", "t-int", "--root"]).arg(root.path()).spawn().expect("spawn");
    eventually("lab up to start daemons", Duration::from_secs(30), || {
        state_of(root.path(), "t-int").is_some_and(|s| s.processes.len() >= 4)
    });
    let state = state_of(root.path(), "t-int").expect("state");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGINT)
        .expect("SIGINT");
    let out = within("miglab to stop after Ctrl-C", Duration::from_secs(60), move || {
        child.wait_with_output().expect("wait")
    });
    assert_eq!(out.status.code(), Some(130), "interrupt exit code");
    assert_nothing_left(&state);
}

#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn bad_input_fails_clearly_and_leaves_nothing() {
    let root = lab_root();

    // A daemon that dies at start: its name, and the end of its log, and nothing left.
    let opts = LabOptions {
        conf_overrides: vec!["mds.b:keyring=/nonexistent/keyring".parse().expect("override")],
        ..options("t-bad", root.path())
    };
    let e = Lab::up(&opts).expect_err("mds.b cannot authenticate");
    assert!(matches!(e, LabError::DaemonDied { ref name, .. } if name == "mds.b"), "{e}");
    assert!(e.to_string().contains("/nonexistent/keyring"), "log tail missing: {e}");
    assert!(!root.path().join("t-bad").exists(), "lab directory left after a failed up");
    assert!(!std::path::Path::new("/run/netns/miglab-t-bad-c1").exists());

    // A cluster that never gets ready: deadline, then `ceph status`.
    let opts = LabOptions { ready_timeout: Duration::from_millis(300), ..options("t-slow", root.path()) };
    let e = Lab::up(&opts).expect_err("cannot be ready in 300 ms");
    assert!(matches!(e, LabError::NotReady { .. }), "{e}");
    assert!(e.to_string().contains("\"fsid\""), "ceph status missing: {e}");
    assert!(!root.path().join("t-slow").exists());

    // A busy port.
    let layout =
        miglab_infra::topology::layout::LabLayout::new("t-port", root.path(), None, 2).expect("layout");
    let _hold = std::net::TcpListener::bind(("0.0.0.0", layout.mon_port)).expect("hold the port");
    let e = Lab::up(&options("t-port", root.path())).expect_err("port busy");
    assert!(matches!(e, LabError::PortBusy { port, .. } if port == layout.mon_port), "{e}");
    drop(_hold);

    // An existing lab directory.
    std::fs::create_dir_all(root.path().join("t-dir")).expect("mkdir");
    let e = Lab::up(&options("t-dir", root.path())).expect_err("exists");
    assert!(e.to_string().contains("lab down --name t-dir"), "{e}");

    // A missing binary, through the CLI: non-zero exit and the fix.
    let out = miglab()
        .args(["lab", "up", "--name", "t-miss", "--root"])
        .arg(root.path())
        .env("MIGLAB_PYTHON", "/nonexistent/python3")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/python3") && err.contains("ci/setup"), "{err}");
    assert!(!root.path().join("t-miss").exists());

    // Unknown things named by the user.
    let out = miglab().args(["lab", "daemon", "osd.x", "kill"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("osd.<n>"));
    let out =
        miglab().args(["lab", "down", "--name", "t-none", "--root"]).arg(root.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(2), "a lab that does not exist is bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no lab named 't-none'"));
}

/// `lab daemon osd.1 restart` from another command while this one writes the state file over
/// and over (as a run does): the restarted daemon's record is not lost, `lab status` sees it.
#[test]
#[ignore = "needs the lab (root, Ceph, namespaces): cargo test -- --include-ignored"]
fn a_daemon_restarted_by_another_command_during_a_run_is_not_forgotten() {
    let root = lab_root();
    let _down = DownOnDrop { name: "t-two", root: root.path() };
    let lab = Lab::up(&options("t-two", root.path())).unwrap_or_else(|e| panic!("lab up: {e}"));
    let old = lab.state().process("osd.1").expect("osd.1").pid;
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..400 {
                let id = format!("busy-{i}");
                lab.record_instance(&id, serde_json::json!({ "i": i })).expect("record");
                lab.forget_instance(&id).expect("forget");
            }
        });
        let out = miglab()
            .args(["lab", "daemon", "osd.1", "restart", "--name", "t-two", "--root"])
            .arg(root.path())
            .output()
            .expect("restart");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        writer.join().expect("writer");
    });
    let rec = lab.state().process("osd.1").cloned().expect("osd.1 is still recorded");
    assert_ne!(rec.pid, old, "the record is the restarted daemon's");
    assert!(miglab_infra::process::is_alive(&rec));
    let st = lab::status("t-two", root.path()).expect("status");
    assert_eq!(
        st.processes.iter().filter(|p| p.name == "osd.1").map(|p| p.state.as_str()).collect::<Vec<_>>(),
        ["running"]
    );
    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}
