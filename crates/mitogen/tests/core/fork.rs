//! Fork contexts: calls, `on_fork` / `on_start`, and many forks while
//! another thread keeps calling.

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{Error, ExternalContext};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("fork::call", TEST_LIMIT, call),
        trial("fork::on_start_captures", TEST_LIMIT, on_start_captures),
        trial("fork::on_fork_runs_first", TEST_LIMIT, on_fork_runs_first),
        trial("fork::via_child", TEST_LIMIT, via_child),
        trial("fork::via_refuses_hooks", TEST_LIMIT, via_refuses_hooks),
        trial(
            "fork::many_forks_while_calling",
            Duration::from_secs(120),
            many_forks_while_calling,
        ),
    ]
}

/// Set by `on_start` in a forked child; never in the test process.
static ON_START_DATA: Mutex<Option<(u32, Vec<String>)>> = Mutex::new(None);
/// Hooks in the order they ran, in a forked child.
static HOOKS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
static ON_FORK_RAN: AtomicBool = AtomicBool::new(false);
static ON_FORK_PID: AtomicU32 = AtomicU32::new(0);

#[mitogen::remote]
fn pids() -> (u32, u32) {
    (std::process::id(), std::os::unix::process::parent_id())
}

#[mitogen::remote]
fn ids() -> (u32, Option<u32>, Vec<u32>) {
    (
        mitogen::context_id(),
        mitogen::parent_id(),
        mitogen::parent_ids().to_vec(),
    )
}

#[mitogen::remote]
fn on_start_data() -> Option<(u32, Vec<String>)> {
    ON_START_DATA
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

#[mitogen::remote]
fn hook_record() -> (bool, u32, Vec<String>) {
    (
        ON_FORK_RAN.load(Ordering::SeqCst),
        ON_FORK_PID.load(Ordering::SeqCst),
        HOOKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
}

#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn call() -> TestResult {
    let router = util::router()?;
    let ctx = router.fork().remote_name("forked").connect()?;
    ensure!(ctx.name() == "forked", "name {:?}", ctx.name());
    let (pid, ppid) = ctx.call::<pids>(())?;
    ensure!(pid != std::process::id(), "ran in the test process");
    ensure!(ppid == std::process::id(), "parent pid {ppid}");
    let (id, parent, parents) = ctx.call::<ids>(())?;
    ensure!(id == ctx.context_id(), "context_id {id}");
    ensure!(
        parent == Some(0) && parents == [0],
        "{parent:?} {parents:?}"
    );
    ensure!(ctx.call::<add>((20, 22))? == 42, "add");

    // Default name.
    let anon = router.fork().connect()?;
    let (apid, _) = anon.call::<pids>(())?;
    ensure!(
        anon.name() == format!("fork.{apid}"),
        "default name {:?} for pid {apid}",
        anon.name()
    );
    ensure!(apid != pid, "two forks share a pid");
    Ok(())
}

fn on_start_captures() -> TestResult {
    let router = util::router()?;
    // Built here, moved into the closure; the child gets its copy.
    let data: Vec<String> = (0..100).map(|i| format!("item-{i}")).collect();
    let expected = data.clone();
    let ctx = router
        .fork()
        .on_start(move |ec: &ExternalContext| {
            let id = ec.context_id();
            *ON_START_DATA.lock().unwrap_or_else(|e| e.into_inner()) = Some((id, data));
        })
        .connect()?;
    let got = ctx.call::<on_start_data>(())?;
    ensure!(
        got == Some((ctx.context_id(), expected)),
        "on_start data came back as {got:?}"
    );
    // Nothing leaked into this process.
    ensure!(
        on_start_data().is_none(),
        "on_start ran in the parent process"
    );
    // A fork without hooks starts clean.
    let plain = router.fork().connect()?;
    ensure!(plain.call::<on_start_data>(())?.is_none(), "stale state");
    Ok(())
}

fn on_fork_runs_first() -> TestResult {
    let router = util::router()?;
    let ctx = router
        .fork()
        .on_fork(|| {
            ON_FORK_RAN.store(true, Ordering::SeqCst);
            ON_FORK_PID.store(std::process::id(), Ordering::SeqCst);
            HOOKS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push("on_fork");
        })
        .on_start(|_| {
            // Identity is already set when on_start runs.
            let id = mitogen::context_id();
            HOOKS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(if id != 0 {
                    "on_start"
                } else {
                    "on_start-as-master"
                });
        })
        .connect()?;
    let (ran, pid, hooks) = ctx.call::<hook_record>(())?;
    let (child, _) = ctx.call::<pids>(())?;
    ensure!(ran, "on_fork did not run");
    ensure!(
        pid == child,
        "on_fork ran in pid {pid}, the child is {child}"
    );
    ensure!(hooks == ["on_fork", "on_start"], "hooks ran as {hooks:?}");
    ensure!(
        !ON_FORK_RAN.load(Ordering::SeqCst),
        "on_fork ran in the parent"
    );
    Ok(())
}

fn via_child() -> TestResult {
    let router = util::router()?;
    let local = router.local().remote_name("fork-parent").connect()?;
    let ctx = router
        .fork()
        .remote_name("fork-of-child")
        .via(&local)
        .connect()?;
    let (lpid, _) = local.call::<pids>(())?;
    let (pid, ppid) = ctx.call::<pids>(())?;
    ensure!(
        ppid == lpid && pid != lpid,
        "fork of {lpid} is {pid} (ppid {ppid})"
    );
    let (id, parent, parents) = ctx.call::<ids>(())?;
    ensure!(id == ctx.context_id(), "context_id {id}");
    ensure!(
        parent == Some(local.context_id()) && parents == [local.context_id(), 0],
        "{parent:?} {parents:?}"
    );
    Ok(())
}

fn via_refuses_hooks() -> TestResult {
    let router = util::router()?;
    let local = router.local().connect()?;
    let r = router.fork().on_fork(|| {}).via(&local).connect();
    ensure!(
        matches!(r, Err(Error::Stream(_))),
        "on_fork with via: {r:?}"
    );
    let r = router.fork().on_start(|_| {}).via(&local).connect();
    ensure!(
        matches!(r, Err(Error::Stream(_))),
        "on_start with via: {r:?}"
    );
    Ok(())
}

fn many_forks_while_calling() -> TestResult {
    const FORKS: usize = 200;
    let router = util::router()?;
    let busy = router.local().remote_name("busy").connect()?;
    let stop = Arc::new(AtomicBool::new(false));
    let hammer = {
        let stop = stop.clone();
        let busy = busy.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = busy
                    .call_async::<add>((n, 1))
                    .and_then(|p| p.get(Some(WAIT)))
                    .map_err(|e| format!("hammer call {n}: {e}"))?;
                if r != n + 1 {
                    return Err(format!("hammer call {n} returned {r}"));
                }
                n += 1;
            }
            Ok(n)
        })
    };
    let start = Instant::now();
    let mut kept = Vec::new();
    let outcome = (|| -> TestResult {
        for i in 0..FORKS {
            let ctx = router.fork().remote_name(format!("storm-{i}")).connect()?;
            let p = ctx.call_async::<add>((i as u64, 1))?;
            ensure!(
                p.get(Some(WAIT))? == i as u64 + 1,
                "fork {i} answered wrong"
            );
            if i % 2 == 0 {
                ctx.shutdown(true, Some(WAIT))
                    .map_err(|e| format!("shutting fork {i} down: {e}"))?;
            } else {
                let (pid, _) = ctx
                    .call_async::<pids>(())?
                    .get(Some(WAIT))
                    .map_err(|e| format!("fork {i} pid: {e}"))?;
                kept.push(pid);
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let calls = hammer.join().map_err(|_| "the hammer thread panicked")?;
    outcome?;
    let calls = calls?;
    ensure!(calls > 0, "the hammer made no calls");
    ensure!(
        start.elapsed() < Duration::from_secs(100),
        "{FORKS} forks took {:?}",
        start.elapsed()
    );
    // The dropped handles' children are stopped with the router.
    util::bounded("dropping the router", WAIT, move || drop(router))?;
    for pid in kept {
        util::wait_exited(pid, Duration::from_secs(10), false)?;
    }
    Ok(())
}
