//! `#[mitogen::remote(concurrent)]`: such functions run on the child's
//! worker pool, beside the calls that the main thread runs in order.
//!
//! Long calls here wait for a *gate* (a file the test creates) rather than
//! sleep, so every assertion is about order and state: an ordinary call
//! finished while the long one was still waiting. The waits are bounded,
//! so a child that runs everything on its main thread fails the test
//! (a gate that times out, a call that never answers within `WAIT`)
//! instead of hanging it.

use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{CallChain, Error};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "concurrent::long_call_does_not_block_ordinary_calls",
            TEST_LIMIT,
            long_call_does_not_block,
        ),
        trial("concurrent::calls_overlap", TEST_LIMIT, calls_overlap),
        trial(
            "concurrent::ordinary_calls_keep_their_order",
            TEST_LIMIT,
            ordinary_calls_keep_order,
        ),
        trial(
            "concurrent::panic_is_a_call_error",
            TEST_LIMIT,
            panic_is_a_call_error,
        ),
        trial("concurrent::pool_full_refuses", TEST_LIMIT, pool_full),
        trial(
            "concurrent::shutdown_fails_queued_calls",
            TEST_LIMIT,
            shutdown_fails_queued,
        ),
        trial("concurrent::chains", TEST_LIMIT, chains),
    ]
}

/// How long a gate is waited for in the child: longer than `WAIT`, so a
/// call stuck behind it on the main thread is seen as stuck by the test.
const GATE_LIMIT_MS: u64 = 30_000;

/// Waits (at most `limit_ms`) until `path` exists; `true` if it appeared.
#[mitogen::remote(concurrent)]
fn wait_for_gate(path: String, limit_ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(limit_ms);
    while Instant::now() < end {
        if Path::new(&path).exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Marks arrival `i` in `dir`, then waits (at most `limit_ms`) until `n`
/// have arrived: `true` only when `n` calls ran at the same time.
#[mitogen::remote(concurrent)]
fn rendezvous(dir: String, i: u32, n: u32, limit_ms: u64) -> std::io::Result<bool> {
    std::fs::write(Path::new(&dir).join(format!("arrived-{i}")), "")?;
    let end = Instant::now() + Duration::from_millis(limit_ms);
    while Instant::now() < end {
        if std::fs::read_dir(&dir)?.count() >= n as usize {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(false)
}

/// The name of the thread that ran it, concurrently.
#[mitogen::remote(concurrent)]
fn pool_thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

/// The name of the thread that ran it, in order.
#[mitogen::remote]
fn main_thread_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}

#[mitogen::remote(concurrent)]
fn panics() -> u32 {
    panic!(
        "boom on thread {}",
        std::thread::current().name().unwrap_or("?")
    )
}

#[mitogen::remote(concurrent)]
fn fails_concurrently(tag: String) -> Result<u32, std::io::Error> {
    Err(std::io::Error::other(format!("failure {tag}")))
}

#[mitogen::remote]
fn fails(tag: String) -> Result<u32, std::io::Error> {
    Err(std::io::Error::other(format!("failure {tag}")))
}

/// What `record` was given, in the order it ran (one list per child).
static ORDER: Mutex<Vec<u32>> = Mutex::new(Vec::new());

#[mitogen::remote]
fn record(i: u32) {
    ORDER.lock().unwrap_or_else(|e| e.into_inner()).push(i);
}

#[mitogen::remote]
fn recorded() -> Vec<u32> {
    ORDER.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A gate file in `dir` (not created yet) and its path as a string.
fn gate(dir: &TempDir) -> (std::path::PathBuf, String) {
    let p = dir.path().join("gate");
    let s = p.to_string_lossy().into_owned();
    (p, s)
}

fn open(p: &Path) -> TestResult {
    std::fs::write(p, "open").map_err(|e| format!("creating the gate: {e}"))?;
    Ok(())
}

fn call_error(r: mitogen::Result<impl std::fmt::Debug>) -> Result<mitogen::CallError, String> {
    match r {
        Err(Error::Call(e)) => Ok(e),
        other => Err(format!("expected a CallError, got {other:?}")),
    }
}

fn long_call_does_not_block() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("conc-long")?;
    let (gate, gate_s) = gate(&dir);
    let long = ctx.call_async::<wait_for_gate>((gate_s, GATE_LIMIT_MS))?;
    for i in 0..20 {
        let p = ctx.call_async::<util::pid>(())?;
        p.get(Some(WAIT))
            .map_err(|e| format!("ordinary call {i} behind a long concurrent one: {e}"))?;
    }
    ensure!(
        ctx.call_async::<main_thread_name>(())?.get(Some(WAIT))? == "main",
        "ordinary calls left the main thread"
    );
    ensure!(
        !long.ready(),
        "the long call finished before its gate opened"
    );
    open(&gate)?;
    ensure!(long.get(Some(WAIT))?, "the long call never saw its gate");
    Ok(())
}

fn calls_overlap() -> TestResult {
    const N: u32 = 6;
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("conc-overlap")?;
    let d = dir.path().to_string_lossy().into_owned();
    let calls: Vec<_> = (0..N)
        .map(|i| ctx.call_async::<rendezvous>((d.clone(), i, N, 10_000)))
        .collect::<Result<_, _>>()?;
    for (i, c) in calls.iter().enumerate() {
        ensure!(
            c.get(Some(WAIT))?,
            "call {i} waited alone: the {N} calls did not run at the same time"
        );
    }
    Ok(())
}

fn ordinary_calls_keep_order() -> TestResult {
    const N: u32 = 300;
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("conc-order")?;
    let (gate, gate_s) = gate(&dir);
    let blocker = ctx.call_async::<wait_for_gate>((gate_s, GATE_LIMIT_MS))?;
    let mut side = Vec::new();
    for i in 0..N {
        ctx.call_no_reply::<record>((i,))?;
        if i % 10 == 0 {
            side.push(ctx.call_async::<pool_thread_name>(())?);
        }
    }
    let got = ctx.call_async::<recorded>(())?.get(Some(WAIT))?;
    ensure!(
        got == (0..N).collect::<Vec<_>>(),
        "ordinary calls ran out of order: {got:?}"
    );
    for (i, s) in side.iter().enumerate() {
        let name = s.get(Some(WAIT))?;
        ensure!(
            name.starts_with("mitogen-pool"),
            "concurrent call {i} ran on {name:?}"
        );
    }
    ensure!(!blocker.ready(), "the blocker finished before its gate");
    open(&gate)?;
    ensure!(blocker.get(Some(WAIT))?, "the blocker never saw its gate");
    Ok(())
}

fn panic_is_a_call_error() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let e = call_error(ctx.call_async::<panics>(())?.get(Some(WAIT)))?;
    ensure!(e.type_name() == "panic", "type {:?}", e.type_name());
    ensure!(
        e.message().contains("boom on thread mitogen-pool"),
        "not a panic on the pool: {:?}",
        e.message()
    );
    // The context, and its pool, go on serving.
    ensure!(
        ctx.call_async::<util::pid>(())?.get(Some(WAIT)).is_ok(),
        "ordinary call"
    );
    let name = ctx.call_async::<pool_thread_name>(())?.get(Some(WAIT))?;
    ensure!(name.starts_with("mitogen-pool"), "ran on {name:?}");
    let e = call_error(ctx.call_async::<panics>(())?.get(Some(WAIT)))?;
    ensure!(e.type_name() == "panic", "second panic: {e}");
    Ok(())
}

fn pool_full() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().pool_size(1, 1).connect()?;
    let dir = TempDir::new("conc-full")?;
    let (gate, gate_s) = gate(&dir);
    // One running, one queued: the pool is full.
    let running = ctx.call_async::<wait_for_gate>((gate_s.clone(), GATE_LIMIT_MS))?;
    let queued = ctx.call_async::<wait_for_gate>((gate_s.clone(), GATE_LIMIT_MS))?;
    let e = call_error(ctx.call_async::<pool_thread_name>(())?.get(Some(WAIT)))?;
    ensure!(
        e.message().contains("pool") && e.message().contains("full"),
        "refusal does not name the full pool: {e}"
    );
    ensure!(
        !running.ready() && !queued.ready(),
        "a call ended before the gate opened"
    );
    // Ordinary calls are not the pool's business.
    ensure!(
        ctx.call_async::<util::pid>(())?.get(Some(WAIT)).is_ok(),
        "ordinary call"
    );
    open(&gate)?;
    ensure!(running.get(Some(WAIT))?, "running call");
    ensure!(queued.get(Some(WAIT))?, "queued call");
    // Room again.
    let name = ctx.call_async::<pool_thread_name>(())?.get(Some(WAIT))?;
    ensure!(name.starts_with("mitogen-pool"), "ran on {name:?}");
    Ok(())
}

fn shutdown_fails_queued() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().pool_size(1, 4).connect()?;
    let pid = ctx.call::<util::pid>(())?;
    let dir = TempDir::new("conc-stop")?;
    let (_gate, gate_s) = gate(&dir);
    let running = ctx.call_async::<wait_for_gate>((gate_s.clone(), GATE_LIMIT_MS))?;
    let queued = ctx.call_async::<wait_for_gate>((gate_s, GATE_LIMIT_MS))?;
    // The main thread takes calls in order: once this one is answered,
    // both above have reached the pool.
    ctx.call_async::<util::pid>(())?.get(Some(WAIT))?;
    ensure!(!queued.ready(), "the queued call ended early");
    ctx.shutdown(false, None)?;
    let e = call_error(queued.get(Some(WAIT)))?;
    ensure!(
        e.message().contains("pool") && e.message().contains("stop"),
        "the queued call's error does not say the pool stopped: {e}"
    );
    // The running call cannot be interrupted: its caller learns of the
    // disconnect instead.
    ensure!(
        running.get(Some(WAIT)).is_err(),
        "the running call succeeded without its gate"
    );
    util::wait_exited_or_kill(pid, WAIT, false)?;
    Ok(())
}

fn chains() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    // A chain that has failed fails its later concurrent calls too.
    let cc = CallChain::new(&ctx, true);
    cc.call_no_reply::<fails>(("first".into(),))?;
    let e = call_error(cc.call_async::<pool_thread_name>(())?.get(Some(WAIT)))?;
    ensure!(e.message() == "failure first", "reported {e}");
    // A concurrent call's failure fails the chain's later calls.
    let cc = CallChain::new(&ctx, true);
    let e = call_error(
        cc.call_async::<fails_concurrently>(("c".into(),))?
            .get(Some(WAIT)),
    )?;
    ensure!(e.message() == "failure c", "reported {e}");
    let e = call_error(cc.call_async::<main_thread_name>(())?.get(Some(WAIT)))?;
    ensure!(e.message() == "failure c", "later call reported {e}");
    cc.reset()?;
    let name = cc.call_async::<pool_thread_name>(())?.get(Some(WAIT))?;
    ensure!(
        name.starts_with("mitogen-pool"),
        "after reset, ran on {name:?}"
    );
    Ok(())
}
