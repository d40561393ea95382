//! Two miglab builds on one machine: another build's `image build` moves the shared `current`
//! image to its own agent. This miglab still boots the image of its own agent (found by the
//! agent's build id) and completes; with none, it refuses at once naming the fix — never a run
//! that fails halfway on messages it cannot read.

mod common;

use common::*;
use miglab_infra::image::GuestImage;
use miglab_workloads::control::AGENT_BUILD;
use std::path::Path;

/// A cache of its own: this miglab's image (linked, not copied) and "another build's" — the
/// same files under another key whose manifest names another agent build.
fn two_builds(cache: &Path) {
    let ours =
        GuestImage::current(&miglab_infra::paths::cache()).unwrap_or_else(|e| panic!("{e}: run ci/setup"));
    let images = cache.join("images");
    std::fs::create_dir_all(&images).expect("mkdir");
    let key = &ours.manifest.key;
    std::os::unix::fs::symlink(&ours.dir, images.join(key)).expect("link ours");
    let theirs = images.join("0ther0000000000");
    std::fs::create_dir_all(&theirs).expect("mkdir");
    for f in ["vmlinux", "bzImage", "initramfs.img", "agent"] {
        std::os::unix::fs::symlink(ours.dir.join(f), theirs.join(f)).expect("link a file");
    }
    let mut m = ours.manifest.clone();
    m.key = "0ther0000000000".into();
    m.agent_build = Some("0123456789abcdef".into());
    std::fs::write(theirs.join("manifest.json"), serde_json::to_string(&m).expect("json")).expect("write");
    // The other build's `image build` made its image current.
    std::os::unix::fs::symlink("0ther0000000000", images.join("current")).expect("current");
    std::os::unix::fs::symlink(key, images.join(format!("agent-{AGENT_BUILD}"))).expect("ours");
}

#[test]
#[ignore = "needs the lab (root, Ceph, QEMU): cargo test -- --include-ignored"]
fn another_builds_image_build_does_not_break_this_miglabs_runs() {
    let root = lab_root();
    let r = root.path();
    let _down = DownOnDrop { name: "t-image", root: r };
    let lab = miglab_infra::topology::lab::Lab::up(&miglab_infra::topology::lab::LabOptions {
        name: "t-image".into(),
        root: r.into(),
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("lab up: {e}"));
    let cache = r.join("cache");
    two_builds(&cache);
    let scenario = r.join("s.toml");
    std::fs::write(
        &scenario,
        "name = \"s\"\n[workload]\nkind = \"read-loop\"\n[migration]\nwarmup_s = 1.0\n",
    )
    .expect("write");
    let run = || {
        miglab()
            .env("MIGLAB_CACHE", &cache)
            .args(["run", "--lab", "t-image", "--root"])
            .arg(r)
            .arg("--out")
            .arg(r.join("results"))
            .arg(&scenario)
            .output()
            .expect("run")
    };
    let out = run();
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };
    assert!(out.status.success(), "this miglab's own image is found: {}", text(&out));
    // Without an image of this miglab's agent: refused before anything boots, naming the fix.
    std::fs::remove_file(cache.join(format!("images/agent-{AGENT_BUILD}"))).expect("rm");
    let out = run();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("miglab image build"), "{}", text(&out));
    assert!(text(&out).contains("0123456789abcdef"), "it names the other agent: {}", text(&out));
    let state = lab.state();
    lab.down().unwrap_or_else(|e| panic!("lab down: {e}"));
    assert_nothing_left(&state);
}
