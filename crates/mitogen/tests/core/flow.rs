//! No hangs, no stalls: a slow or stopped peer, a flood, a panicking or
//! re-entrant handler, a sibling's death, payloads larger than a frame.
//!
//! Each test here failed before flow control existed (see the comments);
//! bounds on time are generous and only catch stalls and hangs.

use crate::util::{self, pid, trial, TestResult, TEST_LIMIT, WAIT};
use mitogen::bulk::{BulkReceiver, BulkSender, BulkTarget};
use mitogen::{ByteBuf, Context, Error, ExternalContext, Message, Receiver, Sender};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<libtest_mimic::Trial> {
    vec![
        trial(
            "flow::a_call_does_not_wait_for_a_busy_broker",
            TEST_LIMIT,
            a_call_does_not_wait_for_a_busy_broker,
        ),
        trial(
            "flow::a_stopped_peer_does_not_stall_the_broker",
            TEST_LIMIT,
            a_stopped_peer_does_not_stall_the_broker,
        ),
        trial(
            "flow::a_flood_at_a_stopped_sibling_is_bounded",
            TEST_LIMIT,
            a_flood_at_a_stopped_sibling_is_bounded,
        ),
        trial(
            "flow::a_panicking_handler_is_contained",
            TEST_LIMIT,
            a_panicking_handler_is_contained,
        ),
        trial(
            "flow::a_handler_may_call_back_through_its_link",
            TEST_LIMIT,
            a_handler_may_call_back_through_its_link,
        ),
        trial(
            "flow::a_sibling_waiter_hears_of_its_death",
            TEST_LIMIT,
            a_sibling_waiter_hears_of_its_death,
        ),
        trial(
            "flow::large_argument_and_result",
            TEST_LIMIT,
            large_argument_and_result,
        ),
        trial(
            "flow::large_payloads_through_an_intermediate",
            TEST_LIMIT,
            large_payloads_through_an_intermediate,
        ),
        trial(
            "flow::bulk_stream_through_one_and_two_hops",
            TEST_LIMIT,
            bulk_stream_through_one_and_two_hops,
        ),
        trial(
            "flow::bulk_stream_read_as_io_read",
            TEST_LIMIT,
            bulk_stream_read_as_io_read,
        ),
        trial(
            "flow::bulk_chunks_recycled_arrive_whole",
            TEST_LIMIT,
            bulk_chunks_recycled_arrive_whole,
        ),
        trial(
            "flow::a_full_link_waits_then_times_out",
            TEST_LIMIT,
            a_full_link_waits_then_times_out,
        ),
    ]
}

#[mitogen::remote]
fn byte_len(b: ByteBuf) -> u64 {
    b.len() as u64
}

#[mitogen::remote]
fn make_bytes(n: u64) -> ByteBuf {
    ByteBuf::from(vec![7u8; n as usize])
}

#[mitogen::remote]
fn sum_bytes(b: ByteBuf) -> u64 {
    b.iter().map(|&x| u64::from(x)).sum()
}

#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Peak resident memory of the context it runs in, in KiB.
#[mitogen::remote]
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Calls `add` on `other` `n` times (each routed through the master).
#[mitogen::remote]
fn call_sibling(other: Context, n: u32) -> u32 {
    let mut ok = 0;
    for i in 0..n {
        let r = other
            .call_async::<add>((u64::from(i), 1))
            .and_then(|p| p.get(Some(Duration::from_secs(30))));
        if r.is_ok() {
            ok += 1;
        }
    }
    ok
}

/// Sends `n` raw messages of `size` bytes to handle 5000 of `other` (they
/// are refused there, silently: no reply asked), as fast as it can.
#[mitogen::remote]
fn spray(other: Context, n: u32, size: u32) -> u32 {
    let mut sent = 0;
    for _ in 0..n {
        let m = Message::raw(vec![1u8; size as usize]).to(other.context_id(), 5000);
        if other.send(m).is_err() {
            break;
        }
        sent += 1;
    }
    sent
}

fn sig(pid: u32, sig: i32) {
    // SAFETY: signalling a child context of this test.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Before: the sender of a large frame kept the link's output lock while
/// it wrote at the peer's pace, so the broker, routing a sibling's calls
/// to that peer, waited on it: `defer_sync` took seconds.
fn a_stopped_peer_does_not_stall_the_broker() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("flow-slow").connect()?;
    let b = router.local().remote_name("flow-sib").connect()?;
    let a_pid = a.call::<pid>(())?;
    let done = Arc::new(AtomicBool::new(false));
    // A peer that keeps stopping: 45 ms stopped, 5 ms running (it reads,
    // slowly: a writer waiting on it always sees some progress).
    let stopper = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                sig(a_pid, libc::SIGSTOP);
                std::thread::sleep(Duration::from_millis(45));
                sig(a_pid, libc::SIGCONT);
                std::thread::sleep(Duration::from_millis(5));
            }
            sig(a_pid, libc::SIGCONT);
        })
    };
    let big = {
        let a = a.clone();
        std::thread::spawn(move || a.call::<byte_len>((ByteBuf::from(vec![3u8; 120 << 20]),)))
    };
    let sibling = b.call_async::<call_sibling>((a.clone(), 100_000))?;
    std::thread::sleep(Duration::from_millis(50));
    let mut worst = Duration::ZERO;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) && !big.is_finished() {
        let t = Instant::now();
        router.broker().defer_sync(|| ())?;
        worst = worst.max(t.elapsed());
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    let _ = stopper.join();
    ensure!(
        worst < Duration::from_millis(500),
        "the broker stalled for {worst:?} behind a stopped peer"
    );
    let got = big.join().map_err(|_| "the big call panicked")??;
    ensure!(got == 120 << 20, "the big argument arrived as {got} bytes");
    drop(sibling);
    ensure!(a.call::<add>((1, 2))? == 3, "a still answers");
    Ok(())
}

/// Before: an intermediate buffered whatever a child sprayed at a stopped
/// sibling, without bound, until it died.
fn a_flood_at_a_stopped_sibling_is_bounded() -> TestResult {
    let router = util::router()?;
    let mid = router.local().remote_name("flow-mid").connect()?;
    let src = router.local().remote_name("flow-src").via(&mid).connect()?;
    let dst = router.local().remote_name("flow-dst").via(&mid).connect()?;
    let dst_pid = dst.call::<pid>(())?;
    let before = mid.call::<peak_rss_kib>(())?;
    sig(dst_pid, libc::SIGSTOP);
    // 400 MiB in 1 MiB messages at a context that reads nothing.
    let sprayed = src.call_async::<spray>((dst.clone(), 400, 1 << 20))?;
    std::thread::sleep(Duration::from_secs(3));
    let mid_peak = mid.call::<peak_rss_kib>(())?;
    let master_peak = peak_rss_kib();
    sig(dst_pid, libc::SIGCONT);
    let sent = sprayed.get(Some(WAIT))?;
    ensure!(sent == 400, "only {sent} of 400 messages were sent");
    let grew_mib = mid_peak.saturating_sub(before) / 1024;
    ensure!(
        grew_mib < 120,
        "the intermediate grew by {grew_mib} MiB while its child was stopped"
    );
    ensure!(
        master_peak / 1024 < 400,
        "the master peaked at {} MiB",
        master_peak / 1024
    );
    ensure!(dst.call::<add>((2, 2))? == 4, "the stopped child recovered");
    Ok(())
}

/// Before: the panic unwound through the thread reading the link and
/// surfaced from an unrelated `call`, whose reply was then lost.
fn a_panicking_handler_is_contained() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("flow-panic").connect()?;
    let seen = Receiver::open(&router);
    let tx = seen.to_sender();
    let h = router.add_handler(
        move |m| {
            let n: u32 = m.decode().unwrap_or(0);
            if n % 2 == 0 {
                panic!("handler asked to panic on {n}");
            }
            let _ = tx.send(&n);
        },
        true,
        None,
        None,
    );
    let to_handler = Sender::new(&router.myself(), h);
    for i in 0..10u32 {
        let s = to_handler.clone();
        // From the child, so the message arrives on the link a call reads.
        ctx.call::<send_to>((s, i))?;
        ensure!(
            ctx.call::<add>((u64::from(i), 1))? == u64::from(i) + 1,
            "call {i}"
        );
    }
    let mut odd = Vec::new();
    for _ in 0..5 {
        odd.push(seen.get(Some(WAIT))?.decode::<u32>()?);
    }
    ensure!(odd == [1, 3, 5, 7, 9], "the handler saw {odd:?}");
    Ok(())
}

#[mitogen::remote]
fn send_to(s: Sender, n: u32) -> mitogen::Result<()> {
    s.send(&n)
}

/// Before: the handler ran on the thread reading the link, holding its
/// reader, so a call back through that link could never get its reply.
fn a_handler_may_call_back_through_its_link() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("flow-reenter").connect()?;
    let results = Receiver::open(&router);
    let out = results.to_sender();
    let back = ctx.clone();
    let h = router.add_handler(
        move |m| {
            let n: u64 = m.decode().unwrap_or(0);
            let r = back.call::<add>((n, 100));
            let _ = out.send(&r.map_err(|e| e.to_string()));
        },
        true,
        None,
        None,
    );
    let to_handler = Sender::new(&router.myself(), h);
    // The child sends and then waits for our call: the master's caller
    // thread reads the link for its reply.
    let pending = ctx.call_async::<send_to>((to_handler, 5))?;
    let r: Result<u64, String> = results.get(Some(WAIT))?.decode()?;
    ensure!(r == Ok(105), "the call from the handler gave {r:?}");
    pending.get(Some(WAIT))?;
    Ok(())
}

/// Waits on a receiver whose respondent is `peer`: reports the
/// receiver's sender through `report`, takes one message (which `peer`
/// sends), then waits for a second; returns what that wait gave and how
/// long it took (ms).
#[mitogen::remote]
fn wait_on_peer(
    econtext: &ExternalContext,
    peer: Context,
    report: Sender,
) -> mitogen::Result<(String, u64)> {
    let rx = Receiver::new(econtext.router(), None, true, Some(&peer), None)?;
    report.send(&rx.to_sender())?;
    rx.get(Some(Duration::from_secs(30)))?;
    let t0 = Instant::now();
    let r = rx.get(Some(Duration::from_secs(30)));
    let ms = t0.elapsed().as_millis() as u64;
    Ok((format!("{:?}", r.map(|_| ())), ms))
}

/// Before: only a dead context's ancestors heard of its death; a sibling
/// waiting on it waited until its own timeout.
fn a_sibling_waiter_hears_of_its_death() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("flow-dies").connect()?;
    let b = router.local().remote_name("flow-waits").connect()?;
    let a_pid = a.call::<pid>(())?;
    let reports = Receiver::open(&router);
    let waiting = b.call_async::<wait_on_peer>((a.clone(), reports.to_sender()))?;
    let to_b: Sender = reports.get(Some(WAIT))?.decode()?;
    // a sends to b (through the master): b now waits on a context whose
    // messages it has seen, a sibling.
    a.call::<send_to>((to_b, 1))?;
    std::thread::sleep(Duration::from_millis(300));
    util::kill9(a_pid)?;
    let (r, ms) = waiting.get(Some(WAIT))?;
    ensure!(r.contains("Channel"), "the waiter got {r}");
    ensure!(ms < 5_000, "the waiter heard after {ms} ms");
    Ok(())
}

/// Before: a payload over `max_message_size` (128 MiB by default) failed.
fn large_argument_and_result() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("flow-big").connect()?;
    let n: u64 = 160 << 20;
    let arg = ByteBuf::from(vec![1u8; n as usize]);
    ensure!(ctx.call::<sum_bytes>((arg,))? == n, "argument");
    let r = ctx.call::<make_bytes>((n,))?;
    ensure!(r.len() as u64 == n && r.iter().all(|&b| b == 7), "result");
    let peak = ctx.call::<peak_rss_kib>(())? / 1024;
    ensure!(
        peak < 700,
        "the child peaked at {peak} MiB for 160 MiB each way"
    );
    Ok(())
}

/// Fragments are routed by an intermediate like any frame, and put back
/// together only at the destination.
fn large_payloads_through_an_intermediate() -> TestResult {
    let router = util::router()?;
    router.set_max_message_size(1 << 20);
    let mid = router.local().remote_name("flow-hop").connect()?;
    let leaf = router
        .local()
        .remote_name("flow-leaf")
        .via(&mid)
        .connect()?;
    let n: u64 = 48 << 20;
    ensure!(
        leaf.call::<sum_bytes>((ByteBuf::from(vec![2u8; n as usize]),))? == 2 * n,
        "argument"
    );
    ensure!(leaf.call::<make_bytes>((n,))?.len() as u64 == n, "result");
    let mid_peak = mid.call::<peak_rss_kib>(())? / 1024;
    ensure!(
        mid_peak < 100,
        "the intermediate peaked at {mid_peak} MiB for a 48 MiB payload"
    );
    Ok(())
}

/// A user thread sending into a link whose peer is stopped waits for
/// room, then fails with a timeout; `try_send` fails at once.
fn a_full_link_waits_then_times_out() -> TestResult {
    let router = util::router()?;
    router.set_max_queued(1 << 20);
    router.set_send_timeout(Some(Duration::from_millis(500)));
    let ctx = router.local().remote_name("flow-full").connect()?;
    let p = ctx.call::<pid>(())?;
    sig(p, libc::SIGSTOP);
    let chunk = || Message::raw(vec![0u8; 256 << 10]).to(ctx.context_id(), 5000);
    let mut sent = 0;
    let t0 = Instant::now();
    let err = loop {
        match ctx.send(chunk()) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        if sent > 1000 {
            break Error::Channel(mitogen::ChannelError::new("never filled"));
        }
    };
    let waited = t0.elapsed();
    ensure!(
        matches!(err, Error::Timeout(_)),
        "got {err:?} after {sent} sends"
    );
    ensure!(
        waited < Duration::from_secs(10),
        "the send waited {waited:?}"
    );
    match ctx.try_send(chunk()) {
        Err(Error::Stream(e)) => ensure!(
            e.kind() == Some(std::io::ErrorKind::WouldBlock),
            "try_send: {e}"
        ),
        other => return Err(format!("try_send gave {other:?}").into()),
    }
    sig(p, libc::SIGCONT);
    ensure!(ctx.call::<add>((1, 1))? == 2, "the link recovered");
    Ok(())
}

/// Streams `n` bytes to `target` in 256 KiB writes; returns the most it
/// ever had in flight.
#[mitogen::remote]
fn produce(router: &mitogen::Router, target: BulkTarget, n: u64) -> mitogen::Result<u64> {
    let mut tx = BulkSender::connect(router, target)?;
    let chunk = vec![9u8; 256 << 10];
    let (mut left, mut most) = (n as usize, 0);
    while left > 0 {
        let k = left.min(chunk.len());
        tx.write(&chunk[..k])?;
        most = most.max(tx.in_flight());
        left -= k;
    }
    tx.finish()?;
    Ok(most)
}

/// The sender never has more than the window in flight, however slow the
/// reader; the bytes arrive whole, through one hop and through two.
fn bulk_stream_through_one_and_two_hops() -> TestResult {
    let router = util::router()?;
    let mid = router.local().remote_name("bulk-mid").connect()?;
    let leaf = router
        .local()
        .remote_name("bulk-leaf")
        .via(&mid)
        .connect()?;
    let window = 4 << 20;
    let n: u64 = 200 << 20;
    for (name, ctx) in [("one hop", &mid), ("two hops", &leaf)] {
        let mut rx = BulkReceiver::open(&router, window, Some(ctx));
        let sending = ctx.call_async::<produce>((rx.target(), n))?;
        let mut got = 0u64;
        let mut slow = 0;
        while let Some(chunk) = rx.read_chunk(Some(WAIT))? {
            ensure!(chunk.iter().all(|&b| b == 9), "{name}: corrupt chunk");
            got += chunk.len() as u64;
            if slow < 20 {
                // A slow reader at first: the sender must wait, not pile up.
                std::thread::sleep(Duration::from_millis(20));
                slow += 1;
            }
        }
        let most = sending.get(Some(WAIT))?;
        ensure!(got == n, "{name}: {got} of {n} bytes");
        ensure!(
            most <= window as u64,
            "{name}: {most} bytes in flight for a window of {window}"
        );
    }
    let mid_peak = mid.call::<peak_rss_kib>(())? / 1024;
    ensure!(mid_peak < 100, "the intermediate peaked at {mid_peak} MiB");
    Ok(())
}

/// Sends `sizes.len()` chunks, chunk `i` of `sizes[i]` bytes, each byte
/// its offset in the stream modulo 251.
#[mitogen::remote]
fn produce_counting(
    router: &mitogen::Router,
    target: BulkTarget,
    sizes: Vec<u32>,
) -> mitogen::Result<()> {
    let mut tx = BulkSender::connect(router, target)?;
    let mut at = 0u64;
    for n in sizes {
        let chunk: Vec<u8> = (at..at + u64::from(n)).map(|i| (i % 251) as u8).collect();
        tx.write(&chunk)?;
        at += u64::from(n);
    }
    tx.finish()
}

/// `std::io::Read` on a receiver hands out every byte once, in order,
/// across chunk boundaries and empty chunks, then end of stream.
fn bulk_stream_read_as_io_read() -> TestResult {
    use std::io::Read;
    let router = util::router()?;
    let ctx = router.local().remote_name("bulk-read").connect()?;
    let mut rx = BulkReceiver::open(&router, 1 << 20, Some(&ctx));
    let sizes = vec![1, 0, 70_000, 3 << 20, 0, 5, 1 << 20];
    let total: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
    let sending = ctx.call_async::<produce_counting>((rx.target(), sizes))?;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 7000];
    loop {
        let n = rx.read(&mut buf)?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    sending.get(Some(WAIT))?;
    ensure!(got.len() as u64 == total, "{} of {total} bytes", got.len());
    let bad = got
        .iter()
        .enumerate()
        .position(|(i, &b)| b != (i % 251) as u8);
    ensure!(bad.is_none(), "byte {bad:?} is wrong");
    Ok(())
}

/// Chunks whose buffers are given back ([`BulkReceiver::recycle`]) and
/// read into again arrive whole and in order: a reused buffer carries
/// nothing of its last chunk.
fn bulk_chunks_recycled_arrive_whole() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("bulk-recycle").connect()?;
    let mut rx = BulkReceiver::open(&router, 4 << 20, Some(&ctx));
    // 1 MiB chunks (a quarter window), shorter ones between them.
    let sizes: Vec<u32> = (0..40)
        .map(|i| if i % 7 == 3 { 300_000 + i } else { 1 << 20 })
        .collect();
    let total: u64 = sizes.iter().map(|&n| u64::from(n)).sum();
    let sending = ctx.call_async::<produce_counting>((rx.target(), sizes))?;
    let mut at = 0u64;
    while let Some(chunk) = rx.read_chunk(Some(WAIT))? {
        let bad = chunk
            .iter()
            .enumerate()
            .position(|(i, &b)| b != ((at + i as u64) % 251) as u8);
        ensure!(
            bad.is_none(),
            "byte {:?} of the stream is wrong",
            bad.map(|i| at + i as u64)
        );
        at += chunk.len() as u64;
        rx.recycle(chunk);
    }
    sending.get(Some(WAIT))?;
    ensure!(at == total, "{at} of {total} bytes");
    Ok(())
}

/// A call sent while the broker runs a long task (here 3 s of user code
/// deferred to it) is handed to the broker for its flush, as any send
/// while it is up; the caller, about to wait for the answer, writes it
/// itself and reads the answer itself: it does not wait for the task.
fn a_call_does_not_wait_for_a_busy_broker() -> TestResult {
    let router = util::router()?;
    let child = router.local().connect()?;
    child.call::<add>((1, 1))?;
    let (busy, release) = (mitogen::Latch::new(), mitogen::Latch::<()>::new());
    let (b, r) = (busy.clone(), release.clone());
    router.broker().defer(move || {
        let _ = b.put(());
        let _ = r.get(Some(Duration::from_secs(3)));
    })?;
    busy.get(Some(WAIT))?;
    let t = Instant::now();
    let sum = child.call::<add>((2, 3));
    let took = t.elapsed();
    release.put(())?;
    ensure!(matches!(sum, Ok(5)), "the call gave {sum:?}");
    ensure!(
        took < Duration::from_millis(1500),
        "the call waited {took:?} for the broker's task"
    );
    // The same in the child: its answers do not wait for its broker.
    child.call::<busy_broker>((2500,))?;
    let t = Instant::now();
    for i in 0..3 {
        let sum = child.call::<add>((i, 1))?;
        ensure!(sum == i + 1, "the call gave {sum}");
    }
    let took = t.elapsed();
    ensure!(
        took < Duration::from_millis(1500),
        "three calls waited {took:?} for the child's broker"
    );
    Ok(())
}

/// Keeps this context's broker busy for `ms` with a deferred task.
#[mitogen::remote]
fn busy_broker(router: &mitogen::Router, ms: u64) -> Result<(), Error> {
    let started = mitogen::Latch::new();
    let s = started.clone();
    router.broker().defer(move || {
        let _ = s.put(());
        std::thread::sleep(Duration::from_millis(ms));
    })?;
    started.get(Some(WAIT))
}
