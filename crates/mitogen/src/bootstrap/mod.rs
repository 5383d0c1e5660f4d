//! Self-replication: how a new context comes to run a copy of this binary.
//!
//! 1. The parent starts a transport command (`sh -c`, later `ssh host`,
//!    `sudo`, …) running the first stage ([`stage`]) on the target.
//! 2. The stage execs the cached agent, or asks for it and the parent sends
//!    the exact bytes of its own executable ([`AgentBinary`]).
//! 3. The agent (this program, entered through `mitogen::main`) writes a
//!    [`Hello`] frame; the parent checks the protocol version and answers
//!    with the [`Config`] frame; the agent applies it and serves (`agent.rs`).
//!
//! Everything here runs on the connecting thread with blocking I/O bounded
//! by the connect deadline; the broker only sees the stream once it is up.
//! Every wait also polls the connect's cancellation descriptor (a
//! [`Bounds`], which `connect::inflight` provides: this module knows
//! nothing of `connect`, the arrow points one way), so a broker's shutdown
//! ends it at once. A
//! deadline that passes is a [`TimeoutError`] naming the method and the
//! target, like every other timeout of the runtime.

pub(crate) mod runtime;
pub(crate) mod stage;

use crate::child::ChildProc;
use crate::error::{Error, Result, StreamError, TargetError, TargetErrorKind, TimeoutError};
use crate::frame::{handle, Encoding, Header, HEADER_LEN, PROTOCOL_VERSION};
use crate::link::FrameReader;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// The limits a bootstrap runs within: a deadline, and a cancellation
/// that a broker's shutdown triggers (implemented by `connect`'s flights).
pub(crate) trait Bounds {
    /// Fails once the connect has been cancelled; `who` names it.
    fn check(&self, who: &str) -> Result<()>;
    /// When the connect gives up.
    fn deadline(&self) -> Instant;
    /// The whole budget, for messages.
    fn timeout(&self) -> Duration;
    /// Readable once cancelled: polled beside the transport's descriptors.
    fn wake_fd(&self) -> RawFd;
}

/// First frame an agent writes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Hello {
    pub(crate) protocol: u32,
    pub(crate) version: String,
    pub(crate) pid: u32,
    /// The name the agent was executed under: its SHA-256 when it came
    /// from the cache (empty when unknown, e.g. without `/proc`).
    #[serde(default)]
    pub(crate) binary: String,
}

/// What a new context needs to know about itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Config {
    pub(crate) context_id: u32,
    pub(crate) parent_ids: Vec<u32>,
    pub(crate) name: String,
    /// The parent's own name, for the child's first log line.
    #[serde(default)]
    pub(crate) parent_name: String,
    pub(crate) remote_name: String,
    pub(crate) debug: bool,
    pub(crate) log_level: u8,
    pub(crate) profiling: bool,
    pub(crate) unidirectional: bool,
    /// The parent's flow limits, inherited.
    pub(crate) limits: crate::router::FlowLimits,
    pub(crate) binary_sha: String,
    pub(crate) binary_size: u64,
    /// Size of the worker pool for concurrent calls.
    #[serde(default)]
    pub(crate) pool: crate::pool::PoolSize,
}

/// An executable to run as the agent, named by its SHA-256.
#[derive(Clone, Debug)]
pub(crate) struct AgentBinary {
    pub(crate) path: PathBuf,
    pub(crate) sha: String,
    pub(crate) size: u64,
}

impl AgentBinary {
    /// Hashes the file at `path`.
    pub(crate) fn from_path(path: &Path) -> Result<AgentBinary> {
        let err = |e: std::io::Error| {
            StreamError::new(format!("cannot read agent binary {}: {e}", path.display()))
        };
        let mut f = std::fs::File::open(path).map_err(err)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(err)?;
            if n == 0 {
                break;
            }
            size += n as u64;
            h.update(&buf[..n]);
        }
        let sha = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok(AgentBinary {
            path: path.to_path_buf(),
            sha,
            size,
        })
    }

    /// This process's own executable. Its hash is computed once (or taken
    /// from the config, in an agent: it was started under that name).
    pub(crate) fn current() -> Result<Arc<AgentBinary>> {
        if SELF_BINARY.get().is_none() {
            // Someone needs it now: the prewarm may not idle any more.
            PREWARM.hurry();
        }
        Self::hash_current()
    }

    fn hash_current() -> Result<Arc<AgentBinary>> {
        // Another thread (the start-up prewarm) may be hashing: it is
        // waited for rather than hashed twice.
        crate::sync::once_across_fork(&SELF_BINARY, &HASHING, || {
            // Normally /proc/self/exe; the agent file itself when this
            // process runs under a loader brought along (see `runtime`).
            Ok(Arc::new(AgentBinary::from_path(&runtime::own_file().0)?))
        })
    }

    /// Records the agent's own hash, known from its config.
    pub(crate) fn set_current(sha: String, size: u64) {
        if sha.is_empty() {
            return;
        }
        let _ = SELF_BINARY.set(Arc::new(AgentBinary {
            path: runtime::own_file().0,
            sha,
            size,
        }));
    }
}

static SELF_BINARY: OnceLock<Arc<AgentBinary>> = OnceLock::new();
static HASHING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This executable's description if already hashed (never blocks).
pub(crate) fn known_current() -> Option<Arc<AgentBinary>> {
    SELF_BINARY.get().cloned()
}

/// Starts hashing this executable in the background, so the first
/// connection does not pay for it.
///
/// At idle priority (`SCHED_IDLE`) until someone needs the hash: a program
/// that connects nothing (`mitogen run --master`, which attaches to a warm
/// master) or that is busy with its own work must not lose a CPU to it
/// for ~10 ms. A connect that needs the hash raises the thread back to
/// normal priority first, so it never waits on a starved hasher.
pub(crate) fn prewarm() {
    if SELF_BINARY.get().is_none() {
        let _ = std::thread::Builder::new()
            .name("mitogen-hash".into())
            .spawn(|| {
                PREWARM.idle();
                drop(AgentBinary::hash_current());
                PREWARM.done();
            });
    }
}

static PREWARM: IdleWork = IdleWork::new();

/// A thread that works at idle priority until [`IdleWork::hurry`] is
/// called, from then on at normal priority.
struct IdleWork(std::sync::Mutex<IdleState>);

struct IdleState {
    /// The worker's thread id while it runs at idle priority.
    idle: Option<libc::pid_t>,
    /// Hurried: no more idling.
    hurried: bool,
}

impl IdleWork {
    const fn new() -> IdleWork {
        IdleWork(std::sync::Mutex::new(IdleState {
            idle: None,
            hurried: false,
        }))
    }

    /// The calling thread goes to idle priority, unless already hurried.
    fn idle(&self) {
        let mut s = crate::sync::lock(&self.0);
        if s.hurried {
            return;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        if set_policy(tid, libc::SCHED_IDLE) {
            s.idle = Some(tid);
        }
    }

    /// The worker is back to normal priority, now and for good.
    fn hurry(&self) {
        let mut s = crate::sync::lock(&self.0);
        s.hurried = true;
        if let Some(tid) = s.idle.take() {
            if !set_policy(tid, libc::SCHED_OTHER) {
                tracing::debug!("mitogen: the hashing thread keeps its idle priority");
            }
        }
    }

    /// The worker ends (its id may be reused).
    fn done(&self) {
        crate::sync::lock(&self.0).idle = None;
    }
}

/// Sets thread `tid`'s scheduling policy (priority 0); `false` if refused.
fn set_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
    // The system call itself: musl's wrapper refuses (ENOSYS), since the
    // kernel's call sets one thread's policy, not a process's.
    // SAFETY: sched_param is plain integers (musl's has more fields than
    // glibc's); all zero is priority 0. Then a plain system call on a
    // thread of this process, with a valid parameter block.
    unsafe {
        let p: libc::sched_param = std::mem::zeroed();
        libc::syscall(libc::SYS_sched_setscheduler, tid, policy, &p) == 0
    }
}

/// The parent's ends of a freshly started transport.
pub(crate) struct Spawned {
    /// Reads the target's stdout (and, for a socket, also writes).
    pub(crate) rfd: OwnedFd,
    /// Writes the target's stdin, when it is not `rfd`.
    pub(crate) wfd: Option<OwnedFd>,
    /// The target's stderr, collected for error messages.
    pub(crate) stderr: Option<OwnedFd>,
    /// The transport process.
    pub(crate) child: ChildProc,
}

impl Spawned {
    fn w(&self) -> RawFd {
        self.wfd.as_ref().unwrap_or(&self.rfd).as_raw_fd()
    }
}

/// Result of a successful bootstrap.
pub(crate) struct Booted {
    pub(crate) hello: Hello,
    pub(crate) reader: FrameReader,
    /// Bytes the agent binary upload cost (0 when cached).
    pub(crate) uploaded: u64,
    /// What the transport wrote on its stderr before the agent ran (a
    /// wrapper's words, ssh's debug lines): logged once it is up.
    pub(crate) early_stderr: String,
}

const HINT: &str =
    "is the agent a program whose main() calls mitogen::main (or #[mitogen::main]) first?";

/// Turns what a transport wrote on its stderr (or terminal) and its exit
/// code, when it exited, into a better error than the generic one: a
/// method knows its tool's messages (`Permission denied`, a host key
/// warning, `sudo: unknown user`).
pub(crate) type Classify<'a> = &'a dyn Fn(&str, Option<i32>) -> Option<Error>;

/// Runs the stage protocol and handshake on `sp`, sending `cfg`, by the
/// deadline of `flight`. `who` names the context and how it is reached in
/// messages: `web1 (ssh to root@web1)`.
pub(crate) fn run(
    sp: &Spawned,
    agent: &AgentBinary,
    cfg: &Config,
    flight: &dyn Bounds,
    who: &str,
    classify: Option<Classify<'_>>,
) -> Result<Booted> {
    for fd in [
        Some(sp.rfd.as_raw_fd()),
        sp.wfd.as_ref().map(|f| f.as_raw_fd()),
        sp.stderr.as_ref().map(|f| f.as_raw_fd()),
    ]
    .into_iter()
    .flatten()
    {
        let _ = crate::process::set_nonblocking(fd);
    }
    let mut io = Io {
        sp,
        out: Vec::new(),
        err: Vec::new(),
        flight,
        who,
        stderr_open: true,
        classify,
        exit_code: None,
        started: false,
    };
    let mut uploaded = 0;
    // Stage lines until MITO-EXEC.
    loop {
        let line = io.line()?;
        io.started |= line.starts_with("MITO-");
        if let Some(n) = line.strip_prefix("MITO-NEED ") {
            if n.trim().parse::<u64>().ok() != Some(agent.size) {
                return Err(io.fail(&format!(
                    "the stage asked for {n} bytes, the agent has {}",
                    agent.size
                )));
            }
            io.upload(&agent.path, agent.size, "agent")?;
            uploaded += agent.size;
        } else if let Some(want) = line.strip_prefix("MITO-NEED-FILE ") {
            let mut w = want.split_whitespace();
            let (sha, size) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            let rt = runtime::for_agent(agent);
            let Some(f) = rt.as_deref().and_then(|rt| rt.file(sha)) else {
                return Err(io.fail(&format!("the stage asked for an unknown file {sha}")));
            };
            if size.parse::<u64>().ok() != Some(f.size) {
                return Err(io.fail(&format!(
                    "the stage asked for {size} bytes of {}, it has {}",
                    f.name, f.size
                )));
            }
            io.upload(&f.path, f.size, &f.name)?;
            uploaded += f.size;
        } else if let Some(m) = line.strip_prefix("MITO-ARCH ") {
            let built = runtime::elf_info(&agent.path)
                .map(|e| e.machines.first().copied().unwrap_or("?"))
                .unwrap_or("?");
            return Err(TargetError::new(
                TargetErrorKind::WrongArchitecture,
                format!(
                    "connecting {who} failed: the target's machine is {m}, the agent is built for {built}"
                ),
            )
            .into());
        } else if let Some(p) = line.strip_prefix("MITO-NOLOADER ") {
            return Err(TargetError::new(
                TargetErrorKind::NoLoader,
                format!(
                    "connecting {who} failed: the agent is dynamically linked and the target lacks \
                     its loader {p}; build it static (musl) or run this program itself as the \
                     agent, whose loader is brought along"
                ),
            )
            .into());
        } else if line == "MITO-EXEC" {
            break;
        } else if let Some(why) = line.strip_prefix("MITO-ERR ") {
            return Err(io.fail(why));
        } else {
            tracing::debug!("mitogen: {}: stage output: {line}", cfg.name);
        }
    }
    // The agent's hello frame.
    let hdr = io.want(HEADER_LEN, "the agent's handshake")?;
    let header = match Header::decode(&hdr, 4096) {
        Ok(Some(h)) if h.handle == handle::HANDSHAKE && h.encoding == Encoding::MsgPack => h,
        _ => {
            let shown: String = String::from_utf8_lossy(&io.out).chars().take(120).collect();
            return Err(io.fail(&format!(
                "the agent wrote non-protocol output {shown:?}; {HINT}"
            )));
        }
    };
    let body = io.want(HEADER_LEN + header.length as usize, "the agent's handshake")?;
    let hello: Hello = crate::message::from_msgpack(&body[HEADER_LEN..])
        .map_err(|e| io.fail(&format!("unreadable handshake: {e}")))?;
    if hello.protocol != PROTOCOL_VERSION {
        return Err(io.fail(&format!(
            "protocol mismatch: the agent speaks version {} (mitogen {}), this side {PROTOCOL_VERSION}",
            hello.protocol, hello.version
        )));
    }
    if !hello.binary.is_empty() && hello.binary != agent.sha {
        return Err(io.fail(&format!(
            "the agent runs binary {} but {} was expected",
            hello.binary, agent.sha
        )));
    }
    let mut reader = FrameReader::new(cfg.limits.max_message_size as usize);
    reader.push(&io.out[HEADER_LEN + header.length as usize..]);
    // Our config frame.
    let payload = crate::message::to_msgpack(cfg)?;
    let h = Header {
        encoding: Encoding::MsgPack,
        dst_id: cfg.context_id,
        src_id: cfg.parent_ids.first().copied().unwrap_or(0),
        auth_id: cfg.parent_ids.first().copied().unwrap_or(0),
        handle: handle::HANDSHAKE,
        reply_to: 0,
        length: payload.len() as u32,
        ..Header::default()
    };
    let mut frame = h.encode().to_vec();
    frame.extend_from_slice(&payload);
    io.write_all(&frame)?;
    Ok(Booted {
        hello,
        reader,
        uploaded,
        early_stderr: String::from_utf8_lossy(&io.err).into_owned(),
    })
}

struct Io<'a> {
    sp: &'a Spawned,
    out: Vec<u8>,
    err: Vec<u8>,
    flight: &'a dyn Bounds,
    who: &'a str,
    stderr_open: bool,
    classify: Option<Classify<'a>>,
    exit_code: Option<i32>,
    /// The stage has spoken: the transport itself worked.
    started: bool,
}

impl Io<'_> {
    fn stderr_text(&self) -> String {
        let t = String::from_utf8_lossy(&self.err);
        let t = t.trim();
        if t.is_empty() {
            String::new()
        } else {
            format!(" (its stderr: {t:?})")
        }
    }

    /// The method's own reading of its tool's output, before the stage ran.
    fn classified(&mut self) -> Option<Error> {
        self.drain_stderr();
        match (self.classify, self.started) {
            (Some(classify), false) => {
                classify(&String::from_utf8_lossy(&self.err), self.exit_code)
            }
            _ => None,
        }
    }

    fn fail(&mut self, why: &str) -> Error {
        if let Some(e) = self.classified() {
            return e;
        }
        StreamError::new(format!(
            "connecting {} failed: {why}{}",
            self.who,
            self.stderr_text()
        ))
        .into()
    }

    /// The deadline passed while waiting for `what`.
    fn timed_out(&mut self, what: &str) -> Error {
        if let Some(e) = self.classified() {
            return e;
        }
        TimeoutError::new(
            format!(
                "connecting {} while waiting for {what}; {HINT}{}",
                self.who,
                self.stderr_text()
            ),
            self.flight.timeout(),
        )
        .into()
    }

    /// Reads what stderr has now; notes its end of file.
    fn drain_stderr(&mut self) {
        let Some(e) = &self.sp.stderr else { return };
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            // SAFETY: reading into a stack buffer.
            let n = unsafe { libc::read(e.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                self.stderr_open = false;
            }
            if n < 0 {
                // EIO on a PTY master: the terminal's last user is gone.
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::Interrupted
                {
                    self.stderr_open = false;
                }
            }
            if n <= 0 {
                break;
            }
            self.err.extend_from_slice(&buf[..n as usize]);
        }
    }

    /// Waits until `fd` is ready for `events`, the deadline passes or
    /// shutdown cancels the connect, collecting stderr meanwhile.
    fn wait(&mut self, fd: RawFd, events: libc::c_short, what: &str) -> Result<()> {
        loop {
            self.flight.check(self.who)?;
            let left = self
                .flight
                .deadline()
                .saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.timed_out(what));
            }
            let mut fds = vec![
                libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                },
                libc::pollfd {
                    fd: self.flight.wake_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            if let (Some(e), true) = (&self.sp.stderr, self.stderr_open) {
                fds.push(libc::pollfd {
                    fd: e.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let ms = left.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: `fds` is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms.max(1)) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(self.fail(&format!("poll failed: {e}")));
            }
            if fds.len() > 2 && fds[2].revents != 0 {
                self.drain_stderr();
            }
            if fds[0].revents != 0 {
                return Ok(());
            }
        }
    }

    /// Reads more of stdout; errors at end of file.
    fn fill(&mut self, what: &str) -> Result<()> {
        let fd = self.sp.rfd.as_raw_fd();
        self.wait(fd, libc::POLLIN, what)?;
        let mut buf = [0u8; 16384];
        // SAFETY: reading into a stack buffer.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n == 0 {
            let (status, code) = exit_status(&self.sp.child);
            self.exit_code = code;
            // 126/127: the shell could not execute the command (a missing
            // or unusable agent_command, a binary for another machine), or
            // the dynamic loader could not load the agent's libraries (it
            // exits 127 too, and says so on stderr); otherwise the program
            // ran and did not speak the protocol.
            self.drain_stderr();
            let hint = match code {
                Some(127) if loader_failed(&self.err) => {
                    "the dynamic loader could not load a library the agent needs on the \
                     target (missing or damaged; its message follows)"
                        .to_string()
                }
                Some(126) => "the agent (or its agent_command) could not be executed".to_string(),
                Some(127) => "the agent's command (agent_command) was not found".to_string(),
                // Nothing from the stage: the login shell or the transport
                // failed before it ran; their words are in the stderr part.
                _ if !self.started => {
                    "the first stage never started (see the target's own messages)".to_string()
                }
                _ => HINT.to_string(),
            };
            return Err(self.fail(&format!("the target exited{status} before {what}; {hint}")));
        }
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            ) {
                return Ok(());
            }
            return Err(self.fail(&format!("reading from the target failed: {e}")));
        }
        self.out.extend_from_slice(&buf[..n as usize]);
        Ok(())
    }

    fn line(&mut self) -> Result<String> {
        loop {
            if let Some(i) = self.out.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.out.drain(..=i).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_string());
            }
            if self.out.len() > 64 * 1024 {
                return Err(self.fail("the stage wrote an over-long line"));
            }
            self.fill("the first stage")?;
        }
    }

    /// Returns the first `n` bytes of stdout (left in the buffer).
    fn want(&mut self, n: usize, what: &str) -> Result<Vec<u8>> {
        while self.out.len() < n {
            if self.out.len() >= 2 && self.out[..2] != crate::frame::MAGIC {
                break;
            }
            self.fill(what)?;
        }
        Ok(self.out[..n.min(self.out.len())].to_vec())
    }

    fn write_all(&mut self, mut data: &[u8]) -> Result<()> {
        let fd = self.sp.w();
        while !data.is_empty() {
            // SAFETY: writing from a live slice.
            let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::Interrupted => continue,
                    std::io::ErrorKind::WouldBlock => {
                        self.wait(fd, libc::POLLOUT, "the target to accept data")?;
                        continue;
                    }
                    _ => {
                        // The stage likely failed: its explanation is on stdout.
                        let why = self.line().unwrap_or_else(|e| e.to_string());
                        return Err(
                            self.fail(&format!("sending to the target failed ({e}): {why}"))
                        );
                    }
                }
            }
            data = &data[n as usize..];
        }
        Ok(())
    }

    /// Sends exactly `size` bytes of the file at `path` (the agent, or a
    /// file of its runtime: `what` names it).
    fn upload(&mut self, path: &Path, size: u64, what: &str) -> Result<()> {
        let mut f = std::fs::File::open(path)
            .map_err(|e| self.fail(&format!("cannot read the {what} {}: {e}", path.display())))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut sent = 0u64;
        while sent < size {
            let want = buf.len().min((size - sent) as usize);
            let n = f
                .read(&mut buf[..want])
                .map_err(|e| self.fail(&format!("cannot read the {what}: {e}")))?;
            if n == 0 {
                return Err(self.fail(&format!("the {what} shrank while being sent")));
            }
            self.write_all(&buf[..n])?;
            sent += n as u64;
        }
        tracing::debug!("mitogen: sent the {size}-byte {what} to {}", self.who);
        Ok(())
    }
}

/// Describes how the transport process ended (" with status N"), and its
/// exit code. Waits briefly for it; a transport still running is left to
/// the caller (which kills and reaps it through the same [`ChildProc`], so
/// a pid reaped here is never signalled).
fn exit_status(child: &ChildProc) -> (String, Option<i32>) {
    match child.wait_timeout(Duration::from_millis(100)) {
        Ok(Some(s)) => match (s.code(), s.signal()) {
            (Some(code), _) => (format!(" with status {code}"), Some(code)),
            (None, Some(sig)) => (format!(" on signal {sig}"), None),
            _ => (String::new(), None),
        },
        _ => (String::new(), None),
    }
}

/// Whether a process's stderr is the dynamic loader's refusal to start
/// it (glibc's and musl's words for a library it could not load).
fn loader_failed(stderr: &[u8]) -> bool {
    let t = String::from_utf8_lossy(stderr);
    t.contains("error while loading shared libraries") || t.contains("Error loading shared library")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scheduling policy of thread `tid` of this process (`/proc` field 41).
    fn policy_of(tid: libc::pid_t) -> i32 {
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        let after_name = stat.rsplit_once(") ").unwrap().1;
        after_name.split(' ').nth(41 - 3).unwrap().parse().unwrap()
    }

    #[test]
    fn idle_work_runs_at_idle_priority_until_hurried() {
        let work = Arc::new(IdleWork::new());
        let (tx, rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let w = work.clone();
        let t = std::thread::spawn(move || {
            w.idle();
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            go_rx.recv().unwrap();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(policy_of(tid), libc::SCHED_IDLE, "not idle");
        work.hurry();
        assert_eq!(policy_of(tid), libc::SCHED_OTHER, "not hurried");
        // Once hurried, never idle again.
        let w = work.clone();
        let again = std::thread::spawn(move || {
            w.idle();
            // SAFETY: gettid has no preconditions.
            policy_of(unsafe { libc::gettid() })
        });
        assert_eq!(again.join().unwrap(), libc::SCHED_OTHER);
        go_tx.send(()).unwrap();
        t.join().unwrap();
    }

    /// A transport that dies during the bootstrap is reaped while its
    /// failure is described; the cleanup that follows must not signal
    /// its pid again (by then it may be another process's).
    #[test]
    fn failed_transport_is_not_signalled_after_reaping() {
        let child = ChildProc::adopt(crate::child::spawn_sh("exit 3"));
        let pid = child.pid();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let code = loop {
            let (_, code) = exit_status(&child);
            if code.is_some() || std::time::Instant::now() > deadline {
                break code;
            }
        };
        assert_eq!(code, Some(3), "the transport's status was not read");
        child.kill_and_reap(Duration::from_secs(5));
        assert_eq!(
            crate::child::signals_sent_to(pid),
            Vec::<i32>::new(),
            "a reaped pid was signalled"
        );
    }
}
