//! `Header::decode` on arbitrary bytes with a small size limit, walked
//! over the input as a stream of frames. Besides "never panics", checks
//! what each outcome promises.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mitogen::testing::wire::{FrameError, Header, HEADER_LEN, MAGIC};

/// A small limit, so that both sides of the size check are reachable.
const MAX: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let mut off = 0;
    loop {
        let rest = &data[off..];
        match Header::decode(rest, MAX) {
            Ok(None) => {
                // Only a short input, with a consistent prefix, waits.
                assert!(rest.len() < HEADER_LEN);
                assert!(rest.len() < 2 || rest[..2] == MAGIC);
                return;
            }
            Ok(Some(h)) => {
                assert!(h.length as usize <= MAX);
                // An accepted header is exactly its own encoding.
                assert_eq!(h.encode()[..], rest[..HEADER_LEN]);
                let end = HEADER_LEN + h.length as usize;
                if rest.len() < end {
                    return;
                }
                off += end;
            }
            Err(FrameError::BadMagic(m)) => {
                assert!(m != MAGIC && rest[..2] == m);
                return;
            }
            Err(FrameError::BadEncoding(e)) => {
                assert!(e > 3 && rest[2] == e && rest.len() >= HEADER_LEN);
                return;
            }
            Err(FrameError::Reserved) => {
                assert!(rest[3] != 0 || rest[28..32] != [0; 4]);
                return;
            }
            Err(FrameError::TooLarge { length, max }) => {
                assert_eq!(max, MAX);
                assert!(length > MAX as u64);
                return;
            }
        }
    }
});
