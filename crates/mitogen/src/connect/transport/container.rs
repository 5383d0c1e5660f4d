//! What the container transports share: running the first stage through
//! a container tool (`docker exec`, `lxc-attach`, `kubectl exec`, …), the
//! tool's failures read as typed [`TargetError`]s, and running a tool for
//! its output within a deadline (`setns` looks up a container's process,
//! `docker` sweeps temporary containers).
//!
//! None of these tools asks questions, so there is no terminal: stdin and
//! stdout are the protocol socket, stderr a pipe whose text names the
//! failure when the stage never started.

use crate::bootstrap::stage;
use crate::connect::finish::finish;
use crate::connect::inflight::Flight;
use crate::connect::spawn::{spawn, How, PreExec};
use crate::connect::Options;
use crate::context::Context;
use crate::error::{Error, Result, StreamError, TargetError, TargetErrorKind, TimeoutError};
use crate::router::Core;
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a container tool is run, and how its failures read.
pub(crate) struct Tool {
    /// The method, for messages: `docker`, `lxc`, `kubectl`.
    pub(crate) method: &'static str,
    /// What is being reached, for messages: `container web1`.
    pub(crate) target: String,
    /// Lower-case texts of the tool meaning the target does not exist.
    pub(crate) not_found: &'static [&'static str],
    /// Runs in the child before exec (`setns`).
    pub(crate) pre_exec: Option<PreExec>,
    /// The transport's whole environment (`setns`), else inherited.
    pub(crate) env: Option<Vec<(String, String)>>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("method", &self.method)
            .field("target", &self.target)
            .finish()
    }
}

impl Tool {
    /// A tool that could not be started: missing or not executable.
    pub(crate) fn start_failed(&self, prog: &str, e: Error) -> Error {
        let missing = matches!(
            &e,
            Error::Stream(s) if matches!(
                s.kind(),
                Some(std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied)
            )
        );
        if missing {
            return TargetError::new(
                TargetErrorKind::ToolNotFound,
                format!("{}: cannot run {prog:?}: {e}", self.method),
            )
            .into();
        }
        e
    }

    /// The tool's own words, read: a missing target or shell.
    pub(crate) fn classify(&self, stderr: &str, exit: Option<i32>) -> Option<Error> {
        let l = stderr.to_ascii_lowercase();
        let said = stderr.trim();
        // First: a missing shell also reads "not found" to some tools.
        let no_sh = l.contains("/bin/sh")
            && (l.contains("no such file") || l.contains("not found"))
            || (exit == Some(127) && l.contains("not found"));
        if no_sh {
            return Some(
                TargetError::new(
                    TargetErrorKind::NoShell,
                    format!(
                        "{}: {} has no usable /bin/sh to start the agent: {said}",
                        self.method, self.target
                    ),
                )
                .into(),
            );
        }
        if self.not_found.iter().any(|t| l.contains(t)) {
            return Some(
                TargetError::new(
                    TargetErrorKind::NotFound,
                    format!("{}: {} not found: {said}", self.method, self.target),
                )
                .into(),
            );
        }
        None
    }
}

/// Starts context `id` by running `build(stage)` (the tool's argv).
pub(crate) fn connect_tool(
    core: &Arc<Core>,
    id: u32,
    default_name: String,
    opts: &Options,
    mut tool: Tool,
    build: impl FnOnce(&str) -> Vec<String>,
) -> Result<Context> {
    let flight = Flight::begin(&core.broker, &core.connects, opts.connect_timeout)?;
    let agent = opts.agent()?;
    let argv = build(&stage::script(&agent, &opts.agent_command));
    let how = How {
        c_locale: true,
        pre_exec: tool.pre_exec.take(),
        env: tool.env.take(),
        ..How::default()
    };
    let prog = argv.first().cloned().unwrap_or_default();
    let sp = spawn(&argv, how).map_err(|e| tool.start_failed(&prog, e))?;
    flight.set_pid(sp.child.pid());
    let name = opts.remote_name.clone().unwrap_or(default_name);
    let cfg = opts.config(core, id, &name, &agent);
    let classify = |stderr: &str, exit: Option<i32>| tool.classify(stderr, exit);
    let who = format!("{name} ({} {})", tool.method, tool.target);
    finish(core, sp, &agent, &cfg, &flight, &who, Some(&classify))
}

/// What a tool run for its output printed.
#[derive(Debug)]
pub(crate) struct Output {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// Runs `argv` (stdin empty) to its end, at most `timeout`: a tool that
/// hangs is killed and is a [`TimeoutError`].
pub(crate) fn run_tool(tool: &Tool, argv: &[String], timeout: Duration) -> Result<Output> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(StreamError::new("empty command").into());
    };
    let mut child = Command::new(prog)
        .args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            tool.start_failed(
                prog,
                StreamError::io(format!("cannot start {prog}: {e}"), e).into(),
            )
        })?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let file = |fd: OwnedFd| std::fs::File::from(fd);
    let mut pipes = [
        child.stdout.take().map(|p| file(p.into())),
        child.stderr.take().map(|p| file(p.into())),
    ];
    for p in pipes.iter().flatten() {
        let _ = crate::process::set_nonblocking(p.as_raw_fd());
    }
    let deadline = Instant::now() + timeout;
    loop {
        let mut fds: Vec<libc::pollfd> = pipes
            .iter()
            .map(|p| libc::pollfd {
                fd: p.as_ref().map_or(-1, |p| p.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(TimeoutError::new(
                format!("{}: {} did not finish: {}", tool.method, argv.join(" "), {
                    String::from_utf8_lossy(&err).trim()
                }),
                timeout,
            )
            .into());
        }
        if pipes.iter().all(Option::is_none) {
            if let Some(st) = child
                .try_wait()
                .map_err(|e| StreamError::io(format!("waiting for {prog}"), e))?
            {
                return Ok(Output {
                    code: st.code(),
                    stdout: String::from_utf8_lossy(&out).into_owned(),
                    stderr: String::from_utf8_lossy(&err).into_owned(),
                });
            }
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        let ms = left.as_millis().clamp(1, 50) as i32;
        crate::connect::sys::poll(&mut fds, ms)
            .map_err(|e| StreamError::io(format!("waiting for {prog}"), e))?;
        for (i, p) in pipes.iter_mut().enumerate() {
            let Some(pipe) = p else { continue };
            let mut buf = [0u8; 4096];
            match pipe.read(&mut buf) {
                Ok(0) => *p = None,
                Ok(n) => {
                    let dst = if i == 0 { &mut out } else { &mut err };
                    if dst.len() < 1 << 20 {
                        dst.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => *p = None,
            }
        }
    }
}

/// Refuses a name a method would pass on that is empty or would read as
/// an option.
pub(crate) fn check_name(method: &str, what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.starts_with('-') {
        return Err(StreamError::new(format!("{method}: bad {what} {name:?}")).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(not_found: &'static [&'static str]) -> Tool {
        Tool {
            method: "t",
            target: "container c".into(),
            not_found,
            pre_exec: None,
            env: None,
        }
    }

    fn kind(e: Option<Error>) -> Option<TargetErrorKind> {
        match e {
            Some(Error::Target(t)) => Some(t.kind()),
            _ => None,
        }
    }

    #[test]
    fn tool_words_are_read() {
        let t = tool(&["no such container"]);
        let e = t.classify("Error: no such container c", Some(1));
        assert_eq!(kind(e), Some(TargetErrorKind::NotFound));
        let e = t.classify(
            "exec: \"/bin/sh\": stat /bin/sh: no such file or directory",
            Some(127),
        );
        assert_eq!(kind(e), Some(TargetErrorKind::NoShell));
        assert!(t.classify("something else", Some(1)).is_none());
        let missing = t.start_failed(
            "/x/tool",
            StreamError::io("cannot start", std::io::ErrorKind::NotFound.into()).into(),
        );
        assert!(
            matches!(missing, Error::Target(ref e) if e.kind() == TargetErrorKind::ToolNotFound)
        );
    }

    #[test]
    fn a_hanging_tool_is_killed_at_its_deadline() {
        let t = tool(&[]);
        let t0 = Instant::now();
        let argv = ["sleep".to_string(), "30".into()];
        let r = run_tool(&t, &argv, Duration::from_millis(200));
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        let argv = [
            "sh".to_string(),
            "-c".into(),
            "echo out; echo err >&2; exit 3".into(),
        ];
        let o = run_tool(&t, &argv, Duration::from_secs(10)).unwrap();
        assert_eq!(
            (o.code, o.stdout.trim(), o.stderr.trim()),
            (Some(3), "out", "err")
        );
    }
}
