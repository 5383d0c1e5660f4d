//! `mitogen::unix`: a separate process of the same program (this test
//! binary, run again with `MITOGEN_TEST_ATTACH` set: see [`helper`])
//! attaches to a master listening on a Unix socket, calls the master's
//! services and, by the listener's `Reach`, the master's contexts; a live
//! master's socket is refused to a second master, a dead one's is
//! replaced, and a dead or frozen master is a typed error, not a hang.

use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::{Failed, Trial};
use mitogen::service::{BoxError, Service, Services};
use mitogen::unix::{Listener, Reach};
use mitogen::{Context, Error, ExternalContext};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("attach::reaches_the_tree", TEST_LIMIT, reaches_the_tree),
        trial("attach::reach_master_only", TEST_LIMIT, reach_master_only),
        trial(
            "attach::live_refused_stale_replaced",
            TEST_LIMIT,
            live_refused_stale_replaced,
        ),
        trial(
            "attach::counts_the_attached",
            TEST_LIMIT,
            counts_the_attached,
        ),
        trial(
            "attach::frozen_master_times_out",
            TEST_LIMIT,
            frozen_master_times_out,
        ),
    ]
}

/// The contexts a master hands to processes that attach.
struct Directory {
    contexts: Mutex<Vec<Context>>,
    visits: AtomicU64,
}

impl Service for Directory {
    const NAME: &'static str = "tests::Directory";
    fn new(_: &ExternalContext) -> Result<Self, BoxError> {
        Ok(Directory {
            contexts: Mutex::new(Vec::new()),
            visits: AtomicU64::new(0),
        })
    }
}

#[mitogen::service]
impl Directory {
    /// Parents only: an attached process acts with the master's authority.
    #[expose]
    fn contexts(&self) -> Vec<Context> {
        self.visits.fetch_add(1, Ordering::SeqCst);
        self.contexts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Run instead of the tests when this binary is started as a helper
/// process: `serve` (listen on the path, print `listening`, wait for
/// stdin to close), `call` (attach, print what it sees), `bind` (try to
/// listen, print the outcome). Returns the exit code.
pub fn helper(router: &mitogen::Router) -> Option<i32> {
    let mode = std::env::var("MITOGEN_TEST_ATTACH").ok()?;
    let path = PathBuf::from(std::env::var_os("MITOGEN_TEST_ATTACH_PATH")?);
    match mode.as_str() {
        "serve" => {
            let listener = match Listener::bind(router, &path, Reach::Tree) {
                Ok(l) => l,
                Err(e) => {
                    println!("bind-err {e}");
                    return Some(1);
                }
            };
            println!("listening");
            // Until the test closes stdin (or kills this process).
            let mut line = String::new();
            let _ = std::io::stdin().read_line(&mut line);
            drop(listener);
        }
        "call" => call(&path),
        "hold" => {
            // Attached until the test closes stdin.
            match mitogen::unix::connect(&path, Some(Duration::from_secs(10))) {
                Ok(attached) => {
                    println!("attached");
                    let mut line = String::new();
                    let _ = std::io::stdin().read_line(&mut line);
                    drop(attached);
                }
                Err(e) => println!("connect-err {e}"),
            }
        }
        other => println!("unknown mode {other}"),
    }
    Some(0)
}

/// The `call` helper: attach, list the master's contexts, call each.
fn call(path: &Path) {
    let (router, master) = match mitogen::unix::connect(path, Some(Duration::from_secs(10))) {
        Ok(a) => a,
        Err(e) => return println!("connect-err {e}"),
    };
    println!("id {}", router.context_id());
    println!("master {}", master.context_id());
    let contexts = match master.call_service_async::<directory::contexts>(()) {
        Ok(p) => p.get(Some(WAIT)),
        Err(e) => Err(e),
    };
    match contexts {
        Ok(cs) => {
            for c in cs {
                match c
                    .call_async::<util::pid>(())
                    .and_then(|p| p.get(Some(WAIT)))
                {
                    Ok(pid) => println!("pid {pid}"),
                    Err(e) => println!("pid-err {e}"),
                }
            }
        }
        Err(e) => println!("contexts-err {e}"),
    }
    match mitogen::unix::published(&master) {
        Ok(cs) => {
            for c in cs {
                match c
                    .call_async::<util::pid>(())
                    .and_then(|p| p.get(Some(WAIT)))
                {
                    Ok(pid) => println!("published-pid {} {pid}", c.name()),
                    Err(e) => println!("published-err {e}"),
                }
            }
        }
        Err(e) => println!("published-list-err {e}"),
    }
}

/// This test binary, run as a helper in `mode` on `path`.
fn helper_cmd(mode: &str, path: &Path) -> Result<Command, Failed> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env("MITOGEN_TEST_ATTACH", mode)
        .env("MITOGEN_TEST_ATTACH_PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    Ok(cmd)
}

/// Starts the `mode` helper against `path` and waits (bounded) for the
/// first line it prints to be `ready`; the running helper.
fn spawn_helper(mode: &str, path: &Path, ready: &str) -> Result<std::process::Child, Failed> {
    let mut child = helper_cmd(mode, path)?
        .spawn()
        .map_err(|e| format!("spawning the {mode} helper: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let said = rx.recv_timeout(WAIT);
    match said {
        Ok(line) if line.trim() == ready => Ok(child),
        other => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("the {mode} helper did not say {ready:?}: {other:?}").into())
        }
    }
}

/// Runs the `call` helper against `path`; its output lines.
fn run_call(path: &Path) -> Result<Vec<String>, Failed> {
    let mut cmd = helper_cmd("call", path)?;
    cmd.stdin(Stdio::null());
    let out = util::bounded("the attaching process", WAIT, move || cmd.output())?
        .map_err(|e| format!("running the helper: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "helper failed ({}): {text}",
        out.status
    );
    Ok(text.lines().map(str::to_string).collect())
}

/// The value after `key ` on the first line starting so.
fn field<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

fn private_dir(tag: &str) -> Result<TempDir, Failed> {
    let d = TempDir::new(tag)?;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod: {e}"))?;
    Ok(d)
}

/// A `serve` helper, once it listens.
struct Server(Child);

impl Server {
    fn start(path: &Path) -> Result<Server, Failed> {
        Ok(Server(spawn_helper("serve", path, "listening")?))
    }

    fn signal(&self, sig: nix::sys::signal::Signal) -> TestResult {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        nix::sys::signal::kill(pid, sig).map_err(|e| format!("kill {sig}: {e}").into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn reaches_the_tree() -> TestResult {
    let router = util::router()?;
    let child = router.local().connect()?;
    let child_pid = child.call_async::<util::pid>(())?.get(Some(WAIT))?;
    let directory = Services::of(&router).get::<Directory>()?;
    directory
        .contexts
        .lock()
        .map_err(|_| "poisoned")?
        .push(child.clone());
    let lost = std::sync::Arc::new(Mutex::new(Vec::new()));
    let l = lost.clone();
    router.on_context_disconnect(move |d| {
        l.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(d.context_id)
    });
    let dir = private_dir("attach-tree")?;
    let path = dir.path().join("master.sock");
    let listener = Listener::bind(&router, &path, Reach::Tree)?;
    listener.publish(&child)?;
    let lines = run_call(&path)?;
    let id: u32 = field(&lines, "id")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("no id in {lines:?}"))?;
    ensure!(
        id != 0 && id != child.context_id(),
        "the attached process got id {id}"
    );
    ensure!(field(&lines, "master") == Some("0"), "{lines:?}");
    ensure!(
        field(&lines, "pid") == Some(child_pid.to_string().as_str()),
        "the attached process did not reach the master's child: {lines:?}"
    );
    ensure!(
        field(&lines, "published-pid") == Some(format!("{} {child_pid}", child.name()).as_str()),
        "the published context: {lines:?}"
    );
    ensure!(
        directory.visits.load(Ordering::SeqCst) == 1,
        "the master's own instance was not the one called"
    );
    // It exited: the master forgets it.
    ensure!(
        util::wait_for(WAIT, || lost
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&id)),
        "the master never saw the attached process go"
    );
    ensure!(child.is_connected(), "the master's child suffered");
    // Another attach gets another id.
    let again = run_call(&path)?;
    ensure!(
        field(&again, "id").is_some_and(|v| v != id.to_string()),
        "ids reused: {again:?}"
    );
    Ok(())
}

fn reach_master_only() -> TestResult {
    let router = util::router()?;
    let child = router.local().connect()?;
    Services::of(&router)
        .get::<Directory>()?
        .contexts
        .lock()
        .map_err(|_| "poisoned")?
        .push(child.clone());
    let dir = private_dir("attach-master")?;
    let path = dir.path().join("master.sock");
    let _listener = Listener::bind(&router, &path, Reach::Master)?;
    let lines = run_call(&path)?;
    ensure!(
        field(&lines, "pid").is_none(),
        "it reached beyond the master: {lines:?}"
    );
    ensure!(
        field(&lines, "pid-err").is_some_and(|e| e.contains("refused")),
        "the master's child was not refused: {lines:?}"
    );
    Ok(())
}

fn live_refused_stale_replaced() -> TestResult {
    let dir = private_dir("attach-stale")?;
    let path = dir.path().join("m.sock");
    let server = Server::start(&path)?;
    // Another process listens there: refused.
    let router = util::router()?;
    match Listener::bind(&router, &path, Reach::Tree) {
        Err(Error::Stream(e)) => ensure!(
            e.kind() == Some(std::io::ErrorKind::AddrInUse),
            "live master: {e}"
        ),
        other => return Err(format!("bound over a live master: {other:?}").into()),
    }
    // A process attaches to it.
    let lines = run_call(&path)?;
    ensure!(
        field(&lines, "id").is_some(),
        "attach to the helper: {lines:?}"
    );
    // It dies without cleaning up: the socket stays, dead.
    server.signal(nix::sys::signal::Signal::SIGKILL)?;
    drop(server);
    ensure!(path.exists(), "the killed master's socket vanished");
    match mitogen::unix::connect(&path, Some(Duration::from_secs(5))) {
        Err(Error::Stream(e)) => ensure!(
            e.kind() == Some(std::io::ErrorKind::ConnectionRefused)
                && e.to_string().contains("no master is listening"),
            "dead master: {e}"
        ),
        other => return Err(format!("connected to a dead master: {other:?}").into()),
    }
    // The stale socket is replaced, and the new master serves.
    let _listener = Listener::bind(&router, &path, Reach::Tree)?;
    let lines = run_call(&path)?;
    ensure!(
        field(&lines, "master") == Some("0"),
        "after replacing: {lines:?}"
    );
    Ok(())
}

fn frozen_master_times_out() -> TestResult {
    let dir = private_dir("attach-frozen")?;
    let path = dir.path().join("m.sock");
    let server = Server::start(&path)?;
    server.signal(nix::sys::signal::Signal::SIGSTOP)?;
    // A signal is delivered asynchronously: connect only once it is
    // stopped for sure.
    let pid = server.0.id();
    ensure!(
        util::wait_for(WAIT, || util::proc_state(pid) == Some('T')),
        "the master did not stop"
    );
    let p = path.clone();
    let r = util::bounded("connect to a frozen master", WAIT, move || {
        mitogen::unix::connect(&p, Some(Duration::from_millis(500))).map(|_| ())
    })?;
    ensure!(matches!(r, Err(Error::Timeout(_))), "frozen master: {r:?}");
    Ok(())
}

/// `Listener::attached`: none, one while a process is attached, none
/// again once it has gone (what a master that expires when idle counts).
fn counts_the_attached() -> TestResult {
    let router = util::router()?;
    let dir = private_dir("attach-count")?;
    let path = dir.path().join("m.sock");
    let listener = Listener::bind(&router, &path, Reach::Master)?;
    ensure!(
        listener.attached() == 0,
        "{} attached at first",
        listener.attached()
    );
    let mut child = spawn_helper("hold", &path, "attached")?;
    let one = util::wait_for(WAIT, || listener.attached() == 1);
    let seen = listener.attached();
    drop(child.stdin.take());
    let _ = util::bounded("the helper's exit", WAIT, move || child.wait())?;
    ensure!(one, "{seen} attached while one process was");
    ensure!(
        util::wait_for(WAIT, || listener.attached() == 0),
        "{} still attached after the process exited",
        listener.attached()
    );
    Ok(())
}
