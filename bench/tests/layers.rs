//! The layering holds, checked from the code itself: the crate graph (from `cargo metadata`)
//! points down the layers and is the one ARCHITECTURE.md draws; no two modules of a crate
//! import each other, directly or round a circle (from the `crate::` paths in the sources); and
//! ARCHITECTURE.md names every module of the two crates that run things.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's crates, lowest layer first: a crate may use only crates before it.
const LAYERS: &[&str] =
    &["miglab-workloads", "miglab-reports", "miglab-faults", "miglab-infra", "miglab", "miglab-fuzz"];

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

/// A module's path from its file: `topology/lab/bringup.rs` → `topology` (its top-level module).
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_string())
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

/// Every top-level module named after `crate::` in `text`: `crate::a::b`, `crate::{a, b::c}`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `miglab_crate::` and the like
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let head: String =
                    item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !head.is_empty() {
                    found.insert(head);
                }
            }
        } else {
            let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !head.is_empty() {
                found.insert(head);
            }
        }
    }
    found
}

/// Module → the other top-level modules of its crate it names.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut g: BTreeMap<String, BTreeSet<String>> =
        modules.iter().map(|m| (m.clone(), BTreeSet::new())).collect();
    for f in &files {
        let Some(m) = top_module(src, f) else { continue };
        let text = std::fs::read_to_string(f).expect("source");
        for t in crate_paths(&text) {
            if t != m && modules.contains(&t) {
                g.get_mut(&m).expect("module").insert(t);
            }
        }
    }
    g
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
    assert_eq!(
        crate_paths("use crate::{run::X, plan};\nlet _ = crate::vm::Vm; miglab_crate::no"),
        ["plan", "run", "vm"].iter().map(|s| s.to_string()).collect()
    );
}

#[test]
fn no_two_modules_of_a_crate_import_each_other() {
    for (name, (_, src)) in crate_graph() {
        let found = circles(&module_graph(&src));
        assert!(found.is_empty(), "{name}: modules in a circle (by their `crate::` paths): {found:?}");
    }
}

#[test]
fn architecture_md_names_every_module_of_the_running_crates() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let graph = crate_graph();
    for c in ["miglab", "miglab-infra"] {
        let missing: Vec<String> =
            module_graph(&graph[c].1).into_keys().filter(|m| !arch.contains(&format!("`{m}.rs`"))).collect();
        assert!(missing.is_empty(), "ARCHITECTURE.md has no room for {c}'s {missing:?}");
    }
}
