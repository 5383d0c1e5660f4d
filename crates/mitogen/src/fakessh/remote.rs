//! The destination's side of one fake ssh invocation: `sh -c COMMAND`
//! with pipes, its bytes carried by bulk streams.
//!
//! Why a concurrent remote function: a command may run for hours (an
//! rsync of a large tree), and a tool may run several at once; on the
//! worker pool none of them holds up the context's other calls.
//!
//! The command runs in a process group of its own, so a kill reaches
//! what it started too (rsync's receiver forks a generator; a shell
//! pipeline has several members). The group is signalled only while its
//! leader is unreaped, which keeps the group's id from being reused
//! (`ChildProc::signal_group`), and the leader is reaped only after its
//! output has ended, or it was killed. Kill requests come from the master
//! on a control handle; the master's disconnection and this context's
//! shutdown kill the group too.

use super::fdio;
use crate::bulk::{BulkReceiver, BulkSender, BulkTarget};
use crate::child::ChildProc;
use crate::context::Context;
use crate::receiver::Receiver;
use crate::router::Router;
use crate::sender::Sender;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Window of each stream of a session (stdin, stdout, stderr): what one
/// session may have in flight in each direction.
pub(crate) const WINDOW: usize = 1 << 20;

/// After SIGTERM, how long a killed command's group has before SIGKILL.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(1);

/// Where `sftp` lives on common systems (`-s sftp`, scp's default).
const SFTP: &str = "for p in /usr/lib/openssh/sftp-server /usr/libexec/openssh/sftp-server \
     /usr/lib/ssh/sftp-server /usr/libexec/sftp-server /usr/lib/sftp-server; do \
     [ -x \"$p\" ] && exec \"$p\"; done; \
     echo 'fakessh: no sftp-server on this host' >&2; exit 127";

/// What the master asks for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExecRequest {
    pub command: ByteBuf,
    pub subsystem: bool,
    pub env: Vec<(ByteBuf, ByteBuf)>,
    /// Where the command's output goes.
    pub stdout: BulkTarget,
    pub stderr: BulkTarget,
    /// Where to say [`ExecReady`].
    pub ready: Sender,
}

/// Sent once the command runs: where its input goes, and where
/// [`Control`] messages go.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExecReady {
    pub stdin: BulkTarget,
    pub control: Sender,
}

/// What the master tells a running command.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Control {
    /// Kill its process group (SIGTERM, then SIGKILL).
    Kill,
    /// The tool closed this output (1: stdout, 2: stderr): close the
    /// command's pipe too.
    Closed(u8),
    /// Nothing but a wake-up (an output pump of this side ended), so the
    /// supervisor notices at once rather than after a slice.
    Wake,
}

/// How the command ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum Ended {
    Exited(i32),
    Signaled(i32),
}

fn shell_command(req: &ExecRequest) -> Result<Vec<u8>, String> {
    if !req.subsystem {
        if req.command.is_empty() {
            // `ssh host` alone: the user's shell, reading commands from
            // stdin (there is no terminal).
            return Ok(b"exec \"${SHELL:-/bin/sh}\"".to_vec());
        }
        return Ok(req.command.to_vec());
    }
    match req.command.as_slice() {
        b"sftp" => Ok(SFTP.as_bytes().to_vec()),
        other => Err(format!(
            "subsystem request failed: unknown subsystem {:?}",
            String::from_utf8_lossy(other)
        )),
    }
}

/// Runs one command for a fake ssh on this context.
#[crate::remote(concurrent)]
pub(crate) fn fakessh_exec(router: &Router, req: ExecRequest) -> io::Result<Ended> {
    let master = Context::new(
        router.core().clone(),
        req.ready.context_id(),
        "fakessh master",
    );
    let script = shell_command(&req).map_err(io::Error::other)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(OsStr::from_bytes(&script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // A context killed outright (no hooks run) still takes the command's
    // leader with it: the kernel sends it SIGKILL when this thread, which
    // stays in this call until the leader is reaped, goes.
    let agent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and makes
    // only async-signal-safe calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The agent died between the fork and the prctl.
            if libc::getppid() as u32 != agent {
                return Err(io::Error::other("the agent is gone"));
            }
            Ok(())
        });
    }
    for (k, v) in &req.env {
        cmd.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
    }
    // Like sshd, start in the home directory (when this user may enter it).
    let home = std::env::var_os("HOME").filter(|h| {
        std::path::Path::new(h).is_dir()
            && nix::unistd::access(std::path::Path::new(h), nix::unistd::AccessFlags::X_OK).is_ok()
    });
    if let Some(home) = home {
        cmd.current_dir(home);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("starting /bin/sh: {e}")))?;
    let proc = ChildProc::adopt(child.id() as i32);
    let pipes = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let (Some(stdin), Some(stdout), Some(stderr)) = pipes else {
        let _ = proc.signal_group(libc::SIGKILL);
        let _ = proc.wait_timeout(KILL_GRACE);
        return Err(io::Error::other("the command's pipes are missing"));
    };
    // This context's shutdown must not leave the command behind: killed
    // as soon as the shutdown begins (a context whose parent went is
    // ended by that parent a second later, without its hooks), and again
    // when it ends.
    let on_exit = {
        let (p, q) = (proc.clone(), proc.clone());
        [
            router.broker().on_before_shutdown(move || {
                let _ = p.signal_group(libc::SIGKILL);
            }),
            router.broker().on_shutdown(move || {
                let _ = q.signal_group(libc::SIGKILL);
            }),
        ]
    };
    let r = supervise(
        router,
        &master,
        req,
        &proc,
        stdin.into(),
        stdout.into(),
        stderr.into(),
    );
    for sub in &on_exit {
        sub.unsubscribe();
    }
    if r.is_err() {
        let _ = proc.signal_group(libc::SIGKILL);
        let _ = proc.wait_timeout(KILL_GRACE);
    }
    r
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL).map_err(io::Error::from)?;
    let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    Ok(())
}

/// Pumps the pipes and waits for the command, or kills it.
fn supervise(
    router: &Router,
    master: &Context,
    req: ExecRequest,
    proc: &ChildProc,
    stdin: OwnedFd,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> io::Result<Ended> {
    for fd in [&stdin, &stdout, &stderr] {
        set_nonblocking(fd)?;
    }
    let input = BulkReceiver::open(router, WINDOW, Some(master));
    let control =
        Receiver::new(router, None, true, Some(master), None).map_err(io::Error::other)?;
    let out_tx = BulkSender::connect(router, req.stdout).map_err(io::Error::other)?;
    let err_tx = BulkSender::connect(router, req.stderr).map_err(io::Error::other)?;
    req.ready
        .send(&ExecReady {
            stdin: input.target(),
            control: control.to_sender(),
        })
        .map_err(io::Error::other)?;
    // Each pump has its own halt flag: the end of the session sets all
    // three, a tool that closed its stdout or stderr (`Control::Closed`)
    // one. `lost` says the master is gone: then the command is killed.
    let halt: [Arc<AtomicBool>; 3] = Default::default();
    let lost = Arc::new(AtomicBool::new(false));
    let t_in = {
        let (h, lost) = (halt[0].clone(), lost.clone());
        spawn("mitogen-fakessh-in", move || {
            pump_in(input, stdin, &h, &lost)
        })?
    };
    let t_out = {
        let h = halt[1].clone();
        let wake = control.to_sender();
        spawn("mitogen-fakessh-out", move || {
            let r = pump_out(stdout, out_tx, &h);
            let _ = wake.send(&Control::Wake);
            r
        })?
    };
    let t_err = {
        let h = halt[2].clone();
        let wake = control.to_sender();
        spawn("mitogen-fakessh-err", move || {
            let r = pump_out(stderr, err_tx, &h);
            let _ = wake.send(&Control::Wake);
            r
        })?
    };
    let halt_all = || halt.iter().for_each(|h| h.store(true, Ordering::Release));
    // One control message, or a slice of waiting; `true`: kill.
    let next_control = || match control.get_message(Some(fdio::SLICE)) {
        Ok(m) => match m.decode::<Control>() {
            Ok(Control::Closed(n)) => {
                if let Some(h) = halt.get(usize::from(n)) {
                    h.store(true, Ordering::Release);
                }
                false
            }
            Ok(Control::Wake) => false,
            Ok(Control::Kill) | Err(_) => true,
        },
        Err(crate::Error::Timeout(_)) => false,
        // The master went away, or closed the handle.
        Err(_) => {
            std::thread::sleep(fdio::SLICE);
            true
        }
    };
    let mut killed: Option<Instant> = None;
    let mut sent_kill = false;
    let status = loop {
        let outputs_done = t_out.is_finished() && t_err.is_finished();
        if outputs_done || killed.is_some() {
            if let Some(s) = proc.try_wait()? {
                break s;
            }
        }
        let kill_asked = next_control();
        if (kill_asked || lost.load(Ordering::Acquire)) && killed.is_none() {
            let _ = proc.signal_group(libc::SIGTERM);
            killed = Some(Instant::now());
        }
        if let Some(t) = killed {
            if !sent_kill && t.elapsed() >= KILL_GRACE {
                let _ = proc.signal_group(libc::SIGKILL);
                sent_kill = true;
            }
            if t.elapsed() >= KILL_GRACE * 2 {
                // Members that ignore even SIGKILL's effect (stuck in the
                // kernel) leave their pipes open: stop waiting for them.
                halt_all();
            }
        }
    };
    // The leader is reaped: the group may no longer be signalled. Output
    // still held open by members it left behind ends the session only
    // when they close it (as with sshd) or the master stops it.
    while !(t_out.is_finished() && t_err.is_finished()) {
        if next_control() {
            break;
        }
    }
    halt_all();
    let _ = t_out.join();
    let _ = t_err.join();
    // The input pump notices within a slice and drains what arrived; the
    // answer need not wait for that.
    drop(t_in);
    Ok(match (status.code(), status.signal()) {
        (Some(c), _) => Ended::Exited(c),
        (None, Some(s)) => Ended::Signaled(s),
        _ => Ended::Exited(255),
    })
}

fn spawn(
    name: &str,
    f: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
    std::thread::Builder::new().name(name.into()).spawn(f)
}

/// The master's bytes into the command's stdin; its end closes stdin.
fn pump_in(
    mut input: BulkReceiver,
    stdin: OwnedFd,
    stop: &AtomicBool,
    lost: &AtomicBool,
) -> io::Result<()> {
    let mut stdin = Some(stdin);
    loop {
        if stop.load(Ordering::Acquire) {
            // Take what already arrived, so its credit reaches the
            // master's sender: otherwise it could wait for credit that
            // never comes. What arrives later is refused (dead), which
            // the sender sees.
            while let Ok(Some(_)) = input.read_chunk(Some(Duration::ZERO)) {}
            return Ok(());
        }
        match input.read_chunk(Some(fdio::SLICE)) {
            Ok(Some(chunk)) => {
                // A command that closed its stdin: drop what comes, as sshd
                // does, so the tool's writes do not stall.
                if let Some(fd) = &stdin {
                    match fdio::write_all(fd, &chunk, stop) {
                        Ok(true) => {}
                        Ok(false) => return Ok(()),
                        Err(_) => stdin = None,
                    }
                }
            }
            Ok(None) => return Ok(()),
            Err(crate::Error::Timeout(_)) => {}
            Err(_) => {
                // The master always ends the stream cleanly: this is a
                // lost master (or a broken link to it). Kill the command.
                lost.store(true, Ordering::Release);
                return Ok(());
            }
        }
    }
}

/// One of the command's outputs to the master; end of file ends the
/// stream. Halted (the tool closed this output, or the session ended),
/// it closes the pipe, so the command meets `EPIPE` as under sshd.
fn pump_out(fd: OwnedFd, mut tx: BulkSender, halt: &AtomicBool) -> io::Result<()> {
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match fdio::read(&fd, &mut buf, halt)? {
            None => return Ok(()),
            Some(0) => return tx.finish().map_err(io::Error::other),
            Some(n) => {
                if let Err(e) = tx.write(&buf[..n]) {
                    tracing::debug!("mitogen fakessh: output stream: {e}");
                    return Ok(());
                }
            }
        }
    }
}
