//! Bulk streams: moving large data between any two contexts with memory
//! bounded by a window.
//!
//! A [`BulkReceiver`] is opened where the data is wanted, with a window in
//! bytes; its [`BulkTarget`] travels (as a call argument, say) to the
//! context that has the data, which connects a [`BulkSender`] to it. The
//! sender never has more than the window in flight: it counts what it sent
//! and what the receiver acknowledged, and waits for credit when the
//! window is full. The receiver acknowledges what its reader *took*, in
//! batches of a quarter window, so neither end wakes per chunk while the
//! window is open, and the receiver's queue never holds more than the
//! window. Chunks are raw frames (no serializer touches the bytes), routed
//! like any message, so a stream crosses any number of hops; links apply
//! their own flow control underneath. A sender on a user thread writes
//! each chunk to its link itself, waiting for room as it goes (as a
//! streamed call's fragments are), rather than leaving a multi-megabyte
//! frame for the broker to finish one socket buffer per wake-up: that
//! doubled the stream's rate through one and through three hops.
//!
//! End of stream is the sender closing (a dead message saying so); a
//! context that dies mid-stream fails the other end's wait (the peer is
//! each side's respondent where known).
//!
//! ```
//! use mitogen::bulk::{BulkReceiver, BulkSender, BulkTarget};
//!
//! /// In the child: streams `n` bytes to `target`.
//! #[mitogen::remote]
//! fn produce(router: &mitogen::Router, target: BulkTarget, n: u64) -> mitogen::Result<()> {
//!     let mut tx = BulkSender::connect(router, target)?;
//!     let chunk = vec![7u8; 64 << 10];
//!     let mut left = n as usize;
//!     while left > 0 {
//!         let k = left.min(chunk.len());
//!         tx.write(&chunk[..k])?;
//!         left -= k;
//!     }
//!     tx.finish()
//! }
//!
//! #[mitogen::main]
//! fn main(router: mitogen::Router) -> mitogen::Result<()> {
//!     let child = router.local().connect()?;
//!     let mut rx = BulkReceiver::open(&router, 1 << 20, Some(&child));
//!     let done = child.call_async::<produce>((rx.target(), 10 << 20))?;
//!     let mut total = 0;
//!     while let Some(chunk) = rx.read_chunk(Some(std::time::Duration::from_secs(30)))? {
//!         total += chunk.len();
//!         rx.recycle(chunk); // read the next chunks into this memory
//!     }
//!     done.get(None)?;
//!     assert_eq!(total, 10 << 20);
//!     Ok(())
//! }
//! ```

use crate::context::Context;
use crate::error::{ChannelError, Result};
use crate::message::Message;
use crate::receiver::Receiver;
use crate::router::Router;
use crate::sender::{Sender, CLOSED};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::time::Duration;

/// Default window of a bulk stream: 16 MiB.
pub const DEFAULT_WINDOW: usize = 16 << 20;

/// Largest chunk a sender puts in one message.
const MAX_CHUNK: usize = 4 << 20;

/// How long a sender waits for credit before failing: the receiver took
/// nothing for that long.
const CREDIT_TIMEOUT: Duration = Duration::from_secs(300);

/// Where a [`BulkSender`] sends: the receiver's handle and window. It is
/// serializable, to be passed to the sending context in a call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkTarget {
    to: Sender,
    window: u64,
}

/// The receiving end of a bulk stream.
#[derive(Debug)]
pub struct BulkReceiver {
    rx: Receiver,
    window: usize,
    /// A chunk taken from the queue and not yet wholly handed out (by
    /// `Read`), and how much of it was.
    pending: Vec<u8>,
    pending_at: usize,
    /// Bytes handed to the reader and not yet acknowledged.
    unacked: u64,
    /// Where credit goes (the sender's reply handle), once known.
    credit_to: Option<(Context, u32)>,
    ended: bool,
}

impl BulkReceiver {
    /// Opens a receiver with a window of `window` bytes (at least 64 KiB).
    /// `from`, when known, is the context that will send: if it
    /// disconnects, a read fails instead of waiting.
    pub fn open(router: &Router, window: usize, from: Option<&Context>) -> BulkReceiver {
        let rx = match from {
            Some(c) => Receiver::new(router, None, true, Some(c), None)
                .unwrap_or_else(|_| Receiver::open(router)),
            None => Receiver::open(router),
        };
        BulkReceiver {
            rx,
            window: window.max(64 << 10),
            pending: Vec::new(),
            pending_at: 0,
            unacked: 0,
            credit_to: None,
            ended: false,
        }
    }

    /// What a sender needs to connect to this receiver.
    pub fn target(&self) -> BulkTarget {
        BulkTarget {
            to: self.rx.to_sender(),
            window: self.window as u64,
        }
    }

    /// The next chunk, waiting at most `timeout` for it; `None` at the end
    /// of the stream. A sender that failed or disconnected is an error.
    pub fn read_chunk(&mut self, timeout: Option<Duration>) -> Result<Option<Vec<u8>>> {
        if self.pending_at < self.pending.len() {
            let mut v = std::mem::take(&mut self.pending);
            v.drain(..std::mem::take(&mut self.pending_at));
            return Ok(Some(v));
        }
        if self.ended {
            return Ok(None);
        }
        let m = self.rx.get_message(timeout)?;
        if let Some(why) = m.dead_reason() {
            if why == CLOSED {
                self.ended = true;
                return Ok(None);
            }
            return Err(ChannelError::new(why).into());
        }
        if self.credit_to.is_none() && m.reply_to != 0 {
            let ctx = Context::new(self.rx.core().clone(), m.src_id, "bulk sender");
            self.credit_to = Some((ctx, m.reply_to));
        }
        let data = m.bytes()?.len();
        self.credit(data as u64)?;
        Ok(Some(m.data))
    }

    /// Gives a chunk's buffer back once its bytes are used: a later large
    /// chunk is read into it instead of into fresh memory, which the
    /// kernel would have to map and clear page by page. Optional; a few
    /// MiB of such buffers are kept per process, the rest freed.
    pub fn recycle(&self, chunk: Vec<u8>) {
        crate::link::memory::give(chunk);
    }

    /// Counts `n` bytes as taken; acknowledges in batches.
    fn credit(&mut self, n: u64) -> Result<()> {
        self.unacked += n;
        if self.unacked >= (self.window / 4) as u64 {
            if let Some((ctx, h)) = &self.credit_to {
                ctx.send(Message::encode(&self.unacked)?.to(ctx.context_id(), *h))?;
            }
            self.unacked = 0;
        }
        Ok(())
    }
}

impl std::io::Read for BulkReceiver {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        // Chunks are handed out by slice copies straight from the chunk
        // as it arrived, never byte by byte.
        while self.pending_at == self.pending.len() {
            match self.read_chunk(None).map_err(std::io::Error::other)? {
                Some(v) => {
                    let used = std::mem::replace(&mut self.pending, v);
                    self.recycle(used);
                    self.pending_at = 0;
                }
                None => return Ok(0),
            }
        }
        let left = &self.pending[self.pending_at..];
        let n = buf.len().min(left.len());
        buf[..n].copy_from_slice(&left[..n]);
        self.pending_at += n;
        Ok(n)
    }
}

/// The sending end of a bulk stream.
#[derive(Debug)]
pub struct BulkSender {
    to: Sender,
    window: u64,
    in_flight: u64,
    credits: Receiver,
    chunk: usize,
    finished: bool,
}

impl BulkSender {
    /// Connects to the receiver `target` names.
    pub fn connect(router: &Router, target: BulkTarget) -> Result<BulkSender> {
        let dst = Context::new(
            router.core().clone(),
            target.to.context_id(),
            "bulk receiver",
        );
        let credits = Receiver::new(router, None, true, Some(&dst), None)?;
        let chunk = (target.window as usize / 4)
            .clamp(16 << 10, MAX_CHUNK)
            .min(router.max_message_size().max(1));
        Ok(BulkSender {
            to: target.to,
            window: target.window,
            in_flight: 0,
            credits,
            chunk,
            finished: false,
        })
    }

    /// Sends `data`, waiting for credit while the window is full. From a
    /// user thread the bytes are written to the link from `data` itself
    /// (a sender may reuse one buffer); elsewhere they are copied.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        for piece in data.chunks(self.chunk) {
            self.send_chunk(piece.into())?;
        }
        Ok(())
    }

    /// Sends `data` as one chunk without copying it (it should be at most
    /// the window).
    pub fn send_vec(&mut self, data: Vec<u8>) -> Result<()> {
        self.send_chunk(data.into())
    }

    /// Sends one chunk once it fits in the window, taking what credit
    /// has come.
    fn send_chunk(&mut self, data: Cow<'_, [u8]>) -> Result<()> {
        let n = data.len() as u64;
        while self.in_flight > 0 && self.in_flight + n > self.window {
            self.take_credit(Some(CREDIT_TIMEOUT))?;
        }
        while let Ok(Some(m)) = self.credits.try_get() {
            self.apply(m)?;
        }
        let ids = (
            self.to.context_id(),
            self.to.handle(),
            self.credits.handle(),
        );
        crate::streamed::send_raw(self.credits.core(), ids, data)?;
        self.in_flight += n;
        Ok(())
    }

    fn take_credit(&mut self, timeout: Option<Duration>) -> Result<()> {
        let m = self.credits.get_message(timeout)?;
        self.apply(m)
    }

    fn apply(&mut self, m: Message) -> Result<()> {
        if let Some(why) = m.dead_reason() {
            return Err(ChannelError::new(why).into());
        }
        let acked: u64 = m.decode()?;
        self.in_flight = self.in_flight.saturating_sub(acked);
        Ok(())
    }

    /// Bytes sent and not yet acknowledged (never more than the window,
    /// unless one chunk is larger).
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Ends the stream: the receiver's next read returns `None`.
    pub fn finish(mut self) -> Result<()> {
        self.finished = true;
        self.to.close()
    }
}

impl Drop for BulkSender {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.to.send_message(Message::dead(
                "the bulk sender was dropped before finishing",
            ));
        }
    }
}
