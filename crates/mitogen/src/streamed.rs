//! A call's payload sent while it is encoded, so a large byte string in
//! its arguments goes to the link straight from the caller's value.
//!
//! Encoding a 1 GiB argument into a payload buffer and then writing that
//! buffer costs a second gigabyte of fresh memory, and (profiled) fresh
//! memory is the slow part. Here the encoder writes into a [`Sink`]: small
//! writes (markers, numbers, short strings) collect in a buffer, and a
//! large one — the body of a byte string, handed over whole by the
//! serializer — is sent as fragments (`frame.rs`) borrowed from the value
//! itself ([`Stream::send_borrowed`], which returns only once the bytes
//! are in the kernel, or copied if the peer stops reading): nothing
//! outlives the borrow, whatever the value's `Serialize` does.
//!
//! Calls and their results take this path (a result is encoded only when
//! it is sent: `call::Output`). Only a user thread (a caller, a child's
//! main or pool thread) sending to a context behind a link streams; a
//! small payload (no large write) is sent as one message as before, and
//! so is everything sent from the broker or from a thread routing a link.
//! The destination cannot tell: it gets fragments as from `transmit`.

use crate::call::Output;
use crate::error::{ChannelError, Error, Result, StreamError, TimeoutError};
use crate::frame::{handle, Encoding, Header, FRAGMENT, LAST};
use crate::link::direct::Hold;
use crate::link::memory::HugeWriter;
use crate::link::{Body, Mode, SendError, Stream};
use crate::message::Message;
use crate::reassembly::FRAGMENT_SIZE;
use crate::router::Core;
use serde::Serialize;
use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Arc;

/// A single write at least this large is sent from where it lies.
const BORROW_FROM: usize = 1 << 20;

/// The link to the destination (what `Table::stream_for` gives for it,
/// looked up by the sender, which will wait on it next), to hold before a
/// message that goes as one frame leaves (see [`Hold::before_send`]), and
/// where the hold is kept for the wait. A message sent in fragments takes
/// no hold: its fragments may wait for room.
pub(crate) type HoldSlot<'s, 'a> = Option<(&'a Arc<Stream>, &'s mut Option<Hold<'a>>)>;

/// Sends the call `[chain, name, args]` to `dst`, answering `reply_to`.
pub(crate) fn send_call<A: Serialize + ?Sized>(
    core: &Arc<Core>,
    (dst, reply_to): (u32, u32),
    chain: Option<&str>,
    name: &str,
    args: &A,
    hold: HoldSlot<'_, '_>,
) -> Result<()> {
    let encode = |w: &mut Sink<'_>| crate::call::encode_call_into(w, chain, name, args);
    let ids = (dst, handle::CALL_FUNCTION, reply_to);
    send_encoded(core, ids, 32 + name.len(), encode, hold)
}

/// Answers the call `msg` with the result `out`.
pub(crate) fn send_reply(
    core: &Arc<Core>,
    msg: &Message,
    out: &dyn Output,
    hold: HoldSlot<'_, '_>,
) -> Result<()> {
    if msg.reply_to == 0 {
        return Err(ChannelError::new("the message asked for no reply").into());
    }
    let encode = |w: &mut Sink<'_>| out.encode(w).map_err(Error::Call);
    send_encoded(core, (msg.src_id, msg.reply_to, 0), 64, encode, hold)
}

/// Sends what `encode` writes to `dst`'s `handle` (answering `reply_to`).
fn send_encoded(
    core: &Arc<Core>,
    (dst, handle, reply_to): (u32, u32, u32),
    hint: usize,
    encode: impl FnOnce(&mut Sink<'_>) -> Result<()>,
    hold: HoldSlot<'_, '_>,
) -> Result<()> {
    let stream = (dst != core.id
        && !crate::broker::on_a_broker_thread()
        && !crate::link::direct::routing_here())
    .then(|| match &hold {
        Some((link, _)) => Some(Arc::clone(link)),
        None => core.table.stream_for(dst),
    })
    .flatten();
    let mut sink = Sink {
        core,
        stream,
        hdr: Header {
            encoding: Encoding::MsgPack,
            dst_id: dst,
            src_id: core.id,
            auth_id: core.id,
            handle,
            reply_to,
            ..Header::default()
        },
        buf: Vec::with_capacity(hint),
        sent: 0,
        failed: None,
    };
    let encoded = encode(&mut sink);
    if let Some(e) = sink.failed.take() {
        sink.abort();
        return Err(e);
    }
    if let Err(e) = encoded {
        sink.abort();
        return Err(e);
    }
    if sink.hdr.frag_id == 0 {
        let mut m = Message::with_payload(sink.buf);
        m.reply_to = reply_to;
        let m = m.to(dst, handle);
        let via = sink.stream.take();
        if let (Some((link, slot)), Some(_)) = (hold, &via) {
            if let Some(h) = Hold::before_send(link) {
                let sent = h.sending(|| core.send_via(m, via));
                *slot = Some(h);
                return sent;
            }
        }
        return core.send_via(m, via);
    }
    let last = std::mem::take(&mut sink.buf);
    sink.send(&last, true).inspect_err(|_| sink.abort())
}

/// Sends `body` as one raw message to `dst`'s `handle` (answering
/// `reply_to`). From a user thread to a context behind a link, the frame
/// is written from this thread, waiting for room as it goes, as a
/// streamed call's fragments are: a large chunk is not handed to the
/// broker to finish in pieces, one wake-up per socket buffer. Elsewhere,
/// or when it is larger than a frame, it is an ordinary send.
///
/// Borrowed bytes are copied only when the frame cannot be written from
/// this thread, so a sender may reuse one buffer.
pub(crate) fn send_raw(
    core: &Arc<Core>,
    (dst, handle, reply_to): (u32, u32, u32),
    body: Cow<'_, [u8]>,
) -> Result<()> {
    let stream = (dst != core.id
        && body.len() <= core.limits.max_message_size()
        && !crate::broker::on_a_broker_thread()
        && !crate::link::direct::routing_here())
    .then(|| core.table.stream_for(dst))
    .flatten();
    let Some(stream) = stream else {
        let mut m = Message::raw(body.into_owned());
        m.reply_to = reply_to;
        return core.send(m.to(dst, handle));
    };
    let h = Header {
        encoding: Encoding::Raw,
        dst_id: dst,
        src_id: core.id,
        auth_id: core.id,
        handle,
        reply_to,
        length: body.len() as u32,
        ..Header::default()
    };
    stream
        .send_borrowed(h.encode(), &body, core.limits.send_timeout())
        .map_err(|e| link_error(&stream, e))
}

/// Where the encoder writes (see the module doc).
struct Sink<'a> {
    core: &'a Arc<Core>,
    /// The link to send fragments on; `None`: collect the whole payload.
    stream: Option<Arc<Stream>>,
    /// The fragments' header; `frag_id` is 0 until the first is sent.
    hdr: Header,
    /// Bytes not sent yet.
    buf: Vec<u8>,
    /// Bytes sent in fragments so far.
    sent: usize,
    /// Why sending failed (the encoder only sees an `io::Error`).
    failed: Option<Error>,
}

impl Sink<'_> {
    fn limit(&self) -> usize {
        FRAGMENT_SIZE
            .min(self.core.limits.max_message_size())
            .max(1)
    }

    /// Sends `bytes` as fragments (the last one flagged when `last`).
    fn send(&mut self, bytes: &[u8], last: bool) -> Result<()> {
        let Some(stream) = self.stream.clone() else {
            return Ok(());
        };
        if self.hdr.frag_id == 0 {
            self.hdr.frag_id = self.core.new_frag_id();
        }
        let max = self.core.limits.max_payload();
        if self.sent.saturating_add(bytes.len()) > max {
            let why = format!(
                "message of more than {} bytes exceeds max_payload_size {max}",
                self.sent
            );
            return Err(ChannelError::new(why).into());
        }
        let limit = self.limit();
        let len = bytes.len();
        // An empty last fragment may end the message; nothing else is empty.
        let n = if len == 0 {
            usize::from(last)
        } else {
            len.div_ceil(limit)
        };
        for i in 0..n {
            let piece = &bytes[(i * limit).min(len)..((i + 1) * limit).min(len)];
            let mut h = self.hdr;
            h.flags = FRAGMENT | if last && i + 1 == n { LAST } else { 0 };
            h.length = piece.len() as u32;
            stream
                .send_borrowed(h.encode(), piece, self.core.limits.send_timeout())
                .map_err(|e| link_error(&stream, e))?;
            self.sent += piece.len();
        }
        Ok(())
    }

    /// After a failure: tells the destination the message will not be
    /// finished, if any of it was sent.
    fn abort(&mut self) {
        if let (Some(stream), true) = (&self.stream, self.hdr.frag_id != 0) {
            let mut h = self.hdr;
            (h.flags, h.length, h.encoding) = (FRAGMENT | LAST, 0, Encoding::Dead);
            let _ = stream.send_frame(h.encode(), Body::Owned(Vec::new()), Mode::Relay(None));
        }
    }
}

impl Write for Sink<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.write_all(b)?;
        Ok(b.len())
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        let r = if self.stream.is_some() && b.len() >= BORROW_FROM {
            let head = std::mem::take(&mut self.buf);
            self.send(&head, false).and_then(|()| self.send(b, false))
        } else {
            HugeWriter(&mut self.buf).write_all(b)?;
            if self.hdr.frag_id != 0 && self.buf.len() >= self.limit() {
                let full = std::mem::take(&mut self.buf);
                self.send(&full, false)
            } else {
                Ok(())
            }
        };
        r.map_err(|e| {
            self.failed = Some(e);
            io::Error::other("sending the call failed")
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The caller's error for a link that refused a frame.
fn link_error(stream: &Stream, e: SendError) -> Error {
    match e {
        SendError::Closed(why) => StreamError::new(why).into(),
        SendError::Io(e) => {
            StreamError::io(format!("writing to {} failed: {e}", stream.name), e).into()
        }
        SendError::Full => StreamError::with_kind(
            format!("the link to {} is full", stream.name),
            io::ErrorKind::WouldBlock,
        )
        .into(),
        SendError::Stalled(after) => ChannelError::new(format!(
            "the link to {} made no progress for {after:?}: message refused",
            stream.name
        ))
        .into(),
        SendError::TimedOut(after) => TimeoutError::new(
            format!(
                "room in the link to {} (its peer stopped reading)",
                stream.name
            ),
            after,
        )
        .into(),
    }
}
