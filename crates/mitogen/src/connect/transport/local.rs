//! `Router::local()`: a new context as a subprocess of this one, started
//! through the same first stage as remote methods, so the cache and
//! handshake are exercised by every local context.

use crate::bootstrap::stage;
use crate::connect::finish::finish;
use crate::connect::inflight::Flight;
use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::spawn::{spawn, How};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// `local()` has no parameters of its own.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(crate) struct LocalSpec;

impl Method for LocalSpec {
    const TAG: &'static str = "local";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        connect_here(core, id, opts.remote_name.clone(), opts)
    }
}

/// Builder returned by [`Router::local`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct LocalBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
}

common_options!(LocalBuilder);

impl Router {
    /// Starts a context on this machine as a subprocess: the seed's
    /// `local()`.
    ///
    /// ```no_run
    /// # fn demo(router: &mitogen::Router) -> mitogen::Result<()> {
    /// let ctx = router.local().remote_name("worker").connect()?;
    /// assert_eq!(ctx.name(), "worker");
    /// # Ok(()) }
    /// ```
    pub fn local(&self) -> LocalBuilder<'_> {
        LocalBuilder {
            router: self,
            opts: Options::default(),
        }
    }
}

impl LocalBuilder<'_> {
    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        start(self.router.core(), &self.opts, &LocalSpec)
    }
}

/// Starts `sh -c <stage>` with a socketpair as stdin/stdout.
pub(crate) fn connect_here(
    core: &Arc<Core>,
    id: u32,
    name: Option<String>,
    opts: &Options,
) -> Result<Context> {
    let flight = Flight::begin(&core.broker, &core.connects, opts.connect_timeout)?;
    let agent = opts.agent()?;
    let script = stage::script(&agent, &opts.agent_command);
    let argv = ["/bin/sh".to_string(), "-c".into(), script];
    let sp = spawn(&argv, How::default())?;
    let pid = sp.child.pid();
    flight.set_pid(pid);
    let name = name.unwrap_or_else(|| format!("local.{pid}"));
    let cfg = opts.config(core, id, &name, &agent);
    finish(
        core,
        sp,
        &agent,
        &cfg,
        &flight,
        &format!("{name} (local)"),
        None,
    )
}
