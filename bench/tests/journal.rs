//! A miglab killed (SIGKILL) while its fault is in effect: the fault's change stays, but so does
//! its journal entry; the next `miglab run` on the same lab undoes it first (and says so),
//! refuses the orphaned guest with the command that stops it, and after that command completes
//! — never hangs on a cut link or measures a changed cluster. One test per fault kind.

mod common;

use common::*;
use miglab_infra::topology::lab::Lab;
use miglab_infra::topology::lab::LabOptions;
use miglab_infra::topology::Topology;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

const RD: &str =
    "[workload]\nkind = \"fio\"\nname = \"rd\"\nrw = \"randread\"\nbs = \"4k\"\nsize = \"8m\"\ndirect = true\n";

fn scenario_file(root: &Path, name: &str, body: &str) -> std::path::PathBuf {
    ScenarioFile::new(name).seed(3).with(RD).with(body).write(root)
}

/// `miglab run` of `scenario` on lab `lab`, bounded: a run that hangs fails the test.
fn run(root: &Path, lab: &str, scenario: &Path) -> Output {
    let mut cmd = miglab();
    cmd.args(["run", "--lab", lab, "--root"]).arg(root).arg("--out").arg(root.join("results")).arg(scenario);
    within("miglab run", Duration::from_secs(300), move || cmd.output().expect("run miglab"))
}

/// Kills a miglab mid-fault (`fault`, 60 s long, injected 1 s into the workload), checks that
/// `in_effect` holds after the kill, then that the next run undoes it before anything else.
fn killed_mid_fault(name: &str, fault: &str, in_effect: impl Fn(&Lab) -> bool) {
    let root = lab_root();
    let r = root.path();
    let _down = DownOnDrop { name, root: r };
    let lab = Lab::up(&LabOptions { name: name.into(), root: r.into(), ..LabOptions::default() })
        .unwrap_or_else(|e| panic!("lab up: {e}"));
    let long = scenario_file(
        r,
        "long",
        &format!("[migration]\ncount = 0\nwarmup_s = 90.0\n[[fault]]\n{fault}\nduration_ms = 60000\ntrigger = {{ at = \"workload-start\", offset_ms = 1000 }}\n"),
    );
    let mut child = miglab()
        .args(["run", "--lab", name, "--root"])
        .arg(r)
        .arg("--out")
        .arg(r.join("results"))
        .arg(&long)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    eventually("the fault's journal entry", Duration::from_secs(120), || {
        lab.journal().iter().any(|e| !e.steps.is_empty())
    });
    // The change follows its journal entry: let it land.
    eventually("the fault in effect", Duration::from_secs(30), || in_effect(&lab));
    child.kill().expect("SIGKILL miglab");
    child.wait().expect("reap");
    assert!(in_effect(&lab), "a killed miglab undid nothing");
    assert!(!lab.journal().is_empty(), "its journal entry outlives it");

    // The next run: the fault undone first, then the orphaned guest refused with its fix.
    let short = scenario_file(r, "short", "[migration]\ncount = 0\nwarmup_s = 2.0\n");
    let out = run(r, name, &short);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!in_effect(&lab), "the next run undid the fault: {err}");
    assert!(lab.journal().is_empty(), "the journal is empty again: {:?}", lab.journal());
    assert!(err.contains("undid what 'fault 1"), "it says what it undid: {err}");
    assert_eq!(out.status.code(), Some(2), "the orphaned guest is refused: {err}");
    assert!(err.contains("miglab vm down --name"), "naming the fix: {err}");
    let down = miglab()
        .args(["vm", "down", "--name", name, "--vm", "long-1", "--root"])
        .arg(r)
        .output()
        .expect("vm down");
    assert!(down.status.success(), "vm down: {}", String::from_utf8_lossy(&down.stderr));
    let out = run(r, name, &short);
    assert!(
        out.status.success(),
        "the run after the fix completes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_killed_miglabs_osd_freeze_is_undone_by_the_next_run() {
    killed_mid_fault("tj-freeze", "kind = \"osd-freeze\"\nosd = 1", |lab| {
        let osd = lab.state().processes.into_iter().rev().find(|p| p.name == "osd.1").expect("osd.1");
        miglab_infra::process::proc_stat(osd.pid).is_some_and(|s| s.state == 'T')
    });
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_killed_miglabs_partition_is_healed_by_the_next_run() {
    killed_mid_fault("tj-part", "kind = \"partition\"\nhost = \"c1\"", |lab| {
        !lab.state().partitioned.is_empty()
    });
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_killed_miglabs_storage_delay_is_reverted_by_the_next_run() {
    killed_mid_fault(
        "tj-delay",
        "kind = \"storage-delay\"\ntarget = \"osds\"\nmax_ms = 50\nprobability = 1.0",
        |lab| {
            (0..3).any(|i| {
                lab.config_get(&format!("osd.{i}").parse().expect("id"), "ms_inject_delay_probability")
                    .is_ok_and(|v| v.parse::<f64>().unwrap_or(0.0) > 0.0)
            })
        },
    );
}
