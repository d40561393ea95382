//! The schema on the shipped scenarios, on typos and nonsense, and on thousands of mutated
//! files: never a panic, every refusal a message that names the file.

use super::*;
use miglab_workloads::job::Rw;

fn shipped() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut v = Vec::new();
    let mut todo = vec![dir];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("scenarios/") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "toml") {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

#[test]
fn the_shipped_scenarios_load() {
    let all = shipped();
    for p in &all {
        let (s, _, _) = Scenario::load(p).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p.file_stem().and_then(|f| f.to_str()),
            Some(s.name.as_str()),
            "file named after its scenario"
        );
    }
    assert!(all.len() >= 6, "{} scenarios", all.len());
}

#[test]
fn defaults_fill_in_and_fio_fields_come_through() {
    let s = Scenario::parse(
        "name = \"x\"\n[workload]\nkind = \"fio\"\nrw = \"randwrite\"\nbs = \"8k\"\n",
        Path::new("x.toml"),
    )
    .expect("parses");
    assert_eq!(s.migration.count, 1);
    assert_eq!(s.guest.memory_mib, 512);
    let Some(Workload::Fio(j)) = &s.workload else { panic!("fio") };
    assert_eq!((j.rw, j.bs.0), (Rw::Randwrite, 8192));
}

#[test]
fn malformed_files_name_the_line_and_column() {
    let e = Scenario::parse("name = \"x\"\n[workload]\nkind = \"fio\"\nrw = randread\n", Path::new("s.toml"))
        .expect_err("bare word");
    assert!(e.to_string().starts_with("s.toml:4:6:"), "{e}");
    let e = Scenario::parse("name = \"x\"\nsed = 3\n[workload]\nkind = \"read-loop\"\n", Path::new("s.toml"))
        .expect_err("typo");
    assert!(e.to_string().starts_with("s.toml:2:1:") && e.to_string().contains("sed"), "{e}");
    let e = Scenario::parse("name = \"a b\"\n[workload]\nkind = \"read-loop\"\n", Path::new("s.toml"))
        .expect_err("name");
    assert!(e.to_string().starts_with("s.toml:1: name:") && e.to_string().contains("letters"), "{e}");
}

/// What `miglab check` refuses, each with its line and field.
#[test]
fn nonsense_is_refused_with_line_field_and_fix() {
    let cases: &[(&str, &str)] = &[
        ("[migration]\nwarmup_s = -1.0\n", "s.toml:6: migration.warmup_s: -1 is not a time"),
        ("[migration]\nsettle_s = nan\n", "migration.settle_s: NaN is not a time"),
        ("[migration]\ntimeout_s = 0\n", "migration.timeout_s: 0 is not a time"),
        ("[guest]\nvcpus = 0\n", "s.toml:6: guest.vcpus: 0 must be between 1 and 64"),
        ("[guest]\nmemory_mib = 16\n", "guest.memory_mib: 16 MiB"),
        (
            "[guest]\nvirtiofsd_args = [\"--shared-dir=/\"]\n",
            "guest.virtiofsd_args: '--shared-dir' is set by miglab",
        ),
        // A short option with its value attached is the same option.
        ("[guest]\nvirtiofsd_args = [\"-osource=/\"]\n", "guest.virtiofsd_args: '-o' is set by miglab"),
        ("[lab]\nname = \"Not Valid\"\n", "lab.name"),
        ("[migration.tuning]\nmultifd_channels = 0\n", "migration.tuning.multifd_channels"),
        // One home: the tuning, where a sweep's presets set it with its compression.
        ("[migration]\nmultifd_channels = 4\n", "s.toml:6:1: unknown field `multifd_channels`, expected one of `count`"),
        ("[migration]\nmultifd_channels = 4\n", "it now lives in [migration.tuning] multifd_channels"),
        ("[run]\nlayout_timeout_s = -3\n", "run.layout_timeout_s"),
        (
            "[finding]\nclaim = \"c\"\ndoc = \"findings.md\"\nseen_with = \"q\"\nseen_on = \"d\"\n[[finding.holds]]\nfigure = \"downtime_ms\"\nat_least = 1\n",
            "finding.holds: figure 'downtime_ms': use one `miglab compare` knows",
        ),
        (
            "[finding]\nclaim = \"c\"\ndoc = \"findings.md\"\nseen_with = \"q\"\nseen_on = \"d\"\n",
            "finding.doc: 'findings.md': give the heading's anchor",
        ),
        (
            "[finding]\nclaim = \"c\"\ndoc = \"#x\"\nseen_with = \"q\"\nseen_on = \"d\"\n[[finding.holds]]\nfigure = \"qemu_downtime_ms\"\nat_least = 9\nat_most = 1\n",
            "at_least ≤ at_most",
        ),
        ("[guests]\ncount = 0\n", "s.toml:6: guests.count: 0 must be between 1 and 32"),
        ("[guests]\ncount = 33\n", "guests.count: 33"),
        ("[migration]\nparallel = 0\n", "migration.parallel: 0: give 1 or more"),
        ("[migration]\ndestination_nice = -21\n", "migration.destination_nice: -21: give a niceness from -20 to 19"),
        (
            "[guests]\ncount = 2\n[[guests.override]]\nguests = [3]\nmemory_mib = 256\n",
            "guests.override: guest 3 is not one of the 2 guests",
        ),
        ("[guests]\ncount = 2\n[[guests.override]]\nguests = [2]\n", "guests.override: changes nothing"),
        (
            "[guests]\ncount = 2\n[[guests.override]]\nguests = [2]\nworkload = { kind = \"fio\", rw = \"read\", directory = \"/x\" }\n",
            "guests.override: workload:",
        ),
        (
            "[guests]\ncount = 2\n[[fault]]\nkind = \"mds-fail\"\ntrigger = { at = \"hop-start\", guest = 3 }\n",
            "names guest 3, but the run has 2 guest(s)",
        ),
    ];
    for (extra, want) in cases {
        let text =
            format!("name = \"x\"\n[workload]\nkind = \"read-loop\"\npath = \"miglab/hello\"\n{extra}");
        let e = Scenario::parse(&text, Path::new("s.toml")).expect_err(extra);
        assert!(e.to_string().contains(want), "{extra}: {e}");
    }
    for path in ["/etc/passwd", "../../etc/passwd", "miglab/../../x"] {
        let text = format!("name = \"x\"\n[workload]\nkind = \"read-loop\"\npath = \"{path}\"\n");
        let e = Scenario::parse(&text, Path::new("s.toml")).expect_err(path);
        assert!(e.to_string().contains("s.toml:2: workload:"), "{path}: {e}");
    }
    let text = "name = \"x\"\n[workload]\nkind = \"fio\"\nrw = \"write\"\ndirectory = \"/root\"\n";
    assert!(Scenario::parse(text, Path::new("s.toml")).expect_err("abs").to_string().contains("relative"));
    // A job file may lie anywhere, it is only read; one that is not there is named.
    let text = "name = \"x\"\nfio_file = \"/nonexistent/fio.job\"\n";
    let s = Scenario::parse(text, Path::new("s.toml")).expect("any path");
    let e = s.workload(Path::new("s.toml")).expect_err("absent");
    assert!(e.to_string().contains("/nonexistent/fio.job"), "{e}");
}

/// A 4 KiB job over 64 GiB needs 128 MiB of generations: too much for a 256 MiB guest.
#[test]
fn a_workload_the_guest_cannot_track_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("big.toml");
    std::fs::write(
        &p,
        "name = \"big\"\n[guest]\nmemory_mib = 256\n[workload]\nkind = \"fio\"\nrw = \"randwrite\"\nbs = \"4k\"\nsize = \"64g\"\n",
    )
    .expect("write");
    let e = Scenario::load(&p).expect_err("too big");
    assert!(e.to_string().contains("workload.size") && e.to_string().contains("guest.memory_mib"), "{e}");
}

/// Tiny deterministic generator for the mutation test (no dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "-1",
    "0",
    "nan",
    "inf",
    "1e308",
    "\"\"",
    "\"../x\"",
    "\"/etc\"",
    "[",
    "]",
    "=",
    "\n",
    "\"4k,8k\"",
    "true",
    "[workload]",
    "[guest]",
    "kind = \"fio\"",
    "size = \"0\"",
    "bs = \"1\"",
    "18446744073709551615",
    "\u{0}",
    "rw = \"randrw\"",
    "numjobs = 100000",
    "memory_mib = 1",
    "#",
    "'",
    "\"\\u0000\"",
];

fn mutate(text: &str, rng: &mut Lcg) -> String {
    let mut t: Vec<char> = text.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(t.len() + 1);
        match rng.below(3) {
            0 if !t.is_empty() => {
                let n = 1 + rng.below(8);
                let end = (at + n).min(t.len());
                t.drain(at.min(t.len())..end);
            }
            1 => {
                let tok = TOKENS[rng.below(TOKENS.len())];
                for (k, c) in tok.chars().enumerate() {
                    t.insert((at + k).min(t.len()), c);
                }
            }
            _ if !t.is_empty() => {
                let i = at.min(t.len() - 1);
                t[i] = char::from_u32(32 + rng.next() as u32 % 95).unwrap_or('x');
            }
            _ => {}
        }
    }
    t.into_iter().collect()
}

/// Thousands of mutated scenarios and fio job files: no panic, every refusal a message that
/// names the file (scenarios) or the line (job files).
#[test]
fn mutated_scenarios_and_job_files_never_panic_and_every_refusal_says_where() {
    let mut rng = Lcg(0x5eed);
    let seeds: Vec<String> = shipped().iter().map(|p| std::fs::read_to_string(p).expect("read")).collect();
    let mut refused = 0;
    for i in 0..4000 {
        let text = mutate(&seeds[i % seeds.len()], &mut rng);
        match Scenario::parse(&text, Path::new("m.toml")) {
            Ok(_) => {}
            Err(e) => {
                refused += 1;
                let msg = e.to_string();
                assert!(msg.starts_with("m.toml:"), "{msg}");
                assert!(msg.len() > "m.toml:".len() + 5, "an empty message ({msg:?}) for {text:?}");
            }
        }
    }
    assert!(refused > 1000, "the mutations reach the checks: {refused}");
    let job =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/fio/randread.fio"))
            .expect("job file");
    let mut refused = 0;
    for _ in 0..4000 {
        let text = mutate(&job, &mut rng);
        if let Err(e) = miglab_workloads::fio::parse(&text) {
            refused += 1;
            let msg = e.to_string();
            assert!(!msg.is_empty(), "an empty message for {text:?}");
            let says_where = msg.starts_with("line ") || msg.starts_with("job '") || msg.contains("no job");
            assert!(says_where, "{msg}");
        }
    }
    assert!(refused > 500, "{refused}");
}

/// A sweep crosses its axes; each cell is a scenario checked on its own; a bad value in one
/// cell is refused with the cell's name.
#[test]
fn a_sweep_crosses_its_axes_into_checked_cells() {
    let text = "name = \"sw\"\n[workload]\nkind = \"fio\"\nrw = \"randread\"\n[migration]\ncount = 1\n\n[sweep]\n\"migration.downtime_limit_ms\" = [20, 300]\nworkload.bs = [\"4k\", \"64k\"]\n";
    let s = Scenario::parse(text, Path::new("sw.toml")).expect("parses");
    let cells = s.cells(text, Path::new("sw.toml")).expect("cells");
    let names: Vec<String> = cells.iter().map(|c| c.sweep.name()).collect();
    assert_eq!(
        names,
        [
            "downtime_limit_ms=20,bs=4k",
            "downtime_limit_ms=300,bs=4k",
            "downtime_limit_ms=20,bs=64k",
            "downtime_limit_ms=300,bs=64k"
        ]
    );
    assert_eq!(cells[3].scenario.migration.downtime_limit_ms, Some(300));
    // Typed: each value keeps its path and, where it is one, its number (nothing parses the name).
    let limit = cells[3].sweep.value("migration.downtime_limit_ms").expect("the limit");
    assert_eq!((limit.path.as_str(), limit.number), ("migration.downtime_limit_ms", Some(300.0)));
    assert_eq!(cells[3].sweep.value("bs").map(|v| (v.label.as_str(), v.number)), Some(("64k", None)));
    let Workload::Fio(j) = &cells[3].workload else { panic!("fio") };
    assert_eq!(j.bs.0, 65536);
    assert!(cells.iter().all(|c| c.scenario.sweep.is_empty()));

    let bad =
        "name = \"sw\"\n[workload]\nkind = \"read-loop\"\n[sweep]\n\"migration.warmup_s\" = [1.0, -2.0]\n";
    let s = Scenario::parse(bad, Path::new("sw.toml")).expect("parses");
    let e = s.cells(bad, Path::new("sw.toml")).expect_err("negative warm-up");
    assert!(e.to_string().contains("[warmup_s=-2.0]") && e.to_string().contains("migration.warmup_s"), "{e}");
    let e = Scenario::parse(
        "name = \"sw\"\n[workload]\nkind = \"read-loop\"\n[sweep]\nx = 3\n",
        Path::new("s.toml"),
    )
    .expect("parses")
    .cells("name = \"sw\"\n[workload]\nkind = \"read-loop\"\n[sweep]\nx = 3\n", Path::new("s.toml"))
    .expect_err("not a list");
    assert!(e.to_string().contains("give a list"), "{e}");
}

/// One sweep can cross two builds: each cell runs its own QEMU.
#[test]
fn a_sweep_crosses_two_qemu_builds() {
    let text = "name = \"ab\"\n[workload]\nkind = \"read-loop\"\n[binaries]\nvirtiofsd = \"/opt/v\"\n[sweep]\n\"binaries.qemu\" = [\"/usr/bin/qemu-system-x86_64\", \"/opt/qemu-next/bin/qemu-system-x86_64\"]\n";
    let s = Scenario::parse(text, Path::new("ab.toml")).expect("parses");
    let cells = s.cells(text, Path::new("ab.toml")).expect("cells");
    let qemus: Vec<_> = cells.iter().map(|c| c.scenario.binaries.qemu.clone().expect("chosen")).collect();
    assert_eq!(
        qemus,
        [Path::new("/usr/bin/qemu-system-x86_64"), Path::new("/opt/qemu-next/bin/qemu-system-x86_64")]
    );
    assert!(cells.iter().all(|c| c.scenario.binaries.virtiofsd.as_deref() == Some(Path::new("/opt/v"))));
    let e = Scenario::parse(
        "name = \"x\"\n[workload]\nkind = \"read-loop\"\n[binaries]\nqmeu = \"/q\"\n",
        Path::new("x.toml"),
    )
    .expect_err("a typo");
    assert!(e.to_string().contains("qmeu"), "{e}");
}

#[test]
fn expect_takes_one_outcome_or_any_of_several() {
    use miglab_model::RunOutcome::{Completed, CompletedDegraded, FsHung};
    let p = Path::new("x.toml");
    let w = "[workload]\nkind = \"read-loop\"\n";
    let one = Scenario::parse(&format!("name = \"x\"\nexpect = \"fs-hung\"\n{w}"), p).expect("one");
    assert_eq!(one.expect, Some(Expect(vec![FsHung])));
    let many =
        Scenario::parse(&format!("name = \"x\"\nexpect = [\"completed\", \"completed-degraded\"]\n{w}"), p)
            .expect("many");
    let e = many.expect.expect("an expectation");
    assert!(e.allows(Completed) && e.allows(CompletedDegraded) && !e.allows(FsHung));
    assert_eq!(e.to_string(), "completed or completed-degraded");
    assert_eq!(
        serde_json::to_value(&e).expect("json"),
        serde_json::json!(["completed", "completed-degraded"])
    );
    assert_eq!(serde_json::to_value(&one.expect).expect("json"), serde_json::json!("fs-hung"));
    for bad in ["expect = []", "expect = \"done\"", "expect = [\"completed\", \"fine\"]"] {
        let err = Scenario::parse(&format!("name = \"x\"\n{bad}\n{w}"), p).expect_err(bad).to_string();
        assert!(err.contains("x.toml"), "{bad}: {err}");
    }
}

/// `[guests]`: each guest's memory and workload, its override's where one names it.
#[test]
fn guests_take_their_overrides() {
    let text = "name = \"x\"\n[workload]\nkind = \"read-loop\"\n[guests]\ncount = 4\n[[guests.override]]\nguests = [2, 4]\nworkload = { kind = \"fio\", rw = \"randwrite\" }\n[[guests.override]]\nguests = [4]\nmemory_mib = 256\n[migration]\nparallel = 9\n";
    let s = Scenario::parse(text, Path::new("s.toml")).expect("parses");
    let w = s.workload.clone().expect("inline");
    let kinds: Vec<&str> = (1..=4)
        .map(|i| if matches!(s.guests.workload(&w, i), Workload::Fio(_)) { "fio" } else { "read" })
        .collect();
    assert_eq!(kinds, ["read", "fio", "read", "fio"], "each field from the last override that sets it");
    assert_eq!((1..=4).map(|i| s.guests.memory_mib(&s.guest, i)).collect::<Vec<_>>(), [512, 512, 512, 256]);
    assert_eq!(s.in_flight(), 4, "more than the guests is all at once");
    assert_eq!(s.guests.peak_memory_mib(&s.guest, 1), 512 * 3 + 256 + 512);
}
