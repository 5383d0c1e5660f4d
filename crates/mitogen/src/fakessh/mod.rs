//! Running a local tool whose `ssh` goes over an existing context (the
//! seed's `mitogen.fakessh`).
//!
//! Why: rsync, scp, git and many other tools know how to reach a remote
//! machine through `ssh`. A program that already holds a [`Context`] —
//! behind sudo, through a chain of ssh hops, in a container — should be
//! able to use those tools *there* without new logins, keys, host keys or
//! open ports. [`run`] starts the tool with an `ssh` of its own first on
//! its `PATH`; every time the tool runs that `ssh`, the command it names
//! runs on the destination context instead (`sh -c COMMAND`, in the
//! context's home directory), with stdin, stdout and stderr streamed both
//! ways and its exit status (or signal) returned to the tool. Any number
//! of invocations per run, concurrent ones too.
//!
//! ```no_run
//! # fn demo(router: &mitogen::Router) -> mitogen::Result<()> {
//! use std::time::Duration;
//! let web = router.ssh("web1").connect()?;
//! let root = router.sudo().via(&web).connect()?;
//! // The host name is ignored: `root` decides where the command runs.
//! let status = mitogen::fakessh::run(
//!     &root,
//!     &["rsync", "-a", "site/", "any:/srv/www/"],
//!     Some(Duration::from_secs(600)),
//! )?;
//! assert!(status.success());
//! # Ok(()) }
//! ```
//!
//! How (`docs/ARCHITECTURE.md`, "fakessh", has the details):
//!
//! - The fake `ssh` is this very program: a private directory (mode
//!   0700) holds a link `ssh` to this executable, and a Unix socket (mode
//!   0600, never TCP) where a listener of this run waits. `mitogen::main`
//!   notices, before anything else, that it was run as that `ssh`
//!   ([`SOCKET_ENV`] set, argument 0 named `ssh`), reads OpenSSH's
//!   command line (`-l`, `-p`, `-o`, `-s`, clustered flags, options after
//!   the host; forwarding is refused), and hands its standard input,
//!   output and error to the listener with `SCM_RIGHTS`.
//! - The listener checks the peer's user (`SO_PEERCRED`) and the run's
//!   random token, then runs the command on the destination with a
//!   concurrent remote function and pumps the bytes with bulk streams:
//!   bounded by a window in each direction, end of file passed on (the
//!   tool closing stdin closes the command's).
//! - The deadline kills the tool's process group and every remote
//!   command's group (SIGTERM, then SIGKILL), and the directory, link and
//!   socket are removed however the run ends.
//!
//! The host, user and port a tool passes are accepted and ignored. Tools
//! that run `ssh` by name (rsync, git, most scripts) need nothing more;
//! scp runs `/usr/bin/ssh` unless given `-S`: pass
//! `-S ssh` (found on `PATH`), or the path in [`SSH_ENV`]. Modern scp
//! speaks SFTP (`ssh -s host sftp`): the destination needs an
//! `sftp-server` (`openssh-sftp-server`), or use `scp -O`.

mod argv;
mod fdio;
mod remote;
mod session;
mod shim;
mod wire;

pub(crate) use shim::enter_if_invoked;
pub use shim::{SOCKET_ENV, SSH_ENV, TOKEN_ENV};

use crate::child::ChildProc;
use crate::context::Context;
use crate::error::{Result, StreamError, TimeoutError};
use std::ffi::{OsStr, OsString};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// Runs `args` (the tool and its arguments) with an `ssh` that runs
/// every command on `dest`, and returns the tool's exit status. The tool
/// inherits this process's standard input, output and error. The
/// program must enter through [`crate::main()`] (`#[mitogen::main]`), which
/// is where it becomes the tool's `ssh`; otherwise this fails at once.
///
/// `deadline`: the whole run's limit; when it passes, the tool and the
/// remote commands are killed and the result is a [`TimeoutError`].
///
/// This is [`Tool::new`] with a [`Command`] made of `args`; use [`Tool`]
/// to set the tool's environment, directory or redirections.
pub fn run<S: AsRef<OsStr>>(
    dest: &Context,
    args: &[S],
    deadline: Option<Duration>,
) -> Result<ExitStatus> {
    let Some((prog, rest)) = args.split_first() else {
        return Err(
            StreamError::with_kind("fakessh::run: no tool given", ErrorKind::InvalidInput).into(),
        );
    };
    let mut cmd = Command::new(prog);
    cmd.args(rest);
    let mut tool = Tool::new(dest, cmd);
    if let Some(d) = deadline {
        tool = tool.deadline(d);
    }
    tool.status()
}

/// A tool to run with a fake `ssh` reaching `dest`, built from a
/// [`Command`] (its environment, directory and redirections are kept;
/// `PATH` gets the fake `ssh`'s directory in front).
#[derive(Debug)]
pub struct Tool {
    dest: Context,
    cmd: Command,
    deadline: Option<Duration>,
}

impl Tool {
    /// The tool `cmd`, whose `ssh` commands run on `dest`.
    pub fn new(dest: &Context, cmd: Command) -> Tool {
        Tool {
            dest: dest.clone(),
            cmd,
            deadline: None,
        }
    }

    /// Kills the tool and its remote commands after `d` (default: no
    /// limit).
    pub fn deadline(mut self, d: Duration) -> Tool {
        self.deadline = Some(d);
        self
    }

    /// Runs the tool to its end and returns its exit status, or a
    /// [`TimeoutError`] when the deadline killed it.
    pub fn status(mut self) -> Result<ExitStatus> {
        let started = Instant::now();
        if !shim::entered() {
            return Err(StreamError::with_kind(
                "fakessh needs this program to enter through mitogen::main \
                 (#[mitogen::main]): it is the tool's ssh",
                ErrorKind::Unsupported,
            )
            .into());
        }
        let dir = PrivateDir::create()?;
        let exe = std::env::current_exe()
            .map_err(|e| StreamError::io("fakessh: the path of this program", e))?;
        let ssh = dir.path.join("ssh");
        std::os::unix::fs::symlink(&exe, &ssh)
            .map_err(|e| StreamError::io(format!("fakessh: creating {}", ssh.display()), e))?;
        let sock_path = dir.path.join("sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock_path)
            .map_err(|e| StreamError::io(format!("fakessh: binding {}", sock_path.display()), e))?;
        std::fs::set_permissions(&sock_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StreamError::io(format!("fakessh: chmod {}", sock_path.display()), e))?;
        let token = random_hex()?;
        let mut server = session::Server::start(&self.dest, listener, token.clone())
            .map_err(|e| StreamError::io("fakessh: starting the listener", e))?;
        let path = tool_path(&self.cmd, &dir.path);
        self.cmd
            .env("PATH", path)
            .env(SOCKET_ENV, &sock_path)
            .env(TOKEN_ENV, &token)
            .env(SSH_ENV, &ssh)
            .process_group(0);
        let name = self.cmd.get_program().to_string_lossy().into_owned();
        let child = self
            .cmd
            .spawn()
            .map_err(|e| StreamError::io(format!("fakessh: starting {name}"), e))?;
        let proc = ChildProc::adopt(child.id() as i32);
        drop(child); // std's handle never waits: `proc` does
        let outcome = wait_tool(&proc, self.deadline.map(|d| started + d));
        // Whatever happened, no command of this run outlives it.
        let all_ended = server.stop(remote::KILL_GRACE * 4);
        if !all_ended {
            tracing::warn!("mitogen fakessh: a session of {name} did not end in time");
        }
        drop(dir);
        match outcome {
            Ok(Some(s)) => Ok(s),
            Ok(None) => Err(TimeoutError::new(
                format!("running {name} through fakessh (it and its remote commands were killed)"),
                self.deadline.unwrap_or_default(),
            )
            .into()),
            Err(e) => Err(StreamError::io(format!("fakessh: waiting for {name}"), e).into()),
        }
    }
}

/// Waits for the tool; at `deadline`, kills its group (SIGTERM, SIGKILL
/// a grace later) and reaps it: `Ok(None)`.
fn wait_tool(proc: &ChildProc, deadline: Option<Instant>) -> std::io::Result<Option<ExitStatus>> {
    loop {
        let slice = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(1)),
            None => Duration::from_secs(1),
        };
        if let Some(s) = proc.wait_timeout(slice)? {
            return Ok(Some(s));
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    let _ = proc.signal_group(libc::SIGTERM);
    // Not reaped meanwhile, so the group may still be signalled.
    std::thread::sleep(remote::KILL_GRACE);
    let _ = proc.signal_group(libc::SIGKILL);
    proc.wait_timeout(Duration::from_secs(10))?;
    Ok(None)
}

/// `PATH` for the tool: the fake `ssh`'s directory, then the tool's own
/// `PATH` (set on the command, or inherited).
fn tool_path(cmd: &Command, dir: &Path) -> OsString {
    let inherited = cmd
        .get_envs()
        .find(|(k, _)| *k == "PATH")
        .map(|(_, v)| v.map(OsStr::to_os_string))
        .unwrap_or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut p = dir.as_os_str().to_os_string();
    p.push(":");
    p.push(inherited);
    p
}

/// 32 hex digits from the kernel's random source.
fn random_hex() -> Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| StreamError::io("fakessh: reading /dev/urandom", e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The run's directory: created new, mode 0700, owned by this user;
/// removed with everything in it when dropped.
#[derive(Debug)]
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create() -> Result<PrivateDir> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let mut last = None;
        for _ in 0..8 {
            let path = base.join(format!("mitogen-fakessh-{}", &random_hex()?[..16]));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => {
                    let dir = PrivateDir { path };
                    dir.check()?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(
                        StreamError::io(format!("fakessh: creating {}", path.display()), e).into(),
                    )
                }
            }
        }
        Err(StreamError::io(
            format!("fakessh: no free directory name in {}", base.display()),
            last.unwrap_or_else(|| ErrorKind::AlreadyExists.into()),
        )
        .into())
    }

    /// Ours, a real directory, 0700 (a umask cannot widen it).
    fn check(&self) -> Result<()> {
        let md = std::fs::symlink_metadata(&self.path)
            .map_err(|e| StreamError::io(format!("fakessh: {}", self.path.display()), e))?;
        let me = nix::unistd::geteuid().as_raw();
        if !md.is_dir() || md.uid() != me || md.mode() & 0o777 != 0o700 {
            return Err(StreamError::with_kind(
                format!(
                    "fakessh: {} is not a private directory of uid {me} (uid {}, mode {:o})",
                    self.path.display(),
                    md.uid(),
                    md.mode() & 0o7777
                ),
                ErrorKind::PermissionDenied,
            )
            .into());
        }
        Ok(())
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            tracing::warn!("mitogen fakessh: removing {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_dir_is_0700_and_removed() {
        let d = PrivateDir::create().unwrap();
        let md = std::fs::metadata(&d.path).unwrap();
        assert_eq!(md.mode() & 0o777, 0o700);
        let p = d.path.clone();
        std::fs::write(p.join("x"), b"y").unwrap();
        drop(d);
        assert!(!p.exists());
    }

    #[test]
    fn refused_without_mitogen_main() {
        // This unit-test binary never enters through mitogen::main.
        let r = crate::Router::new().unwrap();
        let e = Tool::new(&r.myself(), Command::new("true"))
            .status()
            .unwrap_err();
        assert!(e.to_string().contains("mitogen::main"), "{e}");
    }

    #[test]
    fn path_puts_the_fake_ssh_first() {
        let mut cmd = Command::new("true");
        cmd.env("PATH", "/a:/b");
        assert_eq!(tool_path(&cmd, Path::new("/d")), OsString::from("/d:/a:/b"));
    }
}
