//! The child side of a context: what `mitogen::main` turns into when this
//! process was started as an agent by the first stage, and what a forked
//! child runs.
//!
//! Order matters and is fixed: handshake on fds 0/1; move the protocol
//! descriptors out of the way; point stdin at `/dev/null` and stdout and
//! stderr at a pipe whose lines are forwarded to the master as log
//! records (so a function that prints cannot corrupt the protocol); set the
//! identity and process title; start the broker and router; serve calls on
//! this (the main) thread until the parent goes away.

use crate::bootstrap::stage::AGENT_FLAG;
use crate::bootstrap::{AgentBinary, Config, Hello};
use crate::broker::Broker;
use crate::dispatch::{Dispatcher, ExternalContext};
use crate::error::{Result, StreamError};
use crate::frame::{handle, Encoding, Header, HEADER_LEN, PROTOCOL_VERSION};
use crate::link::{FrameReader, Stream};
use crate::router::{Core, Router};
use std::os::fd::{OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Code run in a new child before it serves (fork's `on_start`).
pub(crate) type OnStart = Box<dyn FnOnce(&ExternalContext)>;

/// `true` when this process was executed by the first stage.
pub(crate) fn is_agent() -> bool {
    std::env::args_os().nth(1).is_some_and(|a| a == AGENT_FLAG)
}

/// Runs the agent and exits the process.
pub(crate) fn run() -> ! {
    let code = match boot() {
        Ok(()) => 0,
        Err(e) => {
            // Before the handshake stderr still reaches the parent, which
            // includes it in its error; after it, it is forwarded as a log.
            eprintln!("mitogen agent {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code)
}

fn boot() -> Result<()> {
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        version: crate::VERSION.to_string(),
        pid: std::process::id(),
        binary: crate::bootstrap::runtime::own_file().1,
    };
    write_frame(1, &crate::message::to_msgpack(&hello)?)?;
    let cfg: Config = read_config(0)?;
    let rfd = crate::process::dup_cloexec(0).map_err(io("dup"))?;
    let wfd = crate::process::dup_cloexec(1).map_err(io("dup"))?;
    AgentBinary::set_current(cfg.binary_sha.clone(), cfg.binary_size);
    serve(cfg, rfd, Some(wfd), None)
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> crate::Error {
    move |e| StreamError::new(format!("{what}: {e}")).into()
}

fn write_frame(fd: RawFd, payload: &[u8]) -> Result<()> {
    let h = Header {
        encoding: Encoding::MsgPack,
        dst_id: 0,
        src_id: 0,
        auth_id: 0,
        handle: handle::HANDSHAKE,
        reply_to: 0,
        length: payload.len() as u32,
        ..Header::default()
    };
    let mut frame = h.encode().to_vec();
    frame.extend_from_slice(payload);
    let mut data = &frame[..];
    while !data.is_empty() {
        // SAFETY: writing from a live slice to our stdout.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io("writing the handshake")(e));
        }
        data = &data[n as usize..];
    }
    Ok(())
}

/// Reads exactly `n` bytes: nothing past the config frame may be taken
/// from the descriptor, since the broker reads what follows.
fn read_exact(fd: RawFd, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        // SAFETY: reading into the unfilled tail of `buf`.
        let r = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), n - got) };
        if r == 0 {
            return Err(StreamError::new("the parent closed the link during the handshake").into());
        }
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(io("reading the config")(e));
        }
        got += r as usize;
    }
    Ok(buf)
}

fn read_config(fd: RawFd) -> Result<Config> {
    let hdr = read_exact(fd, HEADER_LEN)?;
    let h = match Header::decode(&hdr, 1 << 20) {
        Ok(Some(h)) if h.handle == handle::HANDSHAKE => h,
        _ => return Err(StreamError::new("the parent sent no config frame").into()),
    };
    let body = read_exact(fd, h.length as usize)?;
    crate::message::from_msgpack(&body)
}

/// Time the main thread gets to finish on its own once the broker has
/// stopped, before the process is ended under it.
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_millis(250);

/// Ends the process once the broker has stopped (parent lost, or shutdown
/// requested), even if the main thread is inside a long call: a busy
/// child must not outlive its link (the seed sends itself SIGTERM here).
fn start_watchdog(broker: &Broker) {
    let b = broker.clone();
    let spawned = std::thread::Builder::new()
        .name("mitogen-watchdog".into())
        .spawn(move || {
            b.join();
            std::thread::sleep(EXIT_GRACE);
            // SAFETY: ending this process; nothing is left to clean up
            // that the kernel does not (the link is already gone).
            unsafe { libc::_exit(0) }
        });
    if let Err(e) = spawned {
        tracing::warn!("mitogen: no watchdog thread ({e}): a busy context may outlive its parent");
    }
}

/// Serves as context `cfg.context_id` over `rfd`/`wfd` until the parent
/// disconnects or asks for shutdown.
pub(crate) fn serve(
    cfg: Config,
    rfd: OwnedFd,
    wfd: Option<OwnedFd>,
    on_start: Option<OnStart>,
) -> Result<()> {
    crate::identity::set(cfg.context_id, cfg.parent_ids.clone());
    stop_stage_watchdog();
    crate::process::set_title(&format!("mitogen:{}", cfg.remote_name));
    let (log_r, log_w) = crate::process::pipe().map_err(io("pipe"))?;
    crate::process::redirect_stdio(&log_w).map_err(io("redirecting stdio"))?;
    drop(log_w);

    let broker = Broker::new_detached()?;
    let core = Core::new(
        broker.clone(),
        true,
        cfg.context_id,
        cfg.parent_ids.clone(),
        Some(cfg.name.clone()),
    );
    core.limits.apply(&cfg.limits);
    let max = core.limits.max_message_size();
    core.debug.store(cfg.debug, Ordering::Relaxed);
    // `debug`: error results carry full backtraces.
    crate::panics::set_full_backtraces(cfg.debug);
    core.profiling.store(cfg.profiling, Ordering::Relaxed);
    core.unidirectional
        .store(cfg.unidirectional, Ordering::Relaxed);
    let parent_id = cfg.parent_ids.first().copied().unwrap_or(0);
    core.table.set_name(parent_id, "parent");
    crate::logging::ChildLogger::install(&core, cfg.log_level, cfg.debug);

    // The call handler must exist before the first frame is read: the
    // parent may send a call right behind the handshake.
    let router = Router::from_core(core.clone());
    let dispatcher = Dispatcher::new(router.clone(), cfg.profiling, cfg.pool);
    let stream =
        Stream::new("parent".into(), parent_id, true, rfd, wfd, max, None).map_err(io("stream"))?;
    core.attach(Arc::new(stream), FrameReader::new(max));
    broker.defer_loop(Box::new(move |lp| {
        crate::logging::watch_lines(lp, log_r, move |line| {
            crate::logging::forward(&core, 3, "stdout", line.to_string())
        })
    }));
    if let Some(f) = on_start {
        f(dispatcher.econtext());
    }
    start_watchdog(&broker);
    // Who this is, first: what a reader of the master's log needs to
    // place every later line of this context.
    tracing::info!(
        "mitogen {} context {} ({}) serving as pid {}; parent is context {parent_id} ({})",
        crate::identity::VERSION,
        cfg.context_id,
        cfg.name,
        std::process::id(),
        cfg.parent_name
    );
    dispatcher.run();
    broker.shutdown();
    broker.join();
    drop(router);
    Ok(())
}

/// The children of thread `tid` of process `pid`
/// (`/proc/PID/task/TID/children`: Linux 3.5 and later, with
/// `CONFIG_PROC_CHILDREN`, as distribution kernels have it); `None` when
/// the kernel does not list them.
fn task_children(pid: u32, tid: u32) -> Option<Vec<i32>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/children")).ok()?;
    Some(
        s.split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect(),
    )
}

/// Stops the watchdog an ssh first stage left behind (`WATCHDOG` in
/// `connect/transport/ssh.rs`): the agent runs, so nothing is left to
/// clean up. The stage shell became this process, and the watchdog is its
/// only child at this point: only children of this very process are
/// signalled, so a reused pid is never hit.
fn stop_stage_watchdog() {
    if std::env::var_os("MITOGEN_WATCHDOG").is_none() {
        return;
    }
    std::env::remove_var("MITOGEN_WATCHDOG");
    let me = std::process::id();
    // The stage shell forked the watchdog from its one thread, the one
    // this process runs on now (tid = pid): the kernel lists that
    // thread's children in one file, read instead of every process's
    // stat (hundreds of reads on a busy host, on every connect).
    if let Some(kids) = task_children(me, me) {
        for pid in kids {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            reap(pid);
        }
        return;
    }
    // No `children` file (a kernel without CONFIG_PROC_CHILDREN): look
    // through every process for ours.
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in procs.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Field 4, after the parenthesised command name.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            reap(pid);
        }
    }
}

/// Waits for the stopped watchdog `pid` (our own child, which nothing
/// else waits for) so it does not stay a zombie for the agent's life; on
/// a thread, so the agent's start never waits on it.
fn reap(pid: i32) {
    let _ = std::thread::Builder::new()
        .name("mitogen-reap".into())
        .spawn(move || {
            let mut status = 0;
            // SAFETY: waiting for one child of this process by its pid.
            unsafe { libc::waitpid(pid, &mut status, 0) };
        });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The watchdog's case: the children a thread started are listed
    /// under it (the stage shell's one thread is the agent's main thread).
    #[test]
    fn task_children_lists_the_children_of_this_thread() {
        let me = std::process::id();
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        let Some(before) = task_children(me, tid) else {
            // No `children` file here: stop_stage_watchdog scans /proc.
            return;
        };
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let after = task_children(me, tid);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!before.contains(&pid), "{before:?} has {pid} before it ran");
        let after = after.expect("the children file went away");
        assert!(after.contains(&pid), "{after:?} lacks the child {pid}");
    }
}
