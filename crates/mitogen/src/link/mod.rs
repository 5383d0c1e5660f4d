//! A link to one directly connected context: its descriptors, its frame
//! reader and its bounded output queue.
//!
//! Sending is done by whichever thread has a message (`writer.rs`): it
//! writes straight to the descriptor when nothing is queued, and never
//! waits on the peer while holding a lock. Receiving is done by whoever
//! holds the link's reader (the broker, or a waiting thread: `direct.rs`)
//! through [`FrameReader`] (`reader.rs`), which never panics on hostile
//! input. A link can be *paused*: it is not read while a link its traffic
//! goes to is over its queue limit (flow control, see `writer.rs`).

pub(crate) mod direct;
pub(crate) mod memory;
mod reader;
mod writer;

pub(crate) use reader::{FrameReader, Placement, ReadError, ReadState};
pub use writer::DEFAULT_MAX_QUEUED;
pub(crate) use writer::{Body, Mode, Out, SendError};

use crate::sync::lock;
use std::collections::HashSet;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

/// A link to one directly connected context.
pub(crate) struct Stream {
    pub(crate) id: u64,
    /// Name of the peer context, for messages a user reads.
    pub(crate) name: String,
    /// Context id of the peer.
    pub(crate) remote_id: u32,
    /// `true` when the peer is this context's parent (trusted).
    pub(crate) is_parent: bool,
    rfd: OwnedFd,
    /// The write side when it is another descriptor (a pipe pair); a
    /// socket is read and written through `rfd` alone, one descriptor per
    /// child, registered once with the broker for both directions
    /// ([`Stream::watch`]).
    wfd: Option<OwnedFd>,
    /// What the broker watches `rfd` for, when it is the only descriptor:
    /// (reading, writing). Changed under this lock, so the registration
    /// always matches the last change.
    watching: Mutex<(bool, bool)>,
    /// `rfd` is a socket (half-closed with `shutdown`), not a pipe.
    is_socket: bool,
    out: Mutex<Out>,
    /// Signalled when the output queue has room again, or closes.
    space: Condvar,
    /// Bound of the output queue, in bytes.
    max_queued: AtomicUsize,
    /// Not read while set: traffic from it filled another link's queue.
    paused: AtomicBool,
    /// Bytes written to and read from the peer (frames, headers included).
    sent: AtomicU64,
    received: AtomicU64,
    /// The peer detached (`ExternalContext::detach`): its end is no
    /// failure, and its process is never signalled.
    pub(crate) detached: AtomicBool,
    /// How long the queue may stay full before relaying into it is refused
    /// and the links it paused are let go (ms; 0: never). See `writer.rs`.
    stall_after_ms: AtomicU64,
    /// This stream, for the broker timer that checks for a stall.
    me: OnceLock<std::sync::Weak<Stream>>,
    /// Contexts other than this one whose messages were sent down this
    /// link (the seed's egress ids): who in the peer's subtree may be
    /// waiting on them, and must hear when one of them disconnects.
    egress: Mutex<HashSet<u32>>,
    /// Reassembles inbound frames; held by whichever thread reads.
    pub(crate) reader: Mutex<FrameReader>,
    /// The broker's registration of `rfd` (usize::MAX until registered).
    pub(crate) read_token: AtomicUsize,
    /// Set once a reader saw end of file or an error.
    pub(crate) read_done: AtomicBool,
    /// The broker the stream is registered with, and the write token.
    pub(crate) broker: OnceLock<crate::broker::Broker>,
    pub(crate) write_token: AtomicUsize,
    /// Process to reap once the link closes.
    pub(crate) child: Option<crate::child::ChildProc>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Stream({} id={} fd={})",
            self.name,
            self.remote_id,
            self.rfd.as_raw_fd()
        )
    }
}

impl Stream {
    /// Wraps `rfd` (and `wfd`, when writes go elsewhere) as a stream to
    /// context `remote_id`, reading frames of at most `max` bytes. Both are
    /// made non-blocking. The output queue's bound is set when the router
    /// attaches the link ([`Stream::set_max_queued`]).
    pub(crate) fn new(
        name: String,
        remote_id: u32,
        is_parent: bool,
        rfd: OwnedFd,
        wfd: Option<OwnedFd>,
        max: usize,
        child: Option<crate::child::ChildProc>,
    ) -> io::Result<Stream> {
        let is_socket = wfd.is_none();
        crate::process::set_nonblocking(rfd.as_raw_fd())?;
        crate::process::track_fd(rfd.as_raw_fd());
        if let Some(w) = &wfd {
            crate::process::set_nonblocking(w.as_raw_fd())?;
            crate::process::track_fd(w.as_raw_fd());
        }
        Ok(Stream {
            id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            name,
            remote_id,
            is_parent,
            rfd,
            wfd,
            watching: Mutex::new((true, false)),
            is_socket,
            out: Mutex::new(Out::default()),
            space: Condvar::new(),
            max_queued: AtomicUsize::new(DEFAULT_MAX_QUEUED),
            paused: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            detached: AtomicBool::new(false),
            stall_after_ms: AtomicU64::new(0),
            me: OnceLock::new(),
            egress: Mutex::new(HashSet::new()),
            reader: Mutex::new(FrameReader::new(max)),
            read_token: AtomicUsize::new(usize::MAX),
            read_done: AtomicBool::new(false),
            broker: OnceLock::new(),
            write_token: AtomicUsize::new(usize::MAX),
            child,
        })
    }

    pub(crate) fn rfd(&self) -> RawFd {
        self.rfd.as_raw_fd()
    }

    pub(crate) fn wfd(&self) -> RawFd {
        self.wfd.as_ref().unwrap_or(&self.rfd).as_raw_fd()
    }

    /// Bytes written to the peer and read from it so far.
    pub(crate) fn traffic(&self) -> (u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.received.load(Ordering::Relaxed),
        )
    }

    pub(crate) fn note_sent(&self, n: usize) {
        self.sent.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn note_received(&self, n: u64) {
        if n > 0 {
            self.received.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// `true` when one descriptor carries both directions (a socket).
    pub(crate) fn one_fd(&self) -> bool {
        self.wfd.is_none()
    }

    /// Changes what the broker watches the single descriptor for: `read`
    /// and/or `write` (`None`: unchanged). Returns `false` if the broker
    /// refused.
    pub(crate) fn watch_write(&self, on: bool) -> bool {
        self.watch(None, Some(on))
    }

    fn watch(&self, read: Option<bool>, write: Option<bool>) -> bool {
        let token = self.read_token.load(Ordering::Acquire);
        let Some(b) = self.broker.get() else {
            return false;
        };
        if token == usize::MAX {
            return false;
        }
        let mut w = lock(&self.watching);
        let next = (read.unwrap_or(w.0), write.unwrap_or(w.1));
        let interest = match next {
            (true, true) => Some(mio::Interest::READABLE | mio::Interest::WRITABLE),
            (true, false) => Some(mio::Interest::READABLE),
            (false, true) => Some(mio::Interest::WRITABLE),
            (false, false) => None,
        };
        let ok = b
            .reregister(self.rfd(), mio::Token(token), interest)
            .is_ok();
        if ok {
            *w = next;
        }
        ok
    }

    /// Changes the bound of the output queue.
    pub(crate) fn set_max_queued(&self, n: usize) {
        self.max_queued.store(n.max(1), Ordering::Relaxed);
    }

    /// Sets the flow limits of an attached link: the queue bound, and how
    /// long the queue may stay full before the link counts as stalled
    /// (`None`: never).
    pub(crate) fn set_flow(self: &Arc<Self>, max_queued: usize, stall_after: Option<Duration>) {
        self.set_max_queued(max_queued);
        let ms = stall_after.map_or(0, |d| (d.as_millis() as u64).max(1));
        self.stall_after_ms.store(ms, Ordering::Relaxed);
        let _ = self.me.set(Arc::downgrade(self));
    }

    pub(crate) fn stall_after(&self) -> Option<Duration> {
        match self.stall_after_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn max_queued(&self) -> usize {
        self.max_queued.load(Ordering::Relaxed)
    }

    /// `true` while the link must not be read (flow control).
    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire)
    }

    /// Reading may go on: the queue this link's traffic filled has room.
    /// Re-arming the edge-triggered registration reports data that waited
    /// in the descriptor meanwhile.
    pub(crate) fn resume(&self) {
        if self.paused.swap(false, Ordering::AcqRel) {
            self.set_read_interest(true);
        }
    }

    /// Switches the broker's read interest in `rfd` on or off.
    pub(crate) fn set_read_interest(&self, reading: bool) {
        if self.one_fd() {
            self.watch(Some(reading), None);
            return;
        }
        let token = self.read_token.load(Ordering::Acquire);
        let Some(b) = self.broker.get() else { return };
        if token == usize::MAX {
            return;
        }
        let interest = reading.then_some(mio::Interest::READABLE);
        let _ = b.reregister(self.rfd(), mio::Token(token), interest);
    }

    /// Records that `src` sent a message down this link.
    pub(crate) fn note_egress(&self, src: u32) {
        lock(&self.egress).insert(src);
    }

    /// `true` when `id` ever sent a message down this link.
    pub(crate) fn carried_from(&self, id: u32) -> bool {
        lock(&self.egress).contains(&id)
    }

    /// Ends the link towards the peer now (it reads end of file), without
    /// waiting for the last reference to drop: a disconnect.
    pub(crate) fn hang_up(&self) {
        self.mark_closed();
        self.close_write_side();
    }

    fn close_write_side(&self) {
        if self.is_socket {
            // SAFETY: shutdown() on a socket we own; harmless on error.
            unsafe { libc::shutdown(self.rfd(), libc::SHUT_WR) };
            return;
        }
        // A pipe has no half-close: put /dev/null in its place, which
        // closes our end of the pipe while keeping the number valid for
        // any thread still holding it.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            // SAFETY: dup2 onto a descriptor we own.
            unsafe { libc::dup2(null.as_raw_fd(), self.wfd()) };
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        crate::process::untrack_fd(self.rfd());
        if let Some(w) = &self.wfd {
            crate::process::untrack_fd(w.as_raw_fd());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Header;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn link(max_queued: usize) -> (Arc<Stream>, OwnedFd) {
        let (a, b) = UnixStream::pair().unwrap();
        let s = Stream::new("t".into(), 1, false, a.into(), None, 1 << 30, None).unwrap();
        s.set_max_queued(max_queued);
        let b = OwnedFd::from(b);
        crate::process::set_nonblocking(b.as_raw_fd()).unwrap();
        (Arc::new(s), b)
    }

    fn hdr(handle: u32, len: usize) -> [u8; crate::frame::HEADER_LEN] {
        Header {
            handle,
            length: len as u32,
            ..Header::default()
        }
        .encode()
    }

    fn send(s: &Stream, len: usize, mode: Mode<'_>) -> Result<(), SendError> {
        s.send_frame(hdr(9, len), Body::Owned(vec![5u8; len]), mode)
    }

    #[test]
    fn big_frame_over_socket() {
        let (s, fd) = link(DEFAULT_MAX_QUEUED);
        let body = vec![5u8; 8 << 20];
        let s2 = s.clone();
        let writer = std::thread::spawn(move || {
            send(&s2, 8 << 20, Mode::Relay(None)).unwrap();
            let t0 = Instant::now();
            while s2.queued() > 0 && t0.elapsed() < Duration::from_secs(10) {
                s2.flush().unwrap();
                std::thread::yield_now();
            }
        });
        let mut r = FrameReader::new(1 << 30);
        let mut got = None;
        let t0 = Instant::now();
        while got.is_none() && t0.elapsed() < Duration::from_secs(10) {
            r.read_from(
                fd.as_raw_fd(),
                &mut |h, b| got = Some((h.handle, b)),
                &|| false,
                false,
            )
            .unwrap();
        }
        let (h, b) = got.expect("frame arrived");
        assert_eq!(h, 9);
        assert_eq!(b, body);
        writer.join().unwrap();
    }

    /// Reads frames from `fd` until `n` arrived (10 s at most).
    fn read_frames(fd: &OwnedFd, n: usize) -> Vec<(u32, Vec<u8>)> {
        let mut r = FrameReader::new(1 << 30);
        let mut got = Vec::new();
        let t0 = Instant::now();
        while got.len() < n && t0.elapsed() < Duration::from_secs(10) {
            let _ = r.read_from(
                fd.as_raw_fd(),
                &mut |h, b| got.push((h.handle, b)),
                &|| false,
                false,
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        got
    }

    #[test]
    fn a_borrowed_frame_is_never_interleaved() {
        let (s, peer) = link(1 << 20);
        let big: Vec<u8> = (0..24 << 20).map(|i| (i % 253) as u8).collect();
        let s2 = s.clone();
        // Another thread sends small frames meanwhile: they go after it.
        let other = std::thread::spawn(move || {
            for _ in 0..50 {
                send(&s2, 100, Mode::Wait(Some(Duration::from_secs(10)))).unwrap();
            }
        });
        let reader = std::thread::spawn(move || read_frames(&peer, 51));
        s.send_borrowed(hdr(7, big.len()), &big, Some(Duration::from_secs(10)))
            .unwrap();
        other.join().unwrap();
        // Flush what queued behind it (the broker would).
        let t0 = Instant::now();
        while s.queued() > 0 && t0.elapsed() < Duration::from_secs(10) {
            s.flush().unwrap();
            std::thread::yield_now();
        }
        let got = reader.join().unwrap();
        assert_eq!(got.len(), 51);
        let at = got
            .iter()
            .position(|(h, _)| *h == 7)
            .expect("the big frame");
        assert!(got[at].1 == big, "the borrowed frame arrived whole");
        assert!(got
            .iter()
            .filter(|(h, _)| *h == 9)
            .all(|(_, b)| b.len() == 100));
    }

    #[test]
    fn a_graceful_close_waits_for_the_borrowed_frame() {
        let (s, peer) = link(1 << 20);
        let big = vec![3u8; 24 << 20];
        let s2 = s.clone();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s2.close_gracefully();
        });
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let mut r = FrameReader::new(1 << 30);
            let mut got = Vec::new();
            let t0 = Instant::now();
            loop {
                match r.read_from(
                    peer.as_raw_fd(),
                    &mut |_, b| got.push(b.len()),
                    &|| false,
                    false,
                ) {
                    Ok(ReadState::Eof) => return Some(got),
                    _ if t0.elapsed() > Duration::from_secs(10) => return None,
                    _ => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        });
        s.send_borrowed(hdr(7, big.len()), &big, Some(Duration::from_secs(10)))
            .unwrap();
        closer.join().unwrap();
        let got = reader
            .join()
            .unwrap()
            .expect("end of stream after the frame");
        assert_eq!(got, [big.len()]);
    }

    #[test]
    fn a_borrowed_frame_to_a_stopped_peer_is_copied_after_the_timeout() {
        let (s, _peer) = link(1 << 20);
        let big = vec![1u8; 32 << 20];
        let t0 = Instant::now();
        s.send_borrowed(hdr(7, big.len()), &big, Some(Duration::from_millis(300)))
            .unwrap();
        assert!(t0.elapsed() >= Duration::from_millis(300));
        let queued = s.queued();
        assert!(queued > 0 && queued <= big.len() + 32, "{queued} queued");
        // Nothing more fits now: a waiting sender times out.
        assert!(matches!(
            send(&s, 10, Mode::Wait(Some(Duration::from_millis(100)))),
            Err(SendError::TimedOut(_))
        ));
    }

    #[test]
    fn a_full_queue_refuses_try_and_times_out_wait() {
        let (s, _peer) = link(1 << 20);
        // Nobody reads: the socket buffer fills, then the queue.
        let mut n = 0;
        while send(&s, 256 << 10, Mode::Try).is_ok() {
            n += 1;
            assert!(n < 1000, "the queue never filled");
        }
        assert!(matches!(send(&s, 10, Mode::Try), Err(SendError::Full)));
        let t0 = Instant::now();
        assert!(matches!(
            send(&s, 10, Mode::Wait(Some(Duration::from_millis(200)))),
            Err(SendError::TimedOut(_))
        ));
        assert!(t0.elapsed() >= Duration::from_millis(200));
        // Bounded: at most the limit plus the frame that crossed it.
        assert!(s.queued() < (1 << 20) + (256 << 10) + 64);
    }

    #[test]
    fn a_waiting_sender_holds_no_lock_and_wakes_when_drained() {
        let (s, peer) = link(1 << 20);
        while send(&s, 256 << 10, Mode::Try).is_ok() {}
        let s2 = s.clone();
        let waiter =
            std::thread::spawn(move || send(&s2, 10, Mode::Wait(Some(Duration::from_secs(20)))));
        std::thread::sleep(Duration::from_millis(50));
        // While it waits, the link is usable: other threads get its lock.
        let t0 = Instant::now();
        assert!(s.queued() > 0);
        assert!(matches!(send(&s, 10, Mode::Try), Err(SendError::Full)));
        assert!(t0.elapsed() < Duration::from_millis(500));
        // The peer reads everything; flushing wakes the waiter.
        let mut r = FrameReader::new(1 << 30);
        let t0 = Instant::now();
        while !waiter.is_finished() && t0.elapsed() < Duration::from_secs(10) {
            let _ = r.read_from(peer.as_raw_fd(), &mut |_, _| {}, &|| false, false);
            s.flush().unwrap();
        }
        assert!(waiter.join().unwrap().is_ok());
    }

    #[test]
    fn relayed_traffic_pauses_its_source_until_drained() {
        let (s, peer) = link(1 << 20);
        let (src, _src_peer) = link(1 << 20);
        while !src.is_paused() {
            send(&s, 256 << 10, Mode::Relay(Some(&src))).unwrap();
            assert!(s.queued() < 4 << 20, "relay never paused its source");
        }
        let mut r = FrameReader::new(1 << 30);
        let t0 = Instant::now();
        while src.is_paused() && t0.elapsed() < Duration::from_secs(10) {
            let _ = r.read_from(peer.as_raw_fd(), &mut |_, _| {}, &|| false, false);
            s.flush().unwrap();
        }
        assert!(!src.is_paused(), "draining resumes the source");
    }

    #[test]
    fn closing_fails_waiters_and_resumes_paused_links() {
        let (s, _peer) = link(1 << 20);
        let (src, _src_peer) = link(1 << 20);
        while !src.is_paused() {
            send(&s, 256 << 10, Mode::Relay(Some(&src))).unwrap();
        }
        let s2 = s.clone();
        let waiter = std::thread::spawn(move || send(&s2, 10, Mode::Wait(None)));
        std::thread::sleep(Duration::from_millis(50));
        s.mark_closed();
        assert!(matches!(waiter.join().unwrap(), Err(SendError::Closed(_))));
        assert!(!src.is_paused());
        assert_eq!(s.queued(), 0);
    }

    /// Holds `broker` in a task (busy) until the latch returned is put.
    fn hold(broker: &crate::broker::Broker) -> crate::Latch<()> {
        let (busy, release) = (crate::Latch::new(), crate::Latch::<()>::new());
        let (b, r) = (busy.clone(), release.clone());
        broker
            .defer(move || {
                let _ = b.put(());
                let _ = r.get(Some(Duration::from_secs(10)));
            })
            .unwrap();
        busy.get(Some(Duration::from_secs(10))).unwrap();
        release
    }

    #[test]
    fn frames_sent_while_the_broker_is_busy_leave_with_its_next_flush() {
        let (s, peer) = link(DEFAULT_MAX_QUEUED);
        s.set_flow(DEFAULT_MAX_QUEUED, None);
        let broker = crate::broker::Broker::new().unwrap();
        let _ = s.broker.set(broker.clone());
        // Asleep: the sender writes at once.
        send(&s, 10, Mode::Wait(None)).unwrap();
        assert_eq!(s.queued(), 0);
        assert_eq!(read_frames(&peer, 1).len(), 1);
        // Busy (in a task held until the frames are sent): they queue for
        // it, in order, and no byte reaches the peer before it flushes.
        let release = hold(&broker);
        // A turn this long would be refused work (it may be a slow task).
        broker.renew_turn();
        for i in 0..10 {
            s.send_frame(
                hdr(100 + i, 3),
                Body::Owned(vec![i as u8; 3]),
                Mode::Wait(None),
            )
            .unwrap();
        }
        assert_eq!(s.queued(), 10 * (crate::frame::HEADER_LEN + 3));
        let mut probe = [0u8; 1];
        let peeked = nix::sys::socket::recv(
            peer.as_raw_fd(),
            &mut probe,
            nix::sys::socket::MsgFlags::MSG_PEEK,
        );
        assert_eq!(
            peeked,
            Err(nix::errno::Errno::EAGAIN),
            "nothing written while busy"
        );
        release.put(()).unwrap();
        let got = read_frames(&peer, 10);
        let handles: Vec<u32> = got.iter().map(|(h, _)| *h).collect();
        assert_eq!(handles, (100..110).collect::<Vec<_>>());
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, (_, b))| b == &vec![i as u8; 3]));
        assert_eq!(s.queued(), 0);
        // Busy for long (a slow task): the sender writes itself.
        let release = hold(&broker);
        std::thread::sleep(Duration::from_millis(20));
        send(&s, 10, Mode::Wait(None)).unwrap();
        assert_eq!(s.queued(), 0, "written at once, not left to a slow turn");
        release.put(()).unwrap();
        assert_eq!(read_frames(&peer, 1).len(), 1);
        broker.shutdown();
        broker.join();
    }
}
