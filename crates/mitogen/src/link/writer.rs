//! The write side of a link: a bounded queue of frames, and who may wait
//! for room in it.
//!
//! A thread with a message writes it straight to the descriptor with one
//! `writev` when nothing is queued: that is what keeps a call's round trip
//! near a bare socketpair's. What the kernel does not take is queued, and
//! from then on the rest belongs to the broker, which finishes it on
//! writable readiness. **No lock is ever held across a wait for the peer**:
//! the output lock only covers a non-blocking `writev` and queue updates,
//! so a slow or stopped peer never stalls the broker or another sender.
//!
//! The queue is bounded in bytes (`limit`). Who meets a full queue depends
//! on who sends ([`Mode`]):
//!
//! - a user thread's own message waits (on a condition variable, not on
//!   the peer) until the broker has drained the queue to half its limit,
//!   or its deadline passes ([`SendError::TimedOut`]);
//! - `try_send` is refused at once ([`SendError::Full`]);
//! - traffic the router relays from another link, and messages the broker
//!   itself originates, are never refused nor waited for: they are queued,
//!   and the link they came from is **paused** (no longer read) until this
//!   queue drains. Back-pressure thus travels hop by hop to the context
//!   that produces the data, and an intermediate never buffers more than
//!   one limit (plus one frame) per link on anyone's behalf.
//!
//! A paused link carries everything its peer sends, not only what is
//! bound for the full queue: replies, calls to the intermediate itself,
//! traffic for its other children. So a pause must not last forever. A
//! queue that stays full for the link's `stall_after` (the router's send
//! timeout) is **stalled**: the links it paused are let go, and relayed
//! traffic for it is refused (the router answers it dead, naming the
//! stalled link) until it drains to half its limit. One stopped context
//! then costs its own traffic, never its siblings' or its parent's.

use super::Stream;
use crate::frame::HEADER_LEN;
use crate::sync::lock;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Default bound of a link's output queue, in bytes.
pub const DEFAULT_MAX_QUEUED: usize = 16 << 20;

/// iovecs given to one `writev` when flushing.
const IOV_BATCH: usize = 64;

/// A frame's payload, owned or a slice of a shared buffer (the fragments
/// of one large message share it: nothing is copied to split it).
#[derive(Clone)]
pub(crate) enum Body {
    /// A whole payload.
    Owned(Vec<u8>),
    /// `buf[start..end]`.
    Shared(Arc<Vec<u8>>, usize, usize),
}

impl Body {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(b, s, e) => &b[*s..*e],
        }
    }

    /// Written out: a large owned buffer is kept for a later frame to be
    /// read into (an intermediate relaying a stream reads each chunk into
    /// the one it just sent on).
    fn retire(self) {
        if let Body::Owned(v) = self {
            super::memory::give(v);
        }
    }
}

struct Pending {
    hdr: [u8; HEADER_LEN],
    body: Body,
    /// Bytes of `hdr` + `body` already written.
    done: usize,
}

impl Pending {
    fn total(&self) -> usize {
        HEADER_LEN + self.body.as_slice().len()
    }
}

/// The output queue, under the stream's output lock.
#[derive(Default)]
pub(crate) struct Out {
    queue: std::collections::VecDeque<Pending>,
    /// Bytes in `queue` not yet written.
    queued: usize,
    pub(crate) closed: bool,
    /// Close the write side once the queue drains (graceful shutdown).
    close_when_drained: bool,
    /// The broker watches the descriptor for writability (only while the
    /// queue has data: a registration left on would wake the broker each
    /// time the peer reads, since Unix sockets signal write space on every
    /// read).
    write_armed: bool,
    /// User threads waiting for room.
    waiters: usize,
    /// A user thread is writing a borrowed frame itself
    /// ([`Stream::send_borrowed`]): nobody else writes until it is done.
    borrowed: bool,
    /// Links paused because their traffic filled this queue.
    blocked: Vec<Weak<Stream>>,
    /// Since when the queue has been over its limit (and not yet drained
    /// to half).
    full_since: Option<Instant>,
    /// Full for longer than `stall_after`: relays are refused.
    stalled: bool,
    /// The broker was asked to flush this queue on its current turn
    /// ([`Stream::hand_flush`]): frames sent meanwhile join the queue.
    flush_handed: bool,
}

/// How a sender meets a full queue.
#[derive(Clone, Copy)]
pub(crate) enum Mode<'a> {
    /// Wait for room, at most this long (`None`: no limit).
    Wait(Option<Duration>),
    /// Refuse at once.
    Try,
    /// Never wait nor refuse; pause `source` (the link the message came
    /// from) while this queue is over its limit.
    Relay(Option<&'a Arc<Stream>>),
}

/// Why a frame was not queued.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The link is closed or closing (the reason, for the user).
    Closed(String),
    /// The link failed while writing.
    Io(io::Error),
    /// `Mode::Try` and the queue is full.
    Full,
    /// `Mode::Wait` and the deadline passed with the queue still full.
    TimedOut(Duration),
    /// `Mode::Relay` into a stalled queue: full for this long.
    Stalled(Duration),
}

impl Stream {
    /// Sends one frame: written straight away when the queue is empty,
    /// queued otherwise; see the module doc for a full queue.
    pub(crate) fn send_frame(
        &self,
        hdr: [u8; HEADER_LEN],
        body: Body,
        mode: Mode<'_>,
    ) -> Result<(), SendError> {
        // Read the clock only once there is a wait: most sends find room.
        let mut started: Option<Instant> = None;
        let mut out = lock(&self.out);
        loop {
            if out.closed || out.close_when_drained {
                return Err(SendError::Closed(format!(
                    "the link to {} is closed",
                    self.name
                )));
            }
            if out.stalled {
                if let (Mode::Relay(_), Some(since)) = (mode, out.full_since) {
                    return Err(SendError::Stalled(since.elapsed()));
                }
            }
            if out.queued < self.max_queued() {
                break;
            }
            match mode {
                Mode::Relay(_) => break,
                Mode::Try => return Err(SendError::Full),
                Mode::Wait(limit) => {
                    let now = Instant::now();
                    let began = *started.get_or_insert(now);
                    let slice = match limit {
                        Some(d) => {
                            let left = (began + d).saturating_duration_since(now);
                            if left.is_zero() {
                                return Err(SendError::TimedOut(now - began));
                            }
                            left
                        }
                        None => Duration::from_secs(1),
                    };
                    out.waiters += 1;
                    out = self
                        .space
                        .wait_timeout(out, slice)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    out.waiters -= 1;
                }
            }
        }
        let slice = body.as_slice();
        let total = HEADER_LEN + slice.len();
        let mut done = 0;
        let idle = out.queue.is_empty() && !out.borrowed;
        if idle && !out.flush_handed && !self.hand_flush(&mut out) {
            done = match write_nb(self.wfd(), [&hdr, slice]) {
                Ok(n) => {
                    self.note_sent(n);
                    n
                }
                Err(e) => {
                    self.fail(&mut out);
                    return Err(SendError::Io(e));
                }
            };
            if done == total {
                body.retire();
                return Ok(());
            }
        }
        out.queued += total - done;
        out.queue.push_back(Pending { hdr, body, done });
        if out.queued >= self.max_queued() {
            if let Mode::Relay(Some(src)) = mode {
                if src.id != self.id {
                    src.paused.store(true, Ordering::Release);
                    out.blocked.push(Arc::downgrade(src));
                }
            }
            if out.full_since.is_none() {
                out.full_since = Some(Instant::now());
                self.watch_for_stall(self.stall_after());
            }
        }
        if !out.flush_handed {
            self.arm_write(&mut out, true);
        }
        Ok(())
    }

    /// While the broker thread is up (reading or relaying), a frame sent to
    /// an idle link is left to it: it writes everything queued by then
    /// with one `writev` before it sleeps, where each frame written
    /// straight away would cost a `writev` and maybe a wake-up of the
    /// peer. When the broker sleeps, the sender writes itself (`false`),
    /// so a lone call's round trip is unchanged.
    fn hand_flush(&self, out: &mut Out) -> bool {
        let (Some(broker), Some(me)) = (self.broker.get(), self.me.get()) else {
            return false;
        };
        if !broker.is_busy() {
            // Asleep (a lone call): nothing to build a task for.
            return false;
        }
        let me = me.clone();
        let task: crate::broker::Task = Box::new(move |_| {
            if let Some(s) = me.upgrade() {
                s.flush_handed();
            }
        });
        out.flush_handed = broker.defer_while_busy(task).is_ok();
        out.flush_handed
    }

    /// Writes now what was handed to the broker and not yet flushed: a
    /// thread about to wait for an answer to it does not depend on the
    /// broker's turn ending (it may be running a long task).
    pub(crate) fn flush_own_handover(&self) {
        if lock(&self.out).flush_handed {
            // The broker's task, when it runs, finds nothing left.
            self.flush_handed();
        }
    }

    /// The broker's turn to flush what [`Stream::hand_flush`] left it:
    /// what the descriptor does not take waits for writability.
    fn flush_handed(&self) {
        // A failed write is seen by the read side too.
        let _ = self.flush();
        let mut out = lock(&self.out);
        out.flush_handed = false;
        if !out.queue.is_empty() && !out.closed {
            self.arm_write(&mut out, true);
        }
    }

    /// Has the broker look at this queue again after `after`: still full
    /// since then, it is stalled.
    fn watch_for_stall(&self, after: Option<Duration>) {
        let (Some(after), Some(me), Some(broker)) = (after, self.me.get(), self.broker.get())
        else {
            return;
        };
        let me = me.clone();
        broker.defer_loop(Box::new(move |lp| {
            lp.after(
                after,
                Box::new(move |_| {
                    if let Some(s) = me.upgrade() {
                        s.check_stall();
                    }
                }),
            )
        }));
    }

    /// On the broker's timer: a queue full for `stall_after` is stalled;
    /// the links it paused may go on.
    fn check_stall(&self) {
        let Some(limit) = self.stall_after() else {
            return;
        };
        let mut out = lock(&self.out);
        let Some(since) = out.full_since else {
            return;
        };
        let waited = since.elapsed();
        if waited < limit {
            drop(out);
            self.watch_for_stall(Some(limit - waited));
            return;
        }
        if out.stalled || out.closed {
            return;
        }
        out.stalled = true;
        let resume = std::mem::take(&mut out.blocked);
        drop(out);
        tracing::warn!(
            "mitogen: the link to {} made no progress for {waited:?}: traffic relayed \
             to it is refused until it drains; {} paused link(s) go on",
            self.name,
            resume.len()
        );
        resume_all(resume);
    }

    /// Writes queued frames (broker thread, on writable readiness). Returns
    /// an error when the peer is gone.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        if out.borrowed {
            // Its writer flushes the queue when its frame is done.
            return Ok(());
        }
        let result = loop {
            if out.queue.is_empty() {
                break Ok(());
            }
            let n = {
                // On the stack: a flush per batch must not cost a malloc.
                let mut iov = [IoSlice::new(&[]); IOV_BATCH];
                let mut n = 0;
                for p in out.queue.iter().take(IOV_BATCH / 2) {
                    let body = p.body.as_slice();
                    if p.done < HEADER_LEN {
                        iov[n] = IoSlice::new(&p.hdr[p.done..]);
                        iov[n + 1] = IoSlice::new(body);
                        n += 2;
                    } else {
                        iov[n] = IoSlice::new(&body[p.done - HEADER_LEN..]);
                        n += 1;
                    }
                }
                writev(self.wfd(), &iov[..n])
            };
            match n {
                Ok(0) => break Ok(()),
                Ok(mut n) => {
                    self.note_sent(n);
                    out.queued -= n;
                    while n > 0 {
                        let Some(front) = out.queue.front_mut() else {
                            break;
                        };
                        let left = front.total() - front.done;
                        if n >= left {
                            n -= left;
                            if let Some(p) = out.queue.pop_front() {
                                p.body.retire();
                            }
                        } else {
                            front.done += n;
                            n = 0;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => {
                    self.fail(&mut out);
                    break Err(e);
                }
            }
        };
        let mut resume = Vec::new();
        if out.queued <= self.max_queued() / 2 {
            out.full_since = None;
            if std::mem::take(&mut out.stalled) {
                tracing::info!("mitogen: the link to {} drains again", self.name);
            }
            resume = std::mem::take(&mut out.blocked);
            if out.waiters > 0 {
                self.space.notify_all();
            }
        }
        if out.queue.is_empty() {
            self.arm_write(&mut out, false);
            if out.close_when_drained && !out.closed {
                out.closed = true;
                self.close_write_side();
            }
        }
        drop(out);
        resume_all(resume);
        result
    }

    /// Sends one frame whose body is borrowed from the caller (a user
    /// thread): written straight from `body`, never copied, unless the
    /// peer stops reading for `timeout`. Waits until nothing is queued,
    /// writes what the descriptor takes, and while the rest does not fit,
    /// holds the link (others queue behind: a frame is never interleaved)
    /// and waits for room in the descriptor itself, no lock held. If no
    /// byte could be written for `timeout`, what is left is copied into
    /// the queue, so the borrow always ends when this returns.
    pub(crate) fn send_borrowed(
        &self,
        hdr: [u8; HEADER_LEN],
        body: &[u8],
        timeout: Option<Duration>,
    ) -> Result<(), SendError> {
        let mut out = lock(&self.out);
        let mut deadline = timeout.map(|d| Instant::now() + d);
        while !out.queue.is_empty() || out.borrowed {
            if out.closed || out.close_when_drained {
                break;
            }
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(1),
            };
            if left.is_zero() {
                return Err(SendError::TimedOut(timeout.unwrap_or_default()));
            }
            out.waiters += 1;
            out = self
                .space
                .wait_timeout(out, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            out.waiters -= 1;
        }
        if out.closed || out.close_when_drained {
            return Err(SendError::Closed(format!(
                "the link to {} is closed",
                self.name
            )));
        }
        let _widened = Widened::new(self.wfd(), body.len());
        let total = HEADER_LEN + body.len();
        let mut done = 0;
        loop {
            let rest: [&[u8]; 2] = if done < HEADER_LEN {
                [&hdr[done..], body]
            } else {
                [&[], &body[done - HEADER_LEN..]]
            };
            match write_nb(self.wfd(), rest) {
                Ok(n) if n > 0 => {
                    self.note_sent(n);
                    done += n;
                    deadline = timeout.map(|d| Instant::now() + d);
                }
                Ok(_) => {}
                Err(e) => {
                    out.borrowed = false;
                    self.fail(&mut out);
                    return Err(SendError::Io(e));
                }
            }
            if done == total || deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            out.borrowed = true;
            drop(out);
            wait_writable(self.wfd(), Duration::from_millis(50));
            out = lock(&self.out);
            if out.closed {
                out.borrowed = false;
                self.space.notify_all();
                return Err(SendError::Closed(format!(
                    "the link to {} is closed",
                    self.name
                )));
            }
        }
        out.borrowed = false;
        if done < total {
            // The peer stopped reading: the rest goes first in the queue.
            let (rest, at) = if done < HEADER_LEN {
                (body.to_vec(), done)
            } else {
                (body[done - HEADER_LEN..].to_vec(), HEADER_LEN)
            };
            out.queued += total - done;
            out.queue.push_front(Pending {
                hdr,
                body: Body::Owned(rest),
                done: at,
            });
        }
        let follow = !out.queue.is_empty() || out.close_when_drained;
        self.space.notify_all();
        drop(out);
        if follow {
            // What queued behind the borrowed frame, or a graceful close
            // that waited for it. A failure here is the link's, not this
            // frame's (it is written): the next send learns of it.
            let _ = self.flush();
            let mut out = lock(&self.out);
            let armed = !out.queue.is_empty() && !out.closed;
            self.arm_write(&mut out, armed);
        }
        Ok(())
    }

    /// Marks the output dead with its queue dropped, waking every waiter.
    fn fail(&self, out: &mut Out) {
        out.closed = true;
        out.queue.clear();
        out.queued = 0;
        self.space.notify_all();
    }

    /// Marks the stream dead: nothing more is sent, the queue is dropped,
    /// waiting senders fail and paused links resume.
    pub(crate) fn mark_closed(&self) {
        let resume = {
            let mut out = lock(&self.out);
            self.fail(&mut out);
            std::mem::take(&mut out.blocked)
        };
        resume_all(resume);
    }

    /// Refuses further sends and signals end-of-stream to the peer once
    /// queued data is written.
    pub(crate) fn close_gracefully(&self) {
        {
            let mut out = lock(&self.out);
            if out.closed {
                return;
            }
            out.close_when_drained = true;
            self.space.notify_all();
        }
        let _ = self.flush();
    }

    /// Bytes waiting to be written.
    pub(crate) fn queued(&self) -> usize {
        lock(&self.out).queued
    }

    /// Turns the broker's writability watch on or off; called with the
    /// output lock held, so the watch always matches the queue.
    fn arm_write(&self, out: &mut Out, on: bool) {
        if out.write_armed == on {
            return;
        }
        if self.one_fd() {
            if self.watch_write(on) {
                out.write_armed = on;
            }
            return;
        }
        let token = self.write_token.load(Ordering::Acquire);
        if token == usize::MAX {
            return;
        }
        let Some(b) = self.broker.get() else { return };
        let interest = on.then_some(mio::Interest::WRITABLE);
        if b.reregister(self.wfd(), mio::Token(token), interest)
            .is_ok()
        {
            out.write_armed = on;
        }
    }

    /// Called by the broker once the write side is registered (unarmed):
    /// arms it if data was queued before.
    pub(crate) fn registered(&self) {
        let mut out = lock(&self.out);
        let pending = !out.queue.is_empty();
        self.arm_write(&mut out, pending);
    }

    /// Writes `bytes` as they are, bypassing framing and the queue (test
    /// hook: lets a test play a hostile peer). Waits for the peer to read,
    /// within a bound.
    #[cfg(feature = "testing")]
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut done = 0;
        while done < bytes.len() {
            done += write_nb(self.wfd(), [&bytes[done..]])?;
            if done < bytes.len() {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }
}

/// Kernel buffering of a socket's write side while a large borrowed frame
/// is written, restored after it.
///
/// The default (~200 KiB for a Unix socket) makes a large transfer a
/// ping-pong of small writes and reads, each side woken once per buffer;
/// a few MiB let each `writev` and `read` move megabytes. Left on, though,
/// a large buffer cut the rate of small messages several times over
/// (measured: 1.1 M to 0.2 M messages/s one way), so it is only widened
/// for the duration of a large frame. The kernel caps it at
/// `net.core.wmem_max`; pipes are left alone.
const WIDE_BUFFER: libc::c_int = 4 << 20;

/// Widens `fd`'s send buffer for a frame body of `len` bytes (at least a
/// quarter of [`WIDE_BUFFER`]); restores it when dropped.
struct Widened {
    fd: RawFd,
    prev: libc::c_int,
}

impl Widened {
    fn new(fd: RawFd, len: usize) -> Option<Widened> {
        if len < (WIDE_BUFFER / 4) as usize {
            return None;
        }
        let prev = sndbuf(fd)?;
        if prev >= WIDE_BUFFER {
            return None;
        }
        set_sndbuf(fd, WIDE_BUFFER);
        // The kernel reports twice what was set.
        Some(Widened { fd, prev: prev / 2 })
    }
}

impl Drop for Widened {
    fn drop(&mut self) {
        set_sndbuf(self.fd, self.prev);
    }
}

/// `fd`'s send buffer, or `None` when it is not a socket.
fn sndbuf(fd: RawFd) -> Option<libc::c_int> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut v as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(v)
}

fn set_sndbuf(fd: RawFd, size: libc::c_int) {
    // SAFETY: setsockopt reads one c_int; failing leaves it unchanged.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Waits until `fd` can take more bytes, at most `limit`.
fn wait_writable(fd: RawFd, limit: Duration) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own; EINTR and errors just return
    // early, and the caller retries its write.
    unsafe { libc::poll(&mut p, 1, limit.as_millis() as libc::c_int) };
}

fn resume_all(links: Vec<Weak<Stream>>) {
    for s in links.iter().filter_map(Weak::upgrade) {
        s.resume();
    }
}

/// One `writev`, retried on EINTR.
fn writev(fd: RawFd, iov: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive
        // the call.
        let n = unsafe {
            libc::writev(
                fd,
                iov.as_ptr() as *const libc::iovec,
                iov.len().min(libc::c_int::MAX as usize) as libc::c_int,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Writes as much of `bufs` as the descriptor takes without blocking.
/// The slices are gathered on the stack: this is every direct send.
fn write_nb<const N: usize>(fd: RawFd, bufs: [&[u8]; N]) -> io::Result<usize> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let mut iov = [IoSlice::new(&[]); N];
        let mut n = 0;
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            iov[n] = IoSlice::new(&b[skip..]);
            n += 1;
            skip = 0;
        }
        match writev(fd, &iov[..n]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}
