//! Property tests of the wire format and of hostile-input handling.
//!
//! These run in-process only (no child contexts): the frame header codec,
//! `Message` payload encoding, and `mitogen::testing::fuzz_intake`, which
//! routes decoded frames through a router as if they came from child 1.
//!
//! Each property runs `PROPTEST_CASES` cases (default 256; the whole file
//! takes a few seconds); e.g. `PROPTEST_CASES=5000 cargo test -p mitogen
//! --test props` for a longer soak. Failures are shrunk and printed, not
//! persisted to a regressions file.

use mitogen::testing::fuzz_intake;
use mitogen::testing::wire::{handle, Encoding, FrameError, Header, HEADER_LEN, MAGIC};
use mitogen::{ByteBuf, Error, Message};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde::Serialize;

/// Cases per property: modest by default, `PROPTEST_CASES` overrides.
fn config(default_cases: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------
// Strategies

fn encoding() -> impl Strategy<Value = Encoding> {
    prop_oneof![
        Just(Encoding::MsgPack),
        Just(Encoding::Raw),
        Just(Encoding::Dead),
        Just(Encoding::CallError),
    ]
}

/// Any header, with any `length`.
fn header() -> impl Strategy<Value = Header> {
    (encoding(), any::<[u32; 6]>()).prop_map(|(encoding, f)| Header {
        encoding,
        dst_id: f[0],
        src_id: f[1],
        auth_id: f[2],
        handle: f[3],
        reply_to: f[4],
        length: f[5],
        ..Header::default()
    })
}

/// A header together with the payload its `length` announces.
fn frame_parts(max_payload: usize) -> impl Strategy<Value = (Header, Vec<u8>)> {
    (header(), vec(any::<u8>(), 0..=max_payload)).prop_map(|(mut h, body)| {
        h.length = body.len() as u32;
        (h, body)
    })
}

fn wire(h: &Header, body: &[u8]) -> Vec<u8> {
    let mut v = h.encode().to_vec();
    v.extend_from_slice(body);
    v
}

/// Byte strings for the decoder: pure noise (which almost never starts with
/// the magic), valid headers cut short or followed by noise, and valid
/// headers with one byte changed.
fn decoder_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..80),
        (header(), vec(any::<u8>(), 0..16), 0..=HEADER_LEN + 16).prop_map(|(h, tail, cut)| {
            let mut v = wire(&h, &tail);
            v.truncate(cut);
            v
        }),
        (header(), 0..HEADER_LEN, any::<u8>()).prop_map(|(h, at, byte)| {
            let mut v = h.encode().to_vec();
            v[at] = byte;
            v
        }),
        (vec(any::<u8>(), 0..40)).prop_map(|tail| {
            let mut v = MAGIC.to_vec();
            v.extend(tail);
            v
        }),
    ]
}

/// Size limits: tiny, around 32-bit lengths, and anything.
fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        0usize..64,
        any::<u32>().prop_map(|n| n as usize),
        any::<usize>(),
        Just(usize::MAX),
    ]
}

// ---------------------------------------------------------------------------
// Reference model of Header::decode, written from the format table in
// frame.rs rather than from its code.

fn model_decode(b: &[u8], max: usize) -> Result<Option<Header>, FrameError> {
    let word = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    match b {
        [] | [_] => Ok(None),
        [m0, m1, ..] if [*m0, *m1] != MAGIC => Err(FrameError::BadMagic([*m0, *m1])),
        _ if b.len() < HEADER_LEN => Ok(None),
        _ => {
            let encoding = match b[2] {
                0 => Encoding::MsgPack,
                1 => Encoding::Raw,
                2 => Encoding::Dead,
                3 => Encoding::CallError,
                other => return Err(FrameError::BadEncoding(other)),
            };
            // Flags: bit 0 fragment, bit 1 last (only on a fragment); the
            // fragment id is non-zero exactly on fragments.
            let (flags, frag_id) = (b[3], word(28));
            let valid = match flags {
                0 => frag_id == 0,
                1 | 3 => frag_id != 0,
                _ => false,
            };
            if !valid {
                return Err(FrameError::Reserved);
            }
            let length = word(24);
            if u64::from(length) > max as u64 {
                return Err(FrameError::TooLarge {
                    length: u64::from(length),
                    max,
                });
            }
            Ok(Some(Header {
                encoding,
                dst_id: word(4),
                src_id: word(8),
                auth_id: word(12),
                handle: word(16),
                reply_to: word(20),
                length,
                flags,
                frag_id,
            }))
        }
    }
}

// ---------------------------------------------------------------------------
// Header codec

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn header_round_trips(h in header(), tail in vec(any::<u8>(), 0..8)) {
        let bytes = h.encode();
        prop_assert_eq!(bytes.len(), HEADER_LEN);
        prop_assert_eq!(&bytes[..2], &MAGIC[..]);
        prop_assert_eq!(Header::decode(&bytes, h.length as usize), Ok(Some(h)));
        // Bytes after the header (the payload) do not change the result.
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&tail);
        prop_assert_eq!(Header::decode(&longer, usize::MAX), Ok(Some(h)));
    }

    #[test]
    fn every_encoding_round_trips(h in header()) {
        for e in [Encoding::MsgPack, Encoding::Raw, Encoding::Dead, Encoding::CallError] {
            let h = Header { encoding: e, ..h };
            prop_assert_eq!(Header::decode(&h.encode(), u32::MAX as usize), Ok(Some(h)));
        }
    }

    #[test]
    fn decode_matches_model(b in decoder_input(), max in limit()) {
        let got = Header::decode(&b, max);
        prop_assert_eq!(&got, &model_decode(&b, max));
        // Ok(None) ("need more bytes") exactly when the input is short and
        // what is there is a consistent prefix.
        let short = b.len() < 2 || (b[..2] == MAGIC && b.len() < HEADER_LEN);
        prop_assert_eq!(got == Ok(None), short);
    }

    #[test]
    fn prefixes_of_a_header_wait_for_more(h in header(), max in limit()) {
        let bytes = h.encode();
        for n in 0..HEADER_LEN {
            prop_assert_eq!(Header::decode(&bytes[..n], max), Ok(None), "prefix {}", n);
        }
    }

    #[test]
    fn bad_magic_is_refused_once_two_bytes_are_there(
        m in any::<[u8; 2]>().prop_filter("not the magic", |m| *m != MAGIC),
        tail in vec(any::<u8>(), 0..40),
        max in limit(),
    ) {
        let mut b = m.to_vec();
        b.extend(tail);
        prop_assert_eq!(Header::decode(&b, max), Err(FrameError::BadMagic(m)));
    }

    #[test]
    fn too_large_exactly_when_length_exceeds_max(
        h in header(),
        delta in -3i64..=3,
        other in limit(),
        near in any::<bool>(),
    ) {
        let max = if near {
            (i64::from(h.length) + delta).max(0) as usize
        } else {
            other
        };
        match Header::decode(&h.encode(), max) {
            Err(FrameError::TooLarge { length, max: m }) => {
                prop_assert!(h.length as usize > max);
                prop_assert_eq!(length, u64::from(h.length));
                prop_assert_eq!(m, max);
            }
            Ok(Some(got)) => {
                prop_assert!(h.length as usize <= max);
                prop_assert_eq!(got, h);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    /// Several frames back to back: walking the concatenation with
    /// Header::decode lands on every frame boundary, and a cut anywhere
    /// yields "need more" until a whole header is buffered.
    #[test]
    fn concatenated_frames_line_up(
        frames in vec(frame_parts(64), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut buf = Vec::new();
        let mut starts = Vec::new();
        for (h, body) in &frames {
            starts.push(buf.len());
            buf.extend(wire(h, body));
        }
        let max = 64;
        let mut off = 0;
        for (i, (h, _)) in frames.iter().enumerate() {
            prop_assert_eq!(off, starts[i]);
            let got = Header::decode(&buf[off..], max);
            prop_assert_eq!(got, Ok(Some(*h)));
            off += HEADER_LEN + h.length as usize;
        }
        prop_assert_eq!(off, buf.len());
        prop_assert_eq!(Header::decode(&buf[off..], max), Ok(None));

        for cut in cuts {
            let p = cut.index(buf.len() + 1);
            // The frame this cut falls in (or just after).
            let k = starts.iter().rposition(|&s| s <= p).unwrap_or(0);
            let s = starts[k];
            let got = Header::decode(&buf[s..p], max);
            if p - s < HEADER_LEN {
                prop_assert_eq!(got, Ok(None));
            } else {
                prop_assert_eq!(got, Ok(Some(frames[k].0)));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Message payloads

#[derive(Serialize)]
struct Note {
    id: u32,
    name: String,
}

#[derive(Serialize)]
struct Record {
    level: u8,
    target: String,
    message: String,
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn message_round_trips(v in any::<(u32, String, Vec<u8>, Option<i64>)>()) {
        let m = Message::encode(&v).unwrap();
        prop_assert_eq!(m.encoding, Encoding::MsgPack);
        prop_assert!(!m.is_dead());
        prop_assert_eq!(m.decode::<(u32, String, Vec<u8>, Option<i64>)>().unwrap(), v.clone());
        // Also as bytes (serde_bytes) rather than a sequence of integers.
        let (a, b, c, d) = v;
        let w = (a, b, ByteBuf::from(c), d);
        let m = Message::encode(&w).unwrap();
        prop_assert_eq!(m.decode::<(u32, String, ByteBuf, Option<i64>)>().unwrap(), w);
    }

    #[test]
    fn dead_message_is_always_a_channel_error(
        reason in any::<String>(),
        dst in any::<u32>(),
        h in any::<u32>(),
    ) {
        let m = Message::dead(reason.clone()).to(dst, h);
        prop_assert!(m.is_dead());
        prop_assert_eq!(m.dead_reason(), Some(reason.clone()));
        fn check<T: std::fmt::Debug>(
            r: mitogen::Result<T>,
            reason: &str,
        ) -> Result<(), TestCaseError> {
            match r {
                Err(Error::Channel(e)) => prop_assert_eq!(e.reason(), reason),
                other => prop_assert!(false, "expected a channel error, got {:?}", other),
            }
            Ok(())
        }
        check(m.decode::<u32>(), &reason)?;
        check(m.decode::<String>(), &reason)?;
        check(m.decode::<()>(), &reason)?;
        check(m.decode::<(u32, String, Vec<u8>, Option<i64>)>(), &reason)?;
        check(m.bytes().map(<[u8]>::to_vec), &reason)?;
    }

    /// Arbitrary payload bytes under any encoding: decoding never panics, a
    /// dead payload is a channel error, a non-MsgPack payload never decodes.
    #[test]
    fn decoding_arbitrary_payloads_never_panics(
        data in vec(any::<u8>(), 0..64),
        e in encoding(),
    ) {
        let mut m = Message::raw(data.clone());
        m.encoding = e;
        let r1 = m.decode::<(u32, String, Vec<u8>, Option<i64>)>();
        let r2 = m.decode::<ByteBuf>();
        let r3 = m.bytes().map(<[u8]>::to_vec);
        match e {
            Encoding::MsgPack | Encoding::Raw => prop_assert_eq!(r3.unwrap(), data),
            Encoding::Dead => {
                prop_assert!(matches!(r1, Err(Error::Channel(_))));
                prop_assert!(matches!(r2, Err(Error::Channel(_))));
                prop_assert!(matches!(r3, Err(Error::Channel(_))));
            }
            Encoding::CallError => {
                prop_assert!(matches!(r1, Err(Error::Call(_))));
                prop_assert!(matches!(r2, Err(Error::Call(_))));
                prop_assert!(matches!(r3, Err(Error::Call(_))));
            }
        }
        if e == Encoding::Raw {
            prop_assert!(r1.is_err());
            prop_assert!(r2.is_err());
        }
    }
}

// ---------------------------------------------------------------------------
// Router intake of hostile frames

fn reserved_handle() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => prop::sample::select(vec![
            handle::CALL_FUNCTION,
            handle::FORWARD_LOG,
            handle::ADD_ROUTE,
            handle::DEL_ROUTE,
            handle::ALLOCATE_ID,
            handle::SHUTDOWN,
            handle::HANDSHAKE,
        ]),
        1 => Just(handle::FIRST_DYNAMIC),
        1 => any::<u32>(),
    ]
}

/// Payloads shaped like what the control handlers expect, plus noise.
/// Route removals never name context 1: that would cut the intake's only
/// route and make every later case a no-op.
fn control_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => vec(any::<u8>(), 0..128),
        1 => (2u32..64, ".{0,16}").prop_map(|(id, name)| msgpack(&Note { id, name })),
        1 => (2u32..64, ".{0,16}").prop_map(|(id, why)| msgpack(&(id, why))),
        1 => Just(msgpack(&())),
        1 => (any::<u8>(), ".{0,16}", ".{0,32}").prop_map(|(level, target, message)| {
            msgpack(&Record { level, target, message })
        }),
        1 => any::<(u32, String, Option<i64>)>().prop_map(|v| msgpack(&v)),
    ]
}

fn msgpack<T: Serialize>(v: &T) -> Vec<u8> {
    Message::encode(v).unwrap().data
}

/// A frame with a valid header that mostly passes the intake's source
/// checks (src 1, auth 1, for the router itself), so it reaches the
/// handlers of the reserved handles.
fn intake_frame() -> impl Strategy<Value = Vec<u8>> {
    let src = prop_oneof![6 => Just(1u32), 1 => Just(0u32), 1 => any::<u32>()];
    let dst = prop_oneof![6 => Just(0u32), 1 => Just(1u32), 1 => any::<u32>()];
    let reply_to = prop_oneof![Just(0u32), 1000u32..1100, any::<u32>()];
    let enc = prop_oneof![4 => Just(Encoding::MsgPack), 1 => encoding()];
    (
        enc,
        dst,
        src,
        prop::option::weighted(0.8, Just(())),
        any::<u32>(),
        reserved_handle(),
        reply_to,
        control_payload(),
    )
        .prop_map(
            |(encoding, dst_id, src_id, same_auth, other_auth, handle, reply_to, body)| {
                let h = Header {
                    encoding,
                    dst_id,
                    src_id,
                    auth_id: if same_auth.is_some() {
                        src_id
                    } else {
                        other_auth
                    },
                    handle,
                    reply_to,
                    length: body.len() as u32,
                    ..Header::default()
                };
                wire(&h, &body)
            },
        )
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn intake_survives_noise(b in vec(any::<u8>(), 0..256)) {
        fuzz_intake(&b);
    }

    #[test]
    fn intake_survives_noise_after_magic(b in decoder_input()) {
        fuzz_intake(&b);
    }

    #[test]
    fn intake_survives_valid_frames(frames in vec(intake_frame(), 1..6)) {
        for f in &frames {
            fuzz_intake(f);
        }
        fuzz_intake(&frames.concat());
    }

    /// A stream of frames, cut at arbitrary points and fed piecewise (each
    /// piece to a fresh decoder, so most pieces are truncated frames or
    /// start mid-frame).
    #[test]
    fn intake_survives_split_streams(
        frames in vec(intake_frame(), 1..6),
        cuts in vec(any::<prop::sample::Index>(), 0..6),
        trailing in vec(any::<u8>(), 0..8),
    ) {
        let mut buf = frames.concat();
        buf.extend(trailing);
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(buf.len() + 1)).collect();
        points.push(0);
        points.push(buf.len());
        points.sort_unstable();
        points.dedup();
        for w in points.windows(2) {
            fuzz_intake(&buf[w[0]..w[1]]);
        }
        fuzz_intake(&buf);
    }
}
