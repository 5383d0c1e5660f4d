//! Reads and writes on descriptors that never block past a stop flag.
//!
//! Why: the pumps of a fake ssh session read a tool's pipe or a remote
//! command's pipe, and write to the other. A plain blocking `read` on a
//! pipe whose writer never closes (a tool that keeps its end open after
//! the remote command exited, as real ssh allows) would hold a thread
//! forever. Every wait here is a `poll` of at most [`SLICE`], after which
//! the stop flag is checked; descriptors handed over by a tool may or may
//! not be non-blocking, so `EAGAIN` is treated like "not ready yet".

use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest single wait before the stop flag is checked again.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// Waits until `fd` is ready for `events` (or hung up), at most one
/// slice. `Ok(true)`: ready.
fn ready(fd: BorrowedFd<'_>, events: nix::poll::PollFlags) -> io::Result<bool> {
    use nix::poll::{poll, PollFd, PollTimeout};
    let mut p = [PollFd::new(fd, events)];
    let ms = PollTimeout::try_from(SLICE.as_millis() as i32).unwrap_or(PollTimeout::MAX);
    match poll(&mut p, ms) {
        Ok(0) => Ok(false),
        Ok(_) => Ok(true),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads what is there (at most `buf.len()`). `Ok(None)`: `stop` was set
/// first; `Ok(Some(0))`: end of file.
pub(crate) fn read(fd: impl AsFd, buf: &mut [u8], stop: &AtomicBool) -> io::Result<Option<usize>> {
    let fd = fd.as_fd();
    loop {
        if stop.load(Ordering::Acquire) {
            return Ok(None);
        }
        if !ready(fd, nix::poll::PollFlags::POLLIN)? {
            continue;
        }
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), buf) {
            Ok(n) => return Ok(Some(n)),
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes all of `buf`. `Ok(false)`: `stop` was set first.
///
/// On a blocking descriptor (a tool's pipe, whose flags are not ours to
/// change) a write larger than the room `poll` reported would block
/// until the reader made room for all of it, so each write is then at
/// most `PIPE_BUF` bytes, which a pipe that polled writable takes whole.
pub(crate) fn write_all(fd: impl AsFd, mut buf: &[u8], stop: &AtomicBool) -> io::Result<bool> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fd = fd.as_fd();
    let flags =
        fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let most = if OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK) {
        usize::MAX
    } else {
        libc::PIPE_BUF
    };
    while !buf.is_empty() {
        if stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        if !ready(fd, nix::poll::PollFlags::POLLOUT)? {
            continue;
        }
        match nix::unistd::write(fd, &buf[..buf.len().min(most)]) {
            Ok(n) => buf = &buf[n..],
            Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_pipe_is_left_when_stopped() {
        let (r, _w) = nix::unistd::pipe().unwrap();
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            let t = s.spawn(|| read(&r, &mut [0u8; 16], &stop));
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::Release);
            assert!(t.join().unwrap().unwrap().is_none());
        });
    }

    #[test]
    fn a_full_pipe_is_left_when_stopped_and_eof_reads_zero() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let stop = AtomicBool::new(false);
        let big = vec![0u8; 1 << 20];
        std::thread::scope(|s| {
            let t = s.spawn(|| write_all(&w, &big, &stop));
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::Release);
            assert!(!t.join().unwrap().unwrap());
        });
        drop(w);
        let go = AtomicBool::new(false);
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0;
        loop {
            match read(&r, &mut buf, &go).unwrap() {
                Some(0) => break,
                Some(n) => total += n,
                None => unreachable!(),
            }
        }
        assert!(total > 0);
    }
}
