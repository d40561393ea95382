//! The record wire format: what the guest agent streams on the `miglab.records` port.
//!
//! Every frame is [`FRAME_LEN`] bytes, little endian:
//!
//! | offset | size | field                                                          |
//! |--------|------|----------------------------------------------------------------|
//! | 0      | 1    | version ([`VERSION`])                                          |
//! | 1      | 1    | kind: 0 heartbeat, 1 op                                        |
//! | 2      | 1    | op ([`Op`]); 0 for a heartbeat                                 |
//! | 3      | 1    | flags: bit 0 error, bit 1 verify mismatch (others 0)           |
//! | 4      | 2    | job number (heartbeat: 0)                                      |
//! | 6      | 2    | reserved, 0                                                    |
//! | 8      | 8    | guest CLOCK_MONOTONIC ns at submit (heartbeat: its time)       |
//! | 16     | 8    | guest CLOCK_MONOTONIC ns at completion (heartbeat: same)       |
//! | 24     | 4    | bytes moved (heartbeat: its sequence number)                   |
//! | 28     | 4    | status: 0, or the errno of a failed op                         |
//!
//! Fixed-size frames make the decoder a loop over 32-byte chunks: no framing state beyond a
//! partial frame carried between reads, and no allocation. Only the canonical form decodes (a
//! heartbeat carries its time twice and zeros elsewhere), so a corrupted or misaligned stream
//! shows as bad frames instead of plausible nonsense.

use std::fmt;

pub const VERSION: u8 = 1;
pub const FRAME_LEN: usize = 32;

/// What an op record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Op {
    Read = 1,
    Write = 2,
    Fsync = 3,
    /// One iteration of the read loop: open, read, close.
    ReadFile = 4,
    Create = 5,
    Stat = 6,
    Rename = 7,
    Unlink = 8,
    /// One block checked by a verify pass.
    Verify = 9,
}

impl Op {
    pub const ALL: [Op; 9] = [
        Op::Read,
        Op::Write,
        Op::Fsync,
        Op::ReadFile,
        Op::Create,
        Op::Stat,
        Op::Rename,
        Op::Unlink,
        Op::Verify,
    ];

    pub fn from_u8(v: u8) -> Option<Op> {
        Op::ALL.into_iter().find(|o| *o as u8 == v)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Fsync => "fsync",
            Op::ReadFile => "readfile",
            Op::Create => "create",
            Op::Stat => "stat",
            Op::Rename => "rename",
            Op::Unlink => "unlink",
            Op::Verify => "verify",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const FLAG_ERROR: u8 = 1;
pub const FLAG_MISMATCH: u8 = 2;

/// One decoded frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record {
    Heartbeat { seq: u32, guest_ns: u64 },
    Op(OpRecord),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpRecord {
    pub op: Op,
    pub flags: u8,
    pub job: u16,
    pub submit_ns: u64,
    pub complete_ns: u64,
    pub bytes: u32,
    pub status: u32,
}

impl OpRecord {
    /// A successful op of job 0 (what synthetic streams for tests and benchmarks are made of).
    pub fn done(op: Op, submit_ns: u64, complete_ns: u64, bytes: u32) -> Self {
        Self { op, flags: 0, job: 0, submit_ns, complete_ns, bytes, status: 0 }
    }

    pub fn latency_ns(&self) -> u64 {
        self.complete_ns.saturating_sub(self.submit_ns)
    }
    pub fn failed(&self) -> bool {
        self.flags & FLAG_ERROR != 0
    }
}

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record version {0}, this miglab reads version {VERSION}")]
    Version(u8),
    #[error("unknown record kind {0}")]
    Kind(u8),
    #[error("unknown op {0}")]
    Op(u8),
    /// A frame no encoder writes (reserved bytes set, unknown flags, a heartbeat whose two
    /// times differ): a sign of a corrupted or misaligned stream, so it is refused.
    #[error("a frame that is not in canonical form")]
    NonCanonical,
}

impl Record {
    pub fn encode(&self, out: &mut [u8; FRAME_LEN]) {
        *out = [0; FRAME_LEN];
        out[0] = VERSION;
        match *self {
            Record::Heartbeat { seq, guest_ns } => {
                out[8..16].copy_from_slice(&guest_ns.to_le_bytes());
                out[16..24].copy_from_slice(&guest_ns.to_le_bytes());
                out[24..28].copy_from_slice(&seq.to_le_bytes());
            }
            Record::Op(r) => {
                out[1] = 1;
                out[2] = r.op as u8;
                out[3] = r.flags;
                out[4..6].copy_from_slice(&r.job.to_le_bytes());
                out[8..16].copy_from_slice(&r.submit_ns.to_le_bytes());
                out[16..24].copy_from_slice(&r.complete_ns.to_le_bytes());
                out[24..28].copy_from_slice(&r.bytes.to_le_bytes());
                out[28..32].copy_from_slice(&r.status.to_le_bytes());
            }
        }
    }

    pub fn to_bytes(&self) -> [u8; FRAME_LEN] {
        let mut b = [0; FRAME_LEN];
        self.encode(&mut b);
        b
    }

    /// Decodes a frame. Only the canonical form is accepted — exactly what [`Record::encode`]
    /// writes — so a decoded record always encodes back to the same bytes.
    #[inline]
    pub fn decode(b: &[u8; FRAME_LEN]) -> Result<Record, DecodeError> {
        if b[0] != VERSION {
            return Err(DecodeError::Version(b[0]));
        }
        let u64_at = |o: usize| {
            u64::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5], b[o + 6], b[o + 7]])
        };
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        match b[1] {
            0 => {
                if b[2..8] != [0; 6] || b[8..16] != b[16..24] || b[28..32] != [0; 4] {
                    return Err(DecodeError::NonCanonical);
                }
                Ok(Record::Heartbeat { seq: u32_at(24), guest_ns: u64_at(8) })
            }
            1 if b[3] & !(FLAG_ERROR | FLAG_MISMATCH) != 0 || b[6..8] != [0; 2] => {
                Err(DecodeError::NonCanonical)
            }
            1 => Ok(Record::Op(OpRecord {
                op: Op::from_u8(b[2]).ok_or(DecodeError::Op(b[2]))?,
                flags: b[3],
                job: u16::from_le_bytes([b[4], b[5]]),
                submit_ns: u64_at(8),
                complete_ns: u64_at(16),
                bytes: u32_at(24),
                status: u32_at(28),
            })),
            k => Err(DecodeError::Kind(k)),
        }
    }
}

/// Splits a byte stream into frames, carrying a partial frame from one chunk to the next.
#[derive(Debug, Default)]
pub struct Decoder {
    partial: [u8; FRAME_LEN],
    have: usize,
    /// Frames that did not decode (counted, not fatal: one bad frame must not end a run).
    pub bad_frames: u64,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `chunk`, calling `f` for every complete, valid frame.
    #[inline]
    pub fn feed(&mut self, mut chunk: &[u8], mut f: impl FnMut(Record)) {
        if self.have > 0 {
            let take = (FRAME_LEN - self.have).min(chunk.len());
            self.partial[self.have..self.have + take].copy_from_slice(&chunk[..take]);
            self.have += take;
            chunk = &chunk[take..];
            if self.have < FRAME_LEN {
                return;
            }
            let frame = self.partial;
            self.have = 0;
            self.emit(&frame, &mut f);
        }
        let mut frames = chunk.chunks_exact(FRAME_LEN);
        for frame in &mut frames {
            let frame: &[u8; FRAME_LEN] = frame.try_into().expect("chunks_exact yields FRAME_LEN bytes");
            self.emit(frame, &mut f);
        }
        let rest = frames.remainder();
        self.partial[..rest.len()].copy_from_slice(rest);
        self.have = rest.len();
    }

    #[inline]
    fn emit(&mut self, frame: &[u8; FRAME_LEN], f: &mut impl FnMut(Record)) {
        match Record::decode(frame) {
            Ok(r) => f(r),
            Err(_) => self.bad_frames += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut v = vec![Record::Heartbeat { seq: 0, guest_ns: 1 }];
        for (i, op) in Op::ALL.into_iter().enumerate() {
            v.push(Record::Op(OpRecord {
                op,
                flags: (i % 4) as u8,
                job: i as u16 * 300,
                submit_ns: u64::MAX - i as u64 * 1_000_000,
                complete_ns: u64::MAX - i as u64,
                bytes: u32::MAX - i as u32,
                status: i as u32,
            }));
            v.push(Record::Heartbeat { seq: i as u32 + 1, guest_ns: 1_000_000 * i as u64 });
        }
        v
    }

    #[test]
    fn every_record_round_trips() {
        for r in sample() {
            assert_eq!(Record::decode(&r.to_bytes()), Ok(r));
        }
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let r = Record::Op(OpRecord {
            op: Op::Write,
            flags: FLAG_ERROR,
            job: 2,
            submit_ns: 10,
            complete_ns: 25,
            bytes: 4096,
            status: 5,
        });
        let b = r.to_bytes();
        assert_eq!(&b[..8], &[VERSION, 1, 2, 1, 2, 0, 0, 0]);
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().expect("8")), 10);
        assert_eq!(u32::from_le_bytes(b[24..28].try_into().expect("4")), 4096);
        assert_eq!(u32::from_le_bytes(b[28..32].try_into().expect("4")), 5);
    }

    #[test]
    fn a_stream_split_anywhere_decodes_the_same() {
        let recs = sample();
        let bytes: Vec<u8> = recs.iter().flat_map(|r| r.to_bytes()).collect();
        for split in [1, 3, 31, 32, 33, 64, 100, 1000] {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for chunk in bytes.chunks(split) {
                d.feed(chunk, |r| got.push(r));
            }
            assert_eq!(got, recs, "split {split}");
            assert_eq!(d.bad_frames, 0);
        }
    }

    /// Reserved bytes, unknown flags, a heartbeat whose times differ: refused.
    #[test]
    fn only_the_canonical_form_decodes() {
        let hb = Record::Heartbeat { seq: 7, guest_ns: 42 }.to_bytes();
        for (at, v) in [(2usize, 1u8), (5, 1), (16, 43), (29, 1)] {
            let mut b = hb;
            b[at] = v;
            assert_eq!(Record::decode(&b), Err(DecodeError::NonCanonical), "heartbeat byte {at}");
        }
        let op = Record::Op(OpRecord {
            op: Op::Read,
            flags: FLAG_ERROR,
            job: 1,
            submit_ns: 1,
            complete_ns: 2,
            bytes: 3,
            status: 5,
        })
        .to_bytes();
        for (at, v) in [(3usize, 0x80u8), (6, 1), (7, 1)] {
            let mut b = op;
            b[at] = v;
            assert_eq!(Record::decode(&b), Err(DecodeError::NonCanonical), "op byte {at}");
        }
    }

    #[test]
    fn bad_frames_are_counted_not_fatal() {
        let mut bytes = Record::Heartbeat { seq: 1, guest_ns: 2 }.to_bytes().to_vec();
        let mut bad = Record::Heartbeat { seq: 2, guest_ns: 3 }.to_bytes();
        bad[0] = 9;
        bytes.extend_from_slice(&bad);
        let mut unknown_op = Record::Op(OpRecord {
            op: Op::Read,
            flags: 0,
            job: 0,
            submit_ns: 0,
            complete_ns: 0,
            bytes: 0,
            status: 0,
        })
        .to_bytes();
        unknown_op[2] = 200;
        bytes.extend_from_slice(&unknown_op);
        bytes.extend_from_slice(&Record::Heartbeat { seq: 3, guest_ns: 4 }.to_bytes());
        let mut d = Decoder::new();
        let mut n = 0;
        d.feed(&bytes, |_| n += 1);
        assert_eq!((n, d.bad_frames), (2, 2));
        assert_eq!(Record::decode(&bad), Err(DecodeError::Version(9)));
    }
}
