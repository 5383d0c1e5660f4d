//! Transports that may ask questions: ssh, sudo, su and doas.
//!
//! The protocol never crosses a terminal. The transport's stdin and stdout
//! are one end of a socketpair, so binary frames pass untouched by any line
//! discipline; only its controlling terminal (and stderr) is a PTY, which is
//! where these tools print prompts and read passwords (they open
//! `/dev/tty`). The PTY is made with echo off, so a typed password is
//! never echoed back into a transcript.
//!
//! Before the first stage starts, [`converse`] reads the terminal: it types
//! the password once per prompt, and turns known failure text (a refused
//! password, a host key warning) into [`PasswordError`] or
//! [`HostKeyError`]. The first byte on the protocol socket means the stage
//! runs: from then on the ordinary bootstrap takes over, and the terminal's
//! output becomes log lines. Everything is bounded by the connect deadline
//! (a [`TimeoutError`] naming the method and target when it passes), and
//! ends at once when the broker shuts down (`inflight`).
//!
//! Without a password and without possible prompts (ssh in `BatchMode`)
//! no PTY is allocated: PTYs are a scarce system resource.

use super::inflight::Flight;
use super::password::Password;
use super::Options;
use crate::bootstrap::{stage, Spawned};
use crate::context::Context;
use crate::error::{Error, HostKeyError, PasswordError, Result, StreamError, TimeoutError};
use crate::router::Core;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to expect from a transport, and how to answer it.
#[derive(Debug, Clone)]
pub(crate) struct Dialog {
    /// Tool name for messages: `ssh`, `sudo`, `su`, `doas`.
    pub(crate) method: &'static str,
    /// Who is being reached, for messages: `alice@10.0.0.1`, `root`.
    pub(crate) target: String,
    /// Run under a PTY (else stderr is a pipe and nothing can be typed).
    pub(crate) pty: bool,
    pub(crate) password: Option<Password>,
    /// Text that means "type the password now" (matched case-insensitively).
    pub(crate) prompts: Vec<String>,
    /// Text that means the password was refused (case-insensitively).
    pub(crate) incorrect: Vec<String>,
    /// Text meaning "authentication failed" when no password was typed
    /// (e.g. ssh's `Permission denied (publickey)`).
    pub(crate) auth_failed: Vec<String>,
    /// ssh only: recognise host key failures.
    pub(crate) host_keys: bool,
    /// stdin is the terminal too (for tools that read the password from
    /// stdin, like util-linux `su` through PAM); the command must then
    /// take its stdin from stdout (`0<&1`, the socketpair works both ways).
    pub(crate) stdin_tty: bool,
}

fn lower(b: &[u8]) -> Vec<u8> {
    b.to_ascii_lowercase()
}

fn find(hay: &[u8], needle: &str) -> Option<usize> {
    let n = needle.as_bytes();
    if n.is_empty() || n.len() > hay.len() {
        return None;
    }
    hay.windows(n.len()).position(|w| w == n)
}

impl Dialog {
    /// The last few non-empty lines of `text`, password scrubbed.
    fn tail(&self, text: &str) -> String {
        let lines: Vec<&str> = text
            .split(['\r', '\n'])
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let shown = lines[lines.len().saturating_sub(4)..].join(" / ");
        match &self.password {
            Some(p) => p.scrub(&shown),
            None => shown,
        }
    }

    /// Reads a transcript of the transport's terminal or stderr: a typed
    /// error when it shows a known failure, `None` otherwise.
    fn known_failure(&self, text: &str, typed: bool) -> Option<Error> {
        let l = lower(text.as_bytes());
        let (m, t) = (self.method, &self.target);
        if self.host_keys {
            if find(&l, "remote host identification has changed").is_some()
                || find(&l, "host key for").is_some() && find(&l, "has changed").is_some()
            {
                return Some(
                    HostKeyError::new(
                        format!(
                            "ssh: the host key of {t} has changed since it was recorded: \
                             refusing to connect (a man-in-the-middle attack, or the host was \
                             reinstalled; fix known_hosts if that is expected): {}",
                            self.tail(text)
                        ),
                        true,
                    )
                    .into(),
                );
            }
            if find(&l, "host key verification failed").is_some() {
                return Some(
                    HostKeyError::new(
                        format!(
                            "ssh: no host key is known for {t} and check_host_keys is \
                             \"enforce\": add it to known_hosts, or use \"accept\": {}",
                            self.tail(text)
                        ),
                        false,
                    )
                    .into(),
                );
            }
        }
        if typed && self.incorrect.iter().any(|s| find(&l, s).is_some()) {
            return Some(
                PasswordError::new(format!(
                    "{m}: the password for {t} was refused ({})",
                    self.tail(text)
                ))
                .into(),
            );
        }
        if self.auth_failed.iter().any(|s| find(&l, s).is_some()) {
            let why = if typed {
                "the password was refused"
            } else if self.password.is_some() {
                "authentication failed before a password was asked for"
            } else {
                "authentication failed and no password was given"
            };
            return Some(
                PasswordError::new(format!("{m} to {t}: {why} ({})", self.tail(text))).into(),
            );
        }
        None
    }

    /// What bootstrap reports when the transport failed before the stage
    /// started: a known failure, or the tool's own last words. ssh giving
    /// up by its own `ConnectTimeout` (derived from the connect timeout,
    /// `timeout`) is a timeout like this side's.
    pub(crate) fn classify(
        &self,
        transcript: &str,
        typed: bool,
        stderr: &str,
        exit: Option<i32>,
        timeout: Duration,
    ) -> Option<Error> {
        let text = format!("{transcript}\n{stderr}");
        if let Some(e) = self.known_failure(&text, typed) {
            return Some(e);
        }
        let code = exit?;
        let l = lower(text.as_bytes());
        if self.host_keys
            && (find(&l, "connection timed out").is_some()
                || find(&l, "timed out during banner exchange").is_some())
        {
            return Some(
                TimeoutError::new(
                    format!(
                        "connecting {} to {}: ssh gave up (status {code}): {}",
                        self.method,
                        self.target,
                        self.tail(&text)
                    ),
                    timeout,
                )
                .into(),
            );
        }
        Some(
            StreamError::new(format!(
                "{} to {} failed: it exited with status {code} before starting the agent: {}",
                self.method,
                self.target,
                self.tail(&text)
            ))
            .into(),
        )
    }
}

/// Starts `argv` with stdin/stdout on a socketpair, and stderr plus the
/// controlling terminal on a new PTY when `pty` (else stderr on a pipe).
pub(crate) fn spawn(argv: &[String], pty: bool, stdin_tty: bool) -> Result<Spawned> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(StreamError::new("empty transport command").into());
    };
    let err = |what: &str, e: std::io::Error| -> Error {
        StreamError::new(format!("cannot start {prog}: {what}: {e}")).into()
    };
    let (ours, theirs) = UnixStream::pair().map_err(|e| err("socketpair", e))?;
    let theirs_out = theirs.try_clone().map_err(|e| err("dup", e))?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)));
    let master = if pty {
        let (master, slave) = open_pty().map_err(|e| err("cannot allocate a PTY", e))?;
        if stdin_tty {
            let s = slave.try_clone().map_err(|e| err("dup", e))?;
            cmd.stdin(Stdio::from(s));
        }
        cmd.stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls (setsid, ioctl) between
        // fork and exec; nothing allocates.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // fd 2 is the PTY's slave side by now: make it the
                // controlling terminal, so /dev/tty is this PTY.
                if libc::ioctl(2, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        Some(master)
    } else {
        cmd.stderr(Stdio::piped());
        None
    };
    let mut child = cmd.spawn().map_err(|e| err("exec", e))?;
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

/// Starts a context through a transport: `build` turns the first stage's
/// script into the transport's argv; the dialog answers its terminal.
/// The context is named `opts.remote_name`, else `default_name`.
pub(crate) fn connect_with(
    core: &Arc<Core>,
    id: u32,
    default_name: String,
    opts: &Options,
    d: &Dialog,
    build: impl FnOnce(&str) -> Vec<String>,
) -> Result<Context> {
    let flight = Flight::begin(&core.broker, &core.connects, opts.connect_timeout)?;
    let agent = opts.agent()?;
    let script = stage::script(&agent.sha, agent.size, &opts.agent_command);
    let argv = build(&script);
    let sp = spawn(&argv, d.pty, d.stdin_tty)?;
    flight.set_pid(sp.child.pid());
    let transcript = match converse(&sp, d, &flight) {
        Ok(t) => t,
        Err(e) => {
            super::kill_and_reap(&sp.child);
            return Err(e);
        }
    };
    let name = opts.remote_name.clone().unwrap_or(default_name);
    let cfg = opts.config(core, id, &name, &agent);
    let classify = |stderr: &str, exit: Option<i32>| {
        d.classify(
            &transcript.text,
            transcript.typed,
            stderr,
            exit,
            flight.timeout(),
        )
    };
    let who = format!("{name} ({} to {})", d.method, d.target);
    super::finish(core, sp, &agent, &cfg, &flight, &who, Some(&classify))
}

/// A new PTY (master, slave) with echo off and close-on-exec on the
/// master.
fn open_pty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    let p = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    let mut t = tcgetattr(&p.slave).map_err(std::io::Error::from)?;
    t.local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ECHONL | LocalFlags::ECHOE | LocalFlags::ECHOK);
    tcsetattr(&p.slave, SetArg::TCSANOW, &t).map_err(std::io::Error::from)?;
    // SAFETY: fcntl with integer arguments on a descriptor we own.
    unsafe { libc::fcntl(p.master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok((p.master, p.slave))
}

/// What the terminal showed before the stage started.
#[derive(Debug, Default)]
pub(crate) struct Transcript {
    pub(crate) text: String,
    pub(crate) typed: bool,
}

/// Longest transcript kept (older text is dropped).
const MAX_TRANSCRIPT: usize = 64 * 1024;
/// Most passwords typed on one connect: a prompt repeated after that is
/// a refusal, not a question.
const MAX_TYPED: u32 = 1;
/// Pause between seeing a prompt and typing. PAM's console conversation
/// prints its prompt *before* switching echo off with `TCSAFLUSH`, which
/// discards input typed in between.
const TYPE_DELAY: Duration = Duration::from_millis(20);
/// If the terminal stays silent this long after typing, the answer is
/// typed once more on the same prompt (it may have been flushed; if it
/// was read, the extra line is never read by anyone).
const RETYPE_AFTER: Duration = Duration::from_millis(1500);

/// Answers the transport's terminal until the stage starts (its first
/// byte on the protocol socket), the transport fails, the deadline of
/// `flight` passes or shutdown cancels it.
pub(crate) fn converse(sp: &Spawned, d: &Dialog, flight: &Flight) -> Result<Transcript> {
    let Some(master) = sp.stderr.as_ref() else {
        return Ok(Transcript::default());
    };
    let deadline = flight.deadline();
    let who = format!("{} to {}", d.method, d.target);
    let mfd = master.as_raw_fd();
    let mut raw: Vec<u8> = Vec::new();
    let mut scanned = 0usize;
    let mut typed = 0u32;
    let mut master_open = true;
    let mut retype_at: Option<Instant> = None;
    loop {
        if let (Some(at), Some(pw)) = (retype_at, &d.password) {
            if Instant::now() >= at {
                retype_at = None;
                write_all(mfd, &pw.line(), flight, &who)?;
            }
        }
        flight.check(&who)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let text = String::from_utf8_lossy(&raw).into_owned();
            return Err(TimeoutError::new(
                format!(
                    "connecting {who} before the agent started (last output: {:?})",
                    d.tail(&text)
                ),
                flight.timeout(),
            )
            .into());
        }
        let mut fds = [
            libc::pollfd {
                fd: sp.rfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if master_open { mfd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: flight.wake_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = left.as_millis().clamp(1, 100) as i32;
        // SAFETY: a valid array of three pollfd.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(StreamError::new(format!("poll failed: {e}")).into());
        }
        if fds[1].revents != 0 {
            let mut buf = [0u8; 4096];
            for _ in 0..64 {
                // SAFETY: reading into a stack buffer.
                let r = unsafe { libc::read(mfd, buf.as_mut_ptr().cast(), buf.len()) };
                if r > 0 {
                    raw.extend_from_slice(&buf[..r as usize]);
                    retype_at = None;
                    continue;
                }
                if r == 0 {
                    master_open = false;
                    break;
                }
                match std::io::Error::last_os_error().kind() {
                    std::io::ErrorKind::WouldBlock => break,
                    std::io::ErrorKind::Interrupted => continue,
                    // EIO: every process holding the terminal is gone.
                    _ => {
                        master_open = false;
                        break;
                    }
                }
            }
            if raw.len() > MAX_TRANSCRIPT {
                let cut = raw.len() - MAX_TRANSCRIPT;
                raw.drain(..cut);
                scanned = scanned.saturating_sub(cut);
            }
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some(e) = d.known_failure(&text, typed > 0) {
                return Err(e);
            }
            let l = lower(&raw[scanned..]);
            if d.prompts.iter().any(|p| find(&l, p).is_some()) {
                let pw = match (&d.password, typed >= MAX_TYPED) {
                    (None, _) => {
                        return Err(PasswordError::new(format!(
                            "{} to {}: a password was asked for ({:?}) but none was given",
                            d.method,
                            d.target,
                            d.tail(&text)
                        ))
                        .into())
                    }
                    (Some(_), true) => {
                        return Err(PasswordError::new(format!(
                            "{}: the password for {} was refused (asked again: {:?})",
                            d.method,
                            d.target,
                            d.tail(&text)
                        ))
                        .into())
                    }
                    (Some(p), false) => p,
                };
                std::thread::sleep(TYPE_DELAY);
                write_all(mfd, &pw.line(), flight, &who)?;
                retype_at = Some(Instant::now() + RETYPE_AFTER);
                typed += 1;
                scanned = raw.len();
                tracing::debug!("mitogen: {} to {}: typed the password", d.method, d.target);
            }
        }
        if fds[0].revents != 0 {
            // The stage's first line (or end of file: bootstrap reports it
            // with the transport's exit status and this transcript).
            return Ok(Transcript {
                text: String::from_utf8_lossy(&raw).into_owned(),
                typed: typed > 0,
            });
        }
    }
}

fn write_all(fd: i32, mut data: &[u8], flight: &Flight, who: &str) -> Result<()> {
    while !data.is_empty() {
        flight.check(who)?;
        if Instant::now() > flight.deadline() {
            return Err(TimeoutError::new(
                format!("connecting {who}, typing the password into its terminal"),
                flight.timeout(),
            )
            .into());
        }
        // SAFETY: writing from a live slice.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                _ => return Err(StreamError::new(format!("cannot type the password: {e}")).into()),
            }
        }
        data = &data[n as usize..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ssh_dialog() -> Dialog {
        Dialog {
            method: "ssh",
            target: "root@10.0.0.9".into(),
            pty: false,
            password: None,
            prompts: vec!["password:".into()],
            incorrect: vec![],
            auth_failed: vec!["permission denied (".into()],
            host_keys: true,
            stdin_tty: false,
        }
    }

    #[test]
    fn ssh_giving_up_on_its_connect_timeout_is_a_timeout() {
        let d = ssh_dialog();
        let t = Duration::from_secs(2);
        let out = "ssh: connect to host 10.0.0.9 port 22: Connection timed out\n";
        match d.classify("", false, out, Some(255), t) {
            Some(Error::Timeout(e)) => {
                assert_eq!(e.after(), t);
                assert!(e.to_string().contains("ssh to root@10.0.0.9"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        // Still running: not classified; refused: a plain StreamError.
        assert!(d.classify("", false, out, None, t).is_none());
        let refused = "ssh: connect to host 10.0.0.9 port 22: Connection refused\n";
        assert!(matches!(
            d.classify("", false, refused, Some(255), t),
            Some(Error::Stream(_))
        ));
    }
}
