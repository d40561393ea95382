//! The external topology tried on one machine: `lab up --ssh` starts a real sshd in each
//! client host's namespace and writes a topology file that reaches them only through SSH;
//! `doctor --topology` checks every host over it, names a host without virtiofsd, and refuses a
//! file with a typo at its line; `lab down` leaves no sshd behind.

mod common;

use common::*;
use std::process::Command;

const LAB: &str = "t-ssh";

/// `lab up --ssh`: the lab's directory, its topology file, and what `lab up` said.
fn up_with_ssh(root: &std::path::Path, lab: &str) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let up =
        miglab().args(["lab", "up", "--ssh", "--name", lab, "--root"]).arg(root).output().expect("lab up");
    assert!(up.status.success(), "{}", text(&up));
    let dir = root.join(lab);
    let topo = dir.join("topology.toml");
    (dir, topo, text(&up))
}

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A copy of the topology `original` in which c2's virtiofsd is a path that does not exist.
fn without_virtiofsd(dir: &std::path::Path, original: &str) -> std::path::PathBuf {
    let c2 = original.find("name = \"c2\"").expect("c2");
    let mut broken = original.to_string();
    let at = c2 + broken[c2..].find("virtiofsd = ").expect("c2's virtiofsd");
    let end = at + broken[at..].find('\n').expect("eol");
    broken.replace_range(at..end, "virtiofsd = \"/opt/none/virtiofsd\"");
    let bad = dir.join("no-virtiofsd.toml");
    std::fs::write(&bad, &broken).expect("write");
    bad
}

#[test]
#[ignore = "needs the lab (root, Ceph, sshd): cargo test -- --include-ignored"]
fn lab_hosts_are_reached_and_checked_over_ssh() {
    let root = lab_root();
    let _down = DownOnDrop { name: LAB, root: root.path() };
    let (dir, topo, said) = up_with_ssh(root.path(), LAB);
    assert!(said.contains(&topo.display().to_string()), "{said}");
    let state = state_of(root.path(), LAB).expect("state");

    // The hosts answer over SSH, each from inside its own namespace.
    for c in &state.layout.clients {
        let o = Command::new("ssh")
            .arg("-F")
            .arg(dir.join("ssh/config"))
            .args([c.name.as_str(), "ip", "-o", "-4", "addr", "show"])
            .output()
            .expect("ssh");
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains(&c.addr.to_string()), "{} answers as itself: {}", c.name, text(&o));
    }

    let doctor = miglab().args(["doctor", "--topology"]).arg(&topo).output().expect("doctor");
    let out = text(&doctor);
    assert!(doctor.status.success(), "{out}");
    for host in ["c1", "c2"] {
        for check in ["ssh", "qemu", "virtiofsd", "cephfs"] {
            let row = out.lines().find(|l| l.starts_with(&format!("{host} {check} "))).unwrap_or_default();
            assert!(row.contains(" ok "), "{host} {check}: {out}");
        }
    }
    assert!(out.contains("every host of the topology can run guests"), "{out}");
    // One machine, one clock: the offset measured over SSH is within its own error bound.
    let clock = out.lines().find(|l| l.starts_with("c1 clock ")).unwrap_or_default();
    assert!(clock.contains(" ok ") && clock.contains("ms from this machine"), "{out}");
    let nums: Vec<f64> = clock
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .filter_map(|w| w.parse().ok())
        .collect();
    let (offset, bound) = (nums[nums.len() - 2], nums[nums.len() - 1]);
    // The same clock on both ends: the remote reading lies inside the round trip.
    assert!(offset.abs() <= bound + 0.05, "{clock}");

    // c2 without virtiofsd: named, and the exit code says so.
    let original = std::fs::read_to_string(&topo).expect("topology");
    let bad = without_virtiofsd(&dir, &original);
    let doctor = miglab().args(["doctor", "--topology"]).arg(&bad).output().expect("doctor");
    let out = text(&doctor);
    assert_eq!(doctor.status.code(), Some(1), "{out}");
    let row = out.lines().find(|l| l.starts_with("c2 virtiofsd ")).unwrap_or_default();
    assert!(row.contains("MISSING") && row.contains("/opt/none/virtiofsd"), "{out}");
    assert!(
        out.lines().find(|l| l.starts_with("c1 virtiofsd ")).unwrap_or_default().contains(" ok "),
        "{out}"
    );

    // A typo: the file and line, exit 2, nothing contacted.
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, original.replacen("mount = ", "mout = ", 1)).expect("write");
    let doctor = miglab().args(["doctor", "--topology"]).arg(&typo).output().expect("doctor");
    let out = text(&doctor);
    assert_eq!(doctor.status.code(), Some(2), "{out}");
    let line = original.lines().position(|l| l.starts_with("mount = ")).expect("mount line") + 1;
    assert!(out.contains(&format!("typo.toml:{line}:")) && out.contains("mout"), "{out}");

    let down =
        miglab().args(["lab", "down", "--name", LAB, "--root"]).arg(root.path()).output().expect("down");
    assert!(down.status.success(), "{}", text(&down));
    assert!(state.processes.iter().filter(|p| p.name.starts_with("sshd.")).count() == 2, "two sshd recorded");
    assert_nothing_left(&state);
}

/// A result's JSON.
fn result_of(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("result.json")).expect("result.json");
    serde_json::from_str(&text).expect("json")
}

/// The figures a local run has, present in a run over SSH too.
fn assert_figures(r: &serde_json::Value, topo: &std::path::Path) {
    let m = &r["migrations"][0];
    assert_eq!(m["outcome"], "completed", "{m}");
    assert!(m["downtime_ms"].as_u64().is_some() && m["total_time_ms"].as_u64().is_some(), "{m}");
    let w =
        r["windows"].as_array().expect("windows").iter().find(|w| w["kind"] == "migration").expect("window");
    assert!(w["heartbeat_gap_ms"].as_f64().is_some_and(|g| g > 0.0), "{w}");
    assert!(r["ops"][0]["count"].as_u64().is_some_and(|n| n > 0), "{}", r["ops"]);
    // Where it ran: both hosts, their builds and clocks.
    let t = &r["provenance"]["topology"];
    assert_eq!(t["file"], topo.display().to_string());
    let hosts = t["hosts"].as_array().expect("hosts");
    assert_eq!(hosts.len(), 2, "{t}");
    for h in hosts {
        assert!(h["qemu"]["sha256"].as_str().is_some_and(|s| s.len() == 64), "{h}");
        assert!(h["virtiofsd"]["version"].as_str().is_some_and(|s| s.contains("virtiofsd")), "{h}");
        // One machine, one clock: within the measurement's own bound (and the RTT is real).
        let (off, rtt) =
            (h["clock_offset_ms"].as_f64().expect("offset"), h["clock_rtt_ms"].as_f64().expect("rtt"));
        assert!(rtt > 0.0 && off.abs() <= rtt / 2.0 + 0.05, "{h}");
    }
    assert!(t["ceph_version"].as_str().is_some_and(|v| v.contains("ceph version")), "{t}");
}

/// The pid records on the lab's hosts (one machine here, so the test reads them directly).
fn pid_records(lab_dir: &std::path::Path) -> Vec<i32> {
    let mut out = Vec::new();
    for host in ["c1", "c2"] {
        let Ok(rd) = std::fs::read_dir(lab_dir.join("remote").join(host)) else { continue };
        for run in rd.flatten() {
            for f in std::fs::read_dir(run.path().join("pids")).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// Whether any process of process group `pgid` runs (zombies do not).
fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or_default();
        let f: Vec<&str> = rest.split_whitespace().collect();
        f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string()
    })
}

/// The SSH master connection of `host` that miglab keeps for the topology in `state_dir`.
fn master_of(state_dir: &std::path::Path, host: &str) -> Option<i32> {
    let dir = state_dir.display().to_string();
    std::fs::read_dir("/proc").into_iter().flatten().flatten().find_map(|e| {
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into())
            .collect();
        let ours = args.first().is_some_and(|a| a.ends_with("ssh"))
            && args.iter().any(|a| a.contains(&dir))
            && args.iter().any(|a| a == "-M")
            && args.last().is_some_and(|a| a == host);
        ours.then(|| e.file_name().to_string_lossy().parse().ok()).flatten()
    })
}

#[test]
#[ignore = "needs the lab (root, Ceph, sshd): cargo test -- --include-ignored"]
fn scenarios_run_over_ssh_and_down_cleans_both_hosts() {
    const LAB: &str = "t-sshrun";
    let load = MachineLoad::start();
    let root = lab_root();
    let _down = DownOnDrop { name: LAB, root: root.path() };
    let (dir, topo, _) = up_with_ssh(root.path(), LAB);
    let out = root.path().join("results");
    // `miglab run SCENARIO --topology TOPOLOGY`, results below `out`.
    let run_on = |scenario: &std::path::Path, topology: &std::path::Path| {
        let mut c = miglab();
        c.arg("run")
            .arg(scenario)
            .arg("--topology")
            .arg(topology)
            .arg("--root")
            .arg(root.path())
            .arg("--out")
            .arg(&out);
        c
    };
    let run = |scenario: &std::path::Path| run_on(scenario, &topo).output().expect("run");
    let down_topology = || {
        miglab()
            .args(["lab", "down", "--root"])
            .arg(root.path())
            .arg("--topology")
            .arg(&topo)
            .output()
            .expect("down --topology")
    };
    let scenarios = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");

    // The smoke scenario, unchanged, end to end over SSH.
    let smoke = run(&scenarios.join("smoke.toml"));
    assert!(smoke.status.success(), "{}", text(&smoke));
    let r = result_of(&out.join("smoke/1"));
    assert_eq!(r["status"], "completed", "{}", text(&smoke));
    assert_figures(&r, &topo);
    assert!(out.join("smoke/1/logs/c2.1/qemu.log").exists(), "the hosts' logs are copied");

    // A fault on the existing cluster through `ceph tell`: it raises the reads' latency, and
    // every setting it changed reads back as it was (`ceph tell osd.N config get`).
    let lab = miglab_infra::topology::lab::Lab::open(LAB, root.path()).expect("open the lab");
    let settings = || -> Vec<String> {
        use miglab_infra::topology::Topology;
        let keys = ["ms_inject_delay_type", "ms_inject_delay_max", "ms_inject_delay_probability"];
        (0..3)
            .flat_map(|i| keys.map(|k| (i, k)))
            .map(|(i, k)| lab.config_get(&format!("osd.{i}").parse().expect("id"), k).expect("config get"))
            .collect()
    };
    let before = settings();
    let delay = run(&scenarios.join("faults/storage-delay.toml"));
    assert!(delay.status.success(), "{}", text(&delay));
    let r = result_of(&out.join("storage-delay/1"));
    assert_figures(&r, &topo);
    let f = &r["faults"][0];
    assert!(f["target"].as_str().is_some_and(|t| t.starts_with("every OSD (osd.0")), "{f}");
    assert!(f["cleared_ms"].as_f64().is_some() && f["healthy_after_ms"].as_f64().is_some(), "{f}");
    assert!(f["error"].is_null(), "{f}");
    assert_eq!(settings(), before, "every setting the fault changed is back");
    let (from, to) = (f["injected_ms"].as_f64().expect("in"), f["cleared_ms"].as_f64().expect("out"));
    let p99 = |inside: bool| {
        let mut v: Vec<u64> = r["series"]
            .as_array()
            .expect("series")
            .iter()
            .filter(|b| b["ops"].as_u64().unwrap_or(0) > 0)
            .filter(|b| {
                let t = b["t_ms"].as_f64().unwrap_or(0.0);
                if inside {
                    t >= from && t + 100.0 <= to
                } else {
                    t + 100.0 < from
                }
            })
            .filter_map(|b| b["p99_us"].as_u64())
            .collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    // The scenario delays half the OSDs' messages by up to 20 ms: a quarter of them by over
    // 10 ms, so the window's p99 op waits near the maximum. Asserted with a margin: the p99
    // rises by at least a quarter of the maximum delay (measured: +10.1 ms on a machine losing
    // 11.6 % of its CPU to steal, where "doubles" failed at 1.91×).
    let max_us = 20_000;
    assert!(
        p99(true) >= p99(false) + max_us / 4,
        "a delay of up to 20 ms: p99 {} us before, {} us during; {}",
        p99(false),
        p99(true),
        load.said()
    );

    // Without allow_destructive nothing changes someone else's cluster.
    let original = std::fs::read_to_string(&topo).expect("topology");
    let careful = dir.join("careful.toml");
    std::fs::write(&careful, original.replace("allow_destructive = true\n", "")).expect("write");
    let refused = run_on(&scenarios.join("faults/storage-delay.toml"), &careful).output().expect("run");
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("allow_destructive"), "{}", text(&refused));

    // Destructive faults are refused on someone's cluster, before anything starts.
    let refused = run(&scenarios.join("faults/osd-kill-during-migration.toml"));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("allow_destructive"), "{}", text(&refused));

    // miglab killed while its storage delay is in effect on the cluster: the change outlives
    // it with its journal entry, and `lab down --topology` sets every value back.
    let long = dir.join("long-delay.toml");
    std::fs::write(
        &long,
        "name = \"long-delay\"\n[workload]\nkind = \"read-loop\"\n[migration]\ncount = 0\nwarmup_s = 90.0\n[[fault]]\nkind = \"storage-delay\"\ntarget = \"osds\"\nmax_ms = 5\nprobability = 1.0\nduration_ms = 60000\ntrigger = { at = \"workload-start\", offset_ms = 500 }\n",
    )
    .expect("write");
    let mut killed = run_on(&long, &topo)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    eventually("the delay in effect", std::time::Duration::from_secs(120), || settings() != before);
    killed.kill().expect("SIGKILL miglab");
    killed.wait().expect("reap");
    assert_ne!(settings(), before, "a killed miglab reverted nothing");
    let down = down_topology();
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("reverted"), "it says what it reverted: {}", text(&down));
    assert_eq!(settings(), before, "down --topology set every value back");
    let ctl = miglab_infra::topology::external::site::control_dir(&topo);
    assert!(
        master_of(&ctl, "c1").is_none() && master_of(&ctl, "c2").is_none(),
        "the killed miglab's SSH masters are ended by down --topology"
    );

    // A host that lacks virtiofsd: named, and no connection to any host is left open.
    let bad = without_virtiofsd(&dir, &original);
    let lacking = run_on(&scenarios.join("smoke.toml"), &bad).output().expect("run");
    assert_eq!(lacking.status.code(), Some(1), "{}", text(&lacking));
    assert!(text(&lacking).contains("c2 has no virtiofsd"), "{}", text(&lacking));
    let ctl = miglab_infra::topology::external::site::control_dir(&bad);
    assert!(master_of(&ctl, "c1").is_none() && master_of(&ctl, "c2").is_none(), "a connection is left");

    // The source host's SSH connection killed in the middle of a run: the run fails and says
    // so; `lab down --topology` ends what was left on both hosts.
    let long = root.path().join("long.toml");
    let smoke_text = std::fs::read_to_string(scenarios.join("smoke.toml")).expect("smoke");
    std::fs::write(
        &long,
        smoke_text
            .replace("name = \"smoke\"", "name = \"long\"")
            .replace("warmup_s = 1.0", "warmup_s = 60.0"),
    )
    .expect("write");
    let child = run_on(&long, &topo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let state_dir = miglab_infra::topology::external::site::state_dir(root.path(), &topo);
    eventually("virtiofsd and QEMU to start on c1", std::time::Duration::from_secs(120), || {
        pid_records(&dir).len() >= 2
    });
    // Into the warm-up (60 s): the guest boots in a few seconds (4.2 s seen in a CI lane). A
    // kill during the boot fails the run too, but before any heartbeat: not a guest lost.
    std::thread::sleep(std::time::Duration::from_secs(10));
    let pids = pid_records(&dir);
    assert_eq!(pids.len(), 2, "virtiofsd and QEMU recorded on c1: {pids:?}");
    // c1 unreachable: its connection killed, and its sshd frozen so that none is made anew.
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let sshd = state_of(root.path(), LAB)
        .expect("state")
        .processes
        .into_iter()
        .find(|p| p.name == "sshd.c1")
        .expect("c1's sshd")
        .pid;
    let master = master_of(&miglab_infra::topology::external::site::control_dir(&topo), "c1")
        .expect("c1's SSH master");
    kill(Pid::from_raw(sshd), Signal::SIGSTOP).expect("freeze sshd");
    kill(Pid::from_raw(master), Signal::SIGKILL).expect("kill the connection");
    let failed =
        within("the run to end", std::time::Duration::from_secs(120), move || child.wait_with_output())
            .expect("wait");
    let said = text(&failed);
    assert_eq!(failed.status.code(), Some(1), "{said}");
    assert!(said.contains("SSH connection to c1 was lost"), "{said}");
    // The run gave up on the guest when its heartbeats stopped (they came through the lost
    // connection); its outcome says so, whatever bucket the series ended in.
    assert!(said.contains("outcome: guest-lost"), "{said}");
    kill(Pid::from_raw(sshd), Signal::SIGCONT).expect("thaw sshd");
    assert!(pids.iter().all(|p| group_alive(*p)), "the guest outlives the connection: {pids:?}");
    let busy = run(&scenarios.join("smoke.toml"));
    assert_eq!(busy.status.code(), Some(2), "{}", text(&busy));
    assert!(text(&busy).contains("lab down --topology"), "{}", text(&busy));
    let down = down_topology();
    assert!(down.status.success(), "{}", text(&down));
    assert!(pids.iter().all(|p| !group_alive(*p)), "{}", text(&down));
    assert!(pid_records(&dir).is_empty(), "{}", text(&down));
    assert!(!state_dir.exists(), "the local state is gone");

    let state = state_of(root.path(), LAB).expect("state");
    let down =
        miglab().args(["lab", "down", "--name", LAB, "--root"]).arg(root.path()).output().expect("down");
    assert!(down.status.success(), "{}", text(&down));
    assert_nothing_left(&state);
}
