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
