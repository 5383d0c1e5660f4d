//! The harness both integration test binaries share (`tests/core`,
//! `tests/hosts`), included by path: a test body's result type,
//! `ensure!`, `router`, `bounded`, `wait_for`, and `trial`, which runs a
//! test on its own thread under a time limit so a hang is reported as a
//! failure instead of stalling the run.

use libtest_mimic::{Failed, Trial};
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

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = p.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}
