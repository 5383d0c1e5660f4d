//! Process-level plumbing: the process title, descriptor juggling for a
//! new context's stdio, and the list of descriptors a forked child must not
//! keep.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

/// Descriptors owned by the runtime (broker pollers, wakers, stream ends)
/// that a forked child closes first thing, so that it cannot keep another
/// context's link open.
static RUNTIME_FDS: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());

pub(crate) fn track_fd(fd: RawFd) {
    crate::sync::lock(&RUNTIME_FDS).push(fd);
}

pub(crate) fn untrack_fd(fd: RawFd) {
    crate::sync::lock(&RUNTIME_FDS).retain(|&f| f != fd);
}

/// A descriptor on the runtime list for as long as it is open.
#[derive(Debug)]
pub(crate) struct TrackedFd(OwnedFd);

impl TrackedFd {
    pub(crate) fn new(fd: OwnedFd) -> TrackedFd {
        track_fd(fd.as_raw_fd());
        TrackedFd(fd)
    }
}

impl AsRawFd for TrackedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Drop for TrackedFd {
    fn drop(&mut self) {
        // Off the list before the number can be reused.
        untrack_fd(self.0.as_raw_fd());
    }
}

/// Locks the descriptor list; `fork()` happens while it is held, so the
/// child's copy is consistent and unlocked by dropping the guard.
pub(crate) fn lock_fds() -> std::sync::MutexGuard<'static, Vec<RawFd>> {
    crate::sync::lock(&RUNTIME_FDS)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Puts `fd` in non-blocking mode.
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = cvt(unsafe { libc::fcntl(fd, libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) })?;
    Ok(())
}

/// Duplicates `fd` to a new close-on-exec descriptor numbered 3 or above.
pub(crate) fn dup_cloexec(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a fresh descriptor we then own.
    let n = cvt(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: `n` is a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills `fds` with two new descriptors.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both are new descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Replaces fds 0, 1 and 2 of this process: stdin reads `/dev/null`,
/// stdout and stderr write to `out`. Protocol descriptors must already
/// have been moved elsewhere.
pub(crate) fn redirect_stdio(out: &OwnedFd) -> io::Result<()> {
    let null = std::fs::File::open("/dev/null")?;
    // SAFETY: dup2 onto the standard descriptors of this process.
    unsafe {
        cvt(libc::dup2(null.as_raw_fd(), 0))?;
        cvt(libc::dup2(out.as_raw_fd(), 1))?;
        cvt(libc::dup2(out.as_raw_fd(), 2))?;
    }
    Ok(())
}

extern "C" {
    /// glibc and musl: points at the original `argv[0]` string.
    static mut program_invocation_name: *mut libc::c_char;
}

/// Sets the process title shown by `ps` to `title` (the seed's
/// `mitogen:NAME`): the kernel's short name via `prctl`, and the argument
/// area by overwriting it in place (it can only shrink).
pub(crate) fn set_title(title: &str) {
    let short: Vec<u8> = title
        .bytes()
        .filter(|&b| b != 0)
        .take(15)
        .chain([0])
        .collect();
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, short.as_ptr() as libc::c_ulong, 0, 0, 0) };
    // The argument strings are laid out back to back from argv[0]; their
    // total length is the room we may overwrite.
    let room: usize = std::env::args_os().map(|a| a.len() + 1).sum();
    // SAFETY: reading a libc global set before main.
    let start = unsafe { program_invocation_name };
    if start.is_null() || room < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let n = bytes.len().min(room - 1);
    // SAFETY: [start, start + room) is the original argument area, which
    // this process owns and nothing else reads (std copied argv at start).
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, n);
        std::ptr::write_bytes((start as *mut u8).add(n), 0, room - n);
    }
}

/// Default `remote_name` of the contexts this process starts:
/// `user@host:pid` of this process (see [`remote_name_of`]).
pub fn default_remote_name() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| nix::unistd::geteuid().to_string());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    remote_name_of(&user, &host, std::process::id())
}

/// `user@host:pid`, with `/` and `\` in the user name replaced by `_`: a
/// Windows domain user (`DOM\user`) or a name with a slash must still make
/// a valid `remote_name` and process title.
pub fn remote_name_of(user: &str, host: &str, pid: u32) -> String {
    let user: String = user
        .chars()
        .map(|c| if c == '/' || c == '\\' { '_' } else { c })
        .collect();
    format!("{user}@{host}:{pid}")
}

/// A failure to get a descriptor, as the error a user reads: when the
/// process is out of descriptors (`EMFILE`, `ENFILE`), it says so, with
/// the limit and what to do; the `io::Error` stays its source.
pub(crate) fn fd_error(what: &str, e: io::Error) -> crate::Error {
    let msg = match e.raw_os_error() {
        Some(libc::EMFILE) => {
            let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(soft, _)| soft.to_string())
                .unwrap_or_else(|_| "?".into());
            format!(
                "{what}: this process has used all the descriptors it may open \
                 (ulimit -n is {limit}): raise it (`ulimit -n`, RLIMIT_NOFILE) to start more \
                 contexts; those already started are not affected"
            )
        }
        Some(libc::ENFILE) => format!(
            "{what}: the system is out of file descriptors (fs.file-max); contexts already \
             started are not affected"
        ),
        _ => format!("{what}: {e}"),
    };
    crate::error::StreamError::io(msg, e).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_domain_user_makes_a_valid_remote_name() {
        assert_eq!(remote_name_of("DOM\\alice", "h", 7), "DOM_alice@h:7");
        assert_eq!(remote_name_of("a/b", "h", 7), "a_b@h:7");
        assert_eq!(remote_name_of("bob", "h", 7), "bob@h:7");
    }
}
