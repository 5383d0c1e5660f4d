//! Where a panic happened, for the [`crate::CallError`] it becomes.
//!
//! A caught panic's payload says what, not where, and a backtrace taken
//! where it is caught shows the catcher. So a panic hook (installed once
//! per process, in front of whatever hook was there, which still runs)
//! notes the location and, when enabled, a backtrace in a thread-local;
//! the code that catches the panic on that same thread takes it. Without
//! the hook (a program that replaced it later) the location is unknown,
//! nothing worse.

use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// What the hook noted about the last panic on this thread.
pub(crate) struct Caught {
    /// `file:line`.
    pub(crate) location: String,
    pub(crate) backtrace: Option<String>,
}

thread_local! {
    static LAST: RefCell<Option<Caught>> = const { RefCell::new(None) };
}

/// Full backtraces in error results whatever `RUST_BACKTRACE` says (a
/// context started with `debug`).
static FULL: AtomicBool = AtomicBool::new(false);

/// Installs the hook, once per process.
pub(crate) fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let location = info.location().map_or_else(
                || "an unknown location".to_string(),
                |l| format!("{}:{}", l.file(), l.line()),
            );
            let caught = Caught {
                location,
                backtrace: backtrace(),
            };
            LAST.with(|c| *c.borrow_mut() = Some(caught));
            prev(info);
        }));
    });
}

/// What the hook noted about the panic just caught on this thread.
pub(crate) fn take_last() -> Option<Caught> {
    LAST.with(|c| c.borrow_mut().take())
}

/// Turns full backtraces on (or back off) in this process.
pub(crate) fn set_full_backtraces(on: bool) {
    FULL.store(on, Ordering::Relaxed);
}

/// A backtrace of here: always when full backtraces are on, else when the
/// environment asks for one (`RUST_BACKTRACE`).
pub(crate) fn backtrace() -> Option<String> {
    let bt = if FULL.load(Ordering::Relaxed) {
        Backtrace::force_capture()
    } else {
        Backtrace::capture()
    };
    (bt.status() == BacktraceStatus::Captured).then(|| bt.to_string())
}
