//! Ctrl-C and SIGTERM handling: the first signal asks every wait to give up so that what was
//! started can be torn down; a second one exits at once, saying so. Nothing is lost by that:
//! every process is in the lab's state file and every change a fault made is in its fault
//! journal, which `miglab lab down` and the next run read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

const TWICE: &[u8] = b"\nmiglab: interrupted twice: exiting now; `miglab lab down` (or the next run) stops what is left and undoes what faults changed (the lab's fault journal)\n";

/// Installs the handlers. Safe to call more than once.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let f = flag().clone();
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the second-signal exit is checked before the flag is set.
        let seen = f.clone();
        // SAFETY: the handler only loads an atomic, writes to stderr and `_exit`s, all of
        // which are async-signal-safe.
        unsafe {
            signal_hook::low_level::register(sig, move || {
                if seen.load(Ordering::SeqCst) {
                    libc::write(2, TWICE.as_ptr().cast(), TWICE.len());
                    libc::_exit(130);
                }
            })?;
        }
        signal_hook::flag::register(sig, f.clone())?;
    }
    Ok(())
}

/// Resolves once the user asks to stop (checked every 50 ms).
pub async fn asked() {
    while !requested() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether the user asked to stop.
pub fn requested() -> bool {
    flag().load(Ordering::Relaxed)
}
