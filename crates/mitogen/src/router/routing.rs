//! Where a message goes: to a handler here, down a link, to the parent,
//! or back to its sender as a dead message; split into fragments when it
//! is larger than a frame, and sent the way its origin allows (a user
//! thread waits for room, relayed traffic pauses its source link).

use crate::error::{reasons, ChannelError, Error, Result};
use crate::error::{StreamError, TimeoutError};
use crate::frame::{FRAGMENT, LAST};
use crate::link::{Body, Mode, SendError, Stream};
use crate::message::Message;
use crate::reassembly::FRAGMENT_SIZE;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::*;

/// `true` when `e` says the link is closed or broken (its sender is told
/// with a dead message), not full.
pub(super) fn err_is_closed(e: &Error) -> bool {
    match e {
        Error::Stream(s) => s.kind() != Some(std::io::ErrorKind::WouldBlock),
        _ => false,
    }
}

impl Core {
    /// `true` while `id` is reachable.
    pub(crate) fn is_connected(&self, id: u32) -> bool {
        id == self.id || self.table.reaches(id)
    }

    /// Sends a message originating here. From a user thread, waits for
    /// room in a full link (at most the send timeout).
    pub(crate) fn send(self: &Arc<Self>, msg: Message) -> Result<()> {
        self.send_via(msg, None)
    }

    /// [`Core::send`] on `via`, the link [`Table::stream_for`] gave for
    /// the destination a moment ago (a sender that looked it up already
    /// saves the second lookup; `None`: look it up).
    ///
    /// [`Table::stream_for`]: super::table::Table::stream_for
    pub(crate) fn send_via(self: &Arc<Self>, msg: Message, via: Option<Arc<Stream>>) -> Result<()> {
        let mode = if crate::broker::on_a_broker_thread() || crate::link::direct::routing_here() {
            Mode::Relay(None)
        } else {
            Mode::Wait(self.limits.send_timeout())
        };
        self.send_with(msg, mode, via)
    }

    /// Sends a message originating here, meeting a full link as `mode`
    /// says; `via` as for [`Core::send_via`].
    pub(crate) fn send_with(
        self: &Arc<Self>,
        mut msg: Message,
        mode: Mode<'_>,
        via: Option<Arc<Stream>>,
    ) -> Result<()> {
        msg.src_id = self.id;
        msg.auth_id = self.id;
        msg.frag = (0, 0);
        self.route_as(msg, None, mode, via)
    }

    /// Routes `msg`, which arrived on `from` (`None`: originated here).
    /// Errors are also reported to the sender's reply handle, if any.
    pub(crate) fn route(self: &Arc<Self>, msg: Message, from: Option<&Arc<Stream>>) -> Result<()> {
        self.route_as(msg, from, Mode::Relay(from), None)
    }

    /// Routes `msg` (see [`Core::route`]), meeting a full link as `mode`
    /// says; `via`: the route to `msg.dst_id`, if already looked up.
    pub(super) fn route_as(
        self: &Arc<Self>,
        msg: Message,
        from: Option<&Arc<Stream>>,
        mode: Mode<'_>,
        via: Option<Arc<Stream>>,
    ) -> Result<()> {
        // A whole message (not a fragment, which is a frame) obeys the
        // message bound wherever it goes, a local handle included.
        let max = self.limits.max_payload();
        if msg.frag.0 & FRAGMENT == 0 && msg.data.len() > max {
            let why = format!(
                "message of {} bytes exceeds max_payload_size {max}",
                msg.data.len()
            );
            tracing::warn!(
                "mitogen: refused a message of {} bytes from {} to {} (handle {}): \
                 over max_payload_size {max}",
                msg.data.len(),
                self.table.context_name(msg.src_id),
                self.table.context_name(msg.dst_id),
                msg.handle
            );
            self.bounce(&msg, &why);
            return Err(ChannelError::new(why).into());
        }
        if msg.dst_id == self.id {
            if msg.frag.0 & FRAGMENT != 0 {
                self.reassemble(msg);
            } else {
                self.deliver(msg);
            }
            return Ok(());
        }
        let stream = match via.or_else(|| self.table.stream_for(msg.dst_id)) {
            // From the parent, for an id with no route here: sending it
            // back up would loop. Say so, as for any unroutable message.
            Some(s) if from.is_some_and(|f| f.id == s.id) => None,
            other => other,
        };
        let Some(stream) = stream else {
            let why = format!(
                "{}: {}",
                reasons::NO_ROUTE,
                self.table.context_name(msg.dst_id)
            );
            self.bounce(&msg, &why);
            return Err(ChannelError::new(why).into());
        };
        if msg.handle == crate::frame::handle::DISCONNECT
            && stream.remote_id == msg.dst_id
            && !stream.is_parent
        {
            // This router holds the link to cut.
            self.cut_link(&stream, &msg, from);
            return Ok(());
        }
        if let Some(f) = from {
            if self.unidirectional.load(Ordering::Relaxed) && !f.is_parent && !stream.is_parent {
                let why = format!(
                    "{}: unidirectional routing forbids sibling traffic",
                    reasons::REFUSED
                );
                tracing::warn!(
                    "mitogen: unidirectional routing refused a message from {} to {} \
                     (arrived from {}, would leave to {})",
                    self.table.context_name(msg.src_id),
                    self.table.context_name(msg.dst_id),
                    f.name,
                    stream.name
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

    /// A fresh id for a message sent in fragments (never 0).
    pub(crate) fn new_frag_id(&self) -> u32 {
        loop {
            let id = self.next_frag_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Writes `msg` to `stream`, split into fragments when larger than a
    /// frame may be.
    pub(super) fn transmit(
        self: &Arc<Self>,
        stream: &Stream,
        msg: Message,
        mode: Mode<'_>,
    ) -> Result<()> {
        let limit = FRAGMENT_SIZE.min(self.limits.max_message_size()).max(1);
        let mut h = msg.header();
        let reply = (msg.src_id, msg.reply_to, msg.is_dead());
        let sent = if msg.data.len() <= limit || msg.frag.0 != 0 {
            stream.send_frame(h.encode(), Body::Owned(msg.data), mode)
        } else {
            let id = self.new_frag_id();
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
                    mode = Mode::Wait(self.limits.send_timeout());
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
            Err(SendError::Stalled(after)) => {
                // Relayed: whoever sent it learns, the link it came on
                // goes on.
                let why = format!(
                    "the link to {} made no progress for {after:?}: message refused",
                    stream.name
                );
                self.answer_dead(reply, &why);
                return Err(ChannelError::new(why).into());
            }
            Err(SendError::TimedOut(after)) => TimeoutError::new(
                format!(
                    "room in the link to {} (its peer stopped reading)",
                    stream.name
                ),
                after,
            )
            .into(),
        };
        if err_is_closed(&err) {
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
    pub(super) fn answer_dead(
        self: &Arc<Self>,
        (src, reply_to, dead): (u32, u32, bool),
        reason: &str,
    ) {
        if reply_to == 0 || dead {
            tracing::debug!("mitogen: dropped a message from {src}: {reason}");
            return;
        }
        let mut m = Message::dead(reason).to(src, reply_to);
        m.src_id = self.id;
        m.auth_id = self.id;
        let _ = self.route_as(m, None, Mode::Relay(None), None);
    }
}
