//! Messages larger than a frame: split by their source, put together by
//! their destination.
//!
//! A frame's payload is limited (`max_message_size`), so that a hostile
//! or broken peer cannot make a context allocate without bound, and so
//! that one huge message does not hold a link for seconds. A larger
//! message — a 1 GiB call result, say — is sent as fragments of at most
//! [`FRAGMENT_SIZE`] bytes carrying the `FRAGMENT` flag and an id chosen
//! by the source (`frame.rs`). Intermediate contexts route each fragment
//! like any frame, under the same limit and the same flow control, so an
//! intermediate holds at most a queue's worth of it, never the whole.
//!
//! The destination appends fragments to the message they belong to, keyed
//! by `(src_id, frag_id)`: one link is FIFO, and all frames from one
//! source to one destination take the same path, so they arrive in order,
//! interleaved only with other messages. What one source may have in
//! flight here is bounded by `max_payload` (bytes, all its partial
//! messages together); past it the message is dropped and its sender is
//! answered with a dead message. A source's partial messages are dropped
//! when it disconnects.
//!
//! Fragments are not copied onto their message here: the link's reader
//! borrows the partial message's buffer when a fragment's header arrives
//! ([`Lender`], `link/reader.rs`) and reads the body straight onto its end,
//! so the bytes of a large message are written to memory once. A loan
//! that does not come back (the frame was refused on its way here) breaks
//! that message only: it is dropped and its destination told.

use crate::frame::{Encoding, Header, FRAGMENT, LAST, LENT};
use crate::message::Message;
use crate::sync::lock;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Payload bytes per fragment when a message is split.
pub(crate) const FRAGMENT_SIZE: usize = 4 << 20;

/// Default bound on one message put together from fragments (and on all
/// of one source's partial messages together): 4 GiB.
pub const DEFAULT_MAX_PAYLOAD: usize = 4 << 30;

/// What adding a fragment gave.
pub(crate) enum Assembled {
    /// The message is complete.
    Done(Message),
    /// More fragments are to come.
    Partial,
    /// The message went over the limit and was dropped; the first
    /// fragment's fields are returned to answer its sender.
    TooLarge(Message),
    /// A later fragment of a message dropped before.
    Dropped,
    /// Its source gave up mid-message (a dead last fragment): what was
    /// held is dropped; the returned dead message tells the destination.
    Aborted(Message),
}

/// Partial messages of every source, in one context.
#[derive(Default)]
pub(crate) struct Reassembly {
    partial: HashMap<(u32, u32), Message>,
    /// Bytes held per source.
    held: HashMap<u32, usize>,
    /// Messages dropped for size whose remaining fragments are ignored.
    dropped: std::collections::HashSet<(u32, u32)>,
    /// Partial messages whose buffer a reader holds, with its length.
    lent: HashMap<(u32, u32), usize>,
}

/// Lends the partial messages addressed to one context to its links'
/// readers (see the module doc).
pub(crate) struct Lender {
    /// The context fragments are put together in.
    pub(crate) local: u32,
    pub(crate) reassembly: Arc<Mutex<Reassembly>>,
}

impl crate::link::Placement for Lender {
    fn lend(&self, h: &Header) -> Option<Vec<u8>> {
        if h.dst_id != self.local || h.flags & FRAGMENT == 0 || h.encoding == Encoding::Dead {
            return None;
        }
        lock(&self.reassembly).lend((h.src_id, h.frag_id))
    }
}

impl Reassembly {
    /// The buffer of the partial message `key`, for a reader to append
    /// the next fragment to; it comes back through [`Reassembly::add`].
    pub(crate) fn lend(&mut self, key: (u32, u32)) -> Option<Vec<u8>> {
        if self.lent.contains_key(&key) {
            // The last loan never came back: `add` drops the message.
            return None;
        }
        let v = std::mem::take(&mut self.partial.get_mut(&key)?.data);
        self.lent.insert(key, v.len());
        Some(v)
    }

    /// Forgets the partial message `key`; returns it (with its data, or
    /// empty if lent) and its bytes are no longer counted.
    fn remove(&mut self, key: (u32, u32)) -> Option<Message> {
        let lent = self.lent.remove(&key).unwrap_or(0);
        let first = self.partial.remove(&key);
        let n = lent + first.as_ref().map_or(0, |m| m.data.len());
        if let Some(held) = self.held.get_mut(&key.0) {
            *held = held.saturating_sub(n);
        }
        first
    }

    /// Adds one fragment (`msg.frag` is set). A fragment flagged [`LENT`]
    /// carries the partial message lent for it, then its own bytes.
    pub(crate) fn add(&mut self, mut msg: Message, max_payload: usize) -> Assembled {
        let key = (msg.src_id, msg.frag.1);
        let last = msg.frag.0 & LAST != 0;
        let returned = msg.frag.0 & LENT != 0;
        msg.frag.0 &= !LENT;
        if self.dropped.contains(&key) {
            if last {
                self.dropped.remove(&key);
            }
            return Assembled::Dropped;
        }
        let lent = self.lent.get(&key).copied();
        let broken = lent.is_some() != returned;
        if (last && msg.is_dead()) || broken {
            self.remove(key);
            if broken && !last {
                self.dropped.insert(key);
            }
            let why = if broken {
                "arrived incomplete (a fragment was refused on its way)"
            } else {
                "stopped midway"
            };
            let mut dead = Message::dead(format!("context {}'s message {why}", msg.src_id));
            (dead.dst_id, dead.src_id, dead.auth_id) = (msg.dst_id, msg.src_id, msg.auth_id);
            dead.handle = msg.handle;
            return Assembled::Aborted(dead);
        }
        let prefix = lent.unwrap_or(0);
        let new = msg.data.len().saturating_sub(prefix);
        let held = self.held.get(&msg.src_id).copied().unwrap_or(0);
        if held.saturating_add(new) > max_payload {
            self.remove(key);
            if !last {
                self.dropped.insert(key);
            }
            msg.data = Vec::new();
            return Assembled::TooLarge(msg);
        }
        *self.held.entry(msg.src_id).or_default() += new;
        self.lent.remove(&key);
        let whole = match self.partial.remove(&key) {
            Some(mut first) if returned => {
                first.data = msg.data;
                first
            }
            Some(mut first) => {
                first.data.extend_from_slice(&msg.data);
                first
            }
            None => msg,
        };
        if !last {
            self.partial.insert(key, whole);
            return Assembled::Partial;
        }
        if let Some(held) = self.held.get_mut(&key.0) {
            *held = held.saturating_sub(whole.data.len());
        }
        let mut whole = whole;
        whole.frag = (0, 0);
        Assembled::Done(whole)
    }

    /// Drops what `ids` had in flight (they disconnected).
    pub(crate) fn forget(&mut self, ids: &[u32]) {
        self.partial.retain(|(src, _), _| !ids.contains(src));
        self.dropped.retain(|(src, _)| !ids.contains(src));
        self.lent.retain(|(src, _), _| !ids.contains(src));
        self.held.retain(|src, _| !ids.contains(src));
    }

    /// Bytes held for `src`.
    #[cfg(test)]
    fn held(&self, src: u32) -> usize {
        self.held.get(&src).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FRAGMENT;

    fn frag(src: u32, id: u32, data: &[u8], last: bool) -> Message {
        let mut m = Message::raw(data.to_vec());
        m.src_id = src;
        m.frag = (FRAGMENT | if last { LAST } else { 0 }, id);
        m
    }

    #[test]
    fn interleaved_messages_reassemble() {
        let mut r = Reassembly::default();
        assert!(matches!(
            r.add(frag(1, 1, b"ab", false), 100),
            Assembled::Partial
        ));
        assert!(matches!(
            r.add(frag(1, 2, b"xy", false), 100),
            Assembled::Partial
        ));
        assert!(matches!(
            r.add(frag(2, 1, b"12", false), 100),
            Assembled::Partial
        ));
        let Assembled::Done(m) = r.add(frag(1, 1, b"cd", true), 100) else {
            panic!("message 1 complete")
        };
        assert_eq!((m.data.as_slice(), m.frag), (&b"abcd"[..], (0, 0)));
        let Assembled::Done(m) = r.add(frag(1, 2, b"z", true), 100) else {
            panic!("message 2 complete")
        };
        assert_eq!(m.data, b"xyz");
        assert_eq!(r.held(1), 0);
        assert_eq!(r.held(2), 2);
    }

    #[test]
    fn over_the_limit_is_dropped_with_its_rest() {
        let mut r = Reassembly::default();
        assert!(matches!(
            r.add(frag(1, 1, &[0; 6], false), 10),
            Assembled::Partial
        ));
        assert!(matches!(
            r.add(frag(1, 1, &[0; 6], false), 10),
            Assembled::TooLarge(_)
        ));
        assert_eq!(r.held(1), 0);
        assert!(matches!(
            r.add(frag(1, 1, &[0; 6], false), 10),
            Assembled::Dropped
        ));
        assert!(matches!(
            r.add(frag(1, 1, &[0; 1], true), 10),
            Assembled::Dropped
        ));
        // The next message from the same source is fine.
        assert!(matches!(
            r.add(frag(1, 2, &[0; 4], true), 10),
            Assembled::Done(_)
        ));
    }

    #[test]
    fn an_aborted_message_is_freed_and_reported_dead() {
        let mut r = Reassembly::default();
        r.add(frag(3, 1, &[0; 6], false), 100);
        let mut end = Message::dead("");
        end.src_id = 3;
        end.handle = 1234;
        end.frag = (FRAGMENT | LAST, 1);
        let Assembled::Aborted(m) = r.add(end, 100) else {
            panic!("aborted")
        };
        assert!(m.is_dead() && m.handle == 1234);
        assert_eq!(r.held(3), 0);
    }

    fn lent(src: u32, id: u32, lent: Vec<u8>, data: &[u8], last: bool) -> Message {
        let mut body = lent;
        body.extend_from_slice(data);
        let mut m = frag(src, id, &body, last);
        m.frag.0 |= LENT;
        m
    }

    #[test]
    fn a_lent_buffer_comes_back_with_the_fragment_appended() {
        let mut r = Reassembly::default();
        assert!(r.lend((1, 1)).is_none(), "nothing to lend before the first");
        r.add(frag(1, 1, b"ab", false), 100);
        let v = r.lend((1, 1)).expect("lent");
        assert_eq!(v, b"ab");
        assert!(r.lend((1, 1)).is_none(), "lent once");
        assert_eq!(r.held(1), 2);
        assert!(matches!(
            r.add(lent(1, 1, v, b"cd", false), 100),
            Assembled::Partial
        ));
        assert_eq!(r.held(1), 4);
        let v = r.lend((1, 1)).expect("lent again");
        let Assembled::Done(m) = r.add(lent(1, 1, v, b"e", true), 100) else {
            panic!("complete")
        };
        assert_eq!((m.data.as_slice(), m.frag), (&b"abcde"[..], (0, 0)));
        assert_eq!(r.held(1), 0);
        assert!(r.lent.is_empty() && r.partial.is_empty());
    }

    #[test]
    fn a_loan_not_returned_drops_that_message_only() {
        let mut r = Reassembly::default();
        r.add(frag(1, 1, b"ab", false), 100);
        r.add(frag(1, 2, b"xy", false), 100);
        let _lost = r.lend((1, 1)).expect("lent");
        // The next fragment comes unlent: its predecessor never arrived.
        let Assembled::Aborted(m) = r.add(frag(1, 1, b"cd", false), 100) else {
            panic!("aborted")
        };
        assert!(m.is_dead());
        assert!(matches!(
            r.add(frag(1, 1, b"e", true), 100),
            Assembled::Dropped
        ));
        assert_eq!(r.held(1), 2, "message 2 is still held");
        let Assembled::Done(m) = r.add(frag(1, 2, b"z", true), 100) else {
            panic!("message 2 complete")
        };
        assert_eq!(m.data, b"xyz");
        assert_eq!(r.held(1), 0);
    }

    #[test]
    fn a_lent_message_over_the_limit_is_dropped() {
        let mut r = Reassembly::default();
        r.add(frag(1, 1, &[0; 6], false), 10);
        let v = r.lend((1, 1)).expect("lent");
        assert!(matches!(
            r.add(lent(1, 1, v, &[0; 6], false), 10),
            Assembled::TooLarge(_)
        ));
        assert_eq!(r.held(1), 0);
        assert!(r.lent.is_empty() && r.partial.is_empty());
    }

    #[test]
    fn a_lost_source_frees_its_partials() {
        let mut r = Reassembly::default();
        r.add(frag(7, 1, &[0; 6], false), 100);
        r.add(frag(7, 2, &[0; 6], false), 100);
        let _ = r.lend((7, 2));
        r.forget(&[7]);
        assert!(r.lent.is_empty());
        assert_eq!(r.held(7), 0);
        assert!(r.partial.is_empty());
    }
}
