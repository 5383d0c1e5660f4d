//! [`Stream`]: one link to a peer context over a socket or a pair of pipes.
//!
//! Sending is done by whichever thread has a message: it takes the stream's
//! output lock and, when nothing is queued, writes the frame straight to the
//! descriptor with one `writev`. Only what the kernel would not take is
//! queued, and the broker thread finishes it on writable readiness. This is
//! what keeps a call's round trip close to a bare socketpair's: no hand-off
//! to another thread on the send path.
//!
//! Receiving is done only by the broker thread, through [`FrameReader`],
//! which turns bytes into frames and never panics on hostile input.

use crate::broker::lock;
use crate::error::StreamError;
use crate::frame::{FrameError, Header, HEADER_LEN};
use crate::message::Message;
use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

static NEXT_STREAM: AtomicU64 = AtomicU64::new(1);

struct Out {
    buf: Vec<u8>,
    pos: usize,
    closed: bool,
    /// Close the write side once `buf` drains (graceful shutdown).
    close_when_drained: bool,
    /// The broker watches `wfd` for writability (only while `buf` has
    /// data: a registration left on would wake the broker each time the
    /// peer reads, since Unix sockets signal write space on every read).
    write_armed: bool,
}

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
    /// Always separate from `rfd` (a socket is duplicated), so reading and
    /// writing are registered with the broker independently: a thread that
    /// takes over reading (see `direct.rs`) leaves writes to the broker.
    wfd: OwnedFd,
    /// `rfd` is a socket (half-closed with `shutdown`), not a pipe.
    is_socket: bool,
    out: Mutex<Out>,
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
    /// made non-blocking.
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
        let wfd = match wfd {
            Some(w) => w,
            None => crate::process::dup_cloexec(rfd.as_raw_fd())?,
        };
        crate::process::set_nonblocking(rfd.as_raw_fd())?;
        crate::process::set_nonblocking(wfd.as_raw_fd())?;
        crate::process::track_fd(rfd.as_raw_fd());
        crate::process::track_fd(wfd.as_raw_fd());
        Ok(Stream {
            id: NEXT_STREAM.fetch_add(1, Ordering::Relaxed),
            name,
            remote_id,
            is_parent,
            rfd,
            wfd,
            is_socket,
            reader: Mutex::new(FrameReader::new(max)),
            read_token: AtomicUsize::new(usize::MAX),
            read_done: AtomicBool::new(false),
            out: Mutex::new(Out {
                buf: Vec::new(),
                pos: 0,
                closed: false,
                close_when_drained: false,
                write_armed: false,
            }),
            broker: OnceLock::new(),
            write_token: AtomicUsize::new(usize::MAX),
            child,
        })
    }

    pub(crate) fn rfd(&self) -> RawFd {
        self.rfd.as_raw_fd()
    }

    pub(crate) fn wfd(&self) -> RawFd {
        self.wfd.as_raw_fd()
    }

    /// Sends `msg`, writing directly when nothing is queued.
    pub(crate) fn send(&self, msg: &Message) -> Result<(), StreamError> {
        let hdr = msg.header().encode();
        let total = HEADER_LEN + msg.data.len();
        let mut out = lock(&self.out);
        if out.closed || out.close_when_drained {
            return Err(StreamError::new(format!(
                "the link to {} is closed",
                self.name
            )));
        }
        let mut written = 0;
        if out.pos == out.buf.len() {
            written = match write_all_nb(self.wfd(), &[&hdr, &msg.data]) {
                Ok(n) => n,
                Err(e) => {
                    out.closed = true;
                    return Err(StreamError::new(format!(
                        "writing to {} failed: {e}",
                        self.name
                    )));
                }
            };
            if written < total && total >= BIG_FRAME && !crate::broker::on_a_broker_thread() {
                // A large message from a user thread: keep writing here
                // while the peer reads, rather than copying the rest into
                // the queue for the broker. Bounded: after a stall the
                // remainder is queued as usual.
                written = self.write_while_progress(&[&hdr, &msg.data], written);
            }
            if written == total {
                return Ok(());
            }
        }
        if written < HEADER_LEN {
            out.buf.extend_from_slice(&hdr[written..]);
            out.buf.extend_from_slice(&msg.data);
        } else {
            out.buf.extend_from_slice(&msg.data[written - HEADER_LEN..]);
        }
        self.arm_write(&mut out, true);
        Ok(())
    }

    /// Turns the broker's writability watch on or off; called with the
    /// output lock held, so the watch always matches the queue.
    fn arm_write(&self, out: &mut Out, on: bool) {
        let token = self.write_token.load(Ordering::Acquire);
        if out.write_armed == on || token == usize::MAX {
            return;
        }
        let Some(b) = self.broker.get() else { return };
        let interest = if on {
            mio::Interest::WRITABLE
        } else {
            mio::Interest::PRIORITY
        };
        if b.reregister(self.wfd(), mio::Token(token), interest)
            .is_ok()
        {
            out.write_armed = on;
        }
    }

    /// Called by the broker once `wfd` is registered (unarmed): arms it if
    /// data was queued before.
    pub(crate) fn registered(&self) {
        let mut out = lock(&self.out);
        let pending = out.pos < out.buf.len();
        self.arm_write(&mut out, pending);
    }

    /// Writes `bufs` from offset `done` until finished or the peer stops
    /// reading for a while; returns the bytes written.
    fn write_while_progress(&self, bufs: &[&[u8]], mut done: usize) -> usize {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let fd = self.wfd();
        while done < total {
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, STALL_MS) } <= 0 {
                break;
            }
            let mut skip = done;
            let rest: Vec<&[u8]> = bufs
                .iter()
                .filter_map(|b| {
                    if skip >= b.len() {
                        skip -= b.len();
                        None
                    } else {
                        let r = &b[skip..];
                        skip = 0;
                        Some(r)
                    }
                })
                .collect();
            match write_all_nb(fd, &rest) {
                Ok(0) | Err(_) => break,
                Ok(n) => done += n,
            }
        }
        done
    }

    /// Writes `bytes` as they are, bypassing framing (test hook: lets a
    /// test play a hostile peer). Waits for the peer to read, within a
    /// bound.
    pub(crate) fn write_raw(&self, bytes: &[u8]) -> io::Result<()> {
        let _out = lock(&self.out);
        let mut done = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while done < bytes.len() {
            done += write_all_nb(self.wfd(), &[&bytes[done..]])?;
            if done < bytes.len() {
                if std::time::Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "peer stopped reading",
                    ));
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// Writes queued bytes (broker thread, on writable readiness).
    /// Returns an error when the peer is gone.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut out = lock(&self.out);
        while out.pos < out.buf.len() {
            let start = out.pos;
            match write_all_nb(self.wfd(), &[&out.buf[start..]]) {
                Ok(0) => break,
                Ok(n) => out.pos += n,
                Err(e) => {
                    out.closed = true;
                    return Err(e);
                }
            }
        }
        if out.pos == out.buf.len() {
            self.arm_write(&mut out, false);
            out.pos = 0;
            out.buf.clear();
            if out.buf.capacity() > 1 << 20 {
                out.buf.shrink_to(64 << 10);
            }
            if out.close_when_drained && !out.closed {
                out.closed = true;
                self.close_write_side();
            }
        }
        Ok(())
    }

    /// Bytes waiting to be written.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        let out = lock(&self.out);
        out.buf.len() - out.pos
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
        }
        let _ = self.flush();
    }

    /// Marks the stream dead: nothing more is sent.
    pub(crate) fn mark_closed(&self) {
        lock(&self.out).closed = true;
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
        crate::process::untrack_fd(self.wfd());
    }
}

/// Writes as much of `bufs` as the descriptor takes without blocking.
fn write_all_nb(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let total: usize = bufs.iter().map(|b| b.len()).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let mut slices = Vec::with_capacity(bufs.len());
        for b in bufs {
            if skip >= b.len() {
                skip -= b.len();
                continue;
            }
            slices.push(IoSlice::new(&b[skip..]));
            skip = 0;
        }
        // SAFETY: IoSlice is ABI-compatible with iovec; the slices outlive
        // the call.
        let n = unsafe {
            libc::writev(
                fd,
                slices.as_ptr() as *const libc::iovec,
                slices.len().min(libc::c_int::MAX as usize) as libc::c_int,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => break,
                _ => return Err(e),
            }
        }
        done += n as usize;
    }
    Ok(done)
}

/// What one read pass produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadState {
    /// The descriptor has no more data for now.
    Open,
    /// The peer closed its end.
    Eof,
}

/// Reassembles frames from a byte stream (broker thread only).
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    /// A large frame being read straight into its own buffer.
    big: Option<(Header, Vec<u8>)>,
    max: usize,
}

const READ_CHUNK: usize = 256 * 1024;
/// Frames at least this large are read into a dedicated buffer, and
/// written by their sender rather than queued.
const BIG_FRAME: usize = 1 << 20;
/// How long a sender of a large frame waits for the peer to read before
/// handing the rest to the broker.
const STALL_MS: libc::c_int = 50;

impl FrameReader {
    pub(crate) fn new(max: usize) -> FrameReader {
        FrameReader {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            big: None,
            max,
        }
    }

    /// Appends bytes directly (used by tests and by the bootstrap, which
    /// may have read past the handshake).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Reads until the descriptor would block, passing each complete frame
    /// to `sink`. A malformed frame stops reading with the error.
    pub(crate) fn read_from(
        &mut self,
        fd: RawFd,
        sink: &mut dyn FnMut(Header, Vec<u8>),
    ) -> Result<ReadState, ReadError> {
        loop {
            self.drain(sink)?;
            let n = match &mut self.big {
                Some((h, body)) => {
                    let want = h.length as usize - body.len();
                    read_into(fd, body, want)
                }
                None => {
                    if self.start > 0 && self.start == self.buf.len() {
                        self.buf.clear();
                        self.start = 0;
                    } else if self.start > self.buf.capacity() / 2 {
                        self.buf.drain(..self.start);
                        self.start = 0;
                    }
                    read_into(fd, &mut self.buf, READ_CHUNK)
                }
            };
            match n {
                Ok(0) => {
                    self.drain(sink)?;
                    return Ok(ReadState::Eof);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.drain(sink)?;
                    return Ok(ReadState::Open);
                }
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }

    /// Emits every complete frame buffered so far.
    pub(crate) fn drain(&mut self, sink: &mut dyn FnMut(Header, Vec<u8>)) -> Result<(), ReadError> {
        if let Some((h, body)) = &self.big {
            if body.len() < h.length as usize {
                return Ok(());
            }
            if let Some((h, body)) = self.big.take() {
                sink(h, body);
            }
        }
        loop {
            let avail = &self.buf[self.start..];
            let Some(h) = Header::decode(avail, self.max).map_err(ReadError::Frame)? else {
                return Ok(());
            };
            let len = h.length as usize;
            if avail.len() >= HEADER_LEN + len {
                let body = avail[HEADER_LEN..HEADER_LEN + len].to_vec();
                self.start += HEADER_LEN + len;
                sink(h, body);
            } else if len >= BIG_FRAME {
                let mut body = Vec::with_capacity(len);
                body.extend_from_slice(&avail[HEADER_LEN..]);
                self.start = self.buf.len();
                self.big = Some((h, body));
                return Ok(());
            } else {
                return Ok(());
            }
        }
    }
}

/// Why reading a stream stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer sent a frame that breaks the wire rules.
    Frame(FrameError),
    /// The descriptor failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Frame(e) => write!(f, "malformed frame: {e}"),
            ReadError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

/// Reads up to `want` bytes onto the end of `buf`.
fn read_into(fd: RawFd, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    buf.reserve(want);
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(want);
    // SAFETY: reading into reserved, uninitialised capacity; only the
    // bytes the kernel reports written are marked initialised.
    let n = unsafe { libc::read(fd, spare.as_mut_ptr() as *mut libc::c_void, len) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    // SAFETY: the kernel initialised `n` bytes past the old length.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::Encoding;
    use std::os::unix::net::UnixStream;

    fn frame(handle: u32, body: &[u8]) -> Vec<u8> {
        let h = Header {
            encoding: Encoding::Raw,
            dst_id: 0,
            src_id: 1,
            auth_id: 1,
            handle,
            reply_to: 0,
            length: body.len() as u32,
        };
        let mut v = h.encode().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn frames_split_anywhere_reassemble() {
        let mut all = frame(1, b"hello");
        all.extend(frame(2, &vec![7u8; 3000]));
        all.extend(frame(3, b""));
        for cut in 0..all.len() {
            let mut r = FrameReader::new(1 << 20);
            let mut got = Vec::new();
            r.push(&all[..cut]);
            r.drain(&mut |h, b| got.push((h.handle, b.len()))).unwrap();
            r.push(&all[cut..]);
            r.drain(&mut |h, b| got.push((h.handle, b.len()))).unwrap();
            assert_eq!(got, [(1, 5), (2, 3000), (3, 0)], "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = FrameReader::new(1 << 20);
        r.push(b"GET / HTTP/1.1\r\n\r\n and more garbage to fill a header");
        assert!(matches!(r.drain(&mut |_, _| {}), Err(ReadError::Frame(_))));
    }

    #[test]
    fn big_frame_over_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let s = Stream::new("t".into(), 1, false, OwnedFd::from(a), None, 1 << 30, None).unwrap();
        let body = vec![5u8; 8 << 20];
        let mut m = Message::raw(body.clone());
        m.handle = 9;
        let writer = std::thread::spawn(move || {
            s.send(&m).unwrap();
            while s.queued() > 0 {
                s.flush().unwrap();
                std::thread::yield_now();
            }
            s
        });
        let fd = OwnedFd::from(b);
        crate::process::set_nonblocking(fd.as_raw_fd()).unwrap();
        let mut r = FrameReader::new(1 << 30);
        let mut got = None;
        let t0 = std::time::Instant::now();
        while got.is_none() && t0.elapsed() < std::time::Duration::from_secs(10) {
            r.read_from(fd.as_raw_fd(), &mut |h, b| got = Some((h.handle, b)))
                .unwrap();
        }
        let (h, b) = got.expect("frame arrived");
        assert_eq!(h, 9);
        assert_eq!(b, body);
        drop(writer.join().unwrap());
    }
}
