//! [`ChildProc`]: a process this runtime started (a transport, a fork),
//! and the only place where the runtime signals or waits for one.
//!
//! Why a type: a pid names a process only until the process is reaped;
//! from then on the kernel may hand the number to any new process. A
//! `kill(pid)` after the reap — a transport whose status the bootstrap
//! already collected, then killed "to be sure" — could reach an unrelated
//! process, and a `waitpid(pid)` could collect another child of ours that
//! was given the number. So:
//!
//! - Right after the child is started (still unreaped: a zombie keeps
//!   its pid reserved) the type opens a **pidfd** (`pidfd_open`, Linux
//!   5.3+). Signals go through `pidfd_send_signal` and waits through
//!   `waitid(P_PIDFD)`: both name that very process, never a number, so
//!   even a child reaped behind our back (a program that calls
//!   `waitpid(-1)` itself, or ignores SIGCHLD) cannot make them reach
//!   another process. Waits with a deadline poll the pidfd, which turns
//!   readable when the process exits.
//! - Without pidfds (`ENOSYS` on older kernels, or a sandbox refusing
//!   the call) it falls back to `kill(pid)` and `waitpid(pid, WNOHANG)`
//!   on that pid only, and keeps a state per child: once the type has
//!   reaped the child (or `waitpid` said it is not our child any more)
//!   it never signals or waits on the number again. The check and the
//!   system call happen under one lock, so a reap cannot slip between
//!   them. Only a reap by someone else, followed by reuse of the number,
//!   can still mislead the fallback; the runtime itself never does that.
//! - There is no `waitpid(-1)` anywhere and no blocking wait: every wait
//!   is a non-blocking poll with a deadline.
//!
//! The pidfd is on the runtime's descriptor list, so a forked context
//! does not keep its parent's children's pidfds.

use crate::process::TrackedFd;
use crate::sync::lock;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Tests read which signals reached which pid.
#[cfg(test)]
static SENT: Mutex<Vec<(i32, i32)>> = Mutex::new(Vec::new());

/// Signals sent to `pid` through this module so far (tests only).
#[cfg(test)]
pub(crate) fn signals_sent_to(pid: i32) -> Vec<i32> {
    lock(&SENT)
        .iter()
        .filter(|(p, _)| *p == pid)
        .map(|(_, s)| *s)
        .collect()
}

/// Where a child stands, as far as this process knows.
#[derive(Clone, Copy, Debug)]
enum State {
    /// Not reaped: the pid (and pidfd) still name it.
    Running,
    /// Reaped here, with this status.
    Exited(ExitStatus),
    /// Reaped elsewhere (`ECHILD`): its status is lost, its pid free.
    Gone,
}

struct Inner {
    pid: i32,
    pidfd: Option<TrackedFd>,
    state: Mutex<State>,
}

/// A child process: its pid, its pidfd when the kernel has them, and
/// whether it was reaped. Clones share all three.
#[derive(Clone)]
pub(crate) struct ChildProc(Arc<Inner>);

impl std::fmt::Debug for ChildProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChildProc(pid {})", self.0.pid)
    }
}

impl ChildProc {
    /// Takes charge of `pid`, a child of this process that nobody has
    /// reaped yet (call it right after the spawn or fork).
    pub(crate) fn adopt(pid: i32) -> ChildProc {
        match pidfd_open(pid) {
            Ok(fd) => ChildProc::with(pid, Some(TrackedFd::new(fd)), State::Running),
            // Already reaped by someone else: nothing to signal or wait.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                ChildProc::with(pid, None, State::Gone)
            }
            Err(e) => {
                if e.raw_os_error() != Some(libc::ENOSYS) {
                    tracing::debug!("mitogen: pidfd_open({pid}): {e}; using the pid");
                }
                ChildProc::with(pid, None, State::Running)
            }
        }
    }

    /// [`ChildProc::adopt`] as on a kernel without pidfds (tests of the
    /// fallback).
    #[cfg(test)]
    pub(crate) fn adopt_without_pidfd(pid: i32) -> ChildProc {
        ChildProc::with(pid, None, State::Running)
    }

    fn with(pid: i32, pidfd: Option<TrackedFd>, state: State) -> ChildProc {
        ChildProc(Arc::new(Inner {
            pid,
            pidfd,
            state: Mutex::new(state),
        }))
    }

    /// The process id (for messages and events; not for signalling).
    pub(crate) fn pid(&self) -> i32 {
        self.0.pid
    }

    /// `true` when signals and waits go through a pidfd.
    #[cfg(test)]
    pub(crate) fn has_pidfd(&self) -> bool {
        self.0.pidfd.is_some()
    }

    /// Sends `sig`, unless the child was already reaped: then it fails
    /// with `ESRCH` and no system call is made.
    pub(crate) fn signal(&self, sig: i32) -> io::Result<()> {
        let state = lock(&self.0.state);
        if !matches!(*state, State::Running) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        #[cfg(test)]
        lock(&SENT).push((self.0.pid, sig));
        let r = match &self.0.pidfd {
            // SAFETY: pidfd_send_signal with a pidfd we own and no siginfo.
            Some(fd) => unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            },
            // SAFETY: kill with integers; the state lock keeps the child
            // unreaped (its pid reserved) until the call returns.
            None => libc::c_long::from(unsafe { libc::kill(self.0.pid, sig) }),
        };
        drop(state);
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends `sig` to the process group this child leads (it was started
    /// with `process_group(0)`), unless the child was already reaped:
    /// then it fails with `ESRCH` and no system call is made. While the
    /// leader is unreaped its pid, and so the group's id, cannot be given
    /// to another process; the state lock keeps it unreaped during the
    /// call. Used by `fakessh` for a tool and a remote command, whose
    /// own children must go with them.
    pub(crate) fn signal_group(&self, sig: i32) -> io::Result<()> {
        let state = lock(&self.0.state);
        if !matches!(*state, State::Running) {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        #[cfg(test)]
        lock(&SENT).push((-self.0.pid, sig));
        // SAFETY: kill with integers; the leader is unreaped (see above).
        let r = unsafe { libc::kill(-self.0.pid, sig) };
        drop(state);
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reaps the child if it has exited, without blocking. `Ok(None)`:
    /// still running. Once reaped, later calls return the same status. An
    /// error (`ECHILD`) means someone else reaped it.
    pub(crate) fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        let mut state = lock(&self.0.state);
        match *state {
            State::Exited(s) => return Ok(Some(s)),
            State::Gone => return Err(io::Error::from_raw_os_error(libc::ECHILD)),
            State::Running => {}
        }
        let got = match &self.0.pidfd {
            Some(fd) => waitid_pidfd(fd.as_raw_fd()),
            None => waitpid_one(self.0.pid),
        };
        match got {
            Ok(Some(s)) => *state = State::Exited(s),
            Err(ref e) if e.raw_os_error() == Some(libc::ECHILD) => *state = State::Gone,
            _ => {}
        }
        got
    }

    /// Waits up to `timeout` for the child to exit and reaps it;
    /// `Ok(None)` when it is still running at the deadline.
    pub(crate) fn wait_timeout(&self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match &self.0.pidfd {
                Some(fd) => {
                    let mut p = libc::pollfd {
                        fd: fd.as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    };
                    let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
                    // SAFETY: poll on one pollfd we own; EINTR just loops.
                    unsafe { libc::poll(&mut p, 1, ms) };
                }
                None => std::thread::sleep(left.min(Duration::from_millis(5))),
            }
        }
    }

    /// Ends a child at once: SIGKILL (if not reaped yet), then reaps it,
    /// waiting at most `timeout` (a process in uninterruptible sleep
    /// outlasts SIGKILL; it is then left, and reported).
    pub(crate) fn kill_and_reap(&self, timeout: Duration) {
        let _ = self.signal(libc::SIGKILL);
        match self.wait_timeout(timeout) {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(
                "mitogen: pid {} survived SIGKILL for {timeout:?}; not reaped",
                self.0.pid
            ),
            Err(e) => tracing::debug!("mitogen: pid {} already reaped: {e}", self.0.pid),
        }
    }
}

/// `pidfd_open(pid, 0)`: a close-on-exec descriptor naming `pid`.
fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: a system call with integer arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `waitid(P_PIDFD, fd, WEXITED | WNOHANG)`.
fn waitid_pidfd(fd: i32) -> io::Result<Option<ExitStatus>> {
    // SAFETY: siginfo_t is plain data; zeroed means "nothing reported".
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waitid fills `info`; WNOHANG never blocks.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                fd as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    // SAFETY: reading the fields waitid set for a SIGCHLD siginfo.
    let (pid, status) = unsafe { (info.si_pid(), info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    let raw = match info.si_code {
        libc::CLD_EXITED => (status & 0xff) << 8,
        libc::CLD_DUMPED => (status & 0x7f) | 0x80,
        _ => status & 0x7f,
    };
    Ok(Some(ExitStatus::from_raw(raw)))
}

/// `waitpid(pid, WNOHANG)`: that pid only, never `-1`.
fn waitpid_one(pid: i32) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on one pid; WNOHANG never blocks.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Starts `sh -c script` and returns its pid, for a test to adopt (the
/// `Child` handle is dropped: the test reaps through [`ChildProc`]).
#[cfg(test)]
#[allow(clippy::zombie_processes)]
pub(crate) fn spawn_sh(script: &str) -> i32 {
    let c = std::process::Command::new("/bin/sh")
        .args(["-c", script])
        .spawn()
        .expect("spawn sh");
    c.id() as i32
}

#[cfg(test)]
mod tests {
    use super::spawn_sh as spawn;
    use super::*;

    const LONG: Duration = Duration::from_secs(10);

    /// Both ways of tracking a child: with a pidfd, and as without one.
    fn both(pid_of: impl Fn() -> i32, check: impl Fn(ChildProc)) {
        check(ChildProc::adopt(pid_of()));
        check(ChildProc::adopt_without_pidfd(pid_of()));
    }

    fn is_zombie(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(false)
    }

    fn wait_zombie(pid: i32) {
        let end = Instant::now() + LONG;
        while !is_zombie(pid) {
            assert!(Instant::now() < end, "pid {pid} never exited");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn pidfds_work_on_this_kernel() {
        let pid = spawn("exit 0");
        wait_zombie(pid);
        // A zombie still has its pidfd: adoption after the exit is fine.
        let c = ChildProc::adopt(pid);
        match pidfd_open(std::process::id() as i32) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
                eprintln!("no pidfd_open on this kernel: the fallback is used")
            }
            _ => assert!(c.has_pidfd(), "pidfd_open works but was not used"),
        }
        assert_eq!(
            c.wait_timeout(LONG).unwrap().and_then(|s| s.code()),
            Some(0)
        );
    }

    #[test]
    fn reaped_child_is_never_signalled() {
        both(
            || spawn("exit 0"),
            |c| {
                let s = c.wait_timeout(LONG).expect("wait").expect("exited");
                assert_eq!(s.code(), Some(0));
                let e = c
                    .signal(libc::SIGKILL)
                    .expect_err("signalled after reaping");
                assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
                assert_eq!(signals_sent_to(c.pid()), Vec::<i32>::new());
                // Reaping again gives the same answer, without a wait.
                assert_eq!(c.try_wait().unwrap().and_then(|s| s.code()), Some(0));
            },
        );
    }

    #[test]
    fn waiting_for_one_child_leaves_another_alone() {
        let pidfd: fn(i32) -> ChildProc = ChildProc::adopt;
        let fallback: fn(i32) -> ChildProc = ChildProc::adopt_without_pidfd;
        for adopt in [pidfd, fallback] {
            let other = adopt(spawn("exit 5"));
            // The other child has exited (a zombie) before the wait.
            wait_zombie(other.pid());
            let one = adopt(spawn("sleep 0.1; exit 3"));
            let s = one.wait_timeout(LONG).expect("wait").expect("exited");
            assert_eq!(s.code(), Some(3));
            assert!(is_zombie(other.pid()), "the other child was reaped");
            let s = other.try_wait().expect("still ours").expect("exited");
            assert_eq!(s.code(), Some(5));
        }
    }

    #[test]
    fn child_reaped_elsewhere_is_gone_not_signalled() {
        both(
            || spawn("exit 0"),
            |c| {
                let mut st = 0;
                // SAFETY: reaping our own child behind the type's back.
                assert_eq!(unsafe { libc::waitpid(c.pid(), &mut st, 0) }, c.pid());
                let e = c.try_wait().expect_err("reaped twice");
                assert_eq!(e.raw_os_error(), Some(libc::ECHILD));
                assert!(c.signal(libc::SIGTERM).is_err());
                assert_eq!(signals_sent_to(c.pid()), Vec::<i32>::new());
            },
        );
    }

    #[test]
    fn kill_and_reap_ends_a_running_child() {
        both(
            || spawn("exec sleep 30"),
            |c| {
                c.kill_and_reap(LONG);
                let s = c.try_wait().expect("ours").expect("reaped");
                assert_eq!(s.signal(), Some(libc::SIGKILL));
                assert_eq!(signals_sent_to(c.pid()), vec![libc::SIGKILL]);
            },
        );
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped through the ChildProc
    fn signal_group_reaches_the_group_until_the_leader_is_reaped() {
        use std::os::unix::process::CommandExt;
        let leader = std::process::Command::new("/bin/sh")
            .args(["-c", "sleep 30 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn sh");
        let c = ChildProc::adopt(leader.id() as i32);
        std::thread::sleep(Duration::from_millis(100));
        c.signal_group(libc::SIGKILL).expect("group signalled");
        let s = c.wait_timeout(LONG).expect("wait").expect("exited");
        assert_eq!(s.signal(), Some(libc::SIGKILL));
        assert_eq!(signals_sent_to(-c.pid()), vec![libc::SIGKILL]);
        // The group (the background sleep too) is gone; once the leader
        // is reaped its group is never signalled again.
        let members = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
                .filter(|st| {
                    st.rsplit_once(") ")
                        .and_then(|(_, r)| r.split_whitespace().nth(2).map(str::to_string))
                        == Some(c.pid().to_string())
                        && !st
                            .rsplit_once(") ")
                            .is_some_and(|(_, r)| r.starts_with('Z'))
                })
                .count()
        };
        let end = Instant::now() + LONG;
        while members() > 0 {
            assert!(Instant::now() < end, "members of the group survived");
            std::thread::sleep(Duration::from_millis(5));
        }
        let e = c
            .signal_group(libc::SIGTERM)
            .expect_err("signalled after reaping");
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(signals_sent_to(-c.pid()), vec![libc::SIGKILL]);
    }

    #[test]
    fn wait_timeout_returns_at_the_deadline() {
        both(
            || spawn("exec sleep 30"),
            |c| {
                let t = Instant::now();
                assert!(c.wait_timeout(Duration::from_millis(50)).unwrap().is_none());
                assert!(t.elapsed() < LONG, "the wait outlived its deadline");
                c.kill_and_reap(LONG);
            },
        );
    }
}
