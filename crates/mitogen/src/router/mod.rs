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
use crate::error::Result;
use crate::events::RouterEvents;
use crate::frame::handle;
use crate::message::Message;
use crate::reap::Reaper;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) mod control;
mod decoding;
mod deliver;
mod limits;
mod links;
mod routing;
mod table;

pub(crate) use decoding::{decoding_core, decoding_for};
use deliver::Inbox;
pub(crate) use limits::FlowLimits;
use limits::Limits;
pub(crate) use links::Reach;
use table::Table;

/// Decides whether a handler accepts a message; refused messages are
/// answered with a dead message saying "refused by policy".
pub type Policy = Arc<dyn Fn(&Message) -> bool + Send + Sync>;

pub(crate) type Sink = Box<dyn Fn(Message) + Send + Sync>;

/// One link of a context and its traffic ([`Router::links`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LinkStats {
    /// The context at the other end.
    pub context_id: u32,
    /// Its name, as this context knows it.
    pub name: String,
    /// `true` for the link to this context's parent.
    pub to_parent: bool,
    /// Bytes written to it (frames with their headers).
    pub bytes_sent: u64,
    /// Bytes read from it.
    pub bytes_received: u64,
}

/// How long [`Router::disconnect`] waits for the router holding the link
/// to cut it.
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Set-up run on every new router, registered by layers above this one
/// (the service host, `service/host.rs`): the router cannot name them
/// without importing upwards.
#[cfg(not(test))]
#[linkme::distributed_slice]
pub(crate) static ON_NEW_ROUTER: [fn(&Arc<Core>)];

/// The unit-test binary links this crate twice (the crate under test and
/// the `testing` dev-dependency) and linkme refuses a slice defined
/// twice: there, routers get no set-up from above (services are tested
/// in `tests/core`).
#[cfg(test)]
pub(crate) static ON_NEW_ROUTER: [fn(&Arc<Core>); 0] = [];

/// How long a user thread waits for room in a full link before its send
/// fails with a [`crate::TimeoutError`]: the peer made no progress for that long.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Router state shared by every handle, the broker and the streams.
pub(crate) struct Core {
    pub(crate) broker: Broker,
    pub(crate) id: u32,
    pub(crate) parent_ids: Vec<u32>,
    pub(crate) name: String,
    /// What is addressed here: handlers, partial messages, callbacks.
    inbox: Inbox,
    /// Which link leads where.
    pub(crate) table: Table,
    reaper: Reaper,
    pub(crate) events: RouterEvents,
    pub(crate) debug: AtomicBool,
    pub(crate) profiling: AtomicBool,
    pub(crate) unidirectional: AtomicBool,
    /// Frame, message and queue bounds; inherited by children.
    pub(crate) limits: Limits,
    next_frag_id: AtomicU32,
    /// A child's ids from its last `ALLOCATE_ID` block, not yet used.
    spare_ids: Mutex<std::ops::Range<u32>>,
    owns_broker: bool,
    /// Called on the broker thread when the link to the parent is lost.
    pub(crate) on_parent_lost: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    /// This context detached from its parent (`ExternalContext::detach`):
    /// losing the parent does not shut it down.
    pub(crate) detached: AtomicBool,
    /// Connects under way, ended by the broker's shutdown.
    pub(crate) connects: crate::connect::inflight::Connects,
    /// The service host (`service/host.rs`), opaque to this layer.
    pub(crate) services: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// Links of processes that attached themselves (`unix.rs`), by link
    /// id: what their traffic may reach (see `links.rs`).
    foreign: links::ForeignLinks,
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
    /// `false` for handles that never stop the broker ([`Router::borrowed`]).
    owning: bool,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if self.owning && self.core.owns_broker {
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
            owner: Arc::new(Owner { core, owning: true }),
        }
    }

    /// A handle that never shuts the broker down when dropped: for state
    /// kept inside the router itself (services), which must not make the
    /// router outlive its last user handle.
    pub(crate) fn borrowed(core: Arc<Core>) -> Router {
        Router {
            owner: Arc::new(Owner {
                core,
                owning: false,
            }),
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
        self.owner
            .core
            .add_user_handler(Arc::new(sink), persist, respondent, policy)
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
        crate::logging::record::enable_debug_file();
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
        self.owner.core.limits.max_message_size()
    }

    /// Changes the limit for streams created from now on, and for routing.
    /// It bounds one frame; larger messages travel as several frames (see
    /// [`Router::set_max_payload_size`]).
    pub fn set_max_message_size(&self, n: usize) {
        self.owner.core.limits.set_max_message_size(n);
    }

    /// Largest message, argument or result (split into frames of at most
    /// [`Router::max_message_size`] on the way), that this context sends
    /// or accepts; default [`crate::DEFAULT_MAX_PAYLOAD`] (4 GiB). It also bounds
    /// what one peer may have partly sent here at any time.
    pub fn max_payload_size(&self) -> usize {
        self.owner.core.limits.max_payload()
    }

    /// Changes [`Router::max_payload_size`].
    pub fn set_max_payload_size(&self, n: usize) {
        self.owner.core.limits.set_max_payload(n);
    }

    /// Bound of each link's output queue, in bytes; default
    /// [`crate::DEFAULT_MAX_QUEUED`] (16 MiB). A user thread sending into
    /// a full link waits (at most [`Router::send_timeout`]); traffic
    /// relayed from another link pauses that link instead, so no context
    /// buffers without bound on another's behalf.
    pub fn max_queued(&self) -> usize {
        self.owner.core.limits.max_queued()
    }

    /// Changes [`Router::max_queued`] for links attached from now on.
    pub fn set_max_queued(&self, n: usize) {
        self.owner.core.limits.set_max_queued(n);
    }

    /// How long a send waits for room in a full link before failing with
    /// a [`crate::TimeoutError`] (`None`: as long as the link lives); default
    /// [`crate::DEFAULT_SEND_TIMEOUT`]. Each wait counts from when it began, so a
    /// slow but moving peer never trips it.
    pub fn send_timeout(&self) -> Option<Duration> {
        self.owner.core.limits.send_timeout()
    }

    /// Changes [`Router::send_timeout`].
    pub fn set_send_timeout(&self, t: Option<Duration>) {
        self.owner.core.limits.set_send_timeout(t);
    }

    /// This context, as a [`crate::Context`] named `self`, as in the seed:
    /// to address its own handles (e.g. with a [`crate::Sender`]), or to
    /// pass to another context, where it arrives naming this one.
    pub fn myself(&self) -> crate::Context {
        let core = &self.owner.core;
        crate::Context::new(core.clone(), core.id, "self")
    }

    /// Cuts the link to `context`, held here (a child) or further down (by
    /// the router that started it): its pending calls and every waiter on
    /// it fail at once with the disconnect, the disconnect events fire, and
    /// the context, seeing its link end, exits (unless it detached). Returns
    /// once this router has forgotten it. Disconnecting a context that is
    /// already gone does nothing; this context and its parent cannot be
    /// disconnected from here.
    pub fn disconnect(&self, context: &crate::Context) -> Result<()> {
        let core = &self.owner.core;
        let id = context.context_id();
        if id == core.id || core.parent_ids.contains(&id) {
            return Err(crate::ChannelError::new(format!(
                "{}: a context cannot disconnect itself or its parent",
                crate::error::reasons::REFUSED
            ))
            .into());
        }
        if !core.is_connected(id) {
            return Ok(());
        }
        crate::broker::refuse_wait_on_broker("a disconnect")?;
        let answer = crate::Latch::new();
        let h = core.add_latch_handler(answer.clone(), Some(id));
        let mut m =
            Message::encode("disconnected by its parent's router")?.to(id, handle::DISCONNECT);
        m.reply_to = h;
        core.send(m)?;
        let t = DISCONNECT_TIMEOUT;
        let got = answer.get(Some(t));
        core.del_handler(h);
        let msg = got.map_err(|e| match e {
            crate::Error::Timeout(_) => {
                crate::TimeoutError::new(format!("disconnecting {}", context.name()), t).into()
            }
            e => e,
        })?;
        if core.is_connected(id) {
            let why = msg
                .dead_reason()
                .unwrap_or_else(|| "no reason given".into());
            return Err(crate::ChannelError::new(why).into());
        }
        Ok(())
    }

    /// Cuts the links to every child of this context at once (see
    /// [`Router::disconnect`]); returns once they are all forgotten.
    pub fn disconnect_all(&self) -> Result<()> {
        crate::broker::refuse_wait_on_broker("a disconnect")?;
        let core = self.owner.core.clone();
        let done = crate::Latch::new();
        let d = done.clone();
        let c = core.clone();
        core.broker.defer_loop(Box::new(move |lp| {
            for s in c.table.child_streams() {
                c.close_stream(lp, &s, "disconnected by its parent's router");
                s.hang_up();
            }
            let _ = d.put(());
        }));
        done.get(Some(DISCONNECT_TIMEOUT)).map_err(|e| match e {
            crate::Error::Timeout(_) => {
                crate::TimeoutError::new("disconnecting every child", DISCONNECT_TIMEOUT).into()
            }
            e => e,
        })
    }

    /// This context's links (to its parent and to each child it started)
    /// and the bytes that went each way on them so far: what a tree of
    /// contexts costs, hop by hop.
    pub fn links(&self) -> Vec<LinkStats> {
        let mut v: Vec<LinkStats> = self
            .owner
            .core
            .table
            .all_streams()
            .iter()
            .map(|s| {
                let (sent, received) = s.traffic();
                LinkStats {
                    context_id: s.remote_id,
                    name: s.name.clone(),
                    to_parent: s.is_parent,
                    bytes_sent: sent,
                    bytes_received: received,
                }
            })
            .collect();
        v.sort_by_key(|l| (!l.to_parent, l.context_id));
        v
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
            inbox: Inbox::default(),
            table: Table::default(),
            reaper: Reaper::default(),
            events: RouterEvents::default(),
            debug: AtomicBool::new(false),
            profiling: AtomicBool::new(false),
            unidirectional: AtomicBool::new(false),
            limits: Limits::default(),
            next_frag_id: AtomicU32::new(1),
            spare_ids: Mutex::new(0..0),
            owns_broker,
            on_parent_lost: Mutex::new(None),
            detached: AtomicBool::new(false),
            connects: Default::default(),
            services: Default::default(),
            foreign: Default::default(),
        });
        crate::panics::install();
        core.table.set_name(core.id, &core.name);
        control::install(&core);
        for setup in ON_NEW_ROUTER {
            setup(&core);
        }
        broker.add_participant(core.clone());
        core
    }

    pub(crate) fn allocate_id(self: &Arc<Self>) -> Result<u32> {
        if self.id == crate::identity::MASTER_ID {
            return Ok(self.table.allocate());
        }
        // One round trip to the master per block of ids, not per id.
        let mut ids = crate::sync::lock(&self.spare_ids);
        if ids.is_empty() {
            *ids = control::request_ids(self)?;
        }
        ids.next().ok_or_else(|| {
            crate::StreamError::new("the master handed out an empty block of ids").into()
        })
    }
}

impl Participant for Core {
    fn on_shutdown(self: Arc<Self>, _lp: &mut Loop) {
        for s in self.table.child_streams() {
            s.close_gracefully();
        }
    }

    fn keep_alive(&self) -> bool {
        !self.table.child_streams().is_empty() || !self.reaper.is_empty()
    }

    fn on_exit(self: Arc<Self>, _lp: &mut Loop) {
        for s in self.table.clear() {
            s.mark_closed();
            self.reap_later(&s);
        }
        self.close_inbox("the broker shut down");
        self.reaper.finish(&self.events.child_exit);
    }
}
