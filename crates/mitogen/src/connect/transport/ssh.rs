//! `Router::ssh(host)`: a context on another machine, reached with the
//! system's OpenSSH client.
//!
//! Using the real `ssh` binary means the user's `~/.ssh/config`, agent,
//! `ProxyJump` hosts and known_hosts all apply, as on the command line.
//! Without a password no question can be asked, so `ssh` runs in
//! `BatchMode` without a terminal; with one it gets a PTY for the prompt
//! only (see `tty.rs`). Host keys are checked strictly by default
//! (`StrictHostKeyChecking=yes`); `accept` records new keys
//! (`accept-new`); `ignore` is explicit. Keepalives
//! (`ServerAliveInterval`) make a dead network end the context instead of
//! leaving calls waiting.

use crate::bootstrap::stage::quote;
use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::password::Password;
use crate::connect::tty::{self, Dialog};
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How `ssh` treats the target's host key (the seed's `check_host_keys`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HostKeyCheck {
    /// Known keys must match and unknown hosts are refused (default).
    #[default]
    Enforce,
    /// Known keys must match; a new host's key is recorded.
    Accept,
    /// No checking at all, and nothing recorded.
    Ignore,
}

/// Default keepalive: a probe every 15 s, given up after 2 unanswered.
/// ssh notices a dead network one interval after its last unanswered
/// probe: within `interval × (count + 1)`, here 45 s.
pub const DEFAULT_KEEPALIVE: (Duration, u32) = (Duration::from_secs(15), 2);

/// Put in front of the first stage on an ssh target. sshd does not end a
/// session's processes when the client goes (no terminal, no SIGHUP): a
/// stage still waiting (a slow `agent_command`, a connect timed out) would
/// linger. This watchdog polls the session's sshd (`$PPID`) and, once it is
/// gone, terminates the stage's process group (the stage is its leader:
/// sshd starts the session's command in a new session). The agent stops
/// the watchdog, its only child then, as soon as it runs
/// (`MITOGEN_WATCHDOG` says there is one; see `agent.rs`): a
/// running agent ends by itself when its link closes, and a detached one
/// has left the group.
/// No `!` in it: a csh login shell expands history even in quotes.
const WATCHDOG: &str = "(while kill -0 $PPID 2>/dev/null; do sleep 1; done; kill -TERM -$$ 2>/dev/null) </dev/null >/dev/null 2>&1 & MITOGEN_WATCHDOG=1; export MITOGEN_WATCHDOG; ";

/// The ssh parameters; travels to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SshSpec {
    hostname: String,
    username: Option<String>,
    ssh_path: String,
    ssh_args: Vec<String>,
    port: Option<u16>,
    check_host_keys: HostKeyCheck,
    password: Option<Password>,
    identity_file: Option<PathBuf>,
    identities_only: bool,
    compression: bool,
    ssh_debug_level: u8,
    keepalive: (Duration, u32),
}

/// Builder returned by [`Router::ssh`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct SshBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: SshSpec,
}

common_options!(SshBuilder);

impl Router {
    /// Starts a context on `hostname` over OpenSSH: the seed's `ssh()`.
    ///
    /// ```no_run
    /// # fn demo(router: &mitogen::Router) -> mitogen::Result<()> {
    /// let web = router.ssh("web1").username("deploy").connect()?;
    /// let root = router.sudo().via(&web).connect()?;
    /// # Ok(()) }
    /// ```
    pub fn ssh(&self, hostname: impl Into<String>) -> SshBuilder<'_> {
        SshBuilder {
            router: self,
            opts: Options::default(),
            spec: SshSpec {
                hostname: hostname.into(),
                username: None,
                ssh_path: "ssh".into(),
                ssh_args: Vec::new(),
                port: None,
                check_host_keys: HostKeyCheck::Enforce,
                password: None,
                identity_file: None,
                identities_only: true,
                compression: false,
                ssh_debug_level: 0,
                keepalive: DEFAULT_KEEPALIVE,
            },
        }
    }
}

impl SshBuilder<'_> {
    /// Login name (default: what ssh picks, from `~/.ssh/config` or the
    /// local user).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = Some(user.into());
        self
    }

    /// The ssh program (default `ssh`, looked up in `PATH`).
    pub fn ssh_path(mut self, path: impl Into<String>) -> Self {
        self.spec.ssh_path = path.into();
        self
    }

    /// More arguments for ssh, placed before the host name
    /// (e.g. `["-F", "my_config"]`, `["-J", "jump"]`).
    pub fn ssh_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.spec.ssh_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Port (default: what ssh picks).
    pub fn port(mut self, port: u16) -> Self {
        self.spec.port = Some(port);
        self
    }

    /// Host key checking (default [`HostKeyCheck::Enforce`]).
    pub fn check_host_keys(mut self, mode: HostKeyCheck) -> Self {
        self.spec.check_host_keys = mode;
        self
    }

    /// Password to type when ssh asks for one. Without it, a password
    /// prompt is a [`crate::PasswordError`].
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.spec.password = Some(Password::new(password));
        self
    }

    /// Private key file to authenticate with (`-i`).
    pub fn identity_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.spec.identity_file = Some(path.into());
        self
    }

    /// With a password or an identity file, use only those (default
    /// `true`): `IdentitiesOnly=yes`, and with a password and no identity
    /// file no public key authentication at all (no agent keys, no
    /// `~/.ssh/id_*`).
    pub fn identities_only(mut self, on: bool) -> Self {
        self.spec.identities_only = on;
        self
    }

    /// ssh compression (default `false`, unlike the seed: ssh's zlib runs
    /// at ~30 MiB/s on one core, slower than any LAN even on text;
    /// measured in `docs/ARCHITECTURE.md`, *ssh compression*).
    pub fn compression(mut self, on: bool) -> Self {
        self.spec.compression = on;
        self
    }

    /// ssh's own debug output, 0 to 3 (`-v` .. `-vvv`); its lines become
    /// log records of this process.
    pub fn ssh_debug_level(mut self, level: u8) -> Self {
        self.spec.ssh_debug_level = level;
        self
    }

    /// Keepalive probes every `interval`, the link given up after `count`
    /// unanswered (default 15 s × 3).
    pub fn keepalive(mut self, interval: Duration, count: u32) -> Self {
        self.spec.keepalive = (interval, count);
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(self) -> Result<Context> {
        self.spec.validate()?;
        start(self.router.core(), &self.opts, &self.spec)
    }
}

impl SshSpec {
    fn validate(&self) -> Result<()> {
        let bad = |why: String| -> Result<()> { Err(StreamError::new(why).into()) };
        if self.hostname.is_empty() || self.hostname.starts_with('-') {
            return bad(format!("ssh: bad host name {:?}", self.hostname));
        }
        if self.username.as_deref().is_some_and(|u| u.starts_with('-')) {
            return bad(format!("ssh: bad user name {:?}", self.username));
        }
        if self.ssh_debug_level > 3 {
            return bad(format!(
                "ssh: ssh_debug_level must be 0..=3, not {}",
                self.ssh_debug_level
            ));
        }
        if self.keepalive.0.is_zero() || self.keepalive.1 == 0 {
            return bad("ssh: keepalive interval and count must be above zero".into());
        }
        Ok(())
    }

    fn target(&self) -> String {
        let mut t = match &self.username {
            Some(u) => format!("{u}@{}", self.hostname),
            None => self.hostname.clone(),
        };
        // The default port says nothing: `ssh.host`, not `ssh.host:22`.
        if let Some(p) = self.port.filter(|&p| p != 22) {
            t.push_str(&format!(":{p}"));
        }
        t
    }

    /// The ssh command line, minus the remote command.
    pub(crate) fn argv(&self, connect_timeout: Duration) -> Vec<String> {
        let mut a = vec![self.ssh_path.clone()];
        let mut o = |kv: String| {
            a.push("-o".into());
            a.push(kv);
        };
        if self.password.is_some() {
            o("BatchMode=no".into());
            o("NumberOfPasswordPrompts=1".into());
        } else {
            o("BatchMode=yes".into());
        }
        if self.identities_only && (self.password.is_some() || self.identity_file.is_some()) {
            o("IdentitiesOnly=yes".into());
            if self.identity_file.is_none() {
                o("PubkeyAuthentication=no".into());
            }
        }
        o(format!(
            "Compression={}",
            if self.compression { "yes" } else { "no" }
        ));
        o(format!(
            "ServerAliveInterval={}",
            self.keepalive.0.as_secs().max(1)
        ));
        o(format!("ServerAliveCountMax={}", self.keepalive.1));
        o(format!(
            "ConnectTimeout={}",
            connect_timeout.as_secs_f64().ceil().max(1.0) as u64
        ));
        match self.check_host_keys {
            HostKeyCheck::Enforce => o("StrictHostKeyChecking=yes".into()),
            HostKeyCheck::Accept => o("StrictHostKeyChecking=accept-new".into()),
            HostKeyCheck::Ignore => {
                o("StrictHostKeyChecking=no".into());
                o("UserKnownHostsFile=/dev/null".into());
                o("GlobalKnownHostsFile=/dev/null".into());
            }
        }
        if self.ssh_debug_level > 0 {
            a.push(format!("-{}", "v".repeat(self.ssh_debug_level as usize)));
        }
        if let Some(u) = &self.username {
            a.extend(["-l".into(), u.clone()]);
        }
        if let Some(p) = self.port {
            a.extend(["-p".into(), p.to_string()]);
        }
        if let Some(f) = &self.identity_file {
            a.extend(["-i".into(), f.to_string_lossy().into_owned()]);
        }
        a.extend(self.ssh_args.iter().cloned());
        a.push(self.hostname.clone());
        a
    }
}

impl Method for SshSpec {
    const TAG: &'static str = "ssh";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        let d = Dialog {
            method: "ssh",
            target: self.target(),
            pty: self.password.is_some(),
            password: self.password.clone(),
            prompts: vec!["password:".into(), "passphrase for key".into()],
            incorrect: vec![
                "permission denied, please try again".into(),
                "permission denied (".into(),
            ],
            auth_failed: vec!["permission denied (".into()],
            host_keys: true,
            stdin_tty: false,
        };
        let name = format!("ssh.{}", self.target());
        let mut argv = self.argv(opts.connect_timeout);
        tty::connect_with(core, id, name, opts, &d, |script| {
            argv.push(format!(
                "/bin/sh -c {}",
                quote(&format!("{WATCHDOG}{script}"))
            ));
            argv
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SshSpec {
        SshSpec {
            hostname: "h".into(),
            username: None,
            ssh_path: "ssh".into(),
            ssh_args: vec![],
            port: None,
            check_host_keys: HostKeyCheck::Enforce,
            password: None,
            identity_file: None,
            identities_only: true,
            compression: true,
            ssh_debug_level: 0,
            keepalive: DEFAULT_KEEPALIVE,
        }
    }

    #[test]
    fn the_default_port_is_left_out_of_the_name() {
        let mut s = spec();
        s.username = Some("u".into());
        assert_eq!(s.target(), "u@h");
        s.port = Some(22);
        assert_eq!(s.target(), "u@h");
        s.port = Some(2222);
        assert_eq!(s.target(), "u@h:2222");
    }

    #[test]
    fn batch_mode_without_password_and_never_the_password_in_argv() {
        let a = spec().argv(Duration::from_secs(30)).join(" ");
        assert!(a.contains("BatchMode=yes"), "{a}");
        assert!(a.contains("StrictHostKeyChecking=yes"), "{a}");
        let mut s = spec();
        s.password = Some(Password::new("sekrit"));
        s.check_host_keys = HostKeyCheck::Ignore;
        s.ssh_debug_level = 2;
        let a = s.argv(Duration::from_millis(1500)).join(" ");
        assert!(!a.contains("sekrit"), "{a}");
        assert!(a.contains("PubkeyAuthentication=no"), "{a}");
        assert!(a.contains("UserKnownHostsFile=/dev/null"), "{a}");
        assert!(a.contains("ConnectTimeout=2"), "{a}");
        assert!(a.contains(" -vv "), "{a}");
        assert!(!format!("{s:?}").contains("sekrit"));
    }

    #[test]
    fn bad_parameters_are_refused() {
        let mut s = spec();
        s.hostname = "-oProxyCommand=x".into();
        assert!(s.validate().is_err());
        let mut s = spec();
        s.ssh_debug_level = 4;
        assert!(s.validate().is_err());
    }
}
