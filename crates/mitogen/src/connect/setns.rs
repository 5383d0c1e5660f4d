//! `Router::setns()`: a context inside a container's namespaces, entered
//! directly, with no container tool between this side and the agent.
//!
//! A tool is used once, to find the container's root process
//! (`docker inspect`, `lxc-info`, `lxc info`, `machinectl show`; the `pid`
//! kind takes it as given). The namespaces (`/proc/PID/ns/*`) and root
//! directory (`/proc/PID/root`) are opened here; then, in the child
//! between fork and exec — single-threaded, which entering a mount (or
//! user) namespace requires — it joins each namespace that differs from
//! ours, changes root, and forks once more, since a new pid namespace
//! holds only the children of whoever joined it. That grandchild drops to
//! `username` (looked up in the container's own `/etc/passwd`), asks to be
//! killed if its parent dies, and executes the container's `/bin/sh` with
//! the first stage, in an environment of its own (`PATH`, `HOME`, `USER`).
//! The middle process only waits and reports its status, holding nothing
//! open, so the protocol socket's end of file still means the agent is
//! gone.

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::spawn::PreExec;
use crate::connect::sys;
use crate::connect::transport::container::{check_name, connect_tool, run_tool, Tool};
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Result, StreamError, TargetError, TargetErrorKind};
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

/// Which tool knows the container's root process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetnsKind {
    /// `docker inspect` (also podman through its Docker-compatible API).
    Docker,
    /// LXC's `lxc-info`.
    Lxc,
    /// LXD's `lxc info`.
    Lxd,
    /// systemd's `machinectl show` (systemd-nspawn and other machines).
    Machinectl,
    /// The container is a process id: enter that process's namespaces.
    Pid,
}

/// The setns parameters; travel to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SetnsSpec {
    pub(crate) container: String,
    pub(crate) kind: SetnsKind,
    pub(crate) username: Option<String>,
    pub(crate) docker_path: String,
    pub(crate) lxc_path: String,
    pub(crate) lxc_info_path: String,
    pub(crate) machinectl_path: String,
}

/// Builder returned by [`Router::setns`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct SetnsBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: SetnsSpec,
}

common_options!(SetnsBuilder);

impl SetnsSpec {
    pub(crate) fn new(container: String, kind: SetnsKind) -> SetnsSpec {
        SetnsSpec {
            container,
            kind,
            username: None,
            docker_path: "docker".into(),
            lxc_path: "lxc".into(),
            lxc_info_path: "lxc-info".into(),
            machinectl_path: "machinectl".into(),
        }
    }
}

impl Router {
    /// Starts a context inside the namespaces and root directory of a
    /// running container, found with the tool of `kind`: the seed's
    /// `setns()`. Needs root (or `CAP_SYS_ADMIN` and `CAP_SYS_CHROOT`).
    ///
    /// ```no_run
    /// # fn demo(router: &mitogen::Router) -> mitogen::Result<()> {
    /// use mitogen::SetnsKind;
    /// let ctx = router.setns("web1", SetnsKind::Docker).username("www").connect()?;
    /// # Ok(()) }
    /// ```
    pub fn setns(&self, container: impl Into<String>, kind: SetnsKind) -> SetnsBuilder<'_> {
        SetnsBuilder {
            router: self,
            opts: Options::default(),
            spec: SetnsSpec::new(container.into(), kind),
        }
    }
}

impl SetnsBuilder<'_> {
    /// The user inside the container (default root), looked up in the
    /// container's `/etc/passwd`.
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = Some(user.into());
        self
    }

    /// The docker program, for [`SetnsKind::Docker`] (default `docker`).
    pub fn docker_path(mut self, path: impl Into<String>) -> Self {
        self.spec.docker_path = path.into();
        self
    }

    /// LXD's `lxc` program, for [`SetnsKind::Lxd`] (default `lxc`).
    pub fn lxc_path(mut self, path: impl Into<String>) -> Self {
        self.spec.lxc_path = path.into();
        self
    }

    /// LXC's `lxc-info` program, for [`SetnsKind::Lxc`] (default
    /// `lxc-info`).
    pub fn lxc_info_path(mut self, path: impl Into<String>) -> Self {
        self.spec.lxc_info_path = path.into();
        self
    }

    /// The machinectl program, for [`SetnsKind::Machinectl`] (default
    /// `machinectl`).
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

impl SetnsSpec {
    pub(crate) fn validate(&self) -> Result<()> {
        check_name("setns", "container name", &self.container)?;
        if let Some(u) = &self.username {
            check_name("setns", "user name", u)?;
        }
        Ok(())
    }

    fn method(&self) -> &'static str {
        match self.kind {
            SetnsKind::Machinectl => "machinectl",
            _ => "setns",
        }
    }

    fn tool(&self) -> Tool {
        let kind = format!("{:?}", self.kind).to_ascii_lowercase();
        Tool {
            method: self.method(),
            target: format!("{kind} container {}", self.container),
            not_found: &[],
            pre_exec: None,
            env: None,
        }
    }

    /// The argv that prints the container's root pid, and how to read it.
    pub(crate) fn lookup_argv(&self) -> Option<Vec<String>> {
        let c = self.container.clone();
        Some(match self.kind {
            SetnsKind::Docker => vec![
                self.docker_path.clone(),
                "inspect".into(),
                "--format={{.State.Pid}}".into(),
                c,
            ],
            SetnsKind::Lxc => vec![
                self.lxc_info_path.clone(),
                "-n".into(),
                c,
                "-p".into(),
                "-H".into(),
            ],
            SetnsKind::Lxd => vec![self.lxc_path.clone(), "info".into(), c],
            SetnsKind::Machinectl => vec![
                self.machinectl_path.clone(),
                "show".into(),
                "--property=Leader".into(),
                "--value".into(),
                c,
            ],
            SetnsKind::Pid => return None,
        })
    }

    /// The container's root process.
    fn find_pid(&self, tool: &Tool, timeout: Duration) -> Result<u32> {
        let not_found = |said: &str| -> crate::Error {
            TargetError::new(
                TargetErrorKind::NotFound,
                format!("{}: {} not found: {said}", tool.method, tool.target),
            )
            .into()
        };
        let text = match self.lookup_argv() {
            None => self.container.clone(),
            Some(argv) => {
                let out = run_tool(tool, &argv, timeout)?;
                if out.code != Some(0) {
                    return Err(not_found(out.stderr.trim()));
                }
                out.stdout
            }
        };
        // `lxc info` prints "PID: N" among other lines; the others a number.
        let pid = text.lines().find_map(|l| {
            let l = l.trim();
            let v = match l.split_once(':') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("pid") => v.trim(),
                Some(_) => return None,
                None => l,
            };
            v.parse::<u32>().ok()
        });
        match pid {
            Some(p) if p > 0 && std::path::Path::new(&format!("/proc/{p}/ns")).exists() => Ok(p),
            _ => Err(not_found(&format!(
                "no running process ({:?})",
                text.trim()
            ))),
        }
    }
}

/// A user of the container: uid, gid, home, from its `/etc/passwd`, read
/// beneath its root (the container's processes may have made the file a
/// link out of it, or a FIFO): at most 1 MiB of a regular file.
fn passwd_entry(root: &std::fs::File, user: &str) -> Result<Option<(u32, u32, String)>> {
    use std::io::Read;
    let fd = sys::open_in_root(root.as_raw_fd(), c"etc/passwd")
        .map_err(|e| StreamError::io("setns: cannot open the container's /etc/passwd", e))?;
    let mut f = std::fs::File::from(fd);
    let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
    if !regular {
        return Err(
            StreamError::new("setns: the container's /etc/passwd is not a regular file").into(),
        );
    }
    let mut text = String::new();
    (&mut f)
        .take(1 << 20)
        .read_to_string(&mut text)
        .map_err(|e| StreamError::io("setns: cannot read the container's /etc/passwd", e))?;
    Ok(text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 6 || f[0] != user {
            return None;
        }
        Some((f[2].parse().ok()?, f[3].parse().ok()?, f[5].to_string()))
    }))
}

/// The namespaces of `pid` that differ from ours, user first, opened.
fn open_namespaces(pid: u32) -> Result<Vec<OwnedFd>> {
    let mut fds = Vec::new();
    for ns in ["user", "cgroup", "ipc", "uts", "net", "pid", "mnt"] {
        let theirs = format!("/proc/{pid}/ns/{ns}");
        let ours = format!("/proc/self/ns/{ns}");
        match (std::fs::read_link(&theirs), std::fs::read_link(&ours)) {
            (Ok(a), Ok(b)) if a == b => continue,
            (Err(_), _) => continue, // a kind this kernel lacks
            _ => {}
        }
        let f = std::fs::File::open(&theirs)
            .map_err(|e| StreamError::io(format!("setns: cannot open {theirs}"), e))?;
        fds.push(OwnedFd::from(f));
    }
    Ok(fds)
}

/// What runs between fork and exec: join, change root, fork, drop
/// privileges. Allocates nothing.
fn enter(namespaces: Vec<OwnedFd>, root: OwnedFd, ids: Option<(u32, u32)>) -> PreExec {
    Box::new(move || {
        for ns in &namespaces {
            sys::setns(ns.as_raw_fd())?;
        }
        sys::chroot_fd(root.as_raw_fd())?;
        // SAFETY: the child of this single-threaded process only calls
        // async-signal-safe functions until it execs.
        let child = unsafe { sys::fork() }?;
        if child > 0 {
            // The middle process: holds nothing, reports the status.
            sys::close_from(0);
            sys::exit_now(sys::wait_code(child));
        }
        if let Some((uid, gid)) = ids {
            sys::become_ids(uid, gid)?;
        }
        sys::die_with_parent()?;
        Ok(())
    })
}

/// Starts context `id` in the namespaces of `spec`'s container.
pub(crate) fn connect_here(
    spec: &SetnsSpec,
    core: &Arc<Core>,
    id: u32,
    opts: &Options,
) -> Result<Context> {
    spec.validate()?;
    let mut tool = spec.tool();
    let began = std::time::Instant::now();
    let pid = spec.find_pid(&tool, opts.connect_timeout)?;
    // The lookup's time comes out of the connect's budget.
    let mut opts = opts.clone();
    opts.connect_timeout = opts
        .connect_timeout
        .saturating_sub(began.elapsed())
        .max(Duration::from_millis(1));
    let user = spec.username.as_deref().unwrap_or("root");
    let root = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|e| StreamError::io(format!("{}: cannot open its root", tool.method), e))?;
    let entry = match passwd_entry(&root, user) {
        Ok(e) => e,
        // Without a readable passwd, root can still go in.
        Err(e) if spec.username.is_some() => return Err(e),
        Err(_) => None,
    };
    let (uid, gid, home) = match entry {
        Some(e) => e,
        None if spec.username.is_none() => (0, 0, "/root".into()),
        None => {
            return Err(StreamError::new(format!(
                "{}: no user {user:?} in the /etc/passwd of {}",
                tool.method, tool.target
            ))
            .into())
        }
    };
    let ids = spec.username.is_some().then_some((uid, gid));
    tool.pre_exec = Some(enter(open_namespaces(pid)?, OwnedFd::from(root), ids));
    tool.env = Some(vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), home),
        ("USER".into(), user.into()),
        ("LOGNAME".into(), user.into()),
    ]);
    let name = format!("{}.{}", spec.method(), spec.container);
    connect_tool(core, id, name, &opts, tool, |script| {
        vec!["/bin/sh".into(), "-c".into(), script.into()]
    })
}

impl Method for SetnsSpec {
    const TAG: &'static str = "setns";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        connect_here(self, core, id, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let s = SetnsSpec::new("c1".into(), SetnsKind::Docker);
        assert_eq!(
            s.lookup_argv().unwrap(),
            ["docker", "inspect", "--format={{.State.Pid}}", "c1"]
        );
        let s = SetnsSpec::new("c1".into(), SetnsKind::Lxc);
        assert_eq!(
            s.lookup_argv().unwrap(),
            ["lxc-info", "-n", "c1", "-p", "-H"]
        );
        assert!(SetnsSpec::new("1".into(), SetnsKind::Pid)
            .lookup_argv()
            .is_none());
    }

    /// The container's passwd is read beneath its root: a link out of it
    /// does not reach this machine's files, and a FIFO does not block.
    #[test]
    fn passwd_stays_in_the_container() {
        let dir = std::env::temp_dir().join(format!("mitogen-setns-{}", std::process::id()));
        let etc = dir.join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        let open_root = || std::fs::File::open(&dir).unwrap();
        let text = "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n";
        std::fs::write(etc.join("passwd"), text).unwrap();
        let e = passwd_entry(&open_root(), "www").unwrap();
        assert_eq!(e, Some((33, 34, "/var/www".to_string())));
        assert_eq!(passwd_entry(&open_root(), "nobody").unwrap(), None);
        std::fs::remove_file(etc.join("passwd")).unwrap();
        // An absolute link resolves inside the root: to a file not there.
        std::os::unix::fs::symlink("/etc/hostname", etc.join("passwd")).unwrap();
        assert!(passwd_entry(&open_root(), "root").is_err());
        std::fs::remove_file(etc.join("passwd")).unwrap();
        let c = std::ffi::CString::new(etc.join("passwd").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid path for mkfifo.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t0 = std::time::Instant::now();
        let r = passwd_entry(&open_root(), "root");
        assert!(r.is_err() && t0.elapsed() < Duration::from_secs(5), "{r:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
