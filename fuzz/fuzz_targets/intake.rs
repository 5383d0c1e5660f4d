//! The router's intake: the input is what a (hostile) child with id 1
//! wrote on its link. It is split into frames and each frame is routed
//! through a master router. Nothing may panic, hang or abort.
//!
//! The router is created once and kept between inputs (that is how
//! `fuzz_intake` works), so one input can change what a later one sees,
//! e.g. an `ADD_ROUTE` makes another source id acceptable. A reproducer
//! may therefore need the inputs run before it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mitogen::testing::wire::{handle, Header, HEADER_LEN};
use mitogen::Message;

/// Whether `data` holds a `DEL_ROUTE` for context 1. The router accepts it
/// and forgets its only route to the fuzzed child, after which it drops
/// every frame of every later input: the rest of the run would test
/// nothing. Such inputs are skipped (the check mirrors the frame reader:
/// frames are taken in order until one is incomplete or malformed).
fn cuts_the_route(data: &[u8]) -> bool {
    let mut off = 0;
    while let Ok(Some(h)) = Header::decode(&data[off..], 1 << 20) {
        let end = off + HEADER_LEN + h.length as usize;
        let Some(body) = data.get(off + HEADER_LEN..end) else {
            return false;
        };
        if h.handle == handle::DEL_ROUTE {
            let mut m = Message::raw(body.to_vec());
            m.encoding = h.encoding;
            if m.decode::<(u32, String)>().is_ok_and(|(id, _)| id == 1) {
                return true;
            }
        }
        off = end;
    }
    false
}

fuzz_target!(|data: &[u8]| {
    if cuts_the_route(data) {
        return;
    }
    mitogen::testing::fuzz_intake(data);
});
