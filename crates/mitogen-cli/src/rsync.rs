//! `rsync`: the local `rsync` run once per target through
//! `mitogen::fakessh`, whose `ssh` runs rsync's remote half on the
//! target's context (no login, key or open port of its own).
//!
//! In rsync's arguments `:PATH` stands for PATH on the target; it is
//! given to rsync as `mitogen:PATH` (any `HOST:PATH` works as well: the
//! host is ignored, the context decides). `RSYNC_RSH` is removed from
//! rsync's environment, and `-e`/`--rsh` refused, so that rsync runs the
//! fake `ssh`. rsync's output is captured per target (in unnamed files,
//! bounded by `--max-output` when read back) and shown like `run`'s:
//! gathered, inline or JSON.

use crate::cli::{secs, RsyncArgs};
use crate::commands::{outputs, session};
use crate::output::Outcome;
use crate::remote::CommandOutput;
use mitogen::fakessh::Tool;
use mitogen::Context;
use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The host name put in front of `:PATH` (rsync needs one to go remote).
const HOST: &str = "mitogen";

/// Whether rsync reads `arg` as remote: a colon before any slash
/// (`host:path`, `:path`), not `host::module` (the daemon).
fn is_remote(arg: &str) -> bool {
    if arg.starts_with('-') {
        return false;
    }
    match (arg.find(':'), arg.find('/')) {
        (Some(c), slash) => slash.map_or(true, |s| c < s) && !arg[c..].starts_with("::"),
        (None, _) => false,
    }
}

/// Whether option `a` sets rsync's remote shell: `--rsh`, or `-e` in a
/// cluster of short options (`-ave`), before any that takes a value.
fn sets_shell(a: &str) -> bool {
    if a.starts_with("--") {
        return a == "--rsh" || a.starts_with("--rsh=");
    }
    for c in a.chars().skip(1) {
        match c {
            'e' => return true,
            'B' | 'f' | 'M' | 'T' | '@' => return false,
            _ => {}
        }
    }
    false
}

/// rsync's arguments with `:PATH` made `mitogen:PATH`; refused when no
/// argument names the target, or when they set the remote shell.
pub fn rewrite(args: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::with_capacity(args.len());
    let mut remote = false;
    let mut options = true;
    for a in args {
        if options && a == "--" {
            options = false;
            out.push(a.clone());
            continue;
        }
        let opt = options && a.starts_with('-');
        if opt && sets_shell(a) {
            return Err(format!(
                "rsync {a}: the remote shell is mitogen's (leave out -e/--rsh)"
            ));
        }
        if !opt && is_remote(a) {
            remote = true;
            if a.starts_with(':') {
                out.push(format!("{HOST}{a}"));
                continue;
            }
        }
        out.push(a.clone());
    }
    if !remote {
        return Err(
            "no rsync argument names the target: write its paths as :PATH (`mitogen rsync web1 -- -a ./site/ :/srv/www/`)"
                .into(),
        );
    }
    Ok(out)
}

/// A file with no name, for one stream of rsync's output.
fn capture_file() -> std::io::Result<File> {
    let dir = std::env::temp_dir();
    let anon = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_TMPFILE)
        .mode(0o600)
        .open(&dir);
    match anon {
        Ok(f) => Ok(f),
        Err(_) => {
            // No O_TMPFILE here: a new file, unlinked at once.
            static N: AtomicU64 = AtomicU64::new(0);
            let p = dir.join(format!(
                ".mitogen-rsync-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&p)?;
            std::fs::remove_file(&p)?;
            Ok(f)
        }
    }
}

/// What was written to `f`: at most `max` bytes, and how many more.
fn read_back(mut f: File, max: usize) -> (Vec<u8>, u64) {
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut kept = Vec::new();
    if f.rewind().is_ok() {
        let _ = (&mut f).take(max as u64).read_to_end(&mut kept);
    }
    let dropped = len.saturating_sub(kept.len() as u64);
    (kept, dropped)
}

/// Runs rsync with `argv` through a fake ssh reaching `ctx`.
fn rsync_one(
    ctx: &Context,
    argv: &[String],
    timeout: Option<Duration>,
    max: usize,
) -> Result<CommandOutput, String> {
    let start = Instant::now();
    let (out, err) = (
        capture_file().map_err(|e| format!("a file for rsync's output: {e}"))?,
        capture_file().map_err(|e| format!("a file for rsync's output: {e}"))?,
    );
    let dup = |f: &File| f.try_clone().map_err(|e| format!("dup: {e}"));
    let mut cmd = Command::new("rsync");
    cmd.args(argv)
        .env_remove("RSYNC_RSH")
        .stdin(Stdio::null())
        .stdout(dup(&out)?)
        .stderr(dup(&err)?);
    let mut tool = Tool::new(ctx, cmd);
    if let Some(t) = timeout {
        tool = tool.deadline(t);
    }
    let r = tool.status();
    let (stdout, stdout_dropped) = read_back(out, max);
    let (stderr, stderr_dropped) = read_back(err, max);
    let mut o = CommandOutput {
        stdout: mitogen::ByteBuf::from(stdout),
        stderr: mitogen::ByteBuf::from(stderr),
        stdout_dropped,
        stderr_dropped,
        ..Default::default()
    };
    match r {
        Ok(s) => {
            o.status = s.code();
            o.signal = s.signal();
        }
        Err(mitogen::Error::Timeout(_)) => o.timed_out = true,
        Err(e) => return Err(e.to_string()),
    }
    o.elapsed = start.elapsed();
    Ok(o)
}

/// `mitogen rsync TARGETS -- RSYNC-ARGS…`
pub fn rsync(router: &mitogen::Router, args: &RsyncArgs) -> Result<ExitCode, String> {
    let argv = rewrite(&args.args)?;
    let timeout = args
        .bounds
        .timeout
        .map(|t| secs("--timeout", t))
        .transpose()?;
    let max = args.bounds.max_output;
    let s = session(router, &args.common)?;
    let mode = args.shown.mode(args.common.json());
    let each = move |ctx: &Context| match rsync_one(ctx, &argv, timeout, max) {
        Ok(o) => Outcome::Ran(o),
        Err(e) => Outcome::Failed(e),
    };
    // Ctrl-C: no new rsync starts; those running end with this program
    // (their ssh is served by it).
    Ok(outputs(&s, mode, each, |_| {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn colon_paths_name_the_target() {
        assert_eq!(
            rewrite(&v(&["-a", "./dir/", ":/srv/dir/"])).unwrap(),
            v(&["-a", "./dir/", "mitogen:/srv/dir/"])
        );
        assert_eq!(
            rewrite(&v(&["-a", "h:/x", "back/"])).unwrap(),
            v(&["-a", "h:/x", "back/"])
        );
        // A colon after a slash is a local path.
        assert!(rewrite(&v(&["-a", "./a:b", "c"])).is_err());
        assert!(rewrite(&v(&["-a", "x", "y"]))
            .unwrap_err()
            .contains(":PATH"));
        assert!(rewrite(&v(&["-e", "ssh -p 2", "x", ":y"])).is_err());
        assert!(rewrite(&v(&["--rsh=ssh", "x", ":y"])).is_err());
        assert!(sets_shell("-ave") && !sets_shell("-f- .env") && !sets_shell("--exclude=e"));
        // Options are not paths; `host::module` is the daemon's.
        assert!(!is_remote("--exclude=:x") && !is_remote("h::mod"));
        assert!(is_remote(":rel") && is_remote("h:/abs"));
    }

    #[test]
    fn captured_output_is_bounded_when_read_back() {
        use std::io::Write;
        let mut f = capture_file().unwrap();
        f.write_all(b"0123456789").unwrap();
        assert_eq!(read_back(f, 4), (b"0123".to_vec(), 6));
    }
}
