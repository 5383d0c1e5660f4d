//! `Router::buildah()`: a context inside a buildah working container,
//! through `buildah run` (for preparing an image with ordinary code).

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::transport::container::{check_name, connect_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Texts of buildah meaning the container is missing.
const NOT_FOUND: &[&str] = &["container not known", "no such container"];

/// The buildah parameters; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct BuildahSpec {
    container: String,
    username: Option<String>,
    buildah_path: String,
}

/// Builder returned by [`Router::buildah`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct BuildahBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: BuildahSpec,
}

common_options!(BuildahBuilder);

impl Router {
    /// Starts a context inside buildah working container `container`.
    pub fn buildah(&self, container: impl Into<String>) -> BuildahBuilder<'_> {
        BuildahBuilder {
            router: self,
            opts: Options::default(),
            spec: BuildahSpec {
                container: container.into(),
                username: None,
                buildah_path: "buildah".into(),
            },
        }
    }
}

impl BuildahBuilder<'_> {
    /// The user inside the container (`--user`; default the image's).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = Some(user.into());
        self
    }

    /// The buildah program (default `buildah`, looked up in `PATH`).
    pub fn buildah_path(mut self, path: impl Into<String>) -> Self {
        self.spec.buildah_path = path.into();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        check_name("buildah", "container name", &self.spec.container)?;
        if let Some(u) = &self.spec.username {
            check_name("buildah", "user name", u)?;
        }
        start(self.router.core(), &self.opts, &self.spec)
    }
}

impl BuildahSpec {
    fn argv(&self) -> Vec<String> {
        let mut a = vec![self.buildah_path.clone(), "run".into()];
        if let Some(u) = &self.username {
            a.extend(["--user".into(), u.clone()]);
        }
        a.extend([self.container.clone(), "--".into()]);
        a
    }
}

impl Method for BuildahSpec {
    const TAG: &'static str = "buildah";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        let tool = Tool {
            method: "buildah",
            target: format!("container {}", self.container),
            not_found: NOT_FOUND,
            pre_exec: None,
            env: None,
        };
        let mut argv = self.argv();
        let name = format!("buildah.{}", self.container);
        connect_tool(core, id, name, opts, tool, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}
