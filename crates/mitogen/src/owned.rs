//! Decoding a payload the decoder owns: a large byte string that ends it
//! becomes the decoded value's buffer instead of being copied.
//!
//! A 1 GiB `ByteBuf` argument or result arrives as one reassembled buffer;
//! `rmp_serde::from_slice` hands its bytes to the value's visitor as a
//! borrowed slice, and `ByteBuf` copies them into fresh memory: a second
//! gigabyte, and (profiled) the slowest step of a large call, since fresh
//! memory costs a page fault per 4 KiB. When the payload is owned and
//! holds a byte string (`bin`) of at least [`STEAL_FROM`] bytes — a large
//! argument, a large result — the largest one's body is moved to the front
//! of the payload's own buffer (one in-place `memmove`, no new memory; what
//! came before and after it is copied out first, usually a few bytes) and
//! given to the visitor as an owned `Vec<u8>` (`visit_byte_buf`, which
//! `ByteBuf` and `Vec<u8>` with `serde_bytes` keep without copying; any
//! other visitor copies from it, as it did from the slice).
//!
//! How the visitor of that one value is reached without rewriting the
//! MessagePack decoder: the payload without the body is decoded by
//! `rmp_serde`, the body replaced by a short token (a random 16-byte
//! string this process never sends), through a transparent wrapper
//! ([`De`] and friends) that forwards every call and swaps the token for
//! the body when a visitor is handed it. If the token is never handed to a
//! visitor (a type that skips the field), the payload is put back together
//! and decoded the ordinary way: the result is always what `from_slice`
//! would give.

use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};
use std::cell::RefCell;
use std::sync::OnceLock;

/// A byte string at least this large is moved, not copied.
pub(crate) const STEAL_FROM: usize = 1 << 20;

const TOKEN_LEN: usize = 16;

/// Nesting bound while looking for the trailing byte string (hostile
/// payloads): deeper payloads are decoded the ordinary way.
const MAX_DEPTH: usize = 256;

fn token() -> &'static [u8; TOKEN_LEN] {
    static TOKEN: OnceLock<[u8; TOKEN_LEN]> = OnceLock::new();
    TOKEN.get_or_init(|| {
        let mut t = [0u8; TOKEN_LEN];
        // SAFETY: getrandom writes at most `t.len()` bytes into `t`.
        let n = unsafe { libc::getrandom(t.as_mut_ptr().cast(), t.len(), 0) };
        if n != TOKEN_LEN as isize {
            // Unpredictable enough without getrandom: only this process
            // ever sees the token.
            let seed = std::collections::hash_map::RandomState::new();
            for (i, c) in t.chunks_mut(8).enumerate() {
                use std::hash::BuildHasher;
                let h = seed.hash_one((i, std::process::id(), std::time::Instant::now()));
                c.copy_from_slice(&h.to_le_bytes()[..c.len()]);
            }
        }
        t
    })
}

thread_local! {
    /// The body waiting for the visitor that is handed the token.
    static BODY: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Decodes `data[at..]` (MessagePack) into `T`, moving a large trailing
/// byte string into the value (see the module doc).
pub(crate) fn from_msgpack<T: DeserializeOwned>(
    mut data: Vec<u8>,
    at: usize,
) -> Result<T, rmp_serde::decode::Error> {
    let Some((hdr, body, len)) = data.get(at..).and_then(largest_bin) else {
        return rmp_serde::from_slice(data.get(at..).unwrap_or_default());
    };
    let (hdr, body) = (at + hdr, at + body);
    // What is not the body is copied out (usually a few bytes; never the
    // body, so a payload with several large strings costs no more than
    // the ordinary decode).
    let bin_header = data[hdr..body].to_vec();
    let tail = data[body + len..].to_vec();
    let mut rest = Vec::with_capacity(hdr - at + 2 + TOKEN_LEN + tail.len());
    rest.extend_from_slice(&data[at..hdr]);
    rest.extend_from_slice(&[0xc4, TOKEN_LEN as u8]);
    rest.extend_from_slice(token());
    rest.extend_from_slice(&tail);
    data.truncate(body + len);
    data.drain(..body);
    let before = BODY.with(|b| b.replace(Some(data)));
    let decoded = T::deserialize(De(&mut rmp_serde::Deserializer::from_read_ref(&rest)));
    let left = BODY.with(|b| std::mem::replace(&mut *b.borrow_mut(), before));
    match left {
        None => decoded,
        Some(body) => {
            // Nobody took it: decode the payload as it was.
            let mut whole = rest[..hdr - at].to_vec();
            whole.extend_from_slice(&bin_header);
            whole.extend_from_slice(&body);
            whole.extend_from_slice(&tail);
            rmp_serde::from_slice(&whole)
        }
    }
}

/// The largest byte string in `b` if it has at least [`STEAL_FROM`]
/// bytes and `b` is exactly one well-formed value: (its header, its body,
/// its length).
fn largest_bin(b: &[u8]) -> Option<(usize, usize, usize)> {
    let mut largest = None;
    let end = walk(b, 0, 0, &mut largest)?;
    largest.filter(|&(_, _, len)| end == b.len() && len >= STEAL_FROM)
}

fn be(b: &[u8], at: usize, n: usize) -> Option<usize> {
    let bytes = b.get(at..at.checked_add(n)?)?;
    Some(bytes.iter().fold(0usize, |v, &x| (v << 8) | usize::from(x)))
}

/// Steps over the value at `pos`; returns the position after it. `largest`
/// is the largest byte string seen: (header, body, length).
fn walk(
    b: &[u8],
    pos: usize,
    depth: usize,
    largest: &mut Option<(usize, usize, usize)>,
) -> Option<usize> {
    if depth > MAX_DEPTH {
        return None;
    }
    let m = *b.get(pos)?;
    let after = |n: usize| pos.checked_add(n).filter(|&e| e <= b.len());
    let items = |count: usize, from: usize, largest: &mut Option<_>| {
        let mut p = from;
        for _ in 0..count {
            p = walk(b, p, depth + 1, largest)?;
        }
        Some(p)
    };
    match m {
        0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => after(1),
        0x80..=0x8f => items(2 * usize::from(m & 0x0f), pos + 1, largest),
        0x90..=0x9f => items(usize::from(m & 0x0f), pos + 1, largest),
        0xa0..=0xbf => after(1 + usize::from(m & 0x1f)),
        0xc4..=0xc6 => {
            let k: usize = 1 << (m - 0xc4);
            let len = be(b, pos + 1, k)?;
            let body = pos + 1 + k;
            let end = after((1 + k).checked_add(len)?)?;
            if largest.map_or(true, |(_, _, l)| len > l) {
                *largest = Some((pos, body, len));
            }
            Some(end)
        }
        0xc7..=0xc9 => {
            let k: usize = 1 << (m - 0xc7);
            after((2 + k).checked_add(be(b, pos + 1, k)?)?)
        }
        0xca => after(5),
        0xcb => after(9),
        0xcc..=0xcf => after(1 + (1 << (m - 0xcc))),
        0xd0..=0xd3 => after(1 + (1 << (m - 0xd0))),
        0xd4..=0xd8 => after(2 + (1 << (m - 0xd4))),
        0xd9..=0xdb => {
            let k: usize = 1 << (m - 0xd9);
            after((1 + k).checked_add(be(b, pos + 1, k)?)?)
        }
        0xdc | 0xdd => {
            let k = if m == 0xdc { 2 } else { 4 };
            items(be(b, pos + 1, k)?, pos + 1 + k, largest)
        }
        0xde | 0xdf => {
            let k = if m == 0xde { 2 } else { 4 };
            items(be(b, pos + 1, k)?.checked_mul(2)?, pos + 1 + k, largest)
        }
        0xc1 => None,
    }
}

/// The body, if `v` is the token and a body waits.
fn take_body(v: &[u8]) -> Option<Vec<u8>> {
    if v != token() {
        return None;
    }
    BODY.with(|b| b.borrow_mut().take())
}

/// A deserializer that forwards everything, wrapping visitors in [`Vis`].
struct De<D>(D);

macro_rules! forward_de {
    ($($name:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $name<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, D::Error> {
            self.0.$name($($arg,)* Vis(visitor))
        })*
    };
}

impl<'de, D: de::Deserializer<'de>> de::Deserializer<'de> for De<D> {
    type Error = D::Error;
    forward_de! {
        deserialize_any(); deserialize_bool(); deserialize_i8(); deserialize_i16();
        deserialize_i32(); deserialize_i64(); deserialize_i128(); deserialize_u8();
        deserialize_u16(); deserialize_u32(); deserialize_u64(); deserialize_u128();
        deserialize_f32(); deserialize_f64(); deserialize_char(); deserialize_str();
        deserialize_string(); deserialize_bytes(); deserialize_byte_buf();
        deserialize_option(); deserialize_unit(); deserialize_seq(); deserialize_map();
        deserialize_identifier(); deserialize_ignored_any();
        deserialize_unit_struct(name: &'static str);
        deserialize_newtype_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// A visitor that forwards everything, swapping the token for the body.
struct Vis<V>(V);

macro_rules! forward_vis {
    ($($name:ident($ty:ty);)*) => {
        $(fn $name<E: de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.0.$name(v)
        })*
    };
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Vis<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.expecting(f)
    }

    forward_vis! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
        visit_str(&str); visit_borrowed_str(&'de str); visit_string(String);
        visit_byte_buf(Vec<u8>);
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        match take_body(v) {
            Some(body) => self.0.visit_byte_buf(body),
            None => self.0.visit_bytes(v),
        }
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Self::Value, E> {
        match take_body(v) {
            Some(body) => self.0.visit_byte_buf(body),
            None => self.0.visit_borrowed_bytes(v),
        }
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        self.0.visit_unit()
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_some(De(d))
    }

    fn visit_newtype_struct<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.0.visit_newtype_struct(De(d))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(Access(seq))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(Access(map))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.0.visit_enum(Access(data))
    }
}

/// A seed that deserializes through [`De`].
struct Seed<S>(S);

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for Seed<S> {
    type Value = S::Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.0.deserialize(De(d))
    }
}

/// Sequence, map, enum and variant access, forwarding through [`Seed`].
struct Access<A>(A);

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, A::Error> {
        self.0.next_element_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for Access<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.0.next_key_seed(Seed(seed))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, A::Error> {
        self.0.next_value_seed(Seed(seed))
    }

    fn size_hint(&self) -> Option<usize> {
        self.0.size_hint()
    }
}

impl<'de, A: de::EnumAccess<'de>> de::EnumAccess<'de> for Access<A> {
    type Error = A::Error;
    type Variant = Access<A::Variant>;

    fn variant_seed<T: DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<(T::Value, Self::Variant), A::Error> {
        let (v, rest) = self.0.variant_seed(Seed(seed))?;
        Ok((v, Access(rest)))
    }
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for Access<A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.0.unit_variant()
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, A::Error> {
        self.0.newtype_variant_seed(Seed(seed))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        self.0.tuple_variant(len, Vis(visitor))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        self.0.struct_variant(fields, Vis(visitor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use serde_bytes::ByteBuf;

    fn enc<T: Serialize>(v: &T) -> Vec<u8> {
        let mut b = vec![0xaa, 0xbb]; // bytes before `at`, kept out
        v.serialize(&mut rmp_serde::Serializer::new(&mut b).with_struct_map())
            .unwrap();
        b
    }

    #[test]
    fn the_largest_byte_string_is_moved_not_copied() {
        let big: Vec<u8> = (0..STEAL_FROM + 5).map(|i| i as u8).collect();
        let small = ByteBuf::from(vec![4u8; STEAL_FROM]);
        let data = enc(&(7u32, small.clone(), ByteBuf::from(big.clone()), "x"));
        let ptr = data.as_ptr() as usize;
        let (n, s, b, x): (u32, ByteBuf, ByteBuf, String) = from_msgpack(data, 2).unwrap();
        assert_eq!((n, &s, x.as_str()), (7, &small, "x"));
        assert_eq!(b.as_slice(), &big[..]);
        assert_eq!(b.as_ptr() as usize, ptr, "the payload's own buffer");
    }

    #[test]
    fn every_other_shape_decodes_as_from_slice_does() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum E {
            A(u8),
            B { x: Vec<String> },
            C,
        }
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct S {
            e: Vec<E>,
            o: Option<(i64, f64)>,
            m: std::collections::BTreeMap<String, ByteBuf>,
            tail: ByteBuf,
        }
        let big = ByteBuf::from(vec![9u8; STEAL_FROM]);
        let mut m = std::collections::BTreeMap::new();
        m.insert("k".to_string(), ByteBuf::from(vec![1u8; STEAL_FROM + 1]));
        let v = S {
            e: vec![
                E::A(1),
                E::B {
                    x: vec!["y".into()],
                },
                E::C,
            ],
            o: Some((-3, 0.5)),
            m,
            tail: big,
        };
        let got: S = from_msgpack(enc(&v), 2).unwrap();
        assert_eq!(got, v);
        // Small, not trailing, or not read as bytes: decoded as before.
        let small = enc(&(ByteBuf::from(vec![1u8; 10]),));
        let got: (ByteBuf,) = from_msgpack(small, 2).unwrap();
        assert_eq!(got.0.len(), 10);
        let not_last = enc(&(ByteBuf::from(vec![1u8; STEAL_FROM]), 5u8));
        let got: (ByteBuf, u8) = from_msgpack(not_last, 2).unwrap();
        assert_eq!((got.0.len(), got.1), (STEAL_FROM, 5));
        // A value that skips the byte string: the token is never seen.
        #[derive(Deserialize)]
        struct Skips {
            n: u8,
        }
        #[derive(Serialize)]
        struct Has {
            n: u8,
            b: ByteBuf,
        }
        let data = enc(&Has {
            n: 4,
            b: ByteBuf::from(vec![2u8; STEAL_FROM]),
        });
        let got: Skips = from_msgpack(data, 2).unwrap();
        assert_eq!(got.n, 4);
        // rmpv reads the bytes through the same visitor.
        let data = enc(&(1u8, ByteBuf::from(vec![3u8; STEAL_FROM])));
        let got: rmpv::Value = from_msgpack(data, 2).unwrap();
        assert_eq!(got[1].as_slice().map(<[u8]>::len), Some(STEAL_FROM));
    }

    #[test]
    fn malformed_payloads_fail_like_from_slice() {
        for junk in [
            &b""[..],
            b"\xc1",
            b"\xdd\xff\xff\xff\xff",
            b"\xc6\x00\x20\x00\x00ab",
        ] {
            let mut data = vec![0u8, 0];
            data.extend_from_slice(junk);
            assert!(from_msgpack::<(ByteBuf,)>(data, 2).is_err(), "{junk:?}");
        }
        // Deeply nested arrays do not overflow the walk.
        let mut deep = vec![0x91u8; 100_000];
        deep.push(0xc0);
        assert!(largest_bin(&deep).is_none());
    }
}
