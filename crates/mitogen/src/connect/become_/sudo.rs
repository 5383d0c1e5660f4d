//! `Router::sudo()`: a context as another user through `sudo`.
//!
//! sudo reads passwords from the terminal, so it always runs under a PTY
//! (`tty.rs`). Its prompt is set with `-p` to a string made for each
//! connect, which no output of the target can be mistaken for. `sudo_args`
//! are parsed here into the same parameters (`-u`, `-H`, `-E`, `-i`, `-r`,
//! `-t`), so what the context is matches what was asked; `-S` and `-n` are
//! accepted and ignored (mitogen types on its own terminal), and any other
//! option is refused by name. Some PAM modules (a smartcard's "PIN for
//! alice:") ignore `-p`: `password_prompt` names their prompt.

use crate::connect::method::{start, Method};
use crate::connect::options::common_options;
use crate::connect::password::Password;
use crate::connect::sys;
use crate::connect::tty::{self, Dialog};
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Result, StreamError};
use crate::router::{Core, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The sudo parameters; travels to an intermediate for `via`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SudoSpec {
    username: String,
    sudo_path: String,
    password: Option<Password>,
    set_home: bool,
    preserve_env: bool,
    /// `-i`: the target user's login shell runs the agent.
    #[serde(default)]
    login: bool,
    /// A prompt to answer besides sudo's own (case-insensitive text).
    #[serde(default)]
    extra_prompt: Option<String>,
    selinux_type: Option<String>,
    selinux_role: Option<String>,
}

impl Default for SudoSpec {
    /// root, through `sudo` on the `PATH`, with no other option.
    fn default() -> SudoSpec {
        SudoSpec {
            username: "root".into(),
            sudo_path: "sudo".into(),
            password: None,
            set_home: false,
            preserve_env: false,
            login: false,
            extra_prompt: None,
            selinux_type: None,
            selinux_role: None,
        }
    }
}

/// Builder returned by [`Router::sudo`].
#[derive(Debug)]
#[must_use = "call .connect() to start the context"]
pub struct SudoBuilder<'r> {
    router: &'r Router,
    pub(crate) opts: Options,
    spec: SudoSpec,
    sudo_args: Vec<String>,
}

common_options!(SudoBuilder);

impl Router {
    /// Starts a context as another user (default root) through `sudo`:
    /// the seed's `sudo()`.
    ///
    /// ```no_run
    /// # fn demo(router: &mitogen::Router, host: &mitogen::Context) -> mitogen::Result<()> {
    /// let root = router.sudo().password("pw").via(host).connect()?;
    /// # Ok(()) }
    /// ```
    pub fn sudo(&self) -> SudoBuilder<'_> {
        SudoBuilder {
            router: self,
            opts: Options::default(),
            spec: SudoSpec::default(),
            sudo_args: Vec::new(),
        }
    }
}

impl SudoBuilder<'_> {
    /// The user to become (`-u`, default `root`).
    pub fn username(mut self, user: impl Into<String>) -> Self {
        self.spec.username = user.into();
        self
    }

    /// The sudo program (default `sudo`, looked up in `PATH`).
    pub fn sudo_path(mut self, path: impl Into<String>) -> Self {
        self.spec.sudo_path = path.into();
        self
    }

    /// Password to type when sudo asks (whose depends on the sudoers
    /// rules: usually the calling user's).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.spec.password = Some(Password::new(password));
        self
    }

    /// Sets `HOME` to the target user's (`-H`).
    pub fn set_home(mut self, on: bool) -> Self {
        self.spec.set_home = on;
        self
    }

    /// Keeps the caller's environment (`-E`).
    pub fn preserve_env(mut self, on: bool) -> Self {
        self.spec.preserve_env = on;
        self
    }

    /// Runs the agent through the target user's login shell (`-i`): its
    /// login environment, its home as the working directory.
    pub fn login(mut self, on: bool) -> Self {
        self.spec.login = on;
        self
    }

    /// Text of a password prompt that does not come from sudo itself and
    /// ignores `-p` (a PAM module's "PIN for alice:"), matched
    /// case-insensitively; the password is typed there too.
    pub fn password_prompt(mut self, text: impl Into<String>) -> Self {
        self.spec.extra_prompt = Some(text.into().to_lowercase());
        self
    }

    /// SELinux type of the new context (`-t`).
    pub fn selinux_type(mut self, t: impl Into<String>) -> Self {
        self.spec.selinux_type = Some(t.into());
        self
    }

    /// SELinux role of the new context (`-r`).
    pub fn selinux_role(mut self, r: impl Into<String>) -> Self {
        self.spec.selinux_role = Some(r.into());
        self
    }

    /// sudo options as on its command line (`["-u", "bob", "-H"]`),
    /// parsed into the parameters above when connecting; an option that
    /// has no equivalent fails the connect with a [`crate::StreamError`]
    /// naming it.
    pub fn sudo_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.sudo_args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Starts the context and waits until it is ready for calls.
    pub fn connect(mut self) -> Result<Context> {
        parse_args(&self.sudo_args, &mut self.spec)?;
        crate::connect::check_user("sudo", &self.spec.username)?;
        start(self.router.core(), &self.opts, &self.spec)
    }
}

/// Applies sudo command-line options to `spec`.
fn parse_args(args: &[String], spec: &mut SudoSpec) -> Result<()> {
    let bad =
        |why: String| -> crate::Error { StreamError::new(format!("sudo_args: {why}")).into() };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Long options, with "=value" or the value as the next argument.
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let mut value = |opt: &str| -> Result<String> {
                match inline.clone().or_else(|| it.next().cloned()) {
                    Some(v) => Ok(v),
                    None => Err(bad(format!("--{opt} needs a value"))),
                }
            };
            match name {
                "user" => spec.username = value("user")?,
                "role" => spec.selinux_role = Some(value("role")?),
                "type" => spec.selinux_type = Some(value("type")?),
                "set-home" => spec.set_home = true,
                "login" => spec.login = true,
                "preserve-env" if inline.is_none() => spec.preserve_env = true,
                "stdin" | "non-interactive" => {}
                _ => return Err(bad(format!("unsupported option {arg:?}"))),
            }
            continue;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            return Err(bad(format!(
                "unexpected argument {arg:?} (only options are accepted)"
            )));
        };
        // Clustered short options: "-HE", "-uroot", "-u root".
        for (i, c) in flags.char_indices() {
            match c {
                'H' => spec.set_home = true,
                'i' => spec.login = true,
                'E' => spec.preserve_env = true,
                'S' | 'n' => {}
                'u' | 'r' | 't' => {
                    let rest = &flags[i + c.len_utf8()..];
                    let v = if rest.is_empty() {
                        it.next()
                            .cloned()
                            .ok_or_else(|| bad(format!("-{c} needs a value")))?
                    } else {
                        rest.to_string()
                    };
                    match c {
                        'u' => spec.username = v,
                        'r' => spec.selinux_role = Some(v),
                        _ => spec.selinux_type = Some(v),
                    }
                    break;
                }
                _ => return Err(bad(format!("unsupported option -{c} (in {arg:?})"))),
            }
        }
    }
    Ok(())
}

/// sudo's words for "authentication failed" without a password typed:
/// `-n` asked for none, or sudo found no terminal to ask on.
const SUDO_AUTH_FAILED: &[&str] = &[
    "a password is required",
    "a terminal is required to read the password",
];

/// The first stage, made to survive `sudo -i`. There sudo hands the
/// command to the user's login shell as one string, escaping every
/// character but letters, digits, `_`, `-` and `$` with a backslash: the
/// login shell would expand the script's `$` itself. So the script travels
/// with no `$` at all: every byte but a few plain ones as an octal
/// escape that `/bin/sh` decodes (`printf %b`) and runs (`eval`);
/// backquotes, which sudo escapes, reach `/bin/sh` intact.
fn through_login_shell(script: &str) -> String {
    let mut enc = String::with_capacity(script.len() * 3);
    for b in script.bytes() {
        if b.is_ascii_alphanumeric() || b" _-.,/:=+".contains(&b) {
            enc.push(b as char);
        } else {
            enc.push_str(&format!("\\0{b:03o}"));
        }
    }
    format!("eval \"`printf '%b' '{enc}'`\"")
}

/// A prompt no program output will contain by chance.
fn unique_prompt() -> String {
    let b = sys::random_bytes::<8>().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        ((t as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes()
    });
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("mitogen-sudo-password-{hex}:")
}

impl Method for SudoSpec {
    const TAG: &'static str = "sudo";

    fn connect_here(&self, core: &Arc<Core>, id: u32, opts: &Options) -> Result<Context> {
        let prompt = unique_prompt();
        let mut prompts = vec![prompt.clone()];
        prompts.extend(self.extra_prompt.clone());
        let d = Dialog {
            method: "sudo",
            target: self.username.clone(),
            pty: true,
            password: self.password.clone(),
            prompts,
            incorrect: vec![
                "sorry, try again".into(),
                "incorrect password attempt".into(),
            ],
            auth_failed: SUDO_AUTH_FAILED.iter().map(|s| s.to_string()).collect(),
            host_keys: false,
            stdin_tty: false,
        };
        let name = format!("sudo.{}", self.username);
        let mut argv = vec![self.sudo_path.clone(), "-u".into(), self.username.clone()];
        if self.login {
            argv.push("-i".into());
        }
        if self.set_home {
            argv.push("-H".into());
        }
        if self.preserve_env {
            argv.push("-E".into());
        }
        if let Some(r) = &self.selinux_role {
            argv.extend(["-r".into(), r.clone()]);
        }
        if let Some(t) = &self.selinux_type {
            argv.extend(["-t".into(), t.clone()]);
        }
        argv.extend(["-p".into(), format!("{prompt} ")]);
        let login = self.login;
        tty::connect_with(core, id, name, opts, &d, |script| {
            let script = if login {
                through_login_shell(script)
            } else {
                script.to_string()
            };
            argv.extend(["--".into(), "/bin/sh".into(), "-c".into(), script]);
            argv
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SudoSpec {
        SudoSpec::default()
    }

    fn parse(args: &[&str]) -> Result<SudoSpec> {
        let mut s = spec();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_args(&args, &mut s).map(|()| s)
    }

    #[test]
    fn sudo_args_map_to_parameters() {
        let s = parse(&["-u", "bob", "-HE", "-S", "-n", "-rrole", "--type=t"]).unwrap();
        assert_eq!(s.username, "bob");
        assert!(s.set_home && s.preserve_env);
        assert_eq!(s.selinux_role.as_deref(), Some("role"));
        assert_eq!(s.selinux_type.as_deref(), Some("t"));
        let s = parse(&["--user", "alice", "--set-home", "--preserve-env"]).unwrap();
        assert_eq!(s.username, "alice");
        assert!(s.set_home && s.preserve_env);
    }

    #[test]
    fn unsupported_sudo_args_are_named() {
        let s = parse(&["-i", "-u", "bob"]).unwrap();
        assert!(s.login && s.username == "bob");
        assert!(parse(&["--login"]).unwrap().login);
        for (args, named) in [
            (&["-H", "-s"][..], "-s"),
            (&["--shell"][..], "--shell"),
            (&["-u"][..], "-u needs a value"),
            (&["id"][..], "\"id\""),
        ] {
            let e = parse(args).unwrap_err().to_string();
            assert!(e.contains(named), "{args:?}: {e}");
        }
    }

    #[test]
    fn prompts_are_unique() {
        assert_ne!(unique_prompt(), unique_prompt());
    }

    #[test]
    fn no_terminal_for_the_password_is_a_password_error() {
        let d = Dialog {
            method: "sudo",
            target: "root".into(),
            pty: true,
            password: Some(Password::new("pw")),
            prompts: vec![],
            incorrect: vec![],
            auth_failed: SUDO_AUTH_FAILED.iter().map(|s| s.to_string()).collect(),
            host_keys: false,
            stdin_tty: false,
        };
        let out = "sudo: a terminal is required to read the password; either use the -S \
                   option to read from standard input or configure an askpass helper\n";
        let e = d.classify("", false, out, Some(1), std::time::Duration::from_secs(1));
        assert!(matches!(e, Some(crate::Error::Password(_))), "{e:?}");
    }

    /// What `sudo -i` does to a command before the login shell runs it.
    fn sudo_i_escape(arg: &str) -> String {
        arg.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_-$".contains(c) {
                    c.to_string()
                } else {
                    format!("\\{c}")
                }
            })
            .collect()
    }

    #[test]
    fn a_script_survives_the_login_shell() {
        let script = "x='a b'; y=\"$x\\\\\"; printf '%s|%s|%s\\n' \"$x\" \"$y\" `echo tick`\n\
                      case \"$HOME\" in /*) echo home;; esac\necho 100%";
        let direct = std::process::Command::new("/bin/sh")
            .args(["-c", script])
            .output()
            .unwrap();
        // The login shell gets "/bin/sh -c <escaped>" as one string.
        let login_cmd = format!("/bin/sh -c {}", sudo_i_escape(&through_login_shell(script)));
        let via_login = std::process::Command::new("/bin/sh")
            .args(["-c", &login_cmd])
            .output()
            .unwrap();
        assert!(direct.status.success(), "{direct:?}");
        assert_eq!(
            String::from_utf8_lossy(&via_login.stdout),
            String::from_utf8_lossy(&direct.stdout),
            "stderr: {}",
            String::from_utf8_lossy(&via_login.stderr)
        );
        assert!(!through_login_shell(script).contains('$'));
    }
}
