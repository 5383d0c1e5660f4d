//! Values whose contents must not reach a log: [`Secret`] (a string never
//! shown) and [`Blob`] (bytes shown as their length).
//!
//! Why types rather than care: every place that prints a value (a
//! builder's `Debug`, an error message, a `tracing` field, a panic
//! message of an `assert_eq!`) goes through `Debug` or `Display`, so the
//! type is the one place where the contents can be kept out of all of
//! them at once. On the wire both are what they wrap (a MessagePack
//! string, a MessagePack `bin`), so the other side may decode a
//! `Secret` as a `String` and a `Blob` as bytes, and the reverse.
//!
//! A `Secret`'s memory is overwritten with zeros when it is dropped
//! (`zeroize`). Copies made before it became a `Secret` (the `String` it
//! was built from, a message buffer it was decoded from) are not; the
//! point is to keep secrets out of output, and short-lived in memory
//! where it costs nothing.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroize;

/// A string that is never shown: its `Debug` and `Display` print
/// `<redacted>`, it is zeroed in memory when dropped, and it travels as an
/// ordinary string. Use it for passwords and tokens in call arguments and
/// results.
///
/// ```
/// use mitogen::Secret;
///
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "Secret(<redacted>) <redacted>");
/// assert_eq!(s.expose(), "hunter2");
/// // On the wire it is a string: the other side may decode either type.
/// let m = mitogen::Message::encode(&s)?;
/// assert_eq!(m.decode::<String>()?, "hunter2");
/// # Ok::<(), mitogen::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `s`. The value `s` came from (if it was a `String`) is moved,
    /// not copied.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself: the one way to read it, easy to find in review.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `true` when the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the secret replaced by
    /// `<redacted>`: for transcripts (a terminal dialog, a tool's output)
    /// that end up in an error message.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "<redacted>")
        }
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_string())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Bytes shown as their length: `Debug` prints `Blob(1048576 bytes)`, not
/// a megabyte of numbers in a log line. It travels as one MessagePack
/// `bin` (like [`crate::ByteBuf`]); use it for file contents and other
/// bulk arguments and results.
///
/// ```
/// use mitogen::Blob;
///
/// let b = Blob::from(vec![7u8; 1000]);
/// assert_eq!(format!("{b:?}"), "Blob(1000 bytes)");
/// assert_eq!(b.len(), 1000);
/// assert_eq!(b[0], 7);
/// let m = mitogen::Message::encode(&b)?;
/// assert_eq!(m.decode::<mitogen::ByteBuf>()?.len(), 1000);
/// # Ok::<(), mitogen::Error>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Blob(Vec<u8>);

impl Blob {
    /// Wraps `bytes`.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Blob {
        Blob(bytes.into())
    }

    /// The bytes, as a vector.
    pub fn into_vec(self) -> Vec<u8> {
        self.0
    }
}

impl std::ops::Deref for Blob {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Blob {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

impl From<Vec<u8>> for Blob {
    fn from(v: Vec<u8>) -> Blob {
        Blob(v)
    }
}

impl From<&[u8]> for Blob {
    fn from(v: &[u8]) -> Blob {
        Blob(v.to_vec())
    }
}

impl From<Blob> for Vec<u8> {
    fn from(b: Blob) -> Vec<u8> {
        b.0
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl fmt::Display for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Blob, D::Error> {
        serde_bytes::ByteBuf::deserialize(d).map(|b| Blob(b.into_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_is_never_shown() {
        let s = Secret::new("hunter2");
        for shown in [
            format!("{s:?}"),
            format!("{s}"),
            format!("{:?}", Some(s.clone())),
            format!("{:#?}", vec![s.clone()]),
        ] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(s.scrub("a hunter2 b"), "a <redacted> b");
        assert_eq!(Secret::default().scrub("as is"), "as is");
    }

    #[test]
    fn secret_travels_as_a_string() {
        let bytes = rmp_serde::to_vec(&Secret::from("pw")).unwrap();
        assert_eq!(bytes, rmp_serde::to_vec("pw").unwrap());
        let back: Secret = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.expose(), "pw");
        assert!(rmp_serde::from_slice::<Secret>(&rmp_serde::to_vec(&5u8).unwrap()).is_err());
    }

    #[test]
    fn blob_shows_its_length_and_travels_as_bin() {
        let b = Blob::new(b"secret bytes".to_vec());
        assert_eq!(format!("{b:?}"), "Blob(12 bytes)");
        assert_eq!(format!("{b}"), "<12 bytes>");
        let bytes = rmp_serde::to_vec(&b).unwrap();
        assert_eq!(bytes[0], 0xc4, "a MessagePack bin 8");
        let back: Blob = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back, b);
        assert_eq!(back.into_vec(), b"secret bytes");
    }
}
