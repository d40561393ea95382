//! `miglab compare` on real result sets, and the builds under test as a choice: the same
//! scenario twice, interleaved by `miglab ab` (its candidate a copy of QEMU chosen with
//! --candidate-qemu, its runs made by a copy of miglab; five pairs: inconclusive at its budget)
//! → no new failure and at most one chance call (α = 0.01 over ~8 independent figures, QEMU's
//! downtime and its parts counted as one: a true chance call must not fail CI); the same
//! scenario with the migration bandwidth capped → refused until the difference is declared,
//! then a regression in total migration time, exit 1; a candidate of which 2 of 5 runs
//! failed (their migration cancelled) → new failures, exit 1.

mod common;

use common::*;
use miglab_model::RunResult;
use std::path::Path;

const LAB: &str = "t-compare";

const SCENARIO: &str = r#"name = "cmp"
seed = 9
repetitions = 5
[workload]
kind = "read-loop"
[migration]
warmup_s = 1.0
settle_s = 0.5
[run]
cooldown_s = 0.2
"#;

fn run(root: &Path, scenario: &Path, out: &Path, extra: &[&str]) {
    let o = run_any(root, scenario, out, extra);
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn run_any(root: &Path, scenario: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    miglab()
        .args(["run", "--lab", LAB, "--root"])
        .arg(root)
        .arg("--out")
        .arg(out)
        .args(extra)
        .arg(scenario)
        .output()
        .expect("miglab run")
}

fn compare(a: &Path, b: &Path, extra: &[&str]) -> (i32, String) {
    let o = miglab().arg("compare").arg(a).arg(b).args(extra).output().expect("miglab compare");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.code().unwrap_or(-1), text)
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn compare_calls_a_capped_migration_a_regression_and_equal_sets_nothing() {
    let root = lab_root();
    let _down = DownOnDrop { name: LAB, root: root.path() };
    let up = miglab().args(["lab", "up", "--name", LAB, "--root"]).arg(root.path()).output().expect("lab up");
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let dir = root.path().join("scenarios");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let plain = dir.join("cmp.toml");
    std::fs::write(&plain, SCENARIO).expect("write");
    let capped = dir.join("cmp-capped.toml");
    std::fs::write(&capped, SCENARIO.replace("settle_s = 0.5", "settle_s = 0.5\nmax_bandwidth = 10000000"))
        .expect("write");
    // The candidate's QEMU is a copy at another path: a build chosen with --qemu. Its runs are
    // made by "another miglab build" (this one, copied): `PATH run …` per run, not in process.
    let qemu = root.path().join("qemu-copy");
    std::fs::copy(miglab_infra::paths::tool("qemu-system-x86_64"), &qemu).expect("copy qemu");
    let other = root.path().join("miglab-copy");
    std::fs::copy(env!("CARGO_BIN_EXE_miglab"), &other).expect("copy miglab");

    // The two sets of the same build interleaved by `miglab ab`, pair after pair (the first
    // side alternating): a lab's first minutes (or anything else that drifts on a shared
    // machine) must land on both sides, not on one. Run back to back, a fresh lab once made
    // the first set's downtime 150 ms against 41 ms for the second, every run apart: a true
    // difference, but not the builds'. The candidate's guest kernel is chosen by its package
    // directory (the installed one: the same image).
    let kernel = miglab_infra::paths::guest_kernel_dir();
    let pairs = root.path().join("pairs");
    let o = miglab()
        .args(["ab", "--lab", LAB, "--root"])
        .arg(root.path())
        .arg("--out")
        .arg(&pairs)
        .args(["--max-pairs", "5", "--candidate-qemu"])
        .arg(&qemu)
        .arg("--candidate-miglab")
        .arg(&other)
        .arg("--candidate-kernel")
        .arg(&kernel)
        .arg(&plain)
        .output()
        .expect("miglab ab");
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{said}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(said.contains(&format!("--miglab {}", other.display())), "the other build is named: {said}");
    // The other build ran the candidate's runs, this one the baseline's: each result says so.
    let by = |side: &str| read_result(&pairs.join(side).join("1/cmp/1")).provenance.miglab_binary;
    assert_eq!(by("candidate").as_deref(), other.to_str());
    assert_eq!(by("baseline").as_deref(), Some(env!("CARGO_BIN_EXE_miglab")));
    // Five pairs cannot bound a median at α = 0.05 (seven can): inconclusive at the budget,
    // every pair recorded with its two figures.
    assert!(said.contains("INCONCLUSIVE after 5 pairs") && said.contains("the budget of 5 pairs"), "{said}");
    let ab: serde_json::Value =
        serde_json::from_slice(&std::fs::read(pairs.join("ab.json")).expect("ab.json")).expect("json");
    assert_eq!(ab["verdict"], "inconclusive");
    let recorded = ab["pairs"].as_array().expect("pairs");
    assert_eq!(recorded.len(), 5);
    assert!(recorded.iter().all(|p| p["baseline"].is_number() && p["candidate"].is_number()), "{ab}");
    assert_eq!(
        (recorded[0]["first"].as_str(), recorded[1]["first"].as_str()),
        (Some("baseline"), Some("candidate"))
    );
    let (a, b, c) = (pairs.join("baseline"), pairs.join("candidate"), root.path().join("c"));
    run(root.path(), &capped, &c, &[]);

    let r: RunResult = read_result(&b.join("1/cmp/1"));
    let q = r.provenance.binaries.iter().find(|x| x.role == "qemu").expect("qemu recorded");
    assert_eq!(Path::new(&q.path), qemu.as_path(), "{q:?}");
    assert!(q.sha256.as_ref().is_some_and(|s| s.len() == 64) && q.version.is_some(), "{q:?}");
    assert!(r.provenance.binaries.iter().any(|x| x.role == "kernel" && x.sha256.is_some()));

    // The same build at another path is the same build: nothing differs, no run failed, and
    // at most one metric is called by chance.
    let out = root.path().join("ab");
    let (code, text) = compare(&a, &b, &["--out", out.to_str().expect("utf8")]);
    eprintln!("same against same:\n{text}");
    // QEMU's downtime and its parts are one measurement split up: a chance difference in it
    // moves several of them together, and counts once.
    let called: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_end().ends_with("REGRESSION") || l.trim_end().ends_with("improvement"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let downtime = |m: &str| m == "qemu_downtime_ms" || m.starts_with("downtime.");
    let chance =
        called.iter().filter(|m| !downtime(m)).count() + usize::from(called.iter().any(|m| downtime(m)));
    assert!(text.contains("0 new failure(s)") && !text.contains("differ in"), "{text}");
    assert!(chance <= 1 && (code == 0 || chance == 1), "{chance} chance calls, exit {code}: {text}");
    for f in ["compare.md", "compare.html", "junit.xml"] {
        assert!(out.join(f).exists(), "{f} written");
    }

    // A changed scenario is refused until declared, with the line named.
    let (code, text) = compare(&a, &c, &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("max_bandwidth = 10000000") && text.contains("--variable"), "{text}");
    let (code, text) = compare(&a, &c, &["--variable", "scenario"]);
    assert_eq!(code, 1, "{text}");
    eprintln!("capped against plain:\n{text}");
    let total = text.lines().find(|l| l.contains("total_ms ")).unwrap_or_default();
    assert!(total.contains("REGRESSION"), "{text}");

    // 2 of 5 candidate runs fail (their migration cancelled): a finding, whatever the figures.
    let cancel = dir.join("cmp-cancel.toml");
    std::fs::write(
        &cancel,
        SCENARIO.replace(
            "settle_s = 0.5",
            "settle_s = 0.5\nmax_bandwidth = 2000000\nfollow_up = false\n[[fault]]\nkind = \"migrate-cancel\"\ntrigger = { at = \"hop-start\", hop = 1, offset_ms = 1000 }",
        ),
    )
    .expect("write");
    let d = root.path().join("d");
    run(root.path(), &plain, &d.join("ok"), &["--repetitions", "3"]);
    let o = run_any(root.path(), &cancel, &d.join("cancelled"), &["--repetitions", "2"]);
    assert!(!o.status.success(), "a cancelled migration fails the run");
    let (code, text) = compare(&a, &d, &["--variable", "scenario"]);
    eprintln!("2 of 5 failed against plain:\n{text}");
    assert_eq!(code, 1, "{text}");
    let outcomes = text.lines().find(|l| l.contains("outcomes (runs)")).unwrap_or_default();
    assert!(outcomes.contains("NEW FAILURES") && outcomes.contains("2 failed"), "{text}");
}

/// A path that is no miglab is refused before any lab or run, naming it and the fix.
#[test]
fn ab_refuses_another_miglab_that_is_none() {
    let scenario = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/smoke.toml");
    for not in ["/bin/true", "/nonexistent/miglab"] {
        let o = miglab().arg("ab").arg(&scenario).args(["--candidate-miglab", not]).output().expect("ab");
        let e = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{not}: {e}");
        assert!(e.contains(not) && e.contains("give a miglab binary"), "{not}: {e}");
    }
}
