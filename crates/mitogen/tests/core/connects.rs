//! Connects that do not finish: a target that never answers times out as
//! a `TimeoutError`, and a broker's shutdown ends every connect in flight
//! at once (and its process), refuses new ones, and never leaves a live
//! context on a stopped broker.

use crate::util::{self, pid, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::{Failed, Trial};
use mitogen::{Error, Router};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "connects::a_child_costs_two_descriptors",
            TEST_LIMIT,
            a_child_costs_two_descriptors,
        ),
        trial(
            "connects::out_of_descriptors_says_so",
            TEST_LIMIT,
            out_of_descriptors_says_so,
        ),
        trial(
            "connects::stalled_connect_is_a_timeout",
            TEST_LIMIT,
            stalled_connect_is_a_timeout,
        ),
        trial(
            "connects::shutdown_cancels_a_stalled_connect",
            TEST_LIMIT,
            shutdown_cancels_a_stalled_connect,
        ),
        trial(
            "connects::shutdown_cancels_a_connect_via_an_intermediate",
            TEST_LIMIT,
            shutdown_cancels_a_connect_via_an_intermediate,
        ),
        trial(
            "connects::connect_after_shutdown_fails_at_once",
            TEST_LIMIT,
            connect_after_shutdown_fails_at_once,
        ),
        trial(
            "connects::connects_racing_shutdown_leave_nothing_alive",
            TEST_LIMIT,
            connects_racing_shutdown_leave_nothing_alive,
        ),
    ]
}

/// An `agent_command` that never runs the agent: it records its pid and
/// sleeps `secs` in its place (same process: both `sh`s exec).
fn stall_command(pidfile: &Path, secs: u32) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!("echo $$ > '{}'; exec sleep {secs}", pidfile.display()),
    ]
}

/// Makes sure this binary is in the agent cache, so that a stalled
/// connect reaches its agent command without an upload first.
fn warm_cache(router: &Router) -> TestResult {
    let c = router.local().remote_name("warm").connect()?;
    c.shutdown(true, Some(WAIT))?;
    Ok(())
}

/// Waits for the stalled command to write its pid.
fn stalled_pid(pidfile: &Path) -> Result<u32, Failed> {
    let mut got = None;
    let ok = util::wait_for(WAIT, || {
        got = std::fs::read_to_string(pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        got.is_some()
    });
    ensure!(
        ok,
        "the stalled command never ran (no {})",
        pidfile.display()
    );
    got.ok_or_else(|| "no pid".into())
}

/// Children of this process whose command line is `argv` exactly (a
/// zombie, whose command line is empty, is found by its `comm`).
fn children_running(argv: &[&str]) -> Vec<u32> {
    let me = std::process::id().to_string();
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            if util::stat_field(&stat, 4).as_deref() != Some(me.as_str()) {
                return false;
            }
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            cmd == want || (cmd.is_empty() && stat.contains(&format!("({})", argv[0])))
        })
        .collect()
}

/// A local connect whose target never answers ends at its connect
/// timeout with `Error::Timeout`, naming the method and the context, and
/// its process is killed and reaped.
fn stalled_connect_is_a_timeout() -> TestResult {
    let router = util::router()?;
    warm_cache(&router)?;
    let dir = TempDir::new("stall-timeout")?;
    let pidfile = dir.path().join("pid");
    let t = Instant::now();
    let r = router
        .local()
        .remote_name("stalling")
        .agent_command(stall_command(&pidfile, 37))
        .connect_timeout(Duration::from_millis(500))
        .connect();
    let took = t.elapsed();
    match &r {
        Err(Error::Timeout(e)) => {
            let m = e.to_string();
            ensure!(
                m.contains("stalling") && m.contains("local"),
                "the message names neither the context nor the method: {m}"
            );
            ensure!(m.contains("mitogen::main"), "no hint in {m}");
            ensure!(
                e.after() == Duration::from_millis(500),
                "after() is {:?}",
                e.after()
            );
        }
        other => return Err(format!("expected Error::Timeout, got {other:?}").into()),
    }
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    let pid = stalled_pid(&pidfile)?;
    util::wait_exited(pid, Duration::from_secs(5), false)?;
    Ok(())
}

/// `Broker::shutdown` during a connect whose target stalls: the connect
/// fails at once (not after its 30 s connect timeout) with a
/// `StreamError` saying so, and the stalled process is killed and reaped.
fn shutdown_cancels_a_stalled_connect() -> TestResult {
    let router = util::router()?;
    warm_cache(&router)?;
    let dir = TempDir::new("stall-shutdown")?;
    let pidfile = dir.path().join("pid");
    let (tx, rx) = mpsc::channel();
    let r2 = router.clone();
    let cmd = stall_command(&pidfile, 38);
    std::thread::spawn(move || {
        let r = r2
            .local()
            .remote_name("stalled")
            .agent_command(cmd)
            .connect_timeout(Duration::from_secs(30))
            .connect();
        let _ = tx.send((r, Instant::now()));
    });
    let pid = stalled_pid(&pidfile)?;
    std::thread::sleep(Duration::from_millis(300));
    let broker = router.broker().clone();
    let t = Instant::now();
    broker.shutdown();
    let got = rx.recv_timeout(Duration::from_secs(10));
    let left_running = children_running(&["sleep", "38"]);
    for p in &left_running {
        let _ = util::kill9(*p);
    }
    let (r, at) = got.map_err(|_| "the connect did not return within 10 s of shutdown")?;
    let took = at.saturating_duration_since(t);
    ensure!(
        took < Duration::from_secs(2),
        "the connect returned {took:?} after shutdown"
    );
    match &r {
        Err(Error::Stream(e)) => ensure!(
            e.message().contains("shut down") && e.message().contains("stalled"),
            "message {:?}",
            e.message()
        ),
        other => return Err(format!("expected a StreamError, got {other:?}").into()),
    }
    ensure!(
        left_running.is_empty(),
        "the stalled process is still running: {left_running:?}"
    );
    ensure!(
        util::proc_state(pid).is_none(),
        "pid {pid} not reaped (state {:?})",
        util::proc_state(pid)
    );
    util::bounded("the broker's join", WAIT, move || broker.join())?;
    Ok(())
}

/// The same through an intermediate: the caller's wait ends at once, and
/// the intermediate, shut down in turn, ends its own connect and its
/// stalled process.
fn shutdown_cancels_a_connect_via_an_intermediate() -> TestResult {
    let router = util::router()?;
    warm_cache(&router)?;
    let a = router.local().remote_name("via-a").connect()?;
    let dir = TempDir::new("stall-via")?;
    let pidfile = dir.path().join("pid");
    let (tx, rx) = mpsc::channel();
    let r2 = router.clone();
    let cmd = stall_command(&pidfile, 40);
    std::thread::spawn(move || {
        let r = r2
            .local()
            .remote_name("stalled-b")
            .agent_command(cmd)
            .connect_timeout(Duration::from_secs(30))
            .via(&a)
            .connect();
        let _ = tx.send((r, Instant::now()));
    });
    let pid = stalled_pid(&pidfile)?;
    let broker = router.broker().clone();
    let t = Instant::now();
    broker.shutdown();
    let got = rx.recv_timeout(Duration::from_secs(10));
    let gone = util::wait_exited_or_kill(pid, Duration::from_secs(10), true);
    let (r, at) = got.map_err(|_| "the connect did not return within 10 s of shutdown")?;
    let took = at.saturating_duration_since(t);
    ensure!(
        took < Duration::from_secs(2),
        "the connect returned {took:?} after shutdown"
    );
    match &r {
        Err(Error::Stream(e)) => ensure!(
            e.message().contains("shut down") && e.message().contains("via-a"),
            "message {:?}",
            e.message()
        ),
        other => return Err(format!("expected a StreamError, got {other:?}").into()),
    }
    gone?;
    util::bounded("the broker's join", WAIT, move || broker.join())?;
    Ok(())
}

/// Once shutdown has begun, a connect fails at once, whatever the method,
/// and starts no process.
fn connect_after_shutdown_fails_at_once() -> TestResult {
    let router = util::router()?;
    let broker = router.broker().clone();
    // Requested but not necessarily begun on the broker thread yet.
    broker.shutdown();
    let dir = TempDir::new("after-shutdown")?;
    let pidfile = dir.path().join("pid");
    let check = |what: &str, r: mitogen::Result<mitogen::Context>| -> TestResult {
        match r {
            Err(Error::Stream(e)) => ensure!(
                e.message().contains("shut"),
                "{what}: message {:?}",
                e.message()
            ),
            Ok(c) => {
                let answered = c.call::<pid>(()).is_ok();
                return Err(format!(
                    "{what}: connected after shutdown (a call answered: {answered})"
                )
                .into());
            }
            Err(e) => return Err(format!("{what}: expected a StreamError, got {e:?}").into()),
        }
        Ok(())
    };
    let t = Instant::now();
    check(
        "local, shutdown requested",
        router
            .local()
            .agent_command(stall_command(&pidfile, 39))
            .connect(),
    )?;
    util::bounded("the broker's join", WAIT, {
        let b = broker.clone();
        move || b.join()
    })?;
    check("local, broker stopped", router.local().connect())?;
    check("fork, broker stopped", router.fork().connect())?;
    ensure!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    ensure!(!pidfile.exists(), "a process was started after shutdown");
    Ok(())
}

/// Connects that complete while the broker shuts down either fail, or
/// return a context the shutdown then disconnects: no context answers
/// calls once the broker has stopped, and every child is reaped.
fn connects_racing_shutdown_leave_nothing_alive() -> TestResult {
    let router = util::router()?;
    warm_cache(&router)?;
    let stop = Arc::new(AtomicBool::new(false));
    let contexts = Arc::new(Mutex::new(Vec::new()));
    let mut threads = Vec::new();
    for i in 0..3 {
        let (r, stop, contexts) = (router.clone(), stop.clone(), contexts.clone());
        threads.push(std::thread::spawn(move || -> Result<usize, String> {
            let mut errors = 0;
            let t = Instant::now();
            while !stop.load(Ordering::Relaxed) && t.elapsed() < WAIT {
                let c = if i == 0 {
                    r.fork().remote_name("racer").connect()
                } else {
                    r.local().remote_name("racer").connect()
                };
                match c {
                    Ok(c) => contexts.lock().map_err(|e| e.to_string())?.push(c),
                    Err(Error::Stream(_)) => errors += 1,
                    Err(e) => return Err(format!("unexpected error: {e:?}")),
                }
                if r.broker().is_stopped() {
                    break;
                }
            }
            Ok(errors)
        }));
    }
    let ok = util::wait_for(WAIT, || {
        contexts.lock().map(|c| c.len() >= 3).unwrap_or(true)
    });
    ensure!(ok, "no connects succeeded before shutdown");
    let broker = router.broker().clone();
    broker.shutdown();
    util::bounded("the broker's join", WAIT, {
        let b = broker.clone();
        move || b.join()
    })?;
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a connecting thread panicked")??;
    }
    let all: Vec<mitogen::Context> =
        std::mem::take(&mut *contexts.lock().map_err(|e| e.to_string())?);
    for c in &all {
        let r = util::bounded("a call after shutdown", WAIT, {
            let c = c.clone();
            move || c.call::<pid>(())
        })?;
        ensure!(
            r.is_err(),
            "{} answered a call on a stopped broker (pid {r:?})",
            c.name()
        );
    }
    let left = children_named("mitogen:racer");
    ensure!(left.is_empty(), "children left: {left:?}");
    Ok(())
}

/// Children of this process whose `comm` is `name` (zombies included).
fn children_named(name: &str) -> Vec<PathBuf> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
            util::stat_field(&stat, 4).as_deref() == Some(me.as_str())
                && stat.contains(&format!("({name}"))
        })
        .collect()
}

/// In a child: lowers its own descriptor limit to what it uses plus
/// `spare`, then starts contexts until one fails; returns how many
/// started, the failure, and whether the first still answers.
#[mitogen::remote]
fn start_until_out_of_fds(router: &mitogen::Router, spare: u64) -> (usize, String, bool) {
    let used = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(64);
    let limit = used + spare;
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap_or((limit, limit));
    let _ = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, limit, hard);
    let mut started = Vec::new();
    for _ in 0..50 {
        match router.local().connect() {
            Ok(c) => started.push(c),
            Err(e) => {
                let first_ok = started
                    .first()
                    .is_some_and(|c| c.call::<crate::util::pid>(()).is_ok());
                return (started.len(), e.to_string(), first_ok);
            }
        }
    }
    (started.len(), String::new(), true)
}

/// Before: the error said "Too many open files" with nothing to do about
/// it; a user starting many contexts needs the limit and the remedy.
fn out_of_descriptors_says_so() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let (n, err, first_ok) = ctx.call::<start_until_out_of_fds>((12,))?;
    ensure!(n >= 1, "no context started at all: {err}");
    ensure!(err.contains("ulimit -n"), "after {n} contexts: {err:?}");
    ensure!(first_ok, "a context already up stopped answering");
    Ok(())
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Before: three descriptors per child (the socket, a duplicate of it for
/// writing, the pidfd). A master of many contexts runs into `ulimit -n`
/// half as soon as it must.
fn a_child_costs_two_descriptors() -> TestResult {
    let router = util::router()?;
    // Warm up: the first connect opens what the router keeps (broker, ...).
    let first = router.local().connect()?;
    first.call::<crate::util::pid>(())?;
    let before = open_fds();
    let mut kids = Vec::new();
    for _ in 0..8 {
        let c = router.local().connect()?;
        c.call::<crate::util::pid>(())?;
        kids.push(c);
    }
    // A descriptor a connect uses briefly (the last child's start-up
    // pipe) may close just after it returns: count again for a moment
    // before calling it kept.
    let t = std::time::Instant::now();
    let added = loop {
        let added = open_fds().saturating_sub(before);
        if added <= 2 * 8 || t.elapsed() > std::time::Duration::from_secs(2) {
            break added;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    ensure!(added <= 2 * 8, "{added} descriptors for 8 children");
    Ok(())
}
