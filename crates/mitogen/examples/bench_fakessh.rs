//! The fakessh half of the benchmark suite (`bench/run` runs it when the
//! test bed of `scripts/testbed/setup.sh` is up): real rsync of a tree to
//! the test bed's first host through `fakessh` over an ssh context,
//! beside the same rsync over plain ssh with the same key and options;
//! (the context without ssh compression, like the plain ssh), and one
//! `ssh host true` through fakessh (the per-invocation cost:
//! this program started as the shim, a session, a remote `sh -c true`)
//! beside bare ssh.
//!
//! `bench_fakessh ENV_FILE [--quick]`; prints JSON lines like `bench`.

use mitogen::Router;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn emit(scenario: &str, imp: &str, value: f64, unit: &str, extra: &str) {
    println!("{{\"scenario\": \"{scenario}\", \"impl\": \"{imp}\", \"value\": {value:.3}, \"unit\": \"{unit}\"{extra}}}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn sh(script: &str) -> mitogen::Result<()> {
    let st = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .status()
        .map_err(|e| mitogen::StreamError::new(format!("{script}: {e}")))?;
    if !st.success() {
        return Err(mitogen::StreamError::new(format!("{script}: {st}")).into());
    }
    Ok(())
}

/// `n` files of 64 KiB in 10 directories and one file of `big` MiB.
fn make_tree(root: &Path, n: usize, big: usize) -> mitogen::Result<u64> {
    let r = root.display();
    sh(&format!(
        "rm -rf '{r}' && mkdir -p '{r}' && head -c {} /dev/urandom > '{r}/big.bin' && \
         i=0; while [ $i -lt {n} ]; do d='{r}/d'$((i % 10)); mkdir -p $d; \
         head -c 65536 /dev/urandom > $d/f$i; i=$((i+1)); done",
        big << 20
    ))?;
    Ok(((n as u64) << 16) + ((big as u64) << 20))
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let Some(env) = args.get(1).filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: bench_fakessh ENV_FILE [--quick]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(env)
        .map_err(|e| mitogen::StreamError::new(format!("{env}: {e}")))?;
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |k: &str| vars.get(k).copied().unwrap_or_default().to_string();
    let (host, key, kh) = (var("TB_HOST1"), var("TB_KEY"), var("TB_KNOWN_HOSTS"));
    let (runs, n_true, files, big) = if quick {
        (3, 10, 100, 16)
    } else {
        (7, 40, 400, 64)
    };
    let ssh_opts = format!(
        "-o BatchMode=yes -o UserKnownHostsFile={kh} -o GlobalKnownHostsFile=/dev/null -i {key} -l root"
    );
    let ctx = router
        .ssh(&host)
        .username("root")
        .identity_file(&key)
        // Like the plain rsync beside it (ssh's default): compressing
        // random data only costs CPU.
        .compression(false)
        .ssh_args([
            "-o",
            &format!("UserKnownHostsFile={kh}"),
            "-o",
            "GlobalKnownHostsFile=/dev/null",
        ])
        .connect()?;

    let work = std::env::temp_dir().join(format!("mitogen-bench-fakessh-{}", std::process::id()));
    let src = work.join("src");
    let bytes = make_tree(&src, files, big)?;
    let mib = bytes as f64 / (1u64 << 20) as f64;
    let s = src.display();
    let dst_fake = format!("/tmp/mitogen-bench-fakessh-{}-fake", std::process::id());
    let dst_real = format!("/tmp/mitogen-bench-fakessh-{}-real", std::process::id());
    // Interleaved, each from an empty destination.
    let (mut fake, mut real) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        sh(&format!("rm -rf {dst_fake} {dst_real}"))?;
        let t = Instant::now();
        let st = mitogen::fakessh::run(
            &ctx,
            &["rsync", "-a", &format!("{s}/"), &format!("h:{dst_fake}/")],
            Some(Duration::from_secs(600)),
        )?;
        assert!(st.success(), "rsync through fakessh: {st}");
        fake.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        sh(&format!(
            "rsync -a -e 'ssh {ssh_opts}' '{s}/' '{host}:{dst_real}/'"
        ))?;
        real.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (f, r) = (median(&mut fake), median(&mut real));
    let extra = |ms: f64| {
        format!(
            ", \"n\": {runs}, \"mib\": {mib:.1}, \"mib_per_s\": {:.1}",
            mib / (ms / 1e3)
        )
    };
    emit("rsync_ssh_tree", "raw", r, "ms", &extra(r));
    emit("fakessh_rsync_tree", "rust", f, "ms", &extra(f));

    // Per invocation: `ssh h true`, through fakessh (many in one tool run,
    // so the run's own set-up is not counted) and bare.
    let t = Instant::now();
    let st = mitogen::fakessh::run(
        &ctx,
        &[
            "sh",
            "-c",
            &format!("i=0; while [ $i -lt {n_true} ]; do ssh h true || exit 1; i=$((i+1)); done"),
        ],
        Some(Duration::from_secs(600)),
    )?;
    assert!(st.success(), "ssh h true through fakessh: {st}");
    let per = t.elapsed().as_secs_f64() * 1e3 / n_true as f64;
    let t = Instant::now();
    sh(&format!(
        "i=0; while [ $i -lt {n_true} ]; do ssh {ssh_opts} {host} true || exit 1; i=$((i+1)); done"
    ))?;
    let bare = t.elapsed().as_secs_f64() * 1e3 / n_true as f64;
    emit(
        "ssh_true_each",
        "raw",
        bare,
        "ms",
        &format!(", \"n\": {n_true}"),
    );
    emit(
        "fakessh_true_each",
        "rust",
        per,
        "ms",
        &format!(", \"n\": {n_true}"),
    );

    sh(&format!(
        "rm -rf {dst_fake} {dst_real} '{}'",
        work.display()
    ))?;
    Ok(())
}
