//! [`FrameReader`]: turns the bytes of a link into frames.
//!
//! It never panics on hostile input: a header that breaks a wire rule is a
//! [`ReadError::Frame`], and the link is closed by its owner. Large frames
//! are read straight into a buffer of their own size, so a 100 MiB payload
//! is not first copied through the small read buffer.

use crate::frame::{FrameError, Header, HEADER_LEN};
use std::io;
use std::os::fd::RawFd;

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
/// Frames at least this large are read into a dedicated buffer.
const BIG_FRAME: usize = 1 << 20;

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
    /// to `sink`. A malformed frame stops reading with the error. `hold`
    /// is asked after each frame is handed on: `true` stops reading for now
    /// (the link is paused for flow control) with what was not yet read
    /// left in the descriptor.
    pub(crate) fn read_from(
        &mut self,
        fd: RawFd,
        sink: &mut dyn FnMut(Header, Vec<u8>),
        hold: &dyn Fn() -> bool,
    ) -> Result<ReadState, ReadError> {
        loop {
            self.drain(sink)?;
            if hold() {
                return Ok(ReadState::Open);
            }
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
            let decoded = Header::decode(avail, self.max);
            let decoded = decoded.map_err(|e| ReadError::Frame(e, seen(avail)))?;
            let Some(h) = decoded else {
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

    #[test]
    fn holding_leaves_the_rest_unread() {
        let (a, b) = UnixStream::pair().unwrap();
        crate::process::set_nonblocking(b.as_raw_fd()).unwrap();
        let mut r = FrameReader::new(1 << 20);
        let got = std::cell::Cell::new(0);
        let mut count = |_: Header, _: Vec<u8>| got.set(got.get() + 1);
        (&a).write_all(&frame(1, b"one")).unwrap();
        let held = || got.get() > 0;
        assert_eq!(
            r.read_from(b.as_raw_fd(), &mut count, &held).unwrap(),
            ReadState::Open
        );
        assert_eq!(got.get(), 1);
        (&a).write_all(&frame(2, b"two")).unwrap();
        r.read_from(b.as_raw_fd(), &mut count, &|| true).unwrap();
        assert_eq!(got.get(), 1, "a held reader reads nothing more");
        r.read_from(b.as_raw_fd(), &mut count, &|| false).unwrap();
        assert_eq!(got.get(), 2);
    }
}
