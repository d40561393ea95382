//! The seed's workload: open, read and close one file in a loop, checking what it reads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared counters of a running read loop.
#[derive(Debug, Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub stop: AtomicBool,
    pub running: AtomicBool,
}

impl Counters {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut l) = self.last_error.lock() {
            *l = Some(e);
        }
    }
}

#[derive(Debug, Clone)]
pub struct ReadLoop {
    pub path: PathBuf,
    pub expect: Option<Vec<u8>>,
    pub pause: Duration,
}

impl ReadLoop {
    /// One iteration: `Ok` if the file was read and matched.
    pub fn once(&self) -> Result<(), String> {
        let data =
            std::fs::read(&self.path).map_err(|e| format!("read {}: {e}", self.path.display()))?;
        match &self.expect {
            Some(want) if *want != data => Err(format!(
                "{}: read {} bytes that differ from the {} expected",
                self.path.display(),
                data.len(),
                want.len()
            )),
            _ => Ok(()),
        }
    }

    /// Runs until `c.stop` is set.
    pub fn run(&self, c: &Arc<Counters>) {
        c.running.store(true, Ordering::Relaxed);
        while !c.stop.load(Ordering::Relaxed) {
            match self.once() {
                Ok(()) => {
                    c.ops.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => c.error(e),
            }
            if !self.pause.is_zero() {
                std::thread::sleep(self.pause);
            }
        }
        c.running.store(false, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reads_and_mismatches() {
        let dir = std::env::temp_dir().join(format!("miglab-readloop-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("hello");
        std::fs::write(&f, b"Hello world\n").expect("write");
        let ok = ReadLoop {
            path: f.clone(),
            expect: Some(b"Hello world\n".to_vec()),
            pause: Duration::ZERO,
        };
        assert!(ok.once().is_ok());
        let bad = ReadLoop {
            expect: Some(b"Goodbye\n".to_vec()),
            ..ok.clone()
        };
        assert!(bad.once().expect_err("mismatch").contains("differ"));
        let missing = ReadLoop {
            path: dir.join("nope"),
            ..ok.clone()
        };
        assert!(missing.once().is_err());

        let c = Arc::new(Counters::default());
        let c2 = c.clone();
        let t = std::thread::spawn(move || ok.run(&c2));
        while c.ops.load(Ordering::Relaxed) < 10 {
            std::thread::yield_now();
        }
        c.stop.store(true, Ordering::Relaxed);
        t.join().expect("join");
        assert_eq!(c.errors.load(Ordering::Relaxed), 0);
        assert!(!c.running.load(Ordering::Relaxed));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
