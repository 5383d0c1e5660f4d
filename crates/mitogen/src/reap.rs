//! [`Reaper`]: child processes whose link has closed, waited for and, if
//! they linger, terminated.
//!
//! A child normally exits within milliseconds of its link closing (it sees
//! end of file). One that does not — stuck, stopped, or ignoring its link —
//! gets SIGTERM after [`TERM_AFTER`] and SIGKILL after [`KILL_AFTER`]; no
//! zombie is left behind. The broker runs a pass every few milliseconds
//! while the list is not empty, and a final bounded loop at exit.

use crate::broker::lock;
use crate::events::{ChildExit, Signal};
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Grace before a child whose link closed is sent SIGTERM.
pub(crate) const TERM_AFTER: Duration = Duration::from_secs(1);
/// Grace before it is sent SIGKILL.
pub(crate) const KILL_AFTER: Duration = Duration::from_secs(2);

struct Child {
    pid: i32,
    name: String,
    since: Instant,
    termed: bool,
}

/// Processes to reap.
#[derive(Default)]
pub(crate) struct Reaper {
    children: Mutex<Vec<Child>>,
}

impl Reaper {
    /// Starts watching `pid` (whose link just closed).
    pub(crate) fn add(&self, pid: i32, name: &str) {
        lock(&self.children).push(Child {
            pid,
            name: name.to_string(),
            since: Instant::now(),
            termed: false,
        });
    }

    /// `true` when nothing is left to reap.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.children).is_empty()
    }

    /// One non-blocking pass; returns `true` while children remain. Each
    /// child reaped is announced on `exited` (with no lock held).
    pub(crate) fn pass(&self, exited: &Signal<ChildExit>) -> bool {
        let mut reaped = Vec::new();
        let mut list = lock(&self.children);
        list.retain_mut(|c| {
            let mut status = 0;
            // SAFETY: waitpid on a child pid we started; WNOHANG never blocks.
            let got = unsafe { libc::waitpid(c.pid, &mut status, libc::WNOHANG) };
            if got == c.pid || got < 0 {
                tracing::debug!(
                    "mitogen: reaped {} (pid {}), status {status}",
                    c.name,
                    c.pid
                );
                if got == c.pid {
                    reaped.push(ChildExit {
                        pid: c.pid,
                        name: c.name.clone(),
                        status: std::process::ExitStatus::from_raw(status),
                    });
                }
                return false;
            }
            let age = c.since.elapsed();
            if age >= KILL_AFTER {
                let _ = crate::child::kill_pid(c.pid, libc::SIGKILL);
            } else if age >= TERM_AFTER && !c.termed {
                c.termed = true;
                tracing::warn!(
                    "mitogen: {} (pid {}) still alive after its link closed: SIGTERM",
                    c.name,
                    c.pid
                );
                let _ = crate::child::kill_pid(c.pid, libc::SIGTERM);
            }
            true
        });
        let more = !list.is_empty();
        drop(list);
        for r in &reaped {
            exited.fire(r);
        }
        more
    }

    /// Reaps what is left, escalating on schedule; bounded by
    /// [`KILL_AFTER`] plus a second.
    pub(crate) fn finish(&self, exited: &Signal<ChildExit>) {
        let start = Instant::now();
        while self.pass(exited) && start.elapsed() < KILL_AFTER + Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
