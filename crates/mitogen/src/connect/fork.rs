//! `Router::fork()`: a new context that is a copy of this process.
//!
//! # Caveats
//!
//! Only the forking thread exists in the child. The child never touches
//! the parent's router or broker (it builds its own from scratch), closes
//! every descriptor the runtime owns except its own link, and holds the
//! runtime's descriptor list locked across `fork()` so the list is
//! consistent in the child. Anything else locked by another thread at that
//! instant stays locked in the child: for example Rust's stdout lock while
//! another thread prints. Read the seed's list of fork hazards (files and
//! sockets inherited, PRNG state duplicated, thread-locals of other threads
//! gone) and clean up in `on_fork`. Prefer [`Router::local`] for
//! long-lived contexts.

use crate::agent::OnStart;
use crate::bootstrap::AgentBinary;
use crate::connect::finish::kill_and_reap;
use crate::connect::inflight::Flight;
use crate::connect::method::Method;
use crate::connect::options::basic_options;
use crate::connect::sys;
use crate::connect::Options;
use crate::context::Context;
use crate::dispatch::ExternalContext;
use crate::error::{Result, StreamError};
use crate::link::{FrameReader, Stream};
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

/// `fork()` has no parameters that can travel (its hooks cannot).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct ForkSpec;

impl Method for ForkSpec {
    const TAG: &'static str = "fork";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        fork_here(core, id, opts, None, None)
    }
}

/// Builder returned by [`Router::fork`].
#[must_use = "call .connect() to start the context"]
pub struct ForkBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    on_fork: Option<Box<dyn FnOnce()>>,
    on_start: Option<OnStart>,
}

impl std::fmt::Debug for ForkBuilder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForkBuilder")
            .field("opts", &self.opts)
            .finish()
    }
}

basic_options!(ForkBuilder);

impl Router {
    /// Starts a context by forking this process: the seed's `fork()`.
    /// See the module caveats in [`ForkBuilder`].
    pub fn fork(&self) -> ForkBuilder<'_> {
        ForkBuilder {
            router: self,
            opts: Options::default(),
            on_fork: None,
            on_start: None,
        }
    }
}

impl<'r> ForkBuilder<'r> {
    /// Runs `f` in the child right after `fork()`, before anything else:
    /// the place to release locks and close descriptors of the parent.
    pub fn on_fork(mut self, f: impl FnOnce() + 'static) -> Self {
        self.on_fork = Some(Box::new(f));
        self
    }

    /// Runs `f` in the child once it is set up, before it serves calls.
    /// `f` may capture anything: it is copied with the process, not sent.
    pub fn on_start(mut self, f: impl FnOnce(&ExternalContext) + 'static) -> Self {
        self.on_start = Some(Box::new(f));
        self
    }

    /// Forks, and returns once the child exists (it answers calls as soon
    /// as it has set itself up).
    pub fn connect(self) -> Result<Context> {
        self.opts.validate()?;
        let core = self.router.core().clone();
        if let Some(via) = &self.opts.via {
            if self.on_fork.is_some() || self.on_start.is_some() {
                return Err(StreamError::new(
                    "on_fork/on_start run in a copy of this process and cannot be used with via()",
                )
                .into());
            }
            return crate::connect::via::connect(&core, via, ForkSpec::TAG, &ForkSpec, &self.opts);
        }
        let id = core.allocate_id()?;
        fork_here(&core, id, &self.opts, self.on_fork, self.on_start)
    }
}

/// Forks a child that becomes context `id`.
pub(crate) fn fork_here(
    core: &Arc<Core>,
    id: u32,
    opts: &Options,
    on_fork: Option<Box<dyn FnOnce()>>,
    on_start: Option<OnStart>,
) -> Result<Context> {
    let flight = Flight::begin(&core.broker, &core.connects, opts.connect_timeout)?;
    let (ours, theirs) = UnixStream::pair()
        .map_err(|e| crate::process::fd_error("cannot create a socketpair", e))?;
    let agent = crate::bootstrap::known_current().unwrap_or_else(|| {
        Arc::new(AgentBinary {
            path: "/proc/self/exe".into(),
            sha: String::new(),
            size: 0,
        })
    });
    let given = opts.remote_name.clone().unwrap_or_default();
    let mut cfg = opts.config(core, id, &given, &agent);
    let fds_guard = crate::process::lock_fds();
    let close_in_child: Vec<i32> = fds_guard.clone();
    // SAFETY: fork() duplicates this process; the child below only uses
    // memory it owns, descriptors, and freshly built runtime objects.
    let pid = match unsafe { sys::fork() } {
        Ok(pid) => pid,
        Err(e) => {
            drop(fds_guard);
            return Err(StreamError::new(format!("fork failed: {e}")).into());
        }
    };
    if pid == 0 {
        drop(fds_guard);
        let keep = theirs.as_raw_fd();
        for fd in close_in_child {
            if fd != keep {
                // Runtime descriptors inherited from the parent; nothing in
                // the child uses them.
                sys::close(fd);
            }
        }
        drop(ours);
        child_main(cfg, theirs, on_fork, on_start);
    }
    drop(fds_guard);
    drop(theirs);
    let child = crate::child::ChildProc::adopt(pid);
    flight.set_pid(pid);
    let name = opts
        .remote_name
        .clone()
        .unwrap_or_else(|| format!("fork.{pid}"));
    cfg.name = name.clone();
    let max = cfg.limits.max_message_size as usize;
    let stream = match Stream::new(
        name.clone(),
        id,
        false,
        OwnedFd::from(ours),
        None,
        max,
        Some(child.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            kill_and_reap(&child);
            return Err(crate::process::fd_error("cannot set up the stream", e));
        }
    };
    // Attached only if shutdown has not begun (see `inflight`).
    let who = format!("{name} (fork)");
    if let Err(e) = flight.commit(&who, || {
        core.attach(Arc::new(stream), FrameReader::new(max))
    }) {
        kill_and_reap(&child);
        return Err(e);
    }
    crate::router::control::announce_added(core, id, &name);
    Ok(Context::new(core.clone(), id, &name))
}

fn child_main(
    mut cfg: crate::bootstrap::Config,
    sock: UnixStream,
    on_fork: Option<Box<dyn FnOnce()>>,
    on_start: Option<OnStart>,
) -> ! {
    if cfg.name.is_empty() {
        cfg.name = format!("fork.{}", std::process::id());
    }
    if let Some(f) = on_fork {
        f();
    }
    let r = crate::agent::serve(cfg, OwnedFd::from(sock), None, on_start);
    use std::io::Write;
    let _ = std::io::stdout().flush();
    // _exit: the parent's atexit handlers and buffers are not ours to run.
    sys::exit_now(if r.is_ok() { 0 } else { 1 })
}
