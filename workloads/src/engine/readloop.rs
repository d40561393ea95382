//! The seed's workload: open, read, close one file, over and over, checking its content.

use super::{errno, now_ns, spawn, Counters, Ctx, Sink};
use crate::job::ReadLoopJob;
use crate::record::Op;
use crate::verify::{BadBlock, Problem, VerifyReport};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub(super) fn start(
    j: &ReadLoopJob,
    root: &Path,
    sink: &Arc<dyn Sink>,
    stop: &Arc<AtomicBool>,
    counters: &Arc<Counters>,
) -> Result<(Vec<JoinHandle<()>>, Verifier), String> {
    let path = root.join(&j.path);
    let content = j.content.clone().into_bytes();
    let c = Ctx::new(stop, counters, sink, 0.0, j.runtime);
    let (p, want, pause) = (path.clone(), content.clone(), Duration::from_micros(j.pause_us));
    let t = spawn("read-loop".into(), move || {
        while !c.done() {
            let submit = now_ns();
            match std::fs::read(&p) {
                Ok(d) => c.record(Op::ReadFile, 0, submit, d.len() as u64, Ok(()), d != want),
                Err(e) => {
                    let why = format!("read {}: {e}", p.display());
                    c.record(Op::ReadFile, 0, submit, 0, Err((errno(&e), why)), false)
                }
            }
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    })?;
    Ok((vec![t], Verifier { path, content }))
}

pub(super) struct Verifier {
    path: PathBuf,
    content: Vec<u8>,
}

impl Verifier {
    pub(super) fn verify(&self) -> VerifyReport {
        let mut report = VerifyReport { blocks: 1, read_mode: "read(2)".into(), ..VerifyReport::default() };
        let problem = match std::fs::read(&self.path) {
            Ok(d) if d == self.content => return report,
            Ok(_) => Problem::Corrupt,
            Err(_) => Problem::Missing,
        };
        report.add(BadBlock { path: self.path.display().to_string(), offset: 0, problem });
        report
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{collect, run_for};
    use crate::job::{ReadLoopJob, Workload};
    use crate::record::Op;

    #[test]
    fn the_read_loop_reads_and_verifies() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("miglab")).expect("mkdir");
        std::fs::write(dir.path().join("miglab/hello"), "Hello world\n").expect("write");
        let (r, buf) = run_for(&Workload::ReadLoop(ReadLoopJob::default()), dir.path(), 50);
        let recs = collect(&buf);
        assert!(!recs.is_empty() && recs.iter().all(|o| o.op == Op::ReadFile && o.flags == 0));
        assert!(r.verify(buf.as_ref(), &|| false).clean());
        std::fs::write(dir.path().join("miglab/hello"), "Goodbye\n").expect("write");
        assert_eq!(r.verify(buf.as_ref(), &|| false).mismatched(), 1);
    }
}
