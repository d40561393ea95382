//! Arbitrary bytes, split arbitrarily, must never panic the decoder; every frame it accepts must
//! be canonical (encode back to exactly its bytes), and every frame is either accepted or
//! counted bad: none goes missing, none is invented.
#![no_main]

use libfuzzer_sys::fuzz_target;
use miglab_workloads::record::{Decoder, FRAME_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else { return };
    let mut d = Decoder::new();
    let mut got = Vec::new();
    for chunk in bytes.chunks(split as usize + 1) {
        d.feed(chunk, |r| got.push(r));
    }
    assert_eq!(
        got.len() as u64 + d.bad_frames,
        (bytes.len() / FRAME_LEN) as u64,
        "a frame went missing or was invented"
    );
    // Each accepted record is the frame it came from, byte for byte, in order.
    let mut accepted = got.iter();
    for frame in bytes.chunks_exact(FRAME_LEN) {
        let frame: &[u8; FRAME_LEN] = frame.try_into().expect("exact chunks");
        if let Ok(r) = miglab_workloads::record::Record::decode(frame) {
            let next = accepted.next().expect("the decoder accepted it too");
            assert_eq!(next, &r, "order");
            assert_eq!(&r.to_bytes(), frame, "not canonical");
        }
    }
    assert!(accepted.next().is_none(), "the decoder accepted a frame the frames do not hold");
});
