//! Where a become password comes from: a prompt on the terminal (`-K`),
//! a file descriptor (`--password-fd N`) or an environment variable named
//! by the user (`--password-env NAME`) — never the command line, which
//! every user of the machine can read in `ps`.
//!
//! The password is held as a [`mitogen::Secret`] (redacted in `Debug`,
//! zeroed when dropped) and handed to the library's sudo/su/doas
//! builders, which type it on the prompt's terminal. The variable is
//! removed from this process's environment once read, and the
//! descriptor is marked close-on-exec, so neither reaches the programs
//! this one starts.

use mitogen::Secret;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

/// Longest password accepted from a descriptor.
const MAX_LEN: usize = 4096;
/// How long a descriptor may keep us waiting for its line.
const FD_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads the password from the first source given, if any.
pub fn become_password(
    prompt: bool,
    fd: Option<i32>,
    env: Option<&str>,
) -> Result<Option<Secret>, String> {
    if prompt {
        let p = rpassword::prompt_password("BECOME password: ")
            .map_err(|e| format!("-K: cannot read a password from the terminal: {e}"))?;
        return Ok(Some(Secret::new(p)));
    }
    if let Some(fd) = fd {
        return from_fd(fd).map(Some);
    }
    if let Some(name) = env {
        let v = std::env::var(name).map_err(|e| format!("--password-env {name}: {e}"))?;
        // Not passed on to ssh, sudo or the commands we start.
        std::env::remove_var(name);
        return Ok(Some(Secret::new(v)));
    }
    Ok(None)
}

/// The first line of descriptor `fd` (without its newline).
fn from_fd(fd: i32) -> Result<Secret, String> {
    let bad = |e: nix::Error| format!("--password-fd {fd}: {e}");
    // A duplicate is read and closed; the original is left open but
    // close-on-exec, so it is not inherited and nothing of ours that may
    // share its number is closed behind its owner's back.
    let dup = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(bad)?;
    // SAFETY: `dup` is a descriptor just made for us alone.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(bad)?;
    let mut file = std::fs::File::from(owned);
    let mut buf = Vec::new();
    let mut byte = [0u8; 256];
    let deadline = std::time::Instant::now() + FD_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&file),
            nix::poll::PollFlags::POLLIN,
        )];
        match nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(ms)) {
            Ok(0) => return Err(format!("--password-fd {fd}: no line within {FD_TIMEOUT:?}")),
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(bad(e)),
        }
        let n = file
            .read(&mut byte)
            .map_err(|e| format!("--password-fd {fd}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&byte[..n]);
        if buf.contains(&b'\n') || buf.len() > MAX_LEN {
            break;
        }
    }
    byte.fill(0);
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let mut line = &buf[..line_end];
    if line.ends_with(b"\r") {
        line = &line[..line.len() - 1];
    }
    if line.len() > MAX_LEN {
        return Err(format!("--password-fd {fd}: longer than {MAX_LEN} bytes"));
    }
    let s =
        String::from_utf8(line.to_vec()).map_err(|_| format!("--password-fd {fd}: not UTF-8"))?;
    buf.fill(0);
    Ok(Secret::new(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::IntoRawFd;

    #[test]
    fn reads_the_first_line_of_a_descriptor() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut w = std::fs::File::from(w);
        w.write_all(b"s3cret\r\nrest").unwrap();
        drop(w);
        let fd = r.into_raw_fd();
        let s = from_fd(fd).unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
        // The original is still open, now close-on-exec.
        let flags = fcntl(fd, FcntlArg::F_GETFD).unwrap();
        assert!(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC));
        nix::unistd::close(fd).unwrap();
        assert!(from_fd(1_000_000).unwrap_err().contains("EBADF"));
    }
}
