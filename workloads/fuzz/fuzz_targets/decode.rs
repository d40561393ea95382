//! Arbitrary bytes, split arbitrarily, must never panic the decoder; every frame it accepts
//! must encode back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miglab_workloads::record::{Decoder, Record, FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let mut d = Decoder::new();
    let mut n = 0u64;
    for chunk in bytes.chunks(split as usize + 1) {
        d.feed(chunk, |r| {
            n += 1;
            // A decoded record re-encodes to a frame that decodes to itself.
            assert_eq!(Record::decode(&r.to_bytes()), Ok(r));
        });
    }
    assert_eq!(n + d.bad_frames, (bytes.len() / FRAME_LEN) as u64);
});
