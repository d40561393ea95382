//! The documentation holds: every relative link of README.md, ARCHITECTURE.md and docs/ leads
//! to a file (and its `#anchor` to a heading there), every `scenarios/…` path they name exists,
//! every finding's `doc` anchor is a heading of docs/findings.md, and docs/reference.md is the
//! reference the sources' own field comments give (`MIGLAB_BLESS=1` writes it again).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The pages a reader reaches: README.md, ARCHITECTURE.md and every Markdown page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut v = vec![root().join("README.md"), root().join("ARCHITECTURE.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    v.extend(docs);
    v
}

/// A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut out = BTreeSet::new();
    for l in text.lines() {
        if l.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && l.starts_with('#') {
            out.insert(slug(l.trim_start_matches('#')));
        }
    }
    out
}

/// Every Markdown link target `](target)` of `text`.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("](") {
        rest = &rest[i + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
        }
    }
    out
}

/// Every `scenarios/…` path named in code spans or links (`scenarios/faults/x.toml`, a
/// directory `scenarios/nightly/`); globs and placeholders (`*`, `<`, `…`) aside.
fn scenario_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("scenarios/") {
        if text[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '/' || c == '_' || c == '-' || c == '.')
        {
            continue; // `results/…/scenarios/`, `../scenarios/`
        }
        let p: String = text[i..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
            .collect();
        let p = p.trim_end_matches('.').to_string();
        let after = text[i + p.len()..].chars().next();
        if p.contains('*') || matches!(after, Some('*' | '<' | '…' | '{' | '$')) || p.ends_with("scenarios/")
        {
            continue;
        }
        out.push(p);
    }
    out
}

#[test]
fn every_link_and_every_scenario_named_in_the_docs_exists() {
    let mut broken = Vec::new();
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        let dir = page.parent().expect("dir");
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let path = if file.is_empty() { page.clone() } else { dir.join(file) };
            if !path.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty() && path.extension().is_some_and(|x| x == "md") {
                let there = std::fs::read_to_string(&path).expect("target page");
                if !anchors(&there).contains(anchor) {
                    broken.push(format!(
                        "{}: {target}: no such heading in {}",
                        page.display(),
                        path.display()
                    ));
                }
            }
        }
        for p in scenario_paths(&text) {
            if !root().join(&p).exists() {
                broken.push(format!("{}: {p}: no such scenario", page.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken references:\n{}", broken.join("\n"));
}

#[test]
fn the_link_checker_finds_what_is_broken() {
    assert_eq!(slug(" Where QEMU's downtime goes"), "where-qemus-downtime-goes");
    assert_eq!(
        slug(" A storage stall at the switch-over becomes guest downtime, whole"),
        "a-storage-stall-at-the-switch-over-becomes-guest-downtime-whole"
    );
    assert_eq!(links("see [a](docs/a.md#x) and [b](b.md)"), ["docs/a.md#x", "b.md"]);
    assert_eq!(
        scenario_paths(
            "run `scenarios/smoke.toml`, `scenarios/faults/*.toml`, results/scenarios/x, scenarios/nightly/."
        ),
        ["scenarios/smoke.toml", "scenarios/nightly/"]
    );
    assert!(anchors("# A\n```\n# not a heading\n```\n## B b").contains("b-b"));
    assert!(!anchors("```\n# not\n```").contains("not"));
}

#[test]
fn every_finding_names_a_heading_of_the_findings_page() {
    let findings = std::fs::read_to_string(root().join("docs/findings.md")).expect("docs/findings.md");
    let headings = anchors(&findings);
    let dir = root().join("scenarios/findings");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("scenarios/findings").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("scenario");
        let v: toml::Table = toml::from_str(&text).expect("toml");
        let doc = v["finding"]["doc"].as_str().expect("finding.doc");
        assert!(
            headings.contains(doc.trim_start_matches('#')),
            "{}: {doc} is no heading of docs/findings.md",
            e.path().display()
        );
        let name = v["name"].as_str().expect("name");
        assert!(
            findings.contains(&format!("scenarios/findings/{name}.toml")),
            "docs/findings.md does not name {name}"
        );
        n += 1;
    }
    assert!(n >= 10, "{n} findings");
}

/// One field of a struct, or one variant of an enum, with its doc comment.
#[derive(Debug, PartialEq)]
struct Item {
    name: String,
    ty: String,
    doc: String,
}

/// The fields of `pub struct name` in `file` (serde's `rename` applied, `flatten`ed ones left
/// out: their own section lists them).
fn fields(file: &str, name: &str) -> Vec<Item> {
    let text = std::fs::read_to_string(root().join(file)).expect("source");
    let start =
        text.find(&format!("pub struct {name} {{")).unwrap_or_else(|| panic!("{file}: no struct {name}"));
    let body = &text[start..];
    let body = &body[..body.find("\n}").expect("end of struct")];
    let (mut doc, mut rename, mut flatten) = (Vec::new(), None, false);
    let mut out = Vec::new();
    for l in body.lines().skip(1).map(str::trim) {
        if let Some(d) = l.strip_prefix("///") {
            doc.push(d.trim().to_string());
        } else if l.starts_with("#[") {
            flatten |= l.contains("flatten");
            if let Some(r) = l.split("rename = \"").nth(1) {
                rename = r.split('"').next().map(str::to_string);
            }
        } else if let Some(f) = l.strip_prefix("pub ") {
            let (n, ty) = f.split_once(':').expect("a field");
            if !flatten {
                out.push(Item {
                    name: rename.take().unwrap_or_else(|| n.trim().to_string()),
                    ty: ty.trim().trim_end_matches(',').to_string(),
                    doc: doc.join(" "),
                });
            }
            (doc, rename, flatten) = (Vec::new(), None, false);
        } else if !l.is_empty() && !l.starts_with("//") {
            (doc, rename, flatten) = (Vec::new(), None, false);
        }
    }
    out
}

/// The variants of `pub enum name` in `file`, kebab-case, each with its fields as its type.
fn variants(file: &str, name: &str) -> Vec<Item> {
    let text = std::fs::read_to_string(root().join(file)).expect("source");
    let start = text.find(&format!("pub enum {name} {{")).unwrap_or_else(|| panic!("{file}: no enum {name}"));
    let body = &text[start..];
    let body = &body[..body.find("\n}").expect("end of enum")];
    let mut out: Vec<Item> = Vec::new();
    let mut doc = Vec::new();
    let mut open = false;
    for l in body.lines().skip(1) {
        let t = l.trim();
        if let Some(d) = t.strip_prefix("///").filter(|_| !open) {
            doc.push(d.trim().to_string());
        } else if t.starts_with("#[") || t.starts_with("//") {
        } else if !open && t.chars().next().is_some_and(char::is_uppercase) {
            let (v, rest) = t.split_once(['{', '(', ',']).map_or((t, ""), |(a, b)| (a.trim(), b));
            let kebab: String = v
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let dash = (i > 0 && c.is_uppercase()).then_some('-');
                    dash.into_iter().chain(c.to_lowercase())
                })
                .collect();
            let inline = rest.trim_end_matches([',', ' ']).trim_end_matches('}').trim_end_matches(')');
            let fields: Vec<String> = inline
                .split(',')
                .filter_map(|f| f.split_once(':').map(|(n, _)| format!("`{}`", n.trim())))
                .collect();
            open = t.ends_with('{');
            out.push(Item { name: kebab, ty: fields.join(", "), doc: doc.join(" ") });
            doc.clear();
        } else if open && t.starts_with('}') {
            open = false;
        } else if open {
            if let Some((n, _)) = t.split_once(':') {
                let last = out.last_mut().expect("a variant");
                if !last.ty.is_empty() {
                    last.ty.push_str(", ");
                }
                last.ty.push_str(&format!("`{}`", n.trim()));
            }
        }
    }
    out
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

fn table(out: &mut String, title: &str, items: &[Item], what: &str) {
    out.push_str(&format!("### {title}\n\n| {what} | type | what it is |\n|---|---|---|\n"));
    for i in items {
        out.push_str(&format!("| `{}` | {} | {} |\n", i.name, cell(&format!("`{}`", i.ty)), cell(&i.doc)));
    }
    out.push('\n');
}

/// (section title, source file, struct) for the scenario's tables.
const SCENARIO: &[(&str, &str, &str)] = &[
    ("The top level", "bench/src/scenario.rs", "Scenario"),
    ("`[lab]`", "bench/src/scenario.rs", "LabSpec"),
    ("`[guest]`", "bench/src/scenario.rs", "GuestSpec"),
    ("`[guests]`", "bench/src/scenario.rs", "GuestsSpec"),
    ("`[[guests.override]]`", "bench/src/scenario.rs", "GuestOverride"),
    ("`[binaries]`", "bench/infra/src/binaries.rs", "BinaryChoice"),
    ("`[migration]`", "bench/src/scenario.rs", "MigrationPlan"),
    ("`[migration.tuning]`", "model/src/migration.rs", "Tuning"),
    ("`[dirty]`", "workloads/src/dirty.rs", "DirtySpec"),
    ("`[run]`", "bench/src/scenario.rs", "RunSpec"),
    ("`[outcome]`", "bench/src/scenario.rs", "OutcomeSpec"),
    ("`[workload]` kind = \"read-loop\"", "workloads/src/job/readloop.rs", "ReadLoopJob"),
    ("`[workload]` kind = \"fio\" (fio's own names and meanings)", "workloads/src/job.rs", "FioJob"),
    ("`[workload]` kind = \"metadata\"", "workloads/src/job/metadata.rs", "MetadataJob"),
    ("`[workload]` kind = \"state\"", "workloads/src/job/state.rs", "StateJob"),
    ("`[[fault]]` (beside its kind's parameters, below)", "faults/src/catalog.rs", "FaultEntry"),
    ("`[[fault]]` trigger = { … }", "faults/src/trigger.rs", "Trigger"),
    ("`[finding]`", "model/src/finding.rs", "Finding"),
    ("`[[finding.holds]]`", "model/src/finding.rs", "Bound"),
];

/// (section title, source file, struct) for `result.json`.
const RESULT: &[(&str, &str, &str)] = &[
    ("The run (`result.json`)", "model/src/result.rs", "RunResult"),
    ("`provenance`: what produced it", "model/src/result.rs", "Provenance"),
    ("`clock`", "model/src/result.rs", "Clock"),
    ("`ops[]`: per op kind", "model/src/result.rs", "OpSummary"),
    ("Latencies (`ops[].guest`, `.host`), µs", "model/src/result.rs", "Latency"),
    ("`windows[]`: around each migration and fault", "model/src/result.rs", "Window"),
    ("`series[]`: every 100 ms", "model/src/result.rs", "Bucket"),
    ("`stream`: the record stream's health", "model/src/result.rs", "StreamHealth"),
    ("`verification`: the verify pass", "model/src/result.rs", "Verification"),
    ("`faults[]`", "model/src/result.rs", "FaultRecord"),
    ("`migrations[]`: each hop", "model/src/migration.rs", "MigrationRecord"),
    ("`migrations[].params`", "model/src/migration.rs", "MigrationParams"),
    ("`migrations[].phases`, on the run clock", "model/src/migration.rs", "Phases"),
    ("`migrations[].convergence.passes[]`", "model/src/migration.rs", "Pass"),
    ("`migrations[].host_cpu`", "model/src/migration.rs", "HostCpu"),
    ("`migrations[].downtime_parts`", "model/src/downtime.rs", "DowntimeParts"),
    ("`migrations[].downtime_parts.parts[]`", "model/src/downtime.rs", "DowntimePart"),
    ("`memory`: the dirtying load's checks", "model/src/result.rs", "MemoryResult"),
    ("`guests[]`: each guest of several", "model/src/result.rs", "GuestResult"),
    ("`fleet`: what the guests add up to", "model/src/result.rs", "Fleet"),
    ("`fleet.evacuations[]`", "model/src/result.rs", "Evacuation"),
];

fn reference() -> String {
    let mut out = String::from(
        "# Reference\n\nEvery scenario field, every fault kind and every figure of `result.json`, \
         with what the source says of each — this page is generated from the code's own field \
         comments by `bench/tests/docs.rs`, which fails when they differ \
         (`MIGLAB_BLESS=1 cargo test -p miglab --test docs` writes it again). Units are in the \
         names (`_ms`, `_us`, `_bytes`, `_mib`, `_pct`) or said. How to use them: \
         [scenarios](scenarios.md), [faults](faults.md), [reports](reports.md).\n\n## Scenario fields\n\n",
    );
    for (title, file, name) in SCENARIO {
        table(&mut out, title, &fields(file, name), "field");
    }
    out.push_str("## Fault kinds\n\n`kind` and its parameters, in a `[[fault]]` beside `trigger`.\n\n");
    table(&mut out, "`[[fault]]` kind = …", &variants("faults/src/catalog.rs", "Fault"), "kind");
    out.push_str("## Figures of `result.json`\n\nA figure that could not be measured is absent (`null`), never 0; `unmeasured` says why.\n\n");
    for (title, file, name) in RESULT {
        table(&mut out, title, &fields(file, name), "field");
    }
    out.trim_end().to_string() + "\n"
}

#[test]
fn the_reference_is_the_sources_own() {
    let path = root().join("docs/reference.md");
    let want = reference();
    if std::env::var_os("MIGLAB_BLESS").is_some() {
        std::fs::write(&path, &want).expect("write docs/reference.md");
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/reference.md differs from the sources' field comments: MIGLAB_BLESS=1 cargo test -p miglab --test docs"
    );
    // It has what a reader looks for.
    for needle in [
        "`downtime_limit_ms`",
        "`osd-freeze`",
        "`qemu_downtime_ms`",
        "`heartbeat_gap_ms`",
        "`multifd_channels`",
    ] {
        assert!(want.contains(needle), "{needle}");
    }
}
