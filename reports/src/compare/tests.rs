use super::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// `n` runs around `mean` with a relative spread `cv` (normal, Box–Muller).
fn runs(rng: &mut StdRng, n: usize, mean: f64, cv: f64) -> Vec<f64> {
    (0..n)
        .map(|_| {
            let (u, v): (f64, f64) = (rng.gen_range(f64::EPSILON..1.0), rng.gen());
            let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            mean * (1.0 + cv * z)
        })
        .collect()
}

/// Single runs on a shared machine swing about ±10 %: a spread of 7 % (one sigma).
const CV: f64 = 0.07;

fn calls(shift: f64, n: usize, m: usize, seeds: u64) -> usize {
    let o = Options::default();
    (0..seeds)
        .filter(|&s| {
            let mut rng = StdRng::seed_from_u64(s);
            let a = runs(&mut rng, n, 1000.0, CV);
            let b = runs(&mut rng, m, 1000.0 * (1.0 + shift), CV);
            judge("g", metric("total_ms"), a, b, &o, s).call != Call::Unchanged
        })
        .count()
}

#[test]
fn no_difference_is_called_in_at_most_one_percent_of_a_thousand_seeds() {
    let flagged = calls(0.0, 5, 15, 1000);
    eprintln!("no difference, 5 against 15 runs, 7 % spread: {flagged} of 1000 seeds called");
    assert!(flagged <= 10, "{flagged} of 1000 false calls");
    let flagged = calls(0.0, 5, 5, 1000);
    eprintln!("no difference, 5 against 5 runs, 7 % spread: {flagged} of 1000 seeds called");
    assert!(flagged <= 10, "{flagged} of 1000 false calls (5 against 5)");
}

#[test]
fn a_twenty_percent_shift_with_five_against_fifteen_runs_is_found_nine_times_in_ten() {
    let found = calls(0.20, 5, 15, 1000);
    eprintln!("a 20 % shift, 5 against 15 runs, 7 % spread: found in {found} of 1000 seeds");
    let five = calls(0.20, 5, 5, 1000);
    eprintln!("a 20 % shift, 5 against 5 runs, 7 % spread: found in {five} of 1000 seeds");
    assert!(found >= 900, "found in {found} of 1000");
}

#[test]
fn the_floor_and_the_threshold_each_veto_on_their_own() {
    let o = Options::default();
    // 1.0 → 1.6 ms: +60 %, complete separation, but 0.6 ms is under the 2 ms floor.
    let a = vec![1.0, 1.01, 0.99, 1.02, 0.98];
    let b: Vec<f64> = a.iter().map(|v| v + 0.6).collect();
    let r = judge("g", metric("qemu_downtime_ms"), a.clone(), b, &o, 1);
    assert_eq!(r.call, Call::Unchanged);
    assert!(r.why.contains("floor") && !r.why.contains("p =") && !r.why.contains("threshold"), "{}", r.why);
    // 1000 → 1050 ms: complete separation and 50 ms over the floor, but +5 % is noise.
    let a = vec![1000.0, 1001.0, 999.0, 1002.0, 998.0];
    let b: Vec<f64> = a.iter().map(|v| v * 1.05).collect();
    let r = judge("g", metric("total_ms"), a.clone(), b, &o, 1);
    assert_eq!(r.call, Call::Unchanged);
    assert!(r.why.contains("threshold") && !r.why.contains("floor") && !r.why.contains("p ="), "{}", r.why);
    // And with both passed: +20 % is a regression of a time, an improvement of a throughput.
    let b: Vec<f64> = a.iter().map(|v| v * 1.2).collect();
    assert_eq!(judge("g", metric("total_ms"), a.clone(), b.clone(), &o, 1).call, Call::Regression);
    assert_eq!(judge("g", metric("ops_per_s"), a, b, &o, 1).call, Call::Improvement);
}

fn result(scenario: &str, rep: u32, total_ms: u64, qemu: &str) -> RunResult {
    let mut r = RunResult::new(scenario, rep, 1);
    r.status = RunStatus::Completed;
    r.scenario_text = format!("name = \"{scenario}\"\nrepetitions = 5\n");
    r.provenance.qemu = Some(qemu.into());
    let mut m = crate::MigrationRecord::sample(crate::Outcome::Completed, 1000.0);
    m.total_time_ms = Some(total_ms);
    r.migrations.push(m);
    r
}

fn side(scenario: &str, totals: &[u64], qemu: &str) -> Side {
    Side {
        runs: totals.iter().enumerate().map(|(i, t)| result(scenario, i as u32 + 1, *t, qemu)).collect(),
        skipped: Vec::new(),
    }
}

#[test]
fn two_cells_of_one_sweep_compare_as_two_sides() {
    let mut all = side("ab", &[1000, 1010, 990, 1005, 995], "q");
    all.runs.extend(side("ab", &[1500, 1510, 1490, 1505, 1495], "q").runs);
    for (i, r) in all.runs.iter_mut().enumerate() {
        r.plan = serde_json::json!({ "cell": if i < 5 { "qemu=a" } else { "qemu=b" } });
    }
    let (a, b) = (pick_cell(&all, "qemu=a"), pick_cell(&all, "qemu=b"));
    assert_eq!((a.runs.len(), b.runs.len()), (5, 5));
    let c = compare(&a, &b, &Options::default()).expect("compare");
    assert_eq!(
        c.rows.iter().find(|r| r.metric.key == "total_ms").map(|r| (r.group.as_str(), r.call)),
        Some(("ab", Call::Regression))
    );
    assert!(pick_cell(&all, "qemu=c").runs.is_empty());
}

#[test]
fn too_few_runs_is_an_error_that_says_how_many_are_needed() {
    let e = compare(&side("s", &[1, 2, 3, 4], "q"), &side("s", &[1, 2, 3, 4], "q"), &Options::default())
        .expect_err("4 against 4");
    assert!(matches!(e, CompareError::TooFew { needed: 5, .. }));
    assert!(e.to_string().contains("--repetitions 5"), "{e}");
}

#[test]
fn an_undeclared_difference_refuses_and_a_declared_one_is_listed() {
    let (a, b) =
        (side("s", &[1000, 1010, 990, 1005, 995], "8.2"), side("s", &[1500, 1510, 1490, 1505, 1495], "9.0"));
    let e = compare(&a, &b, &Options::default()).expect_err("qemu differs");
    assert!(e.to_string().contains("qemu: baseline 8.2") && e.to_string().contains("--variable"), "{e}");
    let o = Options { variables: vec!["qemu".into()], ..Options::default() };
    let c = compare(&a, &b, &o).expect("declared");
    assert_eq!(c.differences.len(), 1);
    let total = c.rows.iter().find(|r| r.metric.key == "total_ms").expect("total row");
    assert_eq!(total.call, Call::Regression, "{total:?}");
    assert_eq!(c.regressions(), 1);
    // A changed scenario line is named.
    let mut b2 = side("s", &[1000, 1010, 990, 1005, 995], "8.2");
    for r in &mut b2.runs {
        r.scenario_text.push_str("[migration]\nmax_bandwidth = 1000\n");
    }
    let e = compare(&a, &b2, &Options::default()).expect_err("scenario differs");
    assert!(e.to_string().contains("max_bandwidth = 1000"), "{e}");
}

#[test]
fn runs_over_ssh_and_on_the_lab_differ_in_their_topology() {
    let a = side("s", &[1000, 1010, 990, 1005, 995], "q");
    let mut b = side("s", &[1000, 1010, 990, 1005, 995], "q");
    for r in &mut b.runs {
        r.provenance.topology = Some(crate::TopologyRecord {
            file: "/etc/miglab/topo.toml".into(),
            hosts: vec![crate::HostRecord {
                name: "c1".into(),
                ssh: "root@kvm-a".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    let e = compare(&a, &b, &Options::default()).expect_err("topology differs");
    let said = e.to_string();
    assert!(said.contains("topology: baseline the local lab") && said.contains("c1 (root@kvm-a)"), "{said}");
    let o = Options { variables: vec!["topology".into()], ..Options::default() };
    assert_eq!(compare(&a, &b, &o).expect("declared").regressions(), 0);
}

#[test]
fn the_family_rule_keeps_a_change_only_when_another_group_shows_it() {
    let mut a = side("s1", &[1000, 1010, 990, 1005, 995], "q");
    let mut b = side("s1", &[1500, 1510, 1490, 1505, 1495], "q");
    let o = Options { family: true, ..Options::default() };
    let c = compare(&a, &b, &o).expect("compare");
    assert_eq!(c.regressions(), 0);
    assert!(c.rows.iter().any(|r| r.why.contains("family rule")));
    a.runs.extend(side("s2", &[1000, 1010, 990, 1005, 995], "q").runs);
    b.runs.extend(side("s2", &[1500, 1510, 1490, 1505, 1495], "q").runs);
    assert_eq!(compare(&a, &b, &o).expect("compare").regressions(), 2);
}

#[test]
fn junit_has_a_case_per_metric_and_a_failure_per_regression_and_validates() {
    let o = Options { variables: vec!["qemu".into()], ..Options::default() };
    let c = compare(
        &side("s <&>", &[1000, 1010, 990, 1005, 995], "8.2"),
        &side("s <&>", &[1500, 1510, 1490, 1505, 1495], "9.0"),
        &o,
    )
    .expect("compare");
    let x = junit(&c);
    assert_eq!(x.matches("<testcase ").count(), c.rows.len());
    assert_eq!(x.matches("<failure ").count(), 1);
    assert!(x.contains("s &lt;&amp;&gt;") && !x.contains("s <&>"));
    // Against the schema, where xmllint is installed (ci/setup installs it).
    let schema = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/junit.xsd");
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("junit.xml");
    std::fs::write(&f, &x).expect("write");
    match std::process::Command::new("xmllint").arg("--noout").arg("--schema").arg(&schema).arg(&f).output() {
        Ok(out) => assert!(out.status.success(), "{}\n{x}", String::from_utf8_lossy(&out.stderr)),
        Err(_) if std::env::var_os("MIGLAB_REQUIRE_ALL").is_some() => {
            panic!("xmllint is required (ci/setup installs libxml2-utils)")
        }
        Err(_) => eprintln!("SKIPPED: the schema check needs xmllint (apt-get install libxml2-utils)"),
    }
    assert!(markdown(&c).contains("**REGRESSION**"));
    assert!(text(&c).contains("1 regression(s)"));
}
