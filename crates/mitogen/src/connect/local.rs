//! `Router::local()`: a new context as a subprocess of this one, started
//! through the same first stage as remote methods, so the cache and
//! handshake are exercised by every local context.

use super::inflight::Flight;
use super::{common_options, finish, Options};
use crate::bootstrap::{stage, Spawned};
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::router::{Core, Router};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::Arc;

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
        super::start(self.router.core(), &self.opts, super::via::Method::Local)
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
    let script = stage::script(&agent.sha, agent.size, &opts.agent_command);
    let (ours, theirs) = UnixStream::pair()
        .map_err(|e| StreamError::new(format!("cannot create a socketpair: {e}")))?;
    let theirs_out = theirs
        .try_clone()
        .map_err(|e| StreamError::new(format!("cannot duplicate a socket: {e}")))?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_out)))
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| StreamError::new(format!("cannot start /bin/sh: {e}")))?;
    let pid = child.id() as i32;
    flight.set_pid(pid);
    let name = name.unwrap_or_else(|| format!("local.{pid}"));
    let sp = Spawned {
        rfd: OwnedFd::from(ours),
        wfd: None,
        stderr: child.stderr.take().map(OwnedFd::from),
        child: crate::child::ChildProc::adopt(pid),
    };
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
