//! `Router::jail()`: a context inside a FreeBSD jail, through `jexec`
//! (`-U user`: the user looked up in the jail's own password database).

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::transport::container::{check_name, connect_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Texts of jexec meaning the jail is missing.
const NOT_FOUND: &[&str] = &["jexec: jail"];

/// The jail parameters; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct JailSpec {
    container: String,
    username: Option<String>,
    jexec_path: String,
}

/// Builder returned by [`Router::jail`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct JailBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: JailSpec,
}

common_options!(JailBuilder);

impl Router {
    /// Starts a context inside FreeBSD jail `container`: the seed's
    /// `jail()`.
    pub fn jail(&self, container: impl Into<String>) -> JailBuilder<'_> {
        JailBuilder {
            router: self,
            opts: Options::default(),
            spec: JailSpec {
                container: container.into(),
                username: None,
                jexec_path: "/usr/sbin/jexec".into(),
            },
        }
    }
}

impl JailBuilder<'_> {
    /// The user inside the jail (`-U`; default root).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = Some(user.into());
        self
    }

    /// The jexec program (default `/usr/sbin/jexec`).
    pub fn jexec_path(mut self, path: impl Into<String>) -> Self {
        self.spec.jexec_path = path.into();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        check_name("jail", "jail name", &self.spec.container)?;
        if let Some(u) = &self.spec.username {
            check_name("jail", "user name", u)?;
        }
        start(self.router.core(), &self.opts, &self.spec)
    }
}

impl JailSpec {
    fn argv(&self) -> Vec<String> {
        let mut a = vec![self.jexec_path.clone()];
        if let Some(u) = &self.username {
            a.extend(["-U".into(), u.clone()]);
        }
        a.push(self.container.clone());
        a
    }
}

impl Method for JailSpec {
    const TAG: &'static str = "jail";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        let tool = Tool {
            method: "jail",
            target: format!("jail {}", self.container),
            not_found: NOT_FOUND,
            pre_exec: None,
            env: None,
        };
        let mut argv = self.argv();
        let name = format!("jail.{}", self.container);
        connect_tool(core, id, name, opts, tool, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}
