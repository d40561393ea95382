//! What two sides are: each side's builds, host, accelerator, scenario and topology, and where
//! the two differ — a comparison judges one declared variable at a time.

use super::*;

/// The values of each provenance item on one side, for [`differences`].
fn identity(runs: &[RunResult]) -> BTreeMap<&'static str, BTreeSet<String>> {
    let mut m: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    for r in runs {
        let p = &r.provenance;
        let bin = |role: &str, fallback: &Option<String>| {
            p.binaries
                .iter()
                .find(|b| b.role == role)
                .map(|b| {
                    format!(
                        "{} sha256 {}",
                        b.version.as_deref().unwrap_or("?"),
                        b.sha256.as_deref().map(|s| &s[..s.len().min(12)]).unwrap_or("?")
                    )
                })
                .or_else(|| fallback.clone())
                .unwrap_or_else(|| "?".into())
        };
        let mut put = |k: &'static str, v: String| {
            m.entry(k).or_default().insert(v);
        };
        put("qemu", bin("qemu", &p.qemu));
        put("virtiofsd", bin("virtiofsd", &p.virtiofsd));
        put("kernel", bin("kernel", &p.guest_kernel));
        // The guest image: its agent and tools are part of what measured.
        put("image", p.guest_image.clone().unwrap_or_else(|| "?".into()));
        put("ceph", p.ceph.clone().unwrap_or_else(|| "?".into()));
        put(
            "miglab",
            format!(
                "{} {}",
                p.miglab_version,
                p.git_commit.as_deref().map(|c| &c[..c.len().min(12)]).unwrap_or("?")
            ),
        );
        put("accelerator", p.accelerator.clone());
        put(
            "host",
            format!("{} · {}", p.host_cpu.as_deref().unwrap_or("?"), p.host_kernel.as_deref().unwrap_or("?")),
        );
        put("scenario", scenario_lines(&r.scenario_text).join("\n"));
        // Where it ran: the local lab, or hosts over SSH.
        put(
            "topology",
            p.topology.as_ref().map_or("the local lab".into(), |t| {
                let hosts: Vec<String> = t.hosts.iter().map(|h| format!("{} ({})", h.name, h.ssh)).collect();
                format!("{}: {}", t.file, hosts.join(", "))
            }),
        );
    }
    m
}

/// A scenario's meaningful lines: without comments, blank lines and its repetitions.
fn scenario_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_once('#').map_or(l, |(a, _)| a).trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("repetitions"))
        .collect()
}

/// What the two sides differ in. A scenario difference lists the lines found on one side only.
pub fn differences(base: &[RunResult], cand: &[RunResult]) -> Vec<Difference> {
    let (a, b) = (identity(base), identity(cand));
    let mut out = Vec::new();
    for (k, va) in &a {
        let vb = b.get(k).cloned().unwrap_or_default();
        if *va == vb {
            continue;
        }
        if *k == "scenario" {
            let la: BTreeSet<String> = va.iter().flat_map(|t| t.lines().map(String::from)).collect();
            let lb: BTreeSet<String> = vb.iter().flat_map(|t| t.lines().map(String::from)).collect();
            out.push(Difference {
                what: "scenario".into(),
                base: la.difference(&lb).cloned().collect(),
                cand: lb.difference(&la).cloned().collect(),
            });
        } else {
            out.push(Difference {
                what: k.to_string(),
                base: va.iter().cloned().collect(),
                cand: vb.into_iter().collect(),
            });
        }
    }
    out
}
