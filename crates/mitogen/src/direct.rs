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

use crate::link::{FrameReader, ReadError, ReadState, Stream};
use crate::message::Message;
use crate::router::Core;
use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::time::Instant;

/// Reads and routes what `s` has now, unless another thread holds its
/// reader (`None`: that thread will see the data).
pub(crate) fn try_read_pass(
    core: &Arc<Core>,
    s: &Arc<Stream>,
) -> Option<Result<ReadState, ReadError>> {
    let mut reader = match s.reader.try_lock() {
        Ok(r) => r,
        Err(TryLockError::Poisoned(p)) => p.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    Some(read_pass(core, s, &mut reader))
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

/// Reads and routes what `s` has now, its reader held by the caller.
fn read_pass(
    core: &Arc<Core>,
    s: &Arc<Stream>,
    reader: &mut FrameReader,
) -> Result<ReadState, ReadError> {
    let was = ROUTING.with(|r| r.replace(true));
    let outcome = read_pass_inner(core, s, reader);
    ROUTING.with(|r| r.set(was));
    outcome
}

fn read_pass_inner(
    core: &Arc<Core>,
    s: &Arc<Stream>,
    reader: &mut FrameReader,
) -> Result<ReadState, ReadError> {
    let outcome = reader.read_from(
        s.rfd(),
        &mut |h, body| core.route_in(s, Message::from_frame(h, body)),
        &|| s.is_paused(),
    );
    if !matches!(outcome, Ok(ReadState::Open)) {
        s.read_done.store(true, Ordering::Release);
    }
    outcome
}

/// Reads `s` on this thread until `done()` or `deadline`. Returns `false`
/// when it read nothing (the broker or another thread is reading, the
/// stream is finished, or this is the broker thread): block on the latch
/// instead.
pub(crate) fn read_until(
    core: &Arc<Core>,
    s: &Arc<Stream>,
    done: &dyn Fn() -> bool,
    deadline: Option<Instant>,
) -> bool {
    if crate::broker::on_a_broker_thread() || s.read_done.load(Ordering::Acquire) {
        return false;
    }
    // The reader stays locked throughout, also while polling: a broker
    // event still queued from before the interest change then finds it
    // busy and leaves the data to us, instead of consuming it while we
    // sleep in poll() unaware.
    let mut reader = match s.reader.try_lock() {
        Ok(r) => r,
        Err(_) => return false,
    };
    s.set_read_interest(false);
    let mut ran = false;
    // Stops on EOF or an error, which the broker then handles: the bytes
    // that caused it are already consumed, so no readiness event would
    // tell it; it is told with a task.
    let ended = loop {
        match read_pass(core, s, &mut reader) {
            Ok(ReadState::Open) => {}
            other => break Some(other),
        }
        ran = true;
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
    if let Some(outcome) = ended {
        let why = crate::router::outcome_reason(s, outcome);
        let (c, st) = (core.clone(), s.clone());
        core.broker
            .defer_loop(Box::new(move |lp| c.close_stream(lp, &st, &why)));
    }
    ran
}
