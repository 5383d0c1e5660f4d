//! Context factories: one builder per connection method, sharing the
//! seed's common parameters ([`Options`]).
//!
//! Every method ends in the same place: a transport process whose stdio
//! carries the first stage (`bootstrap`), then a [`crate::Context`]. `fork`
//! is the exception, as in the seed: the child is a copy of this process
//! and needs no stage.

pub(crate) mod doas;
pub(crate) mod fork;
pub(crate) mod inflight;
pub(crate) mod local;
pub(crate) mod password;
pub(crate) mod prompted;
pub(crate) mod ssh;
pub(crate) mod su;
pub(crate) mod sudo;
pub(crate) mod tty;
pub(crate) mod via;

use crate::bootstrap::{self, AgentBinary, Config, Spawned};
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::link::Stream;
use crate::router::Core;
use inflight::Flight;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// Default `connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Parameters every connection method accepts (the seed's `local()`
/// parameters). `None` means "inherit from the router".
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Options {
    pub(crate) remote_name: Option<String>,
    pub(crate) agent_command: Vec<String>,
    pub(crate) agent_binary: Option<PathBuf>,
    pub(crate) debug: Option<bool>,
    pub(crate) unidirectional: Option<bool>,
    pub(crate) profiling: Option<bool>,
    pub(crate) connect_timeout: Duration,
    #[serde(default)]
    pub(crate) pool: crate::pool::PoolSize,
    #[serde(skip)]
    pub(crate) via: Option<Context>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            remote_name: None,
            agent_command: Vec::new(),
            agent_binary: None,
            debug: None,
            unidirectional: None,
            profiling: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            pool: crate::pool::PoolSize::default(),
            via: None,
        }
    }
}

/// Implements the setters every method has on a builder with an
/// `opts: Options` field.
macro_rules! basic_options {
    ($builder:ident) => {
        impl $builder<'_> {
            /// Process title suffix: the context runs as `mitogen:NAME`
            /// (default `user@host:pid` of this process). Must not contain `/`.
            pub fn remote_name(mut self, name: impl Into<String>) -> Self {
                self.opts.remote_name = Some(name.into());
                self
            }

            /// Debug logging in the new context (default: the router's).
            pub fn debug(mut self, on: bool) -> Self {
                self.opts.debug = Some(on);
                self
            }

            /// Unidirectional routing in the new context (default: the
            /// router's).
            pub fn unidirectional(mut self, on: bool) -> Self {
                self.opts.unidirectional = Some(on);
                self
            }

            /// Profiling in the new context (default: the router's).
            pub fn profiling(mut self, on: bool) -> Self {
                self.opts.profiling = Some(on);
                self
            }

            /// Size of the new context's worker pool, which runs
            /// `#[mitogen::remote(concurrent)]` functions: at most
            /// `max_threads` at once (at least 1), and `max_queued` more
            /// waiting for a thread; a call beyond that is refused with a
            /// [`crate::CallError`] saying the pool is full. Default
            /// [`crate::DEFAULT_POOL_THREADS`] and
            /// [`crate::DEFAULT_POOL_QUEUED`].
            pub fn pool_size(mut self, max_threads: usize, max_queued: usize) -> Self {
                self.opts.pool = crate::pool::PoolSize::new(max_threads, max_queued);
                self
            }

            /// Starts the context from `ctx` instead of from here: `ctx`
            /// runs the connection and relays the agent.
            pub fn via(mut self, ctx: &crate::Context) -> Self {
                self.opts.via = Some(ctx.clone());
                self
            }
        }
    };
}
pub(crate) use basic_options;

/// Implements the setters of methods that start a program (all but fork).
macro_rules! common_options {
    ($builder:ident) => {
        $crate::connect::basic_options!($builder);

        impl $builder<'_> {
            /// Command prefix that runs the agent, the seed's
            /// `python_path`: e.g. `["nice", "-n", "10"]`.
            pub fn agent_command<S: Into<String>>(
                mut self,
                prefix: impl IntoIterator<Item = S>,
            ) -> Self {
                self.opts.agent_command = prefix.into_iter().map(Into::into).collect();
                self
            }

            /// Runs this file as the agent instead of this program's own
            /// executable: the same program built for another target.
            pub fn agent_binary(mut self, path: impl Into<std::path::PathBuf>) -> Self {
                self.opts.agent_binary = Some(path.into());
                self
            }

            /// How long the new context has to become healthy (default 30 s).
            pub fn connect_timeout(mut self, t: std::time::Duration) -> Self {
                self.opts.connect_timeout = t;
                self
            }
        }
    };
}
pub(crate) use common_options;

impl Options {
    pub(crate) fn validate(&self) -> Result<()> {
        if let Some(n) = &self.remote_name {
            if n.contains('/') {
                return Err(
                    StreamError::new(format!("remote_name {n:?} must not contain '/'")).into(),
                );
            }
        }
        Ok(())
    }

    pub(crate) fn config(&self, core: &Core, id: u32, name: &str, agent: &AgentBinary) -> Config {
        let mut parent_ids = vec![core.id];
        parent_ids.extend_from_slice(&core.parent_ids);
        Config {
            context_id: id,
            parent_ids,
            name: name.to_string(),
            remote_name: self
                .remote_name
                .clone()
                .unwrap_or_else(crate::process::default_remote_name),
            debug: self.debug.unwrap_or(core.debug.load(Ordering::Relaxed)),
            log_level: crate::logging::filter_to_u8(tracing::level_filters::LevelFilter::current()),
            profiling: self
                .profiling
                .unwrap_or(core.profiling.load(Ordering::Relaxed)),
            unidirectional: self
                .unidirectional
                .unwrap_or(core.unidirectional.load(Ordering::Relaxed)),
            limits: core.limits.snapshot(),
            binary_sha: agent.sha.clone(),
            binary_size: agent.size,
            pool: self.pool,
        }
    }

    pub(crate) fn agent(&self) -> Result<Arc<AgentBinary>> {
        match &self.agent_binary {
            Some(p) => Ok(Arc::new(AgentBinary::from_path(p)?)),
            None => AgentBinary::current(),
        }
    }
}

/// Starts a context by `method`: from here, or through the intermediate
/// named by `opts.via`. Every builder's `connect` ends here (but fork's,
/// whose hooks cannot travel).
pub(crate) fn start(core: &Arc<Core>, opts: &Options, method: via::Method) -> Result<Context> {
    opts.validate()?;
    match &opts.via {
        Some(v) => via::connect(core, v, method, opts),
        None => {
            let id = core.allocate_id()?;
            method.connect_here(core, id, opts)
        }
    }
}

/// Refuses a user name a method would pass on that is empty or would read
/// as an option.
pub(crate) fn check_user(method: &str, user: &str) -> Result<()> {
    if user.is_empty() || user.starts_with('-') {
        return Err(StreamError::new(format!("{method}: bad user name {user:?}")).into());
    }
    Ok(())
}

/// Bootstraps a started transport and registers the new context. `who`
/// names it in messages (`web1 (ssh to root@web1)`); `classify` is a
/// method's own reading of its tool's failures. The transport's process
/// is killed and reaped on any failure, shutdown included.
pub(crate) fn finish(
    core: &Arc<Core>,
    sp: Spawned,
    agent: &AgentBinary,
    cfg: &Config,
    flight: &Flight,
    who: &str,
    classify: Option<bootstrap::Classify<'_>>,
) -> Result<Context> {
    let booted = match bootstrap::run(&sp, agent, cfg, flight, who, classify) {
        Ok(b) => b,
        Err(e) => {
            kill_and_reap(&sp.child);
            return Err(e);
        }
    };
    tracing::debug!(
        "mitogen: {} up (pid {}, uploaded {} bytes)",
        cfg.name,
        booted.hello.pid,
        booted.uploaded
    );
    let Spawned {
        rfd,
        wfd,
        stderr,
        child,
    } = sp;
    let max = cfg.limits.max_message_size as usize;
    let stream = match Stream::new(
        cfg.name.clone(),
        cfg.context_id,
        false,
        rfd,
        wfd,
        max,
        Some(child.clone()),
    ) {
        Ok(s) => s,
        Err(e) => {
            kill_and_reap(&child);
            return Err(StreamError::new(format!("cannot set up the stream: {e}")).into());
        }
    };
    // Attached only if shutdown has not begun; else the stream is dropped.
    let attached = flight.commit(who, || core.attach(Arc::new(stream), booted.reader));
    if let Err(e) = attached {
        kill_and_reap(&child);
        return Err(e);
    }
    if let Some(err) = stderr {
        let name = cfg.name.clone();
        core.broker.defer_loop(Box::new(move |lp| {
            crate::logging::watch_lines(lp, err, move |line| {
                tracing::warn!(target: "mitogen::child", context = name.as_str(), "stderr: {line}")
            })
        }));
    }
    crate::router::control::announce_added(core, cfg.context_id, &cfg.name);
    Ok(Context::new(core.clone(), cfg.context_id, &cfg.name).with_upload(booted.uploaded))
}

/// Ends a transport whose bootstrap failed: SIGKILL (unless the bootstrap
/// already reaped it) and reap, within a bound.
pub(crate) fn kill_and_reap(child: &crate::child::ChildProc) {
    child.kill_and_reap(Duration::from_secs(5));
}
