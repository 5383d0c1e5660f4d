//! What travels: the manifest of a tree, the receiver's plan for each
//! file, the options both ends need, and the byte stream's records.
//!
//! # The stream
//!
//! One bulk stream carries a whole tree: for each regular file whose plan
//! asks for bytes (in manifest order), one record:
//!
//! ```text
//! DATA  [0][start: u64 LE] bytes start..size of the file, then its digest
//! SAME  [1][0: u64]        the digest of the source (it matched the plan's)
//! FAIL  [2][n: u64]        n bytes: a MessagePack FileError (the source could not read it)
//! ```
//!
//! The sizes come from the manifest, so no record needs a length of its
//! own, and chunk boundaries of the stream mean nothing: the receiver
//! parses across them. The hash covers the whole file (a resumed file's
//! kept prefix too), computed by the sender while reading and by the
//! receiver while writing: what lands is what was read. Digests are of
//! the transfer's [`Checksum`] (16 bytes for XXH3-128, 32 for BLAKE3).

use super::digest::Checksum;
use super::error::FileError;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Record tags.
pub(crate) const DATA: u8 = 0;
pub(crate) const SAME: u8 = 1;
pub(crate) const FAIL: u8 = 2;
/// Bytes of a record header.
pub(crate) const HEADER: usize = 9;

/// An answer that may be a [`FileError`]: what service methods return as
/// a *value*, so the error arrives typed (a type spelled `Result` would
/// become a `CallError`).
pub(crate) type Answer<T> = std::result::Result<T, FileError>;

/// What an entry of a tree is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum EntryKind {
    /// A regular file.
    File,
    /// A directory (created before its contents, its mode and mtime set
    /// after them).
    Dir,
    /// A symbolic link and its target, copied as a link.
    Symlink(ByteBuf),
}

/// One entry of the manifest: a path relative to the transfer's root
/// (empty for the root itself) and the metadata to reproduce.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub rel: ByteBuf,
    pub kind: EntryKind,
    pub size: u64,
    pub mode: u32,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Entry {
    /// The entry's path under `root`.
    pub(crate) fn under(&self, root: &Path) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        if self.rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(std::ffi::OsStr::from_bytes(&self.rel))
        }
    }

    pub(crate) fn is_file(&self) -> bool {
        self.kind == EntryKind::File
    }
}

/// What the receiver wants for one entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum FilePlan {
    /// Not a file (a directory or link: made from the manifest alone).
    NoData,
    /// Send the whole file.
    Fresh,
    /// A partial copy of `offset` bytes is there with this hash of them:
    /// send the rest if the source's first `offset` bytes hash the same.
    Resume { offset: u64, prefix: ByteBuf },
    /// A file of the same size is there with this hash: send `SAME` if
    /// the source hashes the same.
    Existing { hash: ByteBuf },
    /// The receiver cannot take it (the error says why): send nothing.
    Refused(FileError),
}

impl FilePlan {
    /// Whether the stream has a record for this entry.
    pub(crate) fn has_record(&self) -> bool {
        matches!(
            self,
            FilePlan::Fresh | FilePlan::Resume { .. } | FilePlan::Existing { .. }
        )
    }
}

/// The options both ends need (the serializable part of
/// [`super::Options`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WireOptions {
    pub window: u64,
    pub owner: bool,
    pub skip_identical: bool,
    pub resume: bool,
    pub fsync: bool,
    pub timeout: Duration,
    pub checksum: Checksum,
}

/// What a transfer did, as the receiving side counts it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Regular files written (renamed into place).
    pub files: u64,
    /// Regular files left alone because an identical copy was there.
    pub skipped: u64,
    /// Regular files that continued a partial copy.
    pub resumed: u64,
    /// Directories made or updated.
    pub dirs: u64,
    /// Symbolic links made.
    pub symlinks: u64,
    /// File bytes that crossed the link (a skipped file's are not, a
    /// resumed file's kept prefix is not).
    pub bytes: u64,
    /// The size of every regular file of the tree together.
    pub total_bytes: u64,
    /// How long the receiving side took, from plan to last rename.
    pub elapsed: Duration,
}

/// How a transfer is going, given to the progress callback of
/// [`super::Options::progress`].
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// File bytes moved so far.
    pub bytes: u64,
    /// File bytes the transfer will move at most (the tree's size).
    pub total_bytes: u64,
    /// Regular files finished (written or skipped).
    pub files: u64,
    /// Regular files in the tree.
    pub total_files: u64,
    /// Bytes per second since the transfer started.
    pub rate: f64,
    /// Time since the transfer started.
    pub elapsed: Duration,
}

/// Encodes a record header.
pub(crate) fn header(tag: u8, n: u64) -> [u8; HEADER] {
    let mut h = [0u8; HEADER];
    h[0] = tag;
    h[1..].copy_from_slice(&n.to_le_bytes());
    h
}
