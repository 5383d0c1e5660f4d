//! Services (`#[mitogen::service]`): state kept across calls, one
//! instance per context made on first use, methods running concurrently
//! on the service pool, the policy of each method, typed errors naming
//! what was unknown or refused, and stopping the pool.
//!
//! Slow methods wait for a gate file (see `concurrent.rs`), so the tests
//! assert order and state, not timings.

use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::service::{BoxError, Caller, Service, Services};
use mitogen::{Context, Error, ExternalContext, Router};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "services::state_across_calls",
            TEST_LIMIT,
            state_across_calls,
        ),
        trial("services::activated_once", TEST_LIMIT, activated_once),
        trial("services::calls_overlap", TEST_LIMIT, calls_overlap),
        trial("services::errors_are_named", TEST_LIMIT, errors_are_named),
        trial("services::policy", TEST_LIMIT, policy),
        trial("services::master_hosts", TEST_LIMIT, master_hosts),
        trial("services::pool_full", TEST_LIMIT, pool_full),
        trial("services::stop_fails_queued", TEST_LIMIT, stop_fails_queued),
    ]
}

/// Activations of `Counter` in this process.
static ACTIVATIONS: AtomicU64 = AtomicU64::new(0);

/// A counter kept across calls.
struct Counter {
    n: AtomicU64,
}

impl Service for Counter {
    const NAME: &'static str = "tests::Counter";
    fn new(_: &ExternalContext) -> Result<Self, BoxError> {
        ACTIVATIONS.fetch_add(1, Ordering::SeqCst);
        // Slow activation: concurrent first calls must still make one.
        std::thread::sleep(Duration::from_millis(50));
        Ok(Counter {
            n: AtomicU64::new(0),
        })
    }
}

#[mitogen::service]
impl Counter {
    /// Parents only.
    #[expose]
    fn add(&self, n: u64) -> u64 {
        self.n.fetch_add(n, Ordering::SeqCst) + n
    }

    /// Anyone.
    #[expose(policy = any)]
    fn total(&self) -> u64 {
        self.n.load(Ordering::SeqCst)
    }

    #[expose]
    fn fail(&self, why: String) -> Result<u64, std::io::Error> {
        Err(std::io::Error::other(why))
    }

    #[expose]
    fn panics(&self) -> u64 {
        panic!("counter panicked")
    }

    /// Who called, as the method sees it: (caller id, auth id, here).
    #[expose(policy = any)]
    fn who(&self, caller: &Caller, ec: &ExternalContext) -> (u32, u32, u32) {
        (caller.context_id(), caller.auth_id(), ec.context_id())
    }

    /// Not exposed: not callable.
    #[allow(dead_code)]
    fn reset(&self) {
        self.n.store(0, Ordering::SeqCst);
    }
}

/// Slow methods.
struct Gate;

impl Service for Gate {
    const NAME: &'static str = "tests::Gate";
    fn new(_: &ExternalContext) -> Result<Self, BoxError> {
        Ok(Gate)
    }
}

#[mitogen::service]
impl Gate {
    /// Marks that it runs (creates `path.started`), then waits (at most
    /// `limit_ms`) until `path` exists; `true` if it did.
    #[expose]
    fn wait(&self, path: String, limit_ms: u64) -> bool {
        let _ = std::fs::write(format!("{path}.started"), "");
        let end = Instant::now() + Duration::from_millis(limit_ms);
        while Instant::now() < end {
            if Path::new(&path).exists() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    /// Marks arrival `i` in `dir`, then waits until `n` have arrived.
    #[expose]
    fn rendezvous(&self, dir: String, i: u32, n: u32, limit_ms: u64) -> std::io::Result<bool> {
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
}

/// A service that cannot start.
struct Broken;

impl Service for Broken {
    const NAME: &'static str = "tests::Broken";
    fn new(_: &ExternalContext) -> Result<Self, BoxError> {
        let cause = std::io::Error::new(std::io::ErrorKind::NotFound, "no config file");
        Err(Box::new(std::io::Error::other(format!("config: {cause}"))))
    }
}

#[mitogen::service]
impl Broken {
    #[expose]
    fn never(&self) -> u64 {
        0
    }
}

#[mitogen::remote]
fn activations() -> u64 {
    ACTIVATIONS.load(Ordering::SeqCst)
}

#[mitogen::remote]
fn configure_pool(router: &Router, threads: u32, queued: u32) -> Result<(), String> {
    Services::of(router)
        .set_pool_size(threads as usize, queued as usize)
        .map_err(|e| e.to_string())
}

#[mitogen::remote]
fn stop_services(router: &Router) {
    Services::of(router).stop();
}

/// `Ok(value)` or `Err("type_name: message")`, to carry a failure's kind
/// back from a child.
fn outcome(r: mitogen::Result<u64>) -> Result<u64, String> {
    r.map_err(|e| match e {
        Error::Call(c) => format!("{}: {}", c.type_name(), c.message()),
        other => format!("not a CallError: {other}"),
    })
}

/// From a child: the master's `Counter`, by the parents-only `add` or the
/// open `total`.
#[mitogen::remote]
fn call_master(ec: &ExternalContext, open: bool) -> Result<u64, String> {
    let master = ec.master();
    outcome(if open {
        master.call_service::<counter::total>(())
    } else {
        master.call_service::<counter::add>((1,))
    })
}

/// From a child: a sibling's `Counter`.
#[mitogen::remote]
fn call_sibling(sibling: Context, open: bool) -> Result<u64, String> {
    outcome(if open {
        sibling.call_service::<counter::total>(())
    } else {
        sibling.call_service::<counter::add>((1,))
    })
}

/// What a child's `outcome` gave: its value, or the failure it named.
fn from_child(r: mitogen::Result<u64>) -> Result<Result<u64, String>, String> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(Error::Call(e)) => Ok(Err(e.message().to_string())),
        Err(other) => Err(format!("the child's call itself failed: {other}")),
    }
}

fn call_error<T: std::fmt::Debug>(r: mitogen::Result<T>) -> Result<mitogen::CallError, String> {
    match r {
        Err(Error::Call(e)) => Ok(e),
        other => Err(format!("expected a CallError, got {other:?}")),
    }
}

fn state_across_calls() -> TestResult {
    let router = util::router()?;
    let a = router.local().connect()?;
    let b = router.local().connect()?;
    for (want, n) in [(2, 2), (5, 3), (15, 10)] {
        let got = a
            .call_service_async::<counter::add>((n,))?
            .get(Some(WAIT))?;
        ensure!(got == want, "a: add({n}) = {got}, expected {want}");
    }
    ensure!(
        a.call_service_async::<counter::total>(())?
            .get(Some(WAIT))?
            == 15,
        "a's total"
    );
    // Another context has its own instance.
    ensure!(
        b.call_service_async::<counter::add>((1,))?
            .get(Some(WAIT))?
            == 1,
        "b shares a's instance"
    );
    // No reply wanted: it still runs.
    a.call_service_no_reply::<counter::add>((100,))?;
    ensure!(
        util::wait_for(WAIT, || a
            .call_service_async::<counter::total>(())
            .and_then(|p| p.get(Some(WAIT)))
            .is_ok_and(|t| t == 115)),
        "the no-reply call did not run"
    );
    Ok(())
}

fn activated_once() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ensure!(
        ctx.call_async::<activations>(())?.get(Some(WAIT))? == 0,
        "activated before any call"
    );
    let calls: Vec<_> = (0..8)
        .map(|_| ctx.call_service_async::<counter::add>((1,)))
        .collect::<Result<_, _>>()?;
    let mut results = Vec::new();
    for c in &calls {
        results.push(c.get(Some(WAIT))?);
    }
    results.sort_unstable();
    ensure!(
        results == (1..=8).collect::<Vec<_>>(),
        "eight concurrent first calls saw {results:?}: more than one instance"
    );
    let n = ctx.call_async::<activations>(())?.get(Some(WAIT))?;
    ensure!(n == 1, "activated {n} times");
    Ok(())
}

fn calls_overlap() -> TestResult {
    const N: u32 = 5;
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("svc-overlap")?;
    let gate_dir = TempDir::new("svc-gate")?;
    let gate = gate_dir.path().join("gate");
    let gate_s = gate.to_string_lossy().into_owned();
    let blocked = ctx.call_service_async::<gate::wait>((gate_s, 30_000))?;
    let d = dir.path().to_string_lossy().into_owned();
    let calls: Vec<_> = (0..N)
        .map(|i| ctx.call_service_async::<gate::rendezvous>((d.clone(), i, N, 10_000)))
        .collect::<Result<_, _>>()?;
    for (i, c) in calls.iter().enumerate() {
        ensure!(
            c.get(Some(WAIT))?,
            "service call {i} waited alone: the {N} calls did not overlap"
        );
    }
    // The main thread is free while a service call waits.
    ctx.call_async::<util::pid>(())?.get(Some(WAIT))?;
    ensure!(!blocked.ready(), "the gated call returned before its gate");
    std::fs::write(&gate, "open").map_err(|e| format!("gate: {e}"))?;
    ensure!(
        blocked.get(Some(WAIT))?,
        "the gated call never saw its gate"
    );
    Ok(())
}

fn errors_are_named() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let e = call_error(ctx.call_service_by_name::<u64>("no::Such", "add", &(1u64,)))?;
    ensure!(
        e.type_name() == "mitogen::UnknownService" && e.message().contains("no::Such"),
        "{e:?}"
    );
    let e = call_error(ctx.call_service_by_name::<u64>("tests::Counter", "reset", &()))?;
    ensure!(
        e.type_name() == "mitogen::UnknownMethod" && e.message().contains("reset"),
        "an unexposed method: {e:?}"
    );
    let e = call_error(ctx.call_service_async::<broken::never>(())?.get(Some(WAIT)))?;
    ensure!(
        e.type_name() == "mitogen::ActivationFailed"
            && e.message().contains("tests::Broken")
            && e.chain().iter().any(|c| c.contains("no config file")),
        "activation failure without its cause: {e:?}"
    );
    let e = call_error(
        ctx.call_service_async::<counter::fail>(("disk on fire".into(),))?
            .get(Some(WAIT)),
    )?;
    ensure!(
        e.type_name() == "std::io::error::Error" && e.message() == "disk on fire",
        "{e:?}"
    );
    let e = call_error(
        ctx.call_service_async::<counter::panics>(())?
            .get(Some(WAIT)),
    )?;
    ensure!(
        e.type_name() == "panic" && e.message().contains("counter panicked"),
        "{e:?}"
    );
    // Wrong arguments: a decode error in the context, named.
    let e = call_error(ctx.call_service_by_name::<u64>("tests::Counter", "add", &("x",)))?;
    ensure!(e.type_name() == "mitogen::DecodeError", "{e:?}");
    // The service still works after all that.
    ensure!(
        ctx.call_service_async::<counter::add>((4,))?
            .get(Some(WAIT))?
            == 4,
        "the counter after errors"
    );
    Ok(())
}

fn policy() -> TestResult {
    let router = util::router()?;
    let a = router.local().connect()?;
    let b = router.local().connect()?;
    // A child calling its parent (the master): `any` yes, parents-only no.
    let open = from_child(a.call_async::<call_master>((true,))?.get(Some(WAIT)))?;
    ensure!(open == Ok(0), "child → master, open method: {open:?}");
    let shut = from_child(a.call_async::<call_master>((false,))?.get(Some(WAIT)))?;
    ensure!(
        shut.as_ref()
            .is_err_and(|e| e.starts_with("mitogen::Refused") && e.contains("parents only")),
        "child → master, parents-only method: {shut:?}"
    );
    // A sibling: the same.
    b.call_service_async::<counter::add>((7,))?
        .get(Some(WAIT))?;
    let open = from_child(
        a.call_async::<call_sibling>((b.clone(), true))?
            .get(Some(WAIT)),
    )?;
    ensure!(open == Ok(7), "sibling, open method: {open:?}");
    let shut = from_child(
        a.call_async::<call_sibling>((b.clone(), false))?
            .get(Some(WAIT)),
    )?;
    ensure!(
        shut.as_ref()
            .is_err_and(|e| e.starts_with("mitogen::Refused")),
        "sibling, parents-only method: {shut:?}"
    );
    ensure!(
        b.call_service_async::<counter::total>(())?
            .get(Some(WAIT))?
            == 7,
        "a refused call changed the state"
    );
    // What the method sees of its caller.
    let (caller, auth, here) = b.call_service_async::<counter::who>(())?.get(Some(WAIT))?;
    ensure!(
        (caller, auth, here) == (0, 0, b.context_id()),
        "who: {caller} {auth} {here}"
    );
    Ok(())
}

fn master_hosts() -> TestResult {
    let router = util::router()?;
    let services = Services::of(&router);
    ensure!(!services.is_active::<Counter>(), "active before use");
    let counter = services.get::<Counter>()?;
    counter.add(41);
    ensure!(services.is_active::<Counter>(), "get did not activate");
    // The master may call its own parents-only methods.
    let me = router.myself();
    ensure!(
        me.call_service_async::<counter::add>((1,))?
            .get(Some(WAIT))?
            == 42,
        "the master's instance is not the one `get` gave"
    );
    let child = router.local().connect()?;
    let seen = from_child(child.call_async::<call_master>((true,))?.get(Some(WAIT)))?;
    ensure!(seen == Ok(42), "the child saw {seen:?}");
    Ok(())
}

fn pool_full() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ctx.call_async::<configure_pool>((1, 1))?.get(Some(WAIT))?;
    let gate_dir = TempDir::new("svc-full")?;
    let gate = gate_dir.path().join("gate");
    let gate_s = gate.to_string_lossy().into_owned();
    let running = ctx.call_service_async::<gate::wait>((gate_s.clone(), 30_000))?;
    // One runs, one waits (the queue holds 1): the next is refused at
    // once. (Calls are taken in arrival order on the link, so whether the
    // first has reached its thread yet does not matter.)
    let queued = ctx.call_service_async::<gate::wait>((gate_s.clone(), 30_000))?;
    let e = call_error(
        ctx.call_service_async::<gate::wait>((gate_s, 30_000))?
            .get(Some(WAIT)),
    )?;
    ensure!(e.type_name() == "mitogen::PoolFull", "{e:?}");
    std::fs::write(&gate, "open").map_err(|e| format!("gate: {e}"))?;
    ensure!(running.get(Some(WAIT))?, "running call");
    ensure!(queued.get(Some(WAIT))?, "queued call");
    let resized = call_error(ctx.call_async::<configure_pool>((4, 4))?.get(Some(WAIT)))?;
    ensure!(
        resized.message().contains("already running"),
        "resizing a running pool: {resized:?}"
    );
    Ok(())
}

fn stop_fails_queued() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ctx.call_async::<configure_pool>((1, 8))?.get(Some(WAIT))?;
    let gate_dir = TempDir::new("svc-stop")?;
    let gate = gate_dir.path().join("gate");
    let gate_s = gate.to_string_lossy().into_owned();
    let running = ctx.call_service_async::<gate::wait>((gate_s.clone(), 30_000))?;
    let pid = ctx.call_async::<util::pid>(())?.get(Some(WAIT))?;
    let started = gate_dir.path().join("gate.started");
    ensure!(
        util::wait_for(WAIT, || started.exists()),
        "the first call never started"
    );
    let queued: Vec<_> = (0..3)
        .map(|_| ctx.call_service_async::<gate::wait>((gate_s.clone(), 30_000)))
        .collect::<Result<_, _>>()?;
    ensure!(
        pool_threads(pid) == Some(1),
        "service pool threads before stop: {:?}",
        pool_threads(pid)
    );
    ctx.call_async::<stop_services>(())?.get(Some(WAIT))?;
    for (i, q) in queued.iter().enumerate() {
        let e = call_error(q.get(Some(WAIT)))?;
        ensure!(e.type_name() == "mitogen::PoolStopped", "queued {i}: {e:?}");
    }
    let e = call_error(
        ctx.call_service_async::<counter::total>(())?
            .get(Some(WAIT)),
    )?;
    ensure!(e.type_name() == "mitogen::PoolStopped", "after stop: {e:?}");
    ensure!(!running.ready(), "the running call ended before its gate");
    std::fs::write(&gate, "open").map_err(|e| format!("gate: {e}"))?;
    ensure!(running.get(Some(WAIT))?, "the running call was cut short");
    // Remote functions are unaffected; the pool's threads are gone.
    ctx.call_async::<util::pid>(())?.get(Some(WAIT))?;
    ensure!(
        util::wait_for(WAIT, || pool_threads(pid) == Some(0)),
        "pool threads left after stop: {:?}",
        pool_threads(pid)
    );
    Ok(())
}

/// Threads of `pid` named like pool threads (`None`: unreadable).
fn pool_threads(pid: u32) -> Option<usize> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(
        tasks
            .filter_map(Result::ok)
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .filter(|comm| comm.starts_with("mitogen-pool"))
            .count(),
    )
}
