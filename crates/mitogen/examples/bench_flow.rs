//! Flow-control benchmarks for `bench/run`: broker latency behind a
//! stopped peer, memory of an intermediate under a flood, and the bulk
//! stream through one and three hops. One JSON line per scenario, in the
//! shape `bench.rs` prints (`bench/report.py` reads both).
//!
//! `--quick` shrinks the sizes; `--only bulk` runs the bulk streams alone.

use mitogen::bulk::{BulkReceiver, BulkSender, BulkTarget};
use mitogen::{ByteBuf, Context, Message, Router};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Option<Duration> = Some(Duration::from_secs(120));

fn emit(scenario: &str, value: f64, unit: &str, extra: &str) {
    println!(
        "{{\"scenario\": \"{scenario}\", \"impl\": \"rust\", \"value\": {value:.3}, \"unit\": \"{unit}\"{extra}}}"
    );
}

#[mitogen::remote]
fn pid() -> u32 {
    std::process::id()
}

#[mitogen::remote]
fn byte_len(b: ByteBuf) -> u64 {
    b.len() as u64
}

#[mitogen::remote]
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[mitogen::remote]
fn call_sibling(other: Context, n: u32) -> u32 {
    (0..n)
        .filter(|i| other.call::<add>((u64::from(*i), 1)).is_ok())
        .count() as u32
}

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

#[mitogen::remote]
fn produce(router: &Router, target: BulkTarget, n: u64) -> mitogen::Result<()> {
    let mut tx = BulkSender::connect(router, target)?;
    let chunk = 1 << 20;
    let mut left = n as usize;
    while left > 0 {
        let k = left.min(chunk);
        tx.send_vec(vec![0x5au8; k])?;
        left -= k;
    }
    tx.finish()
}

fn sig(pid: u32, sig: i32) {
    // SAFETY: signalling a child context of this benchmark.
    unsafe { libc::kill(pid as i32, sig) };
}

/// The worst `defer_sync` round trip on the master while a 120 MiB call
/// goes to a peer stopped 90 % of the time and a sibling calls it.
fn broker_latency(router: &Router, secs: u64) -> mitogen::Result<()> {
    let a = router.local().remote_name("slow").connect()?;
    let b = router.local().remote_name("sibling").connect()?;
    let a_pid = a.call::<pid>(())?;
    let done = Arc::new(AtomicBool::new(false));
    let d = done.clone();
    let stopper = std::thread::spawn(move || {
        while !d.load(Ordering::Relaxed) {
            sig(a_pid, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(45));
            sig(a_pid, libc::SIGCONT);
            std::thread::sleep(Duration::from_millis(5));
        }
        sig(a_pid, libc::SIGCONT);
    });
    let a2 = a.clone();
    let big =
        std::thread::spawn(move || a2.call::<byte_len>((ByteBuf::from(vec![3u8; 120 << 20]),)));
    let _sibling = b.call_async::<call_sibling>((a.clone(), 1_000_000))?;
    let (mut worst, mut n, mut total) = (Duration::ZERO, 0u32, Duration::ZERO);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(secs) && !big.is_finished() {
        let t = Instant::now();
        router.broker().defer_sync(|| ())?;
        let dt = t.elapsed();
        worst = worst.max(dt);
        total += dt;
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    let _ = stopper.join();
    let _ = big.join();
    let mean = total.as_secs_f64() * 1e3 / f64::from(n.max(1));
    emit(
        "broker_latency_stalled_peer",
        worst.as_secs_f64() * 1e3,
        "ms",
        &format!(", \"note\": \"worst of {n} defer_sync, mean {mean:.3} ms\""),
    );
    Ok(())
}

/// Peak RSS growth of an intermediate while a child sprays 1 MiB
/// messages at a stopped sibling for `secs` seconds.
fn flood_memory(router: &Router, secs: u64) -> mitogen::Result<()> {
    let mid = router.local().remote_name("mid").connect()?;
    let src = router.local().remote_name("src").via(&mid).connect()?;
    let dst = router.local().remote_name("dst").via(&mid).connect()?;
    let dst_pid = dst.call::<pid>(())?;
    let before = mid.call::<peak_rss_kib>(())?;
    sig(dst_pid, libc::SIGSTOP);
    let sprayed = src.call_async::<spray>((dst.clone(), 1000, 1 << 20))?;
    std::thread::sleep(Duration::from_secs(secs));
    let peak = mid.call::<peak_rss_kib>(())?;
    sig(dst_pid, libc::SIGCONT);
    sprayed.get(WAIT)?;
    emit(
        "flood_mid_rss_growth",
        peak.saturating_sub(before) as f64 / 1024.0,
        "MiB",
        &format!(", \"note\": \"1000 x 1 MiB at a stopped sibling, {secs} s\""),
    );
    Ok(())
}

/// The bulk stream from a context `hops` links away to the master.
fn bulk_stream(router: &Router, hops: usize, bytes: u64) -> mitogen::Result<()> {
    let mut ctx = router.local().remote_name("hop1").connect()?;
    for i in 2..=hops {
        ctx = router
            .local()
            .remote_name(format!("hop{i}"))
            .via(&ctx)
            .connect()?;
    }
    let mut rx = BulkReceiver::open(router, mitogen::bulk::DEFAULT_WINDOW, Some(&ctx));
    let t = Instant::now();
    let sending = ctx.call_async::<produce>((rx.target(), bytes))?;
    let mut got = 0u64;
    while let Some(chunk) = rx.read_chunk(WAIT)? {
        got += chunk.len() as u64;
        rx.recycle(chunk);
    }
    sending.get(WAIT)?;
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(got, bytes);
    emit(
        &format!("bulk_stream_{hops}hop"),
        bytes as f64 / (1 << 20) as f64 / secs,
        "MiB/s",
        "",
    );
    Ok(())
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let bytes: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let only_bulk = std::env::args().any(|a| a == "bulk");
    if !only_bulk {
        broker_latency(&router, if quick { 2 } else { 4 })?;
        flood_memory(&router, if quick { 2 } else { 4 })?;
    }
    bulk_stream(&router, 1, bytes)?;
    bulk_stream(&router, 3, bytes)?;
    Ok(())
}
