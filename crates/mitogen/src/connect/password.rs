//! [`Password`]: a string that is typed into a terminal and shown nowhere
//! else.
//!
//! Passwords reach a transport only through its terminal (never argv or
//! the environment, which other users can read through `ps` and `/proc`).
//! They do travel inside a `via` call to the intermediate context that
//! types them, as message payload, which is never logged. Everything that
//! prints a builder or an error goes through `Debug`/`Display`, which this
//! type redacts: it is a [`crate::Secret`] (zeroed when dropped too).

use crate::redact::Secret;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A password: its `Debug` output is redacted, and it is never put in
/// argv, the environment or a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Password(Secret);

impl Password {
    pub(crate) fn new(s: impl Into<String>) -> Password {
        Password(Secret::new(s))
    }

    /// The bytes to type, newline included (zeroed when dropped).
    pub(crate) fn line(&self) -> zeroize::Zeroizing<Vec<u8>> {
        let mut v = zeroize::Zeroizing::new(Vec::with_capacity(self.0.expose().len() + 1));
        v.extend_from_slice(self.0.expose().as_bytes());
        v.push(b'\n');
        v
    }

    /// Replaces any occurrence of the password in `text` (belt and braces
    /// for transcripts that end up in error messages).
    pub(crate) fn scrub(&self, text: &str) -> String {
        self.0.scrub(text)
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let p = Password::new("hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
        assert!(!format!("{:?}", Some(p.clone())).contains("hunter2"));
        assert_eq!(p.scrub("x hunter2 y"), "x <redacted> y");
        assert_eq!(*p.line(), b"hunter2\n");
    }
}
