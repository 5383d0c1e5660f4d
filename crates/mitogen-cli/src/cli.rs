//! The command line: clap definitions, the options every command shares
//! (which targets, how to reach them, become), and dispatch to
//! `commands`.

use crate::inventory::Inventory;
use crate::output::Mode;
use crate::plan::ConnectOptions;
use crate::target::{BecomeMethod, Hop, Target};
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

/// Run commands on many machines, accounts and local contexts at once,
/// with nothing installed on the targets.
#[derive(Debug, Parser)]
#[command(name = "mitogen", version, after_help = TARGET_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

const TARGET_HELP: &str = "\
Targets: one path per target, hop by hop, e.g.
  ssh:deploy@bastion/ssh:web[01-20]:2222/sudo:root/docker:app
  web[01-03],db1          bare hops are ssh; ranges and lists as in pdsh
  local[1-50]             local contexts
  @web                    a group of the inventory file
Hops: [ssh:][USER@]HOST[:PORT], sudo[:USER], su[:USER], doas[:USER],
  docker:[USER@]NAME, podman:[USER@]NAME, lxc:NAME, kubectl:POD, local[N].
Exit status: 0 when every target succeeded, 1 when any failed or was
unreachable, 2 on a usage error, 130 when interrupted.";

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a shell command on every target.
    Run(RunArgs),
    /// Start every target and time a round trip.
    Ping(Common),
    /// Host name, OS, kernel, uptime, load, memory and disk of every target.
    Facts(Common),
    /// Connect every target and show the tree of contexts.
    Tree(Common),
    /// A warm master: connect the targets (if any) and keep them, and
    /// whatever attached commands ask for, for later commands (`--master
    /// NAME`); or `status` / `stop` of running masters.
    Master(MasterArgs),
    /// Copy local files and directory trees to every target.
    Copy(CopyArgs),
    /// Copy files and trees from every target, each into a directory of
    /// its own (like rpdcp).
    Fetch(FetchArgs),
    /// Run the local rsync once per target; `:PATH` in its arguments is
    /// that path on the target.
    Rsync(RsyncArgs),
    /// Print the targets a selection expands to, one per line.
    List {
        #[command(flatten)]
        select: Select,
        /// Print them folded on one line instead (`web[01-20]`).
        #[arg(long)]
        fold: bool,
    },
}

/// `mitogen master`: serve, or act on running masters.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MasterArgs {
    /// `status` or `stop`; none: serve as a master.
    #[command(subcommand)]
    pub action: Option<MasterAction>,
    #[command(flatten)]
    pub common: Common,
    /// The master's name, which later commands give to `--master`.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub name: String,
}

/// What to do with running masters.
#[derive(Debug, Subcommand)]
pub enum MasterAction {
    /// Show this user's masters: what they hold, how long they live.
    Status {
        /// Only this master.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// One JSON object per master per line.
        #[arg(long)]
        json: bool,
    },
    /// Stop a master (`--name`, default `default`) or all of them
    /// (`--all`): their contexts are disconnected.
    Stop {
        /// The master to stop.
        #[arg(long, value_name = "NAME", conflicts_with = "all")]
        name: Option<String>,
        /// Every master of this user.
        #[arg(long)]
        all: bool,
    },
}

/// Which targets: positional and `-w` lists, less `-x` ones.
#[derive(Debug, Args)]
pub struct Select {
    /// Targets (comma-separated; ranges, groups).
    targets: Option<String>,
    /// More targets (repeatable).
    #[arg(short = 'w', value_name = "TARGETS")]
    with: Vec<String>,
    /// Leave out targets whose name or any hop is one of these.
    #[arg(short = 'x', value_name = "TARGETS")]
    exclude: Vec<String>,
    /// The inventory file (default $MITOGEN_INVENTORY, else
    /// ~/.config/mitogen/inventory).
    #[arg(short = 'I', long, value_name = "FILE")]
    inventory: Option<PathBuf>,
}

/// Host key checking of ssh hops.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum HostKeys {
    /// Known keys must match; unknown hosts are refused.
    Enforce,
    /// Known keys must match; new hosts' keys are recorded.
    Accept,
    /// No checking.
    Ignore,
}

/// How to reach the targets, and become.
#[derive(Debug, Args)]
pub struct Connect {
    /// Seconds each hop may take to connect: the transport's own handshake
    /// (ssh's key exchange, which takes seconds on a loaded small machine
    /// starting many at once) and the agent's start.
    #[arg(long, value_name = "SECS", default_value_t = mitogen::DEFAULT_CONNECT_TIMEOUT.as_secs_f64())]
    connect_timeout: f64,
    /// ssh config file for every ssh hop (`ssh -F`).
    #[arg(short = 'F', long, value_name = "FILE")]
    ssh_config: Option<PathBuf>,
    /// ssh option for every ssh hop (`ssh -o`, repeatable).
    #[arg(short = 'o', long, value_name = "OPTION")]
    ssh_option: Vec<String>,
    /// Private key for every ssh hop (`ssh -i`).
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
    /// Host key checking of ssh hops.
    #[arg(long, value_enum, default_value = "enforce")]
    host_keys: HostKeys,
    /// Become another user on every target (a last hop added to each).
    #[arg(short = 'b', long = "become")]
    become_: bool,
    /// How to become.
    #[arg(long, value_enum, default_value = "sudo")]
    become_method: BecomeArg,
    /// Whom to become.
    #[arg(long, value_name = "USER", default_value = "root")]
    become_user: String,
    /// Ask for the become password once, on the terminal.
    #[arg(short = 'K', long, group = "password")]
    ask_become_pass: bool,
    /// Read the become password from this file descriptor (first line).
    #[arg(long, value_name = "N", group = "password")]
    password_fd: Option<i32>,
    /// Read the become password from this environment variable.
    #[arg(long, value_name = "NAME", group = "password")]
    password_env: Option<String>,
}

/// `--become-method`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum BecomeArg {
    Sudo,
    Su,
    Doas,
}

/// What every target-running command takes.
#[derive(Debug, Args)]
pub struct Common {
    #[command(flatten)]
    select: Select,
    #[command(flatten)]
    connect: Connect,
    /// At most this many targets worked on at once.
    #[arg(short = 'f', long, value_name = "N", default_value_t = 64)]
    forks: usize,
    /// One JSON object per target per line.
    #[arg(long)]
    json: bool,
    /// No progress display, even on a terminal.
    #[arg(short = 'q', long)]
    quiet: bool,
    /// Use the contexts of the warm master NAME (`mitogen master`)
    /// instead of connecting; with `--persist`, start it in the
    /// background when it is not running.
    #[arg(long, value_name = "NAME")]
    master: Option<String>,
    /// Keep the contexts warm for later commands: use (or start in the
    /// background) a master that lives this long with nothing attached
    /// (`90s`, `10m`, `2h`; `0`: no master). Default
    /// $MITOGEN_PERSIST, else 0. For `mitogen master`: exit after this
    /// long with nothing attached (default: never).
    #[arg(long, value_name = "DURATION", env = "MITOGEN_PERSIST")]
    persist: Option<String>,
}

/// `run`'s arguments.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub shown: Shown,
    #[command(flatten)]
    pub bounds: Bounds,
    /// The command, run with `/bin/sh -c` (words joined with spaces).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Bounds on what `run` and `rsync` start on each target.
#[derive(Debug, Args)]
pub struct Bounds {
    /// Kill the command (its whole process group; for `rsync`, rsync and
    /// what it runs on the target) after this long.
    #[arg(short = 't', long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Bytes of the command's stdout, and of its stderr, kept per target
    /// (the rest is counted, and said so).
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_output: usize,
}

/// How commands that print outputs (`run`, `rsync`) show them.
#[derive(Debug, Args)]
pub struct Shown {
    /// Print each line as `target: line` as targets finish (default when
    /// stdout is not a terminal).
    #[arg(short = 'i', long, conflicts_with_all = ["gather", "json"])]
    inline: bool,
    /// Print identical outputs once under their folded targets (default
    /// on a terminal).
    #[arg(long, conflicts_with = "json")]
    gather: bool,
}

impl Shown {
    /// JSON when asked, else inline or gathered as asked, else gathered
    /// on a terminal and inline otherwise.
    pub fn mode(&self, json: bool) -> Mode {
        if json {
            Mode::Json
        } else if self.inline {
            Mode::Inline
        } else if self.gather || std::io::stdout().is_terminal() {
            Mode::Gather
        } else {
            Mode::Inline
        }
    }
}

/// What `copy` and `fetch` take besides the targets and paths.
#[derive(Debug, Args)]
pub struct TransferOpts {
    /// Do not give files their source's owner and group (they belong to
    /// the receiving account).
    #[arg(long)]
    pub no_owner: bool,
    /// Send every file, even one identical to what is there already.
    #[arg(long)]
    pub no_skip: bool,
    /// Do not fsync files before renaming them into place (faster;
    /// survives anything but a crash of the receiving machine).
    #[arg(long)]
    pub no_fsync: bool,
    /// Fail a transfer that makes no progress for this long.
    #[arg(long, value_name = "SECS", default_value_t = 120.0)]
    pub stall_timeout: f64,
    /// The checksum that verifies every file and decides which are
    /// identical.
    #[arg(long, value_enum, default_value_t = ChecksumArg::Xxh3)]
    pub checksum: ChecksumArg,
}

/// `--checksum`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChecksumArg {
    /// XXH3-128, at memory speed: finds corruption and a source changed
    /// while it was read.
    Xxh3,
    /// BLAKE3, cryptographic: when someone untrusted may write the
    /// destination and identical files are skipped.
    Blake3,
}

/// `copy`'s arguments: `mitogen copy TARGETS SRC... DEST`.
#[derive(Debug, Args)]
#[command(
    mut_arg("targets", |a| a.required(true).index(1)),
    override_usage = "mitogen copy [OPTIONS] TARGETS SRC... DEST"
)]
pub struct CopyArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub opts: TransferOpts,
    /// Send to each target on its own even when targets share a hop
    /// (a shared hop otherwise receives each file once and forwards it;
    /// on their own, files already identical are skipped).
    #[arg(long)]
    pub no_push: bool,
    /// Local files or trees (SRC...), then where they go on every target
    /// (DEST): with one SRC and DEST not ending in `/`, DEST is the
    /// copy's path; else each SRC goes into the directory DEST under its
    /// own name.
    #[arg(value_name = "PATH", index = 2, num_args = 2.., required = true)]
    pub paths: Vec<PathBuf>,
}

/// `fetch`'s arguments: `mitogen fetch TARGETS REMOTE... LOCALDIR`.
#[derive(Debug, Args)]
#[command(
    mut_arg("targets", |a| a.required(true).index(1)),
    override_usage = "mitogen fetch [OPTIONS] TARGETS REMOTE... LOCALDIR"
)]
pub struct FetchArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub opts: TransferOpts,
    /// Files or trees on the targets (REMOTE...), then the local
    /// directory (LOCALDIR): each REMOTE lands in
    /// LOCALDIR/<target>/<its name>, <target> being the target's name
    /// with `/` as `+` and `:` as `_`.
    #[arg(
        value_name = "PATH",
        index = 2,
        num_args = 2..,
        required = true
    )]
    pub paths: Vec<PathBuf>,
}

/// `rsync`'s arguments: `mitogen rsync TARGETS -- RSYNC-ARGS...`.
#[derive(Debug, Args)]
pub struct RsyncArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub shown: Shown,
    #[command(flatten)]
    pub bounds: Bounds,
    /// rsync's arguments; `:PATH` is PATH on the target (`HOST:PATH`
    /// works too: the host is ignored).
    #[arg(last = true, required = true, value_name = "RSYNC-ARGS")]
    pub args: Vec<String>,
}

impl Select {
    pub(crate) fn targets(&self) -> Result<Vec<Target>, String> {
        if self.is_empty() {
            return Err("no targets given (a positional list or -w)".into());
        }
        self.targets_or_none()
    }

    /// Whether no target was named at all.
    pub(crate) fn is_empty(&self) -> bool {
        self.targets.is_none() && self.with.is_empty()
    }

    /// The targets; none named is an empty list rather than an error.
    pub(crate) fn targets_or_none(&self) -> Result<Vec<Target>, String> {
        let inv = Inventory::load(self.inventory.as_deref())?;
        let mut include: Vec<String> = self.targets.iter().cloned().collect();
        include.extend(self.with.iter().cloned());
        if include.is_empty() {
            return Ok(Vec::new());
        }
        let t = inv.select(&include, &self.exclude)?;
        if t.is_empty() {
            return Err("the selection is empty (everything was excluded)".into());
        }
        Ok(t)
    }
}

/// Bounds a number of seconds given on the command line.
pub fn secs(what: &str, s: f64) -> Result<Duration, String> {
    if !(s > 0.0 && s <= 1e7) {
        return Err(format!(
            "{what} must be a positive number of seconds, not {s}"
        ));
    }
    Ok(Duration::from_secs_f64(s))
}

impl Common {
    /// The targets (with the become hop added) and how to connect them.
    pub fn resolve(&self) -> Result<(Vec<Target>, ConnectOptions), String> {
        self.select.targets()?;
        self.resolve_any()
    }

    /// As `resolve`, but naming no target is an empty list (a master may
    /// start with none).
    pub fn resolve_any(&self) -> Result<(Vec<Target>, ConnectOptions), String> {
        let c = &self.connect;
        let mut targets = self.select.targets_or_none()?;
        if c.become_ {
            let method = match c.become_method {
                BecomeArg::Sudo => BecomeMethod::Sudo,
                BecomeArg::Su => BecomeMethod::Su,
                BecomeArg::Doas => BecomeMethod::Doas,
            };
            let hop = Hop::Become {
                method,
                user: c.become_user.clone(),
            };
            // The user name is checked like one typed in a target.
            let check = format!("{}:{}", method.name(), c.become_user);
            crate::target::parse_chain("--become-user", &check, 0, &check)
                .map_err(|e| e.to_string())?;
            for t in &mut targets {
                t.hops.push(hop.clone());
            }
        }
        let mut ssh_args = Vec::new();
        if let Some(f) = &c.ssh_config {
            ssh_args.push("-F".to_string());
            ssh_args.push(f.to_string_lossy().into_owned());
        }
        for o in &c.ssh_option {
            ssh_args.push("-o".to_string());
            ssh_args.push(o.clone());
        }
        let become_password = crate::secret::become_password(
            c.ask_become_pass,
            c.password_fd,
            c.password_env.as_deref(),
        )?;
        let opts = ConnectOptions {
            connect_timeout: secs("--connect-timeout", c.connect_timeout)?,
            ssh_args,
            host_keys: match c.host_keys {
                HostKeys::Enforce => mitogen::HostKeyCheck::Enforce,
                HostKeys::Accept => mitogen::HostKeyCheck::Accept,
                HostKeys::Ignore => mitogen::HostKeyCheck::Ignore,
            },
            identity: c.identity.clone(),
            become_password,
        };
        Ok((targets, opts))
    }

    /// At most this many targets at once.
    pub fn forks(&self) -> Result<usize, String> {
        match self.forks {
            0 => Err("--forks must be at least 1".into()),
            n => Ok(n),
        }
    }

    /// Bound on one call of `ping` or `facts` (the connect timeout).
    pub fn call_timeout(&self) -> Result<Duration, String> {
        secs("--connect-timeout", self.connect.connect_timeout)
    }

    /// Whether to print JSON lines.
    pub fn json(&self) -> bool {
        self.json
    }

    /// The warm master to attach to, if any.
    pub fn master(&self) -> Option<&str> {
        self.master.as_deref()
    }

    /// `--persist`, parsed; `None` when not given.
    pub fn persist(&self) -> Result<Option<Duration>, String> {
        self.persist
            .as_deref()
            .map(|s| crate::master::parse_duration(s).map_err(|e| format!("--persist: {e}")))
            .transpose()
    }

    /// The connect options as command-line arguments, for a master
    /// started in the background to connect the same way.
    pub fn connect_args(&self) -> Vec<String> {
        let c = &self.connect;
        let mut a = vec![
            "--connect-timeout".to_string(),
            c.connect_timeout.to_string(),
            "--host-keys".to_string(),
            match c.host_keys {
                HostKeys::Enforce => "enforce",
                HostKeys::Accept => "accept",
                HostKeys::Ignore => "ignore",
            }
            .to_string(),
        ];
        if let Some(f) = &c.ssh_config {
            a.push("-F".into());
            a.push(f.to_string_lossy().into_owned());
        }
        for o in &c.ssh_option {
            a.push("-o".into());
            a.push(o.clone());
        }
        if let Some(f) = &c.identity {
            a.push("--identity".into());
            a.push(f.to_string_lossy().into_owned());
        }
        a
    }

    /// Whether the progress display is off.
    pub fn quiet(&self) -> bool {
        self.quiet
    }
}
