//! Connects in flight, and how a broker's shutdown ends them.
//!
//! A connect runs on the caller's thread — spawn, first stage, upload,
//! handshake — for up to its `connect_timeout`, and the broker learns of
//! the new context only when its stream is attached at the very end. Left
//! alone, a shutdown would not stop it: the connect would go on until the
//! child answered or the timeout, then attach its stream to a stopped
//! broker (calls would still be answered, by direct reads, on a router
//! that had shut down) and its process would never be reaped.
//!
//! So every connect registers a [`Flight`] with its router's [`Connects`],
//! which takes part in the broker's shutdown:
//!
//! - when shutdown begins, every flight is marked cancelled and its thread
//!   woken through an eventfd that the handshake loops (`bootstrap`,
//!   `tty::converse`) poll beside their descriptors. The connecting thread
//!   itself then kills and reaps its process (`kill_and_reap`) and returns
//!   the error: only that thread knows when the pid has been reaped, so no
//!   signal can ever reach a recycled pid;
//! - the broker stays alive while flights remain (bounded by its shutdown
//!   grace), so `Broker::join` returns after their processes are gone;
//! - a connect begun once shutdown was requested fails at once, before it
//!   starts anything;
//! - the last step, attaching the stream, happens under the registry's
//!   lock after a final check ([`Flight::commit`]): a connect either joins
//!   the router before shutdown begins — and is then an ordinary child,
//!   which the shutdown disconnects — or fails and reaps its process.
//!
//! The error is a [`StreamError`]: the connection could not be made, which
//! is what that kind means for a connect; no deadline passed (it is not a
//! `TimeoutError`), and no message was lost (not a `ChannelError`).

use crate::broker::{Broker, Loop, Participant};
use crate::error::{Error, Result, StreamError};
use crate::process::TrackedFd;
use crate::sync::lock;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A router's connects in flight (its registry is made, and joins the
/// broker's shutdown, on the first connect).
#[derive(Default)]
pub(crate) struct Connects {
    registry: OnceLock<Arc<Registry>>,
}

struct Registry {
    broker: Broker,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Shutdown has begun: no new flight, no commit.
    closed: bool,
    next: u64,
    flights: HashMap<u64, Arc<Entry>>,
}

struct Entry {
    cancelled: AtomicBool,
    /// Readable once cancelled (an eventfd that is never read); on the
    /// runtime list, so a forked child closes its copy.
    wake: TrackedFd,
    /// The transport's process, once started (0 before).
    pid: AtomicI32,
}

impl Entry {
    fn cancel(&self) {
        self.cancelled.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writing 8 bytes from a live u64 to our own eventfd.
        let _ = unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
    }
}

impl Registry {
    fn cancel_all(&self) -> Vec<i32> {
        let mut st = lock(&self.state);
        st.closed = true;
        st.flights
            .values()
            .map(|e| {
                e.cancel();
                e.pid.load(Ordering::Acquire)
            })
            .collect()
    }
}

impl Participant for Registry {
    fn on_shutdown(self: Arc<Self>, _lp: &mut Loop) {
        let n = self.cancel_all().len();
        if n > 0 {
            tracing::debug!("mitogen: shutdown cancels {n} connect(s) in flight");
        }
    }

    fn keep_alive(&self) -> bool {
        !lock(&self.state).flights.is_empty()
    }

    fn on_exit(self: Arc<Self>, _lp: &mut Loop) {
        let pids = self.cancel_all();
        if !pids.is_empty() {
            tracing::warn!(
                "mitogen: the broker stops with connects still ending (processes {pids:?}); \
                 their threads kill and reap them"
            );
        }
    }
}

/// One connect under way: its deadline, and its cancellation by shutdown.
/// Dropping it ends its registration.
pub(crate) struct Flight {
    registry: Arc<Registry>,
    id: u64,
    entry: Arc<Entry>,
    deadline: Instant,
    timeout: Duration,
}

impl std::fmt::Debug for Flight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flight")
            .field("id", &self.id)
            .field("pid", &self.entry.pid.load(Ordering::Relaxed))
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The error of a connect refused because its broker is shutting down.
fn refused() -> Error {
    StreamError::new("cannot start a context: the broker is shutting down").into()
}

impl Flight {
    /// Registers a connect in `connects` (a router's, on `broker`), to be
    /// finished within `timeout` from now. Fails at once when the broker is
    /// shutting down.
    pub(crate) fn begin(broker: &Broker, connects: &Connects, timeout: Duration) -> Result<Flight> {
        let registry = connects
            .registry
            .get_or_init(|| {
                let r = Arc::new(Registry {
                    broker: broker.handle(),
                    state: Mutex::default(),
                });
                broker.add_participant(r.clone());
                r
            })
            .clone();
        let deadline = Instant::now() + timeout;
        let mut st = lock(&registry.state);
        // The flag is checked after the registry joined the broker: a
        // shutdown requested later reaches this flight through on_shutdown.
        if st.closed || registry.broker.is_shutting_down() || registry.broker.is_stopped() {
            return Err(refused());
        }
        // SAFETY: eventfd with flags only; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(StreamError::new(format!("cannot create an eventfd: {e}")).into());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let wake = TrackedFd::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let entry = Arc::new(Entry {
            cancelled: AtomicBool::new(false),
            wake,
            pid: AtomicI32::new(0),
        });
        st.next += 1;
        let id = st.next;
        st.flights.insert(id, entry.clone());
        drop(st);
        Ok(Flight {
            registry,
            id,
            entry,
            deadline,
            timeout,
        })
    }

    /// Records the transport's process (for the broker's log at exit).
    pub(crate) fn set_pid(&self, pid: i32) {
        self.entry.pid.store(pid, Ordering::Release);
    }

    /// When the connect must be done.
    pub(crate) fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The connect timeout this flight was given.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A descriptor that becomes readable when shutdown cancels this
    /// connect: poll it beside the transport's.
    pub(crate) fn wake_fd(&self) -> RawFd {
        self.entry.wake.as_raw_fd()
    }

    /// `true` once shutdown has cancelled this connect.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.entry.cancelled.load(Ordering::Acquire)
    }

    /// The error of a connect to `who` ended by shutdown.
    pub(crate) fn shut_down(&self, who: &str) -> Error {
        StreamError::new(format!(
            "connecting {who} failed: the broker shut down during the connect"
        ))
        .into()
    }

    /// `Err` (see [`Flight::shut_down`]) once cancelled.
    pub(crate) fn check(&self, who: &str) -> Result<()> {
        if self.is_cancelled() {
            return Err(self.shut_down(who));
        }
        Ok(())
    }

    /// Runs `attach` — the step that hands the new context to the router —
    /// unless shutdown has begun, atomically with respect to shutdown's
    /// cancelling: the caller must then end its process itself.
    pub(crate) fn commit<T>(&self, who: &str, attach: impl FnOnce() -> T) -> Result<T> {
        let mut st = lock(&self.registry.state);
        if st.closed || self.is_cancelled() || self.registry.broker.is_shutting_down() {
            return Err(self.shut_down(who));
        }
        let r = attach();
        st.flights.remove(&self.id);
        Ok(r)
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        lock(&self.registry.state).flights.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A broker and a connect registry on it, as a router holds them.
    struct Core {
        broker: Broker,
        connects: Connects,
    }

    fn core() -> Core {
        Core {
            broker: Broker::new_detached().expect("broker"),
            connects: Connects::default(),
        }
    }

    #[test]
    fn shutdown_cancels_flights_and_wakes_them() {
        let core = core();
        let f =
            Flight::begin(&core.broker, &core.connects, Duration::from_secs(30)).expect("begin");
        assert!(!f.is_cancelled());
        assert!(f.check("x").is_ok());
        core.broker.shutdown();
        let mut p = libc::pollfd {
            fd: f.wake_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut p, 1, 5000) };
        assert_eq!(n, 1, "not woken");
        assert!(f.is_cancelled());
        let e = f.check("ctx (local)").expect_err("cancelled");
        assert!(e.to_string().contains("shut down"), "{e}");
        assert!(matches!(e, Error::Stream(_)));
        let mut ran = false;
        assert!(f.commit("x", || ran = true).is_err());
        assert!(!ran, "attached after shutdown");
        // The broker waits for the flight to end.
        assert!(core.broker.keep_alive());
        drop(f);
        core.broker.join();
        assert!(core.broker.is_stopped());
    }

    #[test]
    fn no_flight_begins_once_shutdown_was_requested() {
        let core = core();
        core.broker.shutdown();
        let e = Flight::begin(&core.broker, &core.connects, Duration::from_secs(1))
            .expect_err("refused");
        assert!(e.to_string().contains("shutting down"), "{e}");
        core.broker.join();
        assert!(Flight::begin(&core.broker, &core.connects, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_committed_flight_no_longer_holds_the_broker() {
        let core = core();
        let f = Flight::begin(&core.broker, &core.connects, Duration::from_secs(1)).expect("begin");
        assert_eq!(f.commit("x", || 7).expect("commit"), 7);
        assert!(!core.broker.keep_alive());
        core.broker.shutdown();
        core.broker.join();
        assert!(!f.is_cancelled());
    }
}
