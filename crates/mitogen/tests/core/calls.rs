//! Calls: typed arguments and results, the three ways to call, injected
//! parameters, a chatty function, concurrent callers.

use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{ByteBuf, ExternalContext, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("calls::typed_arguments", TEST_LIMIT, typed_arguments),
        trial("calls::call_macro", TEST_LIMIT, call_macro),
        trial("calls::call_async_get", TEST_LIMIT, call_async_get),
        trial("calls::call_async_future", TEST_LIMIT, call_async_future),
        trial(
            "calls::call_no_reply_side_effect",
            TEST_LIMIT,
            call_no_reply_side_effect,
        ),
        trial(
            "calls::injected_parameters",
            TEST_LIMIT,
            injected_parameters,
        ),
        trial("calls::chatty_function", TEST_LIMIT, chatty_function),
        trial("calls::concurrent_callers", TEST_LIMIT, concurrent_callers),
        trial("calls::large_payload", TEST_LIMIT, large_payload),
        trial(
            "calls::concurrent_connects",
            TEST_LIMIT,
            concurrent_connects,
        ),
        trial(
            "calls::round_trips_leave_both_brokers_asleep",
            TEST_LIMIT,
            round_trips_leave_both_brokers_asleep,
        ),
    ]
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Shape {
    Point,
    Circle(f64),
    Rect { w: u32, h: u32 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub items: Vec<String>,
    pub note: Option<String>,
    pub shape: Shape,
    pub tags: BTreeMap<String, i32>,
}

/// Transforms each argument so that a result equal to the input would be
/// detected: proves the values really made the trip both ways.
#[mitogen::remote]
fn transform(
    name: String,
    nums: Vec<i64>,
    order: Order,
    maybe: Option<u32>,
    pair: (bool, char, u8),
) -> (String, i64, Order, Option<u32>, (bool, char, u8)) {
    let mut o = order;
    o.id += 1;
    o.items.reverse();
    o.note = o.note.map(|n| format!("{n}!"));
    o.shape = match o.shape {
        Shape::Point => Shape::Circle(0.5),
        Shape::Circle(r) => Shape::Rect {
            w: r as u32,
            h: r as u32,
        },
        Shape::Rect { w, h } => Shape::Rect { w: h, h: w },
    };
    o.tags.insert("seen".into(), -1);
    (
        name.to_uppercase(),
        nums.iter().sum(),
        o,
        maybe.map(|m| m * 2),
        (!pair.0, pair.1, pair.2.wrapping_add(1)),
    )
}

/// Returns its arguments unchanged: extremes of each type.
#[mitogen::remote]
fn echo_extremes(
    a: u64,
    b: i64,
    c: f64,
    d: String,
    e: Vec<Option<i8>>,
) -> (u64, i64, f64, String, Vec<Option<i8>>) {
    (a, b, c, d, e)
}

#[mitogen::remote]
fn no_args() -> String {
    "nothing in".to_string()
}

#[mitogen::remote]
fn unit_result(_x: u8) {}

#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[mitogen::remote]
fn sleep_then(ms: u64, v: u32) -> u32 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    v
}

#[mitogen::remote]
fn write_file(path: String, contents: String) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[mitogen::remote]
fn read_file(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Both injected kinds, placed around a sent parameter.
#[mitogen::remote]
fn injected(econtext: &ExternalContext, x: u32, router: &Router) -> (u32, u32, u32, u32, u32) {
    (
        econtext.context_id(),
        router.context_id(),
        econtext.parent().context_id(),
        econtext.master().context_id(),
        x * 3,
    )
}

/// Writes a lot to stdout and stderr, including bytes that look like a
/// frame header and a long line without a newline.
#[mitogen::remote]
fn chatty(lines: u32) -> u32 {
    for i in 0..lines {
        println!("stdout line {i} of a chatty remote function");
        eprintln!("stderr line {i} of a chatty remote function");
    }
    let mut out = std::io::stdout();
    let _ = out.write_all(&mitogen::testing::wire::MAGIC);
    let _ = out.write_all(&[0, 1, 2, 0xff, 0xfe, b'\n']);
    let _ = out.write_all(&vec![b'x'; 200_000]);
    let _ = out.flush();
    let _ = std::io::stderr().write_all(&[0xc3, 0x28, b'\n']);
    lines
}

#[mitogen::remote]
fn reverse_bytes(data: ByteBuf) -> ByteBuf {
    let mut v = data.into_vec();
    v.reverse();
    ByteBuf::from(v)
}

fn sample_order() -> Order {
    Order {
        id: 41,
        items: vec!["apple".into(), "pear".into(), "ünïcödé ✓".into()],
        note: Some("fragile".into()),
        shape: Shape::Rect { w: 3, h: 7 },
        tags: [("a".to_string(), 1), ("b".to_string(), 2)].into(),
    }
}

fn typed_arguments() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("calls-typed").connect()?;

    let order = sample_order();
    let (name, sum, o, maybe, pair) = ctx.call::<transform>((
        "mixed Case".into(),
        vec![1, -2, 30, i64::from(i32::MAX)],
        order.clone(),
        Some(21),
        (true, 'λ', 255),
    ))?;
    ensure!(name == "MIXED CASE", "name {name:?}");
    ensure!(sum == 29 + i64::from(i32::MAX), "sum {sum}");
    let mut want = order.clone();
    want.id = 42;
    want.items.reverse();
    want.note = Some("fragile!".into());
    want.shape = Shape::Rect { w: 7, h: 3 };
    want.tags.insert("seen".into(), -1);
    ensure!(o == want, "order came back as {o:?}, expected {want:?}");
    ensure!(maybe == Some(42), "maybe {maybe:?}");
    ensure!(pair == (false, 'λ', 0), "pair {pair:?}");

    // None, empty vectors, other enum variants.
    let mut bare = order;
    bare.items.clear();
    bare.note = None;
    bare.shape = Shape::Point;
    let (name, sum, o, maybe, _) =
        ctx.call::<transform>((String::new(), Vec::new(), bare, None, (false, 'a', 0)))?;
    ensure!(name.is_empty() && sum == 0, "{name:?} {sum}");
    ensure!(o.items.is_empty() && o.note.is_none(), "{o:?}");
    ensure!(o.shape == Shape::Circle(0.5), "{:?}", o.shape);
    ensure!(maybe.is_none(), "{maybe:?}");

    let ext = (
        u64::MAX,
        i64::MIN,
        -0.1f64,
        "\0nul, tab\t, quote' \"".to_string(),
        vec![None, Some(i8::MIN), Some(i8::MAX)],
    );
    let got = ctx.call::<echo_extremes>(ext.clone())?;
    ensure!(got == ext, "extremes came back as {got:?}");

    ensure!(ctx.call::<no_args>(())? == "nothing in", "no_args");
    ctx.call::<unit_result>((9,))?;
    Ok(())
}

fn call_macro() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ensure!(mitogen::call!(ctx, add(40, 2))? == 42, "add");
    // A path, a trailing comma, expressions as arguments.
    let x = 5u64;
    let r = mitogen::call!(ctx, crate::calls::add(x * 2, u64::from(3u8),))?;
    ensure!(r == 13, "path form gave {r}");
    ensure!(
        mitogen::call!(ctx, no_args())? == "nothing in",
        "no args form"
    );
    // Same thing through a reference to the context.
    let by_ref = &ctx;
    ensure!(
        mitogen::call!(by_ref, add(1, 1))? == 2,
        "through a reference"
    );
    Ok(())
}

fn call_async_get() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let slow = ctx.call_async::<sleep_then>((300, 7))?;
    let fast = ctx.call_async::<add>((2, 3))?;
    // Calls run in order in the context: the fast one waits for the slow.
    ensure!(slow.get(Some(WAIT))? == 7, "slow");
    ensure!(fast.get(Some(WAIT))? == 5, "fast");

    // Many in flight at once, collected in reverse order.
    let pending: Vec<_> = (0..500u64)
        .map(|i| ctx.call_async::<add>((i, 1000)))
        .collect::<Result<_, _>>()?;
    for (i, p) in pending.iter().enumerate().rev() {
        let v = p.get(Some(WAIT))?;
        ensure!(v == i as u64 + 1000, "call {i} returned {v}");
    }

    // ready() turns true once the answer is in.
    let p = ctx.call_async::<add>((1, 1))?;
    ensure!(
        util::wait_for(WAIT, || p.ready()),
        "ready() never became true"
    );
    ensure!(p.get(Some(WAIT))? == 2, "after ready");
    Ok(())
}

fn call_async_future() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let fut = ctx.call_async::<sleep_then>((100, 11))?;
    let v = futures::executor::block_on(fut)?;
    ensure!(v == 11, "future resolved to {v}");

    let futs: Vec<_> = (0..50u64)
        .map(|i| ctx.call_async::<add>((i, i)))
        .collect::<Result<_, _>>()?;
    let all = futures::executor::block_on(futures::future::join_all(futs));
    for (i, r) in all.into_iter().enumerate() {
        let v = r?;
        ensure!(v == 2 * i as u64, "future {i} resolved to {v}");
    }

    // A failing call resolves to its error through the future too.
    let fut = ctx.call_async::<read_file>(("/nonexistent/mitogen-test".into(),))?;
    match futures::executor::block_on(fut) {
        Err(mitogen::Error::Call(e)) => {
            ensure!(e.message().contains("No such file"), "message {e}")
        }
        other => return Err(format!("expected a CallError, got {other:?}").into()),
    }
    Ok(())
}

fn call_no_reply_side_effect() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("noreply")?;
    let path = dir.path().join("written-by-child");
    let p = path.to_string_lossy().into_owned();
    ctx.call_no_reply::<write_file>((p.clone(), "from the child".into()))?;
    // Calls run in arrival order: this one sees the file.
    let got = ctx.call::<read_file>((p.clone(),))?;
    ensure!(got == "from the child", "read back {got:?}");
    ensure!(
        std::fs::read_to_string(&path).ok().as_deref() == Some("from the child"),
        "file not visible to the parent"
    );
    // A failing call_no_reply is not reported anywhere, and does not stop
    // the next calls.
    ctx.call_no_reply::<write_file>(("/nonexistent/dir/f".into(), "x".into()))?;
    ensure!(
        ctx.call::<add>((1, 2))? == 3,
        "call after a failed no-reply"
    );
    Ok(())
}

fn injected_parameters() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let (ec_id, router_id, parent, master, x) = ctx.call::<injected>((14,))?;
    ensure!(
        ec_id == ctx.context_id(),
        "econtext.context_id() {ec_id} != {}",
        ctx.context_id()
    );
    ensure!(
        router_id == ctx.context_id(),
        "router.context_id() {router_id}"
    );
    ensure!(parent == 0, "econtext.parent() is {parent}");
    ensure!(master == 0, "econtext.master() is {master}");
    ensure!(x == 42, "sent argument {x}");
    // Called locally, it is an ordinary function (the injected values are
    // ours).
    ensure!(
        <injected as mitogen::RemoteFn>::NAME.ends_with("calls::injected"),
        "NAME {}",
        <injected as mitogen::RemoteFn>::NAME
    );
    Ok(())
}

fn chatty_function() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("chatty").connect()?;
    let n = ctx.call::<chatty>((5000,))?;
    ensure!(n == 5000, "chatty returned {n}");
    for i in 0..20u64 {
        ensure!(ctx.call::<add>((i, i))? == 2 * i, "call {i} after output");
    }
    ensure!(ctx.call::<chatty>((10,))? == 10, "second chatty");
    ensure!(ctx.is_connected(), "link lost");
    Ok(())
}

fn concurrent_callers() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("concurrent").connect()?;
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let ctx = ctx.clone();
            std::thread::spawn(move || -> Result<u64, String> {
                let mut done = 0;
                for i in 0..200u64 {
                    let a = t * 1_000_000 + i;
                    let r = if i % 2 == 0 {
                        ctx.call::<add>((a, t))
                    } else {
                        ctx.call_async::<add>((a, t))
                            .and_then(|p| p.get(Some(WAIT)))
                    }
                    .map_err(|e| format!("thread {t} call {i}: {e}"))?;
                    if r != a + t {
                        return Err(format!("thread {t} call {i}: got {r}, want {}", a + t));
                    }
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| "a caller thread panicked")??;
    }
    ensure!(total == 1600, "{total} calls done");
    Ok(())
}

fn large_payload() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let data: Vec<u8> = (0..(8 << 20) as u32).map(|i| (i % 251) as u8).collect();
    let back = ctx.call::<reverse_bytes>((ByteBuf::from(data.clone()),))?;
    let mut want = data;
    want.reverse();
    ensure!(back.len() == want.len(), "length {}", back.len());
    ensure!(back.into_vec() == want, "contents differ");
    ensure!(ctx.call::<add>((1, 1))? == 2, "call after a large payload");
    Ok(())
}

#[mitogen::remote]
fn my_id() -> (u32, u32) {
    (mitogen::context_id(), std::process::id())
}

fn concurrent_connects() -> TestResult {
    let router = util::router()?;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let router = router.clone();
            std::thread::spawn(move || -> Result<Vec<(u32, u32)>, String> {
                let mut seen = Vec::new();
                for i in 0..4 {
                    let ctx = if i % 2 == 0 {
                        router.local().remote_name(format!("cc-{t}-{i}")).connect()
                    } else {
                        router.fork().remote_name(format!("cc-{t}-{i}")).connect()
                    }
                    .map_err(|e| format!("thread {t} connect {i}: {e}"))?;
                    let (id, pid) = ctx
                        .call::<my_id>(())
                        .map_err(|e| format!("thread {t} call {i}: {e}"))?;
                    if id != ctx.context_id() {
                        return Err(format!("{} reports id {id}", ctx.context_id()));
                    }
                    seen.push((id, pid));
                }
                Ok(seen)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        all.extend(t.join().map_err(|_| "a connecting thread panicked")??);
    }
    let mut ids: Vec<u32> = all.iter().map(|a| a.0).collect();
    let mut pids: Vec<u32> = all.iter().map(|a| a.1).collect();
    ids.sort_unstable();
    ids.dedup();
    pids.sort_unstable();
    pids.dedup();
    ensure!(ids.len() == 16 && pids.len() == 16, "{all:?}");
    Ok(())
}

/// How many times `broker`'s thread has gone to sleep so far.
fn broker_sleeps_of(broker: &mitogen::Broker) -> Result<u64, String> {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = broker
        .defer_sync(|| unsafe { libc::gettid() })
        .map_err(|e| e.to_string())?;
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .map_err(|e| format!("the broker thread's status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| "no voluntary_ctxt_switches".to_string())
}

#[mitogen::remote]
fn broker_sleeps(router: &Router) -> Result<u64, mitogen::CallError> {
    broker_sleeps_of(router.broker()).map_err(|e| mitogen::CallError::new("sleeps", e))
}

/// Calls one after another are read by the threads that wait for them:
/// the caller reads its answer, the child's main thread the next call,
/// and neither broker is woken for them. Even when an answer comes back
/// before its reader would have started waiting (the peer, woken, ran
/// first): the link is held before the request (or the answer) leaves.
/// Before that, a broker read 15-50 % of the answers and woke the waiter.
fn round_trips_leave_both_brokers_asleep() -> TestResult {
    let router = util::router()?;
    let child = router.local().connect()?;
    child.call::<add>((1, 1))?;
    let (m0, c0) = (
        broker_sleeps_of(router.broker())?,
        child.call::<broker_sleeps>(())?,
    );
    let n = 400;
    for i in 0..n {
        ensure!(child.call::<add>((i, 1))? == i + 1, "a wrong sum");
    }
    let (m1, c1) = (
        broker_sleeps_of(router.broker())?,
        child.call::<broker_sleeps>(())?,
    );
    // A few for timers and the probe itself, not one per call.
    let (master, child_woke) = (m1 - m0, c1 - c0);
    ensure!(
        master <= 10 && child_woke <= 10,
        "over {n} calls the master's broker woke {master} times, the child's {child_woke}"
    );
    Ok(())
}
