//! Deadlines. Every wait in miglab polls a real condition until a deadline and gives up early
//! when the user interrupts.

use std::time::{Duration, Instant};
use thiserror::Error;

/// The runtime every async wait of a command runs on: multi-threaded, two workers (the machine
/// has two cores; more would only contend).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

#[derive(Debug, Error)]
pub enum WaitError<E> {
    #[error("timed out after {0:.1?} waiting for {1}")]
    TimedOut(Duration, String),
    #[error("interrupted while waiting for {0}")]
    Interrupted(String),
    #[error(transparent)]
    Failed(E),
}

/// Polls `check` every `period` until it returns `Ok(Some(_))`, fails, the deadline passes or
/// the user interrupts.
pub fn until<T, E>(
    what: &str,
    timeout: Duration,
    period: Duration,
    mut check: impl FnMut() -> Result<Option<T>, E>,
) -> Result<T, WaitError<E>> {
    let start = Instant::now();
    loop {
        if let Some(v) = check().map_err(WaitError::Failed)? {
            return Ok(v);
        }
        std::thread::sleep(next_look(what, start, timeout, period)?);
    }
}

/// How long to sleep before a wait begun at `start` looks again, or why it ends now: the user
/// interrupted, or its deadline passed.
fn next_look<E>(
    what: &str,
    start: Instant,
    timeout: Duration,
    period: Duration,
) -> Result<Duration, WaitError<E>> {
    if crate::interrupt::requested() {
        return Err(WaitError::Interrupted(what.to_string()));
    }
    let elapsed = start.elapsed();
    if elapsed >= timeout {
        return Err(WaitError::TimedOut(elapsed, what.to_string()));
    }
    Ok(period.min(timeout - elapsed))
}

/// [`until`] for async code: polls without holding up the runtime's workers, and the check
/// may itself await (a QMP query, say).
pub async fn until_async<T, E>(
    what: &str,
    timeout: Duration,
    period: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>, E>,
) -> Result<T, WaitError<E>> {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await.map_err(WaitError::Failed)? {
            return Ok(v);
        }
        tokio::time::sleep(next_look(what, start, timeout, period)?).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_once_ready() {
        let mut n = 0;
        let v: Result<u32, WaitError<()>> =
            until("n to reach 3", Duration::from_secs(5), Duration::from_millis(1), || {
                n += 1;
                Ok((n >= 3).then_some(n))
            });
        assert_eq!(v.expect("ready"), 3);
    }

    #[test]
    fn times_out_naming_what_it_waited_for() {
        let v: Result<(), WaitError<()>> =
            until("never", Duration::from_millis(20), Duration::from_millis(5), || Ok(None));
        let e = v.expect_err("must time out");
        assert!(matches!(e, WaitError::TimedOut(d, _) if d >= Duration::from_millis(20)));
        assert!(matches!(&e, WaitError::TimedOut(_, what) if what == "never"));
    }

    #[test]
    fn a_failing_check_stops_the_wait() {
        let v: Result<(), WaitError<&str>> =
            until("x", Duration::from_secs(5), Duration::from_millis(1), || Err("boom"));
        assert!(matches!(v, Err(WaitError::Failed("boom"))));
    }

    #[test]
    fn the_async_wait_gives_the_value_or_names_what_it_waited_for() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("rt");
        let mut n = 0;
        let v: Result<u32, WaitError<()>> =
            rt.block_on(until_async("n", Duration::from_secs(5), Duration::from_millis(1), async || {
                n += 1;
                Ok((n >= 3).then_some(n))
            }));
        assert_eq!(v.expect("ready"), 3);
        let e: Result<(), WaitError<&str>> = rt.block_on(until_async(
            "never",
            Duration::from_millis(20),
            Duration::from_millis(5),
            async || Ok(None),
        ));
        assert!(
            matches!(e, Err(WaitError::TimedOut(d, w)) if d >= Duration::from_millis(20) && w == "never")
        );
        let failed: Result<(), WaitError<&str>> =
            rt.block_on(until_async("x", Duration::from_secs(5), Duration::from_millis(1), async || {
                Err("gone")
            }));
        assert!(matches!(failed, Err(WaitError::Failed("gone"))));
    }
}
