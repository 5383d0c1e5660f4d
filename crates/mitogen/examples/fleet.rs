//! A fleet in a few lines: ssh to each host given on the command line,
//! become root with sudo where asked, run a function everywhere at once,
//! and take the answers as they arrive — a lost host is an answer too.
//!
//! ```text
//! cargo run --release -p mitogen --example fleet -- [--sudo] [user@]host ...
//! ```
//!
//! With no hosts, it uses the project's test bed if it is up
//! (`scripts/testbed/setup.sh`, as root).

use mitogen::{Context, Receiver, Router, Select, Sender};
use std::time::{Duration, Instant};

/// What each host reports.
#[mitogen::remote]
fn facts() -> std::io::Result<(String, String, u64)> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    let load = std::fs::read_to_string("/proc/loadavg")?;
    let mem = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let load = load.split_whitespace().next().unwrap_or("?").to_string();
    Ok((host.trim().to_string(), load, mem))
}

/// Streams the first `n` lines of a file back through `out`.
#[mitogen::remote]
fn head(path: String, n: usize, out: Sender) -> mitogen::Result<()> {
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("{path}: {e}"));
    for line in text.lines().take(n) {
        out.send(&line)?;
    }
    out.close()
}

fn testbed_hosts() -> Vec<String> {
    let env = std::fs::read_to_string("/var/lib/mitogen-testbed/env").unwrap_or_default();
    env.lines()
        .filter_map(|l| l.strip_prefix("TB_HOST").and_then(|l| l.split_once('=')))
        .map(|(_, v)| format!("root@{v}"))
        .collect()
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let sudo = args.iter().any(|a| a == "--sudo");
    args.retain(|a| a != "--sudo");
    let mut targets = args;
    let mut ssh_args = Vec::new();
    if targets.is_empty() {
        targets = testbed_hosts();
        ssh_args = vec![
            "-F".to_string(),
            "/var/lib/mitogen-testbed/ssh_config".to_string(),
        ];
    }
    if targets.is_empty() {
        eprintln!("usage: fleet [--sudo] [user@]host ... (or bring the test bed up)");
        std::process::exit(2);
    }

    // Connect to every host at once: a router is shared by any threads.
    let t = Instant::now();
    let connect = |target: &String| -> mitogen::Result<Context> {
        let (user, host) = match target.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, target.as_str()),
        };
        let mut b = router.ssh(host).ssh_args(ssh_args.clone());
        if let Some(u) = user {
            b = b.username(u);
        }
        let ctx = b.connect()?;
        if sudo {
            return router.sudo().via(&ctx).connect();
        }
        Ok(ctx)
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = targets
            .iter()
            .map(|t| s.spawn(move || (t, connect(t))))
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let mut hosts: Vec<Context> = Vec::new();
    for (target, r) in results {
        match r {
            Ok(ctx) => hosts.push(ctx),
            Err(e) => eprintln!("{target}: {e}"),
        }
    }
    println!("{} hosts up in {:.0?}", hosts.len(), t.elapsed());

    // Fan out, fan in: one call per host, answers in arrival order.
    let calls = hosts
        .iter()
        .map(|h| h.call_async::<facts>(()))
        .collect::<mitogen::Result<Vec<_>>>()?;
    let select = Select::with(&calls, true)?;
    while let Ok(ev) = select.get_event(Some(Duration::from_secs(30))) {
        let i = calls.iter().position(|c| ev.is_from(c)).unwrap_or(0);
        match ev.data.decode::<(String, String, u64)>() {
            Ok((host, load, mem)) => println!(
                "{:<28} {host:<10} load {load:<5} {:>6} MiB free",
                hosts[i].name(),
                mem / 1024
            ),
            Err(e) => println!("{:<28} failed: {e}", hosts[i].name()),
        }
    }

    // Streaming: every host sends lines through one receiver.
    let rx = Receiver::open(&router);
    for h in &hosts {
        h.call_no_reply::<head>(("/etc/os-release".into(), 1, rx.to_sender()))?;
    }
    // Each host closes its sender when done: count the closes.
    let mut closed = 0;
    while closed < hosts.len() {
        let m = rx.get_message(Some(Duration::from_secs(30)))?;
        if m.is_dead() {
            closed += 1;
        } else {
            println!(
                "{:<28} {}",
                name_of(&hosts, m.src_id),
                m.decode::<String>()?
            );
        }
    }
    Ok(())
}

fn name_of(hosts: &[Context], id: u32) -> &str {
    hosts
        .iter()
        .find(|h| h.context_id() == id)
        .map(Context::name)
        .unwrap_or("?")
}
