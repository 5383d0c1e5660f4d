//! `Router::kubectl()`: a context inside a Kubernetes pod, through
//! `kubectl exec -i` (stdin attached, no terminal: `-t` would put a line
//! discipline in the binary protocol's way).

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::transport::container::{check_name, connect_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::Result;
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Texts of kubectl meaning the pod is missing.
const NOT_FOUND: &[&str] = &["(notfound)"];

/// The kubectl parameters; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct KubectlSpec {
    pod: String,
    kubectl_path: String,
    kubectl_args: Vec<String>,
}

/// Builder returned by [`Router::kubectl`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct KubectlBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: KubectlSpec,
}

common_options!(KubectlBuilder);

impl Router {
    /// Starts a context inside Kubernetes pod `pod`: the seed's
    /// `kubectl()`.
    pub fn kubectl(&self, pod: impl Into<String>) -> KubectlBuilder<'_> {
        KubectlBuilder {
            router: self,
            opts: Options::default(),
            spec: KubectlSpec {
                pod: pod.into(),
                kubectl_path: "kubectl".into(),
                kubectl_args: Vec::new(),
            },
        }
    }
}

impl KubectlBuilder<'_> {
    /// The kubectl program (default `kubectl`, looked up in `PATH`).
    pub fn kubectl_path(mut self, path: impl Into<String>) -> Self {
        self.spec.kubectl_path = path.into();
        self
    }

    /// More arguments for kubectl, placed before `exec`
    /// (e.g. `["--context", "prod", "-n", "web"]`).
    pub fn kubectl_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.spec.kubectl_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        check_name("kubectl", "pod name", &self.spec.pod)?;
        start(self.router.core(), &self.opts, &self.spec)
    }
}

impl KubectlSpec {
    fn argv(&self) -> Vec<String> {
        let mut a = vec![self.kubectl_path.clone()];
        a.extend(self.kubectl_args.iter().cloned());
        a.extend(["exec".into(), "-i".into(), self.pod.clone(), "--".into()]);
        a
    }
}

impl Method for KubectlSpec {
    const TAG: &'static str = "kubectl";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        let tool = Tool {
            method: "kubectl",
            target: format!("pod {}", self.pod),
            not_found: NOT_FOUND,
            pre_exec: None,
            env: None,
        };
        let mut argv = self.argv();
        let name = format!("kubectl.{}", self.pod);
        connect_tool(core, id, name, opts, tool, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}
