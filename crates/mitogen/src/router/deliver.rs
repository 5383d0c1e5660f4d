//! Delivery to this context's handlers: the handler registry, fragments
//! put together, dead messages to those whose respondent was lost. A sink
//! never runs under a router lock, and a panic in one is contained.

use crate::callbacks::{Callbacks, UserSink};
use crate::error::reasons;
use crate::frame::handle;
use crate::latch::Latch;
use crate::message::Message;
use crate::reassembly::{Assembled, Reassembly};
use crate::sync::{lock, IdHash};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

/// Runs a sink, containing a panic: a bug behind one handle must not
/// unwind through the thread reading a link.
pub(super) fn run_sink(handle: u32, sink: &(dyn Fn(Message) + Send + Sync), msg: Message) {
    let run = std::panic::AssertUnwindSafe(|| sink(msg));
    if let Err(p) = std::panic::catch_unwind(run) {
        let e = crate::error::CallError::from_panic(&format!("handler {handle}"), &*p);
        tracing::error!("mitogen: {e}");
    }
}

/// Where a handler's messages go.
enum Target {
    /// A callback.
    Fn(Sink),
    /// The answer a caller waits for: put on its latch. The commonest
    /// handler (one per call) costs no callback allocation, and its
    /// message no reference to the router: the caller decodes with its
    /// own.
    Latch(Latch<Message>),
}

struct Handler {
    target: Target,
    respondent: Option<u32>,
    policy: Option<Policy>,
}

impl Handler {
    fn run(&self, core: &Arc<Core>, handle: u32, mut msg: Message) {
        match &self.target {
            Target::Fn(f) => {
                msg.origin = Some(core.clone());
                run_sink(handle, &**f, msg)
            }
            Target::Latch(l) => {
                let _ = l.put(msg);
            }
        }
    }
}

/// A registered handler: a one-shot one is taken out of the registry to
/// run, a persistent one shared (run outside the registry's lock).
enum Slot {
    One(Handler),
    Many(Arc<Handler>),
}

impl std::ops::Deref for Slot {
    type Target = Handler;
    fn deref(&self) -> &Handler {
        match self {
            Slot::One(h) => h,
            Slot::Many(h) => h,
        }
    }
}

/// The registry, keyed by handle: handles are handed out in sequence,
/// so [`IdHash`] keeps neighbours together.
type Handlers = HashMap<u32, Slot, IdHash>;

/// What is addressed to this context: the handler registry, the messages
/// being put together from fragments, and the thread user callbacks run
/// on.
pub(super) struct Inbox {
    handlers: Mutex<Handlers>,
    next_handle: AtomicU32,
    /// Shared with each link's reader, which reads fragments addressed
    /// here straight onto their partial message (`reassembly::Lender`).
    pub(super) reassembly: Arc<Mutex<Reassembly>>,
    callbacks: Arc<Callbacks>,
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox {
            handlers: Mutex::default(),
            next_handle: AtomicU32::new(handle::FIRST_DYNAMIC),
            reassembly: Arc::default(),
            callbacks: Arc::default(),
        }
    }
}

impl Core {
    /// Registers a user callback at a new handle; it runs on the handler
    /// thread (see [`crate::Router::add_handler`]).
    pub(super) fn add_user_handler(
        self: &Arc<Self>,
        user: UserSink,
        persist: bool,
        respondent: Option<u32>,
        policy: Option<Policy>,
    ) -> u32 {
        let h = self.inbox.next_handle.fetch_add(1, Ordering::Relaxed);
        let callbacks = self.inbox.callbacks.clone();
        let sink: Sink = Box::new(move |m| callbacks.run(h, user.clone(), m));
        self.register(h, Slot::new(sink, persist, respondent, policy), respondent)
    }

    /// Fails everything still waiting here — pending calls, and receivers
    /// with or without a respondent — and stops the handler thread: no one
    /// hangs on a dead broker.
    pub(super) fn close_inbox(self: &Arc<Self>, reason: &str) {
        let waiting: Vec<(u32, Slot)> = {
            let mut map = lock(&self.inbox.handlers);
            let keys: Vec<u32> = map
                .keys()
                .copied()
                .filter(|k| *k >= handle::FIRST_DYNAMIC)
                .collect();
            keys.into_iter()
                .filter_map(|k| Some((k, take(&mut map, k)?)))
                .collect()
        };
        for (k, h) in waiting {
            self.deliver_dead(k, &h, reason);
        }
        self.inbox.callbacks.stop();
    }

    pub(crate) fn add_handler(
        self: &Arc<Self>,
        sink: Sink,
        persist: bool,
        respondent: Option<u32>,
        policy: Option<Policy>,
    ) -> u32 {
        let h = self.inbox.next_handle.fetch_add(1, Ordering::Relaxed);
        self.register(h, Slot::new(sink, persist, respondent, policy), respondent)
    }

    /// Puts `slot` at handle `h` and checks its respondent; returns `h`.
    fn register(self: &Arc<Self>, h: u32, slot: Slot, respondent: Option<u32>) -> u32 {
        lock(&self.inbox.handlers).insert(h, slot);
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
            let mut map = lock(&self.inbox.handlers);
            if map.contains_key(&h) {
                return false;
            }
            map.insert(h, Slot::new(sink, persist, respondent, policy));
        }
        self.check_respondent(respondent);
        true
    }

    /// A respondent that is already gone gets its dead message at once.
    pub(super) fn check_respondent(self: &Arc<Self>, respondent: Option<u32>) {
        if let Some(r) = respondent {
            if !self.is_connected(r) {
                self.fire_dead(
                    &[r],
                    &format!("{} is not connected", self.table.context_name(r)),
                );
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
        let handler = Slot::new(sink, persist, respondent, policy);
        lock(&self.inbox.handlers).insert(h, handler);
    }

    /// Registers a one-shot handler at a new handle that puts its message
    /// on `latch` (a call's answer, from `respondent`).
    pub(crate) fn add_latch_handler(
        self: &Arc<Self>,
        latch: Latch<Message>,
        respondent: Option<u32>,
    ) -> u32 {
        let h = self.inbox.next_handle.fetch_add(1, Ordering::Relaxed);
        let handler = Handler {
            target: Target::Latch(latch),
            respondent,
            policy: None,
        };
        self.register(h, Slot::One(handler), respondent)
    }

    pub(crate) fn del_handler(&self, h: u32) {
        lock(&self.inbox.handlers).remove(&h);
    }

    /// Adds a fragment addressed here; delivers the message it completes.
    pub(super) fn reassemble(self: &Arc<Self>, msg: Message) {
        let max = self.limits.max_payload();
        let got = lock(&self.inbox.reassembly).add(msg, max);
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

    pub(super) fn deliver(self: &Arc<Self>, msg: Message) {
        let handler = take(&mut lock(&self.inbox.handlers), msg.handle);
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
                if let Slot::One(_) = h {
                    lock(&self.inbox.handlers).insert(msg.handle, h);
                }
                self.bounce(&msg, reasons::REFUSED);
                return;
            }
        }
        h.run(self, msg.handle, msg);
    }

    /// Delivers a dead message to every handler whose respondent is in
    /// `lost`.
    pub(crate) fn fire_dead(self: &Arc<Self>, lost: &[u32], reason: &str) {
        if lost.is_empty() {
            return;
        }
        lock(&self.inbox.reassembly).forget(lost);
        let hit: Vec<(u32, Slot)> = {
            let mut map = lock(&self.inbox.handlers);
            let keys: Vec<u32> = map
                .iter()
                .filter(|(_, h)| h.respondent.is_some_and(|r| lost.contains(&r)))
                .map(|(k, _)| *k)
                .collect();
            keys.into_iter()
                .filter_map(|k| Some((k, take(&mut map, k)?)))
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
        h.run(self, k, m);
    }
}

impl Slot {
    fn new(sink: Sink, persist: bool, respondent: Option<u32>, policy: Option<Policy>) -> Slot {
        let h = Handler {
            target: Target::Fn(sink),
            respondent,
            policy,
        };
        if persist {
            Slot::Many(Arc::new(h))
        } else {
            Slot::One(h)
        }
    }
}

/// The handler at `k` to run: a persistent one shared (it stays), a
/// one-shot one taken out.
fn take(map: &mut Handlers, k: u32) -> Option<Slot> {
    match map.get(&k)? {
        Slot::Many(h) => Some(Slot::Many(h.clone())),
        Slot::One(_) => map.remove(&k),
    }
}
