//! The receiving side: planning (what is already here), then writing the
//! stream's records, each file atomically.
//!
//! A file is written to `.NAME.mitogen-part` beside its destination,
//! locked (`flock`) so two transfers never write one file, hashed while
//! written, and only when its hash matches the sender's: given its mode,
//! owner (when permitted) and mtime, `fsync`ed, and renamed over the
//! destination. The destination name thus only ever holds the old file or
//! the whole new one. On a checksum mismatch or a write error (a full
//! disk) the part is removed; when the stream breaks (the sender killed,
//! a link lost) it is kept, holding a prefix of the source, so the next
//! transfer resumes from it after checking its hash (`resume` off: it is
//! removed too). Directories are made at planning and get their mode and
//! mtime last (writing into them changes their mtime; a read-only mode
//! would refuse the writes).

use super::digest::{Checksum, Hasher, MAX_LEN};
use super::error::{FileError, FileErrorKind};
pub(crate) use super::meta::part_path;
use super::meta::{make_dir, make_link, set_meta_path, set_owner, time_of};
use super::source::Ticker;
use super::wire::{
    Answer, Entry, EntryKind, FilePlan, Report, WireOptions, DATA, FAIL, HEADER, SAME,
};
use nix::fcntl::{Flock, FlockArg};
use serde_bytes::ByteBuf;
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A part file being written.
struct Part {
    file: Flock<File>,
    part: PathBuf,
    dest: PathBuf,
    written: u64,
}

enum State {
    /// Between records: the next header, `have` bytes of it so far.
    Header { buf: [u8; HEADER], have: usize },
    /// File bytes of entry `idx`; `part` is `None` once writing failed
    /// (the rest is read and dropped).
    Data {
        idx: usize,
        left: u64,
        part: Option<Part>,
        h: Hasher,
    },
    /// The digest after a file's bytes (`part` `None` for `SAME`).
    Trailer {
        idx: usize,
        buf: [u8; MAX_LEN],
        have: usize,
        part: Option<Part>,
        h: Option<Hasher>,
    },
    /// A source's error about entry `idx`.
    Fail {
        idx: usize,
        buf: Vec<u8>,
        left: usize,
    },
}

/// The receiving side of one tree.
pub(crate) struct Sink<'a> {
    root: PathBuf,
    entries: Vec<Entry>,
    plans: Vec<FilePlan>,
    opts: WireOptions,
    /// Entries with a record, in stream order.
    order: Vec<usize>,
    next: usize,
    state: State,
    /// Part files kept for resuming, opened and hashed while planning.
    resumed: HashMap<usize, (Flock<File>, Hasher)>,
    report: Report,
    errors: Vec<FileError>,
    renamed_in: BTreeSet<PathBuf>,
    started: Instant,
    pub(crate) ticker: Ticker<'a>,
}

impl<'a> Sink<'a> {
    /// Looks at what is at `root` for `entries`: makes directories, finds
    /// identical files and part files, refuses what cannot be written.
    /// `fresh` plans every file as new (a push: one stream for many
    /// receivers), keeping only the checks.
    pub(crate) fn plan(
        root: &Path,
        entries: Vec<Entry>,
        opts: WireOptions,
        fresh: bool,
        ticker: Ticker<'a>,
    ) -> Answer<Sink<'a>> {
        let started = Instant::now();
        let root_is_file = entries.first().is_some_and(|e| e.is_file());
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            let m = std::fs::metadata(parent).map_err(|e| FileError::io("stat", parent, &e))?;
            if !m.is_dir() {
                let e = std::io::Error::from_raw_os_error(libc::ENOTDIR);
                return Err(FileError::io("stat", parent, &e));
            }
        }
        if root_is_file && std::fs::metadata(root).is_ok_and(|m| m.is_dir()) {
            let e = std::io::Error::from_raw_os_error(libc::EISDIR);
            return Err(FileError::io("write", root, &e));
        }
        let mut plans = Vec::with_capacity(entries.len());
        let mut resumed = HashMap::new();
        let mut space: HashMap<PathBuf, Option<u64>> = HashMap::new();
        let mut report = Report::default();
        for (i, e) in entries.iter().enumerate() {
            let dest = e.under(root);
            let plan = match &e.kind {
                EntryKind::Dir => {
                    make_dir(&dest)?;
                    FilePlan::NoData
                }
                EntryKind::Symlink(_) => FilePlan::NoData,
                EntryKind::File => {
                    report.total_bytes += e.size;
                    match plan_file(&dest, e, &opts, fresh, &mut space) {
                        Ok((plan, kept)) => {
                            if let Some(k) = kept {
                                resumed.insert(i, k);
                            }
                            plan
                        }
                        Err(err) => FilePlan::Refused(err),
                    }
                }
            };
            plans.push(plan);
        }
        // A push sends every file, refused here or not: a refused file's
        // record is read past (its refusal is the error).
        let order = (0..entries.len())
            .filter(|&i| {
                plans[i].has_record() || (fresh && matches!(plans[i], FilePlan::Refused(_)))
            })
            .collect();
        Ok(Sink {
            root: root.to_path_buf(),
            entries,
            plans,
            opts,
            order,
            next: 0,
            state: State::Header {
                buf: [0; HEADER],
                have: 0,
            },
            resumed,
            report,
            errors: Vec::new(),
            renamed_in: BTreeSet::new(),
            started,
            ticker,
        })
    }

    /// The plan of every entry, for the sender.
    pub(crate) fn plans(&self) -> &[FilePlan] {
        &self.plans
    }

    /// Takes the next piece of the stream.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Answer<()> {
        while !data.is_empty() {
            let state = std::mem::replace(
                &mut self.state,
                State::Header {
                    buf: [0; HEADER],
                    have: 0,
                },
            );
            self.state = match state {
                State::Header { mut buf, mut have } => {
                    let k = (HEADER - have).min(data.len());
                    buf[have..have + k].copy_from_slice(&data[..k]);
                    have += k;
                    data = &data[k..];
                    if have < HEADER {
                        State::Header { buf, have }
                    } else {
                        self.begin(buf)?
                    }
                }
                State::Data {
                    idx,
                    left,
                    mut part,
                    mut h,
                } => {
                    let k = (left.min(data.len() as u64)) as usize;
                    let (now, rest) = data.split_at(k);
                    data = rest;
                    h.update(now);
                    if let Some(p) = part.as_mut() {
                        if let Err(e) = p.file.write_all(now) {
                            let err = FileError::io("write", &p.dest, &e);
                            self.fail_part(part.take(), err);
                        } else {
                            p.written += k as u64;
                        }
                    }
                    self.report.bytes += k as u64;
                    self.ticker.p.bytes += k as u64;
                    if left > k as u64 {
                        State::Data {
                            idx,
                            left: left - k as u64,
                            part,
                            h,
                        }
                    } else {
                        State::Trailer {
                            idx,
                            buf: [0; MAX_LEN],
                            have: 0,
                            part,
                            h: Some(h),
                        }
                    }
                }
                State::Trailer {
                    idx,
                    mut buf,
                    mut have,
                    part,
                    h,
                } => {
                    let len = self.opts.checksum.len();
                    let k = (len - have).min(data.len());
                    buf[have..have + k].copy_from_slice(&data[..k]);
                    have += k;
                    data = &data[k..];
                    if have < len {
                        State::Trailer {
                            idx,
                            buf,
                            have,
                            part,
                            h,
                        }
                    } else {
                        self.end_file(idx, &buf[..len], part, h);
                        self.ticker.tick(false);
                        State::Header {
                            buf: [0; HEADER],
                            have: 0,
                        }
                    }
                }
                State::Fail { idx, mut buf, left } => {
                    let k = left.min(data.len());
                    buf.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    if left > k {
                        State::Fail {
                            idx,
                            buf,
                            left: left - k,
                        }
                    } else {
                        let path = self.entries[idx].under(&self.root);
                        let err = rmp_serde::from_slice::<FileError>(&buf).unwrap_or_else(|e| {
                            FileError::new(FileErrorKind::Other, "read", &path, e.to_string())
                        });
                        self.errors.push(err);
                        self.resumed.remove(&idx);
                        State::Header {
                            buf: [0; HEADER],
                            have: 0,
                        }
                    }
                }
            };
        }
        self.ticker.tick(false);
        Ok(())
    }

    /// A record header: the state for its body.
    fn begin(&mut self, buf: [u8; HEADER]) -> Answer<State> {
        let Some(&idx) = self.order.get(self.next) else {
            return Err(self.protocol("a record after the last file"));
        };
        self.next += 1;
        let mut n = [0u8; 8];
        n.copy_from_slice(&buf[1..]);
        let n = u64::from_le_bytes(n);
        let (size, dest) = (self.entries[idx].size, self.entries[idx].under(&self.root));
        match buf[0] {
            DATA if n <= size => {
                let refused = matches!(self.plans[idx], FilePlan::Refused(_));
                let opened = if refused {
                    Err(None)
                } else {
                    self.open_part(idx, &dest, n).map_err(Some)
                };
                let (part, h) = match opened {
                    Ok((p, h)) => (Some(p), h),
                    Err(err) => {
                        self.errors.extend(err);
                        (None, Hasher::new(self.opts.checksum))
                    }
                };
                if n > 0 {
                    self.report.resumed += 1;
                }
                let left = size - n;
                if left == 0 {
                    return Ok(State::Trailer {
                        idx,
                        buf: [0; MAX_LEN],
                        have: 0,
                        part,
                        h: Some(h),
                    });
                }
                Ok(State::Data { idx, left, part, h })
            }
            SAME => Ok(State::Trailer {
                idx,
                buf: [0; MAX_LEN],
                have: 0,
                part: None,
                h: None,
            }),
            FAIL if n <= 1 << 20 => Ok(State::Fail {
                idx,
                buf: Vec::new(),
                left: n as usize,
            }),
            _ => Err(self.protocol("a malformed record header")),
        }
    }

    fn protocol(&self, what: &str) -> FileError {
        FileError::new(
            FileErrorKind::Other,
            "receive",
            &self.root,
            format!("the stream had {what}"),
        )
    }

    /// Opens (or takes from planning) the part file of entry `idx`, set
    /// to continue at `start`.
    fn open_part(&mut self, idx: usize, dest: &Path, start: u64) -> Answer<(Part, Hasher)> {
        let part = part_path(dest);
        let kept = self.resumed.remove(&idx);
        let (mut file, h) = match kept {
            Some((f, h)) if start > 0 => (f, h),
            Some((f, _)) => (f, Hasher::new(self.opts.checksum)),
            None if start > 0 => {
                return Err(self.protocol("a resumed file that was not planned so"));
            }
            None => (lock_part(&part, dest)?, Hasher::new(self.opts.checksum)),
        };
        // Truncated only when it is longer: on ext4, truncating even an
        // empty file to 0 marks it to have all its dirty pages written out
        // when it is closed (its guard for files rewritten in place), which
        // took half a second of a 1 GiB transfer's time with fsync off.
        let truncate = |file: &mut Flock<File>| -> std::io::Result<()> {
            if file.metadata()?.len() != start {
                file.set_len(start)?;
            }
            file.seek(SeekFrom::Start(start)).map(drop)
        };
        truncate(&mut file).map_err(|e| FileError::io("truncate", &part, &e))?;
        Ok((
            Part {
                file,
                part,
                dest: dest.to_path_buf(),
                written: start,
            },
            h,
        ))
    }

    /// A write failed: the part goes, the error is kept.
    fn fail_part(&mut self, part: Option<Part>, err: FileError) {
        if let Some(p) = part {
            let _ = std::fs::remove_file(&p.part);
        }
        self.errors.push(err);
    }

    /// The hash after a file: check, then put it in place.
    fn end_file(&mut self, idx: usize, theirs: &[u8], part: Option<Part>, h: Option<Hasher>) {
        let e = &self.entries[idx];
        let dest = e.under(&self.root);
        let Some(h) = h else {
            // SAME: the source hashed what the plan said is here.
            let same = matches!(&self.plans[idx], FilePlan::Existing { hash } if hash.as_slice() == theirs);
            if same {
                match set_meta_path(&dest, e, self.opts.owner) {
                    Ok(()) => self.report.skipped += 1,
                    Err(err) => self.errors.push(err),
                }
            } else {
                self.errors.push(mismatch(&dest));
            }
            self.ticker.p.files += 1;
            return;
        };
        self.ticker.p.files += 1;
        let Some(p) = part else { return };
        if h.digest().as_bytes() != theirs {
            return self.fail_part(Some(p), mismatch(&dest));
        }
        match finish_part(&p, e, &self.opts) {
            Ok(()) => {
                self.report.files += 1;
                if let Some(d) = dest.parent() {
                    self.renamed_in.insert(d.to_path_buf());
                }
            }
            Err(err) => self.fail_part(Some(p), err),
        }
    }

    /// The stream broke: the file being written is kept for resuming
    /// (or removed), and the transfer fails naming it.
    pub(crate) fn abort(mut self, why: impl std::fmt::Display) -> FileError {
        let state = std::mem::replace(
            &mut self.state,
            State::Header {
                buf: [0; HEADER],
                have: 0,
            },
        );
        let part = match state {
            State::Data { part, .. } | State::Trailer { part, .. } => part,
            _ => None,
        };
        let path = match &part {
            Some(p) => p.dest.clone(),
            None => self.root.clone(),
        };
        if let Some(p) = part {
            let keep = self.opts.resume && p.written > 0 && p.file.sync_data().is_ok();
            if !keep {
                let _ = std::fs::remove_file(&p.part);
            }
        }
        FileError::interrupted("receive", &path, why)
    }

    /// The stream ended: links and directories, then the report (or the
    /// first error met).
    pub(crate) fn finish(mut self) -> Answer<Report> {
        let complete = matches!(self.state, State::Header { have: 0, .. });
        if !complete || self.next != self.order.len() {
            return Err(self.abort("the stream ended early"));
        }
        for plan in &self.plans {
            if let FilePlan::Refused(err) = plan {
                self.errors.push(err.clone());
            }
        }
        for e in &self.entries {
            if let EntryKind::Symlink(target) = &e.kind {
                match make_link(&e.under(&self.root), target, e, self.opts.owner) {
                    Ok(()) => self.report.symlinks += 1,
                    Err(err) => self.errors.push(err),
                }
            }
        }
        for e in self.entries.iter().rev() {
            if e.kind == EntryKind::Dir {
                match set_meta_path(&e.under(&self.root), e, self.opts.owner) {
                    Ok(()) => self.report.dirs += 1,
                    Err(err) => self.errors.push(err),
                }
            }
        }
        if self.opts.fsync {
            for d in &self.renamed_in {
                if let Ok(f) = File::open(d) {
                    let _ = f.sync_all();
                }
            }
        }
        self.ticker.tick(true);
        self.report.elapsed = self.started.elapsed();
        match self.errors.into_iter().next() {
            Some(err) => Err(err),
            None => Ok(self.report),
        }
    }
}

fn mismatch(dest: &Path) -> FileError {
    FileError::new(
        FileErrorKind::ChecksumMismatch,
        "verify",
        dest,
        "the bytes received do not hash to what the sender read; nothing was replaced",
    )
}

/// Plans one regular file: identical, partial, or new; refused when its
/// directory is not writable or has no room.
#[allow(clippy::type_complexity)]
fn plan_file(
    dest: &Path,
    e: &Entry,
    opts: &WireOptions,
    fresh: bool,
    space: &mut HashMap<PathBuf, Option<u64>>,
) -> Answer<(FilePlan, Option<(Flock<File>, Hasher)>)> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|errno| FileError::io("create", dest, &std::io::Error::from(errno)))?;
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => {
            let err = std::io::Error::from_raw_os_error(libc::EISDIR);
            return Err(FileError::io("write", dest, &err));
        }
        Ok(m) if !fresh && opts.skip_identical && m.is_file() && m.len() == e.size => {
            let mut f = File::open(dest).map_err(|err| FileError::io("open", dest, &err))?;
            let h = hash_all(&mut f, dest, None, opts.checksum)?;
            let hash = ByteBuf::from(h.digest().as_bytes().to_vec());
            return Ok((FilePlan::Existing { hash }, None));
        }
        _ => {}
    }
    let part = part_path(dest);
    let mut need = e.size;
    let mut plan = (FilePlan::Fresh, None);
    if !fresh && opts.resume {
        if let Ok(m) = std::fs::symlink_metadata(&part) {
            if m.is_file() && m.len() > 0 && m.len() <= e.size {
                let mut f = lock_part(&part, dest)?;
                let h = hash_all(&mut f, &part, Some(m.len()), opts.checksum)?;
                let prefix = ByteBuf::from(h.digest().as_bytes().to_vec());
                need -= m.len();
                plan = (
                    FilePlan::Resume {
                        offset: m.len(),
                        prefix,
                    },
                    Some((f, h)),
                );
            }
        }
    }
    let free = space.entry(dir.to_path_buf()).or_insert_with(|| {
        nix::sys::statvfs::statvfs(dir)
            .ok()
            .map(|s| s.blocks_available() * s.fragment_size())
    });
    if let Some(free) = free {
        if need > *free {
            return Err(FileError::new(
                FileErrorKind::DiskFull,
                "write",
                dest,
                format!("{need} bytes to write, {free} free on its file system"),
            ));
        }
        *free -= need;
    }
    Ok(plan)
}

/// Hashes `f` from its start (its first `len` bytes when given), leaving
/// it positioned there.
fn hash_all(f: &mut File, path: &Path, len: Option<u64>, c: Checksum) -> Answer<Hasher> {
    let mut h = Hasher::new(c);
    h.update_from(f, len.unwrap_or(u64::MAX))
        .map_err(|e| FileError::io("read", path, &e))?;
    Ok(h)
}

/// Opens and locks `part` (created if missing, owner-only until done).
fn lock_part(part: &Path, dest: &Path) -> Answer<Flock<File>> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(part)
        .map_err(|e| FileError::io("create", dest, &e))?;
    Flock::lock(f, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == nix::errno::Errno::EWOULDBLOCK {
            FileError::new(
                FileErrorKind::Busy,
                "lock",
                dest,
                "another transfer is writing this file",
            )
        } else {
            FileError::io("lock", dest, &std::io::Error::from(errno))
        }
    })
}

/// Owner (where permitted), mode, mtime, fsync, rename.
fn finish_part(p: &Part, e: &Entry, opts: &WireOptions) -> Answer<()> {
    let f: &File = &p.file;
    set_owner(f.metadata().ok(), e, opts.owner, |u, g| {
        std::os::unix::fs::fchown(f, u, g)
    })
    .map_err(|err| FileError::io("chown", &p.dest, &err))?;
    f.set_permissions(std::fs::Permissions::from_mode(e.mode))
        .map_err(|err| FileError::io("chmod", &p.dest, &err))?;
    let t = std::fs::FileTimes::new().set_modified(time_of(e.mtime, e.mtime_nsec));
    f.set_times(t)
        .map_err(|err| FileError::io("set mtime of", &p.dest, &err))?;
    if opts.fsync {
        f.sync_all()
            .map_err(|err| FileError::io("fsync", &p.dest, &err))?;
    }
    std::fs::rename(&p.part, &p.dest).map_err(|err| FileError::io("rename", &p.dest, &err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::wire::header;
    use std::os::unix::fs::MetadataExt;
    use std::time::Duration;

    fn opts() -> WireOptions {
        opts_with(Checksum::Xxh3)
    }

    fn opts_with(checksum: Checksum) -> WireOptions {
        WireOptions {
            window: 1 << 20,
            owner: false,
            skip_identical: true,
            resume: true,
            fsync: false,
            timeout: Duration::from_secs(5),
            checksum,
        }
    }

    fn digest(c: Checksum, body: &[u8]) -> Vec<u8> {
        let mut h = Hasher::new(c);
        h.update(body);
        h.digest().as_bytes().to_vec()
    }

    fn entry(size: u64) -> Entry {
        Entry {
            rel: ByteBuf::new(),
            kind: EntryKind::File,
            size,
            mode: 0o640,
            mtime: 1_000_000_000,
            mtime_nsec: 5,
            uid: 0,
            gid: 0,
        }
    }

    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mitogen-sink-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        d
    }

    fn stream(body: &[u8], hash: &[u8]) -> Vec<u8> {
        let mut s = header(DATA, 0).to_vec();
        s.extend_from_slice(body);
        s.extend_from_slice(hash);
        s
    }

    #[test]
    fn records_parse_across_any_chunking() {
        for c in [Checksum::Xxh3, Checksum::Blake3] {
            let d = scratch("chunks");
            let dest = d.join("f");
            let body = b"hello, file".to_vec();
            let s = stream(&body, &digest(c, &body));
            let mut sink = Sink::plan(
                &dest,
                vec![entry(body.len() as u64)],
                opts_with(c),
                false,
                Ticker::new(None, &[]),
            )
            .expect("plan");
            for b in &s {
                sink.feed(std::slice::from_ref(b)).expect("feed");
            }
            let r = sink.finish().expect("finish");
            assert_eq!((r.files, r.bytes), (1, body.len() as u64), "{c:?}");
            assert_eq!(std::fs::read(&dest).expect("written"), body);
            let m = std::fs::metadata(&dest).expect("meta");
            assert_eq!(
                (m.mode() & 0o7777, m.mtime(), m.mtime_nsec()),
                (0o640, 1_000_000_000, 5)
            );
            assert!(!part_path(&dest).exists());
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn a_wrong_checksum_replaces_nothing() {
        let d = scratch("mismatch");
        let dest = d.join("f");
        std::fs::write(&dest, b"old").expect("old file");
        let body = b"new bytes".to_vec();
        let s = stream(&body, &[7u8; 16]);
        let mut sink = Sink::plan(
            &dest,
            vec![entry(body.len() as u64)],
            opts(),
            false,
            Ticker::new(None, &[]),
        )
        .expect("plan");
        sink.feed(&s).expect("feed");
        let e = sink.finish().expect_err("mismatch");
        assert_eq!(e.kind(), FileErrorKind::ChecksumMismatch);
        assert_eq!(e.path(), dest);
        assert_eq!(std::fs::read(&dest).expect("still there"), b"old");
        assert!(!part_path(&dest).exists(), "part left");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_broken_stream_keeps_the_part_for_resuming() {
        let d = scratch("broken");
        let dest = d.join("f");
        let body = vec![3u8; 1000];
        let s = stream(&body, &digest(Checksum::Xxh3, &body));
        let mut sink = Sink::plan(
            &dest,
            vec![entry(1000)],
            opts(),
            false,
            Ticker::new(None, &[]),
        )
        .expect("plan");
        sink.feed(&s[..600]).expect("feed");
        let e = sink.abort("the sender died");
        assert_eq!(e.kind(), FileErrorKind::Interrupted);
        assert!(!dest.exists());
        assert_eq!(
            std::fs::metadata(part_path(&dest)).expect("part").len(),
            600 - HEADER as u64
        );
        // The next plan offers to resume from it.
        let sink = Sink::plan(
            &dest,
            vec![entry(1000)],
            opts(),
            false,
            Ticker::new(None, &[]),
        )
        .expect("plan");
        assert!(
            matches!(sink.plans()[0], FilePlan::Resume { offset, .. } if offset == 600 - HEADER as u64)
        );
        drop(sink);
        let _ = std::fs::remove_dir_all(&d);
    }
}
