//! The progress line: what a run is doing, as it happens, from the observations on its bus.

use crate::observe::{Bus, Observed};
use miglab_reports::{Outcome, Window};

/// Formats a figure that may be absent (never as 0).
pub fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "unmeasured".into())
}

/// One line for a window's figures.
pub fn window_line(w: &Window) -> String {
    format!(
        "{}: heartbeat gap {}{} (guest clock {}), I/O stall {}{}",
        w.name,
        if w.heartbeat_gap_unended { "≥ " } else { "" },
        ms(w.heartbeat_gap_ms),
        ms(w.guest_clock_gap_ms),
        if w.io_stall_unended { "≥ " } else { "" },
        ms(w.io_stall_ms),
    )
}

fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Completed => "completed".into(),
        Outcome::Failed { error, source_running } => {
            format!(
                "FAILED ({error}); the source {}",
                if *source_running { "runs on" } else { "is NOT running" }
            )
        }
        Outcome::TimedOut { after_ms, .. } => format!("TIMED OUT after {after_ms} ms, cancelled"),
    }
}

/// Prints the run's observations as they come, until aborted.
pub fn spawn(bus: &Bus, scenario: String, rep: u32) -> tokio::task::JoinHandle<()> {
    let mut rx = bus.subscribe();
    tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            let line = match &o.what {
                Observed::HopStarted { hop, from, to } => {
                    format!("migration {hop}: {from} → {to} at {:.0} ms", o.at_ms)
                }
                Observed::HopEnded { hop, outcome: out } => format!("migration {hop}: {}", outcome(out)),
                Observed::WindowClosed(w) => window_line(w),
                Observed::FaultInjected { name, .. } => format!("{name}: injected at {:.0} ms", o.at_ms),
                Observed::FaultCleared { index } => {
                    format!("fault {}: cleared at {:.0} ms", index + 1, o.at_ms)
                }
                _ => continue,
            };
            eprintln!("[{scenario} #{rep}] {line}");
        }
    })
}
