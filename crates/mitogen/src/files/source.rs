//! The sending side: listing a tree (the manifest) and streaming the
//! files the receiver's plan asks for.
//!
//! Each file is read once while it is sent; hashing runs on the same
//! buffer. The exceptions are deliberate: a file the receiver already has
//! at the same size is hashed first (to send `SAME` instead of its
//! bytes), and a resumed file's kept prefix is read and hashed to check
//! it, then the hash goes on over the rest.

use super::digest::{Checksum, Hasher};
use super::error::{FileError, FileErrorKind};
use super::wire::{header, Answer, Entry, EntryKind, FilePlan, Progress, DATA, FAIL, SAME};
use crate::bulk::BulkSender;
use serde_bytes::ByteBuf;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

/// Bytes read from a file at a time, and the size of stream chunks.
pub(crate) const CHUNK: usize = 1 << 20;

/// Lists `root` (a file, a directory or a link): the root first, each
/// directory before what it holds, names sorted.
pub(crate) fn scan(root: &Path) -> Answer<Vec<Entry>> {
    let meta = std::fs::symlink_metadata(root).map_err(|e| FileError::io("stat", root, &e))?;
    let mut out = Vec::new();
    push_entry(&mut out, root, Vec::new(), &meta)?;
    if meta.is_dir() {
        walk(root, &[], &mut out)?;
    }
    Ok(out)
}

fn walk(dir: &Path, rel: &[u8], out: &mut Vec<Entry>) -> Answer<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| FileError::io("list", dir, &e))?;
    let mut names = Vec::new();
    for d in rd {
        let d = d.map_err(|e| FileError::io("list", dir, &e))?;
        names.push(d.file_name());
    }
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| FileError::io("stat", &path, &e))?;
        let mut r = rel.to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(name.as_bytes());
        push_entry(out, &path, r.clone(), &meta)?;
        if meta.is_dir() {
            walk(&path, &r, out)?;
        }
    }
    Ok(())
}

fn push_entry(
    out: &mut Vec<Entry>,
    path: &Path,
    rel: Vec<u8>,
    meta: &std::fs::Metadata,
) -> Answer<()> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        let t = std::fs::read_link(path).map_err(|e| FileError::io("readlink", path, &e))?;
        EntryKind::Symlink(ByteBuf::from(t.as_os_str().as_bytes().to_vec()))
    } else {
        return Err(FileError::new(
            FileErrorKind::Unsupported,
            "stat",
            path,
            "not a regular file, directory or symbolic link",
        ));
    };
    out.push(Entry {
        rel: ByteBuf::from(rel),
        size: if kind == EntryKind::File {
            meta.len()
        } else {
            0
        },
        kind,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        mtime_nsec: meta.mtime_nsec() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
    });
    Ok(())
}

/// What the sender counts.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub(crate) struct Sent {
    /// File bytes put in the stream.
    pub bytes: u64,
}

/// Calls the progress callback at most every 100 ms (and when asked to
/// flush).
pub(crate) struct Ticker<'a> {
    f: Option<&'a (dyn Fn(&Progress) + Send + Sync)>,
    start: Instant,
    last: Instant,
    pub p: Progress,
}

impl<'a> Ticker<'a> {
    pub(crate) fn new(
        f: Option<&'a (dyn Fn(&Progress) + Send + Sync)>,
        entries: &[Entry],
    ) -> Ticker<'a> {
        let files = entries.iter().filter(|e| e.is_file());
        let now = Instant::now();
        Ticker {
            f,
            start: now,
            last: now,
            p: Progress {
                bytes: 0,
                total_bytes: files.clone().map(|e| e.size).sum(),
                files: 0,
                total_files: files.count() as u64,
                rate: 0.0,
                elapsed: Default::default(),
            },
        }
    }

    pub(crate) fn tick(&mut self, force: bool) {
        let Some(f) = self.f else { return };
        let now = Instant::now();
        if !force && now.duration_since(self.last).as_millis() < 100 {
            return;
        }
        self.last = now;
        self.p.elapsed = now.duration_since(self.start);
        let s = self.p.elapsed.as_secs_f64();
        self.p.rate = if s > 0.0 {
            self.p.bytes as f64 / s
        } else {
            0.0
        };
        f(&self.p);
    }
}

/// Where stream chunks go: one bulk stream, or several (a push).
pub(crate) trait Outlet {
    /// Sends one chunk (the buffer is filled again afterwards: sent from
    /// where it lies, it stays warm in the cache and no fresh memory is
    /// touched per chunk).
    fn put(&mut self, chunk: &[u8]) -> crate::Result<()>;
}

impl Outlet for BulkSender {
    fn put(&mut self, chunk: &[u8]) -> crate::Result<()> {
        self.write(chunk)
    }
}

/// Stream chunks being filled.
struct Out<'s> {
    tx: &'s mut dyn Outlet,
    buf: Vec<u8>,
    /// What the records' digests are.
    checksum: Checksum,
}

impl Out<'_> {
    fn push(&mut self, bytes: &[u8]) -> crate::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> crate::Result<()> {
        if !self.buf.is_empty() {
            self.tx.put(&self.buf)?;
            self.buf.clear();
        }
        Ok(())
    }
}

/// Streams the records `plans` asks for to `tx` (the caller finishes it).
/// An error that leaves a record half sent ends the stream (the receiver
/// sees it break); one found before a record starts (a file that cannot
/// be opened) is sent as a `FAIL` record and the rest goes on.
pub(crate) fn send(
    root: &Path,
    entries: &[Entry],
    plans: &[FilePlan],
    checksum: Checksum,
    tx: &mut dyn Outlet,
    ticker: &mut Ticker<'_>,
) -> Answer<Sent> {
    let mut sent = Sent::default();
    let mut out = Out {
        tx,
        buf: Vec::with_capacity(CHUNK),
        checksum,
    };
    let broke = |e: crate::Error| FileError::interrupted("send", root, &e);
    for (e, plan) in entries.iter().zip(plans) {
        if !plan.has_record() {
            continue;
        }
        let path = e.under(root);
        match open_checked(&path, e) {
            Ok(f) => send_file(&mut out, f, &path, e, plan, &mut sent, ticker)?,
            Err(err) => {
                let body = rmp_serde::to_vec(&err).map_err(|c| {
                    FileError::new(FileErrorKind::Other, "encode", &path, c.to_string())
                })?;
                out.push(&header(FAIL, body.len() as u64)).map_err(broke)?;
                out.push(&body).map_err(broke)?;
            }
        }
        ticker.p.files += 1;
        ticker.tick(false);
    }
    out.flush().map_err(broke)?;
    ticker.tick(true);
    Ok(sent)
}

/// Opens a file of the manifest, refusing one whose size changed.
fn open_checked(path: &Path, e: &Entry) -> Answer<File> {
    let f = File::open(path).map_err(|err| FileError::io("open", path, &err))?;
    let len = f
        .metadata()
        .map_err(|err| FileError::io("stat", path, &err))?
        .len();
    if len != e.size {
        return Err(changed(path, e.size, len));
    }
    Ok(f)
}

fn changed(path: &Path, was: u64, now: u64) -> FileError {
    FileError::new(
        FileErrorKind::Changed,
        "read",
        path,
        format!("the file changed while it was sent: {was} bytes listed, {now} now"),
    )
}

/// Hashes the first `n` bytes of `f` (listed at `size`) into `h`.
fn hash_prefix(f: &mut File, path: &Path, n: u64, size: u64, h: &mut Hasher) -> Answer<()> {
    match h.update_from(f, n) {
        Ok(got) if got == n => Ok(()),
        // Shorter than the prefix: the file has `got` bytes now.
        Ok(got) => Err(changed(path, size, got)),
        Err(err) => Err(FileError::io("read", path, &err)),
    }
}

/// Sends one file's record.
fn send_file(
    out: &mut Out<'_>,
    mut f: File,
    path: &Path,
    e: &Entry,
    plan: &FilePlan,
    sent: &mut Sent,
    ticker: &mut Ticker<'_>,
) -> Answer<()> {
    let broke = |err: crate::Error| FileError::interrupted("send", path, &err);
    let mut h = Hasher::new(out.checksum);
    let mut start = 0u64;
    match plan {
        FilePlan::Existing { hash } => {
            hash_prefix(&mut f, path, e.size, e.size, &mut h)?;
            let mine = h.digest();
            if hash.as_slice() == mine.as_bytes() {
                out.push(&header(SAME, 0)).map_err(broke)?;
                return out.push(mine.as_bytes()).map_err(broke);
            }
            h.reset();
            f.seek(SeekFrom::Start(0))
                .map_err(|err| FileError::io("seek", path, &err))?;
        }
        FilePlan::Resume { offset, prefix } if *offset <= e.size => {
            hash_prefix(&mut f, path, *offset, e.size, &mut h)?;
            if h.digest().as_bytes() == prefix.as_slice() {
                start = *offset;
            } else {
                h.reset();
                f.seek(SeekFrom::Start(0))
                    .map_err(|err| FileError::io("seek", path, &err))?;
            }
        }
        _ => {}
    }
    out.push(&header(DATA, start)).map_err(broke)?;
    let mut left = e.size - start;
    while left > 0 {
        let at = out.buf.len();
        let room = (CHUNK.saturating_sub(at)).max(64 << 10);
        let k = (left as usize).min(room);
        // Reads into the buffer's spare room (no zeroing first).
        let n = match (&mut f).take(k as u64).read_to_end(&mut out.buf) {
            Ok(0) => return Err(changed(path, e.size, e.size - left)),
            Ok(n) => n,
            Err(err) => {
                out.buf.truncate(at);
                return Err(FileError::io("read", path, &err));
            }
        };
        h.update(&out.buf[at..at + n]);
        left -= n as u64;
        sent.bytes += n as u64;
        ticker.p.bytes += n as u64;
        if out.buf.len() >= CHUNK {
            out.flush().map_err(broke)?;
            ticker.tick(false);
        }
    }
    out.push(h.digest().as_bytes()).map_err(broke)
}
