//! The progress line: what a run is doing, as it happens, from the observations on its bus.

use crate::observe::{Bus, Observed};
use miglab_model::{Outcome, Window};

/// Formats a figure that may be absent (never as 0).
pub fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.0} ms")).unwrap_or_else(|| "unmeasured".into())
}

/// What a hop's switch-over carried: virtiofsd's descriptors, the device-state phase, the
/// bytes after STOP, and what QEMU expected.
pub fn state_line(m: &miglab_model::MigrationRecord) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(src) = m.virtiofsd.as_ref().and_then(|v| v.source) {
        parts.push(format!("virtiofsd held {} fds ({} O_PATH)", src.total, src.path_only));
    }
    if let Some(d) = m.phases.device_state_ms() {
        parts.push(format!("device state → RESUME {d:.0} ms"));
    }
    if let Some(f) = &m.flush {
        match &f.error {
            None => parts.push(format!(
                "the source's client flushed {} files in {:.0} ms before the switch-over",
                f.files, f.ms
            )),
            Some(e) => {
                parts.push(format!("the flush before the switch-over failed after {:.0} ms: {e}", f.ms))
            }
        }
    }
    if let Some(b) = m.bytes_after_stop {
        parts.push(format!("{:.1} MiB after STOP", b as f64 / 1048576.0));
    }
    if let Some(e) = m.expected_downtime_ms {
        parts.push(format!("QEMU expected {e} ms (limit {} ms)", m.params.downtime_limit()));
    }
    let c = &m.convergence;
    if let Some(d) = c.dirty_rate_mib_s {
        parts.push(format!("dirty rate before it {d:.0} MiB/s"));
    }
    if !c.passes.is_empty() {
        parts.push(format!("{} pre-copy passes sampled while active", c.passes.len()));
    }
    if let Some(t) = c.max_throttle_pct.filter(|t| *t > 0) {
        parts.push(format!("vCPUs throttled up to {t} %"));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Where QEMU's downtime went (its tracepoints), part by part, with virtiofsd's state blob
/// and how far behind the destination was; or why a completed hop has no parts.
pub fn downtime_line(m: &miglab_model::MigrationRecord) -> Option<String> {
    use miglab_model::downtime::VHOST_USER_FS;
    let Some(p) = &m.downtime_parts else {
        return m.downtime_parts_problem.as_ref().map(|e| format!("downtime unattributed: {e}"));
    };
    let parts: Vec<String> = p.parts.iter().map(|x| format!("{} {:.1}", x.part.label(), x.ms)).collect();
    let mut also = Vec::new();
    if let (Some(all), Some(s)) = (p.vhost_user_fs_ms, p.device_ms(VHOST_USER_FS, false)) {
        also.push(format!("virtiofsd's state {all:.1} ms from its save to its load (saving {s:.1})"));
    }
    if let Some(b) = p.destination_behind_ms.filter(|b| *b >= 1.0) {
        also.push(format!("the destination was {b:.1} ms behind in the stream"));
    }
    also.extend(m.downtime_parts_problem.clone());
    let also: String = also.iter().map(|a| format!("; {a}")).collect();
    Some(format!("downtime parts (ms): {} = {:.1} traced{also}", parts.join(", "), p.traced_ms))
}

/// One line for a dirtying load's pages over the hops.
pub fn memory_line(m: &miglab_model::MemoryResult) -> Option<String> {
    let spec = m.spec?;
    let checked: Vec<_> = m.checks.iter().filter_map(|h| h.check.as_ref()).collect();
    let (stale, corrupt): (u64, u64) = checked.iter().fold((0, 0), |(s, c), k| (s + k.stale, c + k.corrupt));
    let pages = checked.first().map_or(0, |c| c.pages);
    let speed = m
        .median_ms_per_gib()
        .map(|s| format!("; the guest updates memory at {s:.0} ms/GiB"))
        .unwrap_or_default();
    let coverage: Vec<f64> = checked.iter().filter_map(|k| k.coverage()).collect();
    let coverage = match coverage.iter().copied().reduce(f64::min) {
        Some(c) if coverage.len() == checked.len() => {
            format!("; coverage of the switch-overs ≥ {:.0} %", c * 100.0)
        }
        _ => format!("; coverage counted after {} of {} checks", coverage.len(), checked.len()),
    };
    Some(format!(
        "{} MiB dirtied at {} MiB/s; {} pages read back after {} of {} hops: {stale} stale, {corrupt} corrupt{coverage}{speed}",
        spec.size_mib,
        spec.rate_mib_s,
        pages,
        checked.len(),
        m.checks.len(),
    ))
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
        Outcome::Unsupported { error } => format!("REFUSED by QEMU ({error}); the guest stays"),
        Outcome::NotConverged { after_ms, passes, remaining_bytes, .. } => format!(
            "NOT CONVERGED after {after_ms} ms ({passes} passes, {:.1} MiB left), cancelled",
            *remaining_bytes as f64 / 1048576.0
        ),
    }
}

/// Prints the run's observations as they come, until aborted.
/// With several guests each line about one says which.
pub fn spawn(bus: &Bus, scenario: String, rep: u32, guests: u32) -> tokio::task::JoinHandle<()> {
    let mut rx = bus.subscribe();
    let whose = move |g: u32| if guests > 1 { format!("guest {g} ") } else { String::new() };
    tokio::spawn(async move {
        while let Some(o) = rx.recv().await {
            let line = match &o.what {
                Observed::HopStarted { guest, hop, from, to } => {
                    format!("{}migration {hop}: {from} → {to} at {:.0} ms", whose(*guest), o.at_ms)
                }
                Observed::HopEnded { guest, hop, outcome: out } => {
                    format!("{}migration {hop}: {}", whose(*guest), outcome(out))
                }
                Observed::WindowClosed { guest, window } => {
                    format!("{}{}", whose(*guest), window_line(window))
                }
                Observed::FaultInjected { name, .. } => format!("{name}: injected at {:.0} ms", o.at_ms),
                Observed::FaultCleared { index } => {
                    format!("fault {}: cleared at {:.0} ms", index + 1, o.at_ms)
                }
                _ => continue,
            };
            self::line(&format!("[{scenario} #{rep}] {line}"));
        }
    })
}

/// Set by `-v`: tracing logs are shown, so progress bars stay hidden (they would tear the log
/// lines apart).
static LOGGING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_logging(on: bool) {
    LOGGING.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Set by a caller that prints its own line per run (`cargo bench --bench migration`): no
/// progress lines, bars or run summaries.
static QUIET: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub fn set_quiet(on: bool) {
    QUIET.store(on, std::sync::atomic::Ordering::Relaxed);
}

pub fn quiet() -> bool {
    QUIET.load(std::sync::atomic::Ordering::Relaxed)
}

/// What a progress bar counts.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Steps,
    Bytes,
    Runs,
}

/// A progress bar on stderr for a long step: what is happening and how long is left. Hidden
/// when stderr is not a terminal (indicatif's own check) and under `-v`.
pub fn bar(prefix: &str, len: u64, unit: Unit) -> indicatif::ProgressBar {
    if LOGGING.load(std::sync::atomic::Ordering::Relaxed) || quiet() {
        return indicatif::ProgressBar::hidden();
    }
    let template = match unit {
        Unit::Steps => "{prefix} [{bar:24}] {pos}/{len} {msg} · {elapsed} (~{eta} left)",
        Unit::Bytes => "{prefix} [{bar:24}] {bytes}/{total_bytes} at {bytes_per_sec} (~{eta} left)",
        Unit::Runs => "{prefix} [{bar:30}] {pos}/{len} runs, {elapsed} so far, ~{eta} left",
    };
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let b = BARS.add(indicatif::ProgressBar::new(len).with_style(style));
    b.set_prefix(prefix.to_string());
    // The elapsed time moves while a long step runs.
    b.enable_steady_tick(std::time::Duration::from_millis(250));
    b
}

/// Every bar shown; lines are printed through it so that they land above the bars.
static BARS: std::sync::LazyLock<indicatif::MultiProgress> =
    std::sync::LazyLock::new(indicatif::MultiProgress::new);

/// Prints `s` on stderr, above any progress bar.
pub fn line(s: &str) {
    if !quiet() {
        suspend(|| eprintln!("{s}"));
    }
}

/// Runs `f` (which prints) with the progress bars out of the way.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    BARS.suspend(f)
}

/// A listener that shows a long step as a bar (drawn when the first part is done, cleared when
/// the step is over).
pub fn step_bar(prefix: String) -> miglab_infra::steps::OnStep {
    let shown = std::sync::OnceLock::new();
    miglab_infra::steps::OnStep::new(move |step| match step {
        miglab_infra::steps::Step::Done { done, total, what } => {
            let b: &indicatif::ProgressBar = shown.get_or_init(|| bar(&prefix, total, Unit::Steps));
            b.set_position(done);
            b.set_message(format!("{what} done"));
        }
        miglab_infra::steps::Step::Finished => {
            if let Some(b) = shown.get() {
                b.finish_and_clear();
            }
        }
    })
}

/// A workload's file layout as it runs: a bar (or, where no bar shows — not a terminal, or
/// `-v` — a line every few seconds), and one line when it is done. `miglab run` and host mode
/// show it the same way.
#[derive(Debug)]
pub struct LayoutShown {
    start: std::time::Instant,
    told: std::time::Instant,
    bar: Option<indicatif::ProgressBar>,
}

impl Default for LayoutShown {
    fn default() -> Self {
        let now = std::time::Instant::now();
        Self { start: now, told: now, bar: None }
    }
}

impl LayoutShown {
    pub fn elapsed(&self) -> std::time::Duration {
        self.start.elapsed()
    }

    /// `done` of `total` bytes are laid out; returns how far, in words.
    pub fn progress(&mut self, done: u64, total: u64, say: &dyn Fn(&str)) -> String {
        let text = format!("{:.0} of {:.0} MiB", done as f64 / 1048576.0, total as f64 / 1048576.0);
        let b = self.bar.get_or_insert_with(|| bar("laying out files", total, Unit::Bytes));
        b.set_position(done);
        if b.is_hidden() && self.told.elapsed() >= std::time::Duration::from_secs(3) {
            self.told = std::time::Instant::now();
            say(&format!("laying out files: {text}"));
        }
        text
    }

    /// The layout is over: the bar goes, and a line says how much took how long.
    pub fn done(self, total: Option<u64>, say: &dyn Fn(&str)) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(total) = total.filter(|t| *t > 0) {
            say(&format!(
                "laid out {:.0} MiB in {:.1} s",
                total as f64 / 1048576.0,
                self.start.elapsed().as_secs_f64()
            ));
        }
    }
}
