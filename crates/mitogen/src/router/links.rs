//! The links of a router: attaching one (routes, broker registration),
//! the security checks on what arrives, and what a lost link means
//! (routes forgotten, waiters failed, the news passed up and down, the
//! process reaped).

use crate::broker::Loop;
use crate::events::Disconnect;
use crate::link::{FrameReader, ReadState, Stream};
use crate::message::Message;
use crate::sync::lock;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::*;

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

impl Core {
    /// Takes ownership of a connected stream: routes, broker registration.
    /// `reader` may hold bytes read past the handshake.
    pub(crate) fn attach(self: &Arc<Self>, stream: Arc<Stream>, mut reader: FrameReader) {
        reader.set_placement(Arc::new(crate::reassembly::Lender {
            local: self.id,
            reassembly: self.reassembly.clone(),
        }));
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

    pub(super) fn register_stream(self: &Arc<Self>, lp: &mut Loop, stream: Arc<Stream>) {
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
    pub(super) fn on_disconnect(self: &Arc<Self>, lp: &mut Loop, s: &Arc<Stream>, why: &str) {
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
    pub(super) fn announce_disconnects(&self, ids: &[u32], reason: &str) {
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
    pub(super) fn reap_later(&self, s: &Stream) -> bool {
        s.child.as_ref().is_some_and(|child| {
            self.reaper.add(child.clone(), &s.name);
            true
        })
    }

    pub(super) fn schedule_reap(self: &Arc<Self>, lp: &mut Loop) {
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
}
