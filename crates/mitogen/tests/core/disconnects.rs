//! Lifetimes a program decides: `Router::disconnect` (a child or a
//! context further down), `Router::disconnect_all`, and
//! `ExternalContext::detach` (a context that outlives its parent).

use crate::util::{self, pid, sleep_ms, trial, TestResult, TEST_LIMIT, WAIT};
use mitogen::{Error, ExternalContext};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn tests() -> Vec<libtest_mimic::Trial> {
    vec![
        trial("disconnects::a_child", TEST_LIMIT, disconnect_a_child),
        trial(
            "disconnects::a_grandchild",
            TEST_LIMIT,
            disconnect_a_grandchild,
        ),
        trial("disconnects::all", TEST_LIMIT, disconnect_all),
        trial(
            "disconnects::not_itself_nor_its_parent",
            TEST_LIMIT,
            not_itself_nor_its_parent,
        ),
        trial(
            "disconnects::a_detached_context_outlives_its_parent",
            TEST_LIMIT,
            a_detached_context_outlives_its_parent,
        ),
    ]
}

fn disconnect_a_child() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("cut-child").connect()?;
    let child_pid = ctx.call::<pid>(())?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let _sub = ctx.on_disconnect(move |d| {
        s.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(d.reason.clone())
    });
    let pending = ctx.call_async::<sleep_ms>((30_000,))?;
    router.disconnect(&ctx)?;
    ensure!(!ctx.is_connected(), "still connected after disconnect");
    // The pending call fails at once, saying why.
    let r = pending.get(Some(Duration::from_secs(5)));
    ensure!(
        matches!(&r, Err(Error::Channel(e)) if e.reason().contains("disconnected by its parent's router")),
        "the pending call: {r:?}"
    );
    ensure!(
        util::wait_for(WAIT, || !seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()),
        "no disconnect event"
    );
    util::wait_exited(child_pid, WAIT, true)?;
    // Disconnecting it again does nothing.
    router.disconnect(&ctx)?;
    Ok(())
}

fn disconnect_a_grandchild() -> TestResult {
    let router = util::router()?;
    let mid = router.local().remote_name("cut-mid").connect()?;
    let leaf = router.local().remote_name("cut-leaf").via(&mid).connect()?;
    let leaf_pid = leaf.call::<pid>(())?;
    let pending = leaf.call_async::<sleep_ms>((30_000,))?;
    router.disconnect(&leaf)?;
    ensure!(!leaf.is_connected(), "the leaf is still routed");
    ensure!(
        matches!(
            pending.get(Some(Duration::from_secs(5))),
            Err(Error::Channel(_))
        ),
        "the leaf's pending call did not fail"
    );
    util::wait_exited(leaf_pid, WAIT, true)?;
    ensure!(
        mid.call::<pid>(()).is_ok(),
        "the intermediate stopped serving"
    );
    Ok(())
}

fn disconnect_all() -> TestResult {
    let router = util::router()?;
    let a = router.local().connect()?;
    let b = router.local().connect()?;
    let pids = [a.call::<pid>(())?, b.call::<pid>(())?];
    let pa = a.call_async::<sleep_ms>((30_000,))?;
    let pb = b.call_async::<sleep_ms>((30_000,))?;
    router.disconnect_all()?;
    for (name, p) in [("a", pa), ("b", pb)] {
        let r = p.get(Some(Duration::from_secs(5)));
        ensure!(matches!(r, Err(Error::Channel(_))), "{name}'s call: {r:?}");
    }
    for p in pids {
        util::wait_exited(p, WAIT, true)?;
    }
    // The router itself goes on.
    let c = router.local().connect()?;
    ensure!(c.call::<pid>(())? != pids[0], "a new child");
    Ok(())
}

/// From inside a child: disconnecting itself or its parent is refused.
#[mitogen::remote]
fn cut_self_and_parent(econtext: &ExternalContext) -> (String, String) {
    let r = econtext.router();
    let me = r.myself();
    let show = |res: mitogen::Result<()>| match res {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    (
        show(r.disconnect(&me)),
        show(r.disconnect(econtext.parent())),
    )
}

fn not_itself_nor_its_parent() -> TestResult {
    let router = util::router()?;
    ensure!(
        router.disconnect(&router.myself()).is_err(),
        "the master cut itself"
    );
    let ctx = router.local().connect()?;
    let (me, parent) = ctx.call::<cut_self_and_parent>(())?;
    ensure!(me.contains("cannot disconnect"), "itself: {me}");
    ensure!(parent.contains("cannot disconnect"), "its parent: {parent}");
    ensure!(ctx.is_connected(), "the child lost its link");
    Ok(())
}

/// Detaches (or not), then works for `ms` and leaves a mark in `path`.
#[mitogen::remote]
fn work_then_mark(
    econtext: &ExternalContext,
    detach: bool,
    ms: u64,
    path: String,
) -> mitogen::Result<()> {
    if detach {
        econtext.detach()?;
    }
    std::thread::sleep(Duration::from_millis(ms));
    std::fs::write(&path, "done").map_err(|e| mitogen::StreamError::new(e.to_string()))?;
    Ok(())
}

/// The leaf's parent shuts down while the leaf works: a detached leaf is
/// not signalled and finishes; an attached one is ended with its parent.
fn a_detached_context_outlives_its_parent() -> TestResult {
    let router = util::router()?;
    let dir = util::TempDir::new("detach")?;
    for detach in [true, false] {
        let mid = router.local().remote_name("detach-mid").connect()?;
        let leaf = router
            .local()
            .remote_name("detach-leaf")
            .via(&mid)
            .connect()?;
        let leaf_pid = leaf.call::<pid>(())?;
        let mark = dir.path().join(format!("mark-{detach}"));
        let path = mark.to_string_lossy().into_owned();
        // Longer than the parent's SIGTERM and SIGKILL graces (1 s, 2 s).
        let _pending = leaf.call_async::<work_then_mark>((detach, 3500, path))?;
        std::thread::sleep(Duration::from_millis(500));
        mid.shutdown(true, Some(WAIT))?;
        if detach {
            util::wait_exited(leaf_pid, WAIT, true)?;
            ensure!(mark.exists(), "the detached leaf did not finish its work");
        } else {
            util::wait_exited(leaf_pid, WAIT, true)?;
            ensure!(!mark.exists(), "an attached leaf outlived its parent");
        }
    }
    Ok(())
}
