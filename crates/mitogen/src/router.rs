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
use crate::error::{reasons, ChannelError, Error, Result};
use crate::error::{StreamError, TimeoutError};
use crate::events::{Disconnect, RouterEvents};
use crate::frame::{handle, DEFAULT_MAX_MESSAGE_SIZE, FRAGMENT, LAST};
use crate::link::{Body, FrameReader, Mode, ReadState, SendError, Stream, DEFAULT_MAX_QUEUED};
use crate::message::Message;
use crate::reap::Reaper;
use crate::reassembly::{Assembled, Reassembly, DEFAULT_MAX_PAYLOAD, FRAGMENT_SIZE};
use crate::sync::lock;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Decides whether a handler accepts a message; refused messages are
/// answered with a dead message saying "refused by policy".
pub type Policy = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

pub(crate) type Sink = Box<dyn Fn(Message) + Send + Sync>;

/// How long a user thread waits for room in a full link before its send
/// fails with a [`TimeoutError`]: the peer made no progress for that long.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

struct Handler {
    sink: Sink,
    persist: bool,
    respondent: Option<u32>,
    policy: Option<Policy>,
}

/// Runs a sink, containing a panic: a bug behind one handle must not
/// unwind through the thread reading a link.
fn run_sink(handle: u32, sink: &Sink, msg: Message) {
    let run = std::panic::AssertUnwindSafe(|| sink(msg));
    if let Err(p) = std::panic::catch_unwind(run) {
        let e = crate::error::CallError::from_panic(&format!("handler {handle}"), &*p);
        tracing::error!("mitogen: {e}");
    }
}

/// `true` when `e` says the link is closed or broken (its sender is told
/// with a dead message), not full.
fn err_is_closed(e: &Error) -> bool {
    match e {
        Error::Stream(s) => s.kind() != Some(std::io::ErrorKind::WouldBlock),
        _ => false,
    }
}

/// Why a read pass ended a stream, for logs and dead messages.
pub(crate) fn outcome_reason(
    s: &Stream,
    outcome: std::result::Result<ReadState, crate::link::ReadError>,
) -> String {
    match outcome {
        Ok(ReadState::Eof) | Ok(ReadState::Open) => "the peer closed the link".to_string(),
        Err(e) => {
            tracing::error!("mitogen: disconnecting {}: {e}", s.name);
            e.to_string()
        }
    }
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
    reassembly: Mutex<Reassembly>,
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
    /// or accepts; default [`DEFAULT_MAX_PAYLOAD`] (4 GiB). It also bounds
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
    /// a [`TimeoutError`] (`None`: as long as the link lives); default
    /// [`DEFAULT_SEND_TIMEOUT`]. Each wait counts from when it began, so a
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
            reassembly: Mutex::new(Reassembly::default()),
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

    pub(crate) fn add_handler(
        self: &Arc<Self>,
        sink: Sink,
        persist: bool,
        respondent: Option<u32>,
        policy: Option<Policy>,
    ) -> u32 {
        let h = self.next_handle.fetch_add(1, Ordering::Relaxed);
        self.add_handler_at(h, sink, persist, respondent, policy);
        self.check_respondent(respondent);
        h
    }

    /// Registers `sink` at handle `h` unless `h` is taken; `false` if so.
    pub(crate) fn add_handler_new(
        self: &Arc<Self>,
        h: u32,
        sink: Sink,
        persist: bool,
        respondent: Option<u32>,
        policy: Option<Policy>,
    ) -> bool {
        {
            let mut map = lock(&self.handlers);
            if map.contains_key(&h) {
                return false;
            }
            map.insert(
                h,
                Arc::new(Handler {
                    sink,
                    persist,
                    respondent,
                    policy,
                }),
            );
        }
        self.check_respondent(respondent);
        true
    }

    /// A respondent that is already gone gets its dead message at once.
    fn check_respondent(self: &Arc<Self>, respondent: Option<u32>) {
        if let Some(r) = respondent {
            if r != self.id && self.stream_for(r).is_none() {
                self.fire_dead(&[r], &format!("{} is not connected", self.context_name(r)));
            }
        }
    }

    pub(crate) fn add_handler_at(
        &self,
        h: u32,
        sink: Sink,
        persist: bool,
        respondent: Option<u32>,
        policy: Option<Policy>,
    ) {
        let handler = Arc::new(Handler {
            sink,
            persist,
            respondent,
            policy,
        });
        lock(&self.handlers).insert(h, handler);
    }

    pub(crate) fn del_handler(&self, h: u32) {
        lock(&self.handlers).remove(&h);
    }

    pub(crate) fn context_name(&self, id: u32) -> String {
        match lock(&self.names).get(&id) {
            Some(n) => format!("context {n:?} (id {id})"),
            None => format!("context id {id}"),
        }
    }

    pub(crate) fn set_name(&self, id: u32, name: &str) {
        lock(&self.names).insert(id, name.to_string());
    }

    /// The stream leading towards `id`: a route, or else the parent.
    pub(crate) fn stream_for(&self, id: u32) -> Option<Arc<Stream>> {
        if let Some(s) = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
        {
            return Some(s.clone());
        }
        self.parent
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// `true` while `id` is reachable.
    pub(crate) fn is_connected(&self, id: u32) -> bool {
        id == self.id || self.stream_for(id).is_some()
    }

    pub(crate) fn add_route(&self, id: u32, stream: &Arc<Stream>) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, stream.clone());
    }

    /// Sends a message originating here. From a user thread, waits for
    /// room in a full link (at most the send timeout).
    pub(crate) fn send(self: &Arc<Self>, msg: Message) -> Result<()> {
        let mode = if crate::broker::on_a_broker_thread() || crate::direct::routing_here() {
            Mode::Relay(None)
        } else {
            Mode::Wait(self.send_timeout())
        };
        self.send_with(msg, mode)
    }

    /// Sends a message originating here, meeting a full link as `mode`
    /// says.
    pub(crate) fn send_with(self: &Arc<Self>, mut msg: Message, mode: Mode<'_>) -> Result<()> {
        msg.src_id = self.id;
        msg.auth_id = self.id;
        msg.frag = (0, 0);
        self.route_as(msg, None, mode)
    }

    /// Routes `msg`, which arrived on `from` (`None`: originated here).
    /// Errors are also reported to the sender's reply handle, if any.
    pub(crate) fn route(self: &Arc<Self>, msg: Message, from: Option<&Arc<Stream>>) -> Result<()> {
        self.route_as(msg, from, Mode::Relay(from))
    }

    fn route_as(
        self: &Arc<Self>,
        msg: Message,
        from: Option<&Arc<Stream>>,
        mode: Mode<'_>,
    ) -> Result<()> {
        if msg.dst_id == self.id {
            if msg.frag.0 & FRAGMENT != 0 {
                self.reassemble(msg);
            } else {
                self.deliver(msg);
            }
            return Ok(());
        }
        let max = self.max_payload.load(Ordering::Relaxed);
        if msg.data.len() > max {
            let why = format!(
                "message of {} bytes exceeds max_payload_size {max}",
                msg.data.len()
            );
            self.bounce(&msg, &why);
            return Err(ChannelError::new(why).into());
        }
        let stream = match self.stream_for(msg.dst_id) {
            // From the parent, for an id with no route here: sending it
            // back up would loop. Say so, as for any unroutable message.
            Some(s) if from.is_some_and(|f| f.id == s.id) => None,
            other => other,
        };
        let Some(stream) = stream else {
            let why = format!("{}: {}", reasons::NO_ROUTE, self.context_name(msg.dst_id));
            self.bounce(&msg, &why);
            return Err(ChannelError::new(why).into());
        };
        if let Some(f) = from {
            if self.unidirectional.load(Ordering::Relaxed) && !f.is_parent && !stream.is_parent {
                let why = format!(
                    "{}: unidirectional routing forbids sibling traffic",
                    reasons::REFUSED
                );
                self.bounce(&msg, &why);
                return Ok(());
            }
            if !stream.is_parent {
                stream.note_egress(msg.src_id);
            }
        }
        self.transmit(&stream, msg, mode)
    }

    /// Writes `msg` to `stream`, split into fragments when larger than a
    /// frame may be.
    fn transmit(self: &Arc<Self>, stream: &Stream, msg: Message, mode: Mode<'_>) -> Result<()> {
        let limit = FRAGMENT_SIZE.min(self.max_message_size()).max(1);
        let mut h = msg.header();
        let reply = (msg.src_id, msg.reply_to, msg.is_dead());
        let sent = if msg.data.len() <= limit || msg.frag.0 != 0 {
            stream.send_frame(h.encode(), Body::Owned(msg.data), mode)
        } else {
            let id = loop {
                let id = self.next_frag_id.fetch_add(1, Ordering::Relaxed);
                if id != 0 {
                    break id;
                }
            };
            let len = msg.data.len();
            let buf = Arc::new(msg.data);
            let mut start = 0;
            let mut mode = mode;
            let mut sent = Ok(());
            while start < len && sent.is_ok() {
                let end = (start + limit).min(len);
                h.flags = FRAGMENT | if end == len { LAST } else { 0 };
                h.frag_id = id;
                h.length = (end - start) as u32;
                sent = stream.send_frame(h.encode(), Body::Shared(buf.clone(), start, end), mode);
                if sent.is_err() && start > 0 {
                    // Tell the destination the rest will not come, so it
                    // frees what it holds (and its waiter learns).
                    h.flags = FRAGMENT | LAST;
                    h.length = 0;
                    h.encoding = crate::frame::Encoding::Dead;
                    let _ =
                        stream.send_frame(h.encode(), Body::Owned(Vec::new()), Mode::Relay(None));
                }
                if let Mode::Try = mode {
                    // Once the first fragment is in, the rest must follow.
                    mode = Mode::Wait(self.send_timeout());
                }
                start = end;
            }
            sent
        };
        let err: Error = match sent {
            Ok(()) => return Ok(()),
            Err(SendError::Closed(why)) => StreamError::new(why).into(),
            Err(SendError::Io(e)) => {
                StreamError::io(format!("writing to {} failed: {e}", stream.name), e).into()
            }
            Err(SendError::Full) => StreamError::with_kind(
                format!(
                    "the link to {} is full ({} bytes queued)",
                    stream.name,
                    stream.queued()
                ),
                std::io::ErrorKind::WouldBlock,
            )
            .into(),
            Err(SendError::TimedOut(after)) => TimeoutError::new(
                format!(
                    "room in the link to {} (its peer stopped reading)",
                    stream.name
                ),
                after,
            )
            .into(),
        };
        if matches!(err, Error::Stream(_)) && err_is_closed(&err) {
            self.answer_dead(reply, &err.to_string());
        }
        Err(err)
    }

    /// Answers `msg` with a dead message, unless it asked for no reply or
    /// is itself dead (dead messages are never answered: no ping-pong).
    pub(crate) fn bounce(self: &Arc<Self>, msg: &Message, reason: &str) {
        self.answer_dead((msg.src_id, msg.reply_to, msg.is_dead()), reason);
    }

    /// [`Core::bounce`] from a message's `(src_id, reply_to, is_dead)`.
    fn answer_dead(self: &Arc<Self>, (src, reply_to, dead): (u32, u32, bool), reason: &str) {
        if reply_to == 0 || dead {
            tracing::debug!("mitogen: dropped a message from {src}: {reason}");
            return;
        }
        let mut m = Message::dead(reason).to(src, reply_to);
        m.src_id = self.id;
        m.auth_id = self.id;
        let _ = self.route_as(m, None, Mode::Relay(None));
    }

    /// Adds a fragment addressed here; delivers the message it completes.
    fn reassemble(self: &Arc<Self>, msg: Message) {
        let max = self.max_payload.load(Ordering::Relaxed);
        let got = lock(&self.reassembly).add(msg, max);
        match got {
            Assembled::Done(m) => self.deliver(m),
            Assembled::Partial | Assembled::Dropped => {}
            Assembled::Aborted(m) => self.deliver(m),
            Assembled::TooLarge(m) => {
                let why = format!("message exceeds max_payload_size {max} of {}", self.name);
                tracing::warn!("mitogen: dropped {m:?}: {why}");
                self.bounce(&m, &why);
            }
        }
    }

    fn deliver(self: &Arc<Self>, mut msg: Message) {
        let handler = {
            let mut map = lock(&self.handlers);
            match map.get(&msg.handle) {
                Some(h) if h.persist => Some(h.clone()),
                Some(_) => map.remove(&msg.handle),
                None => None,
            }
        };
        let Some(h) = handler else {
            self.bounce(
                &msg,
                &format!("{} {} in {}", reasons::NO_HANDLE, msg.handle, self.name),
            );
            return;
        };
        if let Some(policy) = &h.policy {
            if !msg.is_dead() && !policy(&msg) {
                tracing::warn!("mitogen: policy refused {msg:?}");
                if !h.persist {
                    lock(&self.handlers).insert(msg.handle, h.clone());
                }
                self.bounce(&msg, reasons::REFUSED);
                return;
            }
        }
        msg.core = Some(self.clone());
        let handle = msg.handle;
        run_sink(handle, &h.sink, msg);
    }

    /// Delivers a dead message to every handler whose respondent is in
    /// `lost`.
    pub(crate) fn fire_dead(self: &Arc<Self>, lost: &[u32], reason: &str) {
        if lost.is_empty() {
            return;
        }
        lock(&self.reassembly).forget(lost);
        let hit: Vec<(u32, Arc<Handler>)> = {
            let mut map = lock(&self.handlers);
            let keys: Vec<u32> = map
                .iter()
                .filter(|(_, h)| h.respondent.is_some_and(|r| lost.contains(&r)))
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| {
                    let h = map.get(&k)?.clone();
                    if !h.persist {
                        map.remove(&k);
                    }
                    Some((k, h))
                })
                .collect()
        };
        for (k, h) in hit {
            self.deliver_dead(k, &h, reason);
        }
    }

    /// Hands `h` (registered at handle `k`) a dead message, as if from its
    /// respondent.
    fn deliver_dead(self: &Arc<Self>, k: u32, h: &Handler, reason: &str) {
        let mut m = Message::dead(reason).to(self.id, k);
        m.src_id = h.respondent.unwrap_or(self.id);
        m.core = Some(self.clone());
        run_sink(k, &h.sink, m);
    }

    /// Takes ownership of a connected stream: routes, broker registration.
    /// `reader` may hold bytes read past the handshake.
    pub(crate) fn attach(self: &Arc<Self>, stream: Arc<Stream>, reader: FrameReader) {
        *lock(&stream.reader) = reader;
        stream.set_max_queued(self.max_queued.load(Ordering::Relaxed));
        if stream.is_parent {
            *self.parent.write().unwrap_or_else(|e| e.into_inner()) = Some(stream.clone());
        } else {
            self.add_route(stream.remote_id, &stream);
            self.set_name(stream.remote_id, &stream.name);
        }
        lock(&self.streams).insert(stream.id, stream.clone());
        let core = self.clone();
        self.broker
            .defer_loop(Box::new(move |lp| core.register_stream(lp, stream)));
    }

    fn register_stream(self: &Arc<Self>, lp: &mut Loop, stream: Arc<Stream>) {
        use mio::Interest;
        let (rfd, wfd) = (stream.rfd(), stream.wfd());
        let s = stream.clone();
        let wtoken = lp.register(
            wfd,
            Interest::PRIORITY,
            Box::new(move |_, _| s.flush().is_ok()),
        );
        let _ = stream.broker.set(self.broker.clone());
        stream
            .write_token
            .store(wtoken.0, std::sync::atomic::Ordering::Release);
        stream.registered();
        let core = self.clone();
        let s = stream.clone();
        let rtoken = lp.register(
            rfd,
            Interest::READABLE,
            Box::new(move |lp, _| {
                match crate::direct::try_read_pass(&core, &s) {
                    // A waiting thread is reading; it hands back when done.
                    None | Some(Ok(ReadState::Open)) => true,
                    Some(outcome) => {
                        core.close_stream(lp, &s, &outcome_reason(&s, outcome));
                        false
                    }
                }
            }),
        );
        stream
            .read_token
            .store(rtoken.0, std::sync::atomic::Ordering::Release);
    }

    /// Ends a stream whose reading failed or ended: stops watching both
    /// descriptors (dropping their sources), then the disconnect work.
    /// Safe to call twice: only the first call does anything.
    pub(crate) fn close_stream(self: &Arc<Self>, lp: &mut Loop, s: &Arc<Stream>, why: &str) {
        if lock(&self.streams).get(&s.id).is_none() {
            return;
        }
        for (fd, token) in [(s.rfd(), &s.read_token), (s.wfd(), &s.write_token)] {
            let t = token.load(std::sync::atomic::Ordering::Acquire);
            if t != usize::MAX {
                lp.deregister(fd, mio::Token(t));
            }
        }
        self.on_disconnect(lp, s, why);
    }

    /// Security checks on a message from a stream, then routing.
    pub(crate) fn route_in(self: &Arc<Self>, s: &Arc<Stream>, msg: Message) {
        if !s.is_parent {
            let back = self
                .routes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&msg.src_id)
                .map(|r| r.id);
            if back != Some(s.id) {
                tracing::warn!(
                    "mitogen: dropped {msg:?} from {}: src_id does not route back through it",
                    s.name
                );
                return;
            }
            if msg.auth_id != msg.src_id {
                tracing::warn!("mitogen: dropped {msg:?} from {}: forged auth_id", s.name);
                return;
            }
        }
        let _ = self.route(msg, Some(s));
    }

    /// A stream closed: forget its routes, fail what waited on them, tell
    /// the parent, reap the process.
    fn on_disconnect(self: &Arc<Self>, lp: &mut Loop, s: &Arc<Stream>, why: &str) {
        s.mark_closed();
        lock(&self.streams).remove(&s.id);
        let mut lost = Vec::new();
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, r| {
                let keep = r.id != s.id;
                if !keep {
                    lost.push(*id);
                }
                keep
            });
        let lost_parent = s.is_parent && {
            let mut p = self.parent.write().unwrap_or_else(|e| e.into_inner());
            let was = p.as_ref().is_some_and(|p| p.id == s.id);
            if was {
                *p = None;
            }
            was
        };
        tracing::debug!("mitogen: {} disconnected ({why}); lost {lost:?}", s.name);
        let reason = format!("{} disconnected: {why}", self.context_name(s.remote_id));
        if !lost.contains(&s.remote_id) && !s.is_parent {
            lost.push(s.remote_id);
        }
        self.fire_dead(&lost, &reason);
        if !lost_parent {
            crate::control::announce_lost(self, &lost);
            crate::control::announce_lost_down(self, &lost, &reason, Some(s.id));
        }
        self.events.stream_lost.fire(&Disconnect {
            context_id: s.remote_id,
            name: s.name.clone(),
            reason: why.to_string(),
        });
        if lost_parent {
            lost.push(s.remote_id);
        }
        self.announce_disconnects(&lost, &reason);
        if self.reap_later(s) {
            self.schedule_reap(lp);
        }
        if lost_parent {
            if let Some(f) = lock(&self.on_parent_lost).take() {
                f();
            }
        }
    }

    /// Forgets routes to `ids` announced lost by a child, failing waiters.
    pub(crate) fn forget(self: &Arc<Self>, ids: &[u32], reason: &str) {
        self.routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| !ids.contains(id));
        self.fire_dead(ids, reason);
        self.announce_disconnects(ids, reason);
    }

    /// Fires the context-disconnect event for each of `ids`.
    fn announce_disconnects(&self, ids: &[u32], reason: &str) {
        for &id in ids {
            let name = lock(&self.names)
                .get(&id)
                .cloned()
                .unwrap_or_else(|| format!("context {id}"));
            self.events.context_lost.fire(&Disconnect {
                context_id: id,
                name,
                reason: reason.to_string(),
            });
        }
    }

    /// Puts the stream's process, if any, on the reaping list.
    fn reap_later(&self, s: &Stream) -> bool {
        s.child.as_ref().is_some_and(|child| {
            self.reaper.add(child.clone(), &s.name);
            true
        })
    }

    fn schedule_reap(self: &Arc<Self>, lp: &mut Loop) {
        let core = self.clone();
        lp.after(
            Duration::from_millis(5),
            Box::new(move |lp| {
                if core.reaper.pass(&core.events.child_exit) {
                    core.schedule_reap(lp);
                }
            }),
        );
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
