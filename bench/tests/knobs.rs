//! Migration knobs on the real lab: postcopy asked for with a vhost-user-fs device is refused
//! by QEMU, and that refusal is the hop's own outcome (`unsupported`, with QEMU's text), the
//! guest running on where it was with nothing lost. Ignored by a plain `cargo test`; `ci/test`
//! runs it.

mod common;

use common::*;
use miglab_reports::{Outcome, RunOutcome, RunStatus};

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn postcopy_with_virtiofsd_is_refused_and_that_is_the_outcome() {
    let t = TestLab::up("tknobs");
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
    t.down_clean();
}
