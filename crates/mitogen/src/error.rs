//! Error types: one [`Error`] enum over the seed's distinct exceptions.
//!
//! Each variant wraps its own type, so code that cares about one kind of
//! failure can match on it (or convert with `?` into [`Error`]) and code that
//! does not can print the whole thing. [`CallError`] crosses the wire: it is
//! what a remote function's error or panic becomes on the caller.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Result type of this crate, with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every failure the runtime reports.
///
/// Non-exhaustive: new connection methods may add kinds of failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A remote function failed, panicked, or could not be called.
    #[error(transparent)]
    Call(#[from] CallError),
    /// A connection could not be made, or broke.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// A deadline passed.
    #[error(transparent)]
    Timeout(#[from] TimeoutError),
    /// A message could not be delivered, or a dead message arrived.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A latch was closed.
    #[error(transparent)]
    Latch(#[from] LatchError),
    /// A [`crate::Select`] was misused or is empty.
    #[error(transparent)]
    Select(#[from] SelectError),
    /// ssh, sudo, su or doas asked for a password and none was given, or
    /// the one given was refused.
    #[error(transparent)]
    Password(#[from] PasswordError),
    /// ssh refused the target's host key: unknown under `enforce`, or
    /// changed.
    #[error(transparent)]
    HostKey(#[from] HostKeyError),
    /// A value could not be encoded here, or a payload received here could
    /// not be decoded into the type asked for. Nothing remote failed (that
    /// is [`Error::Call`]).
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The target cannot be reached by its method's program, does not
    /// exist, or cannot run the agent (see [`TargetErrorKind`]).
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A file transfer ([`crate::files`]) failed: the path, what was
    /// being done, and why.
    #[error(transparent)]
    File(#[from] crate::files::error::FileError),
}

/// A remote function returned an error, panicked, or was not callable.
///
/// Carries the remote error's type name, its message, the messages of its
/// `source()` chain, and a backtrace when the remote side captured one
/// (`RUST_BACKTRACE=1` in its environment).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallError {
    type_name: String,
    message: String,
    chain: Vec<String>,
    backtrace: Option<String>,
}

impl CallError {
    /// Builds an error from its parts.
    pub fn new(type_name: impl Into<String>, message: impl Into<String>) -> CallError {
        CallError {
            type_name: type_name.into(),
            message: message.into(),
            chain: Vec::new(),
            backtrace: None,
        }
    }

    /// Captures `err`, whose Rust type is `type_name`, with its source chain
    /// and, when enabled by the environment, a backtrace of this point.
    pub fn from_error(type_name: &str, err: &(dyn std::error::Error + 'static)) -> CallError {
        let mut chain = Vec::new();
        let mut cur = err.source();
        while let Some(e) = cur {
            chain.push(e.to_string());
            cur = e.source();
        }
        CallError {
            type_name: type_name.to_string(),
            message: err.to_string(),
            chain,
            backtrace: crate::panics::backtrace(),
        }
    }

    /// Describes a panic payload caught while running a remote function:
    /// its message names the function and where it panicked (`file:line`,
    /// noted by the runtime's panic hook), whatever `RUST_BACKTRACE` says.
    pub fn from_panic(function: &str, payload: &(dyn std::any::Any + Send)) -> CallError {
        let what = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "panic with a non-string payload".to_string()
        };
        let caught = crate::panics::take_last();
        let at = caught
            .as_ref()
            .map_or("an unknown location", |c| c.location.as_str());
        CallError {
            type_name: "panic".to_string(),
            message: format!("{function} panicked at {at}: {what}"),
            chain: Vec::new(),
            backtrace: caught.and_then(|c| c.backtrace),
        }
    }

    /// Rust type name of the remote error (`"panic"` for a panic).
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The remote error's own message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Messages of the remote error's `source()` chain, outermost first.
    pub fn chain(&self) -> &[String] {
        &self.chain
    }

    /// Remote backtrace, when the remote side captured one.
    pub fn backtrace(&self) -> Option<&str> {
        self.backtrace.as_deref()
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.type_name, self.message)?;
        for c in &self.chain {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

impl std::error::Error for CallError {}

/// A connection failed to start, or an established link failed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{message}")]
pub struct StreamError {
    message: String,
    kind: Option<std::io::ErrorKind>,
    #[source]
    source: Option<std::sync::Arc<std::io::Error>>,
}

impl PartialEq for StreamError {
    fn eq(&self, other: &StreamError) -> bool {
        self.message == other.message && self.kind() == other.kind()
    }
}

impl Eq for StreamError {}

impl StreamError {
    /// Builds an error with a message a user can act on.
    pub fn new(message: impl Into<String>) -> StreamError {
        StreamError {
            message: message.into(),
            kind: None,
            source: None,
        }
    }

    /// An error caused by `cause`: its [`std::io::ErrorKind`] is kept and
    /// it is this error's [`std::error::Error::source`].
    pub fn io(message: impl Into<String>, cause: std::io::Error) -> StreamError {
        StreamError {
            message: message.into(),
            kind: Some(cause.kind()),
            source: Some(std::sync::Arc::new(cause)),
        }
    }

    /// An error of a known kind with no underlying cause (a link that is
    /// full is [`std::io::ErrorKind::WouldBlock`]).
    pub fn with_kind(message: impl Into<String>, kind: std::io::ErrorKind) -> StreamError {
        StreamError {
            message: message.into(),
            kind: Some(kind),
            source: None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The kind of I/O failure behind this error, when there is one.
    pub fn kind(&self) -> Option<std::io::ErrorKind> {
        self.kind
    }
}

/// A password was needed and missing, or was refused (the seed's
/// `PasswordError` of ssh, sudo, su and doas). The message never contains
/// the password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PasswordError {
    message: String,
}

impl PasswordError {
    /// Builds an error with a message a user can act on.
    pub fn new(message: impl Into<String>) -> PasswordError {
        PasswordError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// What is wrong with a target (see [`TargetError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum TargetErrorKind {
    /// The method's program (`docker`, `lxc-attach`, `kubectl`, …) was not
    /// found or could not be executed.
    ToolNotFound,
    /// The container, pod, jail or machine does not exist (or is not
    /// running).
    NotFound,
    /// The target runs another architecture than the agent was built for.
    WrongArchitecture,
    /// The target has no usable `/bin/sh`.
    NoShell,
    /// The agent is dynamically linked, the target lacks its loader, and
    /// none could be brought (see `agent_binary`).
    NoLoader,
}

/// A target that cannot be reached by its method's program, does not
/// exist, or cannot run the agent. The message names the tool, the target
/// and the tool's own words.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    kind: TargetErrorKind,
    message: String,
}

impl TargetError {
    /// Builds an error of `kind` with a message a user can act on.
    pub fn new(kind: TargetErrorKind, message: impl Into<String>) -> TargetError {
        TargetError {
            kind,
            message: message.into(),
        }
    }

    /// What is wrong.
    pub fn kind(&self) -> TargetErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// ssh refused the target's host key (the seed's `HostKeyError`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HostKeyError {
    message: String,
    changed: bool,
}

impl HostKeyError {
    /// Builds an error; `changed` tells a changed key from an unknown one.
    pub fn new(message: impl Into<String>, changed: bool) -> HostKeyError {
        HostKeyError {
            message: message.into(),
            changed,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `true` when the host presented a key other than the recorded one;
    /// `false` when no key was recorded (under `enforce`).
    pub fn changed(&self) -> bool {
        self.changed
    }
}

/// Which way a [`CodecError`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecOp {
    /// A value to send could not be serialized.
    Encode,
    /// A payload could not be read as the type asked for.
    Decode,
}

/// A value could not be encoded into a message, or a message's payload
/// could not be decoded into the type asked for — in this process.
///
/// Keeps the serializer's error as its [`std::error::Error::source`].
/// Compare [`CallError`]: the remote side failed (including when *it*
/// could not encode its result or decode the arguments it was sent).
#[derive(Debug, thiserror::Error)]
#[error("cannot {} {type_name}: {source}", match .op { CodecOp::Encode => "encode", CodecOp::Decode => "decode into" })]
pub struct CodecError {
    op: CodecOp,
    type_name: &'static str,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

impl CodecError {
    /// An encode or decode of `type_name` that failed with `source`.
    pub fn new(
        op: CodecOp,
        type_name: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> CodecError {
        CodecError {
            op,
            type_name,
            source: source.into(),
        }
    }

    /// Whether encoding or decoding failed.
    pub fn op(&self) -> CodecOp {
        self.op
    }

    /// The Rust type that was being encoded or decoded into.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// A blocking operation's deadline passed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {after:?} {what}")]
pub struct TimeoutError {
    what: String,
    after: Duration,
}

impl TimeoutError {
    /// `what` completes the sentence "timed out after N ...".
    pub fn new(what: impl Into<String>, after: Duration) -> TimeoutError {
        TimeoutError {
            what: what.into(),
            after,
        }
    }

    /// The time that was waited.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// What was waited for: the end of the sentence "timed out after N …".
    pub fn what(&self) -> &str {
        &self.what
    }
}

/// A message could not be delivered: a dead message, or a closed receiver.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct ChannelError {
    reason: String,
}

impl ChannelError {
    /// Builds an error carrying a dead message's reason.
    pub fn new(reason: impl Into<String>) -> ChannelError {
        ChannelError {
            reason: reason.into(),
        }
    }

    /// Why the message was dead.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A [`crate::Latch`] was closed while, or before, a thread waited on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("latch closed")]
pub struct LatchError;

/// A [`crate::Select`] cannot do what was asked: it is empty, a source
/// already belongs to a select, or selects would contain each other.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("select: {0}")]
pub struct SelectError(String);

impl SelectError {
    /// A select error saying `what`.
    pub fn new(what: impl Into<String>) -> SelectError {
        SelectError(what.into())
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.0
    }
}

/// Reasons carried by dead messages the runtime generates itself.
pub(crate) mod reasons {
    /// No receiver is registered for the handle.
    pub const NO_HANDLE: &str = "no receiver for the handle";
    /// No route to the destination context.
    pub const NO_ROUTE: &str = "no route to the destination context";
    /// A policy refused the message.
    pub const REFUSED: &str = "refused by policy";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_error_keeps_chain() {
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let outer = std::io::Error::other(Wrap(inner));
        let e = CallError::from_error("std::io::Error", &outer);
        assert_eq!(e.type_name(), "std::io::Error");
        assert_eq!(e.message(), "wrapped");
        assert_eq!(e.chain(), ["no such file"]);
        assert_eq!(e.to_string(), "std::io::Error: wrapped: no such file");
    }

    #[derive(Debug)]
    struct Wrap(std::io::Error);
    impl fmt::Display for Wrap {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl std::error::Error for Wrap {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn panic_payloads() {
        let e = CallError::from_panic("f", &"boom");
        assert_eq!(e.type_name(), "panic");
        assert!(e.message().contains("boom"));
        let e = CallError::from_panic("f", &String::from("bang"));
        assert!(e.message().contains("bang"));
    }
}
