//! `Router::lxd()` and `Router::incus()`: a context inside an LXD or Incus
//! instance, through `lxc exec` / `incus exec` (the two tools share their
//! syntax; Incus is LXD's community fork).
//!
//! `--mode=non-interactive`: no terminal, so the binary protocol passes
//! untouched.

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::transport::container::{check_name, connect_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Texts of lxc/incus meaning the instance is missing or stopped.
const NOT_FOUND: &[&str] = &["instance not found", "is not running"];

/// The parameters of either tool; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ExecSpec {
    method: String,
    container: String,
    path: String,
}

/// `lxd()`'s parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct LxdSpec(ExecSpec);

/// `incus()`'s parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct IncusSpec(ExecSpec);

/// Builder returned by [`Router::lxd`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct LxdBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: ExecSpec,
}

/// Builder returned by [`Router::incus`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct IncusBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: ExecSpec,
}

common_options!(LxdBuilder);
common_options!(IncusBuilder);

impl Router {
    /// Starts a context inside LXD instance `container` with the `lxc`
    /// program: the seed's second `lxc()` (named `lxd` here, as in its
    /// Python module).
    pub fn lxd(&self, container: impl Into<String>) -> LxdBuilder<'_> {
        LxdBuilder {
            router: self,
            opts: Options::default(),
            spec: ExecSpec {
                method: "lxd".into(),
                container: container.into(),
                path: "lxc".into(),
            },
        }
    }

    /// Starts a context inside Incus instance `container` with the
    /// `incus` program.
    pub fn incus(&self, container: impl Into<String>) -> IncusBuilder<'_> {
        IncusBuilder {
            router: self,
            opts: Options::default(),
            spec: ExecSpec {
                method: "incus".into(),
                container: container.into(),
                path: "incus".into(),
            },
        }
    }
}

impl LxdBuilder<'_> {
    /// LXD's `lxc` program (default `lxc`, looked up in `PATH`).
    pub fn lxc_path(mut self, path: impl Into<String>) -> Self {
        self.spec.path = path.into();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        check_name("lxd", "container name", &self.spec.container)?;
        start(self.router.core(), &self.opts, &LxdSpec(self.spec))
    }
}

impl IncusBuilder<'_> {
    /// The `incus` program (default `incus`, looked up in `PATH`).
    pub fn incus_path(mut self, path: impl Into<String>) -> Self {
        self.spec.path = path.into();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        check_name("incus", "container name", &self.spec.container)?;
        start(self.router.core(), &self.opts, &IncusSpec(self.spec))
    }
}

impl ExecSpec {
    fn argv(&self) -> Vec<String> {
        vec![
            self.path.clone(),
            "exec".into(),
            "--mode=non-interactive".into(),
            self.container.clone(),
            "--".into(),
        ]
    }

    fn connect_here(
        &self,
        method: &'static str,
        core: &Arc<Core>,
        id: u32,
        opts: &Options,
    ) -> Result<Context> {
        let tool = Tool {
            method,
            target: format!("instance {}", self.container),
            not_found: NOT_FOUND,
            pre_exec: None,
            env: None,
        };
        let mut argv = self.argv();
        let name = format!("{method}.{}", self.container);
        connect_tool(core, id, name, opts, tool, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}

impl Method for LxdSpec {
    const TAG: &'static str = "lxd";
    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        self.0.connect_here("lxd", core, id, opts)
    }
}

impl Method for IncusSpec {
    const TAG: &'static str = "incus";
    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        self.0.connect_here("incus", core, id, opts)
    }
}
