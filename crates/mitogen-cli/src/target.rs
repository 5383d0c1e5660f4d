//! The target syntax: one target written as the path that reaches it,
//! hop by hop, left to right.
//!
//! ```text
//! ssh:deploy@bastion/ssh:web[01-20]:2222/sudo:root
//! web[01-03],db1            three ssh hosts and one more (bare hops are ssh)
//! local[1-50]               fifty local contexts
//! ```
//!
//! A target is parsed once into [`Target`] (a list of [`Hop`]s), so the
//! planner can see which targets share a prefix and connect it once, and
//! every error can point at the bad part of what was typed with a caret.
//! Methods that have no builder yet (containers) are recognised by name
//! and refused as such, so the syntax does not change when they arrive.

use crate::nodeset;
use std::fmt;

/// How a become hop changes user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BecomeMethod {
    /// `sudo -u USER`.
    Sudo,
    /// `su USER`.
    Su,
    /// `doas -u USER`.
    Doas,
}

impl BecomeMethod {
    /// The method's name in the syntax.
    pub fn name(self) -> &'static str {
        match self {
            BecomeMethod::Sudo => "sudo",
            BecomeMethod::Su => "su",
            BecomeMethod::Doas => "doas",
        }
    }
}

/// How a container hop enters its container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContainerMethod {
    /// `docker exec` into a running container.
    Docker,
    /// `podman exec` into a running container.
    Podman,
    /// `lxc-attach` to an LXC container.
    Lxc,
    /// `kubectl exec` into a pod.
    Kubectl,
}

impl ContainerMethod {
    /// The method's name in the syntax.
    pub fn name(self) -> &'static str {
        match self {
            ContainerMethod::Docker => "docker",
            ContainerMethod::Podman => "podman",
            ContainerMethod::Lxc => "lxc",
            ContainerMethod::Kubectl => "kubectl",
        }
    }

    /// Whether `USER@` is accepted (docker and podman exec take `-u`).
    fn takes_user(self) -> bool {
        matches!(self, ContainerMethod::Docker | ContainerMethod::Podman)
    }
}

/// One step of a path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hop {
    /// A local subprocess of the previous hop (or of this program).
    Local {
        /// Its name: `local`, `local7`.
        name: String,
    },
    /// ssh to a host from the previous hop.
    Ssh {
        /// Login name (ssh's default when absent).
        user: Option<String>,
        /// Host name or address (or an alias of the ssh config).
        host: String,
        /// Port (ssh's default when absent).
        port: Option<u16>,
    },
    /// A running container (or pod) on the previous hop's machine.
    Container {
        /// docker, podman, lxc or kubectl.
        method: ContainerMethod,
        /// The user inside (docker and podman; the image's by default).
        user: Option<String>,
        /// The container's (or pod's) name.
        name: String,
    },
    /// Another account on the previous hop's machine.
    Become {
        /// sudo, su or doas.
        method: BecomeMethod,
        /// The account (default root).
        user: String,
    },
}

impl fmt::Display for Hop {
    /// The canonical form: ssh hops bare (`deploy@web01:2222`), unless the
    /// host would read as another method; others as `method:user`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Local { name } => f.write_str(name),
            Hop::Ssh { user, host, port } => {
                if method_word(host).is_some() || is_local_word(host) {
                    f.write_str("ssh:")?;
                }
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                f.write_str(host)?;
                if let Some(p) = port {
                    write!(f, ":{p}")?;
                }
                Ok(())
            }
            Hop::Become { method, user } => write!(f, "{}:{user}", method.name()),
            Hop::Container { method, user, name } => {
                write!(f, "{}:", method.name())?;
                if let Some(u) = user {
                    write!(f, "{u}@")?;
                }
                f.write_str(name)
            }
        }
    }
}

/// One target: the hops from this program to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// First hop first.
    pub hops: Vec<Hop>,
}

impl Target {
    /// The canonical name (`bastion/web01/sudo:root`), which parses back
    /// to the same target.
    pub fn name(&self) -> String {
        self.hops
            .iter()
            .map(Hop::to_string)
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Whether `name` names this target: its whole name, or any of its
    /// hops (so `-x web05` removes `bastion/web05/sudo:root`, and
    /// `-x bastion` everything behind it).
    pub fn matches(&self, name: &str) -> bool {
        self.name() == name
            || self.hops.iter().any(|h| {
                h.to_string() == name || matches!(h, Hop::Ssh { host, .. } if host == name)
            })
    }
}

/// A target that does not parse: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Where the text came from ("target", "inventory FILE line N").
    pub origin: String,
    /// The text as given.
    pub input: String,
    /// Byte offset of the bad part.
    pub at: usize,
    /// Its length in bytes (at least 1).
    pub len: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for ParseError {
    /// The message, then the text with a caret line under the bad part.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at.min(self.input.len());
        let pad = self.input[..at].chars().count();
        let end = (at + self.len.max(1)).min(self.input.len()).max(at);
        let width = self.input[at..end].chars().count().max(1);
        writeln!(f, "bad {}: {}", self.origin, self.why)?;
        writeln!(f, "  {}", self.input)?;
        write!(f, "  {}{}", " ".repeat(pad), "^".repeat(width))
    }
}

impl std::error::Error for ParseError {}

/// Methods the syntax reserves for connection methods still to come.
const LATER: &[&str] = &[
    "lxd",
    "incus",
    "setns",
    "buildah",
    "machinectl",
    "jail",
    "fork",
];

/// A method word at the start of a hop (`sudo`, `ssh`, …), if it is one.
fn method_word(s: &str) -> Option<&str> {
    let word = s.split(':').next().unwrap_or("");
    matches!(
        word,
        "ssh" | "sudo" | "su" | "doas" | "docker" | "podman" | "lxc" | "kubectl"
    )
    .then_some(word)
    .or_else(|| LATER.contains(&word).then_some(word))
}

/// `local`, `local7`, `local[1-50]`: a local context (not a host named
/// `localhost`).
fn is_local_word(s: &str) -> bool {
    s.strip_prefix("local")
        .is_some_and(|r| r.chars().all(|c| c.is_ascii_digit() || "[],-".contains(c)))
}

/// Parser state for one chain: the whole text, for errors.
struct Chain<'a> {
    origin: &'a str,
    input: &'a str,
}

impl Chain<'_> {
    fn err(&self, at: usize, len: usize, why: impl Into<String>) -> ParseError {
        ParseError {
            origin: self.origin.to_string(),
            input: self.input.to_string(),
            at,
            len: len.max(1),
            why: why.into(),
        }
    }

    /// Expands the ranges of `part` (at byte offset `at` of the input).
    fn expand(&self, part: &str, at: usize) -> Result<Vec<String>, ParseError> {
        nodeset::expand(part).map_err(|e| self.err(at + e.at, e.len, e.why))
    }

    /// Checks a user or host name: no spaces, quotes or option-like start.
    fn name(&self, s: &str, at: usize, what: &str) -> Result<(), ParseError> {
        if s.is_empty() {
            return Err(self.err(at, 1, format!("{what} is empty")));
        }
        if s.starts_with('-') {
            return Err(self.err(at, s.len(), format!("{what} may not start with '-'")));
        }
        if let Some(i) = s.find(|c: char| c.is_whitespace() || "'\"\\;&|$`@:/".contains(c)) {
            return Err(self.err(at + i, 1, format!("{what} may not contain this character")));
        }
        Ok(())
    }

    /// One hop's text at offset `at`: its hops (several with ranges).
    fn hop(&self, text: &str, at: usize) -> Result<Vec<Hop>, ParseError> {
        if text.is_empty() {
            return Err(self.err(at, 1, "empty hop (two '/' in a row, or one at an end)"));
        }
        if is_local_word(text) {
            let names = self.expand(text, at)?;
            return Ok(names.into_iter().map(|name| Hop::Local { name }).collect());
        }
        let (method, rest, rest_at) = match text.split_once(':') {
            Some((m, r)) if method_word(text).is_some() => (m, r, at + m.len() + 1),
            Some((m, r)) if !r.starts_with(|c: char| c.is_ascii_digit()) && !r.is_empty() => {
                let why = format!(
                    "unknown method {m:?} (methods: ssh, sudo, su, doas, docker, podman, lxc, kubectl, local)"
                );
                return Err(self.err(at, m.len(), why));
            }
            _ if matches!(text, "sudo" | "su" | "doas") => (text, "", at + text.len()),
            _ => ("ssh", text, at),
        };
        if LATER.contains(&method) {
            let why = format!("method {method:?} is not supported yet");
            return Err(self.err(at, method.len(), why));
        }
        let become_ = match method {
            "sudo" => Some(BecomeMethod::Sudo),
            "su" => Some(BecomeMethod::Su),
            "doas" => Some(BecomeMethod::Doas),
            _ => None,
        };
        if let Some(method) = become_ {
            if rest.is_empty() {
                let user = "root".to_string();
                return Ok(vec![Hop::Become { method, user }]);
            }
            let users = self.expand(rest, rest_at)?;
            for u in &users {
                self.name(u, rest_at, "user name")?;
            }
            return Ok(users
                .into_iter()
                .map(|user| Hop::Become { method, user })
                .collect());
        }
        let container = match method {
            "docker" => Some(ContainerMethod::Docker),
            "podman" => Some(ContainerMethod::Podman),
            "lxc" => Some(ContainerMethod::Lxc),
            "kubectl" => Some(ContainerMethod::Kubectl),
            _ => None,
        };
        match container {
            Some(m) => self.container(m, rest, rest_at),
            None => self.ssh(rest, rest_at),
        }
    }

    /// `[user@]name` of a container hop, each with ranges.
    fn container(
        &self,
        method: ContainerMethod,
        text: &str,
        at: usize,
    ) -> Result<Vec<Hop>, ParseError> {
        let (users, name_text, name_at) = match text.split_once('@') {
            Some((u, _)) if !method.takes_user() => {
                let why = format!("{} takes no user name", method.name());
                return Err(self.err(at, u.len() + 1, why));
            }
            Some((u, n)) => {
                let users = self.expand(u, at)?;
                for x in &users {
                    self.name(x, at, "user name")?;
                }
                (users.into_iter().map(Some).collect(), n, at + u.len() + 1)
            }
            None => (vec![None], text, at),
        };
        let names = self.expand(name_text, name_at)?;
        for n in &names {
            self.name(n, name_at, "container name")?;
        }
        let mut out = Vec::new();
        for user in &users {
            for name in &names {
                out.push(Hop::Container {
                    method,
                    user: user.clone(),
                    name: name.clone(),
                });
            }
        }
        Ok(out)
    }

    /// `[user@]host[:port]`, each of user and host with ranges.
    fn ssh(&self, text: &str, at: usize) -> Result<Vec<Hop>, ParseError> {
        let (users, host_text, host_at) = match text.split_once('@') {
            Some((u, h)) => {
                let users = self.expand(u, at)?;
                for x in &users {
                    self.name(x, at, "user name")?;
                }
                (users.into_iter().map(Some).collect(), h, at + u.len() + 1)
            }
            None => (vec![None], text, at),
        };
        let (host_part, port) = match host_text.rsplit_once(':') {
            Some((h, p)) => {
                let p_at = host_at + h.len() + 1;
                let port = p
                    .parse::<u16>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| self.err(p_at, p.len(), format!("bad port {p:?}")))?;
                (h, Some(port))
            }
            None => (host_text, None),
        };
        let hosts = self.expand(host_part, host_at)?;
        for h in &hosts {
            self.name(h, host_at, "host name")?;
        }
        let mut out = Vec::new();
        for user in &users {
            for host in &hosts {
                out.push(Hop::Ssh {
                    user: user.clone(),
                    host: host.clone(),
                    port,
                });
            }
        }
        Ok(out)
    }
}

/// Parses one chain (no top-level commas, no groups) starting at byte
/// `at` of `input`, which is shown whole in errors.
pub fn parse_chain(
    origin: &str,
    input: &str,
    at: usize,
    text: &str,
) -> Result<Vec<Target>, ParseError> {
    let c = Chain { origin, input };
    let mut targets = vec![Target { hops: Vec::new() }];
    let mut off = at;
    for hop_text in text.split('/') {
        let hops = c.hop(hop_text, off)?;
        off += hop_text.len() + 1;
        if targets.len().saturating_mul(hops.len()) > nodeset::MAX_EXPANSION {
            return Err(c.err(at, text.len(), "too many targets"));
        }
        targets = targets
            .iter()
            .flat_map(|t| {
                hops.iter().map(move |h| {
                    let mut t = t.clone();
                    t.hops.push(h.clone());
                    t
                })
            })
            .collect();
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<Target>, ParseError> {
        parse_chain("target", s, 0, s)
    }

    fn names(s: &str) -> Vec<String> {
        parse(s)
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .map(Target::name)
            .collect()
    }

    fn caret(s: &str) -> (usize, usize, String) {
        let e = parse(s).expect_err(s);
        (e.at, e.len, e.why)
    }

    #[test]
    fn parses_the_issue_example_through_its_path() {
        let t = parse("ssh:deploy@bastion/ssh:web[01-20]:2222/sudo:root").unwrap();
        assert_eq!(t.len(), 20);
        assert_eq!(
            t[0].hops,
            vec![
                Hop::Ssh {
                    user: Some("deploy".into()),
                    host: "bastion".into(),
                    port: None
                },
                Hop::Ssh {
                    user: None,
                    host: "web01".into(),
                    port: Some(2222)
                },
                Hop::Become {
                    method: BecomeMethod::Sudo,
                    user: "root".into()
                },
            ]
        );
        assert_eq!(t[19].name(), "deploy@bastion/web20:2222/sudo:root");
    }

    #[test]
    fn bare_hops_defaults_and_locals() {
        assert_eq!(names("web1"), ["web1"]);
        assert_eq!(names("alice@10.0.0.1:22"), ["alice@10.0.0.1:22"]);
        assert_eq!(names("web1/sudo"), ["web1/sudo:root"]);
        assert_eq!(names("web1/su:bob/doas"), ["web1/su:bob/doas:root"]);
        assert_eq!(names("local"), ["local"]);
        assert_eq!(names("local[1-3]"), ["local1", "local2", "local3"]);
        assert_eq!(names("localhost"), ["localhost"]);
        assert_eq!(names("ssh:local2"), ["ssh:local2"]);
        assert_eq!(names("ssh:sudo"), ["ssh:sudo"]);
        assert_eq!(names("local/local"), ["local/local"]);
        assert_eq!(names("web[1-2]/sudo:u[1-2]").len(), 4);
        assert!(parse("[a-b]@h").is_err());
    }

    #[test]
    fn container_hops() {
        assert_eq!(
            names("ssh:deploy@bastion/ssh:web1:2222/sudo:root/docker:app"),
            ["deploy@bastion/web1:2222/sudo:root/docker:app"]
        );
        assert_eq!(
            names("h/podman:www@app[1-2]"),
            ["h/podman:www@app1", "h/podman:www@app2"]
        );
        assert_eq!(names("lxc:c1/kubectl:pod-7"), ["lxc:c1/kubectl:pod-7"]);
        let t = &parse("docker:u@c").unwrap()[0];
        assert!(t.matches("docker:u@c"));
    }

    #[test]
    fn canonical_names_parse_back() {
        for s in [
            "ssh:deploy@bastion/ssh:web[01-03]:2222/sudo:root",
            "ssh:local1/local[1-2]/su:bob",
            "ssh:doas:22/doas:alice",
            "ssh:docker/docker:a@b/podman:c/lxc:d/kubectl:e",
        ] {
            for t in parse(s).unwrap() {
                let again = parse(&t.name()).unwrap();
                assert_eq!(again, vec![t.clone()], "{}", t.name());
            }
        }
    }

    #[test]
    fn errors_point_at_the_bad_part() {
        assert_eq!(caret("web1:22x").0, 5);
        assert!(caret("web1:22x").2.contains("bad port"));
        assert_eq!(caret("web1:0").0, 5);
        let (at, len, why) = caret("ssh:deploy@bastion/setns:app");
        assert_eq!((at, len), (19, 5));
        assert!(why.contains("not supported yet"), "{why}");
        let (at, len, why) = caret("x/lxc:u@c1");
        assert_eq!((at, len), (6, 2));
        assert!(why.contains("takes no user"), "{why}");
        assert_eq!(caret("x/docker:").2, "container name is empty");
        let (at, len, why) = caret("bastion/foo:bar");
        assert_eq!((at, len), (8, 3));
        assert!(why.contains("unknown method"));
        assert_eq!(caret("a//b").0, 2);
        assert_eq!(caret("a/").0, 2);
        let (at, _, why) = caret("ssh:web[01-0x]");
        assert_eq!(at, 8);
        assert!(why.contains("not a number"));
        let (at, _, why) = caret("ssh:-oProxyCommand=x");
        assert_eq!(at, 4);
        assert!(why.contains("'-'"));
        assert_eq!(caret("x/sudo:-u").0, 7);
        assert_eq!(caret("x/sudo:a b").0, 8);
        assert_eq!(caret("@h").0, 0);
        assert_eq!(caret("u@").0, 2);
    }

    #[test]
    fn error_display_has_a_caret_under_the_bad_part() {
        let e = parse("ssh:deploy@bastion/ssh:web[01-20]:22x2/sudo:root").unwrap_err();
        let shown = e.to_string();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "bad target: bad port \"22x2\"");
        assert_eq!(
            lines[1],
            "  ssh:deploy@bastion/ssh:web[01-20]:22x2/sudo:root"
        );
        assert_eq!(lines[2], format!("  {}^^^^", " ".repeat(34)));
    }

    #[test]
    fn matches_whole_names_and_hops() {
        let t = &parse("ssh:deploy@bastion/web05/sudo").unwrap()[0];
        assert!(t.matches("web05"));
        assert!(t.matches("bastion"));
        assert!(t.matches("deploy@bastion/web05/sudo:root"));
        assert!(!t.matches("web0"));
    }
}
