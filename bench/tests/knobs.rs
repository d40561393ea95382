//! Migration knobs on the real lab: postcopy asked for with a vhost-user-fs device (and
//! dirty-limit under TCG) is refused by QEMU, and that refusal is the hop's own outcome
//! (`unsupported`, with QEMU's text), the guest running on where it was with nothing lost; a
//! guest dirtying memory beside its I/O, verified page by page, converging or not. Ignored by a
//! plain `cargo test`; `ci/test` runs it.

mod common;

use common::*;
use miglab_model::{Outcome, RunOutcome, RunStatus};

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn postcopy_with_virtiofsd_and_dirty_limit_under_tcg_are_refused_and_that_is_the_outcome() {
    let t = TestLab::lease();
    let shipped = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/postcopy-refused.toml");
    let text = std::fs::read_to_string(&shipped).expect("the shipped scenario");
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("name =") && !l.starts_with("seed ="))
        .map(|l| format!("{l}\n"))
        .collect();
    let r = t.run(&ScenarioFile::new("postcopy").with(&body));
    assert_eq!(r.outcome, Some(RunOutcome::Unsupported), "{:?} {:?}", r.outcome_why, r.error);
    assert_eq!(r.status, RunStatus::Completed, "expected, nothing lost: {:?}", r.problems);
    let m = &r.migrations[0];
    let Outcome::Unsupported { error } = &m.outcome else { panic!("{m:?}") };
    // QEMU's own words, from the destination (the back end lacks PAGEFAULT).
    assert!(error.contains("postcopy") && error.contains("Destination"), "{error}");
    assert!(m.params.postcopy && m.downtime_ms.is_none(), "{m:?}");
    let v = r.verification.as_ref().expect("verified");
    assert!(v.read_through == "c1" && v.mismatched == 0 && v.missing == 0, "the guest stayed on c1: {v:?}");

    // dirty-limit needs KVM with a dirty ring: under TCG the source refuses it, and that is the
    // hop's outcome too, with QEMU's reason (on KVM the hop may go through).
    let r = t.run(&ScenarioFile::new("dirtylimit").with(
        "[workload]\nkind = \"read-loop\"\n[migration]\nwarmup_s = 1.0\nfollow_up = false\n[migration.tuning]\ndirty_limit_mib_s = 8\n",
    ));
    let m = &r.migrations[0];
    assert_eq!(m.params.tuning.dirty_limit_mib_s, Some(8), "recorded with the hop");
    if r.provenance.accelerator == "tcg" {
        assert_eq!(r.outcome, Some(RunOutcome::Unsupported), "{:?}", r.outcome_why);
        let Outcome::Unsupported { error } = &m.outcome else { panic!("{m:?}") };
        assert!(error.contains("Source QEMU refused dirty-limit") && error.contains("KVM"), "{error}");
    }
    t.release_clean();
}

/// A guest dirtying memory beside its file I/O, on the real lab:
/// * every page of its working set holds its latest generation after each of two hops, and
///   the bandwidth cap holds without multifd;
/// * at a 16 MiB/s cap, dirtying 32 MiB/s, pre-copy never converges: the outcome is
///   `not-converged` (not a generic timeout), the guest runs on at the source, its pages intact;
/// * the same with auto-converge converges: QEMU throttled the vCPUs and the hop completed;
/// * with 1 and 4 multifd channels the achieved rate is measured against the cap (the
///   docs/findings.md says by how much it is exceeded here).
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_dirtying_guest_is_verified_each_hop_and_converges_only_when_throttled() {
    let t = TestLab::lease();
    let base = |extra: &str| {
        format!(
            "[workload]\nkind = \"read-loop\"\n[dirty]\nsize_mib = 48\nrate_mib_s = 32\n[migration]\nwarmup_s = 1.0\nsettle_s = 0.5\nfollow_up = false\n{extra}"
        )
    };

    let cap = 16u64 << 20;
    let capped = format!("max_bandwidth = {cap}\n");

    // Two hops under the cap, dirtying slowly enough to converge: every page after each, and
    // the cap holds (achieved rate = bytes sent / total time).
    let slow = |extra: &str| {
        base(&format!("{capped}timeout_s = 60\n{extra}")).replace("rate_mib_s = 32", "rate_mib_s = 4")
    };
    let achieved = |m: &miglab_model::MigrationRecord, name: &str| {
        let rate =
            m.transferred_bytes.expect("bytes") as f64 / (m.total_time_ms.expect("total") as f64 / 1000.0);
        eprintln!("{name}: {:.1} MiB/s against a cap of {} MiB/s", rate / 1048576.0, cap >> 20);
        rate / cap as f64
    };
    let r = t.run(&ScenarioFile::new("single").with(&slow("count = 2\n")));
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.problems, r.error);
    let m = r.memory.as_ref().expect("the dirtying load's result");
    assert_eq!(m.checks.len(), 2, "one check per hop: {m:?}");
    for (h, host) in m.checks.iter().zip(["c2", "c1"]) {
        let c = h.check.as_ref().unwrap_or_else(|| panic!("hop {} unchecked: {:?}", h.hop, h.error));
        assert_eq!(h.host, host);
        assert!(c.pages == 12288 && c.clean() && c.written > 0, "every page, each hop: {c:?}");
        // Every page's contents at the switch-over verified: by the read-back, or by the
        // writer before it rewrote the page.
        assert!(c.rewritten_since_mark.is_some() && c.coverage() == Some(1.0), "{h:?}");
    }
    assert!(m.median_ms_per_gib().is_some_and(|s| s > 0.0), "the update speed is measured");
    // Measured before each hop; page sampling may read a 4 MiB/s rewriter as 0 MiB/s (QEMU
    // rounds to whole MiB/s), so only that it was measured is asserted here.
    for mig in &r.migrations {
        assert!(mig.convergence.dirty_rate_mib_s.is_some(), "QEMU's dirty rate: {mig:?}");
        assert!(!mig.convergence.passes.is_empty(), "{mig:?}");
    }
    let single = achieved(&r.migrations[0], "single");
    assert!(single > 0.5 && single <= 1.1, "without multifd the cap holds: {single:.2} × cap");

    // As fast as the guest can, over a small set: by the read-back every page holds a newer
    // generation than at the switch-over (the old check could judge none of them); the writer
    // verified each before rewriting it.
    let r = t.run(
        &ScenarioFile::new("rate0").with(
            &base("count = 1\ntimeout_s = 60\n")
                .replace("size_mib = 48", "size_mib = 16")
                .replace("rate_mib_s = 32", "rate_mib_s = 0"),
        ),
    );
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.problems, r.error);
    let h = &r.memory.as_ref().expect("memory").checks[0];
    let c = h.check.as_ref().expect("checked");
    eprintln!(
        "rate 0: {} of {} pages rewritten since the switch-over",
        c.rewritten_since_mark.unwrap_or(0),
        c.pages
    );
    assert!(c.clean() && c.coverage() == Some(1.0), "{h:?}");
    assert!(c.readback_coverage().is_some_and(|b| b < 0.5), "the writer outran the read-back: {h:?}");

    // Pass 1 alone takes ~4.5 s at the cap: 8 s sees a second pass begin, and never converge.
    let r = t.run(&ScenarioFile::new("nc").with(&base(&format!("count = 1\n{capped}timeout_s = 8\n"))));
    assert_eq!(r.outcome, Some(RunOutcome::NotConverged), "{:?}", r.outcome_why);
    let Outcome::NotConverged { passes, remaining_bytes, source_running, .. } = r.migrations[0].outcome
    else {
        panic!("{:?}", r.migrations[0].outcome)
    };
    assert!(passes >= 2 && remaining_bytes > 0 && source_running, "{:?}", r.migrations[0].outcome);
    let rate = r.migrations[0].convergence.dirty_rate_mib_s;
    assert!(rate.is_some_and(|d| d > 0.0), "QEMU saw a 32 MiB/s rewriter dirty memory: {rate:?}");
    let c = r.memory.as_ref().and_then(|m| m.checks[0].check.as_ref()).expect("checked on the source");
    assert!(c.clean() && r.memory.as_ref().is_some_and(|m| m.checks[0].host == "c1"), "{c:?}");

    let r = t.run(&ScenarioFile::new("ac").with(&base(&format!(
        "count = 1\n{capped}timeout_s = 60\n[migration.tuning]\nauto_converge = {{ initial_pct = 60, increment_pct = 20 }}\n"
    ))));
    // Completed, or completed-degraded: the throttled vCPUs can stall the guest's reads.
    assert!(
        r.migrations[0].completed() && r.status == RunStatus::Completed,
        "{:?} {:?}",
        r.outcome_why,
        r.problems
    );
    let conv = &r.migrations[0].convergence;
    assert!(conv.max_throttle_pct.is_some_and(|t| t >= 60), "throttled: {conv:?}");
    assert!(r
        .memory
        .as_ref()
        .is_some_and(|m| m.checks.iter().all(|h| h.check.as_ref().is_some_and(|c| c.clean()))));

    for ch in [1, 4] {
        let name = format!("multifd{ch}");
        let r = t.run(
            &ScenarioFile::new(&name)
                .with(&slow(&format!("count = 1\n[migration.tuning]\nmultifd_channels = {ch}\n"))),
        );
        assert!(r.migrations[0].completed(), "{name}: {:?}", r.outcome_why);
        let ratio = achieved(&r.migrations[0], &name);
        assert!(ratio > 0.5, "multifd {ch}: {ratio:.2} × cap");
    }
    t.release_clean();
}

/// `miglab check` asks this QEMU which multifd compressions it was built with: a scenario naming
/// one it lacks is refused up front, naming those it has; one it has passes.
#[test]
#[ignore = "needs QEMU and the guest image (ci/setup): cargo test -- --include-ignored"]
fn check_names_the_multifd_compressions_this_qemu_has() {
    let qemu = miglab_infra::binaries::BinaryChoice::default().qemu_path();
    let have = miglab::doctor::multifd_compressions(&qemu).expect("QEMU answers");
    assert_eq!(have[0], "none");
    let dir = tempfile::tempdir().expect("tmp");
    let body = |z: &str| {
        format!(
            "[workload]\nkind = \"read-loop\"\n[migration.tuning]\nmultifd_channels = 2\nmultifd_compression = \"{z}\"\n"
        )
    };
    let check = |name: &str, z: &str| {
        let file = ScenarioFile::new(name).with(&body(z)).write(dir.path());
        std::process::Command::new(env!("CARGO_BIN_EXE_miglab"))
            .arg("check")
            .arg(&file)
            .output()
            .expect("miglab check")
    };
    let lacking = ["zlib", "zstd", "qpl", "uadk"].into_iter().find(|z| !have.contains(z));
    if let Some(z) = lacking {
        let out = check("lacks", z);
        let e = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "refused as bad input: {e}");
        assert!(e.contains(&format!("\"{z}\"")) && e.contains(&have.join(", ")), "{e}");
    }
    let out = check("has", have[have.len() - 1]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `miglab findings` re-checks a finding on the lab: the postcopy refusal holds with this
/// QEMU and virtiofsd, and says so with its evidence and today's builds.
#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn findings_recheck_the_postcopy_refusal_and_it_holds() {
    let t = TestLab::lease();
    let out = tempfile::tempdir().expect("tmp");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/findings");
    let run = miglab()
        .arg("findings")
        .arg(&dir)
        .args(["--only", "postcopy-refused", "--lab", t.name(), "--root"])
        .arg(t.root())
        .arg("--out")
        .arg(out.path())
        .output()
        .expect("miglab findings");
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{said}\n{}", String::from_utf8_lossy(&run.stderr));
    let rows: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("findings.json")).expect("findings.json"))
            .expect("json");
    let row = &rows[0];
    assert_eq!(row["status"], "holds", "{row}");
    assert_eq!(row["runs"], 1, "{row}");
    assert!(
        row["evidence"][0]
            .as_str()
            .is_some_and(|e| e.starts_with("outcome unsupported (expected unsupported): yes")),
        "{row}"
    );
    assert!(
        row["today"].as_str().is_some_and(|v| v.starts_with("QEMU ") && v.contains("virtiofsd ")),
        "{row}"
    );
    let table = std::fs::read_to_string(out.path().join("findings.md")).expect("findings.md");
    assert!(table.contains("| [postcopy-refused](docs/findings.md#postcopy-is-refused-with-a-virtio-fs-device) | **holds** |"), "{table}");
    t.release_clean();
}

/// Bad input to `miglab findings` is refused before any lab is touched, naming the fix.
#[test]
fn findings_refuse_an_unknown_name_and_a_scenario_without_a_finding() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/findings");
    let out = miglab().arg("findings").arg(&dir).args(["--only", "no-such-finding"]).output().expect("run");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("--only no-such-finding") && e.contains("postcopy-refused"), "{e}");

    let plain = tempfile::tempdir().expect("tmp");
    ScenarioFile::new("plain").with("[workload]\nkind = \"read-loop\"\n").write(plain.path());
    let out = miglab().arg("findings").arg(plain.path()).output().expect("run");
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{e}");
    assert!(e.contains("no [finding] table"), "{e}");
}
