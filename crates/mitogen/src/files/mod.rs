//! Moving files and directory trees between contexts: [`put`], [`get`],
//! [`copy`] between any two contexts, and [`push`] to many through the
//! tree of contexts (the seed's `FileService` / `PushFileService`, which
//! compared sizes only and sent a file across a bastion's uplink once
//! per host behind it).
//!
//! ```
//! use mitogen::files::{self, Options};
//!
//! #[mitogen::main]
//! fn main(router: mitogen::Router) -> mitogen::Result<()> {
//!     let dir = std::env::temp_dir().join(format!("mitogen-files-doc-{}", std::process::id()));
//!     std::fs::create_dir_all(&dir).unwrap();
//!     std::fs::write(dir.join("app.conf"), b"workers = 4\n").unwrap();
//!     let child = router.local().connect()?;
//!     let opts = Options::new();
//!     let r = files::put(&child, dir.join("app.conf"), dir.join("copy.conf"), &opts)?;
//!     assert_eq!((r.files, r.bytes), (1, 12));
//!     // Identical now: nothing crosses the link the second time.
//!     let r = files::put(&child, dir.join("app.conf"), dir.join("copy.conf"), &opts)?;
//!     assert_eq!((r.skipped, r.bytes), (1, 0));
//!     std::fs::remove_dir_all(&dir).unwrap();
//!     Ok(())
//! }
//! ```
//!
//! # What a transfer guarantees
//!
//! - **Memory bounded** whatever the size: bytes flow as a [`crate::bulk`]
//!   stream with a credit window ([`Options::window`]); each end holds
//!   about one window and one read buffer.
//! - **Atomic** per file on the receiving side: written to
//!   `.NAME.mitogen-part` beside the destination, `fsync`ed, renamed
//!   over. The destination is the old file or the whole new one, never a
//!   part. A failed file's part is removed, except when the transfer
//!   *broke* (the sender killed, a link lost, [`FileErrorKind::Interrupted`]):
//!   then it is kept, hidden under that name, for the next transfer to
//!   resume ([`Options::resume`]). A tree is atomic file by file, not as
//!   a whole.
//! - **Verified end to end**: the sender hashes what it reads, the
//!   receiver what it writes; a mismatch replaces nothing
//!   ([`FileErrorKind::ChecksumMismatch`]). The hash is XXH3-128 by
//!   default, as rsync's, at memory speed (a transfer hashes every byte on
//!   both ends: BLAKE3 was a third of a local put's CPU), or BLAKE3 when
//!   the skip of identical files must hold against someone who may write
//!   the destination ([`Options::checksum`], [`Checksum`]).
//! - **Metadata**: mode and mtime always; owner and group when
//!   [`Options::owner`] and the receiving side may (root, or a group it
//!   is in); symbolic links copied as links.
//! - **Skip and resume**: a destination of the same size is hashed by
//!   the receiver and the source, and when they match only its metadata
//!   is updated; a part file is hashed likewise and, when the source's
//!   prefix matches, only the rest is sent.
//! - **Typed errors naming the path** ([`FileError`]), the same across
//!   the wire: missing file, permission denied, disk full (found before
//!   sending when the receiving file system has too little room), not a
//!   directory, a source that changed while it was sent. In a tree, every
//!   file that can be moved is; the first error is returned.
//!
//! # Paths
//!
//! `put(ctx, src, dst)` makes `dst` a copy of `src`: for a file, `dst` is
//! the file's new path (its directory must exist); for a directory,
//! `dst` is the directory, made if missing, merged into if present.
//!
//! # Who may
//!
//! A context moves files for the contexts above it only (the service's
//! methods are parents-only): a child cannot read its parent's files
//! through this module. The caller runs the transfer; the two ends
//! stream to each other directly (through their nearest common
//! ancestor's routing), so `copy` between two hosts does not pass the
//! bytes through the caller unless the route does.

mod digest;
pub(crate) mod error;
mod meta;
mod push;
mod service;
mod sink;
mod source;
mod wire;

pub use digest::Checksum;
pub use error::{FileError, FileErrorKind};
pub use wire::{Progress, Report};

use crate::bulk::{BulkSender, DEFAULT_WINDOW};
use crate::context::Context;
use crate::receiver::Receiver;
use crate::router::Router;
use service::{await_plan, file_service, wire_path, ReceiveArgs, SendArgs};
use source::Ticker;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wire::{Answer, WireOptions};

/// A progress callback (see [`Options::progress`]).
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// How a transfer runs. `Options::new()` is the default: 16 MiB window,
/// owner kept where permitted, identical files skipped, partial files
/// resumed, `fsync` before rename, XXH3-128 verification, 120 s without
/// progress fails.
#[derive(Clone)]
pub struct Options {
    window: usize,
    owner: bool,
    skip_identical: bool,
    resume: bool,
    fsync: bool,
    timeout: Duration,
    checksum: Checksum,
    progress: Option<ProgressFn>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("window", &self.window)
            .field("owner", &self.owner)
            .field("skip_identical", &self.skip_identical)
            .field("resume", &self.resume)
            .field("fsync", &self.fsync)
            .field("timeout", &self.timeout)
            .field("checksum", &self.checksum)
            .field("progress", &self.progress.is_some())
            .finish()
    }
}

impl Default for Options {
    fn default() -> Options {
        Options::new()
    }
}

impl Options {
    /// The defaults.
    pub fn new() -> Options {
        Options {
            window: DEFAULT_WINDOW,
            owner: true,
            skip_identical: true,
            resume: true,
            fsync: true,
            timeout: Duration::from_secs(120),
            checksum: Checksum::default(),
            progress: None,
        }
    }

    /// Bytes in flight per stream (at least 64 KiB): what each end may
    /// hold. Larger windows hide more latency.
    pub fn window(mut self, bytes: usize) -> Options {
        self.window = bytes.max(64 << 10);
        self
    }

    /// Whether to give files their source's owner and group (where the
    /// receiving side may; refusal is not an error).
    pub fn owner(mut self, on: bool) -> Options {
        self.owner = on;
        self
    }

    /// Whether a destination file identical to the source (same size and
    /// [`Checksum`]) is left alone instead of sent again.
    pub fn skip_identical(mut self, on: bool) -> Options {
        self.skip_identical = on;
        self
    }

    /// Whether a part file left by a broken transfer is continued (after
    /// checking its hash) and kept when a transfer breaks.
    pub fn resume(mut self, on: bool) -> Options {
        self.resume = on;
        self
    }

    /// Whether files (and their directories) are `fsync`ed before and
    /// after the rename. Off is faster and survives everything but a
    /// crash of the receiving machine.
    pub fn fsync(mut self, on: bool) -> Options {
        self.fsync = on;
        self
    }

    /// Longest wait for any one step (a plan, the next chunk, a result):
    /// past it the transfer fails as [`FileErrorKind::Interrupted`].
    pub fn timeout(mut self, t: Duration) -> Options {
        self.timeout = t;
        self
    }

    /// The checksum that verifies each file, and decides which are
    /// identical and which parts may be resumed (default
    /// [`Checksum::Xxh3`]).
    pub fn checksum(mut self, c: Checksum) -> Options {
        self.checksum = c;
        self
    }

    /// Calls `f` with the progress, at most every 100 ms and once at the
    /// end, on the calling thread. The side that reports is this one: the
    /// sender for [`put`] and [`push`], the receiver for [`get`];
    /// [`copy`] between two other contexts reports once, at the end.
    pub fn progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Options {
        self.progress = Some(Arc::new(f));
        self
    }

    fn wire(&self) -> WireOptions {
        WireOptions {
            window: self.window as u64,
            owner: self.owner,
            skip_identical: self.skip_identical,
            resume: self.resume,
            fsync: self.fsync,
            timeout: self.timeout,
            checksum: self.checksum,
        }
    }
}

fn router_of(ctx: &Context) -> Router {
    Router::borrowed(ctx.core.clone())
}

fn is_here(ctx: &Context) -> bool {
    ctx.context_id() == ctx.core.id
}

/// Copies `local` (a file or tree here) to `remote` in `ctx`.
pub fn put(
    ctx: &Context,
    local: impl AsRef<Path>,
    remote: impl AsRef<Path>,
    opts: &Options,
) -> Result<Report, FileError> {
    let (local, remote) = (local.as_ref(), remote.as_ref());
    let router = router_of(ctx);
    let wire = opts.wire();
    let entries = source::scan(local)?;
    let plan_rx = Receiver::new(&router, None, false, Some(ctx), None)
        .map_err(|e| FileError::interrupted("put", remote, e))?;
    let args = ReceiveArgs {
        dest: wire_path(remote),
        entries: entries.clone(),
        opts: wire.clone(),
        plan_to: plan_rx.to_sender(),
        from: router.myself(),
    };
    let pending = ctx
        .call_service_async::<file_service::receive>((args,))
        .map_err(|e| FileError::interrupted("put", remote, e))?;
    let plan = await_plan(&plan_rx, wire.timeout, remote)?;
    let mut ticker = Ticker::new(opts.progress.as_deref(), &entries);
    let sent = BulkSender::connect(&router, plan.target)
        .map_err(|e| FileError::interrupted("put", remote, e))
        .and_then(|mut tx| {
            let s = source::send(
                local,
                &entries,
                &plan.plans,
                wire.checksum,
                &mut tx,
                &mut ticker,
            )?;
            tx.finish()
                .map_err(|e| FileError::interrupted("put", remote, e))?;
            Ok(s)
        });
    let received = pending
        .get(Some(wire.timeout))
        .map_err(|e| FileError::interrupted("put", remote, e))
        .and_then(|r| r);
    prefer_source(sent.map(drop), received)
}

/// The sender's error explains a broken stream better than the
/// receiver's "interrupted".
fn prefer_source(sent: Answer<()>, received: Answer<Report>) -> Answer<Report> {
    match (sent, received) {
        (Err(s), Err(r))
            if r.kind() == FileErrorKind::Interrupted && s.kind() != FileErrorKind::Interrupted =>
        {
            Err(s)
        }
        (_, Err(r)) => Err(r),
        (Err(s), Ok(_)) => Err(s),
        (Ok(()), Ok(r)) => Ok(r),
    }
}

/// Copies `remote` (a file or tree in `ctx`) to `local` here.
pub fn get(
    ctx: &Context,
    remote: impl AsRef<Path>,
    local: impl AsRef<Path>,
    opts: &Options,
) -> Result<Report, FileError> {
    let (remote, local) = (remote.as_ref(), local.as_ref());
    let router = router_of(ctx);
    let wire = opts.wire();
    let entries = ctx
        .call_service::<file_service::scan>((wire_path(remote),))
        .map_err(|e| FileError::interrupted("get", remote, e))??;
    let ticker = Ticker::new(opts.progress.as_deref(), &entries);
    let mut pending = None;
    let received = service::receive(
        &router,
        local,
        entries.clone(),
        &wire,
        Some(ctx),
        false,
        ticker,
        |plan| {
            let plan = plan.map_err(|e| e.to_string())?;
            let args = SendArgs {
                root: wire_path(remote),
                entries,
                plans: plan.plans,
                target: plan.target,
                checksum: wire.checksum,
            };
            let call = ctx
                .call_service_async::<file_service::send>((args,))
                .map_err(|e| e.to_string())?;
            pending = Some(call);
            Ok(())
        },
    );
    let sent = match pending {
        Some(p) => p
            .get(Some(wire.timeout))
            .map_err(|e| FileError::interrupted("get", remote, e))
            .and_then(|r| r)
            .map(drop),
        None => Ok(()),
    };
    prefer_source(sent, received)
}

/// Copies `from_path` in `from` to `to_path` in `to`: the bytes go from
/// one to the other directly (either may be this context).
pub fn copy(
    from: &Context,
    from_path: impl AsRef<Path>,
    to: &Context,
    to_path: impl AsRef<Path>,
    opts: &Options,
) -> Result<Report, FileError> {
    let (src, dst) = (from_path.as_ref(), to_path.as_ref());
    if is_here(from) {
        return put(to, src, dst, opts);
    }
    if is_here(to) {
        return get(from, src, dst, opts);
    }
    let router = router_of(to);
    let wire = opts.wire();
    let broke = |e: crate::Error| FileError::interrupted("copy", dst, e);
    let entries = from
        .call_service::<file_service::scan>((wire_path(src),))
        .map_err(broke)??;
    let plan_rx = Receiver::new(&router, None, false, Some(to), None).map_err(broke)?;
    let args = ReceiveArgs {
        dest: wire_path(dst),
        entries: entries.clone(),
        opts: wire.clone(),
        plan_to: plan_rx.to_sender(),
        from: from.clone(),
    };
    let receiving = to
        .call_service_async::<file_service::receive>((args,))
        .map_err(broke)?;
    let plan = await_plan(&plan_rx, wire.timeout, dst)?;
    let args = SendArgs {
        root: wire_path(src),
        entries: entries.clone(),
        plans: plan.plans,
        target: plan.target,
        checksum: wire.checksum,
    };
    let sent = from
        .call_service_async::<file_service::send>((args,))
        .and_then(|p| p.get(Some(wire.timeout)))
        .map_err(broke)
        .and_then(|r| r)
        .map(drop);
    let received = receiving
        .get(Some(wire.timeout))
        .map_err(broke)
        .and_then(|r| r);
    let r = prefer_source(sent, received);
    if let (Ok(report), Some(f)) = (&r, &opts.progress) {
        let mut t = Ticker::new(Some(&**f), &entries);
        t.p.bytes = report.bytes;
        t.p.files = report.files + report.skipped;
        t.tick(true);
    }
    r
}

/// Copies `local` (a file or tree here) to `remote` in every target,
/// through the tree of contexts: each link carries the bytes once, and
/// an intermediate forwards chunks as they arrive (see the module
/// `push` notes in `docs/ARCHITECTURE.md`). One result per target, in
/// the order given: a failing target does not fail the others. Push
/// sends every file whole (no skip or resume: one stream serves every
/// target).
pub fn push(
    targets: &[Context],
    local: impl AsRef<Path>,
    remote: impl AsRef<Path>,
    opts: &Options,
) -> Vec<(Context, Result<Report, FileError>)> {
    let Some(first) = targets.first() else {
        return Vec::new();
    };
    push::push(
        &router_of(first),
        targets,
        local.as_ref(),
        remote.as_ref(),
        opts,
    )
}

#[doc(hidden)]
/// The part file a transfer to `dest` writes (for tests).
pub fn part_path(dest: &Path) -> std::path::PathBuf {
    sink::part_path(dest)
}
