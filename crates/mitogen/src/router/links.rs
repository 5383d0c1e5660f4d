//! The links of a router: attaching one (routes, broker registration),
//! the security checks on what arrives, and what a lost link means
//! (routes forgotten, waiters failed, the news passed up and down, the
//! process reaped).

use crate::broker::Loop;
use crate::events::Disconnect;
use crate::link::{direct, FrameReader, ReadState, Stream};
use crate::message::Message;
use crate::sync::lock;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;

/// What the traffic of a process that attached itself to this context
/// (`unix.rs`: a local process of the same user) may reach. Either way
/// its messages carry this context's authority, as the seed's Unix
/// listener gives them: it is the same user acting through this context.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// This context only; messages for any other are answered dead.
    Here,
    /// Wherever this context may send.
    Tree,
}

/// Attached links by link id. `any` spares the lock on the hot path of
/// routers that never attached one.
#[derive(Default)]
pub(crate) struct ForeignLinks {
    any: AtomicBool,
    links: Mutex<HashMap<u64, Reach>>,
}

impl ForeignLinks {
    fn reach(&self, link: u64) -> Option<Reach> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.links).get(&link).copied()
    }
}

impl Core {
    /// Takes ownership of a connected stream: routes, broker registration.
    /// `reader` may hold bytes read past the handshake.
    pub(crate) fn attach(self: &Arc<Self>, stream: Arc<Stream>, mut reader: FrameReader) {
        reader.set_placement(Arc::new(crate::reassembly::Lender {
            local: self.id,
            reassembly: self.inbox.reassembly.clone(),
        }));
        *lock(&stream.reader) = reader;
        stream.set_flow(self.limits.max_queued(), self.limits.send_timeout());
        self.table.insert(&stream);
        let core = self.clone();
        self.broker
            .defer_loop(Box::new(move |lp| core.register_stream(lp, stream)));
    }

    /// [`Core::attach`] for the link of a process that attached itself:
    /// its messages act with this context's authority, and reach as far
    /// as `reach` says.
    pub(crate) fn attach_foreign(
        self: &Arc<Self>,
        stream: Arc<Stream>,
        reader: FrameReader,
        reach: Reach,
    ) {
        lock(&self.foreign.links).insert(stream.id, reach);
        self.foreign.any.store(true, Ordering::Release);
        self.attach(stream, reader);
    }

    /// Links of attached processes held now.
    pub(crate) fn foreign_links(&self) -> usize {
        lock(&self.foreign.links).len()
    }

    pub(super) fn register_stream(self: &Arc<Self>, lp: &mut Loop, stream: Arc<Stream>) {
        use mio::Interest;
        let (rfd, wfd) = (stream.rfd(), stream.wfd());
        let _ = stream.broker.set(self.broker.clone());
        if stream.one_fd() {
            // One descriptor, one registration: events say which way.
            let core = self.clone();
            let s = stream.clone();
            let token = lp.register(
                rfd,
                Interest::READABLE,
                Box::new(move |lp, ev| {
                    if ev.is_writable() {
                        // A failed write is seen by the read side too.
                        let _ = s.flush();
                    }
                    if !(ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
                        return true;
                    }
                    core.on_readable(lp, &s)
                }),
            );
            for t in [&stream.read_token, &stream.write_token] {
                t.store(token.0, std::sync::atomic::Ordering::Release);
            }
            stream.registered();
            return;
        }
        let s = stream.clone();
        // Parked until a write cannot finish: when `wfd` is a second
        // descriptor of the socket `rfd` is, any interest in it would be
        // woken by each message that arrives.
        let wtoken = lp.register_parked(wfd, Box::new(move |_, _| s.flush().is_ok()));
        stream
            .write_token
            .store(wtoken.0, std::sync::atomic::Ordering::Release);
        stream.registered();
        let core = self.clone();
        let s = stream.clone();
        let rtoken = lp.register(
            rfd,
            Interest::READABLE,
            Box::new(move |lp, _| core.on_readable(lp, &s)),
        );
        stream
            .read_token
            .store(rtoken.0, std::sync::atomic::Ordering::Release);
    }

    /// The broker saw `s` readable: reads and routes what it has, unless a
    /// waiting thread is reading (it hands back when done). Returns
    /// `false` once the stream ended (it is closed, its source dropped).
    fn on_readable(self: &Arc<Self>, lp: &mut Loop, s: &Arc<Stream>) -> bool {
        let route = &mut |h, body| self.route_in(s, Message::from_frame(h, body));
        match direct::try_read_pass(s, route) {
            None | Some(Ok(ReadState::Open)) => true,
            Some(outcome) => {
                self.close_stream(lp, s, &direct::end_reason(s, outcome));
                false
            }
        }
    }

    /// Reads `s` on this thread, routing what arrives, until `done()` or
    /// `deadline` (see `link/direct.rs`; `poll_first`: what is awaited
    /// is likely not there yet). Returns `false` when it read nothing: the caller
    /// blocks on its latch instead.
    pub(crate) fn read_until(
        self: &Arc<Self>,
        s: &Arc<Stream>,
        done: &dyn Fn() -> bool,
        deadline: Option<std::time::Instant>,
        poll_first: bool,
    ) -> bool {
        match direct::Hold::take(s) {
            Some(held) => self.read_held(held, done, deadline, poll_first),
            None => {
                s.flush_own_handover();
                false
            }
        }
    }

    /// [`Core::read_until`] on a link this thread already holds (taken
    /// before it sent what it now waits the answer to).
    pub(crate) fn read_held(
        self: &Arc<Self>,
        held: direct::Hold<'_>,
        done: &dyn Fn() -> bool,
        deadline: Option<std::time::Instant>,
        poll_first: bool,
    ) -> bool {
        let s = held.stream();
        // What this thread handed the broker to write (its request, its
        // last answer) must not wait for the broker's turn to end.
        s.flush_own_handover();
        let route = &mut |h, body| self.route_in(s, Message::from_frame(h, body));
        let pass = held.read_until(route, done, deadline, poll_first);
        if let Some(outcome) = pass.ended {
            // The broker owns disconnects: hand it the end it cannot see.
            let why = direct::end_reason(s, outcome);
            let (c, st) = (self.clone(), s.clone());
            self.broker
                .defer_loop(Box::new(move |lp| c.close_stream(lp, &st, &why)));
        }
        pass.ran
    }

    /// A `DISCONNECT` for the peer of `s`, a child: closes the link, if
    /// asked from here or from above (never by a child, which must not cut
    /// its siblings off).
    pub(super) fn cut_link(
        self: &Arc<Self>,
        s: &Arc<Stream>,
        msg: &Message,
        from: Option<&Arc<Stream>>,
    ) {
        let allowed = from.map_or(true, |f| f.is_parent)
            && (msg.auth_id == self.id || self.parent_ids.contains(&msg.auth_id));
        if !allowed {
            tracing::warn!(
                "mitogen: refused to disconnect {} at the request of {}",
                self.table.context_name(msg.dst_id),
                self.table.context_name(msg.auth_id)
            );
            self.bounce(msg, crate::error::reasons::REFUSED);
            return;
        }
        let why = msg
            .decode::<String>()
            .unwrap_or_else(|_| "disconnected".to_string());
        tracing::debug!("mitogen: disconnecting {}: {why}", s.name);
        let (core, s) = (self.clone(), s.clone());
        self.broker.defer_loop(Box::new(move |lp| {
            core.close_stream(lp, &s, &why);
            s.hang_up();
        }));
    }

    /// Ends a stream whose reading failed or ended: stops watching both
    /// descriptors (dropping their sources), then the disconnect work.
    /// Safe to call twice: only the first call does anything.
    pub(crate) fn close_stream(self: &Arc<Self>, lp: &mut Loop, s: &Arc<Stream>, why: &str) {
        if !self.table.holds(s) {
            return;
        }
        let both = [(s.rfd(), &s.read_token), (s.wfd(), &s.write_token)];
        // One registration when one descriptor carries both directions.
        let n = if s.one_fd() { 1 } else { 2 };
        for (fd, token) in both.into_iter().take(n) {
            let t = token.load(std::sync::atomic::Ordering::Acquire);
            if t != usize::MAX {
                lp.deregister(fd, mio::Token(t));
            }
        }
        self.on_disconnect(lp, s, why);
    }

    /// Security checks on a message from a stream, then routing.
    pub(crate) fn route_in(self: &Arc<Self>, s: &Arc<Stream>, mut msg: Message) {
        if !s.is_parent {
            let back = self.table.route_link(msg.src_id);
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
            if let Some(reach) = self.foreign.reach(s.id) {
                if reach == Reach::Here && msg.dst_id != self.id {
                    tracing::warn!(
                        "mitogen: refused {msg:?} from {}: it may address {} only",
                        s.name,
                        self.name
                    );
                    self.bounce(&msg, crate::error::reasons::REFUSED);
                    return;
                }
                msg.auth_id = self.id;
            }
        }
        let _ = self.route(msg, Some(s));
    }

    /// A stream closed: forget its routes, fail what waited on them, tell
    /// the parent, reap the process.
    pub(super) fn on_disconnect(self: &Arc<Self>, lp: &mut Loop, s: &Arc<Stream>, why: &str) {
        s.mark_closed();
        lock(&self.foreign.links).remove(&s.id);
        let (mut lost, lost_parent) = self.table.remove(s);
        let why = if s.detached.load(std::sync::atomic::Ordering::Acquire) {
            "it detached"
        } else {
            why
        };
        tracing::debug!("mitogen: {} disconnected ({why}); lost {lost:?}", s.name);
        let reason = format!(
            "{} disconnected: {why}",
            self.table.context_name(s.remote_id)
        );
        if !lost.contains(&s.remote_id) && !s.is_parent {
            lost.push(s.remote_id);
        }
        self.fire_dead(&lost, &reason);
        if !lost_parent {
            super::control::announce_lost(self, &lost);
            super::control::announce_lost_down(self, &lost, &reason, Some(s.id));
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
        self.table.forget_names_of(&lost);
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
        self.table.forget_routes(ids);
        self.fire_dead(ids, reason);
        self.announce_disconnects(ids, reason);
        self.table.forget_names_of(ids);
    }

    /// Fires the context-disconnect event for each of `ids`.
    pub(super) fn announce_disconnects(&self, ids: &[u32], reason: &str) {
        for &id in ids {
            let name = self
                .table
                .name_of(id)
                .unwrap_or_else(|| format!("context {id}"));
            self.events.context_lost.fire(&Disconnect {
                context_id: id,
                name,
                reason: reason.to_string(),
            });
        }
    }

    /// Puts the stream's process, if any, on the reaping list.
    pub(super) fn reap_later(&self, s: &Stream) -> bool {
        s.child.as_ref().is_some_and(|child| {
            if s.detached.load(std::sync::atomic::Ordering::Acquire) {
                self.reaper.add_detached(child.clone(), &s.name);
            } else {
                self.reaper.add(child.clone(), &s.name);
            }
            true
        })
    }

    pub(super) fn schedule_reap(self: &Arc<Self>, lp: &mut Loop) {
        self.reap_after(lp, Duration::from_millis(5));
    }

    /// Reaps every few milliseconds while children are to be terminated;
    /// once only detached ones are left, once a second (they exit when
    /// their work is done, and must not stay zombies).
    fn reap_after(self: &Arc<Self>, lp: &mut Loop, delay: Duration) {
        let core = self.clone();
        lp.after(
            delay,
            Box::new(move |lp| {
                if core.reaper.pass(&core.events.child_exit) {
                    core.reap_after(lp, Duration::from_millis(5));
                } else if core.reaper.has_detached() {
                    core.reap_after(lp, Duration::from_secs(1));
                }
            }),
        );
    }
}
