//! The parameters every connection method shares ([`Options`]) and the
//! builder setters that expose them (`basic_options!` for fork,
//! `common_options!` for every method that starts a program).
//!
//! Kept apart from the methods so that every method depends on it and it
//! on none of them.

use crate::bootstrap::{AgentBinary, Config};
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::router::Core;
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
        $crate::connect::options::basic_options!($builder);

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
            parent_name: core.name.clone(),
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
            None => {
                // The stage describes this runtime too: find it while the
                // hash is computed, not after.
                crate::bootstrap::runtime::prefetch();
                AgentBinary::current()
            }
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
