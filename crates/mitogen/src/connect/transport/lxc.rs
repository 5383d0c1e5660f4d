//! `Router::lxc()`: a context inside a running LXC ("classic") container,
//! through `lxc-attach`.
//!
//! `--clear-env`: the container's processes should not see this side's
//! environment (lxc-attach then sets a default `PATH`).

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::transport::container::{check_name, connect_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Texts of `lxc-attach` meaning the container is missing or stopped.
const NOT_FOUND: &[&str] = &["failed to get init pid", "does not exist", "not running"];

/// The lxc parameters; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct LxcSpec {
    container: String,
    lxc_attach_path: String,
}

/// Builder returned by [`Router::lxc`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct LxcBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: LxcSpec,
}

common_options!(LxcBuilder);

impl Router {
    /// Starts a context inside LXC container `container`: the seed's
    /// `lxc()`.
    pub fn lxc(&self, container: impl Into<String>) -> LxcBuilder<'_> {
        LxcBuilder {
            router: self,
            opts: Options::default(),
            spec: LxcSpec {
                container: container.into(),
                lxc_attach_path: "lxc-attach".into(),
            },
        }
    }
}

impl LxcBuilder<'_> {
    /// The `lxc-attach` program (default `lxc-attach`, looked up in
    /// `PATH`).
    pub fn lxc_attach_path(mut self, path: impl Into<String>) -> Self {
        self.spec.lxc_attach_path = path.into();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        check_name("lxc", "container name", &self.spec.container)?;
        start(self.router.core(), &self.opts, &self.spec)
    }
}

impl LxcSpec {
    fn argv(&self) -> Vec<String> {
        vec![
            self.lxc_attach_path.clone(),
            "--clear-env".into(),
            "-n".into(),
            self.container.clone(),
            "--".into(),
        ]
    }
}

impl Method for LxcSpec {
    const TAG: &'static str = "lxc";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        let tool = Tool {
            method: "lxc",
            target: format!("container {}", self.container),
            not_found: NOT_FOUND,
            pre_exec: None,
            env: None,
        };
        let mut argv = self.argv();
        let name = format!("lxc.{}", self.container);
        connect_tool(core, id, name, opts, tool, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}
