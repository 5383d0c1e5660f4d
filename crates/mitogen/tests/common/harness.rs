//! The harness both integration test binaries share (`tests/core`,
//! `tests/hosts`), included by path: a test body's result type,
//! `ensure!`, `router`, `bounded`, `wait_for`, `example`, and `trial`,
//! which runs a test on its own thread under a time limit so a hang is
//! reported as a failure instead of stalling the run.

use libtest_mimic::{Failed, Trial};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// What every test body returns.
pub type TestResult = Result<(), Failed>;

/// Fails the test with a message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+).into());
        }
    };
}

/// A test run on its own thread and failed when it does not finish within
/// `limit`. The thread of a hung test is abandoned; its failure is
/// reported at once, so neither `cargo test` nor nextest waits forever.
pub fn trial(name: &str, limit: Duration, body: fn() -> TestResult) -> Trial {
    let label = name.to_string();
    Trial::test(name, move || {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(label.clone())
            .spawn(move || {
                let r = std::panic::catch_unwind(body);
                let _ = tx.send(r);
            })
            .map_err(|e| format!("cannot start the test thread: {e}"))?;
        match rx.recv_timeout(limit) {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => Err(panic_message(&*panic).into()),
            Err(_) => Err(format!("{label} did not finish within {limit:?}: hang").into()),
        }
    })
}

/// A fresh router with its own broker.
pub fn router() -> Result<mitogen::Router, Failed> {
    mitogen::Router::new().map_err(|e| format!("Router::new: {e}").into())
}

/// Runs `f` on another thread and waits at most `limit` for it: for calls
/// whose own API has no timeout (`Context::call`, `Context::shutdown`).
pub fn bounded<T: Send + 'static>(
    what: &str,
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failed> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .map_err(|_| format!("{what} did not return within {limit:?}").into())
}

/// Polls `cond` every 10 ms until it holds or `limit` passes.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Path of a helper example program of this package, built on demand with
/// the cargo that built this test (same target directory and profile).
pub fn example(name: &str) -> Result<PathBuf, Failed> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/core-HASH
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("unexpected test binary location")?
        .to_path_buf();
    let target_dir = profile_dir
        .parent()
        .ok_or("unexpected test binary location")?
        .to_path_buf();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_string();
    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.arg("build")
        .arg("--quiet")
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--example")
        .arg(name)
        .arg("--target-dir")
        .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.arg("--profile").arg(other);
        }
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running cargo build --example {name}: {e}"))?;
    ensure!(
        out.status.success(),
        "cargo build --example {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = profile_dir.join("examples").join(name);
    ensure!(
        path.exists(),
        "{} missing after building it",
        path.display()
    );
    Ok(path)
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}
