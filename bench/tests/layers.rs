//! The layering holds, checked from the code itself: the crate graph (from `cargo metadata`)
//! points down the layers and is the one ARCHITECTURE.md draws; no two modules of a crate
//! import each other, directly or round a circle (from the `crate::` paths in the sources); and
//! ARCHITECTURE.md names every module of the two crates that run things.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's crates, lowest layer first: a crate may use only crates before it.
const LAYERS: &[&str] = &[
    "miglab-workloads",
    "miglab-model",
    "miglab-reports",
    "miglab-faults",
    "miglab-infra",
    "miglab",
    "miglab-fuzz",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Each workspace crate → the workspace crates it depends on (normal dependencies), and its
/// source directory.
fn crate_graph() -> BTreeMap<String, (BTreeSet<String>, PathBuf)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline", "--manifest-path"])
        .arg(root().join("Cargo.toml"))
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&out.stderr));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata is JSON");
    let packages = m["packages"].as_array().expect("packages");
    let names: BTreeSet<String> =
        packages.iter().filter_map(|p| p["name"].as_str()).map(str::to_string).collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["kind"].is_null())
                .filter_map(|d| d["name"].as_str())
                .filter(|d| names.contains(*d))
                .map(str::to_string)
                .collect();
            let manifest = PathBuf::from(p["manifest_path"].as_str().expect("manifest path"));
            let src = manifest.parent().expect("crate dir").join("src");
            (p["name"].as_str().expect("name").to_string(), (deps, src))
        })
        .collect()
}

/// The crate graph as ARCHITECTURE.md draws it, one line per crate.
fn drawn(graph: &BTreeMap<String, (BTreeSet<String>, PathBuf)>) -> String {
    LAYERS
        .iter()
        .rev()
        .map(|c| {
            let deps: Vec<&str> =
                LAYERS.iter().rev().filter(|d| graph[*c].0.contains(**d)).copied().collect();
            format!(
                "{c:<17} → {}\n",
                if deps.is_empty() { "(nothing of ours)".into() } else { deps.join(", ") }
            )
        })
        .collect()
}

#[test]
fn crates_point_down_the_layers_and_architecture_md_draws_them() {
    let graph = crate_graph();
    let ours: BTreeSet<&str> = graph.keys().map(String::as_str).collect();
    assert_eq!(ours, LAYERS.iter().copied().collect(), "a new crate takes its place in LAYERS");
    for (i, c) in LAYERS.iter().enumerate() {
        for d in &graph[*c].0 {
            let j = LAYERS.iter().position(|l| l == d).expect("a workspace crate");
            assert!(j < i, "{c} depends on {d}, which is not below it");
        }
    }
    let text = drawn(&graph);
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    assert!(arch.contains(&text), "ARCHITECTURE.md must draw the crate graph as it is:\n{text}");
}

/// A module's path from its file: `topology/lab/bringup.rs` → `["topology", "lab", "bringup"]`,
/// `x/mod.rs` → `["x"]`, `lib.rs` → `[]`; none for the crate's binaries.
fn module_path(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> =
        rel.components().map(|c| c.as_os_str().to_str().map(str::to_string)).collect::<Option<_>>()?;
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?;
    if !(parts.is_empty() && matches!(stem, "lib" | "main")) && stem != "mod" {
        parts.push(stem.to_string());
    }
    Some(parts)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn ident(s: &str) -> String {
    s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Every path in `text` that starts at the crate, a parent or the module itself (`crate::a::b`,
/// `super::super::x`, `self::y`, one level of `{a, b::c}`), made absolute for a module at `at`.
fn module_paths(text: &str, at: &[String]) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for (start, _) in
        text.match_indices("crate::").chain(text.match_indices("super::")).chain(text.match_indices("self::"))
    {
        if text[..start].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `miglab_crate::`, the second `super::` of a chain, `Self::`
        }
        let mut base: Vec<String> = at.to_vec();
        let mut rest = &text[start..];
        if let Some(r) = rest.strip_prefix("crate::") {
            base.clear();
            rest = r;
        } else if let Some(r) = rest.strip_prefix("self::") {
            rest = r;
        } else {
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
        }
        let tails: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())].split(',').collect(),
            None => vec![rest],
        };
        for tail in tails {
            let mut p = base.clone();
            let mut t = tail.trim();
            loop {
                let head = ident(t);
                if head.is_empty() {
                    break;
                }
                t = &t[head.len()..];
                p.push(head);
                match t.strip_prefix("::") {
                    Some(r) if !r.starts_with('{') => t = r,
                    _ => break,
                }
            }
            found.push(p);
        }
    }
    found
}

/// The module graph of a crate at every level of nesting: for each module (the crate root is
/// `[]`), its children and which of them name which — a file deep inside child `a` naming
/// something inside its sibling `b` is the edge `a → b`. A module naming its own ancestors or
/// descendants is no edge: that is how a module and its parts talk.
fn module_graph(src: &Path) -> BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let located: Vec<(PathBuf, Vec<String>)> =
        files.into_iter().filter_map(|f| module_path(src, &f).map(|m| (f, m))).collect();
    let modules: BTreeSet<Vec<String>> = located.iter().map(|(_, m)| m.clone()).collect();
    let mut levels: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for m in &modules {
        if let Some((child, parent)) = m.split_last() {
            levels.entry(parent.to_vec()).or_default().entry(child.clone()).or_default();
        }
    }
    for (f, m) in &located {
        let text = std::fs::read_to_string(f).expect("source");
        // A file's own test module is one level down: its `super::` is the file's module.
        let (body, tests) = text.split_at(text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len()));
        let mut in_tests = m.clone();
        in_tests.push("tests".into());
        let named = module_paths(body, m).into_iter().chain(module_paths(tests, &in_tests));
        for mut q in named {
            // The module the path ends in (an item's path names its module).
            while !q.is_empty() && !modules.contains(&q) {
                q.pop();
            }
            let common = m.iter().zip(&q).take_while(|(a, b)| a == b).count();
            if common < m.len() && common < q.len() {
                let level = levels.entry(m[..common].to_vec()).or_default();
                level.entry(m[common].clone()).or_default().insert(q[common].clone());
            }
        }
    }
    levels
}

/// The strongly connected components with more than one module (Tarjan).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    impl<'a> T<'a> {
        fn visit(&mut self, v: &'a str) {
            let i = self.index.len();
            self.index.insert(v, i);
            self.low.insert(v, i);
            self.stack.push(v);
            self.on.insert(v);
            for w in &self.g[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    self.low.insert(v, self.low[v].min(lw));
                } else if self.on.contains(w) {
                    let iw = self.index[w];
                    self.low.insert(v, self.low[v].min(iw));
                }
            }
            if self.low[v] == self.index[v] {
                let mut comp = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on.remove(w);
                    comp.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if comp.len() > 1 {
                    comp.sort();
                    self.out.push(comp);
                }
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.out
}

#[test]
fn the_circle_finder_finds_circles() {
    let g: BTreeMap<String, BTreeSet<String>> =
        [("a", vec!["b"]), ("b", vec!["c"]), ("c", vec!["a"]), ("d", vec!["a"])]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
            .collect();
    assert_eq!(circles(&g), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
    let at = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        module_paths(
            "use crate::{run::X, plan};\nlet _ = crate::vm::Vm; miglab_crate::no Self::x",
            &at(&["a"])
        ),
        [at(&["run", "X"]), at(&["plan"]), at(&["vm", "Vm"])]
    );
    assert_eq!(
        module_paths(
            "super::super::external::site::down(); super::{remote::R, Spec}; self::y",
            &at(&["t", "lab", "d"])
        ),
        [
            at(&["t", "external", "site", "down"]),
            at(&["t", "lab", "remote", "R"]),
            at(&["t", "lab", "Spec"]),
            at(&["t", "lab", "d", "y"])
        ]
    );
}

/// Two sub-modules of one module in a circle are found, though their parents are apart: the
/// circle `topology/external/site.rs` → `topology::lab`, `topology/lab/teardown.rs` →
/// `external::site` is `external ⇄ lab` inside `topology`.
#[test]
fn circles_between_sub_modules_are_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "pub mod topology;");
    write("topology.rs", "pub mod lab; pub mod external;");
    write("topology/lab.rs", "mod teardown;");
    write("topology/lab/teardown.rs", "fn f() { super::super::external::site::down() }");
    write("topology/external.rs", "mod site;");
    write(
        "topology/external/site.rs",
        "fn g() { crate::topology::lab::config_value() }\n#[cfg(test)]\nmod tests { use super::*; }",
    );
    let g = module_graph(dir.path());
    let topology = &g[&vec!["topology".to_string()]];
    assert_eq!(circles(topology), vec![vec!["external".to_string(), "lab".into()]]);
    assert!(circles(&g[&Vec::new()]).is_empty(), "the crate's top level has one module");
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    for (name, (_, src)) in crate_graph() {
        for (parent, children) in module_graph(&src) {
            let found = circles(&children);
            let inside =
                if parent.is_empty() { String::new() } else { format!(" inside {}", parent.join("::")) };
            assert!(found.is_empty(), "{name}: modules in a circle{inside} (by their paths): {found:?}");
        }
    }
}

#[test]
fn architecture_md_names_every_module_of_the_running_crates() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let graph = crate_graph();
    for c in ["miglab", "miglab-infra"] {
        let top = module_graph(&graph[c].1).remove(&Vec::new()).unwrap_or_default();
        let missing: Vec<String> = top.into_keys().filter(|m| !arch.contains(&format!("`{m}.rs`"))).collect();
        assert!(missing.is_empty(), "ARCHITECTURE.md has no room for {c}'s {missing:?}");
    }
}
