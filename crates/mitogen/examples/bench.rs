//! The mitogen-rs half of the benchmark suite (`bench/run` runs it beside
//! Python Mitogen and the raw references). Prints one JSON object per line:
//! `{"scenario": .., "impl": "rust", "value": .., "unit": ..}`.
//!
//! `--quick` shrinks every count for a smoke run; `--only a,b` picks
//! scenarios (`hop_rtt`, `start_flat` and `start_tree` name whole groups);
//! `--child-cpu N` runs the call_rtt/pipelined/bulk child on CPU N.
//!
//! `bulk_to_child` / `bulk_from_child` are the median of 5 calls moving
//! one 64 MiB byte string (in both modes: the raw pipe it is
//! compared with moves 64 MiB too) as an argument / a
//! result; the child builds the result before the clock starts (`prepare`,
//! then the timed `take`), as the raw reference's writer has its bytes.
//!
//! `calls_while_busy` (no Python equivalent: Python Mitogen runs every
//! call on the child's main thread) is the rate of ordinary calls while a
//! `#[mitogen::remote(concurrent)]` call waits on the child's pool for the
//! whole measurement, beside the rate without it (`idle`, `ratio`).
//!
//! How cost grows: `hop_rtt_{1,3,5,10}` time a no-op call to the node at
//! that depth of one chain of 10 contexts, each started via the previous
//! (plus `per_hop_us`); `start_flat_N` starts N contexts from the master and
//! `start_tree_N` starts ceil(sqrt(N)) from the master and the rest via those,
//! round-robin. Every start scenario shuts its contexts down and waits until
//! their processes have gone before the next one begins.

use mitogen::{ByteBuf, Context, Router};
use std::time::{Duration, Instant};

#[mitogen::remote]
fn noop() {}

#[mitogen::remote]
fn pid() -> u32 {
    std::process::id()
}

#[mitogen::remote]
fn sink(data: ByteBuf) -> u64 {
    data.len() as u64
}

/// A result built by `prepare`, for `take` to return.
static PREPARED: std::sync::Mutex<Option<ByteBuf>> = std::sync::Mutex::new(None);

/// Builds the `n`-byte result of the next `take` (outside the timed call:
/// the raw reference's writer has its bytes ready too).
#[mitogen::remote]
fn prepare(n: u64) {
    let mut p = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    *p = Some(ByteBuf::from(vec![0x5au8; n as usize]));
}

#[mitogen::remote]
fn take() -> ByteBuf {
    let mut p = PREPARED.lock().unwrap_or_else(|e| e.into_inner());
    p.take().unwrap_or_default()
}

/// Set by `release`, waited for by `hold` (the calls_while_busy scenario).
static RELEASED: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
static RELEASE: std::sync::Condvar = std::sync::Condvar::new();

/// A long concurrent call: waits until `release` (at most `limit_ms`);
/// `true` if released.
#[mitogen::remote(concurrent)]
fn hold(limit_ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(limit_ms);
    let mut released = RELEASED.lock().unwrap_or_else(|e| e.into_inner());
    while !*released {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        released = RELEASE
            .wait_timeout(released, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    *released = false;
    true
}

#[mitogen::remote]
fn release() {
    *RELEASED.lock().unwrap_or_else(|e| e.into_inner()) = true;
    RELEASE.notify_all();
}

/// Sequential no-op calls per second.
fn call_rate(ctx: &Context, n: usize) -> mitogen::Result<f64> {
    let t = Instant::now();
    for _ in 0..n {
        ctx.call::<noop>(())?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

/// Ordinary calls per second while a concurrent call runs for the whole
/// measurement, beside the rate with nothing else running. The two are
/// measured in alternating rounds (medians reported), so that drift in the
/// machine's load does not land on one side only.
fn calls_while_busy(ctx: &Context, n: usize) -> mitogen::Result<()> {
    const ROUNDS: usize = 5;
    let per = (n / ROUNDS).max(1);
    call_rate(ctx, per)?;
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        idle.push(call_rate(ctx, per)?);
        let long = ctx.call_async::<hold>((120_000,))?;
        busy.push(call_rate(ctx, per)?);
        assert!(!long.ready(), "the long call ended during the measurement");
        ctx.call::<release>(())?;
        assert!(
            long.get(Some(Duration::from_secs(60)))?,
            "hold was not released"
        );
    }
    let (idle, busy) = (median(&mut idle), median(&mut busy));
    emit(
        "calls_while_busy",
        busy,
        "calls/s",
        &format!(
            ", \"idle\": {idle:.3}, \"ratio\": {:.3}, \"n\": {n}, \"note\": \"a concurrent call waits meanwhile\"",
            busy / idle
        ),
    );
    Ok(())
}

/// The child's inbox for the stream-to-child scenarios.
static INBOX: std::sync::Mutex<Option<mitogen::Receiver>> = std::sync::Mutex::new(None);

#[mitogen::remote]
fn open_inbox(router: &Router) -> mitogen::Sender {
    let rx = mitogen::Receiver::open(router);
    let tx = rx.to_sender();
    *INBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    tx
}

/// Takes `n` messages from the inbox; returns the payload bytes seen.
#[mitogen::remote]
fn drain_inbox(n: u64) -> mitogen::Result<u64> {
    let guard = INBOX.lock().unwrap_or_else(|e| e.into_inner());
    let Some(rx) = guard.as_ref() else {
        return Err(mitogen::ChannelError::new("no inbox").into());
    };
    let mut bytes = 0;
    for _ in 0..n {
        bytes += rx.get(Some(Duration::from_secs(60)))?.data.len() as u64;
    }
    Ok(bytes)
}

/// Sends `n` small values (a u64 each) through `tx`.
#[mitogen::remote]
fn emit_small(tx: mitogen::Sender, n: u64) -> mitogen::Result<()> {
    for i in 0..n {
        tx.send(&i)?;
    }
    Ok(())
}

/// Sends `n` raw chunks of `size` bytes through `tx`.
#[mitogen::remote]
fn emit_chunks(tx: mitogen::Sender, size: usize, n: u64) -> mitogen::Result<()> {
    let chunk = vec![0x5au8; size];
    for _ in 0..n {
        tx.send_bytes(chunk.clone())?;
    }
    Ok(())
}

/// Messages/s and MiB/s through a Sender to a Receiver, each way.
fn streams(router: &Router, ctx: &Context, n_small: u64, bulk: usize) -> mitogen::Result<()> {
    const CHUNK: usize = 64 << 10;
    let n_chunks = (bulk / CHUNK) as u64;
    let mib = (n_chunks as usize * CHUNK) as f64 / (1 << 20) as f64;
    let wait = Some(Duration::from_secs(120));
    let tx = ctx.call::<open_inbox>(())?;
    let t = Instant::now();
    for i in 0..n_small {
        tx.send(&i)?;
    }
    ctx.call::<drain_inbox>((n_small,))?;
    let note = format!(", \"n\": {n_small}");
    emit(
        "stream_msgs_to_child",
        n_small as f64 / t.elapsed().as_secs_f64(),
        "msgs/s",
        &note,
    );
    let t = Instant::now();
    let chunk = vec![0x5au8; CHUNK];
    for _ in 0..n_chunks {
        tx.send_bytes(chunk.clone())?;
    }
    let got = ctx.call::<drain_inbox>((n_chunks,))?;
    assert_eq!(got, n_chunks * CHUNK as u64);
    emit(
        "stream_mib_to_child",
        mib / t.elapsed().as_secs_f64(),
        "MiB/s",
        ", \"chunk\": 65536",
    );

    let rx = mitogen::Receiver::open(router);
    let t = Instant::now();
    ctx.call_no_reply::<emit_small>((rx.to_sender(), n_small))?;
    for _ in 0..n_small {
        rx.get(wait)?;
    }
    emit(
        "stream_msgs_from_child",
        n_small as f64 / t.elapsed().as_secs_f64(),
        "msgs/s",
        &note,
    );
    let t = Instant::now();
    ctx.call_no_reply::<emit_chunks>((rx.to_sender(), CHUNK, n_chunks))?;
    let mut got = 0;
    for _ in 0..n_chunks {
        got += rx.get(wait)?.data.len();
    }
    assert_eq!(got, n_chunks as usize * CHUNK);
    emit(
        "stream_mib_from_child",
        mib / t.elapsed().as_secs_f64(),
        "MiB/s",
        ", \"chunk\": 65536",
    );
    Ok(())
}

fn emit(scenario: &str, value: f64, unit: &str, extra: &str) {
    println!("{{\"scenario\": \"{scenario}\", \"impl\": \"rust\", \"value\": {value:.3}, \"unit\": \"{unit}\"{extra}}}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(f64::NAN, |k| k / 1024.0)
}

fn start_first_call(router: &Router, n: usize, fork: bool) -> mitogen::Result<f64> {
    let mut times = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let ctx = if fork {
            router.fork().connect()?
        } else {
            router.local().connect()?
        };
        ctx.call::<noop>(())?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        ctx.shutdown(true, Some(Duration::from_secs(10)))?;
    }
    Ok(median(&mut times))
}

fn rtt(ctx: &Context, n: usize) -> mitogen::Result<(f64, f64)> {
    for _ in 0..n / 10 {
        ctx.call::<noop>(())?;
    }
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ctx.call::<noop>(())?;
        v.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok((median(&mut v), pct(&mut v, 0.99)))
}

/// Depths of the hop chain that `hop_rtt_*` measure.
const HOPS: [usize; 4] = [1, 3, 5, 10];

/// Raises the soft open-file limit to the hard one (at most 65536): each
/// directly started context holds a few fds in the master.
fn raise_nofile() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    let want = hard.min(65536);
    if soft < want && setrlimit(Resource::RLIMIT_NOFILE, want, hard).is_ok() {
        return (want, hard);
    }
    (soft, hard)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Number of live processes descended from this one.
fn descendants() -> usize {
    let me = std::process::id();
    let mut parent = std::collections::HashMap::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let after = stat.rfind(')').map_or("", |i| &stat[i + 1..]);
        let mut f = after.split_whitespace();
        // Zombies are gone as far as resources go; their parent reaps them.
        if f.next() == Some("Z") {
            continue;
        }
        if let Some(pp) = f.next().and_then(|p| p.parse::<u32>().ok()) {
            parent.insert(pid, pp);
        }
    }
    parent
        .keys()
        .filter(|&&p| {
            let mut p = p;
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(&pp) if pp == me => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .count()
}

/// Shuts `leaves` down without waiting, then `roots` waiting, then waits
/// (at most 20 s) until no more than `baseline` descendants remain. Returns
/// how many extra processes were still alive at the end.
fn cleanup(leaves: &[Context], roots: &[Context], baseline: usize) -> usize {
    for c in leaves {
        let _ = c.shutdown(false, None);
    }
    for c in roots {
        let _ = c.shutdown(false, None);
    }
    for c in roots {
        let _ = c.shutdown(true, Some(Duration::from_secs(10)));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = descendants();
        if n <= baseline || Instant::now() > deadline {
            return n.saturating_sub(baseline);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A chain of `depth` contexts, each started via the one before.
fn hop_chain(router: &Router, depth: usize) -> mitogen::Result<Vec<Context>> {
    let mut chain: Vec<Context> = Vec::with_capacity(depth);
    for i in 1..=depth {
        let b = router.local().remote_name(format!("hop{i}"));
        let next = match chain.last() {
            Some(prev) => b.via(prev).connect()?,
            None => b.connect()?,
        };
        chain.push(next);
    }
    Ok(chain)
}

/// Starts `n` contexts, then calls each once; returns the seconds taken.
/// Flat: all from the master. Tree: ceil(sqrt(n)) from the master, the rest
/// via those, round-robin. What it started is left in `first` (started by
/// the master) and `rest`, also on failure, for [`cleanup`].
fn start_many(
    router: &Router,
    n: usize,
    tree: bool,
    first: &mut Vec<Context>,
    rest: &mut Vec<Context>,
) -> mitogen::Result<f64> {
    let k = if tree {
        (1..=n).find(|k| k * k >= n).unwrap_or(1)
    } else {
        n
    };
    let t = Instant::now();
    for _ in 0..k {
        first.push(router.local().connect()?);
    }
    for i in 0..n - k {
        let via = &first[i % k];
        rest.push(router.local().via(via).connect()?);
    }
    for c in first.iter().chain(rest.iter()) {
        c.call::<noop>(())?;
    }
    Ok(t.elapsed().as_secs_f64())
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let only: Vec<String> = opt("--only")
        .map(|s| s.split(',').map(String::from).collect())
        .unwrap_or_default();
    let want = |s: &str| only.is_empty() || only.iter().any(|o| o == s);
    // A member of a group (`hop_rtt_3` of `hop_rtt`): picked by its own name
    // always; by the group's or by default, only if `default` (the sizes
    // --quick keeps).
    let want_in = |group: &str, name: &str, default: bool| {
        only.iter().any(|o| o == name)
            || (default && (only.is_empty() || only.iter().any(|o| o == group)))
    };
    let child_cpu = opt("--child-cpu");
    let (n_start, n_rtt, n_pipe, bulk, n_ctx) = if quick {
        (3, 200, 1000, 64 << 20, 10)
    } else {
        (10, 2000, 100_000, 64 << 20, 50)
    };
    let start_sizes: &[usize] = if quick {
        &[10, 50]
    } else {
        &[10, 50, 100, 200]
    };
    let (nofile, nofile_hard) = raise_nofile();
    // Warm the agent cache so start figures measure the cached path.
    router.local().connect()?.shutdown(true, None)?;

    if want("local_start_first_call") {
        let v = start_first_call(&router, n_start, false)?;
        emit(
            "local_start_first_call",
            v,
            "ms",
            ", \"note\": \"agent cached\"",
        );
    }
    if want("fork_start_first_call") {
        let v = start_first_call(&router, n_start, true)?;
        emit("fork_start_first_call", v, "ms", "");
    }

    let ctx = match &child_cpu {
        // The child alone on another CPU: the "split" placement.
        Some(cpu) => router
            .local()
            .agent_command(["taskset", "-c", cpu.as_str()])
            .connect()?,
        None => router.local().connect()?,
    };
    if want("call_rtt") {
        let (med, p99) = rtt(&ctx, n_rtt)?;
        emit("call_rtt", med, "us", &format!(", \"p99\": {p99:.3}"));
    }
    if want("pipelined_calls") {
        let t = Instant::now();
        let pending: Vec<_> = (0..n_pipe)
            .map(|_| ctx.call_async::<noop>(()))
            .collect::<Result<_, _>>()?;
        for p in pending {
            p.get(Some(Duration::from_secs(60)))?;
        }
        emit(
            "pipelined_calls",
            n_pipe as f64 / t.elapsed().as_secs_f64(),
            "calls/s",
            "",
        );
    }

    if want("calls_while_busy") {
        calls_while_busy(&ctx, n_rtt * 5)?;
    }

    if want("bulk") {
        // Median of a few: one 64 MiB transfer is a few tens of ms, at
        // the mercy of one hiccup.
        let reps = 5;
        let mib = bulk as f64 / (1 << 20) as f64;
        let data = ByteBuf::from(vec![0xa5u8; bulk]);
        let mut rates = Vec::new();
        for _ in 0..reps {
            let arg = data.clone();
            let t = Instant::now();
            let n = ctx.call::<sink>((arg,))?;
            rates.push(mib / t.elapsed().as_secs_f64());
            assert_eq!(n as usize, bulk);
        }
        drop(data);
        emit("bulk_to_child", median(&mut rates), "MiB/s", "");
        rates.clear();
        for _ in 0..reps {
            ctx.call::<prepare>((bulk as u64,))?;
            let t = Instant::now();
            let back = ctx.call::<take>(())?;
            rates.push(mib / t.elapsed().as_secs_f64());
            assert_eq!(back.len(), bulk);
        }
        emit("bulk_from_child", median(&mut rates), "MiB/s", "");
    }

    if want("streams") {
        let n_small = if quick { 10_000 } else { 100_000 };
        streams(&router, &ctx, n_small, bulk)?;
    }

    if want("fifty_contexts") {
        let t = Instant::now();
        let many: Vec<Context> = (0..n_ctx)
            .map(|_| router.local().connect())
            .collect::<Result<_, _>>()?;
        for c in &many {
            c.call::<noop>(())?;
        }
        emit(
            "fifty_contexts",
            t.elapsed().as_secs_f64(),
            "s",
            &format!(", \"note\": \"{n_ctx} contexts, sequential start\""),
        );
        for c in many {
            c.shutdown(false, None)?;
        }
    }

    let hops: Vec<usize> = HOPS
        .into_iter()
        .filter(|d| want_in("hop_rtt", &format!("hop_rtt_{d}"), true))
        .collect();
    if let Some(&depth) = hops.iter().max() {
        let baseline = descendants();
        let t = Instant::now();
        let chain = hop_chain(&router, depth)?;
        let built = t.elapsed().as_secs_f64();
        let mut med = std::collections::HashMap::new();
        for &d in &hops {
            let (m, p99) = rtt(&chain[d - 1], n_rtt)?;
            med.insert(d, m);
            emit(
                &format!("hop_rtt_{d}"),
                m,
                "us",
                &format!(", \"p99\": {p99:.3}, \"n\": {n_rtt}, \"chain_start_s\": {built:.3}"),
            );
        }
        if let (Some(a), Some(b)) = (med.get(&1), med.get(&10)) {
            emit(
                "per_hop_us",
                (b - a) / 9.0,
                "us",
                ", \"note\": \"(hop_rtt_10 - hop_rtt_1) / 9\"",
            );
        }
        let left = cleanup(&[], &chain[..1], baseline);
        if left > 0 {
            eprintln!("bench: {left} hop-chain processes outlived their shutdown");
        }
    }

    for kind in ["flat", "tree"] {
        let group = format!("start_{kind}");
        for n in [10, 50, 100, 200] {
            let name = format!("{group}_{n}");
            if !want_in(&group, &name, start_sizes.contains(&n)) {
                continue;
            }
            let (baseline, fds0) = (descendants(), open_fds());
            let (mut first, mut rest) = (Vec::new(), Vec::new());
            let result = start_many(&router, n, kind == "tree", &mut first, &mut rest);
            let fds = open_fds().saturating_sub(fds0);
            let left = cleanup(&rest, &first, baseline);
            let common = format!(
                ", \"n\": {n}, \"first_level\": {}, \"master_fds\": {fds}, \"nofile\": {nofile}, \"nofile_hard\": {nofile_hard}, \"left_over\": {left}",
                first.len()
            );
            match result {
                Ok(secs) => emit(
                    &name,
                    secs,
                    "s",
                    &format!("{common}, \"per_ctx_ms\": {:.3}", secs * 1e3 / n as f64),
                ),
                // Report and go on: a limit hit at 200 should not hide the rest.
                Err(e) => {
                    let note = format!("failed after {} contexts: {e}", first.len() + rest.len());
                    println!(
                        "{{\"scenario\": \"{name}\", \"impl\": \"rust\", \"value\": null, \"unit\": \"s\"{common}, \"note\": {note:?}}}"
                    );
                }
            }
        }
    }

    if want("idle_child_rss") {
        let idle = router.local().connect()?;
        let p = idle.call::<pid>(())?;
        std::thread::sleep(Duration::from_millis(200));
        emit("idle_child_rss", rss_mib(p), "MiB", "");
    }
    Ok(())
}
