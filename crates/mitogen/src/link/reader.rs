//! [`FrameReader`]: turns the bytes of a link into frames.
//!
//! It never panics on hostile input: a header that breaks a wire rule is a
//! [`ReadError::Frame`], and the link is closed by its owner. Large frames
//! are read straight into a buffer of their own size (huge pages: see
//! `memory.rs`), so a 100 MiB payload is not first copied through the
//! small read buffer.
//!
//! A fragment of a message addressed to this context is read straight onto
//! the end of the message it continues: the reader asks its [`Placement`]
//! (the router's reassembly) to lend that buffer when the fragment's header
//! arrives, appends the body to it, and hands the whole back with the
//! internal [`LENT`] flag. A 1 GiB message thus crosses memory once on its
//! way in (kernel to its final buffer), instead of once more per fragment.

use crate::frame::{FrameError, Header, FRAGMENT, HEADER_LEN, LENT};
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// Where the bodies of fragments go (see the module doc).
pub(crate) trait Placement: Send + Sync {
    /// The partial message `h` (a fragment's header) continues, to append
    /// its body to; `None` to read the body into a buffer of its own.
    /// Whatever is lent comes back in the frame passed on, flagged
    /// [`LENT`].
    fn lend(&self, h: &Header) -> Option<Vec<u8>>;
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
    /// Bytes read from the descriptor and not yet counted by the link
    /// ([`FrameReader::take_bytes_read`]).
    bytes_read: u64,
    buf: Vec<u8>,
    start: usize,
    /// A large frame being read straight into its buffer, which holds
    /// `base` bytes lent before the body.
    big: Option<Big>,
    max: usize,
    place: Option<Arc<dyn Placement>>,
}

struct Big {
    h: Header,
    buf: Vec<u8>,
    base: usize,
}

impl Big {
    fn missing(&self) -> usize {
        self.base + self.h.length as usize - self.buf.len()
    }
}

const READ_CHUNK: usize = 256 * 1024;
/// Frames at least this large are read into a dedicated buffer.
const BIG_FRAME: usize = 1 << 20;

impl FrameReader {
    pub(crate) fn new(max: usize) -> FrameReader {
        FrameReader {
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            big: None,
            max,
            place: None,
            bytes_read: 0,
        }
    }

    /// Reads fragments into buffers `place` lends (see the module doc).
    pub(crate) fn set_placement(&mut self, place: Arc<dyn Placement>) {
        self.place = Some(place);
    }

    /// The buffer the body of `h` is appended to, and its length before.
    fn target(&self, h: &mut Header) -> (Vec<u8>, usize) {
        let lent = match &self.place {
            Some(p) if h.flags & FRAGMENT != 0 => p.lend(h),
            _ => None,
        };
        match lent {
            Some(v) => {
                h.flags |= LENT;
                let base = v.len();
                (v, base)
            }
            None => (super::memory::spare(h.length as usize), 0),
        }
    }

    /// Appends bytes directly (used by tests and by the bootstrap, which
    /// may have read past the handshake).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes read since the last call (for the link's traffic count).
    pub(crate) fn take_bytes_read(&mut self) -> u64 {
        std::mem::take(&mut self.bytes_read)
    }

    /// `true` when no byte of an unfinished or unrouted frame is buffered:
    /// everything read so far was handed on.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.big.is_none() && self.start == self.buf.len()
    }

    /// Reads until the descriptor would block, passing each complete frame
    /// to `sink`. A malformed frame stops reading with the error. `hold`
    /// is asked after each frame is handed on: `true` stops reading for now
    /// (the link is paused for flow control) with what was not yet read
    /// left in the descriptor.
    ///
    /// With `short_ends`, a read that returns less than it asked for ends
    /// the pass too: a socket or pipe hands over all it holds, so the
    /// descriptor was empty then, and the read that would only say so is
    /// saved. Only for a caller that then polls the descriptor or re-arms
    /// its edge-triggered registration (which reports what came since,
    /// end of file included): a short read may have left an end of file
    /// behind whose edge was already consumed.
    pub(crate) fn read_from(
        &mut self,
        fd: RawFd,
        sink: &mut dyn FnMut(Header, Vec<u8>),
        hold: &dyn Fn() -> bool,
        short_ends: bool,
    ) -> Result<ReadState, ReadError> {
        loop {
            self.drain(sink)?;
            if hold() {
                return Ok(ReadState::Open);
            }
            let mut want = READ_CHUNK;
            let n = match &mut self.big {
                Some(big) => {
                    want = big.missing();
                    read_into(fd, &mut big.buf, want)
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
                Ok(n) => {
                    self.bytes_read += n as u64;
                    if short_ends && n < want {
                        self.drain(sink)?;
                        return Ok(ReadState::Open);
                    }
                }
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
        if let Some(big) = &self.big {
            if big.missing() > 0 {
                return Ok(());
            }
            if let Some(big) = self.big.take() {
                sink(big.h, big.buf);
            }
        }
        loop {
            let avail = &self.buf[self.start..];
            let decoded = Header::decode(avail, self.max);
            let decoded = decoded.map_err(|e| ReadError::Frame(e, seen(avail)))?;
            let Some(mut h) = decoded else {
                return Ok(());
            };
            let len = h.length as usize;
            let whole = avail.len() >= HEADER_LEN + len;
            if !whole && len < BIG_FRAME {
                return Ok(());
            }
            let (mut body, base) = self.target(&mut h);
            let avail = &self.buf[self.start..];
            let have = avail.len().min(HEADER_LEN + len);
            super::memory::reserve(&mut body, len);
            body.extend_from_slice(&avail[HEADER_LEN..have]);
            self.start += have;
            if !whole {
                self.big = Some(Big { h, buf: body, base });
                return Ok(());
            }
            sink(h, body);
        }
    }
}

/// Why reading a stream stopped.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The peer sent a frame that breaks the wire rules, and the first
    /// bytes received where it began (at most [`SHOWN`]), for the log: a
    /// shell's error message or a login banner where a frame belongs says
    /// what went wrong.
    Frame(FrameError, Vec<u8>),
    /// The descriptor failed.
    Io(io::Error),
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Frame(e, _) => Some(e),
            ReadError::Io(e) => Some(e),
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Frame(e, bytes) => write!(
                f,
                "malformed frame: {e} (received {:?})",
                String::from_utf8_lossy(bytes)
            ),
            ReadError::Io(e) => write!(f, "read failed: {e}"),
        }
    }
}

/// How many bytes of a malformed frame an error quotes.
pub(crate) const SHOWN: usize = 64;

/// The first bytes of a malformed frame, for its error.
fn seen(bytes: &[u8]) -> Vec<u8> {
    bytes[..bytes.len().min(SHOWN)].to_vec()
}

/// Reads up to `want` bytes onto the end of `buf`.
fn read_into(fd: RawFd, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    super::memory::reserve(buf, want);
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
    use std::io::Write;
    use std::os::fd::AsRawFd;
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
            ..Header::default()
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

    /// Lends `b"lent:"` for every fragment.
    struct Prefix;
    impl Placement for Prefix {
        fn lend(&self, _: &Header) -> Option<Vec<u8>> {
            Some(b"lent:".to_vec())
        }
    }

    #[test]
    fn fragment_bodies_are_appended_to_what_is_lent() {
        let big = vec![3u8; BIG_FRAME + 100];
        for body in [&b"small"[..], &big] {
            let mut bytes = frame(1, b"whole");
            let mut h = Header::decode(&frame(2, body), 1 << 30).unwrap().unwrap();
            (h.flags, h.frag_id) = (FRAGMENT, 9);
            bytes.extend_from_slice(&h.encode());
            bytes.extend_from_slice(body);
            let (a, b) = UnixStream::pair().unwrap();
            crate::process::set_nonblocking(b.as_raw_fd()).unwrap();
            let writer = std::thread::spawn(move || (&a).write_all(&bytes));
            let mut r = FrameReader::new(1 << 30);
            r.set_placement(Arc::new(Prefix));
            let mut got = Vec::new();
            let t0 = std::time::Instant::now();
            while got.len() < 2 && t0.elapsed() < std::time::Duration::from_secs(10) {
                r.read_from(
                    b.as_raw_fd(),
                    &mut |h, b| got.push((h, b)),
                    &|| false,
                    false,
                )
                .unwrap();
            }
            writer.join().unwrap().unwrap();
            assert_eq!(got[0].0.flags, 0, "a whole frame is not lent for");
            assert_eq!(got[0].1, b"whole");
            assert_eq!(got[1].0.flags, FRAGMENT | LENT);
            assert_eq!(&got[1].1[..5], b"lent:");
            assert_eq!(&got[1].1[5..], body);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut r = FrameReader::new(1 << 20);
        r.push(b"GET / HTTP/1.1\r\n\r\n and more garbage to fill a header");
        let err = r.drain(&mut |_, _| {}).expect_err("garbage");
        assert!(matches!(err, ReadError::Frame(FrameError::BadMagic(_), _)));
        // The error quotes what came instead of a frame, bounded.
        let text = err.to_string();
        assert!(text.contains("GET / HTTP/1.1"), "{text}");
        assert!(text.len() < 200, "{text}");
    }

    /// A socket pair whose second end a fresh reader reads.
    fn reading_pair() -> (UnixStream, UnixStream, FrameReader) {
        let (a, b) = UnixStream::pair().unwrap();
        crate::process::set_nonblocking(b.as_raw_fd()).unwrap();
        (a, b, FrameReader::new(1 << 20))
    }

    #[test]
    fn holding_leaves_the_rest_unread() {
        let (a, b, mut r) = reading_pair();
        let got = std::cell::Cell::new(0);
        let mut count = |_: Header, _: Vec<u8>| got.set(got.get() + 1);
        (&a).write_all(&frame(1, b"one")).unwrap();
        let held = || got.get() > 0;
        assert_eq!(
            r.read_from(b.as_raw_fd(), &mut count, &held, false)
                .unwrap(),
            ReadState::Open
        );
        assert_eq!(got.get(), 1);
        (&a).write_all(&frame(2, b"two")).unwrap();
        r.read_from(b.as_raw_fd(), &mut count, &|| true, false)
            .unwrap();
        assert_eq!(got.get(), 1, "a held reader reads nothing more");
        r.read_from(b.as_raw_fd(), &mut count, &|| false, false)
            .unwrap();
        assert_eq!(got.get(), 2);
    }

    #[test]
    fn a_short_read_ends_the_pass_only_when_asked() {
        let (a, b, mut r) = reading_pair();
        let got = std::cell::Cell::new(0);
        let mut count = |_: Header, _: Vec<u8>| got.set(got.get() + 1);
        (&a).write_all(&frame(1, b"one")).unwrap();
        (&a).write_all(&frame(2, b"two")).unwrap();
        assert_eq!(
            r.read_from(b.as_raw_fd(), &mut count, &|| false, true)
                .unwrap(),
            ReadState::Open
        );
        assert_eq!(got.get(), 2, "one short read got both frames");
        // A frame then end of file: the short read that got the frame ends
        // a `short_ends` pass before it sees the end (its caller polls or
        // re-arms); a full pass reads on and reports it.
        (&a).write_all(&frame(9, b"last")).unwrap();
        drop(a);
        assert_eq!(
            r.read_from(b.as_raw_fd(), &mut count, &|| false, true)
                .unwrap(),
            ReadState::Open
        );
        assert_eq!(got.get(), 3);
        assert_eq!(
            r.read_from(b.as_raw_fd(), &mut count, &|| false, false)
                .unwrap(),
            ReadState::Eof
        );
    }
}
