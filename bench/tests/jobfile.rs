//! A whole fio job file on the real lab: several jobs (clones sharing one file at mixed block
//! sizes, a zipf reader, a stonewalled job after them) across migrations, with every unit of
//! every file verified and each job's figures apart. Ignored by a plain `cargo test`; `ci/test`
//! runs it.

mod common;

use common::*;
use miglab_model::RunStatus;

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn a_job_file_of_several_jobs_crosses_migrations_with_every_block_verified() {
    let t = TestLab::up("tjobs");
    // The job file by its absolute path: any readable path will do.
    let job = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/fio/jobs.fio");
    let s = ScenarioFile::new("jobfile")
        .with(&format!("fio_file = \"{}\"\n", job.display()))
        .with("[migration]\ncount = 2\n");
    let r = t.run(&s);
    assert_eq!(r.status, RunStatus::Completed, "{:?} {:?}", r.problems, r.error);
    assert_eq!(r.migrations.len(), 2);
    let v = r.verification.as_ref().expect("verified");
    assert!(v.blocks > 0 && v.mismatched == 0 && v.missing == 0, "{v:?}");
    let names: Vec<&str> = r.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["mixed-writers", "zipf-reader", "after"]);
    let clones: Vec<u32> = r.jobs.iter().map(|j| j.clones).collect();
    assert_eq!(clones, [2, 1, 1]);
    for j in &r.jobs {
        let ops: u64 = j.ops.iter().map(|o| o.count).sum();
        assert!(ops > 0, "job {} did nothing: {:?}", j.name, j.ops);
        assert!(j.ops.iter().all(|o| o.mismatches == 0 && o.failed == 0), "{}: {:?}", j.name, j.ops);
    }
    let writes = |name: &str| {
        r.jobs
            .iter()
            .find(|j| j.name == name)
            .and_then(|j| j.ops.iter().find(|o| o.op == "write"))
            .map(|o| o.count)
    };
    assert!(writes("mixed-writers").is_some_and(|n| n > 0) && writes("after").is_some_and(|n| n > 0));
    assert_eq!(r.groups.len(), 2, "stonewall starts a second reporting group");
    assert!(r.jobs[0].description.contains("zipf reader"));
    t.down_clean();
}
