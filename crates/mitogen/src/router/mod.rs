//! [`Router`]: the routing table, the handle registry and the control plane.
//!
//! Every message, local or remote, passes through [`Core::route`]: it is
//! delivered to a handler when addressed to this context, forwarded down a
//! stream when a route exists, sent to the parent otherwise, and answered
//! with a dead message (carrying a reason) when none of that is possible.
//! Messages arriving from a child stream are checked first: their `src_id`
//! must route back through that stream and `auth_id` must equal `src_id`
//! (see `security` in `docs/ARCHITECTURE.md`). Handler callbacks never run
//! while a router lock is held.

use crate::broker::{Broker, Loop, Participant};
use crate::callbacks::{Callbacks, UserSink};
use crate::error::Result;
use crate::events::RouterEvents;
use crate::frame::{handle, DEFAULT_MAX_MESSAGE_SIZE};
use crate::link::{Stream, DEFAULT_MAX_QUEUED};
use crate::message::Message;
use crate::reap::Reaper;
use crate::reassembly::{Reassembly, DEFAULT_MAX_PAYLOAD};
use crate::sync::lock;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

mod deliver;
mod links;
mod routing;

pub(crate) use links::outcome_reason;

/// Decides whether a handler accepts a message; refused messages are
/// answered with a dead message saying "refused by policy".
pub type Policy = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

pub(crate) type Sink = Box<dyn Fn(Message) + Send + Sync>;

/// How long a user thread waits for room in a full link before its send
/// fails with a [`crate::TimeoutError`]: the peer made no progress for that long.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

struct Handler {
    sink: Sink,
    persist: bool,
    respondent: Option<u32>,
    policy: Option<Policy>,
}

/// Router state shared by every handle, the broker and the streams.
pub(crate) struct Core {
    pub(crate) broker: Broker,
    pub(crate) id: u32,
    pub(crate) parent_ids: Vec<u32>,
    pub(crate) name: String,
    handlers: Mutex<HashMap<u32, Arc<Handler>>>,
    next_handle: AtomicU32,
    routes: RwLock<HashMap<u32, Arc<Stream>>>,
    parent: RwLock<Option<Arc<Stream>>>,
    streams: Mutex<HashMap<u64, Arc<Stream>>>,
    names: Mutex<HashMap<u32, String>>,
    next_context_id: AtomicU32,
    reaper: Reaper,
    pub(crate) events: RouterEvents,
    /// Master only: id → the stream (branch) it was allocated behind.
    allocated: Mutex<HashMap<u32, u64>>,
    pub(crate) debug: AtomicBool,
    pub(crate) profiling: AtomicBool,
    pub(crate) unidirectional: AtomicBool,
    max_message_size: AtomicUsize,
    /// Bound of one message put together from fragments.
    max_payload: AtomicUsize,
    /// Bound of each link's output queue.
    max_queued: AtomicUsize,
    /// How long a user thread waits for room in a full link (ms; 0: no
    /// limit).
    send_timeout_ms: AtomicU64,
    next_frag_id: AtomicU32,
    reassembly: Arc<Mutex<Reassembly>>,
    /// Where user handler callbacks run.
    callbacks: Arc<Callbacks>,
    owns_broker: bool,
    /// Called on the broker thread when the link to the parent is lost.
    pub(crate) on_parent_lost: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// Connects under way, ended by the broker's shutdown.
    pub(crate) connects: crate::connect::inflight::Connects,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Core(id={})", self.id)
    }
}

/// Routes messages between this context, its parent and its children, and
/// creates new contexts. Cloning is cheap; when the last clone is dropped,
/// a router that created its own broker shuts it down.
#[derive(Clone)]
pub struct Router {
    owner: Arc<Owner>,
}

struct Owner {
    core: Arc<Core>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.core.owns_broker {
            self.core.broker.shutdown();
            self.core.broker.join();
        }
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("context_id", &self.owner.core.id)
            .finish()
    }
}

impl Router {
    /// A router with a private broker, stopped when the last clone drops.
    pub fn new() -> Result<Router> {
        let broker = Broker::new_detached()?;
        Ok(Router::from_core(Core::new(
            broker,
            true,
            crate::context_id(),
            crate::parent_ids().to_vec(),
            None,
        )))
    }

    /// A router on an existing broker (several routers may share one).
    pub fn with_broker(broker: &Broker) -> Router {
        Router::from_core(Core::new(
            broker.handle(),
            false,
            crate::context_id(),
            crate::parent_ids().to_vec(),
            None,
        ))
    }

    pub(crate) fn from_core(core: Arc<Core>) -> Router {
        Router {
            owner: Arc::new(Owner { core }),
        }
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.owner.core
    }

    /// The broker this router runs on.
    pub fn broker(&self) -> &Broker {
        &self.owner.core.broker
    }

    /// This router's context id.
    pub fn context_id(&self) -> u32 {
        self.owner.core.id
    }

    /// Registers `sink` for messages to a new handle and returns the
    /// handle. `persist: false` removes it after one message; `respondent`
    /// delivers a dead message when that context disconnects; `policy`
    /// refuses messages with a dead reply.
    ///
    /// `sink` runs on this router's handler thread, one message at a time
    /// in arrival order, never on the thread reading the link: it may
    /// block, and may call contexts (even behind the link its message came
    /// on). A panic in it is logged with the handle and contained; the
    /// handler stays registered.
    pub fn add_handler(
        &self,
        sink: impl Fn(Message) + Send + Sync + 'static,
        persist: bool,
        respondent: Option<u32>,
        policy: Option<Policy>,
    ) -> u32 {
        let core = &self.owner.core;
        let h = core.next_handle.fetch_add(1, Ordering::Relaxed);
        let user: UserSink = Arc::new(sink);
        let callbacks = core.callbacks.clone();
        let sink: Sink = Box::new(move |m| callbacks.run(h, user.clone(), m));
        core.add_handler_at(h, sink, persist, respondent, policy);
        core.check_respondent(respondent);
        h
    }

    /// Removes a handler; later messages to it get a dead reply.
    pub fn del_handler(&self, handle: u32) {
        self.owner.core.del_handler(handle);
    }

    /// Sends `msg` (its `dst_id` and `handle` must be set). The source and
    /// authority are this context.
    pub fn route(&self, msg: Message) -> Result<()> {
        self.owner.core.send(msg)
    }

    /// A fresh context id, unique in the whole tree: generated here in the
    /// master, asked of the master (`ALLOCATE_ID`) in a child.
    pub fn allocate_id(&self) -> Result<u32> {
        self.owner.core.allocate_id()
    }

    /// Makes every context started from now on log at debug level to
    /// `/tmp/mitogen.<pid>.log`, and this one too.
    pub fn enable_debug(&self) {
        self.owner.core.debug.store(true, Ordering::Relaxed);
        crate::logging::enable_debug_file();
    }

    /// Whether new contexts are started with profiling on.
    pub fn profiling(&self) -> bool {
        self.owner.core.profiling.load(Ordering::Relaxed)
    }

    /// Turns profiling on or off for contexts started from now on: each
    /// writes `/tmp/mitogen.stats.<pid>.<thread>.log` when it exits.
    pub fn set_profiling(&self, on: bool) {
        self.owner.core.profiling.store(on, Ordering::Relaxed);
    }

    /// Whether this router refuses sibling-to-sibling traffic.
    pub fn unidirectional(&self) -> bool {
        self.owner.core.unidirectional.load(Ordering::Relaxed)
    }

    /// Sets unidirectional routing (inherited by new children).
    pub fn set_unidirectional(&self, on: bool) {
        self.owner.core.unidirectional.store(on, Ordering::Relaxed);
    }

    /// Largest payload accepted on receive and on route.
    pub fn max_message_size(&self) -> usize {
        self.owner.core.max_message_size()
    }

    /// Changes the limit for streams created from now on, and for routing.
    /// It bounds one frame; larger messages travel as several frames (see
    /// [`Router::set_max_payload_size`]).
    pub fn set_max_message_size(&self, n: usize) {
        self.owner.core.max_message_size.store(n, Ordering::Relaxed);
    }

    /// Largest message, argument or result (split into frames of at most
    /// [`Router::max_message_size`] on the way), that this context sends
    /// or accepts; default [`crate::DEFAULT_MAX_PAYLOAD`] (4 GiB). It also bounds
    /// what one peer may have partly sent here at any time.
    pub fn max_payload_size(&self) -> usize {
        self.owner.core.max_payload.load(Ordering::Relaxed)
    }

    /// Changes [`Router::max_payload_size`].
    pub fn set_max_payload_size(&self, n: usize) {
        self.owner.core.max_payload.store(n, Ordering::Relaxed);
    }

    /// Bound of each link's output queue, in bytes; default
    /// [`crate::DEFAULT_MAX_QUEUED`] (16 MiB). A user thread sending into
    /// a full link waits (at most [`Router::send_timeout`]); traffic
    /// relayed from another link pauses that link instead, so no context
    /// buffers without bound on another's behalf.
    pub fn max_queued(&self) -> usize {
        self.owner.core.max_queued.load(Ordering::Relaxed)
    }

    /// Changes [`Router::max_queued`] for links attached from now on.
    pub fn set_max_queued(&self, n: usize) {
        self.owner
            .core
            .max_queued
            .store(n.max(1), Ordering::Relaxed);
    }

    /// How long a send waits for room in a full link before failing with
    /// a [`crate::TimeoutError`] (`None`: as long as the link lives); default
    /// [`crate::DEFAULT_SEND_TIMEOUT`]. Each wait counts from when it began, so a
    /// slow but moving peer never trips it.
    pub fn send_timeout(&self) -> Option<Duration> {
        self.owner.core.send_timeout()
    }

    /// Changes [`Router::send_timeout`].
    pub fn set_send_timeout(&self, t: Option<Duration>) {
        let ms = t.map_or(0, |t| (t.as_millis() as u64).max(1));
        self.owner.core.send_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// This context, as a [`crate::Context`] (to address its own handles, e.g.
    /// with a [`crate::Sender`]).
    pub fn myself(&self) -> crate::Context {
        let core = &self.owner.core;
        crate::Context::new(core.clone(), core.id, &core.name)
    }

    /// Stops the broker (all routers on it) and waits for it.
    pub fn shutdown(&self) {
        self.owner.core.broker.shutdown();
        self.owner.core.broker.join();
    }
}

impl Core {
    pub(crate) fn new(
        broker: Broker,
        owns_broker: bool,
        id: u32,
        parent_ids: Vec<u32>,
        name: Option<String>,
    ) -> Arc<Core> {
        let core = Arc::new(Core {
            broker: broker.handle(),
            id,
            parent_ids,
            name: name.unwrap_or_else(|| {
                if id == 0 {
                    "master".into()
                } else {
                    format!("context {id}")
                }
            }),
            handlers: Mutex::new(HashMap::new()),
            next_handle: AtomicU32::new(handle::FIRST_DYNAMIC),
            routes: RwLock::new(HashMap::new()),
            parent: RwLock::new(None),
            streams: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            next_context_id: AtomicU32::new(1),
            reaper: Reaper::default(),
            events: RouterEvents::default(),
            allocated: Mutex::new(HashMap::new()),
            debug: AtomicBool::new(false),
            profiling: AtomicBool::new(false),
            unidirectional: AtomicBool::new(false),
            max_message_size: AtomicUsize::new(DEFAULT_MAX_MESSAGE_SIZE),
            max_payload: AtomicUsize::new(DEFAULT_MAX_PAYLOAD),
            max_queued: AtomicUsize::new(DEFAULT_MAX_QUEUED),
            send_timeout_ms: AtomicU64::new(DEFAULT_SEND_TIMEOUT.as_millis() as u64),
            next_frag_id: AtomicU32::new(1),
            reassembly: Arc::new(Mutex::new(Reassembly::default())),
            callbacks: Arc::new(Callbacks::default()),
            owns_broker,
            on_parent_lost: Mutex::new(None),
            connects: Default::default(),
        });
        crate::control::install(&core);
        broker.add_participant(core.clone());
        core
    }

    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_message_size(&self, n: usize) {
        self.max_message_size.store(n, Ordering::Relaxed);
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload.load(Ordering::Relaxed)
    }

    pub(crate) fn max_queued(&self) -> usize {
        self.max_queued.load(Ordering::Relaxed)
    }

    /// Sets `max_payload_size` and `max_queued` (a child inherits its
    /// parent's).
    pub(crate) fn set_flow_limits(&self, max_payload: usize, max_queued: usize) {
        self.max_payload.store(max_payload, Ordering::Relaxed);
        self.max_queued.store(max_queued.max(1), Ordering::Relaxed);
    }

    pub(crate) fn send_timeout(&self) -> Option<Duration> {
        match self.send_timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn allocate_id(self: &Arc<Self>) -> Result<u32> {
        if self.id == crate::identity::MASTER_ID {
            return Ok(self.next_context_id.fetch_add(1, Ordering::Relaxed));
        }
        crate::control::request_id(self)
    }

    /// In the master: a fresh id for a context that will appear behind
    /// `branch` (the stream towards the context starting it). Only that
    /// branch may later announce a route to it (`ADD_ROUTE`).
    pub(crate) fn allocate_id_behind(self: &Arc<Self>, branch: &Stream) -> u32 {
        let id = self.next_context_id.fetch_add(1, Ordering::Relaxed);
        lock(&self.allocated).insert(id, branch.id);
        id
    }

    /// In the master: was `id` handed out for a context behind `branch`?
    pub(crate) fn allocated_behind(&self, id: u32, branch: &Stream) -> bool {
        lock(&self.allocated).get(&id) == Some(&branch.id)
    }

    /// The link to the parent, in a child.
    pub(crate) fn parent_stream(&self) -> Option<Arc<Stream>> {
        self.parent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Streams to children.
    pub(crate) fn child_streams(&self) -> Vec<Arc<Stream>> {
        lock(&self.streams)
            .values()
            .filter(|s| !s.is_parent)
            .cloned()
            .collect()
    }
}

impl Participant for Core {
    fn on_shutdown(self: Arc<Self>, _lp: &mut Loop) {
        for s in self.child_streams() {
            s.close_gracefully();
        }
    }

    fn keep_alive(&self) -> bool {
        !self.child_streams().is_empty() || !self.reaper.is_empty()
    }

    fn on_exit(self: Arc<Self>, _lp: &mut Loop) {
        for s in lock(&self.streams).drain().map(|(_, s)| s) {
            s.mark_closed();
            self.reap_later(&s);
        }
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        *self.parent.write().unwrap_or_else(|e| e.into_inner()) = None;
        // Fail everything still waiting — pending calls, and receivers
        // with or without a respondent: no one hangs on a dead broker.
        let waiting: Vec<(u32, Arc<Handler>)> = lock(&self.handlers)
            .iter()
            .filter(|(k, _)| **k >= handle::FIRST_DYNAMIC)
            .map(|(k, h)| (*k, h.clone()))
            .collect();
        for (k, h) in waiting {
            self.deliver_dead(k, &h, "the broker shut down");
        }
        self.callbacks.stop();
        self.reaper.finish(&self.events.child_exit);
    }
}
