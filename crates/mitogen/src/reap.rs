//! [`Reaper`]: child processes whose link has closed, waited for and, if
//! they linger, terminated.
//!
//! A child normally exits within milliseconds of its link closing (it sees
//! end of file). One that does not — stuck, stopped, or ignoring its link —
//! gets SIGTERM after [`TERM_AFTER`] and SIGKILL after [`KILL_AFTER`]; no
//! zombie is left behind. The broker runs a pass every few milliseconds
//! while the list is not empty, and a final bounded loop at exit.
//!
//! Signals and waits go through [`ChildProc`] (a pidfd where the kernel
//! has one), so a child that is already reaped is never signalled and a
//! wait never collects another child.

use crate::child::ChildProc;
use crate::events::{ChildExit, Signal};
use crate::sync::lock;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Grace before a child whose link closed is sent SIGTERM.
pub(crate) const TERM_AFTER: Duration = Duration::from_secs(1);
/// Grace before it is sent SIGKILL.
pub(crate) const KILL_AFTER: Duration = Duration::from_secs(2);

struct Child {
    proc: ChildProc,
    name: String,
    since: Instant,
    termed: bool,
    /// Detached: waited for while this process runs, never signalled,
    /// never waited on at exit.
    detached: bool,
}

/// Processes to reap.
#[derive(Default)]
pub(crate) struct Reaper {
    children: Mutex<Vec<Child>>,
}

impl Reaper {
    /// Starts watching `proc` (whose link just closed).
    pub(crate) fn add(&self, proc: ChildProc, name: &str) {
        self.push(proc, name, false);
    }

    /// Starts watching a detached child: collected if it exits while this
    /// process runs, never signalled, and not waited for at exit.
    pub(crate) fn add_detached(&self, proc: ChildProc, name: &str) {
        self.push(proc, name, true);
    }

    fn push(&self, proc: ChildProc, name: &str, detached: bool) {
        lock(&self.children).push(Child {
            proc,
            name: name.to_string(),
            since: Instant::now(),
            termed: false,
            detached,
        });
    }

    /// `true` when nothing is left to reap but detached children.
    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.children).iter().all(|c| c.detached)
    }

    /// One non-blocking pass; returns `true` while children remain that
    /// are not detached (detached ones are only collected). Each
    /// child reaped is announced on `exited` (with no lock held).
    pub(crate) fn pass(&self, exited: &Signal<ChildExit>) -> bool {
        let mut reaped = Vec::new();
        let mut list = lock(&self.children);
        list.retain_mut(|c| {
            let pid = c.proc.pid();
            match c.proc.try_wait() {
                Ok(Some(status)) => {
                    tracing::debug!("mitogen: reaped {} (pid {pid}), {status}", c.name);
                    reaped.push(ChildExit {
                        pid,
                        name: c.name.clone(),
                        status,
                    });
                    return false;
                }
                Err(e) => {
                    tracing::debug!("mitogen: {} (pid {pid}) reaped elsewhere: {e}", c.name);
                    return false;
                }
                Ok(None) => {}
            }
            if c.detached {
                return true;
            }
            let age = c.since.elapsed();
            if age >= KILL_AFTER {
                let _ = c.proc.signal(libc::SIGKILL);
            } else if age >= TERM_AFTER && !c.termed {
                c.termed = true;
                tracing::warn!(
                    "mitogen: {} (pid {pid}) still alive after its link closed: SIGTERM",
                    c.name
                );
                let _ = c.proc.signal(libc::SIGTERM);
            }
            true
        });
        let more = list.iter().any(|c| !c.detached);
        drop(list);
        for r in &reaped {
            exited.fire(r);
        }
        more
    }

    /// `true` while a detached child is still to be collected.
    pub(crate) fn has_detached(&self) -> bool {
        lock(&self.children).iter().any(|c| c.detached)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::spawn_sh as spawn;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::Arc;

    /// Runs passes until the list is empty (bounded), collecting exits.
    fn drain(r: &Reaper) -> Vec<ChildExit> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let exited = Signal::<ChildExit>::default();
        let s2 = seen.clone();
        let _sub = exited.subscribe(move |e: &ChildExit| lock(&s2).push(e.clone()));
        r.finish(&exited);
        assert!(r.is_empty(), "children left after finish");
        let v = std::mem::take(&mut *lock(&seen));
        v
    }

    /// A child the reaper collected is never signalled afterwards, through
    /// the reaper's handle or another clone of it (the stream's).
    #[test]
    fn reaped_child_is_not_signalled_again() {
        for proc in [
            ChildProc::adopt(spawn("exit 4")),
            ChildProc::adopt_without_pidfd(spawn("exit 4")),
        ] {
            let r = Reaper::default();
            r.add(proc.clone(), "quick");
            let exits = drain(&r);
            assert_eq!(exits.len(), 1, "exit not announced");
            assert_eq!(exits[0].status.code(), Some(4));
            assert!(
                proc.signal(libc::SIGKILL).is_err(),
                "signalled a reaped pid"
            );
            assert_eq!(crate::child::signals_sent_to(proc.pid()), Vec::<i32>::new());
        }
    }

    /// A child that ignores its closed link gets SIGTERM, and is reaped.
    #[test]
    fn lingering_child_is_terminated_and_reaped() {
        let proc = ChildProc::adopt(spawn("exec sleep 30"));
        let r = Reaper::default();
        r.add(proc.clone(), "stuck");
        let exits = drain(&r);
        assert_eq!(exits.len(), 1, "exit not announced");
        assert_eq!(exits[0].status.signal(), Some(libc::SIGTERM));
        assert_eq!(
            crate::child::signals_sent_to(proc.pid()),
            vec![libc::SIGTERM]
        );
    }
}
