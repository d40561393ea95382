//! Metadata operations on a small tree of files (create, stat, rename, unlink), which keep
//! the MDS busy. Each job keeps its own directory and knows which files must exist.

use super::{errno, now_ns, spawn, Counters, Ctx, Pacer, Rng, Sink};
use crate::job::MetadataJob;
use crate::record::Op;
use crate::verify::{BadBlock, Problem, VerifyReport};
use std::collections::VecDeque;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub(super) fn start(
    j: &MetadataJob,
    root: &Path,
    sink: &Arc<dyn Sink>,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
    seed: u64,
) -> Result<(Vec<JoinHandle<()>>, Verifier), String> {
    let mut threads = Vec::new();
    let mut live = Vec::new();
    let mut dirs = Vec::new();
    for n in 0..j.numjobs {
        let dir = root.join(j.dir()).join(n.to_string());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let names = Arc::new(Mutex::new(Vec::new()));
        live.push(names.clone());
        dirs.push(dir.clone());
        let c = Ctx::new(stop, counters, sink, 0.0, j.runtime);
        let (job, mix, target) = (j.clone(), j.mix, j.files as usize);
        threads.push(spawn(format!("{}.{n}", j.name), move || {
            let mut rng = Rng::new(seed ^ n as u64);
            let mut pacer = Pacer::new(job.rate_iops.map(|r| r as f64));
            let mut counter = 0u64;
            let mut local: VecDeque<String> = VecDeque::new();
            let total = (mix.create + mix.stat + mix.rename + mix.unlink).max(1) as u64;
            while !c.done() {
                pacer.wait(0);
                let mut pick = rng.below(total) as u32;
                // Keep the population near its target.
                if local.len() < target / 2 {
                    pick = 0;
                } else if local.len() > target * 2 {
                    pick = mix.create + mix.stat + mix.rename;
                }
                let submit = now_ns();
                let (op, r) = if pick < mix.create || local.is_empty() {
                    counter += 1;
                    let name = format!("f{counter}");
                    let r = File::create(dir.join(&name)).map(|_| ());
                    if r.is_ok() {
                        local.push_back(name);
                    }
                    (Op::Create, r)
                } else if pick < mix.create + mix.stat {
                    let name = &local[rng.below(local.len() as u64) as usize];
                    (Op::Stat, std::fs::metadata(dir.join(name)).map(|_| ()))
                } else if pick < mix.create + mix.stat + mix.rename {
                    let i = rng.below(local.len() as u64) as usize;
                    counter += 1;
                    let to = format!("f{counter}");
                    let r = std::fs::rename(dir.join(&local[i]), dir.join(&to));
                    if r.is_ok() {
                        local[i] = to;
                    }
                    (Op::Rename, r)
                } else {
                    let i = rng.below(local.len() as u64) as usize;
                    let name = local.swap_remove_back(i).unwrap_or_default();
                    (Op::Unlink, std::fs::remove_file(dir.join(name)))
                };
                c.record(op, n as u16, submit, 0, r.map_err(|e| (errno(&e), format!("{op}: {e}"))), false);
                if let Ok(mut l) = names.lock() {
                    l.clear();
                    l.extend(local.iter().cloned());
                }
            }
        })?);
    }
    Ok((threads, Verifier { live, dirs }))
}

pub(super) struct Verifier {
    live: Vec<Arc<Mutex<Vec<String>>>>,
    dirs: Vec<PathBuf>,
}

impl Verifier {
    /// Every file a job believes exists must exist.
    pub(super) fn verify(&self, sink: &dyn Sink, give_up: &dyn Fn() -> bool) -> VerifyReport {
        let mut report = VerifyReport { read_mode: "stat(2)".into(), ..VerifyReport::default() };
        for (j, (names, dir)) in self.live.iter().zip(&self.dirs).enumerate() {
            let names = names.lock().map(|n| n.clone()).unwrap_or_default();
            for n in names {
                if give_up() {
                    return report;
                }
                report.blocks += 1;
                let submit = now_ns();
                let r = std::fs::metadata(dir.join(&n));
                let complete = now_ns();
                let missing = r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound);
                let status = match &r {
                    Err(e) if !missing => errno(e),
                    _ => 0,
                };
                if r.is_err() {
                    let path = dir.join(&n).display().to_string();
                    report.add(BadBlock { path, offset: 0, problem: Problem::Missing });
                }
                sink.push(super::verify_record(j as u16, submit, complete, 0, status, missing));
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{collect, run_for};
    use crate::job::{MetadataJob, Workload};
    use crate::record::Op;
    use std::sync::atomic::Ordering;

    #[test]
    fn metadata_runs_and_verifies() {
        let dir = tempfile::tempdir().expect("tmp");
        let m = Workload::Metadata(MetadataJob { files: 8, ..toml::from_str("").expect("defaults") });
        let (r, buf) = run_for(&m, dir.path(), 100);
        let ops: Vec<Op> = collect(&buf).iter().map(|o| o.op).collect();
        assert!(ops.contains(&Op::Create) && ops.contains(&Op::Stat), "{ops:?}");
        assert_eq!(
            r.counters.errors.load(Ordering::Relaxed),
            0,
            "{:?}",
            r.counters.last_error.lock().map(|e| e.clone())
        );
        let before = collect(&buf).len();
        let v = r.verify(buf.as_ref(), &|| false);
        assert!(v.clean());
        // Each file checked is a record: the run's watchdog tells a slow verify pass from a
        // hung one by them (without, a verify pass over 30 s read as a hung file system).
        let checks = collect(&buf)[before..].iter().filter(|o| o.op == Op::Verify && o.flags == 0).count();
        assert_eq!(checks as u64, v.blocks);
        assert!(checks > 0);
        // A pass told to give up stops before the first file.
        assert_eq!(r.verify(buf.as_ref(), &|| true).blocks, 0);
    }
}
