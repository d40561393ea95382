//! The external topology tried on one machine: `lab up --ssh` starts a real sshd in each
//! client host's namespace and writes a topology file that reaches them only through SSH;
//! `doctor --topology` checks every host over it, names a host without virtiofsd, and refuses a
//! file with a typo at its line; `lab down` leaves no sshd behind.

mod common;

use common::*;
use std::process::Command;

const LAB: &str = "t-ssh";

fn text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
#[ignore = "needs the lab (root, Ceph, sshd): cargo test -- --include-ignored"]
fn lab_hosts_are_reached_and_checked_over_ssh() {
    let root = lab_root();
    let _down = DownOnDrop { name: LAB, root: root.path() };
    let up = miglab()
        .args(["lab", "up", "--ssh", "--name", LAB, "--root"])
        .arg(root.path())
        .output()
        .expect("lab up");
    assert!(up.status.success(), "{}", text(&up));
    let dir = root.path().join(LAB);
    let topo = dir.join("topology.toml");
    assert!(text(&up).contains(&topo.display().to_string()), "{}", text(&up));
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
    let c2 = original.find("name = \"c2\"").expect("c2");
    let mut broken = original.clone();
    let at = c2 + broken[c2..].find("virtiofsd = ").expect("c2's virtiofsd");
    let end = at + broken[at..].find('\n').expect("eol");
    broken.replace_range(at..end, "virtiofsd = \"/opt/none/virtiofsd\"");
    let bad = dir.join("no-virtiofsd.toml");
    std::fs::write(&bad, &broken).expect("write");
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
