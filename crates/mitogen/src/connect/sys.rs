//! The platform calls of `connect`, in one place: every libc call of the
//! connection methods and their spawning is here (`inflight`'s eventfd,
//! part of the broker's shutdown, aside), each with its reason, so the methods call
//! safe functions (what remains `unsafe` outside is the choice to run code
//! between fork and exec: `fork` itself and `pre_exec`).
//!
//! The calls marked *after fork* are async-signal-safe and allocate
//! nothing: they run between `fork()` and `exec()` (in `pre_exec`, or in
//! a forked child), where only the forking thread exists and any lock held
//! by another thread stays held.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Result of a libc call that returns -1 on failure.
fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// A new PTY (master, slave) with echo off and close-on-exec on the
/// master.
pub(crate) fn open_pty() -> io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let p = nix::pty::openpty(None, None).map_err(io::Error::from)?;
    let mut t = tcgetattr(&p.slave).map_err(io::Error::from)?;
    t.local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ECHOE | LocalFlags::ECHOK);
    tcsetattr(&p.slave, SetArg::TCSANOW, &t).map_err(io::Error::from)?;
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    check(unsafe { libc::fcntl(p.master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok((p.master, p.slave))
}

/// *After fork*: a new session whose controlling terminal is the PTY
/// slave already on descriptor `fd`, so `/dev/tty` is that PTY.
pub(crate) fn take_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: setsid and ioctl take no pointers.
    check(unsafe { libc::setsid() })?;
    // SAFETY: TIOCSCTTY takes an integer argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) })?;
    Ok(())
}

/// Random bytes from the kernel (`None` if it has none to give).
pub(crate) fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut b = [0u8; N];
    // SAFETY: getrandom fills the buffer it is given, at most its length.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    (n == N as isize).then_some(b)
}

/// Waits for any of `fds` to be ready, at most `ms` milliseconds;
/// `Ok(0)` on timeout. Interrupted waits return `Ok(0)` too.
pub(crate) fn poll(fds: &mut [libc::pollfd], ms: i32) -> io::Result<usize> {
    // SAFETY: a valid array of pollfd of the given length.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(n as usize)
}

/// One `read(2)` into `buf`.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: reading into a live buffer, at most its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// One `write(2)` from `data`.
pub(crate) fn write(fd: RawFd, data: &[u8]) -> io::Result<usize> {
    // SAFETY: writing from a live slice, at most its length.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// `fork()`: `Ok(0)` in the child, the child's pid in the parent.
///
/// # Safety
/// The caller's child must keep to what is safe after fork in a
/// multi-threaded process (see the module docs and `fork.rs`).
pub(crate) unsafe fn fork() -> io::Result<i32> {
    check(libc::fork())
}

/// *After fork*: closes a descriptor inherited from the parent.
pub(crate) fn close(fd: RawFd) {
    // SAFETY: closing a descriptor number; a stale one is EBADF, harmless.
    unsafe { libc::close(fd) };
}

/// Ends this process at once, without running atexit handlers or
/// flushing buffers that belong to the parent (a forked child).
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: terminating this process.
    unsafe { libc::_exit(code) }
}

/// *After fork*: joins the namespace open on `fd` (`nstype` 0: any kind).
pub(crate) fn setns(fd: RawFd) -> io::Result<()> {
    // SAFETY: setns takes integers.
    check(unsafe { libc::setns(fd, 0) }).map(drop)
}

/// *After fork*: `fchdir(fd)` then `chroot(".")` and `chdir("/")`: makes
/// the directory open on `fd` the root.
pub(crate) fn chroot_fd(fd: RawFd) -> io::Result<()> {
    // SAFETY: fchdir takes an integer; chroot and chdir static C strings.
    unsafe {
        check(libc::fchdir(fd))?;
        check(libc::chroot(c".".as_ptr()))?;
        check(libc::chdir(c"/".as_ptr()))?;
    }
    Ok(())
}

/// *After fork*: drops to `uid`/`gid`, with only `gid` as group.
pub(crate) fn become_ids(uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: integer arguments; a one-element array for setgroups.
    unsafe {
        check(libc::setgroups(1, &gid))?;
        check(libc::setgid(gid))?;
        check(libc::setuid(uid))?;
    }
    Ok(())
}

/// *After fork*: this process gets SIGKILL when its parent dies.
pub(crate) fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }).map(drop)
}

/// *After fork*: closes every descriptor from `first` on.
pub(crate) fn close_from(first: RawFd) {
    // SAFETY: close_range takes integers; on kernels without it, a loop.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first as libc::c_uint, u32::MAX, 0) };
    if r != 0 {
        for fd in first..4096 {
            close(fd);
        }
    }
}

/// *After fork*: waits for child `pid` and returns the exit code it
/// should be reported as (128 + signal for a killed one).
pub(crate) fn wait_code(pid: i32) -> i32 {
    let mut st = 0;
    loop {
        // SAFETY: waitpid writes into a live integer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return 127;
        }
    }
    if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    }
}

/// Opens `path` (relative) for reading beneath the directory `root`, as
/// if `root` were `/`: symbolic links, `..` and absolute links stay inside
/// it (`openat2` with `RESOLVE_IN_ROOT`), `/proc` magic links are refused,
/// and a FIFO cannot block the open (`O_NONBLOCK`). For files of a
/// container that its processes may have planted.
pub(crate) fn open_in_root(root: RawFd, path: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: open_how is three integers; all zeroes is a valid value.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: a valid C string and a live open_how of the size given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as RawFd) })
}
