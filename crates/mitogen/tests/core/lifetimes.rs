//! Lifetimes: a child goes away with its parent's link, whether the
//! parent is an intermediate context or the master, and a router reaps
//! its children when dropped.

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use crate::util::{pid, sleep_ms};
use libtest_mimic::Trial;
use mitogen::Error;
use std::io::BufRead;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "lifetimes::child_exits_when_intermediate_killed",
            TEST_LIMIT,
            child_exits_when_intermediate_killed,
        ),
        trial(
            "lifetimes::busy_child_exits_when_parent_killed",
            TEST_LIMIT,
            busy_child_exits_when_parent_killed,
        ),
        trial(
            "lifetimes::frozen_child_is_killed",
            TEST_LIMIT,
            frozen_child_is_killed,
        ),
        trial(
            "lifetimes::child_exits_when_master_killed",
            Duration::from_secs(120),
            child_exits_when_master_killed,
        ),
        trial(
            "lifetimes::router_drop_reaps_children",
            TEST_LIMIT,
            router_drop_reaps_children,
        ),
        trial(
            "lifetimes::shutdown_stops_descendants",
            TEST_LIMIT,
            shutdown_stops_descendants,
        ),
        trial(
            "lifetimes::shutdown_via_context",
            TEST_LIMIT,
            shutdown_via_context,
        ),
        trial(
            "lifetimes::router_drop_fails_blocked_call",
            TEST_LIMIT,
            router_drop_fails_blocked_call,
        ),
    ]
}

#[mitogen::remote]
fn parent_pid() -> u32 {
    std::os::unix::process::parent_id()
}

/// A child busy in a long call still goes when its parent dies: the call
/// does not keep an orphan alive.
fn busy_child_exits_when_parent_killed() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("busy-a").connect()?;
    let b = router.local().remote_name("busy-b").via(&a).connect()?;
    let a_pid = a.call::<pid>(())?;
    let b_pid = b.call::<pid>(())?;
    let pending = b.call_async::<sleep_ms>((60_000,))?;
    std::thread::sleep(Duration::from_millis(100));
    util::kill9(a_pid)?;
    let took = util::wait_exited_or_kill(b_pid, Duration::from_secs(3), true)?;
    ensure!(
        took < Duration::from_secs(3),
        "busy b exited after {took:?}"
    );
    match pending.get(Some(WAIT)) {
        Err(Error::Channel(e)) => ensure!(
            e.reason().contains("disconnected"),
            "reason {:?}",
            e.reason()
        ),
        other => return Err(format!("expected a disconnect error, got {other:?}").into()),
    }
    Ok(())
}

/// A child that cannot react (SIGSTOP: it never sees its link close, and
/// SIGTERM stays pending) is still reaped: the router escalates from
/// SIGTERM to SIGKILL.
fn frozen_child_is_killed() -> TestResult {
    let router = util::router()?;
    router
        .broker()
        .set_shutdown_timeout(Duration::from_millis(500));
    let c = router.local().remote_name("frozen").connect()?;
    let pid = c.call::<pid>(())?;
    // SAFETY: stopping our own child process.
    ensure!(
        unsafe { libc::kill(pid as i32, libc::SIGSTOP) } == 0,
        "SIGSTOP failed"
    );
    drop(c);
    drop(router);
    let took = util::wait_exited(pid, Duration::from_secs(10), false)?;
    ensure!(
        took < Duration::from_secs(10),
        "frozen child still there after {took:?}"
    );
    Ok(())
}

fn child_exits_when_intermediate_killed() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("life-a").connect()?;
    let b = router.local().remote_name("life-b").via(&a).connect()?;
    let a_pid = a.call::<pid>(())?;
    let b_pid = b.call::<pid>(())?;
    ensure!(
        b.call::<parent_pid>(())? == a_pid,
        "b is not a child process of a"
    );
    util::kill9(a_pid)?;
    let took = util::wait_exited_or_kill(b_pid, Duration::from_secs(3), true)?;
    ensure!(took < Duration::from_secs(3), "b exited after {took:?}");
    // The master learns that both are gone, and reaps a.
    ensure!(
        util::wait_for(WAIT, || !a.is_connected() && !b.is_connected()),
        "still connected: a={} b={}",
        a.is_connected(),
        b.is_connected()
    );
    let c = b.clone();
    let r = util::bounded("a call to b", WAIT, move || c.call::<pid>(()))?;
    ensure!(matches!(r, Err(Error::Channel(_))), "call to b: {r:?}");
    util::wait_exited(a_pid, Duration::from_secs(5), false)?;
    Ok(())
}

fn child_exits_when_master_killed() -> TestResult {
    let path = util::example("orphan_master")?;
    let mut master = std::process::Command::new(&path)
        .arg("sleep")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", path.display()))?;
    let stdout = master.stdout.take().ok_or("no stdout")?;
    let line = util::bounded("the master's first line", WAIT, move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })?;
    let result = (|| -> TestResult {
        let line = line.map_err(|e| format!("reading the master's stdout: {e}"))?;
        let child: u32 = line
            .trim()
            .strip_prefix("child-pid ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("unexpected output {line:?}"))?;
        ensure!(
            util::proc_state(child).is_some_and(|s| s != 'Z'),
            "child {child} not running before the kill"
        );
        master
            .kill()
            .map_err(|e| format!("killing the master: {e}"))?;
        let _ = master.wait();
        let took = util::wait_exited_or_kill(child, Duration::from_secs(3), true)?;
        ensure!(took < Duration::from_secs(3), "child exited after {took:?}");
        Ok(())
    })();
    let _ = master.kill();
    let _ = master.wait();
    result
}

fn router_drop_reaps_children() -> TestResult {
    let router = util::router()?;
    let local = router.local().remote_name("reaped-local").connect()?;
    let forked = router.fork().remote_name("reaped-fork").connect()?;
    let via = router
        .local()
        .remote_name("reaped-via")
        .via(&local)
        .connect()?;
    let local_pid = local.call::<pid>(())?;
    let fork_pid = forked.call::<pid>(())?;
    let via_pid = via.call::<pid>(())?;

    // Dropping one clone of two changes nothing.
    let clone = router.clone();
    drop(router);
    std::thread::sleep(Duration::from_millis(100));
    ensure!(local.call::<pid>(())? == local_pid, "local gone early");
    ensure!(forked.call::<pid>(())? == fork_pid, "fork gone early");

    // Dropping the last one stops and reaps every child.
    util::bounded("dropping the last router clone", WAIT, move || drop(clone))?;
    for (what, pid) in [("local", local_pid), ("fork", fork_pid)] {
        util::wait_exited(pid, Duration::from_secs(5), false)
            .map_err(|e| format!("{what} child: {}", e.message().unwrap_or("")))?;
    }
    // The grandchild is reaped by its own parent, or by init.
    util::wait_exited_or_kill(via_pid, Duration::from_secs(5), true)?;
    ensure!(!local.is_connected(), "local still connected");
    let r = util::bounded("a call after the router dropped", WAIT, move || {
        local.call::<pid>(())
    })?;
    ensure!(r.is_err(), "call after the router dropped: {r:?}");
    Ok(())
}

fn shutdown_stops_descendants() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("stop-a").connect()?;
    let b = router.local().remote_name("stop-b").via(&a).connect()?;
    let c = router.fork().remote_name("stop-c").via(&b).connect()?;
    let pids = [a.call::<pid>(())?, b.call::<pid>(())?, c.call::<pid>(())?];
    a.shutdown(true, Some(WAIT))?;
    for pid in pids {
        util::wait_exited_or_kill(pid, Duration::from_secs(5), true)?;
    }
    ensure!(
        util::wait_for(WAIT, || !a.is_connected()
            && !b.is_connected()
            && !c.is_connected()),
        "still connected after shutdown"
    );
    Ok(())
}

fn shutdown_via_context() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("keep-a").connect()?;
    let b = router.local().remote_name("stop-b").via(&a).connect()?;
    let a_pid = a.call::<pid>(())?;
    let b_pid = b.call::<pid>(())?;
    b.shutdown(true, Some(WAIT))?;
    ensure!(!b.is_connected(), "b still connected after shutdown(wait)");
    // a reaps its own child.
    util::wait_exited(b_pid, Duration::from_secs(5), false)?;
    let c = b.clone();
    let r = util::bounded("a call to b", WAIT, move || c.call::<pid>(()))?;
    ensure!(r.is_err(), "call to a shut down context: {r:?}");
    // The intermediate is untouched and can start another one.
    ensure!(a.call::<pid>(())? == a_pid, "a was affected");
    ensure!(a.is_connected(), "a disconnected");
    let b2 = router.local().remote_name("stop-b2").via(&a).connect()?;
    ensure!(b2.call::<parent_pid>(())? == a_pid, "new child of a");
    Ok(())
}

fn router_drop_fails_blocked_call() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("busy-at-drop").connect()?;
    let pid = ctx.call::<pid>(())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let c = ctx.clone();
    std::thread::spawn(move || {
        let r = c.call::<sleep_ms>((30_000,));
        let _ = tx.send((r, std::time::Instant::now()));
    });
    std::thread::sleep(Duration::from_millis(300));
    let dropped_at = std::time::Instant::now();
    // The child is busy for 30 s and cannot shut down gracefully: the
    // router gives up after its shutdown timeout and kills it.
    util::bounded("dropping the router", Duration::from_secs(20), move || {
        drop(router)
    })?;
    let drop_took = dropped_at.elapsed();
    let (r, at) = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the blocked call never returned")?;
    ensure!(r.is_err(), "the blocked call returned {r:?}");
    let call_took = at.duration_since(dropped_at);
    ensure!(
        call_took < Duration::from_secs(12),
        "the blocked call failed {call_took:?} after the drop"
    );
    ensure!(
        drop_took < Duration::from_secs(15),
        "the drop took {drop_took:?}"
    );
    util::wait_exited(pid, Duration::from_secs(5), false)?;
    Ok(())
}
