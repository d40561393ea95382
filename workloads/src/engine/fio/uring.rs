//! The asynchronous engine: one thread per job keeps up to `iodepth` requests in flight on an
//! io_uring, submitting in batches of `iodepth_batch_submit` and, when it waits, waiting for at
//! least `iodepth_batch_complete_min` completions — fio's queue semantics, for `io_uring` and
//! `libaio` job files alike.
//!
//! A unit is never written by two requests at once, nor read while written (a read racing a
//! write could read either generation): each request claims its units in the file's state,
//! against this clone's other requests and every other clone's. So generations stay exact and
//! a lost write is still found. Each
//! request's record carries its own submit time (just before it is handed to the kernel) and
//! completion time (when its completion is reaped).

use super::{errno, now_ns, Aligned, Ctx, MinRate, Next, Op, Worker};
use io_uring::{opcode, types, IoUring};
use std::os::unix::io::AsRawFd;

/// A test's way to have `io_uring_enter` fail with requests in flight, which the kernel gives
/// no way to provoke: the job named [`enter_fails::JOB`] has its 20th enter fail after it
/// submitted.
#[cfg(test)]
pub(super) mod enter_fails {
    use std::sync::atomic::{AtomicU32, Ordering};
    pub const JOB: &str = "uring-enter-fails";
    static ENTERS: AtomicU32 = AtomicU32::new(0);
    pub fn check(job: &str, n: usize) -> std::io::Result<usize> {
        if job == JOB && ENTERS.fetch_add(1, Ordering::Relaxed) == 19 {
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(n)
    }
}

/// One request in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    next: Next,
    submit_ns: u64,
}

/// The slots of the queue: a buffer each, and what is in flight in it.
struct Queue {
    bufs: Vec<Aligned>,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
}

impl Queue {
    fn new(depth: usize, bs: usize) -> Self {
        Self {
            bufs: (0..depth).map(|_| Aligned::new(bs)).collect(),
            slots: vec![None; depth],
            free: (0..depth).rev().collect(),
        }
    }
    fn in_flight(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

impl Worker {
    pub(super) fn run_async(&self) {
        let j = &self.job;
        let c = Ctx::new(&self.stop, &self.counters, &self.sink, j.ramp_time, j.runtime);
        let depth = j.depth() as usize;
        let handles = self.open_all();
        let mut ring = match IoUring::new(depth.next_power_of_two().max(2) as u32) {
            Ok(r) => r,
            Err(e) => {
                // Every op of the job would fail the same way: one record says why.
                let why = format!("io_uring_setup: {e} (the kernel refuses io_uring)");
                c.record(Op::Write, self.n, now_ns(), 0, Err((errno(&e), why)), false);
                return;
            }
        };
        let mut q = Queue::new(depth, j.max_bs() as usize);
        let mut pacer = self.pacer();
        let mut pick = self.picker();
        let mut min_rate = MinRate::new(j.rate_min.map(|r| r.0));
        let batch = (j.iodepth_batch_submit as usize).clamp(1, depth);
        let complete_min = (j.iodepth_batch_complete_min as usize).clamp(1, depth);
        // fio reaps at most this many per wait (by default as many as it waits for); the rest
        // stay in the completion queue, in flight, until a later wait.
        let complete_max = match j.iodepth_batch_complete_max as usize {
            0 => complete_min,
            m => m.clamp(complete_min, depth),
        };
        let mut pending: Option<Next> = None;
        let (mut writes, mut ops) = (0u64, 0u64);
        let mut rate_failed = false;
        loop {
            // Queue up to a batch while slots are free and the job goes on.
            let mut queued = 0;
            while queued < batch
                && !q.free.is_empty()
                && !rate_failed
                && (pending.is_some() || self.more(&c, &pick))
            {
                let next = match pending.take() {
                    Some(p) => p,
                    None => {
                        let n = pick.next();
                        pacer.wait(n.len);
                        self.flow_turn(&c);
                        n
                    }
                };
                let fh = match &handles[next.file] {
                    Ok(fh) => fh,
                    Err(e) => {
                        self.open_failed(&c, next.read, next.file, e);
                        continue;
                    }
                };
                let f = &self.files[next.file];
                if !f.claim(next.off, next.len, !next.read) {
                    // Its units are in flight (here or in another clone): it waits.
                    pending = Some(next);
                    break;
                }
                let slot = q.free.pop().unwrap_or_default();
                let buf = &mut q.bufs[slot].as_mut()[..next.len as usize];
                if !next.read && j.verify {
                    f.fill(buf, next.off, self.tag);
                }
                let fd = types::Fd(fh.as_raw_fd());
                let (ptr, len) = (buf.as_mut_ptr(), buf.len() as u32);
                let sqe = if next.read {
                    opcode::Read::new(fd, ptr, len).offset(next.off).build()
                } else {
                    opcode::Write::new(fd, ptr, len).offset(next.off).build()
                }
                .user_data(slot as u64);
                let submit_ns = now_ns();
                // SAFETY: the buffer lives in `q` until this entry's completion is reaped (a
                // slot is freed only then, and the queue outlives the ring's use below).
                if unsafe { ring.submission().push(&sqe) }.is_err() {
                    f.release(next.off, next.len, !next.read);
                    q.free.push(slot);
                    pending = Some(next);
                    break;
                }
                q.slots[slot] = Some(InFlight { next, submit_ns });
                queued += 1;
            }
            let in_flight = q.in_flight();
            if in_flight == 0 {
                // Done, or stopped with a request still waiting for its units: it is dropped
                // (it was never issued). Units held by another clone free up soon.
                if pending.is_none() || c.done() || rate_failed {
                    break;
                }
                std::thread::yield_now();
                continue;
            }
            // As fio: submit, and reap only when the queue is full (or a request waits for
            // its units, or the job is ending), then at least `iodepth_batch_complete_min` and
            // whatever else is done. A request that completed inline stays counted in flight
            // until it is reaped, as in fio.
            let ending = rate_failed || (pending.is_none() && !self.more(&c, &pick));
            let reap = q.free.is_empty() || pending.is_some() || ending || queued == 0;
            let want = if reap { complete_min.min(in_flight) } else { 0 };
            let entered = ring.submit_and_wait(want);
            #[cfg(test)]
            let entered = entered.and_then(|n| enter_fails::check(&j.name, n));
            if let Err(e) = entered {
                if e.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                let why = format!("io_uring_enter: {e}");
                c.record(Op::Write, self.n, now_ns(), 0, Err((errno(&e), why)), false);
                break;
            }
            if !reap {
                continue;
            }
            let done: Vec<(u64, i32)> =
                ring.completion().take(complete_max).map(|cqe| (cqe.user_data(), cqe.result())).collect();
            let complete_ns = now_ns();
            for (slot, res) in done {
                let slot = slot as usize;
                let Some(r) = q.slots.get_mut(slot).and_then(Option::take) else { continue };
                q.free.push(slot);
                let buf = &mut q.bufs[slot].as_mut()[..r.next.len as usize];
                self.completed(&c, &r, res, buf, complete_ns);
                self.files[r.next.file].release(r.next.off, r.next.len, !r.next.read);
                ops += 1;
                if !r.next.read {
                    writes += 1;
                    if j.sync_due(writes) {
                        if let Ok(fh) = &handles[r.next.file] {
                            self.sync(&c, fh, j.fsync > 0);
                        }
                    }
                }
                if j.thinktime_us > 0 && ops % u64::from(j.thinktime_blocks) == 0 {
                    self.sleep(std::time::Duration::from_micros(j.thinktime_us));
                }
                if !rate_failed {
                    if let Some(why) = min_rate.check(r.next.len) {
                        self.rate_not_met(&c, &r.next, why);
                        rate_failed = true;
                    }
                }
            }
        }
        // Nothing may complete into a buffer after the queue is gone: drain what is left, each
        // completion accounted as in the loop (a write that landed is the generation the verify
        // pass must find; skipping `written` made it read as lost).
        while q.in_flight() > 0 && ring.submit_and_wait(1).is_ok() {
            let done: Vec<(u64, i32)> =
                ring.completion().map(|cqe| (cqe.user_data(), cqe.result())).collect();
            let complete_ns = now_ns();
            for (slot, res) in done {
                let slot = slot as usize;
                let Some(r) = q.slots.get_mut(slot).and_then(Option::take) else { continue };
                let buf = &mut q.bufs[slot].as_mut()[..r.next.len as usize];
                self.completed(&c, &r, res, buf, complete_ns);
                self.files[r.next.file].release(r.next.off, r.next.len, !r.next.read);
                q.free.push(slot);
            }
        }
        self.close(&c, handles);
    }

    /// A completion: its record, and for a write the units' generations.
    fn completed(&self, c: &Ctx, r: &InFlight, res: i32, buf: &mut [u8], complete_ns: u64) {
        let next = &r.next;
        let f = &self.files[next.file];
        let op = if next.read { Op::Read } else { Op::Write };
        let path = || f.path.display().to_string();
        if res < 0 {
            let e = std::io::Error::from_raw_os_error(-res);
            if !next.read {
                // It may still have landed: the verify pass tells.
                f.written(next.off, next.len, false);
            }
            let why = format!("{} {}: {e}", if next.read { "read" } else { "write" }, path());
            c.record_at(op, self.n, r.submit_ns, complete_ns, 0, Err((errno(&e), why)), false);
            return;
        }
        let n = res as usize;
        if next.read {
            let mismatch = self.inline_mismatch(buf, n, next);
            c.record_at(op, self.n, r.submit_ns, complete_ns, n as u64, Ok(()), mismatch);
        } else if n as u64 == next.len {
            f.written(next.off, next.len, true);
            c.record_at(op, self.n, r.submit_ns, complete_ns, next.len, Ok(()), false);
        } else {
            f.written(next.off, next.len, false);
            let why = format!("write {}: {n} of {} bytes written", path(), next.len);
            c.record_at(op, self.n, r.submit_ns, complete_ns, 0, Err((libc::EIO as u32, why)), false);
        }
    }
}
