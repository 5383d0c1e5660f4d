//! The wire format: a fixed 32-byte header followed by `length` payload bytes.
//!
//! Every byte that crosses a link after the bootstrap is a frame. The header
//! carries the seed's routing fields so an intermediate context can forward a
//! frame without looking at its payload:
//!
//! ```text
//! offset size field
//!      0    2 magic     0x4D 0x52 ("MR"); anything else ends the stream
//!      2    1 encoding  how to read the payload (see `Encoding`)
//!      3    1 flags     FRAGMENT (1) and LAST (2), other bits must be 0
//!      4    4 dst_id    context the frame is for
//!      8    4 src_id    context that wrote it
//!     12    4 auth_id   context on whose authority it was sent
//!     16    4 handle    receiver in `dst_id`
//!     20    4 reply_to  handle in `src_id` for the answer, 0 for none
//!     24    4 length    payload bytes that follow
//!     28    4 frag_id   which fragmented message this frame is part of;
//!                       0 exactly when FRAGMENT is not set
//! ```
//!
//! A message larger than one frame may carry (see `max_message_size`)
//! travels as consecutive frames with the same routing fields, the
//! `FRAGMENT` flag and one `frag_id` chosen by its source; the frame that
//! ends it also has `LAST`. Intermediate contexts route fragments like any
//! frame, each within the size limit; only the destination puts them
//! together (`reassembly.rs`).
//!
//! All integers are little-endian. Decoding never panics: a frame that breaks
//! a rule is a [`FrameError`], and the stream that carried it is closed.

use std::fmt;

/// Size of the fixed header, in bytes.
pub const HEADER_LEN: usize = 32;
/// The two bytes every frame starts with.
pub const MAGIC: [u8; 2] = *b"MR";
/// Version of this wire protocol; both ends compare it in the handshake.
pub const PROTOCOL_VERSION: u32 = 2;
/// Default largest payload accepted on receive and on route (128 MiB).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 128 * 1024 * 1024;

/// Flag: this frame is one fragment of a larger message.
pub const FRAGMENT: u8 = 1;
/// Flag: this fragment is the last of its message.
pub const LAST: u8 = 2;
/// Never on the wire (decoding refuses it): set by a link's reader on a
/// fragment whose payload starts with the partial message it continues,
/// lent by the reassembly (`reassembly.rs`).
pub(crate) const LENT: u8 = 0x80;

/// How a frame's payload is to be read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// A MessagePack value (serde).
    #[default]
    MsgPack = 0,
    /// Opaque bytes, never passed through a serializer (bulk data).
    Raw = 1,
    /// A dead message: the payload is a UTF-8 reason.
    Dead = 2,
    /// A failed call: the payload is a MessagePack [`crate::CallError`].
    CallError = 3,
}

impl Encoding {
    fn from_u8(v: u8) -> Option<Encoding> {
        Some(match v {
            0 => Encoding::MsgPack,
            1 => Encoding::Raw,
            2 => Encoding::Dead,
            3 => Encoding::CallError,
            _ => return None,
        })
    }
}

/// The decoded fixed header of a frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// How the payload is encoded.
    pub encoding: Encoding,
    /// Destination context.
    pub dst_id: u32,
    /// Source context.
    pub src_id: u32,
    /// Context on whose authority the message was sent.
    pub auth_id: u32,
    /// Receiving handle in the destination.
    pub handle: u32,
    /// Handle in the source that expects a reply, or 0.
    pub reply_to: u32,
    /// Length of the payload that follows the header.
    pub length: u32,
    /// [`FRAGMENT`] and [`LAST`], or 0 for a whole message.
    pub flags: u8,
    /// The fragmented message this frame belongs to (0: none).
    pub frag_id: u32,
}

/// Why a frame was refused. The stream carrying it is disconnected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The first two bytes were not [`MAGIC`].
    BadMagic([u8; 2]),
    /// The encoding byte is unknown.
    BadEncoding(u8),
    /// Flags or reserved bytes were not zero.
    Reserved,
    /// The payload is larger than the stream's `max_message_size`.
    TooLarge {
        /// Announced payload length.
        length: u64,
        /// Limit in force.
        max: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad frame magic {:02x}{:02x}", m[0], m[1]),
            FrameError::BadEncoding(e) => write!(f, "unknown payload encoding {e}"),
            FrameError::Reserved => write!(f, "reserved header bits set"),
            FrameError::TooLarge { length, max } => {
                write!(f, "frame of {length} bytes exceeds max_message_size {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

fn le32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

impl Header {
    /// Writes the header into its 32-byte wire form.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = self.encoding as u8;
        b[3] = self.flags;
        for (i, v) in [
            self.dst_id,
            self.src_id,
            self.auth_id,
            self.handle,
            self.reply_to,
            self.length,
            self.frag_id,
        ]
        .into_iter()
        .enumerate()
        {
            b[4 + 4 * i..8 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Reads a header from the first [`HEADER_LEN`] bytes of `b`, checking
    /// the magic, encoding, reserved bits and the size limit `max`.
    ///
    /// Returns `Ok(None)` when fewer than [`HEADER_LEN`] bytes are available.
    pub fn decode(b: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
        if b.len() < 2 {
            return Ok(None);
        }
        if b[0..2] != MAGIC {
            return Err(FrameError::BadMagic([b[0], b[1]]));
        }
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        let encoding = Encoding::from_u8(b[2]).ok_or(FrameError::BadEncoding(b[2]))?;
        let (flags, frag_id) = (b[3], le32(b, 28));
        let fragment = flags & FRAGMENT != 0;
        if flags & !(FRAGMENT | LAST) != 0
            || fragment != (frag_id != 0)
            || (flags & LAST != 0 && !fragment)
        {
            return Err(FrameError::Reserved);
        }
        let length = le32(b, 24);
        if length as usize > max {
            return Err(FrameError::TooLarge {
                length: u64::from(length),
                max,
            });
        }
        Ok(Some(Header {
            encoding,
            dst_id: le32(b, 4),
            src_id: le32(b, 8),
            auth_id: le32(b, 12),
            handle: le32(b, 16),
            reply_to: le32(b, 20),
            length,
            flags,
            frag_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            encoding: Encoding::Raw,
            dst_id: 1,
            src_id: 2,
            auth_id: 3,
            handle: 4000,
            reply_to: 5,
            length: 6,
            flags: 0,
            frag_id: 0,
        }
    }

    #[test]
    fn round_trip() {
        let h = sample();
        assert_eq!(Header::decode(&h.encode(), 100).unwrap(), Some(h));
    }

    #[test]
    fn short_input_waits_for_more() {
        let b = sample().encode();
        for n in 0..HEADER_LEN {
            assert_eq!(Header::decode(&b[..n], 100).unwrap(), None, "at {n}");
        }
    }

    #[test]
    fn bad_magic_is_refused_early() {
        assert_eq!(
            Header::decode(b"GE", 100),
            Err(FrameError::BadMagic(*b"GE"))
        );
    }

    #[test]
    fn oversized_and_garbage_refused() {
        let b = sample().encode();
        assert!(matches!(
            Header::decode(&b, 5),
            Err(FrameError::TooLarge { length: 6, max: 5 })
        ));
        let mut bad = b;
        bad[2] = 9;
        assert_eq!(Header::decode(&bad, 100), Err(FrameError::BadEncoding(9)));
        let mut bad = b;
        bad[30] = 1;
        assert_eq!(Header::decode(&bad, 100), Err(FrameError::Reserved));
        let mut bad = b;
        bad[3] = FRAGMENT; // a fragment without its id
        assert_eq!(Header::decode(&bad, 100), Err(FrameError::Reserved));
        let mut bad = b;
        bad[3] = LAST;
        bad[28] = 1; // LAST without FRAGMENT
        assert_eq!(Header::decode(&bad, 100), Err(FrameError::Reserved));
        let mut ok = b;
        ok[3] = FRAGMENT | LAST;
        ok[28] = 7;
        let h = Header::decode(&ok, 100).unwrap().unwrap();
        assert_eq!((h.flags, h.frag_id), (FRAGMENT | LAST, 7));
    }
}

/// Reserved handles of the control plane. User handles start at
/// [`handle::FIRST_DYNAMIC`].
pub mod handle {
    /// Run a remote function (the seed's `CALL_FUNCTION`).
    pub const CALL_FUNCTION: u32 = 101;
    /// A log record travelling to the master.
    pub const FORWARD_LOG: u32 = 102;
    /// A new context is reachable through the sender.
    pub const ADD_ROUTE: u32 = 103;
    /// A context is gone.
    pub const DEL_ROUTE: u32 = 104;
    /// Ask the master for a fresh context id.
    pub const ALLOCATE_ID: u32 = 105;
    /// Ask a context to shut down gracefully.
    pub const SHUTDOWN: u32 = 106;
    /// Bootstrap handshake frames (hello and config).
    pub const HANDSHAKE: u32 = 107;
    /// Cut the link to a context: acted on by the router that holds it.
    pub const DISCONNECT: u32 = 108;
    /// A child tells its parent it detaches: its link's end is no failure.
    pub const DETACHING: u32 = 109;
    /// Call a method of a service (the seed's `CALL_SERVICE`).
    pub const CALL_SERVICE: u32 = 110;
    /// The first handle given out by `Router::add_handler`.
    pub const FIRST_DYNAMIC: u32 = 1000;
}
