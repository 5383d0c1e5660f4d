//! Starting a transport process, for every method that runs a program:
//! its argv with stdin and stdout on one end of a socketpair (so binary
//! frames pass untouched by any line discipline), and stderr on a pipe, or
//! on a new PTY that is also its controlling terminal when the tool may
//! ask for a password (`tty.rs` holds the dialog).
//!
//! A method that needs more between fork and exec (`setns` entering a
//! container's namespaces) passes a [`PreExec`]; it runs after the
//! terminal is set up, in the single-threaded child.

use crate::bootstrap::Spawned;
use crate::connect::sys;
use crate::error::{Error, Result, StreamError};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

/// Code run in the child between fork and exec: async-signal-safe calls
/// only, nothing that allocates (see `sys.rs`).
pub(crate) type PreExec = Box<dyn FnMut() -> std::io::Result<()> + Send + Sync>;

/// How to start a transport.
#[derive(Default)]
pub(crate) struct How {
    /// stderr and the controlling terminal on a new PTY (else stderr on
    /// a pipe).
    pub(crate) pty: bool,
    /// stdin on the PTY too (see `tty::Dialog::stdin_tty`).
    pub(crate) stdin_tty: bool,
    /// `LC_ALL=C`, so the tool's messages are the ones the methods know.
    pub(crate) c_locale: bool,
    /// Runs last in the child before exec.
    pub(crate) pre_exec: Option<PreExec>,
    /// Replaces the environment (else it is inherited).
    pub(crate) env: Option<Vec<(String, String)>>,
}

impl std::fmt::Debug for How {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("How")
            .field("pty", &self.pty)
            .field("stdin_tty", &self.stdin_tty)
            .field("c_locale", &self.c_locale)
            .field("pre_exec", &self.pre_exec.is_some())
            .field("env", &self.env)
            .finish()
    }
}

/// Starts `argv` as [`How`] says.
pub(crate) fn spawn(argv: &[String], how: How) -> Result<Spawned> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(StreamError::new("empty transport command").into());
    };
    let err = |what: &str, e: std::io::Error| -> Error {
        crate::process::fd_error(&format!("cannot start {prog}: {what}"), e)
    };
    let (ours, theirs) = UnixStream::pair().map_err(|e| err("socketpair", e))?;
    let theirs_out = theirs.try_clone().map_err(|e| err("dup", e))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)));
    if let Some(env) = &how.env {
        cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    }
    if how.c_locale {
        cmd.env("LC_ALL", "C");
    }
    let master = if how.pty {
        let (master, slave) = sys::open_pty().map_err(|e| err("cannot allocate a PTY", e))?;
        if how.stdin_tty {
            let s = slave.try_clone().map_err(|e| err("dup", e))?;
            cmd.stdin(Stdio::from(s));
        }
        cmd.stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            // fd 2 is the PTY's slave side by now.
            cmd.pre_exec(|| sys::take_terminal(2));
        }
        Some(master)
    } else {
        cmd.stderr(Stdio::piped());
        None
    };
    if let Some(f) = how.pre_exec {
        // SAFETY: PreExec is documented to keep to async-signal-safe calls.
        unsafe { cmd.pre_exec(f) };
    }
    // The cause is kept: a missing program is told apart by its kind.
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::from(StreamError::io(format!("cannot start {prog}: {e}"), e)))?;
    let stderr = match master {
        Some(m) => Some(m),
        None => child.stderr.take().map(OwnedFd::from),
    };
    if let Some(fd) = &stderr {
        let _ = crate::process::set_nonblocking(fd.as_raw_fd());
    }
    let rfd = OwnedFd::from(ours);
    let _ = crate::process::set_nonblocking(rfd.as_raw_fd());
    Ok(Spawned {
        rfd,
        wfd: None,
        stderr,
        child: crate::child::ChildProc::adopt(child.id() as i32),
    })
}
