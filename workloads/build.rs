//! The agent's build id: a hash of this crate's sources (the agent and the control protocol
//! live here). The agent reports it in its hello and miglab, built from the same tree, knows
//! it too: an image whose agent came from another tree is refused at boot, not discovered as
//! unreadable messages halfway through a run.

use std::path::{Path, PathBuf};

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn main() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    println!("cargo:rerun-if-changed={}", src.display());
    let mut all = Vec::new();
    files(&src, &mut all);
    all.sort();
    // FNV-1a over every file's relative path and bytes: stable across Rust versions.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in &all {
        let rel = p.strip_prefix(&src).unwrap_or(p).to_string_lossy().into_owned();
        for b in rel.bytes().chain([0]).chain(std::fs::read(p).unwrap_or_default()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    println!("cargo:rustc-env=MIGLAB_AGENT_BUILD={h:016x}");
}
