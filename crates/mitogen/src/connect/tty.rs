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

use crate::bootstrap::{stage, Spawned};
use crate::connect::finish::{finish, kill_and_reap};
use crate::connect::inflight::Flight;
use crate::connect::password::Password;
use crate::connect::spawn::{spawn, How};
use crate::connect::sys;
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Error, HostKeyError, PasswordError, Result, StreamError, TimeoutError};
use crate::router::Core;
use std::os::fd::AsRawFd;
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
            // A question ssh asks and that nobody here can answer (a host
            // key to confirm, whatever check_host_keys says, when the user's
            // ssh config asks; a second factor): waiting would only end at
            // the connect timeout.
            if find(&l, "are you sure you want to continue connecting").is_some() {
                return Some(
                    HostKeyError::new(
                        format!(
                            "ssh to {t} asked to confirm a host key, which mitogen cannot \
                             answer (check_host_keys and the ssh config disagree?): {}",
                            self.tail(text)
                        ),
                        false,
                    )
                    .into(),
                );
            }
            if ["verification code:", "one-time password", "otp:"]
                .iter()
                .any(|q| find(&l, q).is_some())
            {
                return Some(
                    PasswordError::new(format!(
                        "ssh to {t} asked for a second factor, which mitogen cannot answer: {}",
                        self.tail(text)
                    ))
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
    let script = stage::script(&agent, &opts.agent_command);
    let argv = build(&script);
    let sp = spawn(
        &argv,
        How {
            pty: d.pty,
            stdin_tty: d.stdin_tty,
            c_locale: true,
            ..How::default()
        },
    )?;
    flight.set_pid(sp.child.pid());
    let transcript = match converse(&sp, d, &flight) {
        Ok(t) => t,
        Err(e) => {
            kill_and_reap(&sp.child);
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
    let ctx = finish(core, sp, &agent, &cfg, &flight, &who, Some(&classify))?;
    // What the terminal showed goes to the log, as stderr does; not the
    // prompts (answered), and never a password.
    let text = match &d.password {
        Some(p) => p.scrub(&transcript.text),
        None => transcript.text.clone(),
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let l = lower(line.as_bytes());
        if d.prompts.iter().any(|p| find(&l, p).is_some()) {
            continue;
        }
        tracing::info!(target: "mitogen::child", context = name.as_str(), "terminal: {line}");
    }
    Ok(ctx)
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
        sys::poll(&mut fds, ms)
            .map_err(|e| Error::from(StreamError::new(format!("poll failed: {e}"))))?;
        if fds[1].revents != 0 {
            let mut buf = [0u8; 4096];
            for _ in 0..64 {
                match sys::read(mfd, &mut buf) {
                    Ok(0) => {
                        master_open = false;
                        break;
                    }
                    Ok(r) => {
                        raw.extend_from_slice(&buf[..r]);
                        retype_at = None;
                    }
                    Err(e) => match e.kind() {
                        std::io::ErrorKind::WouldBlock => break,
                        std::io::ErrorKind::Interrupted => continue,
                        // EIO: every process holding the terminal is gone.
                        _ => {
                            master_open = false;
                            break;
                        }
                    },
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
        match sys::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(e) => match e.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                _ => return Err(StreamError::new(format!("cannot type the password: {e}")).into()),
            },
        }
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

    #[test]
    fn questions_nobody_can_answer_fail_at_once() {
        let d = ssh_dialog();
        let q = "The authenticity of host '10.0.0.9 (10.0.0.9)' can't be established.\n\
                 ED25519 key fingerprint is SHA256:abc.\n\
                 Are you sure you want to continue connecting (yes/no/[fingerprint])? ";
        let e = d.known_failure(q, false);
        assert!(
            matches!(&e, Some(Error::HostKey(h)) if h.to_string().contains("continue connecting")),
            "{e:?}"
        );
        let e = d.known_failure("(root@10.0.0.9) Verification code: ", false);
        assert!(matches!(e, Some(Error::Password(_))), "{e:?}");
    }
}
