//! [`FileError`]: why a transfer failed, naming the path, in a form that
//! crosses the wire unchanged.
//!
//! A failure in another context reaches the caller as the same typed
//! value (not a [`crate::CallError`] string): the service methods answer
//! with a `Result` *value*, and the operating-system error number travels
//! with it, so [`FileError::io_kind`] and `source()` work on the caller as
//! they did where the failure happened.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What kind of failure a [`FileError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FileErrorKind {
    /// The path does not exist.
    NotFound,
    /// The operating system refused access.
    PermissionDenied,
    /// No space (or quota) left on the receiving file system.
    DiskFull,
    /// A component of the path that must be a directory is not one.
    NotADirectory,
    /// A directory is where a file was to be written (or the reverse).
    IsADirectory,
    /// The bytes that arrived do not hash to what the sender read.
    ChecksumMismatch,
    /// The source changed (size) while it was being sent.
    Changed,
    /// Another transfer is writing the same destination right now.
    Busy,
    /// Not a regular file, directory or symbolic link (a device, a
    /// socket, a FIFO): not transferred.
    Unsupported,
    /// The transfer itself broke: the other side disconnected, failed or
    /// stopped answering. A partial file may be kept for resuming.
    Interrupted,
    /// Any other failure (its message and `io_kind` say more).
    Other,
}

/// A file transfer failed: what was being done, to which path, in which
/// context, and why.
#[derive(Clone, Serialize, Deserialize)]
pub struct FileError {
    kind: FileErrorKind,
    op: String,
    #[serde(with = "serde_bytes")]
    path: Vec<u8>,
    context: u32,
    message: String,
    os_code: Option<i32>,
    /// The operating system's error, rebuilt from `os_code` on first use
    /// (so it exists on the caller's side too).
    #[serde(skip)]
    cause: std::sync::OnceLock<std::sync::Arc<io::Error>>,
}

impl FileError {
    /// An error of `kind` while doing `op` on `path`, explained by `message`.
    pub(crate) fn new(
        kind: FileErrorKind,
        op: &str,
        path: &Path,
        message: impl Into<String>,
    ) -> FileError {
        use std::os::unix::ffi::OsStrExt;
        FileError {
            kind,
            op: op.to_string(),
            path: path.as_os_str().as_bytes().to_vec(),
            context: crate::context_id(),
            message: message.into(),
            os_code: None,
            cause: std::sync::OnceLock::new(),
        }
    }

    /// The error `e` of the operating system while doing `op` on `path`.
    pub(crate) fn io(op: &str, path: &Path, e: &io::Error) -> FileError {
        let kind = match e.raw_os_error() {
            Some(libc::ENOENT) => FileErrorKind::NotFound,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                FileErrorKind::PermissionDenied
            }
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => FileErrorKind::DiskFull,
            Some(libc::ENOTDIR) => FileErrorKind::NotADirectory,
            Some(libc::EISDIR) => FileErrorKind::IsADirectory,
            _ => match e.kind() {
                io::ErrorKind::NotFound => FileErrorKind::NotFound,
                io::ErrorKind::PermissionDenied => FileErrorKind::PermissionDenied,
                _ => FileErrorKind::Other,
            },
        };
        let mut err = FileError::new(kind, op, path, e.to_string());
        err.os_code = e.raw_os_error();
        err
    }

    /// A transfer that broke (see [`FileErrorKind::Interrupted`]).
    pub(crate) fn interrupted(op: &str, path: &Path, why: impl fmt::Display) -> FileError {
        FileError::new(FileErrorKind::Interrupted, op, path, why.to_string())
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> FileErrorKind {
        self.kind
    }

    /// The path concerned, in the context named by [`FileError::context_id`].
    pub fn path(&self) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        PathBuf::from(std::ffi::OsStr::from_bytes(&self.path))
    }

    /// What was being done (`"open"`, `"write"`, `"rename"`, …).
    pub fn op(&self) -> &str {
        &self.op
    }

    /// The id of the context where it failed.
    pub fn context_id(&self) -> u32 {
        self.context
    }

    /// The operating system's error kind, when the operating system
    /// reported the failure.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.os_code.map(|c| io::Error::from_raw_os_error(c).kind())
    }

    /// The operating system's error number, when it reported the failure.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.os_code
    }

    /// The explanation (the operating system's message, or ours).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, seen as the failure of a transfer to `context`
    /// (used where a descendant's error is reported for a whole subtree).
    pub(crate) fn with_op(mut self, op: &str) -> FileError {
        self.op = op.to_string();
        self
    }
}

impl fmt::Debug for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileError")
            .field("kind", &self.kind)
            .field("op", &self.op)
            .field("path", &self.path())
            .field("context", &self.context)
            .field("message", &self.message)
            .field("os_code", &self.os_code)
            .finish()
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} in context {}: {}",
            self.op,
            self.path().display(),
            self.context,
            self.message
        )
    }
}

impl std::error::Error for FileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let code = self.os_code?;
        let cause = self
            .cause
            .get_or_init(|| std::sync::Arc::new(io::Error::from_raw_os_error(code)));
        Some(&**cause)
    }
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        let kind = e.io_kind().unwrap_or(io::ErrorKind::Other);
        io::Error::new(kind, e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_kind_across_the_wire() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let f = FileError::io("write", Path::new("/x/y"), &e);
        assert_eq!(f.kind(), FileErrorKind::DiskFull);
        let bytes = rmp_serde::to_vec(&f).expect("encodes");
        let back: FileError = rmp_serde::from_slice(&bytes).expect("decodes");
        assert_eq!(back.kind(), FileErrorKind::DiskFull);
        assert_eq!(back.path(), PathBuf::from("/x/y"));
        assert_eq!(back.raw_os_error(), Some(libc::ENOSPC));
        assert!(back.to_string().contains("/x/y"), "{back}");
        let cause = std::error::Error::source(&back).expect("a cause");
        assert!(cause.to_string().contains("space"), "{cause}");
        for (code, kind) in [
            (libc::ENOENT, FileErrorKind::NotFound),
            (libc::EACCES, FileErrorKind::PermissionDenied),
            (libc::ENOTDIR, FileErrorKind::NotADirectory),
        ] {
            let f = FileError::io("open", Path::new("p"), &io::Error::from_raw_os_error(code));
            assert_eq!(f.kind(), kind);
        }
    }
}
