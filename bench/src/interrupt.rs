//! Ctrl-C and SIGTERM handling: the first signal asks every wait to give up so that what was
//! started can be torn down; a second one exits at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

fn flag() -> &'static Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
}

/// Installs the handlers. Safe to call more than once.
pub fn install() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let f = flag().clone();
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit is checked before the flag is set, so only a
        // second signal exits.
        signal_hook::flag::register_conditional_shutdown(sig, 130, f.clone())?;
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
