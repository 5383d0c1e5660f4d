//! Reading an `ssh` command line the way OpenSSH does, for the fake
//! `ssh`.
//!
//! Why by hand: the tools that run `ssh` (rsync, scp, git, …) pass
//! OpenSSH's options, in getopt form (`-oBatchMode=yes`, `-l user`,
//! `-p2222`, clustered flags `-nT`, `--`). Options may also follow the
//! host (OpenSSH parses again after it), and everything after the first
//! word that is not an option is the remote command, whose words ssh
//! joins with single spaces for the remote shell. What decides where the
//! command runs is the destination context, so the host, user and port
//! are read and accepted but not used; options that would need a real
//! ssh connection (port forwarding, `-N`, background, control master)
//! are refused with ssh's own exit status 255.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Options that take an argument (OpenSSH 9's getopt string).
const WITH_ARG: &[u8] = b"BbcDEeFIiJLlmOoPpQRSWw";
/// Options that are flags.
const FLAGS: &[u8] = b"1246AaCfGgKkMNnqsTtVvXxYy";

/// What an invocation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Run the command (or the subsystem) remotely.
    Run,
    /// `-G`: print the configuration and exit (git probes with it).
    PrintConfig,
    /// `-V`: print a version and exit.
    Version,
}

/// An `ssh` command line, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invocation {
    /// What to do.
    pub mode: Mode,
    /// The destination as written (`[user@]host`, `ssh://…`); not used.
    pub host: Option<String>,
    /// `-l`, `-o User=`, or the `user@` of the destination; not used.
    pub user: Option<String>,
    /// `-p`, `-o Port=`, or the port of an `ssh://` destination; not used.
    pub port: Option<String>,
    /// The remote command's words joined with spaces (empty: none).
    pub command: Vec<u8>,
    /// `-s`: the command is a subsystem name (`sftp`).
    pub subsystem: bool,
    /// `-o SendEnv=PATTERN` (names, `*` and `?` wildcards).
    pub send_env: Vec<String>,
    /// `-o SetEnv=NAME=VALUE`.
    pub set_env: Vec<(String, String)>,
}

/// Why a command line cannot be run by the fake `ssh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads `args` (without `argv[0]`).
pub(crate) fn parse(args: &[OsString]) -> Result<Invocation, Refused> {
    let mut inv = Invocation {
        mode: Mode::Run,
        host: None,
        user: None,
        port: None,
        command: Vec::new(),
        subsystem: false,
        send_env: Vec::new(),
        set_env: Vec::new(),
    };
    let mut i = 0;
    loop {
        // One getopt pass: options until the first non-option or `--`.
        while i < args.len() {
            let a = args[i].as_bytes();
            if a == b"--" {
                i += 1;
                break;
            }
            if a.len() < 2 || a[0] != b'-' {
                break;
            }
            i += 1;
            let mut k = 1;
            while k < a.len() {
                let c = a[k];
                k += 1;
                if WITH_ARG.contains(&c) {
                    let value = if k < a.len() {
                        let v = a[k..].to_vec();
                        k = a.len();
                        v
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].as_bytes().to_vec()
                    } else {
                        return Err(Refused(format!(
                            "option -{} requires an argument",
                            c as char
                        )));
                    };
                    option_with_arg(&mut inv, c, &value)?;
                } else if FLAGS.contains(&c) {
                    flag(&mut inv, c)?;
                } else {
                    return Err(Refused(format!("unknown option -- {}", c as char)));
                }
            }
        }
        if inv.host.is_some() || i >= args.len() {
            break;
        }
        // The destination; then OpenSSH parses options again.
        let dest = String::from_utf8_lossy(args[i].as_bytes()).into_owned();
        i += 1;
        destination(&mut inv, &dest);
    }
    if inv.mode == Mode::Run && inv.host.is_none() {
        return Err(Refused("no destination given".into()));
    }
    let words: Vec<&[u8]> = args[i..].iter().map(|w| w.as_bytes()).collect();
    inv.command = words.join(&b' ');
    if inv.subsystem && inv.command.is_empty() {
        return Err(Refused("-s needs a subsystem name".into()));
    }
    Ok(inv)
}

fn flag(inv: &mut Invocation, c: u8) -> Result<(), Refused> {
    match c {
        b's' => inv.subsystem = true,
        b'G' => inv.mode = Mode::PrintConfig,
        b'V' => inv.mode = Mode::Version,
        b'N' => return Err(Refused("-N (no remote command) is not supported".into())),
        b'f' => return Err(Refused("-f (go to background) is not supported".into())),
        b'M' => return Err(Refused("-M (control master) is not supported".into())),
        // Terminal, agent, X11, verbosity, compression, address family:
        // nothing to do without a network connection.
        _ => {}
    }
    Ok(())
}

fn option_with_arg(inv: &mut Invocation, c: u8, value: &[u8]) -> Result<(), Refused> {
    let text = String::from_utf8_lossy(value).into_owned();
    match c {
        b'l' => inv.user = Some(text),
        b'p' => inv.port = Some(text),
        b'o' => config_option(inv, &text)?,
        b'L' | b'R' | b'D' => {
            return Err(Refused(format!(
                "-{} (port forwarding) is not supported",
                c as char
            )))
        }
        b'W' => return Err(Refused("-W (stdio forwarding) is not supported".into())),
        b'O' => return Err(Refused("-O (control commands) is not supported".into())),
        b'Q' => return Err(Refused("-Q (queries) is not supported".into())),
        // Escape character, identity, config file, jump host, ciphers,
        // MACs, bind address, log file, control path, tunnel: the
        // destination context decides how the command is reached.
        _ => {}
    }
    Ok(())
}

/// `-o Key=Value` or `-o "Key Value"`; keys are case-insensitive.
fn config_option(inv: &mut Invocation, text: &str) -> Result<(), Refused> {
    let text = text.trim();
    let split = text
        .find(|c: char| c == '=' || c.is_whitespace())
        .ok_or_else(|| Refused(format!("-o {text:?}: no value")))?;
    let key = text[..split].to_ascii_lowercase();
    let value = text[split..]
        .trim_start_matches(|c: char| c == '=' || c.is_whitespace())
        .to_string();
    match key.as_str() {
        "user" => inv.user = Some(value),
        "port" => inv.port = Some(value),
        "sendenv" => inv
            .send_env
            .extend(value.split_whitespace().map(str::to_string)),
        "setenv" => {
            for item in value.split_whitespace() {
                if let Some((k, v)) = item.split_once('=') {
                    inv.set_env.push((k.to_string(), v.to_string()));
                }
            }
        }
        "localforward" | "remoteforward" | "dynamicforward" => {
            return Err(Refused(format!("-o {key}: forwarding is not supported")))
        }
        "remotecommand" if !value.eq_ignore_ascii_case("none") => {
            return Err(Refused("-o RemoteCommand is not supported".into()))
        }
        // BatchMode, StrictHostKeyChecking, ForwardAgent, RequestTTY,
        // ClearAllForwardings, PermitLocalCommand, ServerAlive*, …
        _ => {}
    }
    Ok(())
}

/// `[user@]host` or `ssh://[user@]host[:port]`.
fn destination(inv: &mut Invocation, dest: &str) {
    let mut rest = dest;
    let uri = rest.strip_prefix("ssh://");
    if let Some(r) = uri {
        rest = r.trim_end_matches('/');
    }
    if let Some((user, host)) = rest.rsplit_once('@') {
        if inv.user.is_none() {
            inv.user = Some(user.to_string());
        }
        rest = host;
    }
    if uri.is_some() {
        if let Some((host, port)) = rest.rsplit_once(':') {
            if !host.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) {
                if inv.port.is_none() {
                    inv.port = Some(port.to_string());
                }
                rest = host;
            }
        }
    }
    inv.host = Some(rest.to_string());
}

/// Whether `name` matches an OpenSSH pattern (`*`, `?`).
pub(crate) fn matches(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

/// The variables `inv` sends: `SendEnv` patterns over `env`, then
/// `SetEnv` pairs.
pub(crate) fn environment(
    inv: &Invocation,
    env: &[(OsString, OsString)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (k, v) in env {
        let Some(name) = k.to_str() else { continue };
        if inv.send_env.iter().any(|p| matches(p, name)) {
            out.push((k.clone().into_vec(), v.clone().into_vec()));
        }
    }
    for (k, v) in &inv.set_env {
        out.push((k.clone().into_bytes(), v.clone().into_bytes()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Invocation, Refused> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn rsync_style() {
        let inv = p(&[
            "-l",
            "bob",
            "host",
            "rsync",
            "--server",
            "-logDtpre.iLsfxCIvu",
            ".",
            "/tmp/x",
        ])
        .unwrap();
        assert_eq!(inv.user.as_deref(), Some("bob"));
        assert_eq!(inv.host.as_deref(), Some("host"));
        assert_eq!(inv.command, b"rsync --server -logDtpre.iLsfxCIvu . /tmp/x");
        assert!(!inv.subsystem);
    }

    #[test]
    fn scp_style_with_clustered_and_attached_options() {
        let inv = p(&[
            "-x",
            "-oPermitLocalCommand=no",
            "-oClearAllForwardings=yes",
            "-oRemoteCommand=none",
            "-oRequestTTY=no",
            "-oForwardAgent=no",
            "-l",
            "alice",
            "-p2222",
            "-s",
            "--",
            "h",
            "sftp",
        ])
        .unwrap();
        assert_eq!(inv.port.as_deref(), Some("2222"));
        assert_eq!(inv.user.as_deref(), Some("alice"));
        assert!(inv.subsystem);
        assert_eq!(inv.command, b"sftp");
        let legacy = p(&["-nTx", "-q", "user@h", "scp", "-t", "--", "/tmp/a b"]).unwrap();
        assert_eq!(legacy.user.as_deref(), Some("user"));
        assert_eq!(legacy.command, b"scp -t -- /tmp/a b");
    }

    #[test]
    fn git_style_and_options_after_the_host() {
        let inv = p(&[
            "-o",
            "SendEnv=GIT_PROTOCOL",
            "h",
            "-p",
            "22",
            "git-upload-pack '/srv/r.git'",
        ])
        .unwrap();
        assert_eq!(inv.send_env, vec!["GIT_PROTOCOL".to_string()]);
        assert_eq!(inv.port.as_deref(), Some("22"));
        assert_eq!(inv.command, b"git-upload-pack '/srv/r.git'");
        let env = vec![
            (OsString::from("GIT_PROTOCOL"), OsString::from("version=2")),
            (OsString::from("HOME"), OsString::from("/root")),
        ];
        assert_eq!(
            environment(&inv, &env),
            vec![(b"GIT_PROTOCOL".to_vec(), b"version=2".to_vec())]
        );
    }

    #[test]
    fn uri_destination_and_probes() {
        let inv = p(&["ssh://carol@example:2200/", "true"]).unwrap();
        assert_eq!(
            (inv.user.as_deref(), inv.port.as_deref()),
            (Some("carol"), Some("2200"))
        );
        assert_eq!(inv.host.as_deref(), Some("example"));
        assert_eq!(p(&["-G", "h"]).unwrap().mode, Mode::PrintConfig);
        assert_eq!(p(&["-V"]).unwrap().mode, Mode::Version);
        assert!(p(&["h"]).unwrap().command.is_empty());
    }

    #[test]
    fn refusals() {
        for bad in [
            &["-L", "1:h:2", "h", "x"][..],
            &["-N", "h"],
            &["-W", "h:22", "j"],
            &["-o", "LocalForward 1 h:2", "h"],
            &["-l"],
            &["-Z", "h"],
            &[],
            &["-s", "h"],
        ] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn patterns() {
        assert!(matches("LC_*", "LC_ALL"));
        assert!(matches("A?C", "ABC"));
        assert!(!matches("LC_*", "LANG"));
    }
}
