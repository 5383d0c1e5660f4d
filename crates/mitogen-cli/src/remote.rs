//! The functions the command calls on its targets. They are compiled into
//! this binary, which is what runs on every target, so nothing else needs
//! to be installed there.
//!
//! `run_command` is `concurrent`: it runs on the target's worker pool,
//! which keeps the target's main thread free to answer `stop_commands`
//! (Ctrl-C) while commands run. Every command runs in its own process
//! group, so stopping it stops what it started too; its output is bounded
//! in size (the rest is counted, not kept) and its run in time.

use serde::{Deserialize, Serialize};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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

/// Reads `pipe` to its end into `cap`, keeping at most `max` bytes.
fn drain(mut pipe: impl Read, cap: Arc<Mutex<Capture>>, max: usize, done: mpsc::Sender<()>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut c = lock(&cap);
                let room = max.saturating_sub(c.kept.len()).min(n);
                c.kept.extend_from_slice(&buf[..room]);
                c.dropped += (n - room) as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let _ = done.send(());
}

fn kill_group(pid: i32, sig: nix::sys::signal::Signal) {
    // A negative pid names the process group the command leads.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(-pid), sig);
}

/// Runs `spec.script` with `/bin/sh -c`, stdin from `/dev/null`.
#[mitogen::remote(concurrent)]
pub fn run_command(spec: CommandSpec) -> std::io::Result<CommandOutput> {
    let start = Instant::now();
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&spec.script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: prctl takes integer arguments, allocates nothing and is
    // async-signal-safe. The shell is killed if this thread ends (the
    // context died) before it did.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    lock(&RUNNING).push(pid);
    let (out, err) = (Arc::new(Mutex::default()), Arc::new(Mutex::default()));
    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = 0;
    if let Some(p) = child.stdout.take() {
        let (c, d) = (out.clone(), done_tx.clone());
        std::thread::spawn(move || drain(p, c, spec.max_output, d));
        readers += 1;
    }
    if let Some(p) = child.stderr.take() {
        let (c, d) = (err.clone(), done_tx.clone());
        std::thread::spawn(move || drain(p, c, spec.max_output, d));
        readers += 1;
    }
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });
    let mut timed_out = false;
    let status = match spec.timeout {
        Some(t) => match exit_rx.recv_timeout(t) {
            Ok(s) => s,
            Err(_) => {
                timed_out = true;
                kill_group(pid, nix::sys::signal::Signal::SIGKILL);
                exit_rx
                    .recv()
                    .map_err(|_| std::io::Error::other("the waiting thread died"))?
            }
        },
        None => exit_rx
            .recv()
            .map_err(|_| std::io::Error::other("the waiting thread died"))?,
    };
    lock(&RUNNING).retain(|&p| p != pid);
    let stopped = {
        let mut s = lock(&STOPPED);
        let was = s.contains(&pid);
        s.retain(|&p| p != pid);
        was
    };
    // Background processes may keep the pipes open after the shell
    // exits: wait a little for the rest of the output, not forever.
    let grace = Instant::now() + Duration::from_millis(500);
    for _ in 0..readers {
        let left = grace.saturating_duration_since(Instant::now());
        if done_rx.recv_timeout(left).is_err() {
            break;
        }
    }
    let status = status?;
    let (out, err) = (
        std::mem::take(&mut *lock(&out)),
        std::mem::take(&mut *lock(&err)),
    );
    let (out, err): (Capture, Capture) = (out, err);
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
