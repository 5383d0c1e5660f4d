//! The messaging API against real local contexts: receivers (explicit
//! handles, respondents, close while waiting, many threads on one),
//! senders after their context died, channels, and selects (fan-in from
//! ten contexts with every message counted, nesting, oneshot, misuse).

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use crate::util::{pid, sleep_ms};
use libtest_mimic::Trial;
use mitogen::{Channel, Error, Event, Latch, Message, Receiver, Select, Sender, SourceId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "messaging::close_wakes_every_waiting_thread",
            TEST_LIMIT,
            close_wakes_every_waiting_thread,
        ),
        trial(
            "messaging::each_close_is_seen_once_by_get_message",
            TEST_LIMIT,
            each_close_is_seen_once_by_get_message,
        ),
        trial(
            "messaging::receiver_explicit_handle",
            TEST_LIMIT,
            explicit_handle,
        ),
        trial(
            "messaging::receiver_respondent_dies",
            TEST_LIMIT,
            respondent_dies,
        ),
        trial(
            "messaging::receiver_close_while_waiting",
            TEST_LIMIT,
            close_while_waiting,
        ),
        trial(
            "messaging::receiver_eight_threads",
            TEST_LIMIT,
            eight_threads,
        ),
        trial(
            "messaging::sender_after_context_died",
            TEST_LIMIT,
            sender_after_death,
        ),
        trial(
            "messaging::sender_bytes_and_close",
            TEST_LIMIT,
            sender_bytes,
        ),
        trial(
            "messaging::channel_peer_disconnects",
            TEST_LIMIT,
            channel_peer_gone,
        ),
        trial(
            "messaging::select_ten_contexts",
            TEST_LIMIT,
            select_ten_contexts,
        ),
        trial(
            "messaging::select_all_pending_calls",
            TEST_LIMIT,
            select_all,
        ),
        trial("messaging::select_nested", TEST_LIMIT, select_nested),
        trial("messaging::select_misuse", TEST_LIMIT, select_misuse),
        trial(
            "messaging::select_timeout_and_close",
            TEST_LIMIT,
            select_timeout_close,
        ),
        trial(
            "messaging::select_lost_context",
            TEST_LIMIT,
            select_lost_context,
        ),
        trial("messaging::call_by_name_values", TEST_LIMIT, call_by_name),
        trial("messaging::reply_and_policy", TEST_LIMIT, reply_and_policy),
        trial("messaging::with_router_attribute", TEST_LIMIT, with_router),
        trial("messaging::context_travels", TEST_LIMIT, context_travels),
        trial("messaging::send_async_and_await", TEST_LIMIT, send_await),
    ]
}

const T: Option<Duration> = Some(WAIT);

/// In a child: sends `n` pairs `(tag, i)` through `tx`, then closes it.
#[mitogen::remote]
fn stream_numbers(tx: Sender, tag: u32, n: u32) -> mitogen::Result<u32> {
    for i in 0..n {
        tx.send(&(tag, i))?;
    }
    tx.close()?;
    Ok(n)
}

/// In a child: sends raw bytes of each given length.
#[mitogen::remote]
fn send_blobs(tx: Sender, sizes: Vec<usize>) -> mitogen::Result<()> {
    for (i, n) in sizes.into_iter().enumerate() {
        tx.send_bytes(vec![i as u8; n])?;
    }
    tx.close()
}

#[mitogen::remote]
fn describe(name: String, n: u32) -> (String, Vec<u32>) {
    (name.to_uppercase(), (0..n).collect())
}

/// In a child: opens a channel back to the parent's `handle`, tells the
/// parent its own handle, then waits for the parent to disappear.
#[mitogen::remote]
fn channel_then_wait(econtext: &mitogen::ExternalContext, handle: u32) -> mitogen::Result<()> {
    let chan = Channel::new(econtext.router(), econtext.parent(), handle, None)?;
    chan.send(&chan.handle())?;
    let _ = chan.get(Some(Duration::from_secs(30)));
    Ok(())
}

fn explicit_handle() -> TestResult {
    let router = util::router()?;
    let h = 7_000_001;
    let rx = Receiver::new(&router, Some(h), true, None, None)?;
    ensure!(rx.handle() == h, "handle {} instead of {h}", rx.handle());
    match Receiver::new(&router, Some(h), true, None, None) {
        Err(Error::Channel(e)) => ensure!(e.reason().contains("in use"), "{e}"),
        other => return Err(format!("a second receiver on {h}: {other:?}").into()),
    }
    let ctx = router.local().connect()?;
    ctx.call::<stream_numbers>((Sender::new(&router.myself(), h), 1, 3))?;
    let got: Vec<(u32, u32)> = rx.iter().map(|m| m.decode().unwrap_or((9, 9))).collect();
    ensure!(got == [(1, 0), (1, 1), (1, 2)], "got {got:?}");
    drop(rx);
    let again = Receiver::new(&router, Some(h), false, None, None);
    ensure!(again.is_ok(), "the handle was not freed on drop: {again:?}");
    Ok(())
}

fn respondent_dies() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("respondent").connect()?;
    let rx = Receiver::new(&router, None, true, Some(&ctx), None)?;
    let pid = ctx.call::<pid>(())?;
    util::kill9(pid)?;
    let start = Instant::now();
    match rx.get(T) {
        Err(Error::Channel(e)) => ensure!(
            e.reason().contains("respondent") && e.reason().contains("disconnected"),
            "reason does not name the lost context: {e}"
        ),
        other => return Err(format!("expected a dead message, got {other:?}").into()),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

fn close_while_waiting() -> TestResult {
    let router = util::router()?;
    let rx = Arc::new(Receiver::open(&router));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || rx.get(Some(Duration::from_secs(30))))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    rx.close();
    for w in waiters {
        match w.join() {
            Ok(Err(Error::Channel(e))) => ensure!(e.reason().contains("closed"), "{e}"),
            other => return Err(format!("a waiter got {other:?}").into()),
        }
    }
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "waiters woke late"
    );
    Ok(())
}

fn eight_threads() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let rx = Arc::new(Receiver::open(&router));
    const N: u32 = 8000;
    let pending = ctx.call_async::<stream_numbers>((rx.to_sender(), 0, N))?;
    let takers: Vec<_> = (0..8)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while let Ok(m) = rx.get(Some(Duration::from_secs(20))) {
                    if let Ok((_, i)) = m.decode::<(u32, u32)>() {
                        mine.push(i);
                    }
                }
                mine
            })
        })
        .collect();
    ensure!(pending.get(T)? == N, "the sender did not finish");
    // The close wakes every taker: each stops once the queue is empty.
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in takers {
        let mine = t.join().map_err(|_| "a taker panicked")?;
        total += mine.len();
        seen.extend(mine);
    }
    ensure!(
        total == N as usize && seen.len() == N as usize,
        "{total} taken, {} distinct, of {N}",
        seen.len()
    );
    Ok(())
}

fn sender_after_death() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let tx = Sender::new(&ctx, 1234);
    let pid = ctx.call::<pid>(())?;
    util::kill9(pid)?;
    let gone = util::wait_for(WAIT, || !ctx.is_connected());
    ensure!(gone, "the context still looks connected");
    match tx.send(&"late") {
        Err(Error::Channel(e)) => ensure!(e.reason().contains("no route"), "{e}"),
        other => return Err(format!("send to a dead context: {other:?}").into()),
    }
    Ok(())
}

fn sender_bytes() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let rx = Receiver::open(&router);
    let sizes = vec![0usize, 1, 65_536, 3 << 20];
    ctx.call::<send_blobs>((rx.to_sender(), sizes.clone()))?;
    let mut got = Vec::new();
    for m in &rx {
        let b = m.bytes()?;
        ensure!(b.iter().all(|&x| x as usize == got.len()), "wrong content");
        got.push(b.len());
    }
    ensure!(got == sizes, "sizes {got:?}");
    // Closed: later gets fail at once, saying so.
    match rx.get(Some(Duration::from_secs(5))) {
        Err(Error::Channel(e)) if e.reason().contains("closed") => Ok(()),
        other => Err(format!("after close: {other:?}").into()),
    }
}

fn channel_peer_gone() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("peer").connect()?;
    let peer_pid = ctx.call::<pid>(())?;
    let first = Receiver::open(&router);
    let _call = ctx.call_async::<channel_then_wait>((first.handle(),))?;
    let theirs: u32 = first.get(T)?.decode()?;
    let chan = Channel::new(&router, &ctx, theirs, None)?;
    ensure!(chan.empty()?, "nothing sent yet");
    util::kill9(peer_pid)?;
    let start = Instant::now();
    match chan.get(T) {
        Err(Error::Channel(e)) => ensure!(e.reason().contains("disconnected"), "{e}"),
        other => return Err(format!("after the peer died: {other:?}").into()),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    match chan.send(&"late") {
        Err(Error::Channel(_)) => Ok(()),
        other => Err(format!("send to a dead peer: {other:?}").into()),
    }
}

fn select_ten_contexts() -> TestResult {
    let router = util::router()?;
    const PER: u32 = 500;
    let mut ctxs = Vec::new();
    for i in 0..10 {
        ctxs.push(router.local().remote_name(format!("feed{i}")).connect()?);
    }
    let rxs: Vec<Receiver> = (0..10).map(|_| Receiver::open(&router)).collect();
    let select = Select::with(&rxs, false)?;
    ensure!(select.len() == 10, "{} members", select.len());
    let mut calls = Vec::new();
    for (i, (ctx, rx)) in ctxs.iter().zip(&rxs).enumerate() {
        calls.push(ctx.call_async::<stream_numbers>((rx.to_sender(), i as u32, PER))?);
    }
    let mut seen = HashSet::new();
    let mut closes = 0;
    let mut n = 0;
    while closes < 10 {
        n += 1;
        ensure!(n <= 10 * (PER + 1), "more events than sent");
        let Event { source, data } = select.get_event(T)?;
        if data.is_dead() {
            closes += 1;
            continue;
        }
        let (tag, i): (u32, u32) = data.decode()?;
        ensure!(
            source == SourceId::of(&rxs[tag as usize]),
            "message of feed {tag} reported from another source"
        );
        ensure!(seen.insert((tag, i)), "duplicate ({tag}, {i})");
    }
    ensure!(
        seen.len() == 10 * PER as usize,
        "{} distinct messages",
        seen.len()
    );
    for c in calls {
        ensure!(c.get(T)? == PER, "a feed did not finish");
    }
    ensure!(select.empty(), "messages left");
    Ok(())
}

fn select_all() -> TestResult {
    let router = util::router()?;
    let mut ctxs = Vec::new();
    for i in 0..5 {
        ctxs.push(router.local().remote_name(format!("sq{i}")).connect()?);
    }
    // Later contexts answer first: `all` returns arrival order.
    let calls: Vec<_> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| c.call_async::<sleep_ms>((200 - 40 * i as u64,)))
        .collect::<mitogen::Result<_>>()?;
    let select = Select::with(&calls, true)?;
    let got: Vec<u64> = select.all(T)?;
    ensure!(got == [40, 80, 120, 160, 200], "arrival order {got:?}");
    ensure!(select.is_empty(), "oneshot members left");
    ensure!(
        matches!(select.get(T), Err(Error::Select(_))),
        "get on an exhausted select"
    );
    // Iteration over a oneshot select ends once every call answered.
    let calls: Vec<_> = ctxs
        .iter()
        .map(|c| c.call_async::<pid>(()))
        .collect::<mitogen::Result<_>>()?;
    let select = Select::with(&calls, true)?;
    let pids: HashSet<u32> = select.iter().map(|m| m.decode().unwrap_or(0)).collect();
    ensure!(pids.len() == 5 && !pids.contains(&0), "pids {pids:?}");
    Ok(())
}

fn select_nested() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let (a, b) = (Receiver::open(&router), Receiver::open(&router));
    let inner = Select::with([&a, &b], false)?;
    let latch: Latch<Message> = Latch::new();
    let outer = Select::new(false);
    outer.add(&inner)?;
    outer.add(&latch)?;
    ctx.call::<stream_numbers>((b.to_sender(), 2, 1))?;
    let ev = outer.get_event(T)?;
    ensure!(
        ev.is_from(&b),
        "event not attributed to the inner receiver b"
    );
    ensure!(ev.data.decode::<(u32, u32)>()? == (2, 0), "payload");
    latch.put(Message::encode(&"wake")?)?;
    let mut from_latch = false;
    for _ in 0..3 {
        let ev = outer.get_event(T)?;
        if ev.is_from(&latch) {
            ensure!(ev.data.decode::<String>()? == "wake", "latch payload");
            from_latch = true;
            break;
        }
        ensure!(ev.is_from(&b) && ev.data.is_dead(), "unexpected {ev:?}");
    }
    ensure!(from_latch, "the latch's item never came out");
    ensure!(
        matches!(inner.add(&outer), Err(Error::Select(_))),
        "a cycle was accepted"
    );
    Ok(())
}

fn select_misuse() -> TestResult {
    let router = util::router()?;
    let rx = Receiver::open(&router);
    let s1 = Select::new(true);
    let s2 = Select::new(true);
    s1.add(&rx)?;
    match s2.add(&rx) {
        Err(Error::Select(e)) => ensure!(e.message().contains("already"), "{e}"),
        other => return Err(format!("a receiver joined two selects: {other:?}").into()),
    }
    ensure!(
        matches!(s2.remove(&rx), Err(Error::Select(_))),
        "removed a non-member"
    );
    s1.remove(&rx)?;
    s2.add(&rx)?;
    ensure!(
        matches!(s1.add(&s1), Err(Error::Select(_))),
        "a select was added to itself"
    );
    match s1.get(Some(Duration::from_millis(10))) {
        Err(Error::Select(e)) => ensure!(e.message().contains("empty"), "{e}"),
        other => return Err(format!("get on an empty select: {other:?}").into()),
    }
    Ok(())
}

fn select_timeout_close() -> TestResult {
    let router = util::router()?;
    let rx = Receiver::open(&router);
    let s = Select::new(false);
    s.add(&rx)?;
    let start = Instant::now();
    ensure!(
        matches!(
            s.get(Some(Duration::from_millis(50))),
            Err(Error::Timeout(_))
        ),
        "no timeout"
    );
    ensure!(start.elapsed() < Duration::from_secs(5), "timeout late");
    let s2 = s.clone();
    let waiter = std::thread::spawn(move || s2.get(Some(Duration::from_secs(30))));
    std::thread::sleep(Duration::from_millis(100));
    s.close();
    match waiter.join() {
        Ok(Err(Error::Select(_))) => {}
        other => return Err(format!("waiter after close: {other:?}").into()),
    }
    // A receiver that closes leaves the select.
    let s = Select::new(false);
    let rx2 = Receiver::open(&router);
    s.add(&rx2)?;
    rx2.close();
    ensure!(
        matches!(s.get(Some(Duration::from_secs(5))), Err(Error::Select(_))),
        "a closed receiver kept the select waiting"
    );
    Ok(())
}

fn select_lost_context() -> TestResult {
    let router = util::router()?;
    let ok = router.local().remote_name("steady").connect()?;
    let doomed = router.local().remote_name("doomed").connect()?;
    let doomed_pid = doomed.call::<pid>(())?;
    let calls = [
        ok.call_async::<sleep_ms>((300,))?,
        doomed.call_async::<sleep_ms>((10_000,))?,
    ];
    let s = Select::with(&calls, true)?;
    util::kill9(doomed_pid)?;
    let start = Instant::now();
    let ev = s.get_event(T)?;
    ensure!(ev.is_from(&calls[1]), "the lost call should answer first");
    match ev.data.decode::<u64>() {
        Err(Error::Channel(e)) => ensure!(e.reason().contains("doomed"), "{e}"),
        other => return Err(format!("lost call decoded to {other:?}").into()),
    }
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    let ev = s.get_event(T)?;
    ensure!(
        ev.is_from(&calls[0]) && ev.data.decode::<u64>()? == 300,
        "steady result"
    );
    Ok(())
}

/// In a child: asks the parent's `handle` a question with a reply handle
/// and returns the answer, or the dead reason when refused.
#[mitogen::remote]
fn ask(econtext: &mitogen::ExternalContext, handle: u32, question: String) -> String {
    let answers = Receiver::open(econtext.router());
    let mut m = match Message::encode(&question) {
        Ok(m) => m.to(econtext.parent().context_id(), handle),
        Err(e) => return format!("encode: {e}"),
    };
    m.reply_to = answers.handle();
    if let Err(e) = econtext.parent().send(m) {
        return format!("send: {e}");
    }
    match answers.get(Some(Duration::from_secs(10))) {
        Ok(a) => a
            .decode::<String>()
            .unwrap_or_else(|e| format!("decode: {e}")),
        Err(e) => format!("dead: {e}"),
    }
}

fn reply_and_policy() -> TestResult {
    let router = util::router()?;
    let friend = router.local().remote_name("friend").connect()?;
    let stranger = router.local().remote_name("stranger").connect()?;
    let friend_id = friend.context_id();
    let policy: mitogen::Policy = Arc::new(move |m: &Message| m.auth_id == friend_id);
    let rx = Arc::new(Receiver::new(&router, None, true, None, Some(policy))?);
    let rx2 = rx.clone();
    let server = std::thread::spawn(move || -> mitogen::Result<u32> {
        let mut n = 0;
        while let Ok(q) = rx2.get(Some(Duration::from_secs(20))) {
            q.reply(&format!("{} answered", q.decode::<String>()?))?;
            n += 1;
        }
        Ok(n)
    });
    let a = friend.call::<ask>((rx.handle(), "q1".into()))?;
    ensure!(a == "q1 answered", "friend got {a:?}");
    let b = stranger.call::<ask>((rx.handle(), "q2".into()))?;
    ensure!(
        b.starts_with("dead") && b.contains("refused by policy"),
        "stranger got {b:?}"
    );
    rx.close();
    let served = server.join().map_err(|_| "server panicked")??;
    ensure!(served == 1, "served {served}");
    Ok(())
}

fn call_by_name() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let name = <describe as mitogen::RemoteFn>::NAME;
    let args = mitogen::cast(&("disk", 3u32))?;
    let v: mitogen::Value = ctx.call_by_name(name, &args)?;
    ensure!(v[0].as_str() == Some("DISK"), "{v}");
    ensure!(v[1].as_array().map(Vec::len) == Some(3), "{v}");
    let typed: (String, Vec<u32>) = ctx.call_by_name(name, &("x", 1u32))?;
    ensure!(typed == ("X".to_string(), vec![0]), "{typed:?}");
    match ctx.call_by_name::<mitogen::Value>("no::such::function", &()) {
        Err(Error::Call(e)) => ensure!(e.message().contains("no::such::function"), "{e}"),
        other => return Err(format!("unknown name: {other:?}").into()),
    }
    match ctx.call_by_name::<mitogen::Value>(name, &(1u8,)) {
        Err(Error::Call(_)) => Ok(()),
        other => Err(format!("wrong arguments: {other:?}").into()),
    }
}

#[mitogen::with_router]
fn start_and_report(router: &mitogen::Router, tag: &str) -> mitogen::Result<(String, u32)> {
    let ctx = router.local().remote_name(tag).connect()?;
    Ok((ctx.name().to_string(), ctx.call::<pid>(())?))
}

fn with_router() -> TestResult {
    let (name, child) = start_and_report("scoped")?;
    ensure!(name == "scoped", "name {name}");
    // The router is gone: its child was stopped and reaped.
    util::wait_exited(child, Duration::from_secs(10), false)?;
    Ok(())
}

/// In a child: starts a context of its own and returns it.
#[mitogen::remote]
fn start_grandchild(router: &mitogen::Router) -> mitogen::Result<mitogen::Context> {
    router.local().remote_name("grandchild").connect()
}

/// In a child: what a `Context` given as an argument names.
#[mitogen::remote]
fn name_of(c: mitogen::Context) -> (u32, String) {
    (c.context_id(), c.name().to_string())
}

fn context_travels() -> TestResult {
    let router = util::router()?;
    let child = router.local().remote_name("parent-of-gc").connect()?;
    let gc = child.call::<start_grandchild>(())?;
    ensure!(gc.name().ends_with("grandchild"), "name {}", gc.name());
    // The returned Context is bound to this router: calls go straight to it.
    let (gc_pid, pid) = (gc.call::<pid>(())?, child.call::<pid>(())?);
    ensure!(gc_pid != pid, "the grandchild is the child");
    let (id, name) = child.call::<name_of>((gc.clone(),))?;
    ensure!(id == gc.context_id(), "id {id} vs {}", gc.context_id());
    ensure!(name == gc.name(), "name {name:?} vs {:?}", gc.name());
    Ok(())
}

/// In a child: a thread answering each message on a new handle with the
/// text upper-cased; returns the handle.
#[mitogen::remote]
fn start_upper_service(router: &mitogen::Router) -> u32 {
    let rx = Receiver::open(router);
    let handle = rx.handle();
    std::thread::spawn(move || {
        while let Ok(m) = rx.get(None) {
            let text = m.decode::<String>().unwrap_or_default();
            let _ = m.reply(&text.to_uppercase());
        }
    });
    handle
}

fn send_await() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let h = ctx.call::<start_upper_service>(())?;
    let answer = ctx.send_await(Message::encode("quiet")?.to(0, h), T)?;
    ensure!(answer.decode::<String>()? == "QUIET", "answer {answer:?}");
    let pending = ctx.send_async(Message::encode("later")?.to(0, h))?;
    ensure!(
        pending.get(T)?.decode::<String>()? == "LATER",
        "async answer"
    );
    match ctx.send_await(Message::encode("x")?.to(0, 4_000_123), T) {
        Err(Error::Channel(e)) => ensure!(e.reason().contains("no receiver"), "{e}"),
        other => return Err(format!("to a missing handle: {other:?}").into()),
    }
    Ok(())
}

/// Before: a `Sender::close` was one dead message, so one of the threads
/// waiting on the receiver learned and the others waited forever.
fn close_wakes_every_waiting_thread() -> TestResult {
    let router = util::router()?;
    let rx = std::sync::Arc::new(mitogen::Receiver::open(&router));
    let tx = rx.to_sender();
    tx.send(&1u32)?;
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match rx.get(Some(Duration::from_secs(20))) {
                        Ok(m) => got.push(m.decode::<u32>().unwrap_or(0)),
                        Err(e) => return (got, e.to_string()),
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    tx.close()?;
    let mut seen = Vec::new();
    for w in waiters {
        let (got, why) = w.join().map_err(|_| "a waiter panicked".to_string())?;
        ensure!(why.contains("closed"), "a waiter ended with {why:?}");
        seen.extend(got);
    }
    ensure!(seen == [1], "messages seen: {seen:?}");
    // Later calls fail at once too, and later messages still come first.
    tx.send(&2u32)?;
    ensure!(rx.get(Some(WAIT))?.decode::<u32>()? == 2, "a later message");
    ensure!(rx.get(Some(WAIT)).is_err(), "get after the close");
    ensure!(!rx.empty()?, "an ended receiver does not block");
    Ok(())
}

/// A receiver fed by several senders, each closing it when done: with
/// `get_message` each close is one dead message, seen once.
fn each_close_is_seen_once_by_get_message() -> TestResult {
    let router = util::router()?;
    let rx = mitogen::Receiver::open(&router);
    let (a, b) = (rx.to_sender(), rx.to_sender());
    a.send(&1u32)?;
    a.close()?;
    b.send(&2u32)?;
    b.close()?;
    let mut data = Vec::new();
    let mut closes = 0;
    while closes < 2 {
        let m = rx.get_message(Some(WAIT))?;
        if m.is_dead() {
            closes += 1;
        } else {
            data.push(m.decode::<u32>()?);
        }
    }
    ensure!(data == [1, 2], "data {data:?}");
    ensure!(
        rx.try_get()?.is_some_and(|m| m.is_dead()),
        "ended after the closes"
    );
    Ok(())
}
