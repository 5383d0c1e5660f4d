//! Raw IPC reference figures for the mitogen-rs benchmarks: what two plain
//! processes achieve over a Unix socketpair and a pipe, with no framing,
//! serialisation or event loop. Prints one JSON object per line:
//! `{"scenario": ..., "impl": "raw", "value": ..., "unit": ...}`.
//!
//! Usage: raw-ref [--quick] [--child-cpu N]
//!
//! The child is made with fork(2) (the program is single-threaded, so that
//! is safe) and, with `--child-cpu N`, pins itself to CPU N. Pin the parent
//! from outside, e.g. `taskset -c 0 raw-ref --child-cpu 1`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::exit;
use std::time::Instant;

const MIB: usize = 1024 * 1024;
const MSG_LEN: usize = 32;
const CHUNK: usize = 256 * 1024;

struct Config {
    warmup: usize,
    iters: usize,
    bulk_bytes: usize,
    child_cpu: Option<usize>,
}

fn main() {
    let cfg = parse_args();
    socketpair_rtt(&cfg).expect("socketpair_rtt");
    pipe_throughput(&cfg, false).expect("pipe_throughput");
    pipe_throughput(&cfg, true).expect("pipe_into_memory");
}

fn parse_args() -> Config {
    let mut cfg = Config { warmup: 200, iters: 2000, bulk_bytes: 64 * MIB, child_cpu: None };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => {
                // The pipe keeps its 64 MiB: the bulk figures it is the
                // reference for move 64 MiB or more in both modes, and a
                // smaller transfer is faster (8 MiB: 2.6x here).
                cfg.warmup = 20;
                cfg.iters = 200;
            }
            "--child-cpu" => {
                let n = args.next().and_then(|v| v.parse().ok());
                cfg.child_cpu = Some(n.unwrap_or_else(|| usage("--child-cpu needs a CPU number")));
            }
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    cfg
}

fn usage(err: &str) -> ! {
    if !err.is_empty() {
        eprintln!("raw-ref: {err}");
    }
    eprintln!("usage: raw-ref [--quick] [--child-cpu N]");
    exit(if err.is_empty() { 0 } else { 2 })
}

/// 32-byte ping-pong over a SOCK_STREAM socketpair; per-iteration RTT in µs.
fn socketpair_rtt(cfg: &Config) -> io::Result<()> {
    let (mut ours, theirs) = UnixStream::pair()?;
    let child = fork_child(cfg.child_cpu, &[ours.as_raw_fd()], move || {
        let mut sock = theirs;
        let mut buf = [0u8; MSG_LEN];
        // Echo until the parent closes its end.
        loop {
            match sock.read_exact(&mut buf) {
                Ok(()) => sock.write_all(&buf)?,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    })?;

    let msg = [0x5au8; MSG_LEN];
    let mut buf = [0u8; MSG_LEN];
    let mut samples = Vec::with_capacity(cfg.iters);
    for i in 0..cfg.warmup + cfg.iters {
        let t0 = Instant::now();
        ours.write_all(&msg)?;
        ours.read_exact(&mut buf)?;
        if i >= cfg.warmup {
            samples.push(t0.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(ours);
    wait_child(child)?;

    samples.sort_by(f64::total_cmp);
    emit(
        "socketpair_rtt",
        percentile(&samples, 50.0),
        "us",
        &format!(r#""p99": {}, "n": {}, "msg_bytes": {MSG_LEN}{}"#,
                 percentile(&samples, 99.0), samples.len(), cpu_key(cfg)),
    );
    Ok(())
}

/// Parent writes `bulk_bytes` into a pipe in 256 KiB writes; the child reads it
/// all and acknowledges on a second pipe. Timed from the first write to the ack.
///
/// With `keep`, the child reads everything into one fresh buffer of
/// `bulk_bytes` (`pipe_into_memory`), as any receiver that must hold the
/// value does (a call's argument or result): its page faults are part of
/// the figure. Without, it reuses one 256 KiB buffer (`pipe_throughput`,
/// the kernel's copy alone).
fn pipe_throughput(cfg: &Config, keep: bool) -> io::Result<()> {
    let (data_r, data_w) = pipe()?;
    let (ack_r, ack_w) = pipe()?;
    let total = cfg.bulk_bytes;
    let child = fork_child(cfg.child_cpu, &[data_w.as_raw_fd(), ack_r.as_raw_fd()], move || {
        let (mut data, mut ack) = (data_r, ack_w);
        ack.write_all(b"r")?; // ready: affinity is set, start the clock
        if keep {
            // Sized up front, filled by reads straight into it.
            let mut all = Vec::with_capacity(total);
            let got = (&mut data).take(total as u64).read_to_end(&mut all)?;
            if got < total {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            ack.write_all(b"k")?;
            drop(all);
            return Ok(());
        }
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0;
        while got < total {
            match data.read(&mut buf)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => got += n,
            }
        }
        ack.write_all(b"k")
    })?;

    let (mut data, mut ack) = (data_w, ack_r);
    let mut byte = [0u8; 1];
    ack.read_exact(&mut byte)?;
    let chunk = vec![0xa5u8; CHUNK];
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = CHUNK.min(total - sent);
        data.write_all(&chunk[..n])?;
        sent += n;
    }
    ack.read_exact(&mut byte)?;
    let secs = t0.elapsed().as_secs_f64();
    drop(data);
    wait_child(child)?;

    emit(
        if keep { "pipe_into_memory" } else { "pipe_throughput" },
        (total as f64 / MIB as f64) / secs,
        "MiB/s",
        &format!(r#""bytes": {total}, "write_bytes": {CHUNK}{}"#, cpu_key(cfg)),
    );
    Ok(())
}

/// Forks; the child closes `close_in_child` (the parent's ends, so that EOF
/// propagates), optionally pins itself, runs `f` and exits 0 on success.
/// In the parent, `f` is dropped unrun, closing the child's ends there.
fn fork_child<F>(cpu: Option<usize>, close_in_child: &[RawFd], f: F) -> io::Result<libc::pid_t>
where
    F: FnOnce() -> io::Result<()>,
{
    io::stdout().flush()?; // don't let the child inherit unflushed output
    // SAFETY: single-threaded process; the child only runs `f` then _exit()s.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            for &fd in close_in_child {
                unsafe { libc::close(fd) };
            }
            let ok = matches!(
                catch_unwind(AssertUnwindSafe(|| cpu.map_or(Ok(()), pin_to_cpu).and_then(|()| f()))),
                Ok(Ok(()))
            );
            // _exit: skip the parent's atexit/stdio state inherited through fork.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) }
        }
        pid => Ok(pid),
    }
}

fn wait_child(pid: libc::pid_t) -> io::Result<()> {
    let mut status = 0;
    if unsafe { libc::waitpid(pid, &mut status, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err(io::Error::other(format!("child {pid} failed, wait status {status:#x}")))
    }
}

fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_SET bounds-checks against its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) == -1 {
            let err = io::Error::last_os_error();
            eprintln!("raw-ref: child: sched_setaffinity(cpu {cpu}): {err}");
            return Err(err);
        }
    }
    Ok(())
}

fn pipe() -> io::Result<(File, File)> {
    let mut fds = [0 as RawFd; 2];
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 just returned these two fresh descriptors.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((File::from(r), File::from(w)))
}

/// Nearest-rank percentile of already sorted samples.
fn percentile(sorted: &[f64], pct: f64) -> f64 {
    let idx = (pct / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn cpu_key(cfg: &Config) -> String {
    cfg.child_cpu.map_or(String::new(), |c| format!(r#", "child_cpu": {c}"#))
}

fn emit(scenario: &str, value: f64, unit: &str, extra: &str) {
    println!(r#"{{"scenario": "{scenario}", "impl": "raw", "value": {value}, "unit": "{unit}", {extra}}}"#);
}
