//! The waiting thread reads: how a call's round trip avoids two thread
//! hand-offs.
//!
//! Normally the broker thread reads every stream and hands each message to
//! the thread waiting for it, which costs a wake-up of the broker and then
//! one of the waiter. A thread that is about to block for a message that
//! will arrive on a known stream (a caller waiting for its reply, a child's
//! idle main thread waiting for the next call) can instead read that stream
//! itself: it takes the stream's reader lock, switches the broker's
//! interest in the descriptor off, and reads and routes frames until what
//! it waits for has arrived. Then it switches the broker's interest back
//! on; re-arming an edge-triggered registration reports data already
//! waiting, so nothing read in between is left behind.
//!
//! Whoever holds the reader lock also routes what it read before letting
//! go, so frames are routed in the order they arrived. End of file and
//! read errors are left to the broker, which owns disconnect handling.
//!
//! This module only reads: every frame goes to the `route` callback the
//! router passes in, so the link knows nothing of routing.

use super::{FrameReader, ReadError, ReadState, Stream};
use crate::frame::Header;
use std::sync::atomic::Ordering;
use std::sync::{Arc, MutexGuard, TryLockError};
use std::time::Instant;

/// Where a read pass hands each whole frame.
pub(crate) type Route<'a> = &'a mut dyn FnMut(Header, Vec<u8>);

/// How a read pass on a stream ended: `Ok(Open)` when the stream may be
/// read again.
pub(crate) type Outcome = Result<ReadState, ReadError>;

/// Reads and routes what `s` has now, unless another thread holds its
/// reader (`None`: that thread will see the data).
pub(crate) fn try_read_pass(s: &Arc<Stream>, route: Route<'_>) -> Option<Outcome> {
    let mut reader = match s.reader.try_lock() {
        Ok(r) => r,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    Some(read_pass(s, &mut reader, route, false))
}

thread_local! {
    static ROUTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `true` while this thread routes what it read from a link: whatever it
/// sends then (control replies, dead answers) must not wait for room, as
/// it holds the link's reader.
pub(crate) fn routing_here() -> bool {
    ROUTING.with(|r| r.get())
}

/// Reads and routes what `s` has now, its reader held by the caller
/// (`short_ends`: see `FrameReader::read_from`).
fn read_pass(
    s: &Arc<Stream>,
    reader: &mut FrameReader,
    route: Route<'_>,
    short_ends: bool,
) -> Outcome {
    let was = ROUTING.with(|r| r.replace(true));
    let outcome = reader.read_from(s.rfd(), route, &|| s.is_paused(), short_ends);
    s.note_received(reader.take_bytes_read());
    ROUTING.with(|r| r.set(was));
    if !matches!(outcome, Ok(ReadState::Open)) {
        s.read_done.store(true, Ordering::Release);
    }
    outcome
}

/// What [`read_until`] did.
pub(crate) struct Pass {
    /// `false` when it read nothing (the broker or another thread is
    /// reading, the stream is finished, or this is the broker thread): the
    /// caller blocks on its latch instead.
    pub(crate) ran: bool,
    /// Set when the stream ended (end of file or a read error) during the
    /// pass: the bytes that told are consumed, so no readiness event will
    /// tell the broker; the caller must.
    pub(crate) ended: Option<Outcome>,
}

/// This thread's hold on a link's reader: the reader is locked and the
/// broker's read interest parked, so what arrives is left to this thread
/// (a broker event still queued from before finds the reader busy).
///
/// A caller takes it before its request leaves ([`Hold::before_send`]),
/// not once it starts waiting: an answer that comes back first (the
/// woken peer preempted the caller, or runs on another CPU and is that
/// fast) would otherwise wake the broker, which would read it and wake
/// the caller, two hand-offs more on the round trip. Dropping the hold
/// unlocks the reader, then re-arms the broker's interest, which reports
/// what came since the last read.
pub(crate) struct Hold<'a> {
    s: &'a Arc<Stream>,
    /// Always `Some` until dropped (then unlocked before the re-arm).
    reader: Option<MutexGuard<'a, FrameReader>>,
}

impl<'a> Hold<'a> {
    /// Takes `s`'s reader, unless this is a broker thread, the stream has
    /// ended or another thread holds it (that thread will see the data).
    pub(crate) fn take(s: &'a Arc<Stream>) -> Option<Self> {
        if crate::broker::on_a_broker_thread() || s.read_done.load(Ordering::Acquire) {
            return None;
        }
        let reader = s.reader.try_lock().ok()?;
        s.set_read_interest(false);
        Some(Hold {
            s,
            reader: Some(reader),
        })
    }

    /// [`Hold::take`] for a thread about to send one frame on `s` and then
    /// wait on it: only while nothing is queued on `s`, so the frame, which
    /// must not wait for room while the reader is held, finds room.
    pub(crate) fn before_send(s: &'a Arc<Stream>) -> Option<Self> {
        if s.queued() != 0 {
            return None;
        }
        Self::take(s)
    }

    /// The held link.
    pub(crate) fn stream(&self) -> &'a Arc<Stream> {
        self.s
    }

    /// Runs `send` as a holder of a reader must: what it sends never
    /// waits for room, as nobody else reads this link meanwhile.
    pub(crate) fn sending<T>(&self, send: impl FnOnce() -> T) -> T {
        let was = ROUTING.with(|r| r.replace(true));
        let out = send();
        ROUTING.with(|r| r.set(was));
        out
    }

    /// Reads on this thread until `done()` or `deadline`, handing each
    /// frame to `route`; the hold ends with it.
    ///
    /// `poll_first` says that what is awaited is likely not there yet (a
    /// caller that has just sent its request, a child that has just
    /// answered the last call it had): the first read, likely to find the
    /// descriptor empty, is skipped for a poll, which costs no more when
    /// data is there after all. Only a short read ends a pass here
    /// (`FrameReader::read_from`): the loop polls, or the re-arm at the
    /// end reports what came since.
    pub(crate) fn read_until(
        mut self,
        route: Route<'_>,
        done: &dyn Fn() -> bool,
        deadline: Option<Instant>,
        poll_first: bool,
    ) -> Pass {
        let s = self.s;
        let Some(reader) = self.reader.as_mut() else {
            return Pass {
                ran: false,
                ended: None,
            };
        };
        let mut ran = false;
        // Poll before the first read only if nothing read earlier is still
        // buffered (a pass held for flow control leaves frames to route).
        let mut skip_read = poll_first && reader.holds_nothing();
        let ended = loop {
            if !std::mem::take(&mut skip_read) {
                match read_pass(s, reader, route, true) {
                    Ok(ReadState::Open) => {}
                    other => break Some(other),
                }
                ran = true;
            }
            if done() || s.is_paused() {
                // Paused: the broker reads again once the link may go on.
                break None;
            }
            let mut ms: libc::c_int = 100;
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break None;
                }
                ms = ms.min(left.as_millis() as libc::c_int + 1);
            }
            let mut pfd = libc::pollfd {
                fd: s.rfd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; a timeout or EINTR just loops.
            unsafe { libc::poll(&mut pfd, 1, ms) };
            if done() {
                break None;
            }
        };
        Pass { ran, ended }
    }
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        // Unlock first, then re-arm: the event the re-arm raises for data
        // (or end of file) that came after our last read must find the
        // reader free, or the broker would skip it and nobody would read.
        drop(self.reader.take());
        self.s.set_read_interest(true);
    }
}

/// Why a read pass ended a stream, for logs and dead messages.
pub(crate) fn end_reason(s: &Stream, outcome: Outcome) -> String {
    match outcome {
        Ok(ReadState::Eof) | Ok(ReadState::Open) => "the peer closed the link".to_string(),
        Err(e) => {
            tracing::error!("mitogen: disconnecting {}: {e}", s.name);
            e.to_string()
        }
    }
}
