//! A bounded pool of worker threads: what runs
//! `#[mitogen::remote(concurrent)]` calls in a child, beside the main
//! thread that runs ordinary calls one at a time in arrival order.
//!
//! Why a pool of its own rather than a thread per call: a child must not
//! be made to start threads without limit by a parent firing calls, and a
//! parent must learn at once, not by a hang, when a child cannot take
//! more. So the pool is bounded twice:
//!
//! - at most `max_threads` threads, started on demand (a job that finds no
//!   idle thread starts one while there are fewer than the maximum) and
//!   retired after sitting idle for `idle_timeout`, so an idle child holds
//!   no worker threads;
//! - at most `max_queued` jobs waiting for a thread beyond those running.
//!   A job that does not fit is refused: its fail callback runs at once
//!   with a [`CallError`] saying the pool is full.
//!
//! A job is two boxed closures: `run`, and `fail`, which reports to
//! whoever waits for the job when it cannot run. Exactly one of them runs,
//! always: refused at submission (full, stopped), failed by [`Pool::stop`]
//! while still queued, or `run` on a worker. If `run` panics, the worker
//! survives and `fail` gets the panic as a [`CallError`] (callers that
//! catch their own panics, as the call dispatcher does, never reach this).
//! The pool knows nothing of calls or messages, so later users (services,
//! file transfer) can queue their own jobs on it.
//!
//! Stopping (the context shuts down or loses its parent) refuses new
//! jobs, fails every queued one and lets idle threads end; a running job
//! cannot be interrupted and ends with its process (see `agent.rs`).

use crate::error::CallError;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// Default most threads of a context's worker pool, which runs
/// `#[mitogen::remote(concurrent)]` functions (`pool_size` on a connect
/// builder sets it for the new context).
pub const DEFAULT_POOL_THREADS: usize = 16;

/// Default most concurrent calls waiting for a thread of a context's
/// worker pool; one more is refused with a [`crate::CallError`] of type
/// `mitogen::PoolFull`.
pub const DEFAULT_POOL_QUEUED: usize = 1024;

/// How long a worker thread waits for a job before it ends.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// How big a pool may grow; carried to a child in its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PoolSize {
    /// Threads at most (at least 1).
    pub(crate) max_threads: u32,
    /// Jobs waiting for a thread at most.
    pub(crate) max_queued: u32,
}

impl PoolSize {
    /// `max_threads` (at least 1) and `max_queued`, saturated to `u32`.
    pub(crate) fn new(max_threads: usize, max_queued: usize) -> PoolSize {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolSize {
            max_threads: cap(max_threads).max(1),
            max_queued: cap(max_queued),
        }
    }
}

impl Default for PoolSize {
    fn default() -> PoolSize {
        PoolSize::new(DEFAULT_POOL_THREADS, DEFAULT_POOL_QUEUED)
    }
}

/// Work for the pool: `run` on a worker thread, or `fail` with the reason
/// it could not run. Exactly one of the two is called.
pub(crate) struct Job {
    run: Box<dyn FnOnce() + Send>,
    fail: Box<dyn FnOnce(CallError) + Send>,
}

impl Job {
    /// A job from its two halves.
    pub(crate) fn new(
        run: impl FnOnce() + Send + 'static,
        fail: impl FnOnce(CallError) + Send + 'static,
    ) -> Job {
        Job {
            run: Box::new(run),
            fail: Box::new(fail),
        }
    }

    /// Reports `e` to the job's waiter; a panic there is logged, not
    /// propagated into the pool or its caller.
    fn fail(self, e: CallError) {
        let fail = self.fail;
        if catch_unwind(AssertUnwindSafe(move || fail(e))).is_err() {
            tracing::error!("mitogen: a pool job's fail callback panicked");
        }
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Job")
    }
}

/// A bounded, stoppable pool of worker threads. Cloning gives another
/// handle to the same pool; dropping handles does not stop it
/// ([`Pool::stop`] does).
#[derive(Clone, Debug)]
pub(crate) struct Pool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Names the pool in errors ("the worker pool of context 3").
    name: String,
    size: PoolSize,
    idle_timeout: Duration,
    state: Mutex<State>,
    /// Signalled when a job is queued or the pool stops.
    work: Condvar,
    /// Signalled when a worker thread ends.
    gone: Condvar,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Job>,
    /// Worker threads alive.
    threads: usize,
    /// Of those, waiting for a job.
    idle: usize,
    /// Of those, running a job.
    busy: usize,
    stopped: bool,
    /// Numbers the threads' names.
    spawned: u64,
}

impl Pool {
    /// A pool named `name` (used in its errors), with no threads yet.
    pub(crate) fn new(name: impl Into<String>, size: PoolSize, idle_timeout: Duration) -> Pool {
        Pool {
            shared: Arc::new(Shared {
                name: name.into(),
                size,
                idle_timeout,
                state: Mutex::new(State::default()),
                work: Condvar::new(),
                gone: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `job`, starting a thread for it if none is idle and the
    /// maximum is not reached. When the pool is stopped or full, the job's
    /// fail callback has run (on this thread) with the returned error.
    pub(crate) fn submit(&self, job: Job) -> Result<(), CallError> {
        let mut st = self.lock();
        let size = self.shared.size;
        let refusal = if st.stopped {
            Some(CallError::new(
                "mitogen::PoolStopped",
                format!(
                    "{} is stopped: the context is shutting down",
                    self.shared.name
                ),
            ))
        } else if st.busy + st.queue.len() >= (size.max_threads + size.max_queued) as usize {
            Some(CallError::new(
                "mitogen::PoolFull",
                format!(
                    "{} is full ({} running, {} queued): call refused; \
                     pool_size() on the connect builder sets its bounds",
                    self.shared.name,
                    st.busy,
                    st.queue.len()
                ),
            ))
        } else {
            None
        };
        if let Some(e) = refusal {
            drop(st);
            job.fail(e.clone());
            return Err(e);
        }
        st.queue.push_back(job);
        if st.idle >= st.queue.len() {
            self.shared.work.notify_one();
            return Ok(());
        }
        if st.threads >= size.max_threads as usize {
            // A busy thread takes it when done.
            return Ok(());
        }
        st.threads += 1;
        st.spawned += 1;
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("mitogen-pool-{}", st.spawned))
            .spawn(move || worker(shared));
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                st.threads -= 1;
                if st.threads > 0 {
                    // The threads there are will get to it.
                    tracing::warn!("mitogen: {}: cannot start a thread: {e}", self.shared.name);
                    return Ok(());
                }
                let job = st.queue.pop_back();
                drop(st);
                let err = CallError::new(
                    "mitogen::PoolError",
                    format!("{} cannot start a thread: {e}", self.shared.name),
                );
                if let Some(job) = job {
                    job.fail(err.clone());
                }
                Err(err)
            }
        }
    }

    /// Refuses new jobs, fails the queued ones (their fail callbacks run
    /// on this thread) and lets idle threads end. Running jobs go on to
    /// their end. Stopping twice does nothing more.
    pub(crate) fn stop(&self) {
        let jobs: Vec<Job> = {
            let mut st = self.lock();
            st.stopped = true;
            st.queue.drain(..).collect()
        };
        self.shared.work.notify_all();
        if jobs.is_empty() {
            return;
        }
        let e = CallError::new(
            "mitogen::PoolStopped",
            format!(
                "{} stopped before this call ran: the context is shutting down",
                self.shared.name
            ),
        );
        for job in jobs {
            job.fail(e.clone());
        }
    }

    /// Waits up to `timeout` for every worker thread to end (after
    /// [`Pool::stop`], once running jobs finish); `true` if they did.
    /// (A child does not wait: its process ends under running jobs.)
    #[cfg(test)]
    fn join(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.lock();
        while st.threads > 0 {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .shared
                .gone
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Worker threads alive now.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.lock().threads
    }
}

/// A worker: takes jobs until the pool stops or no job came for
/// `idle_timeout`.
fn worker(shared: Arc<Shared>) {
    let lock = || shared.state.lock().unwrap_or_else(|e| e.into_inner());
    let mut st = lock();
    loop {
        if let Some(job) = st.queue.pop_front() {
            st.busy += 1;
            drop(st);
            let Job { run, fail } = job;
            if let Err(p) = catch_unwind(AssertUnwindSafe(run)) {
                let what = format!("a job of {}", shared.name);
                Job::new(|| {}, fail).fail(CallError::from_panic(&what, &*p));
            }
            st = lock();
            st.busy -= 1;
            continue;
        }
        if st.stopped {
            break;
        }
        st.idle += 1;
        let (guard, waited) = shared
            .work
            .wait_timeout(st, shared.idle_timeout)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        st.idle -= 1;
        if waited.timed_out() && st.queue.is_empty() {
            break;
        }
    }
    st.threads -= 1;
    drop(st);
    shared.gone.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latch::Latch;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::Instant;

    const LIMIT: Duration = Duration::from_secs(20);

    /// What happened to a job: `Ok(tag)` ran, `Err(error)` failed.
    type Outcome = Result<u32, CallError>;

    fn job(out: &Latch<Outcome>, tag: u32, work: impl FnOnce() + Send + 'static) -> Job {
        let (a, b) = (out.clone(), out.clone());
        Job::new(
            move || {
                work();
                let _ = a.put(Ok(tag));
            },
            move |e| {
                let _ = b.put(Err(e));
            },
        )
    }

    fn pool(threads: usize, queued: usize) -> Pool {
        Pool::new(
            "the test pool",
            PoolSize::new(threads, queued),
            Duration::from_millis(200),
        )
    }

    /// A job that waits until `gate` gets a value (at most `LIMIT`).
    fn blocker(out: &Latch<Outcome>, tag: u32, gate: &Latch<()>) -> Job {
        let g = gate.clone();
        job(out, tag, move || {
            let _ = g.get(Some(LIMIT));
        })
    }

    #[test]
    fn jobs_overlap_up_to_max_threads() {
        let p = pool(4, 0);
        let barrier = Arc::new(Barrier::new(4));
        let out = Latch::new();
        for i in 0..4 {
            let b = barrier.clone();
            // Only returns when all four run at the same time.
            p.submit(job(&out, i, move || {
                b.wait();
            }))
            .unwrap();
        }
        let mut tags: Vec<u32> = (0..4)
            .map(|_| out.get(Some(LIMIT)).unwrap().unwrap())
            .collect();
        tags.sort();
        assert_eq!(tags, [0, 1, 2, 3]);
        assert_eq!(p.threads(), 4);
    }

    #[test]
    fn full_pool_refuses_and_names_itself() {
        let p = pool(1, 1);
        let (out, gate) = (Latch::new(), Latch::new());
        p.submit(blocker(&out, 1, &gate)).unwrap();
        p.submit(blocker(&out, 2, &gate)).unwrap();
        let e = p.submit(job(&out, 3, || {})).unwrap_err();
        assert_eq!(e.type_name(), "mitogen::PoolFull");
        assert!(e.message().starts_with("the test pool is full"), "{e}");
        // The refused job was told, at once.
        assert_eq!(out.get(Some(LIMIT)).unwrap(), Err(e));
        gate.put(()).unwrap();
        gate.put(()).unwrap();
        let mut tags: Vec<u32> = (0..2)
            .map(|_| out.get(Some(LIMIT)).unwrap().unwrap())
            .collect();
        tags.sort();
        assert_eq!(tags, [1, 2]);
        assert_eq!(p.threads(), 1, "more threads than the maximum");
        // Room again.
        p.submit(job(&out, 4, || {})).unwrap();
        assert_eq!(out.get(Some(LIMIT)).unwrap(), Ok(4));
    }

    #[test]
    fn stop_fails_queued_jobs_and_refuses_new_ones() {
        let p = pool(1, 8);
        let (out, gate, started) = (Latch::new(), Latch::new(), Latch::new());
        let (g, s) = (gate.clone(), started.clone());
        p.submit(job(&out, 1, move || {
            let _ = s.put(());
            let _ = g.get(Some(LIMIT));
        }))
        .unwrap();
        started.get(Some(LIMIT)).unwrap();
        let queued = Latch::new();
        for i in 0..3 {
            p.submit(job(&queued, 10 + i, || {})).unwrap();
        }
        p.stop();
        for _ in 0..3 {
            let e = queued.get(Some(LIMIT)).unwrap().unwrap_err();
            assert_eq!(e.type_name(), "mitogen::PoolStopped");
            assert!(e.message().contains("the test pool stopped"), "{e}");
        }
        let e = p.submit(job(&queued, 99, || {})).unwrap_err();
        assert_eq!(e.type_name(), "mitogen::PoolStopped");
        assert_eq!(queued.get(Some(LIMIT)).unwrap(), Err(e));
        // The running job finishes; then its thread ends.
        gate.put(()).unwrap();
        assert_eq!(out.get(Some(LIMIT)).unwrap(), Ok(1));
        assert!(p.join(LIMIT), "threads left after stop");
        p.stop();
    }

    #[test]
    fn idle_threads_retire_and_come_back() {
        let p = pool(2, 0);
        let out = Latch::new();
        p.submit(job(&out, 1, || {})).unwrap();
        assert_eq!(out.get(Some(LIMIT)).unwrap(), Ok(1));
        // Idle for 200 ms: the thread ends by itself.
        assert!(p.join(LIMIT), "an idle thread did not retire");
        assert_eq!(p.threads(), 0);
        p.submit(job(&out, 2, || {})).unwrap();
        assert_eq!(out.get(Some(LIMIT)).unwrap(), Ok(2));
    }

    #[test]
    fn an_idle_thread_is_reused() {
        let p = Pool::new("p", PoolSize::new(8, 0), LIMIT);
        let out = Latch::new();
        for i in 0..20 {
            p.submit(job(&out, i, || {})).unwrap();
            assert_eq!(out.get(Some(LIMIT)).unwrap(), Ok(i));
            // Wait until the worker is back to waiting.
            let t0 = Instant::now();
            while p.lock().idle == 0 && t0.elapsed() < LIMIT {
                std::thread::yield_now();
            }
        }
        assert_eq!(p.threads(), 1, "sequential jobs started new threads");
        p.stop();
        assert!(p.join(LIMIT));
    }

    #[test]
    fn a_panicking_job_fails_and_the_worker_survives() {
        let p = pool(1, 4);
        let out = Latch::new();
        p.submit(job(&out, 1, || panic!("job boom"))).unwrap();
        let e = out.get(Some(LIMIT)).unwrap().unwrap_err();
        assert_eq!(e.type_name(), "panic");
        assert!(e.message().contains("job boom"), "{e}");
        p.submit(job(&out, 2, || {})).unwrap();
        assert_eq!(out.get(Some(LIMIT)).unwrap(), Ok(2));
    }

    #[test]
    fn exactly_one_half_runs_under_load() {
        let p = pool(3, 5);
        let ran = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let done = Latch::new();
        let mut refused = 0;
        for _ in 0..200 {
            let (r, f, d1, d2) = (ran.clone(), failed.clone(), done.clone(), done.clone());
            let j = Job::new(
                move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    let _ = d1.put(());
                },
                move |_| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let _ = d2.put(());
                },
            );
            if p.submit(j).is_err() {
                refused += 1;
            }
        }
        p.stop();
        for _ in 0..200 {
            done.get(Some(LIMIT)).unwrap();
        }
        assert_eq!(
            ran.load(Ordering::SeqCst) + failed.load(Ordering::SeqCst),
            200
        );
        assert!(failed.load(Ordering::SeqCst) >= refused);
        assert!(p.join(LIMIT));
    }
}
