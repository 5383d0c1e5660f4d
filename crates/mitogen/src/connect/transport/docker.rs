//! `Router::docker()` and `Router::podman()`: a context inside a running
//! container (`exec -i`), or inside a temporary one made from an image
//! (`run --rm -i`) that is removed when the context ends.
//!
//! The two tools take the same arguments, so one spec serves both
//! ([`EngineSpec`]); `docker` also reaches podman through its
//! Docker-compatible API (`DOCKER_HOST`), which is how the tests run the
//! real docker CLI.
//!
//! # Temporary containers
//!
//! `run --rm -i`: the container's process is the first stage, then the
//! agent, whose stdin is this side's socket through the tool. When the
//! context ends, or this process dies (even by `kill -9`), the socket
//! closes, the agent sees end of file and exits, the container stops and
//! the engine removes it (`--rm`). As a net for a tool killed with us (its
//! process group), each temporary container is labelled
//! `mitogen.temporary` and named `mitogen-tmp-HOST-PID-START-N` after the
//! process that made it: when another is made, a sweep (on a thread of its
//! own, off the connect's path, each tool run bounded) removes the ones
//! whose maker is dead (same host, pid gone or started at another time).
//! Images are never pulled unless asked ([`DockerBuilder::pull`]): a
//! download would eat the connect timeout, and tests talk to no registry.

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::transport::container::{check_name, connect_tool, run_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Texts of docker and podman meaning the container or image is missing.
const NOT_FOUND: &[&str] = &[
    "no such container",
    "no such image",
    "image not known",
    "unable to find image",
    "is not running",
];

/// The docker or podman parameters; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EngineSpec {
    tool: String,
    container: Option<String>,
    image: Option<String>,
    username: Option<String>,
    path: String,
    pull: bool,
}

/// `docker()`'s parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct DockerSpec(EngineSpec);

/// `podman()`'s parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct PodmanSpec(EngineSpec);

impl Method for DockerSpec {
    const TAG: &'static str = "docker";
    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        self.0.connect_here(core, id, opts)
    }
}

impl Method for PodmanSpec {
    const TAG: &'static str = "podman";
    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        self.0.connect_here(core, id, opts)
    }
}

/// Builder returned by [`Router::docker`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct DockerBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: EngineSpec,
}

/// Builder returned by [`Router::podman`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct PodmanBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: EngineSpec,
}

common_options!(DockerBuilder);
common_options!(PodmanBuilder);

fn engine(tool: &str) -> EngineSpec {
    EngineSpec {
        tool: tool.into(),
        container: None,
        image: None,
        username: None,
        path: tool.into(),
        pull: false,
    }
}

impl Router {
    /// Starts a context inside a Docker container: the seed's `docker()`.
    /// Name a running container with [`DockerBuilder::container`], or an
    /// image to run a temporary one with [`DockerBuilder::image`].
    ///
    /// ```no_run
    /// # fn demo(router: &mitogen::Router) -> mitogen::Result<()> {
    /// let web = router.docker().container("web1").username("www").connect()?;
    /// let tmp = router.docker().image("alpine:3.20").connect()?;
    /// # Ok(()) }
    /// ```
    pub fn docker(&self) -> DockerBuilder<'_> {
        DockerBuilder {
            router: self,
            opts: Options::default(),
            spec: engine("docker"),
        }
    }

    /// Starts a context inside a podman container: like
    /// [`Router::docker`], with the `podman` program.
    pub fn podman(&self) -> PodmanBuilder<'_> {
        PodmanBuilder {
            router: self,
            opts: Options::default(),
            spec: engine("podman"),
        }
    }
}

macro_rules! engine_options {
    ($builder:ident, $tool:literal, $path:ident, $spec:ident) => {
        impl $builder<'_> {
            /// The running container to enter (`exec -i`).
            pub fn container(mut self, name: impl Into<String>) -> Self {
                self.spec.container = Some(name.into());
                self
            }

            /// The image to run a temporary container of (`run --rm -i`),
            /// removed when the context ends.
            pub fn image(mut self, image: impl Into<String>) -> Self {
                self.spec.image = Some(image.into());
                self
            }

            /// The user inside the container (`-u`; default the image's,
            /// usually root).
            pub fn username(mut self, user: impl Into<String>) -> Self {
                self.spec.username = Some(user.into());
                self
            }

            #[doc = concat!("The ", $tool, " program (default `", $tool, "`, looked up in `PATH`).")]
            pub fn $path(mut self, path: impl Into<String>) -> Self {
                self.spec.path = path.into();
                self
            }

            /// Pull a missing image (default `false`: `--pull=never`, a
            /// missing image is a [`crate::TargetError`] at once).
            pub fn pull(mut self, on: bool) -> Self {
                self.spec.pull = on;
                self
            }

            /// Starts the context and waits until it is ready for calls.
            pub fn connect(self) -> Result<Context> {
                self.spec.validate()?;
                start(self.router.core(), &self.opts, &$spec(self.spec))
            }
        }
    };
}

engine_options!(DockerBuilder, "docker", docker_path, DockerSpec);
engine_options!(PodmanBuilder, "podman", podman_path, PodmanSpec);

/// Temporary containers made by this process so far.
static TEMPORARY: AtomicU64 = AtomicU64::new(0);

/// Label on every temporary container.
pub(crate) const TEMPORARY_LABEL: &str = "mitogen.temporary";

impl EngineSpec {
    fn validate(&self) -> Result<()> {
        let t = &self.tool;
        match (&self.container, &self.image) {
            (Some(c), None) => check_name(t, "container name", c)?,
            (None, Some(i)) => check_name(t, "image name", i)?,
            _ => {
                return Err(StreamError::new(format!(
                    "{t}: give exactly one of container() and image()"
                ))
                .into())
            }
        }
        if let Some(u) = &self.username {
            check_name(t, "user name", u)?;
        }
        Ok(())
    }

    fn tool(&self) -> Tool {
        let target = match (&self.container, &self.image) {
            (Some(c), _) => format!("container {c}"),
            (_, Some(i)) => format!("image {i}"),
            _ => String::new(),
        };
        Tool {
            method: if self.tool == "podman" {
                "podman"
            } else {
                "docker"
            },
            target,
            not_found: NOT_FOUND,
            pre_exec: None,
            env: None,
        }
    }

    /// The argv, minus the stage.
    fn argv(&self) -> Vec<String> {
        let mut a = vec![self.path.clone()];
        match (&self.container, &self.image) {
            (Some(c), _) => {
                a.extend(["exec".into(), "-i".into()]);
                if let Some(u) = &self.username {
                    a.extend(["-u".into(), u.clone()]);
                }
                a.push(c.clone());
            }
            (_, Some(i)) => {
                let n = TEMPORARY.fetch_add(1, Ordering::Relaxed);
                a.extend([
                    "run".into(),
                    "--rm".into(),
                    "-i".into(),
                    format!("--pull={}", if self.pull { "missing" } else { "never" }),
                    "--label".into(),
                    format!("{TEMPORARY_LABEL}=1"),
                    "--name".into(),
                    format!("{}-{n}", owner_prefix()),
                ]);
                if let Some(u) = &self.username {
                    a.extend(["-u".into(), u.clone()]);
                }
                a.push(i.clone());
            }
            _ => {}
        }
        a
    }

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        self.validate()?;
        let tool = self.tool();
        if self.image.is_some() {
            // Best effort, off the connect's path.
            let (path, t) = (self.path.clone(), self.tool());
            let _ = std::thread::Builder::new()
                .name("mitogen-sweep".into())
                .spawn(move || sweep(&path, &t));
        }
        let what = self.container.as_ref().or(self.image.as_ref());
        let name = format!("{}.{}", tool.method, what.map_or("", String::as_str));
        let mut argv = self.argv();
        connect_tool(core, id, name, opts, tool, |script| {
            argv.extend(["/bin/sh".into(), "-c".into(), script.into()]);
            argv
        })
    }
}

/// This process, as temporary containers name their maker:
/// `mitogen-tmp-HOST-PID-START` (START: its start time in clock ticks).
fn owner_prefix() -> String {
    let pid = std::process::id();
    format!(
        "mitogen-tmp-{}-{pid}-{}",
        host(),
        start_time(pid).unwrap_or(0)
    )
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// A process's start time (field 22 of `/proc/PID/stat`).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Removes temporary containers whose maker, on this host, is gone.
/// Best effort, bounded: a failure is logged, never fatal.
fn sweep(path: &str, tool: &Tool) {
    let list = [
        path.to_string(),
        "ps".into(),
        "-a".into(),
        "--filter".into(),
        format!("label={TEMPORARY_LABEL}"),
        "--format".into(),
        "{{.ID}} {{.Names}}".into(),
    ];
    let out = match run_tool(tool, &list, Duration::from_secs(10)) {
        Ok(o) if o.code == Some(0) => o.stdout,
        Ok(o) => return tracing::debug!("mitogen: sweep: {}", o.stderr.trim()),
        Err(e) => return tracing::debug!("mitogen: sweep: {e}"),
    };
    let here = format!("mitogen-tmp-{}-", host());
    for line in out.lines() {
        let Some((id, name)) = line.split_once(' ') else {
            continue;
        };
        let Some(rest) = name.trim().strip_prefix(&here) else {
            continue;
        };
        let mut f = rest.split('-');
        let (Some(pid), Some(start)) = (f.next(), f.next()) else {
            continue;
        };
        let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
            continue;
        };
        if start_time(pid) == Some(start) {
            continue; // its maker lives
        }
        let rm = [path.to_string(), "rm".into(), "-f".into(), id.to_string()];
        match run_tool(tool, &rm, Duration::from_secs(20)) {
            Ok(_) => {
                tracing::debug!("mitogen: removed temporary container {name} of a dead process")
            }
            Err(e) => tracing::debug!("mitogen: sweep: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_for_exec_and_run() {
        let mut s = engine("docker");
        s.container = Some("web".into());
        s.username = Some("www".into());
        assert_eq!(s.argv(), ["docker", "exec", "-i", "-u", "www", "web"]);
        let mut s = engine("podman");
        s.image = Some("alpine".into());
        let a = s.argv();
        assert_eq!(a[..5], ["podman", "run", "--rm", "-i", "--pull=never"]);
        assert!(a[8].starts_with("mitogen-tmp-"), "{a:?}");
        assert_eq!(a.last().map(String::as_str), Some("alpine"));
    }

    #[test]
    fn exactly_one_target() {
        assert!(engine("docker").validate().is_err());
        let mut s = engine("docker");
        s.container = Some("a".into());
        s.image = Some("b".into());
        assert!(s.validate().is_err());
        s.image = None;
        s.container = Some("-x".into());
        assert!(s.validate().is_err());
    }

    #[test]
    fn own_start_time_is_known() {
        assert!(start_time(std::process::id()).is_some());
        assert!(owner_prefix().starts_with("mitogen-tmp-"));
    }
}
