//! [`Password`]: a string that is typed into a terminal and shown nowhere
//! else.
//!
//! Passwords reach a transport only through its terminal (never argv or
//! the environment, which other users can read through `ps` and `/proc`).
//! They do travel inside a `via` call to the intermediate context that
//! types them, as message payload, which is never logged. Everything that
//! prints a builder or an error goes through `Debug`/`Display`, which this
//! type redacts.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A password: its `Debug` output is redacted, and it is never put in
/// argv, the environment or a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Password(String);

impl Password {
    pub(crate) fn new(s: impl Into<String>) -> Password {
        Password(s.into())
    }

    /// The bytes to type, newline included.
    pub(crate) fn line(&self) -> Vec<u8> {
        let mut v = self.0.as_bytes().to_vec();
        v.push(b'\n');
        v
    }

    /// Replaces any occurrence of the password in `text` (belt and braces
    /// for transcripts that end up in error messages).
    pub(crate) fn scrub(&self, text: &str) -> String {
        if self.0.is_empty() {
            text.to_string()
        } else {
            text.replace(&self.0, "<password>")
        }
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
        assert_eq!(p.scrub("x hunter2 y"), "x <password> y");
        assert_eq!(p.line(), b"hunter2\n");
    }
}
