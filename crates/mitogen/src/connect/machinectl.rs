//! `Router::machinectl()`: a context inside a systemd machine
//! (systemd-nspawn container or VM registered with systemd-machined).
//!
//! `machinectl shell` always gives its command a terminal, which would
//! stand between the agent and the binary protocol; so this asks
//! machinectl only for the machine's leader process
//! (`machinectl show --property=Leader --value NAME`) and enters it
//! directly, as `setns` does.

use crate::connect::method::start;
use crate::connect::options::common_options;
use crate::connect::setns::{SetnsKind, SetnsSpec};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::Router;

/// Builder returned by [`Router::machinectl`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct MachinectlBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: SetnsSpec,
}

common_options!(MachinectlBuilder);

impl Router {
    /// Starts a context inside systemd machine `machine`, found with
    /// `machinectl` and entered like [`Router::setns`] (needs root).
    pub fn machinectl(&self, machine: impl Into<String>) -> MachinectlBuilder<'_> {
        MachinectlBuilder {
            router: self,
            opts: Options::default(),
            spec: SetnsSpec::new(machine.into(), SetnsKind::Machinectl),
        }
    }
}

impl MachinectlBuilder<'_> {
    /// The user inside the machine (default root).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = Some(user.into());
        self
    }

    /// The machinectl program (default `machinectl`, looked up in `PATH`).
    pub fn machinectl_path(mut self, path: impl Into<String>) -> Self {
        self.spec.machinectl_path = path.into();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        self.spec.validate()?;
        start(self.router.core(), &self.opts, &self.spec)
    }
}
