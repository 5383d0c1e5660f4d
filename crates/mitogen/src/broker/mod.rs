//! [`Broker`]: the one I/O thread of a process.
//!
//! The broker multiplexes every file descriptor the runtime owns (stream
//! sockets and pipes, children's stderr) with mio, and runs three kinds of
//! work on its thread: readiness callbacks of registered sources, deferred
//! closures ([`Broker::defer`]) and timers. User threads never wait for it
//! to send: a sender writes straight to the socket when it can (see
//! `stream.rs`); the broker only finishes writes that would have blocked.
//!
//! Timers ([`Broker::call_later`]) run on the broker thread in the order
//! of their due time (ties: the order they were set), so a timer may touch
//! broker-owned state without locks and must not block. A [`Timer`]
//! handle cancels one; cancelling is a state change on the handle the
//! broker checks just before running it, so a `cancel` that returns
//! `true` means the function never ran and never will. Timers still
//! pending when the broker stops are dropped without running.
//!
//! Shutdown is two-phase, as in the seed: participants (routers) are told to
//! begin a graceful shutdown, the loop keeps running while any of them
//! wants to stay alive (children still draining) for at most
//! [`Broker::shutdown_timeout`], then every participant is told to
//! disconnect whatever is left, and the thread exits.

use crate::error::{CallError, Error, Result, StreamError};
use crate::events::{BrokerEvents, Subscription};
use crate::latch::Latch;
use crate::sync::lock;
use crate::timer::{deadline, Timer, TimerState};
use mio::event::Event;
use mio::{Events, Interest, Poll, Token, Waker};
use std::collections::{BinaryHeap, HashMap};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
/// Default grace given to streams during shutdown (the seed's master value).
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Work run on the broker thread with access to its loop.
pub(crate) type Task = Box<dyn FnOnce(&mut Loop) + Send>;
/// A readiness callback; returns `false` to be removed.
pub(crate) type Source = Box<dyn FnMut(&mut Loop, &Event) -> bool + Send>;

/// Something that lives on a broker and takes part in its shutdown.
pub(crate) trait Participant: Send + Sync {
    /// Shutdown has begun: start closing gracefully.
    fn on_shutdown(self: Arc<Self>, lp: &mut Loop);
    /// `true` while graceful shutdown still has work in flight.
    fn keep_alive(&self) -> bool;
    /// The grace period is over (or never began): drop everything now.
    fn on_exit(self: Arc<Self>, lp: &mut Loop);
}

struct Shared {
    registry: mio::Registry,
    waker: Waker,
    deferred: Mutex<Vec<Task>>,
    /// The broker thread is running (between two polls): it runs what is
    /// deferred before it next sleeps, so [`Broker::defer_while_busy`]
    /// need not wake it.
    busy: AtomicBool,
    /// When the current turn began (µs since `epoch`): a turn that has run
    /// long (a slow task) is not handed more work.
    turn_began: AtomicU64,
    epoch: Instant,
    participants: Mutex<Vec<Arc<dyn Participant>>>,
    shutdown: AtomicBool,
    shutdown_timeout_ms: AtomicU64,
    next_token: AtomicUsize,
    /// Numbers timers set from any thread: the tie-break of equal due
    /// times, so they fire in the order they were set.
    next_timer: AtomicU64,
    thread_id: OnceLock<ThreadId>,
    stopped: Latch<()>,
    join: Mutex<Option<JoinHandle<()>>>,
    events: BrokerEvents,
}

impl Drop for Shared {
    fn drop(&mut self) {
        crate::process::untrack_fd(std::os::fd::AsRawFd::as_raw_fd(&self.registry));
    }
}

/// A turn of the broker older than this is not handed a link's flush
/// ([`Broker::defer_while_busy`]): the sender writes itself.
const LONG_TURN: Duration = Duration::from_millis(1);

/// Handle to a broker thread. Cloning gives another handle to the same
/// thread.
///
/// A broker made by [`Broker::new`] is shut down and joined when the last
/// of its handles is dropped (the seed's `install_watcher`: a program that
/// forgets to call [`Broker::shutdown`] still stops its children); keep
/// it alive as long as routers use it. [`Broker::new_detached`] makes one
/// that runs until [`Broker::shutdown`]. The handle a [`crate::Router`]
/// gives out ([`crate::Router::broker`]) never stops the broker when
/// dropped.
///
/// ```
/// use std::sync::{Arc, Mutex};
///
/// #[mitogen::main]
/// fn main(_router: mitogen::Router) -> mitogen::Result<()> {
///     let broker = mitogen::Broker::new()?;
///     let seen = Arc::new(Mutex::new(Vec::new()));
///     let s = seen.clone();
///     broker.on_exit(move || s.lock().unwrap().push("exit"));
///     let router = mitogen::Router::with_broker(&broker);
///     let child = router.local().connect()?;
///     assert!(child.is_connected());
///     let on_thread = broker.defer_sync(|| "ran on the broker thread")?;
///     assert_eq!(on_thread, "ran on the broker thread");
///     drop(broker); // the last owning handle: shutdown, the child stops
///     assert!(router.broker().is_stopped());
///     assert_eq!(*seen.lock().unwrap(), ["exit"]);
///     Ok(())
/// }
/// ```
pub struct Broker {
    shared: Arc<Shared>,
    owner: Option<Arc<Watcher>>,
}

impl Clone for Broker {
    fn clone(&self) -> Broker {
        Broker {
            shared: self.shared.clone(),
            owner: self.owner.clone(),
        }
    }
}

/// Shuts the broker down when the last owning handle goes.
struct Watcher(Broker);

impl Drop for Watcher {
    fn drop(&mut self) {
        self.0.shutdown();
        self.0.join();
    }
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("shutdown", &self.shared.shutdown.load(Ordering::Relaxed))
            .finish()
    }
}

/// `epoll_ctl(op)` of `fd` with no event bit: registered under `token`
/// (as mio would, edge-triggered) but never woken.
fn parked(registry: &mio::Registry, op: i32, fd: RawFd, token: Token) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut ev = libc::epoll_event {
        events: libc::EPOLLET as u32,
        u64: token.0 as u64,
    };
    // SAFETY: epoll_ctl on the registry's own epoll descriptor with a
    // valid event struct that outlives the call.
    let r = unsafe { libc::epoll_ctl(registry.as_raw_fd(), op, fd, &mut ev) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Broker-thread state handed to sources, tasks and timers.
pub(crate) struct Loop {
    registry: mio::Registry,
    sources: HashMap<Token, Source>,
    timers: BinaryHeap<std::cmp::Reverse<(Instant, u64)>>,
    timer_tasks: HashMap<u64, Task>,
    shared: Arc<Shared>,
}

impl Loop {
    /// Registers `fd` for `interest`, calling `source` on readiness.
    pub(crate) fn register(&mut self, fd: RawFd, interest: Interest, source: Source) -> Token {
        let token = Token(self.shared.next_token.fetch_add(1, Ordering::Relaxed));
        match self
            .registry
            .register(&mut mio::unix::SourceFd(&fd), token, interest)
        {
            Ok(()) => {
                self.sources.insert(token, source);
            }
            Err(e) => tracing::error!("mitogen: cannot register fd {fd}: {e}"),
        }
        token
    }

    /// Registers `fd` parked (see [`Broker::reregister`]): no event of it
    /// wakes the broker until it is given an interest.
    pub(crate) fn register_parked(&mut self, fd: RawFd, source: Source) -> Token {
        let token = Token(self.shared.next_token.fetch_add(1, Ordering::Relaxed));
        match parked(&self.registry, libc::EPOLL_CTL_ADD, fd, token) {
            Ok(()) => {
                self.sources.insert(token, source);
            }
            Err(e) => tracing::error!("mitogen: cannot register fd {fd}: {e}"),
        }
        token
    }

    /// Stops watching `fd` and drops its source.
    pub(crate) fn deregister(&mut self, fd: RawFd, token: Token) {
        let _ = self.registry.deregister(&mut mio::unix::SourceFd(&fd));
        self.sources.remove(&token);
    }

    /// Stops watching `fd`, leaving its source to the caller (a source
    /// that is running and about to return `false`).
    pub(crate) fn registry_deregister(&mut self, fd: RawFd) -> std::io::Result<()> {
        self.registry.deregister(&mut mio::unix::SourceFd(&fd))
    }

    /// Runs `task` on this thread after `delay`.
    pub(crate) fn after(&mut self, delay: Duration, task: Task) {
        let id = self.shared.next_timer.fetch_add(1, Ordering::Relaxed);
        self.at(deadline(delay), id, task);
    }

    fn at(&mut self, at: Instant, id: u64, task: Task) {
        self.timers.push(std::cmp::Reverse((at, id)));
        self.timer_tasks.insert(id, task);
    }

    /// Forgets a cancelled timer. Its heap entry is skipped when due; the
    /// heap is compacted when such entries outnumber live timers, so
    /// setting and cancelling long timers does not grow it without bound.
    fn forget_timer(&mut self, id: u64) {
        self.timer_tasks.remove(&id);
        if self.timers.len() > 64 + 2 * self.timer_tasks.len() {
            let live = &self.timer_tasks;
            self.timers
                .retain(|std::cmp::Reverse((_, id))| live.contains_key(id));
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, id))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            if let Some(task) = self.timer_tasks.remove(&id) {
                guarded("timer", || task(self));
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        self.timers
            .peek()
            .map(|std::cmp::Reverse((at, _))| at.saturating_duration_since(Instant::now()))
    }

    fn run_deferred(&mut self) {
        loop {
            let tasks = std::mem::take(&mut *lock(&self.shared.deferred));
            if tasks.is_empty() {
                return;
            }
            for t in tasks {
                guarded("deferred task", || t(self));
            }
        }
    }

    fn dispatch(&mut self, ev: &Event) {
        let token = ev.token();
        if let Some(mut source) = self.sources.remove(&token) {
            let keep = guarded("I/O callback", || source(self, ev)).unwrap_or(false);
            if keep {
                self.sources.insert(token, source);
            }
        }
    }
}

/// Runs `f`, turning a panic into a logged error: a bug in one callback
/// must not take the whole broker thread down.
fn guarded<R>(what: &str, f: impl FnOnce() -> R) -> Option<R> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(p) => {
            let msg = crate::error::CallError::from_panic(what, &*p);
            tracing::error!("mitogen broker: {msg}");
            None
        }
    }
}

impl Broker {
    /// Starts a broker thread, stopped when the last handle is dropped.
    pub fn new() -> Result<Broker> {
        let b = Broker::new_detached()?;
        let owner = Some(Arc::new(Watcher(b.handle())));
        Ok(Broker { owner, ..b })
    }

    /// A handle that does not keep the broker running nor stop it.
    pub(crate) fn handle(&self) -> Broker {
        Broker {
            shared: self.shared.clone(),
            owner: None,
        }
    }

    /// Starts a broker thread that runs until [`Broker::shutdown`].
    pub fn new_detached() -> Result<Broker> {
        let poll = Poll::new().map_err(io_err("cannot create the broker's poller"))?;
        let registry = poll
            .registry()
            .try_clone()
            .map_err(io_err("cannot clone the poll registry"))?;
        let waker = Waker::new(poll.registry(), WAKER).map_err(io_err("cannot create a waker"))?;
        let shared = Arc::new(Shared {
            registry,
            waker,
            deferred: Mutex::new(Vec::new()),
            busy: AtomicBool::new(false),
            turn_began: AtomicU64::new(0),
            epoch: Instant::now(),
            participants: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            shutdown_timeout_ms: AtomicU64::new(DEFAULT_SHUTDOWN_TIMEOUT.as_millis() as u64),
            next_token: AtomicUsize::new(1),
            next_timer: AtomicU64::new(0),
            thread_id: OnceLock::new(),
            stopped: Latch::new(),
            join: Mutex::new(None),
            events: BrokerEvents::default(),
        });
        let lp = Loop {
            registry: shared
                .registry
                .try_clone()
                .map_err(io_err("cannot clone the poll registry"))?,
            sources: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_tasks: HashMap::new(),
            shared: shared.clone(),
        };
        crate::process::track_fd(std::os::fd::AsRawFd::as_raw_fd(&poll));
        crate::process::track_fd(std::os::fd::AsRawFd::as_raw_fd(&shared.registry));
        crate::process::track_fd(std::os::fd::AsRawFd::as_raw_fd(&lp.registry));
        let handle = std::thread::Builder::new()
            .name("mitogen-broker".into())
            .spawn(move || broker_main(poll, lp))
            .map_err(io_err("cannot start the broker thread"))?;
        let _ = shared.thread_id.set(handle.thread().id());
        *lock(&shared.join) = Some(handle);
        Ok(Broker {
            shared,
            owner: None,
        })
    }

    /// Sets the interest of a registered descriptor (any thread); `None`
    /// parks it: registered under `token` still, but no event of `fd`
    /// wakes the broker until it is given an interest again.
    ///
    /// mio wants a non-empty interest, and no interest is truly silent:
    /// `PRIORITY` reports nothing for a socket, but a Unix socket wakes its
    /// waiters with `EPOLLPRI` in every "readable" key, so the broker
    /// would be woken, for nothing, by each message a direct reader takes
    /// (a context switch per call, on the caller's CPU). So parking is an
    /// `EPOLL_CTL_MOD` with no event bits, which the kernel never wakes.
    pub(crate) fn reregister(
        &self,
        fd: RawFd,
        token: Token,
        interest: Option<Interest>,
    ) -> std::io::Result<()> {
        match interest {
            Some(i) => self
                .shared
                .registry
                .reregister(&mut mio::unix::SourceFd(&fd), token, i),
            None => parked(&self.shared.registry, libc::EPOLL_CTL_MOD, fd, token),
        }
    }

    pub(crate) fn add_participant(&self, p: Arc<dyn Participant>) {
        lock(&self.shared.participants).push(p);
    }

    /// `true` when called on the broker thread itself.
    pub fn on_broker_thread(&self) -> bool {
        self.shared.thread_id.get() == Some(&std::thread::current().id())
    }

    /// Runs `task` on the broker thread with its loop.
    pub(crate) fn defer_loop(&self, task: Task) {
        lock(&self.shared.deferred).push(task);
        if let Err(e) = self.shared.waker.wake() {
            tracing::error!("mitogen: cannot wake the broker: {e}");
        }
    }

    /// Queues `task` for the broker's next turn if its thread is running
    /// now, without waking it (it runs deferred work before it next
    /// sleeps); gives `task` back if it sleeps or has stopped. Costs no
    /// system call, so work handed over this way while the broker is up
    /// (a link's flush) is batched with the rest of its turn.
    pub(crate) fn defer_while_busy(&self, task: Task) -> std::result::Result<(), Task> {
        // While it shuts down, the broker's last turns close links: a
        // sender writes itself rather than race them. A turn that has
        // lasted long is likely busy with a slow task: not worth waiting
        // for either.
        if !self.is_busy() || self.is_shutting_down() || self.turn_age() > LONG_TURN {
            return Err(task);
        }
        lock(&self.shared.deferred).push(task);
        // Pairs with the broker's fence between clearing `busy` and
        // looking for deferred work: one of the two sees the other.
        std::sync::atomic::fence(Ordering::SeqCst);
        if !self.shared.busy.load(Ordering::SeqCst) {
            if let Err(e) = self.shared.waker.wake() {
                tracing::error!("mitogen: cannot wake the broker: {e}");
            }
        }
        Ok(())
    }

    /// `true` while the broker thread is running (not asleep in its poll).
    pub(crate) fn is_busy(&self) -> bool {
        self.shared.busy.load(Ordering::SeqCst)
    }

    /// Makes the current turn count as just begun (tests that hold the
    /// broker in a task and then hand it work).
    #[cfg(test)]
    pub(crate) fn renew_turn(&self) {
        let now = self.shared.epoch.elapsed().as_micros() as u64;
        self.shared.turn_began.store(now, Ordering::Relaxed);
    }

    /// How long the broker's current turn has lasted.
    fn turn_age(&self) -> Duration {
        let now = self.shared.epoch.elapsed().as_micros() as u64;
        let began = self.shared.turn_began.load(Ordering::Relaxed);
        Duration::from_micros(now.saturating_sub(began))
    }

    /// Arranges for `f` to run on the broker thread. Safe from any thread.
    /// Keep `f` short: while it runs, the broker reads, relays and flushes
    /// nothing (a caller waiting for its own answer still writes and reads
    /// its link itself).
    ///
    /// Fails with a [`StreamError`] once shutdown has begun: the work
    /// might never run, and silently dropping it would hide that. A panic
    /// in `f` is logged; the broker goes on.
    pub fn defer(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        if self.is_shutting_down() || self.is_stopped() {
            return Err(StreamError::new(
                "the broker is shutting down: the deferred work was refused",
            )
            .into());
        }
        self.defer_loop(Box::new(move |_| f()));
        Ok(())
    }

    /// Runs `f` on the broker thread once `delay` has passed, and returns
    /// a [`Timer`] that can cancel it.
    ///
    /// Timers fire in the order of their due time, those due at the same
    /// instant in the order they were set. `f` runs on the broker thread:
    /// it must not block (waiting for a call or a receiver there fails at
    /// once), and a panic in it is logged. Dropping the [`Timer`] does not
    /// cancel it. Fails with a [`StreamError`] once shutdown has begun;
    /// a timer still pending when the broker stops never runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// let broker = mitogen::Broker::new()?;
    /// let fired = mitogen::Latch::new();
    /// let (f1, f2) = (fired.clone(), fired.clone());
    /// let late = broker.call_later(Duration::from_millis(20), move || { let _ = f1.put("late"); })?;
    /// let never = broker.call_later(Duration::from_millis(10), move || { let _ = f2.put("never"); })?;
    /// assert!(never.cancel());
    /// assert_eq!(fired.get(Some(Duration::from_secs(5)))?, "late");
    /// assert!(!late.cancel()); // it already ran
    /// # Ok::<(), mitogen::Error>(())
    /// ```
    pub fn call_later(&self, delay: Duration, f: impl FnOnce() + Send + 'static) -> Result<Timer> {
        if self.is_shutting_down() || self.is_stopped() {
            return Err(
                StreamError::new("the broker is shutting down: the timer was refused").into(),
            );
        }
        let at = deadline(delay);
        let id = self.shared.next_timer.fetch_add(1, Ordering::Relaxed);
        let state = TimerState::new();
        let s = state.clone();
        let task: Task = Box::new(move |_| {
            if s.claim() {
                f();
            }
        });
        self.defer_loop(Box::new(move |lp| lp.at(at, id, task)));
        let broker = self.handle();
        Ok(Timer::new(
            state,
            Box::new(move || {
                // Free its task now rather than at its due time.
                if !broker.is_stopped() {
                    broker.defer_loop(Box::new(move |lp| lp.forget_timer(id)));
                }
            }),
        ))
    }

    /// Runs `f` on the broker thread and waits for its result. Called on the
    /// broker thread itself, runs `f` at once.
    pub fn defer_sync<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R> {
        if self.on_broker_thread() {
            return Ok(f());
        }
        if self.is_stopped() {
            return Err(StreamError::new("the broker has stopped").into());
        }
        let latch: Latch<std::result::Result<R, CallError>> = Latch::new();
        let l2 = latch.clone();
        // Runs during the graceful phase of a shutdown too (unlike
        // `defer`): the broker is still running then.
        self.defer_loop(Box::new(move |_| {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
                .map_err(|p| CallError::from_panic("the task given to defer_sync", &*p));
            let _ = l2.put(r);
        }));
        // Should the broker exit before running it, the latch is closed by
        // nobody: poll with a bound so a stopped broker is noticed.
        loop {
            match latch.get(Some(Duration::from_millis(100))) {
                Ok(r) => return r.map_err(Error::Call),
                Err(Error::Timeout(_)) if !self.is_stopped() => continue,
                Err(Error::Timeout(_)) => {
                    return match latch.try_get().ok().flatten() {
                        Some(r) => r.map_err(Error::Call),
                        None => Err(
                            StreamError::new("the broker stopped before running the task").into(),
                        ),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Seconds of grace given to streams during [`Broker::shutdown`].
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shared.shutdown_timeout_ms.load(Ordering::Relaxed))
    }

    /// Changes the shutdown grace period.
    pub fn set_shutdown_timeout(&self, t: Duration) {
        self.shared
            .shutdown_timeout_ms
            .store(t.as_millis() as u64, Ordering::Relaxed);
    }

    /// Asks the broker to disconnect its streams gracefully and stop.
    pub fn shutdown(&self) {
        if !self.shared.shutdown.swap(true, Ordering::AcqRel) {
            let _ = self.shared.waker.wake();
        }
    }

    /// `true` once shutdown was requested.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.load(Ordering::Acquire)
    }

    /// `true` while any participant still has graceful work in flight.
    pub fn keep_alive(&self) -> bool {
        lock(&self.shared.participants)
            .iter()
            .any(|p| p.keep_alive())
    }

    /// Runs `f` on the broker thread when shutdown begins, before any
    /// stream is told (the seed's `before_shutdown` signal).
    pub fn on_before_shutdown(&self, f: impl Fn() + Send + Sync + 'static) -> Subscription {
        self.shared.events.before_shutdown.subscribe(move |_| f())
    }

    /// Runs `f` when the graceful phase of shutdown is over, before what is
    /// left is disconnected (the seed's `shutdown` signal).
    pub fn on_shutdown(&self, f: impl Fn() + Send + Sync + 'static) -> Subscription {
        self.shared.events.shutdown.subscribe(move |_| f())
    }

    /// Runs `f` as the last thing the broker thread does (the seed's
    /// `exit` signal).
    pub fn on_exit(&self, f: impl Fn() + Send + Sync + 'static) -> Subscription {
        self.shared.events.exit.subscribe(move |_| f())
    }

    /// `true` once the thread has exited.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_closed()
    }

    /// Waits for the broker thread to exit (after [`Broker::shutdown`]).
    pub fn join(&self) {
        if self.on_broker_thread() {
            return;
        }
        let handle = lock(&self.shared.join).take();
        match handle {
            Some(h) => {
                let _ = h.join();
            }
            None => {
                // Another thread is joining: wait for it to finish.
                while !self.is_stopped() {
                    let _ = self.shared.stopped.get(Some(Duration::from_millis(50)));
                }
            }
        }
    }
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| StreamError::new(format!("{what}: {e}")).into()
}

thread_local! {
    static ON_BROKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `true` on any broker thread (which must never block on a peer).
pub(crate) fn on_a_broker_thread() -> bool {
    ON_BROKER.with(|b| b.get())
}

/// Refuses to wait for `what` on a broker thread: the broker is what would
/// deliver it, so waiting there could only end by timing out (or never).
/// Event callbacks and deferred tasks run there.
pub(crate) fn refuse_wait_on_broker(what: &str) -> Result<()> {
    if on_a_broker_thread() {
        return Err(crate::error::ChannelError::new(format!(
            "cannot wait for {what} on the broker thread (in an event callback or a \
             deferred task): the broker delivers it; start the wait from another thread"
        ))
        .into());
    }
    Ok(())
}

fn broker_main(mut poll: Poll, mut lp: Loop) {
    ON_BROKER.with(|b| b.set(true));
    lp.shared.busy.store(true, Ordering::SeqCst);
    let mut events = Events::with_capacity(256);
    let mut deadline: Option<Instant> = None;
    loop {
        lp.run_deferred();
        lp.run_timers();
        if deadline.is_none() && lp.shared.shutdown.load(Ordering::Acquire) {
            lp.shared.events.before_shutdown.fire(&());
            let parts = lock(&lp.shared.participants).clone();
            for p in &parts {
                guarded("shutdown hook", || p.clone().on_shutdown(&mut lp));
            }
            let grace =
                Duration::from_millis(lp.shared.shutdown_timeout_ms.load(Ordering::Relaxed));
            deadline = Some(Instant::now() + grace);
        }
        if let Some(d) = deadline {
            let alive = lock(&lp.shared.participants)
                .clone()
                .iter()
                .any(|p| p.keep_alive());
            if !alive || Instant::now() >= d {
                break;
            }
        }
        let mut timeout = lp.next_timeout();
        if deadline.is_some() {
            let tick = Duration::from_millis(10);
            timeout = Some(timeout.map_or(tick, |t| t.min(tick)));
        }
        // About to sleep: from now on work handed over must wake us. Work
        // queued just before that is run first (see `defer_while_busy`).
        lp.shared.busy.store(false, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if !lock(&lp.shared.deferred).is_empty() {
            timeout = Some(Duration::ZERO);
        }
        let polled = poll.poll(&mut events, timeout);
        let now = lp.shared.epoch.elapsed().as_micros() as u64;
        lp.shared.turn_began.store(now, Ordering::Relaxed);
        lp.shared.busy.store(true, Ordering::SeqCst);
        if let Err(e) = polled {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!("mitogen broker: poll failed: {e}");
                break;
            }
            continue;
        }
        for ev in events.iter() {
            if ev.token() != WAKER {
                lp.dispatch(ev);
            }
        }
    }
    // Nothing handed over from now on would run after the last turn; what
    // was runs before the links are let go.
    lp.shared.busy.store(false, Ordering::SeqCst);
    lp.run_deferred();
    lp.shared.events.shutdown.fire(&());
    let parts = std::mem::take(&mut *lock(&lp.shared.participants));
    for p in &parts {
        guarded("exit hook", || p.clone().on_exit(&mut lp));
    }
    lp.run_deferred();
    lp.sources.clear();
    crate::process::untrack_fd(std::os::fd::AsRawFd::as_raw_fd(&poll));
    crate::process::untrack_fd(std::os::fd::AsRawFd::as_raw_fd(&lp.registry));
    lp.shared.events.exit.fire(&());
    // Closing means "stopped": waiters blocked in join() wake up.
    lp.shared.stopped.close();
}

#[cfg(test)]
mod tests;
