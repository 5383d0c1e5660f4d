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
use std::sync::{Arc, TryLockError};
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

/// Reads `s` on this thread until `done()` or `deadline`, handing each
/// frame to `route`.
///
/// `expect_wait` says that what is awaited cannot be there yet (a caller
/// that has just sent its request): the first read, which could only
/// find the descriptor empty, is skipped for a poll. Only a short read
/// ends a pass here (`FrameReader::read_from`): the loop polls, or the
/// re-arm at the end reports what came since.
pub(crate) fn read_until(
    s: &Arc<Stream>,
    route: Route<'_>,
    done: &dyn Fn() -> bool,
    deadline: Option<Instant>,
    expect_wait: bool,
) -> Pass {
    let idle = Pass {
        ran: false,
        ended: None,
    };
    if crate::broker::on_a_broker_thread() || s.read_done.load(Ordering::Acquire) {
        return idle;
    }
    // The reader stays locked throughout, also while polling: a broker
    // event still queued from before the interest change then finds it
    // busy and leaves the data to us, instead of consuming it while we
    // sleep in poll() unaware.
    let mut reader = match s.reader.try_lock() {
        Ok(r) => r,
        Err(_) => return idle,
    };
    s.set_read_interest(false);
    let mut ran = false;
    // Poll before the first read only if nothing read earlier is still
    // buffered (a pass held for flow control leaves frames to route).
    let mut skip_read = expect_wait && reader.holds_nothing();
    let ended = loop {
        if !std::mem::take(&mut skip_read) {
            match read_pass(s, &mut reader, route, true) {
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
    // Unlock first, then re-arm: the event the re-arm raises for data
    // (or end of file) that came after our last read must find the reader
    // free, or the broker would skip it and nobody would read.
    drop(reader);
    s.set_read_interest(true);
    Pass { ran, ended }
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
