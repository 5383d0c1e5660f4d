//! Where user handler callbacks run: one thread per router, off the
//! reading path.
//!
//! Messages are delivered by whichever thread reads a link: the broker, or
//! a thread waiting for its own reply (`direct.rs`), which holds the
//! link's reader while it routes. A callback registered with
//! `Router::add_handler` is user code: it may block, call a context behind
//! the very link being read, or panic. Run inline, the first would stall
//! every link, the second deadlocks (the reply it waits for can only be
//! read by the thread that is running it), the third unwinds through the
//! router. So user callbacks are queued to a thread of their own
//! (`mitogen-handlers`, started on first use), which runs them in arrival
//! order, contains a panic (logged with the handle, the next message is
//! handled as usual) and never holds a runtime lock while it runs one.
//!
//! The runtime's own sinks (receivers, pending calls, the control plane)
//! only put a message on a latch and stay inline.

use crate::message::Message;
use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A user callback, shared by every message to its handle.
pub(crate) type UserSink = Arc<dyn Fn(Message) + Send + Sync>;

struct Job {
    handle: u32,
    sink: UserSink,
    msg: Message,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    running: bool,
    stopped: bool,
}

/// The queue of user callbacks of one router, and its thread.
#[derive(Default)]
pub(crate) struct Callbacks {
    state: Mutex<State>,
    ready: Condvar,
}

/// How long the thread waits for work before it exits (it is started
/// again by the next message).
const IDLE: Duration = Duration::from_secs(5);

impl Callbacks {
    /// Queues `sink(msg)`; `handle` names it in logs.
    pub(crate) fn run(self: &Arc<Self>, handle: u32, sink: UserSink, msg: Message) {
        let mut st = lock(&self.state);
        if st.stopped {
            tracing::debug!("mitogen: handler {handle}: router stopped, {msg:?} dropped");
            return;
        }
        st.jobs.push_back(Job { handle, sink, msg });
        if st.running {
            self.ready.notify_one();
            return;
        }
        st.running = true;
        drop(st);
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name("mitogen-handlers".into())
            .spawn(move || me.serve());
        if let Err(e) = spawned {
            tracing::error!("mitogen: cannot start the handler thread: {e}");
            lock(&self.state).running = false;
        }
    }

    fn serve(&self) {
        loop {
            let job = {
                let mut st = lock(&self.state);
                loop {
                    if let Some(j) = st.jobs.pop_front() {
                        break j;
                    }
                    if st.stopped {
                        st.running = false;
                        return;
                    }
                    let (g, t) = self
                        .ready
                        .wait_timeout(st, IDLE)
                        .unwrap_or_else(|e| e.into_inner());
                    st = g;
                    if t.timed_out() && st.jobs.is_empty() {
                        st.running = false;
                        return;
                    }
                }
            };
            let Job { handle, sink, msg } = job;
            let run = std::panic::AssertUnwindSafe(move || sink(msg));
            if let Err(p) = std::panic::catch_unwind(run) {
                let e = crate::error::CallError::from_panic(&format!("handler {handle}"), &*p);
                tracing::error!("mitogen: {e}; the handler stays registered");
            }
        }
    }

    /// Runs what is queued, then lets the thread end; later messages are
    /// dropped (the router has stopped).
    pub(crate) fn stop(&self) {
        lock(&self.state).stopped = true;
        self.ready.notify_all();
    }
}
