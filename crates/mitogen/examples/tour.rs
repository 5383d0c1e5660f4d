//! A tour of mitogen on this machine: local and fork contexts, a chain of
//! contexts started via each other, type-checked calls, errors, fan-in
//! with a select, a stream through a sender, timings.
//!
//! Run with `cargo run --release -p mitogen --example tour`.

use mitogen::{CallChain, Receiver, Router, Select, Sender};
use std::time::{Duration, Instant};

/// Describes the process it runs in.
#[mitogen::remote]
fn whoami() -> (u32, Option<u32>, u32, String) {
    let title = std::fs::read_to_string("/proc/self/cmdline").unwrap_or_default();
    let title = title.split('\0').next().unwrap_or_default().to_string();
    (
        mitogen::context_id(),
        mitogen::parent_id(),
        std::process::id(),
        title,
    )
}

/// Adds two numbers.
#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Does nothing: for timing.
#[mitogen::remote]
fn noop() {}

/// Reads a file: errors travel back with their type and message.
#[mitogen::remote]
fn read_file(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Prints: the output must not corrupt the link.
#[mitogen::remote]
fn chatty() -> u32 {
    println!("hello from a child's stdout");
    7
}

/// Sleeps, then says who it is: for fan-in in arrival order.
#[mitogen::remote]
fn nap(ms: u64) -> (u32, u64) {
    std::thread::sleep(Duration::from_millis(ms));
    (mitogen::context_id(), ms)
}

/// Streams `n` squares back through a sender, then closes it.
#[mitogen::remote]
fn squares(n: u64, out: Sender) -> mitogen::Result<()> {
    for i in 0..n {
        out.send(&(i * i))?;
    }
    out.close()
}

/// Starts a grandchild from inside a child, with the child's router.
#[mitogen::remote]
fn spawn_and_ask(router: &Router) -> mitogen::Result<u32> {
    let grandchild = router.local().remote_name("grandchild").connect()?;
    let (id, ..) = grandchild.call::<whoami>(())?;
    Ok(id)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_target(false)
        .init();
    println!(
        "mitogen {} — master pid {}",
        mitogen::VERSION,
        std::process::id()
    );

    let t = Instant::now();
    let local = router.local().remote_name("tour-local").connect()?;
    let who = local.call::<whoami>(())?;
    println!(
        "local  start → first call {:>10}  {:?}",
        ms(t.elapsed()),
        who
    );

    let t = Instant::now();
    let again = router.local().connect()?;
    again.call::<noop>(())?;
    println!(
        "local  (agent cached)     {:>10}  {}",
        ms(t.elapsed()),
        again.name()
    );

    let t = Instant::now();
    let forked = router
        .fork()
        .on_start(|ec| tracing::info!("fork child {} starting", ec.context_id()))
        .connect()?;
    let who = forked.call::<whoami>(())?;
    println!(
        "fork   start → first call {:>10}  {:?}",
        ms(t.elapsed()),
        who
    );

    let t = Instant::now();
    let mut chain = vec![router.local().remote_name("hop1").connect()?];
    for i in 2..=3 {
        let next = router
            .local()
            .remote_name(format!("hop{i}"))
            .via(&chain[chain.len() - 1])
            .connect()?;
        chain.push(next);
    }
    for c in &chain {
        let (id, parent, pid, _) = c.call::<whoami>(())?;
        println!(
            "chain  {:<20} id={id} parent={parent:?} pid={pid}",
            c.name()
        );
    }
    println!("chain of 3 built in       {:>10}", ms(t.elapsed()));

    println!("add(40, 2) = {}", mitogen::call!(local, add(40, 2))?);
    println!(
        "chatty() = {} (its stdout line arrives as a log record)",
        local.call::<chatty>(())?
    );
    match local.call::<read_file>(("/nonexistent".into(),)) {
        Err(e) => println!("remote error, as expected: {e}"),
        Ok(_) => println!("unexpected success"),
    }
    println!(
        "grandchild started by a child has id {}",
        local.call::<spawn_and_ask>(())?
    );

    let n = 2000;
    let t = Instant::now();
    for _ in 0..n {
        local.call::<noop>(())?;
    }
    println!(
        "no-op round trip          {:>10}",
        format!("{:.1} µs", t.elapsed().as_secs_f64() * 1e6 / n as f64)
    );

    let n = 10_000;
    let t = Instant::now();
    let pending: Vec<_> = (0..n)
        .map(|i| local.call_async::<add>((i, 1)))
        .collect::<Result<_, _>>()?;
    for p in pending {
        p.get(Some(Duration::from_secs(30)))?;
    }
    println!(
        "pipelined calls           {:>10}",
        format!("{:.0}/s", n as f64 / t.elapsed().as_secs_f64())
    );

    // Fan-in: one call on each hop of the chain; answers in arrival order.
    let calls = chain
        .iter()
        .enumerate()
        .map(|(i, c)| c.call_async::<nap>((30 * (3 - i as u64),)))
        .collect::<mitogen::Result<Vec<_>>>()?;
    let select = Select::with(&calls, true)?;
    let order: Vec<(u32, u64)> = select.all(Some(Duration::from_secs(30)))?;
    println!("select: answers in arrival order (id, ms) {order:?}");

    // A stream: the child sends through a Sender it was given.
    let rx = Receiver::open(&router);
    let t = Instant::now();
    local.call_no_reply::<squares>((100_000, rx.to_sender()))?;
    let (mut n, mut last) = (0u64, 0u64);
    for m in &rx {
        last = m.decode()?;
        n += 1;
    }
    println!(
        "stream: {n} values (last {last}) at {:.0}/s",
        n as f64 / t.elapsed().as_secs_f64()
    );

    let cc = CallChain::new(&local, true);
    cc.call_no_reply::<read_file>(("/nonexistent".into(),))?;
    cc.call_no_reply::<noop>(())?;
    match cc.call::<add>((1, 1)) {
        Err(e) => println!("call chain reports the first failure: {e}"),
        Ok(v) => println!("unexpected: {v}"),
    }
    cc.reset()?;
    println!("after reset: {}", cc.call::<add>((1, 1))?);

    local.shutdown(true, None)?;
    println!("tour-local shut down; connected = {}", local.is_connected());
    Ok(())
}
