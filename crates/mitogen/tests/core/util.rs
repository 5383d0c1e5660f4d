//! Shared helpers: the per-test watchdog, process inspection through
//! `/proc`, temporary directories, the agent cache's directories and the
//! helper example program.

#[macro_use]
#[path = "../common/harness.rs"]
mod harness;
pub use harness::{bounded, example, router, trial, wait_for, TestResult};

use libtest_mimic::Failed;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Default bound on one test: generous, only there to turn a hang into a
/// failure instead of a stuck run.
pub const TEST_LIMIT: Duration = Duration::from_secs(60);

/// The pid of the context it runs in.
#[mitogen::remote]
pub fn pid() -> u32 {
    std::process::id()
}

/// Sleeps `ms` milliseconds in the context, then returns `ms`.
#[mitogen::remote]
pub fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Bound for single waits inside tests (calls, shutdowns).
pub const WAIT: Duration = Duration::from_secs(20);

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`, …), or `None` when
/// the process does not exist (any more).
pub fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}

/// Field `n` (1-based, as in proc(5)) of a `/proc/.../stat` text.
pub fn stat_field(stat: &str, n: usize) -> Option<String> {
    // Fields 1 and 2 (pid, comm) come before the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after
        .split_whitespace()
        .nth(n.checked_sub(3)?)
        .map(str::to_string)
}

/// Waits until `pid` has exited: missing from `/proc`, or (when
/// `zombie_ok`, for processes that are not our children and whose reaping
/// is up to init) a zombie. Returns how long it took.
pub fn wait_exited(pid: u32, limit: Duration, zombie_ok: bool) -> Result<Duration, Failed> {
    let start = Instant::now();
    loop {
        match proc_state(pid) {
            None => return Ok(start.elapsed()),
            Some('Z') | Some('X') if zombie_ok => return Ok(start.elapsed()),
            Some(s) => {
                if start.elapsed() > limit {
                    return Err(
                        format!("pid {pid} still present after {limit:?} (state {s})").into(),
                    );
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [`wait_exited`], and on failure SIGKILLs `pid` so that a failing test
/// leaves no stray process behind.
pub fn wait_exited_or_kill(pid: u32, limit: Duration, zombie_ok: bool) -> Result<Duration, Failed> {
    wait_exited(pid, limit, zombie_ok).inspect_err(|_| {
        let _ = kill9(pid);
    })
}

/// SIGKILLs `pid`.
pub fn kill9(pid: u32) -> TestResult {
    // SAFETY: sending a signal; no memory is involved.
    let r = unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    ensure!(r == 0, "kill -9 {pid}: {}", std::io::Error::last_os_error());
    Ok(())
}

/// This process's effective uid.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() }
}

/// Hex SHA-256 of a file: `sha256sum` when there is one (this crate's
/// `sha2` is unoptimised in test builds, and the test binary is large).
pub fn sha256_file(path: &Path) -> Result<String, Failed> {
    if let Ok(out) = std::process::Command::new("sha256sum").arg(path).output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(h) = text.split_whitespace().next().filter(|h| is_sha_name(h)) {
            if out.status.success() {
                return Ok(h.to_string());
            }
        }
    }
    use sha2::Digest;
    let data = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(sha2::Sha256::digest(&data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// `true` for a name made of 64 lowercase hex digits.
pub fn is_sha_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// The agent cache directories, in the order the first stage tries them,
/// for the given environment lookup.
pub fn cache_dirs(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let set = |k: &str| env(k).filter(|v| !v.is_empty());
    let user = set("LOGNAME")
        .or_else(|| set("USER"))
        .unwrap_or_else(|| euid().to_string());
    let mut dirs = Vec::new();
    if let Some(x) = set("XDG_RUNTIME_DIR") {
        dirs.push(Path::new(&x).join("mitogen"));
    }
    if let Some(h) = set("HOME") {
        dirs.push(Path::new(&h).join(".cache/mitogen"));
    }
    dirs.push(PathBuf::from(format!("/dev/shm/mitogen-{user}")));
    dirs.push(PathBuf::from(format!("/tmp/mitogen-{user}")));
    dirs
}

/// A directory removed (with its contents) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir, Failed> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "mitogen-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
