//! The asynchronous engine: one thread per job keeps up to `iodepth` requests in flight on an
//! io_uring, submitting in batches of `iodepth_batch_submit` and, when it waits, waiting for at
//! least `iodepth_batch_complete_min` completions — fio's queue semantics, for `io_uring` and
//! `libaio` job files alike.
//!
//! A block never has two requests in flight (a read racing a write of the same block could
//! read either generation), so generations stay exact and a lost write is still found. Each
//! request's record carries its own submit time (just before it is handed to the kernel) and
//! completion time (when its completion is reaped).

use super::{errno, now_ns, Aligned, Ctx, Op, Pacer, Picker, Worker};
use crate::verify::fill_block;
use io_uring::{opcode, types, IoUring};
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::Ordering;

/// One request in flight.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    read: bool,
    /// The block's index across the job's files (what `Queue::busy` holds).
    idx: u64,
    file: usize,
    block: u64,
    generation: u32,
    submit_ns: u64,
}

/// The slots of the queue: a buffer each, and what is in flight in it.
struct Queue {
    bufs: Vec<Aligned>,
    slots: Vec<Option<InFlight>>,
    free: Vec<usize>,
    /// Blocks with a request in flight (index across the job's files).
    busy: std::collections::HashSet<u64>,
    /// The most requests ever in flight at once.
    pub most: usize,
}

impl Queue {
    fn new(depth: usize, bs: usize) -> Self {
        Self {
            bufs: (0..depth).map(|_| Aligned::new(bs)).collect(),
            slots: vec![None; depth],
            free: (0..depth).rev().collect(),
            busy: std::collections::HashSet::new(),
            most: 0,
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
        let bs = j.bs.0;
        let handles: Vec<std::io::Result<File>> =
            self.files.paths.iter().map(|p| super::open_file(p, j.direct)).collect();
        let mut ring = match IoUring::new(depth.next_power_of_two().max(2) as u32) {
            Ok(r) => r,
            Err(e) => {
                // Every op of the job would fail the same way: one record says why.
                let why = format!("io_uring_setup: {e} (the kernel refuses io_uring)");
                c.record(Op::Write, self.n, now_ns(), 0, Err((errno(&e), why)), false);
                return;
            }
        };
        let mut q = Queue::new(depth, bs as usize);
        let mut pacer = Pacer::new(j.ops_rate());
        let mut pick = Picker::new(j, &self.files, self.tag.seed ^ (u64::from(self.n) << 32));
        let batch = (j.iodepth_batch_submit as usize).clamp(1, depth);
        let complete_min = (j.iodepth_batch_complete_min as usize).clamp(1, depth);
        // fio reaps at most this many per wait (by default as many as it waits for); the rest
        // stay in the completion queue, in flight, until a later wait.
        let complete_max = match j.iodepth_batch_complete_max as usize {
            0 => complete_min,
            m => m.clamp(complete_min, depth),
        };
        let mut pending: Option<(bool, u64)> = None;
        let mut writes = 0u64;
        loop {
            // Queue up to a batch while slots are free and the job goes on.
            let mut queued = 0;
            while queued < batch
                && !q.free.is_empty()
                && !c.done()
                && (pending.is_some() || j.time_based || pick.issued < pick.total)
            {
                let (read, idx) = match pending.take() {
                    Some(p) => p,
                    None => {
                        pacer.wait();
                        pick.next()
                    }
                };
                if q.busy.contains(&idx) {
                    // Its block is in flight: it waits for a completion.
                    pending = Some((read, idx));
                    break;
                }
                let (f, b) = self.files.locate(idx);
                let fh = match &handles[f] {
                    Ok(fh) => fh,
                    Err(e) => {
                        self.open_failed(&c, read, f, e);
                        continue;
                    }
                };
                let slot = q.free.pop().unwrap_or_default();
                let generation = if read {
                    0
                } else {
                    self.files.acked[self.files.index(f, b)].load(Ordering::Relaxed) + 1
                };
                let buf = q.bufs[slot].as_mut();
                if !read && j.verify {
                    fill_block(buf, self.files.first_file + f as u32, b * bs, generation, self.tag);
                }
                let fd = types::Fd(fh.as_raw_fd());
                let (ptr, len) = (buf.as_mut_ptr(), buf.len() as u32);
                let sqe = if read {
                    opcode::Read::new(fd, ptr, len).offset(b * bs).build()
                } else {
                    opcode::Write::new(fd, ptr, len).offset(b * bs).build()
                }
                .user_data(slot as u64);
                let submit_ns = now_ns();
                // SAFETY: the buffer lives in `q` until this entry's completion is reaped (a
                // slot is freed only then, and the queue outlives the ring's use below).
                if unsafe { ring.submission().push(&sqe) }.is_err() {
                    q.free.push(slot);
                    pending = Some((read, idx));
                    break;
                }
                q.slots[slot] = Some(InFlight { read, idx, file: f, block: b, generation, submit_ns });
                q.busy.insert(idx);
                queued += 1;
                q.most = q.most.max(q.in_flight());
            }
            let in_flight = q.in_flight();
            if in_flight == 0 {
                // Done, or stopped with a request still waiting for its block: it is dropped
                // (it was never issued).
                if pending.is_none() || c.done() {
                    break;
                }
                continue;
            }
            // As fio: submit, and reap only when the queue is full (or a block waits for its
            // request, or the job is ending), then at least `iodepth_batch_complete_min` and
            // whatever else is done. A request that completed inline stays counted in flight
            // until it is reaped, as in fio.
            let ending = c.done() || (!j.time_based && pick.issued >= pick.total && pending.is_none());
            let reap = q.free.is_empty() || pending.is_some() || ending || queued == 0;
            let want = if reap { complete_min.min(in_flight) } else { 0 };
            if let Err(e) = ring.submit_and_wait(want) {
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
                q.busy.remove(&r.idx);
                self.completed(&c, &r, res, q.bufs[slot].as_mut(), complete_ns);
                if !r.read {
                    writes += 1;
                    if j.sync_due(writes) {
                        if let Ok(fh) = &handles[r.file] {
                            self.sync(&c, fh, j.fsync > 0);
                        }
                    }
                }
            }
        }
        // Nothing may complete into a buffer after the queue is gone: drain what is left.
        while q.in_flight() > 0 && ring.submit_and_wait(1).is_ok() {
            let done: Vec<u64> = ring.completion().map(|cqe| cqe.user_data()).collect();
            for slot in done {
                if let Some(s) = q.slots.get_mut(slot as usize) {
                    if s.take().is_some() {
                        q.free.push(slot as usize);
                    }
                }
            }
        }
        if j.end_fsync {
            for fh in handles.iter().flatten() {
                self.sync(&c, fh, true);
            }
        }
        self.files.hold(handles);
    }

    /// A completion: its record, and for a write the block's generation.
    fn completed(&self, c: &Ctx, r: &InFlight, res: i32, buf: &mut [u8], complete_ns: u64) {
        let bs = self.job.bs.0;
        let op = if r.read { Op::Read } else { Op::Write };
        let path = || self.files.paths[r.file].display().to_string();
        let i = self.files.index(r.file, r.block);
        if res < 0 {
            let e = std::io::Error::from_raw_os_error(-res);
            if !r.read {
                // It may still have landed: the verify pass tells.
                self.files.errored[i].store(r.generation, Ordering::Relaxed);
            }
            let why = format!("{} {}: {e}", if r.read { "read" } else { "write" }, path());
            c.record_at(op, self.n, r.submit_ns, complete_ns, 0, Err((errno(&e), why)), false);
            return;
        }
        let n = res as usize;
        if r.read {
            let mismatch = self.inline_mismatch(buf, n, r.file, r.block);
            c.record_at(op, self.n, r.submit_ns, complete_ns, n as u64, Ok(()), mismatch);
        } else if n as u64 == bs {
            self.files.acked[i].store(r.generation, Ordering::Relaxed);
            c.record_at(op, self.n, r.submit_ns, complete_ns, bs, Ok(()), false);
        } else {
            self.files.errored[i].store(r.generation, Ordering::Relaxed);
            let why = format!("write {}: {n} of {bs} bytes written", path());
            c.record_at(op, self.n, r.submit_ns, complete_ns, 0, Err((libc::EIO as u32, why)), false);
        }
    }
}
