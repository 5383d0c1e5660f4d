//! The master's side of a run: the rendezvous socket's accept loop, and
//! one session per fake `ssh` invocation.
//!
//! A session checks its peer (same user by `SO_PEERCRED`, the run's
//! token), takes the shim's standard descriptors, starts
//! [`super::remote::fakessh_exec`] on the destination and pumps:
//!
//! ```text
//! tool ─ pipe ─▶ shim's fd 0 (held here) ─ read ─▶ BulkSender ──────▶ remote stdin pump ─▶ sh -c
//! tool ◀─ pipe ─ shim's fd 1/2 (held here) ◀ write ◀ BulkReceiver ◀─ remote out/err pumps ◀┘
//! ```
//!
//! Each direction is bounded by its bulk window and by the pipes; the
//! tool closing its end of stdin finishes the input stream, which closes
//! the command's stdin. The session ends with the command's status, sent
//! to the shim, which exits with it. A shim that goes away (the tool
//! killed it) and a run that stops (its deadline) kill the command.

use super::fdio;
use super::remote::{fakessh_exec, Control, Ended, ExecReady, ExecRequest, KILL_GRACE, WINDOW};
use super::wire::{self, Request, Status};
use crate::bulk::{BulkReceiver, BulkSender};
use crate::context::Context;
use crate::receiver::Receiver;
use crate::router::Router;
use crate::sender::Sender;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Most sessions of one run at a time; a shim beyond is turned away
/// (it exits 255).
pub(crate) const MAX_SESSIONS: usize = 64;

/// How long a shim has to send its request once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a session waits for the command to start (pool slot, spawn).
const START_TIMEOUT: Duration = Duration::from_secs(60);

struct Shared {
    router: Router,
    dest: Context,
    token: String,
    /// Set when the run ends: sessions kill their commands and finish.
    stop: AtomicBool,
    active: AtomicUsize,
    sessions: Mutex<Vec<JoinHandle<()>>>,
}

/// The accept loop of one run, and its sessions.
pub(crate) struct Server {
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "fakessh::Server(dest {:?})", self.shared.dest)
    }
}

impl Server {
    /// Serves shims connecting to `listener` with `token`, running their
    /// commands on `dest`.
    pub(crate) fn start(
        dest: &Context,
        listener: UnixListener,
        token: String,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let shared = Arc::new(Shared {
            router: Router::borrowed(dest.core.clone()),
            dest: dest.clone(),
            token,
            stop: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            sessions: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("mitogen-fakessh-accept".into())
            .spawn(move || accept_loop(&s, listener))?;
        Ok(Server {
            shared,
            accept: Some(accept),
        })
    }

    /// Stops accepting, kills every running command and waits up to
    /// `limit` for the sessions to end. `false`: some did not.
    pub(crate) fn stop(&mut self, limit: Duration) -> bool {
        self.shared.stop.store(true, Ordering::Release);
        let deadline = Instant::now() + limit;
        if let Some(a) = self.accept.take() {
            // The loop checks the flag every slice.
            let _ = a.join();
        }
        let handles: Vec<_> = crate::sync::lock(&self.shared.sessions).drain(..).collect();
        let mut all = true;
        for h in handles {
            while !h.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            } else {
                all = false;
            }
        }
        all
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.accept.is_some() {
            self.stop(KILL_GRACE * 4);
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: UnixListener) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    while !shared.stop.load(Ordering::Acquire) {
        let mut p = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        let ms = PollTimeout::try_from(fdio::SLICE.as_millis() as i32).unwrap_or(PollTimeout::MAX);
        if !matches!(poll(&mut p, ms), Ok(n) if n > 0) {
            continue;
        }
        let conn = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::warn!("mitogen fakessh: accept: {e}");
                std::thread::sleep(fdio::SLICE);
                continue;
            }
        };
        let mut sessions = crate::sync::lock(&shared.sessions);
        sessions.retain(|h| !h.is_finished());
        if shared.active.load(Ordering::Acquire) >= MAX_SESSIONS {
            tracing::warn!("mitogen fakessh: {MAX_SESSIONS} sessions already: one turned away");
            continue; // dropping the connection: the shim exits 255
        }
        shared.active.fetch_add(1, Ordering::AcqRel);
        let s = shared.clone();
        let started = std::thread::Builder::new()
            .name("mitogen-fakessh-session".into())
            .spawn(move || {
                if let Err(e) = session(&s, conn) {
                    tracing::debug!("mitogen fakessh: session: {e}");
                }
                s.active.fetch_sub(1, Ordering::AcqRel);
            });
        match started {
            Ok(h) => sessions.push(h),
            Err(e) => {
                shared.active.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!("mitogen fakessh: cannot start a session thread: {e}");
            }
        }
    }
}

/// Equal, in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks the peer, then runs its request; the shim always hears how it
/// ended unless it failed the checks.
fn session(shared: &Shared, mut conn: UnixStream) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    let creds = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(io::Error::from)?;
    let me = nix::unistd::geteuid().as_raw();
    if creds.uid() != me {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("peer pid {} is uid {}, not {me}", creds.pid(), creds.uid()),
        ));
    }
    conn.set_read_timeout(Some(REQUEST_TIMEOUT))?;
    let (req, fds) = wire::recv_request(&mut conn)?;
    if !same(req.token.as_bytes(), shared.token.as_bytes()) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("peer pid {} gave a wrong token", creds.pid()),
        ));
    }
    let Ok::<[OwnedFd; 3], _>([stdin, stdout, stderr]) = fds.try_into() else {
        let _ = wire::send_status(&mut conn, &Status::Failed("expected 3 descriptors".into()));
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "expected 3 descriptors",
        ));
    };
    conn.set_read_timeout(None)?;
    let mut input = None;
    let status = match run(shared, &conn, req, stdin, stdout, stderr, &mut input) {
        Ok(Ended::Exited(c)) => Status::Exited(c),
        Ok(Ended::Signaled(s)) => Status::Signaled(s),
        Err(e) => Status::Failed(e.to_string()),
    };
    let sent = wire::send_status(&mut conn, &status);
    // The input pump sees its stop flag within a slice; it may also be
    // waiting for credit the command will never give (it ended without
    // reading everything): it ends when its data is refused. The shim
    // need not wait for either.
    if let Some(t_in) = input {
        let limit = Instant::now() + Duration::from_secs(2);
        while !t_in.is_finished() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
        if t_in.is_finished() {
            let _ = t_in.join();
        } else {
            tracing::debug!("mitogen fakessh: the stdin pump outlives its session");
        }
    }
    sent
}

/// `true` once the shim hung up (it sends nothing after its request).
fn hung_up(conn: &UnixStream) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(conn.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut p, PollTimeout::ZERO), Ok(n) if n > 0)
}

fn run(
    shared: &Shared,
    conn: &UnixStream,
    req: Request,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    input: &mut Option<Pump>,
) -> crate::Result<Ended> {
    let router = &shared.router;
    let dest = &shared.dest;
    let out_rx = BulkReceiver::open(router, WINDOW, Some(dest));
    let err_rx = BulkReceiver::open(router, WINDOW, Some(dest));
    let ready = Receiver::new(router, None, false, Some(dest), None)?;
    let call = dest.call_async::<fakessh_exec>((ExecRequest {
        command: req.command,
        subsystem: req.subsystem,
        env: req.env,
        stdout: out_rx.target(),
        stderr: err_rx.target(),
        ready: ready.to_sender(),
    },))?;
    // Wait for the command to start; a refusal (pool full, spawn failed)
    // is the call's own answer.
    let started = Instant::now();
    let go: ExecReady = loop {
        // A quick command may have answered already; its ExecReady was
        // sent before the answer, on the same path, so it is here too.
        let answered = call.ready();
        if let Some(m) = ready.try_get()? {
            break m.decode()?;
        }
        if answered {
            call.get(Some(Duration::ZERO))?;
            return Err(
                crate::StreamError::new("the remote command ended before it started").into(),
            );
        }
        if shared.stop.load(Ordering::Acquire) || hung_up(conn) {
            abandon(&call, &ready);
            return Err(
                crate::StreamError::new("the run stopped before the command started").into(),
            );
        }
        if started.elapsed() > START_TIMEOUT {
            return Err(
                crate::TimeoutError::new("starting the remote command", START_TIMEOUT).into(),
            );
        }
        match ready.get_message(Some(fdio::SLICE)) {
            Ok(m) => break m.decode()?,
            Err(crate::Error::Timeout(_)) => {}
            Err(e) => return Err(e),
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let pumps = start_pumps(router, &go, stdin, stdout, stderr, out_rx, err_rx, &stop)?;
    let mut kill_sent = false;
    let mut killed_at: Option<Instant> = None;
    let result = loop {
        match call.get(Some(fdio::SLICE)) {
            Err(crate::Error::Timeout(_)) => {}
            other => break other,
        }
        if !kill_sent && (shared.stop.load(Ordering::Acquire) || hung_up(conn)) {
            // The remote side signals its group, SIGKILL after a grace.
            let _ = go.control.send(&Control::Kill);
            kill_sent = true;
            killed_at = Some(Instant::now());
        }
        if killed_at.is_some_and(|t| t.elapsed() > KILL_GRACE * 4) {
            stop.store(true, Ordering::Release);
            break Err(
                crate::TimeoutError::new("killing the remote command", KILL_GRACE * 4).into(),
            );
        }
    };
    // The command's output arrived before its answer (same path, in
    // order): the output pumps end on their own, unless the tool stopped
    // reading and the run is stopping.
    let (t_in, t_out, t_err) = pumps;
    while !(t_out.is_finished() && t_err.is_finished()) {
        if shared.stop.load(Ordering::Acquire) || hung_up(conn) || result.is_err() {
            stop.store(true, Ordering::Release);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Release);
    let _ = t_out.join();
    let _ = t_err.join();
    *input = Some(t_in);
    result
}

/// The call was made but nobody will pump its command: if it starts
/// within a few seconds, kill it, so it does not run with nobody reading.
fn abandon(call: &crate::PendingCall<Ended>, ready: &Receiver) {
    let limit = Instant::now() + KILL_GRACE * 4;
    while Instant::now() < limit && !call.ready() {
        match ready.get_message(Some(fdio::SLICE)) {
            Ok(m) => {
                if let Ok(go) = m.decode::<ExecReady>() {
                    let _ = go.control.send(&Control::Kill);
                }
                return;
            }
            Err(crate::Error::Timeout(_)) => {}
            Err(_) => return,
        }
    }
}

type Pump = JoinHandle<()>;

#[allow(clippy::too_many_arguments)]
fn start_pumps(
    router: &Router,
    go: &ExecReady,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
    out_rx: BulkReceiver,
    err_rx: BulkReceiver,
    stop: &Arc<AtomicBool>,
) -> crate::Result<(Pump, Pump, Pump)> {
    let tx = BulkSender::connect(router, go.stdin.clone())?;
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| crate::StreamError::io("starting a fakessh pump", e))
    };
    let s = stop.clone();
    let t_in = spawn(
        "mitogen-fakessh-stdin",
        Box::new(move || pump_in(stdin, tx, &s)),
    )?;
    let s = stop.clone();
    let t_out = spawn(
        "mitogen-fakessh-stdout",
        Box::new({
            let c = go.control.clone();
            move || pump_out(out_rx, stdout, &s, c, 1)
        }),
    )?;
    let s = stop.clone();
    let t_err = spawn(
        "mitogen-fakessh-stderr",
        Box::new({
            let c = go.control.clone();
            move || pump_out(err_rx, stderr, &s, c, 2)
        }),
    )?;
    Ok((t_in, t_out, t_err))
}

/// The tool's bytes to the command; end of file (or the session's end)
/// finishes the stream.
fn pump_in(stdin: OwnedFd, mut tx: BulkSender, stop: &AtomicBool) {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match fdio::read(&stdin, &mut buf, stop) {
            Ok(Some(n)) if n > 0 => {
                if let Err(e) = tx.write(&buf[..n]) {
                    // The command ended and no longer reads: like sshd,
                    // the rest is not delivered.
                    tracing::debug!("mitogen fakessh: stdin: {e}");
                    return;
                }
            }
            Ok(Some(_)) | Ok(None) => break,
            Err(e) => {
                tracing::debug!(
                    "mitogen fakessh: reading the tool's stdin (fd {}): {e}",
                    stdin.as_raw_fd()
                );
                break;
            }
        }
    }
    let _ = tx.finish();
}

/// The command's output (`which`: 1 or 2) to the tool.
fn pump_out(mut rx: BulkReceiver, fd: OwnedFd, stop: &AtomicBool, control: Sender, which: u8) {
    let mut broken = false;
    while !stop.load(Ordering::Acquire) {
        match rx.read_chunk(Some(fdio::SLICE)) {
            Ok(Some(chunk)) => {
                // A tool that closed this pipe: the command's pipe is
                // closed too (it meets EPIPE, as under sshd); meanwhile
                // what still comes is drained so nothing waits for credit.
                if !broken {
                    match fdio::write_all(&fd, &chunk, stop) {
                        Ok(true) => {}
                        Ok(false) => return,
                        Err(_) => {
                            broken = true;
                            let _ = control.send(&Control::Closed(which));
                        }
                    }
                }
            }
            Ok(None) => return,
            Err(crate::Error::Timeout(_)) => {}
            Err(e) => {
                tracing::debug!("mitogen fakessh: output stream: {e}");
                return;
            }
        }
    }
}
