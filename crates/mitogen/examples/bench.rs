//! The mitogen-rs half of the benchmark suite (`bench/run` runs it beside
//! Python Mitogen and the raw references). Prints one JSON object per line:
//! `{"scenario": .., "impl": "rust", "value": .., "unit": ..}`.
//!
//! `--quick` shrinks every count for a smoke run.

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

#[mitogen::remote]
fn source(n: u64) -> ByteBuf {
    ByteBuf::from(vec![0x5au8; n as usize])
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
    let child_cpu = opt("--child-cpu");
    let (n_start, n_rtt, n_pipe, bulk, n_ctx) = if quick {
        (3, 200, 1000, 8 << 20, 10)
    } else {
        (10, 2000, 10_000, 64 << 20, 50)
    };
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

    if want("bulk") {
        let data = ByteBuf::from(vec![0xa5u8; bulk]);
        let t = Instant::now();
        let n = ctx.call::<sink>((data,))?;
        assert_eq!(n as usize, bulk);
        let mib = bulk as f64 / (1 << 20) as f64;
        emit(
            "bulk_to_child",
            mib / t.elapsed().as_secs_f64(),
            "MiB/s",
            "",
        );
        let t = Instant::now();
        let back = ctx.call::<source>((bulk as u64,))?;
        assert_eq!(back.len(), bulk);
        emit(
            "bulk_from_child",
            mib / t.elapsed().as_secs_f64(),
            "MiB/s",
            "",
        );
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

    if want("idle_child_rss") {
        let idle = router.local().connect()?;
        let p = idle.call::<pid>(())?;
        std::thread::sleep(Duration::from_millis(200));
        emit("idle_child_rss", rss_mib(p), "MiB", "");
    }
    Ok(())
}
