//! The ssh half of the benchmark suite (`bench/run` runs it when the test
//! bed of `scripts/testbed/setup.sh` is up): start → first call over ssh
//! with the agent cached and on first upload, a no-op round trip over ssh,
//! and, as the reference, bare `ssh host true` with the very same ssh
//! options mitogen-rs uses (so the difference is mitogen-rs's own cost).
//!
//! `bench_ssh ENV_FILE [--quick]`; prints JSON lines like `bench`.

use mitogen::Router;
use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

#[mitogen::remote]
fn noop() {}

#[mitogen::remote]
fn exe() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| {
            p.to_string_lossy()
                .trim_end_matches(" (deleted)")
                .to_string()
        })
        .unwrap_or_default()
}

fn emit(scenario: &str, imp: &str, value: f64, unit: &str, extra: &str) {
    println!("{{\"scenario\": \"{scenario}\", \"impl\": \"{imp}\", \"value\": {value:.3}, \"unit\": \"{unit}\"{extra}}}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let Some(env) = args.get(1).filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: bench_ssh ENV_FILE [--quick]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(env)
        .map_err(|e| mitogen::StreamError::new(format!("{env}: {e}")))?;
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |k: &str| vars.get(k).copied().unwrap_or_default().to_string();
    let (host, key, kh) = (var("TB_HOST1"), var("TB_KEY"), var("TB_KNOWN_HOSTS"));
    let (n_start, n_upload, n_rtt) = if quick { (5, 2, 200) } else { (15, 5, 2000) };
    let ssh = |user: &str| {
        router
            .ssh(&host)
            .username(user)
            .identity_file(&key)
            .ssh_args([
                "-o",
                &format!("UserKnownHostsFile={kh}"),
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ])
    };

    // Bare ssh, with mitogen-rs's own options (BatchMode, keepalives, ...),
    // interleaved with cached starts so load changes hit both alike.
    let bare_ssh = || -> mitogen::Result<f64> {
        let t = Instant::now();
        let st = Command::new("ssh")
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "Compression=no",
                "-o",
                "ServerAliveInterval=15",
                "-o",
                "ServerAliveCountMax=3",
                "-o",
                "ConnectTimeout=30",
                "-o",
                "StrictHostKeyChecking=yes",
                "-l",
                "root",
                "-i",
                &key,
                "-o",
                &format!("UserKnownHostsFile={kh}"),
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                &host,
                "true",
            ])
            .status()
            .map_err(|e| mitogen::StreamError::new(format!("ssh: {e}")))?;
        if !st.success() {
            return Err(mitogen::StreamError::new("bare ssh failed").into());
        }
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    ssh("root")
        .connect()?
        .shutdown(true, Some(Duration::from_secs(10)))?;
    let (mut bare, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..n_start {
        bare.push(bare_ssh()?);
        let t = Instant::now();
        let ctx = ssh("root").connect()?;
        ctx.call::<noop>(())?;
        cached.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(ctx.agent_upload_bytes(), Some(0));
        ctx.shutdown(true, Some(Duration::from_secs(10)))?;
    }
    let (b, c) = (median(&mut bare), median(&mut cached));
    emit(
        "ssh_bare_true",
        "raw",
        b,
        "ms",
        &format!(", \"n\": {n_start}"),
    );
    emit(
        "ssh_start_cached",
        "rust",
        c,
        "ms",
        &format!(", \"n\": {n_start}, \"over_bare_ms\": {:.3}", c - b),
    );

    // First upload: the same user and host, the cached agent removed
    // before each start (the target is this machine: a local unlink).
    let cached_exe = {
        let ctx = ssh("root").connect()?;
        let p = ctx.call::<exe>(())?;
        ctx.shutdown(true, Some(Duration::from_secs(10)))?;
        p
    };
    let size = std::fs::metadata("/proc/self/exe")
        .map(|m| m.len())
        .unwrap_or(0);
    let mut upload = Vec::new();
    for _ in 0..n_upload {
        let _ = std::fs::remove_file(&cached_exe);
        let t = Instant::now();
        let ctx = ssh("root").connect()?;
        ctx.call::<noop>(())?;
        upload.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(ctx.agent_upload_bytes(), Some(size));
        ctx.shutdown(true, Some(Duration::from_secs(10)))?;
    }
    emit(
        "ssh_start_upload",
        "rust",
        median(&mut upload),
        "ms",
        &format!(", \"n\": {n_upload}, \"agent_bytes\": {size}"),
    );

    let ctx = ssh("root").connect()?;
    for _ in 0..n_rtt / 10 {
        ctx.call::<noop>(())?;
    }
    let mut rtt = Vec::new();
    for _ in 0..n_rtt {
        let t = Instant::now();
        ctx.call::<noop>(())?;
        rtt.push(t.elapsed().as_secs_f64() * 1e6);
    }
    emit(
        "ssh_call_rtt",
        "rust",
        median(&mut rtt),
        "us",
        &format!(", \"n\": {n_rtt}"),
    );
    Ok(())
}
