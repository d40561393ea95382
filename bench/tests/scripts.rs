//! The shell scripts CI and a newcomer run hold: under `set -o pipefail` a pipeline that ends in
//! `head` fails when the writer before it is killed by SIGPIPE (head exits after its lines, the
//! writer's next write dies) — whether it does depends on how the writer's output is chunked, so
//! CI failed at random once the slowest-tests list grew (`ci/test`, exit 141).

use std::path::Path;

#[test]
fn no_script_under_pipefail_ends_a_pipeline_in_head() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    let mut scripts: Vec<_> =
        std::fs::read_dir(root.join("ci")).expect("ci/").flatten().map(|e| e.path()).collect();
    scripts.push(root.join(".ci/run"));
    for p in scripts.iter().filter(|p| p.is_file()) {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        if !text.starts_with("#!") || !text.contains("pipefail") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.split(" #").next().unwrap_or(line);
            if code.contains("| head") {
                found.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "pipelines ending in head under pipefail (use awk 'NR <= n'):\n{}",
        found.join("\n")
    );
}

/// `ci/test` runs two test binaries at once. Two labs of one name clash whatever their roots
/// (a lab's network namespaces and nft table are named after it; its slot is claimed, see
/// `topology::slots`), so a lab name — `t-…`, `tf-…` and the like, or `TestLab::up`'s — belongs
/// to one test file. A test's lab leased per binary is `l-<binary>`: its own by construction.
#[test]
fn every_lab_name_belongs_to_one_test_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut owner: std::collections::BTreeMap<String, String> = Default::default();
    let mut clashes = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("tests/").flatten().map(|e| e.path()).collect();
    files.sort();
    // This file's own examples name no lab.
    for p in files.iter().filter(|p| p.extension().is_some_and(|e| e == "rs") && !p.ends_with("scripts.rs")) {
        let file = p.file_name().and_then(|f| f.to_str()).unwrap_or_default().to_string();
        let text = std::fs::read_to_string(p).expect("read");
        let mut names: Vec<String> = lab_names(&text);
        names.sort();
        names.dedup();
        for n in names {
            match owner.get(&n) {
                Some(f) if *f != file => clashes.push(format!("{n}: {f} and {file}")),
                _ => {
                    owner.insert(n, file.clone());
                }
            }
        }
    }
    assert!(owner.len() > 20, "lab names found: {owner:?}");
    assert!(clashes.is_empty(), "lab names used by two test files:\n{}", clashes.join("\n"));
}

/// String literals that name labs: `t-x`, `tf-x`, `tj-x` (`t` and at most one letter, a dash,
/// more), and
/// `TestLab::up("x")`'s.
fn lab_names(text: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (i, lit) in text.split('"').enumerate().filter(|(i, _)| i % 2 == 1) {
        let lab_like = lit.split_once('-').is_some_and(|(head, tail)| {
            head.starts_with('t')
                && head.len() <= 2
                && head.chars().all(|c| c.is_ascii_lowercase())
                && !tail.is_empty()
                && tail.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        });
        let before = text.split('"').nth(i - 1).unwrap_or_default();
        if lab_like || before.ends_with("TestLab::up(") {
            v.push(lit.to_string());
        }
    }
    v
}

#[test]
fn lab_names_are_found_where_tests_write_them() {
    let text = r#"TestLab::up("tstate"); options("t-port", r); fault_test!(x, "tf-link", |l| {}); "total" "tmp-x1" "the-end-of-it""#;
    assert_eq!(lab_names(text), ["tstate", "t-port", "tf-link"]);
}
