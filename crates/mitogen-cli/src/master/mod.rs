//! The warm master, client side: attaching to one, starting one in the
//! background, asking it for targets, its status, to stop.
//!
//! Why: a run on fifty hosts spends nearly all its time in ssh
//! handshakes and agent start-ups. A master process that keeps the
//! contexts connected (`mitogen master`, or started in the background by
//! any command given `--persist`, like ssh's ControlPersist) turns the
//! next run into round trips on links already up.
//!
//! A command attached to a master asks it for each target by canonical
//! name ([`Attached::acquire`]); the master connects what it does not
//! hold yet (sharing hops with what it holds, with its own connect
//! options and the password the command passes along), keeps it, and
//! hands back the context, which the command then calls directly through
//! the master's router. The master's side is [`serve`].
//!
//! A master is found by name through its socket ([`socket`]): a private
//! Unix socket of this user (`mitogen::unix`: same user only, checked on
//! both ends). A master that crashed leaves a socket whose lock is free:
//! attaching says so and `attach_or_start` starts a new one in its
//! place; a frozen one fails attaching within the timeout.

mod serve;

use serve::held;
pub use serve::{serve, Info, Reached};

use mitogen::unix;
use mitogen::{Context, Router, Secret};
use std::hash::{Hash, Hasher};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The socket of master `name`.
pub fn socket(name: &str) -> Result<PathBuf, String> {
    unix::default_path(&format!("mitogen-cli-{name}")).map_err(|e| format!("master {name:?}: {e}"))
}

/// The masters this user has sockets for (running or left by one that
/// died), by name.
pub fn names() -> Result<Vec<String>, String> {
    let probe = socket("probe")?;
    let dir = probe.parent().map(PathBuf::from).unwrap_or_default();
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            Some(
                n.strip_prefix("mitogen-cli-")?
                    .strip_suffix(".sock")?
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// The name of the background master that commands given `--persist`
/// share: one per set of connect options (`-F`, `-o`, identity, host
/// keys, connect timeout) and per build of this program, so a command
/// never uses contexts connected with other options, or a master of
/// another build.
pub fn auto_name(connect_args: &[String]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    connect_args.hash(&mut h);
    if let Ok(md) = std::env::current_exe().and_then(std::fs::metadata) {
        md.len().hash(&mut h);
        md.modified().ok().hash(&mut h);
    }
    format!("auto-{:016x}", h.finish())
}

/// A process attached to a master: keep it alive while its contexts are
/// used (dropping it detaches).
#[derive(Debug)]
pub struct Attached {
    _router: Router,
    master: Context,
    name: String,
}

impl Attached {
    /// The context of `target` (a canonical name), connected by the
    /// master if it did not hold it, or why it cannot be reached.
    pub fn acquire(
        &self,
        target: &str,
        password: Option<&Secret>,
        timeout: Duration,
    ) -> Result<Context, String> {
        let r = self
            .master
            .call_service_async::<held::acquire>((target.to_string(), password.cloned()))
            .and_then(|p| p.get(Some(timeout)))
            .map_err(|e| format!("master {:?}: {e}", self.name))?;
        match r {
            Reached {
                context: Some(c), ..
            } => Ok(c),
            Reached { error, .. } => Err(error.unwrap_or_else(|| "no reason given".into())),
        }
    }

    /// What the master says about itself.
    pub fn info(&self, timeout: Duration) -> Result<Info, String> {
        self.master
            .call_service_async::<held::info>(())
            .and_then(|p| p.get(Some(timeout)))
            .map_err(|e| format!("master {:?}: {e}", self.name))
    }

    /// Asks the master to stop (it disconnects its contexts and exits).
    pub fn stop(&self, timeout: Duration) -> Result<(), String> {
        self.master
            .call_service_async::<held::stop>(())
            .and_then(|p| p.get(Some(timeout)))
            .map_err(|e| format!("master {:?}: {e}", self.name))
    }
}

/// Attaches to master `name`, which must be running.
pub fn attach(name: &str, timeout: Duration) -> Result<Attached, String> {
    let path = socket(name)?;
    let (router, master) =
        unix::connect(&path, Some(timeout)).map_err(|e| format!("master {name:?}: {e}"))?;
    Ok(Attached {
        _router: router,
        master,
        name: name.to_string(),
    })
}

/// Attaches to master `name`, first starting it in the background (its
/// own session, stderr to `<socket>.log`) when none is listening. The
/// new master exits after `persist` with no process attached.
/// `connect_args` are the command line's connect options, which the new
/// master connects with.
pub fn attach_or_start(
    name: &str,
    persist: Duration,
    connect_args: &[String],
    timeout: Duration,
) -> Result<Attached, String> {
    if let Ok(a) = attach(name, timeout) {
        return Ok(a);
    }
    let path = socket(name)?;
    let log = path.with_extension("log");
    let err = std::fs::File::create(&log)
        .map_err(|e| format!("master {name:?}: cannot write {}: {e}", log.display()))?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["master", "-q", "--name", name, "--persist"])
        .arg(format!("{}s", persist.as_secs().max(1)))
        .args(connect_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    // Its own session: the terminal's Ctrl-C and hang-up are not its.
    // SAFETY: setsid is async-signal-safe; nothing else runs in the child
    // between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("master {name:?}: cannot start: {e}"))?;
    let until = Instant::now() + timeout.max(Duration::from_secs(5));
    loop {
        match attach(name, timeout) {
            Ok(a) => {
                // Reaped by nobody otherwise: it outlives this process,
                // re-parented to init once this one exits.
                std::thread::spawn(move || child.wait());
                return Ok(a);
            }
            Err(e) => {
                let exited = child.try_wait().ok().flatten();
                if exited.is_some() || Instant::now() >= until {
                    if exited.is_none() {
                        let _ = child.kill();
                        let _ = child.wait();
                    }
                    let tail = std::fs::read_to_string(&log).unwrap_or_default();
                    let tail = tail.lines().last().unwrap_or("").to_string();
                    return Err(format!("master {name:?} did not start: {e} {tail}"));
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Parses a duration as `90`, `90s`, `10m`, `2h` or `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (like 90s, 10m, 2h)"))?;
    let mult = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    let secs = n * mult;
    if !(0.0..=1e8).contains(&secs) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as people read it (`10m`, `90s`).
pub fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s >= 3600 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s >= 60 && s % 60 == 0 => format!("{}m", s / 60),
        s if s >= 60 => format!("{}m{}s", s / 60, s % 60),
        _ => format!("{:.0}s", d.as_secs_f64()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("-5s").is_err());
        assert_eq!(show_duration(Duration::from_secs(600)), "10m");
        assert_eq!(show_duration(Duration::from_secs(90)), "1m30s");
    }

    #[test]
    fn auto_names_follow_connect_options() {
        let a = auto_name(&["-F".into(), "/a".into()]);
        assert_eq!(a, auto_name(&["-F".into(), "/a".into()]));
        assert_ne!(a, auto_name(&["-F".into(), "/b".into()]));
        assert!(a.starts_with("auto-"));
    }
}
