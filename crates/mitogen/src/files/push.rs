//! Push: one file or tree to many contexts, each link carrying the bytes
//! once.
//!
//! The targets' ancestries (each asks itself: `parent_ids`) give the
//! shape: the paths from this context down to every target, merged into
//! a tree. A context on those paths that is no target and leads to one
//! subtree only is left out (routing through it costs the same bytes as
//! relaying); every other one is a node. The pushing context streams the
//! tree once into each of its child nodes; each node stores what arrives
//! (when it is a target) *and* forwards every chunk to its own child
//! nodes as it arrives (a tee, not store-then-send), so a bastion with 20
//! hosts behind it receives the file once and the hosts get it while it
//! still arrives. A node's results come back with its subtree's, per
//! target: a child that fails (refuses, dies, stalls) fails its subtree
//! only; the others go on. A push plans every file as new (one stream
//! serves receivers that hold different things): no resume or skip.

use super::error::FileError;
use super::service::{await_plan, local_path, wire_path};
use super::sink::Sink;
use super::source::{Outlet, Ticker};
use super::wire::{Answer, Entry, FilePlan, Report, WireOptions};
use crate::bulk::{BulkReceiver, BulkSender};
use crate::context::{Context, PendingCall};
use crate::receiver::Receiver;
use crate::router::Router;
use crate::sender::Sender;
use crate::service::{BoxError, Service};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::collections::BTreeMap;
use std::path::Path;

/// The push half of the file service: a node's relay, and the ancestry
/// that shapes the tree (a service of its own, so that the plain file
/// service below knows nothing of pushes).
#[derive(Debug)]
pub(crate) struct PushService;

impl Service for PushService {
    const NAME: &'static str = "mitogen::files::PushService";
    fn new(_: &crate::ExternalContext) -> std::result::Result<Self, BoxError> {
        Ok(PushService)
    }
}

#[crate::service(pub(crate))]
impl PushService {
    /// A push's node: stores what it receives (when a target) and
    /// forwards each chunk to its subtrees as it arrives.
    #[expose]
    fn relay(&self, router: &Router, caller: &crate::service::Caller, args: RelayArgs) -> Results {
        relay(router, caller.context(), args)
    }

    /// This context's parents, nearest first (for shaping a push).
    #[expose]
    fn ancestry(&self) -> Vec<u32> {
        crate::parent_ids().to_vec()
    }
}

/// A push's subtree: a context, whether it is a target, and the subtrees
/// it feeds.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Subtree {
    pub id: u32,
    pub target: bool,
    pub children: Vec<Subtree>,
}

impl Subtree {
    /// Every target id in this subtree.
    pub(crate) fn targets(&self, out: &mut Vec<u32>) {
        if self.target {
            out.push(self.id);
        }
        for c in &self.children {
            c.targets(out);
        }
    }
}

/// Arguments of `relay`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct RelayArgs {
    pub tree: Subtree,
    pub dest: ByteBuf,
    pub entries: Vec<Entry>,
    pub opts: WireOptions,
    pub plan_to: Sender,
}

/// Per-target results of a push.
pub(crate) type Results = Vec<(u32, Answer<Report>)>;

/// Largest window of one relayed stream: a node holds a window per child.
const RELAY_WINDOW: u64 = 8 << 20;

/// A child node being fed.
struct Feed {
    tree: Subtree,
    ctx: Context,
    call: Option<PendingCall<Results>>,
    tx: Option<BulkSender>,
    error: Option<FileError>,
}

/// The child nodes of one node: each chunk goes to every one still alive.
pub(crate) struct FanOut {
    feeds: Vec<Feed>,
    dest: std::path::PathBuf,
}

impl FanOut {
    /// Starts `relay` in each child subtree and waits for their plans.
    pub(crate) fn open(
        router: &Router,
        children: &[Subtree],
        dest: &Path,
        entries: &[Entry],
        opts: &WireOptions,
    ) -> FanOut {
        let mut child_opts = opts.clone();
        child_opts.window = opts.window.min(RELAY_WINDOW);
        let mut started = Vec::new();
        for t in children {
            let ctx = Context::new(router.core().clone(), t.id, "push target");
            let rx = match Receiver::new(router, None, false, Some(&ctx), None) {
                Ok(rx) => rx,
                Err(e) => {
                    started.push((
                        t.clone(),
                        ctx,
                        None,
                        None,
                        Some(FileError::interrupted("push", dest, e)),
                    ));
                    continue;
                }
            };
            let args = RelayArgs {
                tree: t.clone(),
                dest: wire_path(dest),
                entries: entries.to_vec(),
                opts: child_opts.clone(),
                plan_to: rx.to_sender(),
            };
            match ctx.call_service_async::<push_service::relay>((args,)) {
                Ok(call) => started.push((t.clone(), ctx, Some(call), Some(rx), None)),
                Err(e) => started.push((
                    t.clone(),
                    ctx,
                    None,
                    None,
                    Some(FileError::interrupted("push", dest, e)),
                )),
            }
        }
        let feeds = started
            .into_iter()
            .map(|(tree, ctx, call, rx, error)| {
                let mut f = Feed {
                    tree,
                    ctx,
                    call,
                    tx: None,
                    error,
                };
                if let Some(rx) = rx {
                    match await_plan(&rx, opts.timeout, dest) {
                        Ok(plan) => match BulkSender::connect(router, plan.target) {
                            Ok(tx) => f.tx = Some(tx),
                            Err(e) => f.error = Some(FileError::interrupted("push", dest, e)),
                        },
                        Err(e) => f.error = Some(e),
                    }
                }
                f
            })
            .collect();
        FanOut {
            feeds,
            dest: dest.to_path_buf(),
        }
    }

    /// Whether any child still takes the stream.
    pub(crate) fn alive(&self) -> bool {
        self.feeds.iter().any(|f| f.tx.is_some())
    }

    /// Ends every stream (`ok`) or drops them (the input broke), then
    /// collects every child's results; a child that failed answers for
    /// its whole subtree with its error.
    pub(crate) fn finish(self, ok: bool, timeout: std::time::Duration) -> Results {
        let mut out = Vec::new();
        for mut f in self.feeds {
            if let Some(tx) = f.tx.take() {
                if ok {
                    if let Err(e) = tx.finish() {
                        f.error
                            .get_or_insert(FileError::interrupted("push", &self.dest, e));
                    }
                }
            }
            let answer = match f.call.take().map(|c| c.get(Some(timeout))) {
                Some(Ok(r)) => Ok(r),
                Some(Err(e)) => Err(f
                    .error
                    .take()
                    .unwrap_or_else(|| FileError::interrupted("push", &self.dest, e))),
                None => Err(f
                    .error
                    .take()
                    .unwrap_or_else(|| FileError::interrupted("push", &self.dest, "no answer"))),
            };
            match answer {
                Ok(r) => out.extend(r),
                Err(e) => {
                    let mut ids = Vec::new();
                    f.tree.targets(&mut ids);
                    let e = e.with_op(&format!("push to {}", f.ctx.name()));
                    out.extend(ids.into_iter().map(|id| (id, Err(e.clone()))));
                }
            }
        }
        out
    }
}

impl Outlet for FanOut {
    fn put(&mut self, chunk: &[u8]) -> crate::Result<()> {
        for f in self.feeds.iter_mut() {
            if let Some(tx) = f.tx.as_mut() {
                if let Err(e) = tx.write(chunk) {
                    f.error = Some(FileError::interrupted("push", &self.dest, e));
                    f.tx = None; // dropped: the child sees its stream break
                }
            }
        }
        if self.alive() {
            Ok(())
        } else {
            Err(crate::ChannelError::new("every target of the push failed").into())
        }
    }
}

/// A node's part of a push (the `relay` service method): see the module
/// documentation.
pub(crate) fn relay(router: &Router, parent: &Context, args: RelayArgs) -> Results {
    let dest = local_path(&args.dest);
    let mut own = if args.tree.target {
        Some(Sink::plan(
            &dest,
            args.entries.clone(),
            args.opts.clone(),
            true,
            Ticker::new(None, &[]),
        ))
    } else {
        None
    };
    let mut rx = BulkReceiver::open(router, args.opts.window as usize, Some(parent));
    let mut fan = FanOut::open(
        router,
        &args.tree.children,
        &dest,
        &args.entries,
        &args.opts,
    );
    let plan = super::service::Plan {
        plans: Vec::<FilePlan>::new(),
        target: rx.target(),
    };
    let sent = args.plan_to.send(&Ok::<_, FileError>(plan));
    let mut own_failed: Option<FileError> = None;
    let r = match sent {
        Ok(()) => super::service::pump(&mut rx, args.opts.timeout, |chunk| {
            // Own copy first: the chunk then moves on without a copy.
            if let Some(Ok(sink)) = own.as_mut() {
                if own_failed.is_none() {
                    if let Err(e) = sink.feed(chunk) {
                        own_failed = Some(e);
                    }
                }
            }
            if fan.alive() {
                let _ = fan.put(chunk);
            }
        }),
        Err(e) => Err(e),
    };
    let mut results = fan.finish(r.is_ok(), args.opts.timeout);
    if let Some(sink) = own {
        let answer: Answer<Report> = match (sink, &r, own_failed) {
            (Err(e), _, _) => Err(e),
            (Ok(_), _, Some(e)) => Err(e),
            (Ok(s), Err(e), None) => Err(s.abort(e)),
            (Ok(s), Ok(()), None) => s.finish(),
        };
        results.insert(0, (args.tree.id, answer));
    }
    results
}

/// Pushes `local` (here) to `remote` in every target: see
/// [`super::push`].
pub(crate) fn push(
    router: &Router,
    targets: &[Context],
    local: &Path,
    remote: &Path,
    opts: &super::Options,
) -> Vec<(Context, Answer<Report>)> {
    let wire = opts.wire();
    let fail_all = |e: FileError| {
        targets
            .iter()
            .map(|t| (t.clone(), Err(e.clone())))
            .collect()
    };
    let entries = match super::source::scan(local) {
        Ok(e) => e,
        Err(e) => return fail_all(e),
    };
    let (roots, mut failed) = shape(router, targets, remote, &wire);
    let mut fan = FanOut::open(router, &roots, remote, &entries, &wire);
    // Files are sent whole; directories and links travel in the manifest
    // (a record for them would be one the receivers do not expect).
    let plans: Vec<FilePlan> = entries
        .iter()
        .map(|e| {
            if e.is_file() {
                FilePlan::Fresh
            } else {
                FilePlan::NoData
            }
        })
        .collect();
    let mut ticker = Ticker::new(opts.progress.as_deref(), &entries);
    let sent = if fan.alive() {
        super::source::send(
            local,
            &entries,
            &plans,
            wire.checksum,
            &mut fan,
            &mut ticker,
        )
    } else {
        Ok(Default::default())
    };
    let source_error = sent.as_ref().err().cloned();
    let results = fan.finish(sent.is_ok(), wire.timeout);
    let mut by_id: BTreeMap<u32, Answer<Report>> = results.into_iter().collect();
    by_id.append(&mut failed);
    targets
        .iter()
        .map(|t| {
            let r = match (by_id.remove(&t.context_id()), &source_error) {
                (_, Some(e)) => Err(e.clone()),
                (Some(r), None) => r,
                (None, None) => Err(FileError::interrupted(
                    "push",
                    remote,
                    "no result came back",
                )),
            };
            (t.clone(), r)
        })
        .collect()
}

/// The push tree below this context, from each target's ancestry; the
/// targets whose ancestry could not be had fail at once.
fn shape(
    router: &Router,
    targets: &[Context],
    remote: &Path,
    opts: &WireOptions,
) -> (Vec<Subtree>, BTreeMap<u32, Answer<Report>>) {
    let me = router.context_id();
    let mut failed = BTreeMap::new();
    // parent id → child ids (BTreeMap: a stable order), and target ids.
    let mut kids: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut is_target = std::collections::BTreeSet::new();
    let calls: Vec<_> = targets
        .iter()
        .map(|t| (t, t.call_service_async::<push_service::ancestry>(())))
        .collect();
    for (t, call) in calls {
        let anc = match call.and_then(|c| c.get(Some(opts.timeout))) {
            Ok(a) => a,
            Err(e) => {
                failed.insert(
                    t.context_id(),
                    Err(FileError::interrupted("push", remote, e)),
                );
                continue;
            }
        };
        // Nearest first, ending with the master: keep what is below `me`.
        let mut path: Vec<u32> = anc.iter().rev().copied().collect();
        if let Some(i) = path.iter().position(|&id| id == me) {
            path.drain(..=i);
        } else {
            path.clear();
        }
        path.push(t.context_id());
        is_target.insert(t.context_id());
        let mut parent = me;
        for id in path {
            let v = kids.entry(parent).or_default();
            if !v.contains(&id) {
                v.push(id);
            }
            parent = id;
        }
    }
    fn build(
        id: u32,
        kids: &BTreeMap<u32, Vec<u32>>,
        targets: &std::collections::BTreeSet<u32>,
    ) -> Vec<Subtree> {
        let Some(v) = kids.get(&id) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for &c in v {
            let below = build(c, kids, targets);
            if !targets.contains(&c) && below.len() == 1 {
                out.extend(below); // a pass-through: routing costs the same
            } else {
                out.push(Subtree {
                    id: c,
                    target: targets.contains(&c),
                    children: below,
                });
            }
        }
        out
    }
    (build(me, &kids, &is_target), failed)
}
