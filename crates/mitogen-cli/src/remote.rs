//! The functions the command calls on its targets. They are compiled into
//! this binary, which is what runs on every target, so nothing else needs
//! to be installed there.
//!
//! `run_command` is `concurrent`: it runs on the target's worker pool,
//! which keeps the target's main thread free to answer `stop_commands`
//! (Ctrl-C) while commands run. Every command runs in its own process
//! group, so stopping it stops what it started too; its output is bounded
//! in size (the rest is counted, not kept) and its run in time.

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A shell command to run on a target.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandSpec {
    /// Given to `/bin/sh -c`.
    pub script: String,
    /// Killed (its whole process group) after this long.
    pub timeout: Option<Duration>,
    /// Bytes of stdout, and of stderr, kept at most.
    pub max_output: usize,
}

/// What a command did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommandOutput {
    /// Exit status, when it exited.
    pub status: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// Its standard output (the first `max_output` bytes).
    pub stdout: mitogen::ByteBuf,
    /// Its standard error (the first `max_output` bytes).
    pub stderr: mitogen::ByteBuf,
    /// Bytes of stdout not kept.
    pub stdout_dropped: u64,
    /// Bytes of stderr not kept.
    pub stderr_dropped: u64,
    /// Killed for running past its timeout.
    pub timed_out: bool,
    /// Stopped on request (Ctrl-C on the master).
    pub stopped: bool,
    /// How long it ran.
    pub elapsed: Duration,
}

/// Process groups of the commands running in this context, by pid.
static RUNNING: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// pids asked to stop (so their result says `stopped`).
static STOPPED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Output of one pipe: what was kept and how much was dropped.
#[derive(Default)]
struct Capture {
    kept: Vec<u8>,
    dropped: u64,
}

impl Capture {
    fn add(&mut self, data: &[u8], max: usize) {
        let room = max.saturating_sub(self.kept.len()).min(data.len());
        self.kept.extend_from_slice(&data[..room]);
        self.dropped += (data.len() - room) as u64;
    }
}

fn kill_group(pid: i32, sig: nix::sys::signal::Signal) {
    // A negative pid names the process group the command leads.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid), sig);
}

/// Background processes may keep the pipes open after the shell exits:
/// how long the rest of the output is waited for.
const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// How often the exit is polled for where the kernel has no pidfds.
const EXIT_TICK: Duration = Duration::from_millis(20);

/// A descriptor that becomes readable when `pid` exits (Linux 5.3+).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor or -1; the pid is our unreaped child.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh descriptor that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// What one command did, as seen by the thread that ran it.
struct Ended {
    status: std::process::ExitStatus,
    out: Capture,
    err: Capture,
    timed_out: bool,
}

/// Collects the command's stdout and stderr and its exit on this thread
/// (one `poll` over both pipes and a pidfd: no helper threads), killing
/// its process group at `timeout`.
fn collect(child: &mut Child, timeout: Option<Duration>, max: usize) -> std::io::Result<Ended> {
    let start = Instant::now();
    let mut pipes = [
        child.stdout.take().map(OwnedFd::from),
        child.stderr.take().map(OwnedFd::from),
    ];
    let mut caps = [Capture::default(), Capture::default()];
    let exit_fd = pidfd(child.id() as i32);
    let mut status = None;
    let mut exited_at = None;
    let mut timed_out = false;
    let mut buf = [0u8; 16 * 1024];
    loop {
        if status.is_none() {
            status = child.try_wait()?;
            exited_at = status.map(|_| Instant::now());
        }
        let now = Instant::now();
        let wait = match exited_at {
            Some(at) if pipes.iter().all(Option::is_none) || now >= at + OUTPUT_GRACE => break,
            Some(at) => Some(at + OUTPUT_GRACE - now),
            None => match timeout {
                Some(t) if !timed_out && now >= start + t => {
                    timed_out = true;
                    kill_group(child.id() as i32, nix::sys::signal::Signal::SIGKILL);
                    continue;
                }
                Some(t) if !timed_out => Some(start + t - now),
                _ => None,
            },
        };
        let wait = match (&exit_fd, status) {
            // No pidfd: the exit is seen by polling.
            (None, None) => Some(wait.map_or(EXIT_TICK, |w| w.min(EXIT_TICK))),
            _ => wait,
        };
        let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(3);
        for p in pipes.iter().flatten() {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let (Some(e), None) = (&exit_fd, status) {
            fds.push(PollFd::new(e.as_fd(), PollFlags::POLLIN));
        }
        let ms = wait.map_or(PollTimeout::NONE, |w| {
            PollTimeout::try_from(w.as_millis().clamp(1, 60_000) as i32).unwrap_or(PollTimeout::MAX)
        });
        match poll(&mut fds, ms) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        // The pipes still open come first in `fds`, in order.
        let mut ready = [false; 2];
        for (r, f) in ready.iter_mut().zip(&fds) {
            *r = f.any().unwrap_or(true);
        }
        drop(fds);
        let mut i = 0;
        for (pipe, cap) in pipes.iter_mut().zip(caps.iter_mut()) {
            let Some(p) = pipe else { continue };
            if ready[i] {
                match nix::unistd::read(p.as_raw_fd(), &mut buf) {
                    Ok(0) => *pipe = None,
                    Ok(n) => cap.add(&buf[..n], max),
                    Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
                    Err(_) => *pipe = None,
                }
            }
            i += 1;
        }
    }
    let [out, err] = caps;
    Ok(Ended {
        status: status.ok_or_else(|| std::io::Error::other("the command did not exit"))?,
        out,
        err,
        timed_out,
    })
}

/// Runs `spec.script` with `/bin/sh -c`, stdin from `/dev/null`.
#[mitogen::remote(concurrent)]
pub fn run_command(router: &mitogen::Router, spec: CommandSpec) -> std::io::Result<CommandOutput> {
    stop_with_context(router);
    let start = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    // Nothing runs between fork and exec (no `pre_exec`), so the standard
    // library spawns with `posix_spawn` (a vfork): a fork copying this
    // process's page tables cost more than the shell (measured: 50 warm
    // commands took 63-67 ms with it, 48-53 ms without).
    cmd.arg("-c")
        .arg(&spec.script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    lock(&RUNNING).push(pid);
    let ended = collect(&mut child, spec.timeout, spec.max_output);
    if ended.is_err() {
        // Not left running, nor unreaped, when collecting failed.
        kill_group(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    lock(&RUNNING).retain(|&p| p != pid);
    let stopped = {
        let mut s = lock(&STOPPED);
        let was = s.contains(&pid);
        s.retain(|&p| p != pid);
        was
    };
    let Ended {
        status,
        out,
        err,
        timed_out,
    } = ended?;
    Ok(CommandOutput {
        status: status.code(),
        signal: status.signal(),
        stdout: mitogen::ByteBuf::from(out.kept),
        stderr: mitogen::ByteBuf::from(err.kept),
        stdout_dropped: out.dropped,
        stderr_dropped: err.dropped,
        timed_out,
        stopped,
        elapsed: start.elapsed(),
    })
}
/// Has this context kill what its commands started when it ends (its
/// parent is gone, or it was told to shut down): each command's whole
/// process group, so a background process started by the shell ends too.
/// A context killed outright (SIGKILL) leaves its commands running, as a
/// killed sshd does: a `PR_SET_PDEATHSIG` set between fork and exec would
/// take only the shell, and force a fork of this process per command.
fn stop_with_context(router: &mitogen::Router) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    fn kill_all() {
        for &p in lock(&RUNNING).iter() {
            kill_group(p, nix::sys::signal::Signal::SIGKILL);
        }
    }
    // At both ends of shutdown: a context whose parent disconnected it is
    // sent SIGTERM by that parent's reaper a second later, and then runs
    // no more hooks.
    ONCE.call_once(|| {
        router.broker().on_before_shutdown(kill_all);
        router.broker().on_exit(kill_all);
    });
}

/// Stops every command running in this context: SIGTERM to each process
/// group, SIGKILL to those still there after a short grace. Returns how
/// many there were.
#[mitogen::remote]
pub fn stop_commands() -> usize {
    let pids: Vec<i32> = lock(&RUNNING).clone();
    lock(&STOPPED).extend(&pids);
    for &p in &pids {
        kill_group(p, nix::sys::signal::Signal::SIGTERM);
    }
    let until = Instant::now() + Duration::from_millis(300);
    while Instant::now() < until && lock(&RUNNING).iter().any(|p| pids.contains(p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    for p in lock(&RUNNING).iter().filter(|p| pids.contains(p)) {
        kill_group(*p, nix::sys::signal::Signal::SIGKILL);
    }
    pids.len()
}

/// Does nothing: a round trip.
#[mitogen::remote]
pub fn ping() {}

/// This context's links and their traffic (for `tree`).
#[mitogen::remote]
pub fn links(router: &mitogen::Router) -> Vec<mitogen::LinkStats> {
    router.links()
}

/// What `facts` reports about a target.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Facts {
    /// The kernel's host name.
    pub hostname: String,
    /// The user the context runs as.
    pub user: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
    /// Machine architecture.
    pub arch: String,
    /// Seconds since boot.
    pub uptime_s: u64,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Number of online CPUs.
    pub cpus: usize,
    /// `MemTotal`, bytes.
    pub mem_total: u64,
    /// `MemAvailable`, bytes.
    pub mem_available: u64,
    /// Size of the root file system, bytes.
    pub disk_total: u64,
    /// Bytes available to unprivileged users on the root file system.
    pub disk_available: u64,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Facts about the machine and account the context runs in, from
/// `/proc`, `/etc` and `statvfs` (no programs are run).
#[mitogen::remote]
pub fn facts() -> Facts {
    let meminfo = read("/proc/meminfo");
    let mem = |key: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_default();
    let loads: Vec<f64> = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    let uname = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uname
            .as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let (disk_total, disk_available) = match nix::sys::statvfs::statvfs("/") {
        Ok(s) => {
            let f = s.fragment_size();
            (s.blocks() * f, s.blocks_available() * f)
        }
        Err(_) => (0, 0),
    };
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    Facts {
        hostname: field(|u| u.nodename()),
        user,
        os,
        kernel: field(|u| u.release()),
        arch: field(|u| u.machine()),
        uptime_s: read("/proc/uptime")
            .split('.')
            .next()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0),
        load: [
            loads.first().copied().unwrap_or(0.0),
            loads.get(1).copied().unwrap_or(0.0),
            loads.get(2).copied().unwrap_or(0.0),
        ],
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total: mem("MemTotal:"),
        mem_available: mem("MemAvailable:"),
        disk_total,
        disk_available,
    }
}
