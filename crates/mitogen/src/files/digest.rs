//! The checksum a transfer is verified with, and the one place that
//! knows both algorithms.
//!
//! Every byte of a transfer is hashed twice, once on each end, so the
//! hash is a large share of a local transfer's CPU: BLAKE3 ran at about
//! 3 GB/s a core here, and hashing was a third of a local put's CPU time
//! (cat | cat does no such work). XXH3-128 does the same job, catching
//! corruption and a source that changed under the reader, at memory
//! speed; it is what rsync (3.2 on) verifies transfers with by default.
//! It is not built to resist a *crafted* collision, which matters in one
//! place only: skipping a destination that hashes the same as the
//! source. Whoever may write that file can make it collide with a known
//! source under XXH3, so that the copy is skipped and their file kept;
//! under [`Checksum::Blake3`] they cannot.

use serde::{Deserialize, Serialize};
use std::io::{self, Read};

/// Which checksum verifies a transfer (and decides what is identical or
/// resumable). Both ends use the one the caller chose
/// ([`super::Options::checksum`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Checksum {
    /// XXH3-128: at memory speed. It finds accidents (corruption, a
    /// source that changed while it was read), not an adversary who may
    /// write the destination and knows the source.
    #[default]
    Xxh3,
    /// BLAKE3: cryptographic, about ten times the CPU of XXH3. Choose it
    /// when someone untrusted may write files at the destination and
    /// identical files are skipped.
    Blake3,
}

impl Checksum {
    /// Bytes of a digest.
    pub(crate) fn len(self) -> usize {
        match self {
            Checksum::Xxh3 => 16,
            Checksum::Blake3 => 32,
        }
    }
}

/// The longest digest of any [`Checksum`].
pub(crate) const MAX_LEN: usize = 32;

/// A running hash of either kind.
pub(crate) enum Hasher {
    Xxh3(Box<twox_hash::XxHash3_128>),
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    pub(crate) fn new(c: Checksum) -> Hasher {
        match c {
            Checksum::Xxh3 => Hasher::Xxh3(Box::new(twox_hash::XxHash3_128::new())),
            Checksum::Blake3 => Hasher::Blake3(Box::default()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Xxh3(h) => h.write(bytes),
            Hasher::Blake3(h) => {
                h.update(bytes);
            }
        }
    }

    pub(crate) fn reset(&mut self) {
        match self {
            Hasher::Xxh3(h) => **h = twox_hash::XxHash3_128::new(),
            Hasher::Blake3(h) => {
                h.reset();
            }
        }
    }

    /// Hashes what `r` gives, at most `limit` bytes, up to its end: the
    /// count hashed (short when `r` ended first).
    pub(crate) fn update_from(&mut self, r: &mut impl Read, limit: u64) -> io::Result<u64> {
        let mut buf = vec![0u8; (1 << 20).min(limit) as usize];
        let mut done = 0;
        while done < limit {
            let k = (limit - done).min(buf.len() as u64) as usize;
            let n = match r.read(&mut buf[..k]) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.update(&buf[..n]);
            done += n as u64;
        }
        Ok(done)
    }

    /// The digest of what was hashed so far (hashing may go on).
    pub(crate) fn digest(&self) -> Digest {
        let mut d = Digest {
            buf: [0; MAX_LEN],
            len: 0,
        };
        match self {
            Hasher::Xxh3(h) => {
                d.buf[..16].copy_from_slice(&h.finish_128().to_be_bytes());
                d.len = 16;
            }
            Hasher::Blake3(h) => {
                d.buf.copy_from_slice(h.finalize().as_bytes());
                d.len = 32;
            }
        }
        d
    }
}

/// A finished digest.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Digest {
    buf: [u8; MAX_LEN],
    len: usize,
}

impl Digest {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_gives_its_reference_digest_across_updates() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for c in [Checksum::Xxh3, Checksum::Blake3] {
            let mut h = Hasher::new(c);
            h.update(b"not this");
            h.reset();
            for piece in data.chunks(65_537) {
                h.update(piece);
            }
            let want = match c {
                Checksum::Xxh3 => twox_hash::XxHash3_128::oneshot(&data)
                    .to_be_bytes()
                    .to_vec(),
                Checksum::Blake3 => blake3::hash(&data).as_bytes().to_vec(),
            };
            assert_eq!(h.digest().as_bytes(), &want[..], "{c:?}");
            assert_eq!(h.digest().as_bytes().len(), c.len());
            // From a reader: a limit short of its end, then past it.
            let mut from = Hasher::new(c);
            let mut r = &data[..];
            assert_eq!(from.update_from(&mut r, 100_000).unwrap(), 100_000);
            assert_eq!(from.update_from(&mut r, u64::MAX).unwrap(), 200_000);
            assert_eq!(from.digest().as_bytes(), &want[..], "{c:?} from a reader");
        }
    }
}
