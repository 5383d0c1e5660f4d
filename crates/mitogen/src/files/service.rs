//! `FileService`: what every context does for a transfer, as a service
//! (methods run on the context's service pool, so transfers overlap with
//! each other and with calls).
//!
//! The methods answer with a `Result` *value* ([`Answer`]): a
//! [`FileError`] arrives typed; a `CallError` means the call itself could
//! not run. All are parents-only: a context reads and writes files for
//! the contexts above it, never for a sibling or a child.

use super::digest::Checksum;
use super::error::{FileError, FileErrorKind};
use super::sink::Sink;
use super::source::{self, Sent, Ticker};
use super::wire::{Answer, Entry, FilePlan, Report, WireOptions};
use crate::bulk::{BulkReceiver, BulkSender, BulkTarget};
use crate::context::Context;
use crate::receiver::Receiver;
use crate::router::Router;
use crate::sender::Sender;
use crate::service::{BoxError, Service};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The service (one per context, stateless: each transfer's state lives
/// on the thread running it).
#[derive(Debug)]
pub(crate) struct FileService;

impl Service for FileService {
    const NAME: &'static str = "mitogen::files::FileService";
    fn new(_: &crate::ExternalContext) -> std::result::Result<Self, BoxError> {
        Ok(FileService)
    }
}

/// A path as it travels (bytes: any Unix name).
pub(crate) fn wire_path(p: &Path) -> ByteBuf {
    ByteBuf::from(p.as_os_str().as_bytes().to_vec())
}

/// A path as it arrived.
pub(crate) fn local_path(b: &[u8]) -> PathBuf {
    PathBuf::from(std::ffi::OsStr::from_bytes(b))
}

/// What a receiver answers before the bytes flow.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Plan {
    pub plans: Vec<FilePlan>,
    pub target: BulkTarget,
}

/// Arguments of `receive`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ReceiveArgs {
    pub dest: ByteBuf,
    pub entries: Vec<Entry>,
    pub opts: WireOptions,
    /// Where the plan goes (the orchestrating context).
    pub plan_to: Sender,
    /// The context that will send the bytes.
    pub from: Context,
}

/// Arguments of `send`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct SendArgs {
    pub root: ByteBuf,
    pub entries: Vec<Entry>,
    pub plans: Vec<FilePlan>,
    pub target: BulkTarget,
    pub checksum: Checksum,
}

#[crate::service(pub(crate))]
impl FileService {
    /// Lists a file or tree for sending.
    #[expose]
    fn scan(&self, path: ByteBuf) -> Answer<Vec<Entry>> {
        source::scan(&local_path(&path))
    }

    /// Plans, answers the plan to `plan_to`, then writes the stream.
    #[expose]
    fn receive(&self, router: &Router, args: ReceiveArgs) -> Answer<Report> {
        let plan_to = args.plan_to;
        receive(
            router,
            &local_path(&args.dest),
            args.entries,
            &args.opts,
            Some(&args.from),
            false,
            Ticker::new(None, &[]),
            |plan| plan_to.send(&plan).map_err(|e| e.to_string()),
        )
    }

    /// Streams what a receiver's plan asks for.
    #[expose]
    fn send(&self, router: &Router, args: SendArgs) -> Answer<Sent> {
        let root = local_path(&args.root);
        let mut tx = BulkSender::connect(router, args.target)
            .map_err(|e| FileError::interrupted("send", &root, e))?;
        let mut ticker = Ticker::new(None, &[]);
        let sent = source::send(
            &root,
            &args.entries,
            &args.plans,
            args.checksum,
            &mut tx,
            &mut ticker,
        )?;
        tx.finish()
            .map_err(|e| FileError::interrupted("send", &root, e))?;
        Ok(sent)
    }
}

/// Receives a tree at `dest`: plans, gives the plan (or the planning
/// error) to `on_plan`, then writes the stream from `from`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn receive(
    router: &Router,
    dest: &Path,
    entries: Vec<Entry>,
    opts: &WireOptions,
    from: Option<&Context>,
    fresh: bool,
    ticker: Ticker<'_>,
    on_plan: impl FnOnce(Answer<Plan>) -> Result<(), String>,
) -> Answer<Report> {
    let mut sink = match Sink::plan(dest, entries, opts.clone(), fresh, ticker) {
        Ok(s) => s,
        Err(e) => {
            let _ = on_plan(Err(e.clone()));
            return Err(e);
        }
    };
    let mut rx = BulkReceiver::open(router, opts.window as usize, from);
    let plan = Plan {
        plans: sink.plans().to_vec(),
        target: rx.target(),
    };
    if let Err(why) = on_plan(Ok(plan)) {
        return Err(FileError::new(
            FileErrorKind::Interrupted,
            "plan",
            dest,
            format!("the plan could not be sent: {why}"),
        ));
    }
    let mut failed = None;
    let r = pump(&mut rx, opts.timeout, |chunk| {
        if failed.is_none() {
            if let Err(e) = sink.feed(chunk) {
                failed = Some(e);
            }
        }
    });
    match (r, failed) {
        (_, Some(e)) => Err(e),
        (Err(e), None) => Err(sink.abort(&e)),
        (Ok(()), None) => sink.finish(),
    }
}

/// Reads `rx` to its end, each chunk to `f` (then its buffer back to
/// the link, for a later chunk); a read waits at most `timeout`.
pub(crate) fn pump(
    rx: &mut BulkReceiver,
    timeout: Duration,
    mut f: impl FnMut(&[u8]),
) -> crate::Result<()> {
    while let Some(chunk) = rx.read_chunk(Some(timeout))? {
        f(&chunk);
        rx.recycle(chunk);
    }
    Ok(())
}

/// Waits for a receiver's plan on `rx`.
pub(crate) fn await_plan(rx: &Receiver, timeout: Duration, dest: &Path) -> Answer<Plan> {
    let m = rx
        .get(Some(timeout))
        .map_err(|e| FileError::interrupted("plan", dest, e))?;
    m.decode::<Answer<Plan>>()
        .map_err(|e| FileError::interrupted("plan", dest, e))?
}
