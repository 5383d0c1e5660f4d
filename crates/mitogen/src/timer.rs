//! [`Timer`]: the handle of a function set to run later on the broker
//! thread ([`crate::Broker::call_later`]).
//!
//! Why a state word rather than removing the timer from the broker's heap:
//! cancelling happens on any thread while the broker may be about to run
//! the timer. Both sides move the state out of *pending* with one
//! compare-and-swap, so exactly one wins: a `cancel` that returns `true`
//! means the function never ran and never will. Freeing the cancelled
//! task is then only housekeeping, handed to the broker.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PENDING: u8 = 0;
const FIRED: u8 = 1;
const CANCELLED: u8 = 2;

/// `delay` from now, saturating (a delay of years is "never" in practice
/// rather than a panic).
pub(crate) fn deadline(delay: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(delay)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Whether a timer is pending, ran, or was cancelled; shared by the
/// handle and the broker's task.
#[derive(Clone, Debug)]
pub(crate) struct TimerState(Arc<AtomicU8>);

impl TimerState {
    pub(crate) fn new() -> TimerState {
        TimerState(Arc::new(AtomicU8::new(PENDING)))
    }

    /// The broker is about to run the timer: `true` if it may (it was
    /// not cancelled), and from now on it cannot be.
    pub(crate) fn claim(&self) -> bool {
        self.0
            .compare_exchange(PENDING, FIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A function set to run later on the broker thread
/// ([`crate::Broker::call_later`]).
///
/// Dropping the handle leaves the timer set; [`Timer::cancel`] stops it.
pub struct Timer {
    state: TimerState,
    /// Frees the cancelled timer's task in the broker.
    forget: Box<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("active", &self.is_active())
            .finish()
    }
}

impl Timer {
    pub(crate) fn new(state: TimerState, forget: Box<dyn Fn() + Send + Sync>) -> Timer {
        Timer { state, forget }
    }

    /// Cancels the timer: `true` if it had not run, and now never will;
    /// `false` if it already ran (or is running) or was cancelled before.
    /// Safe from any thread, including the broker thread inside another
    /// timer.
    pub fn cancel(&self) -> bool {
        let cancelled = self
            .state
            .0
            .compare_exchange(PENDING, CANCELLED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if cancelled {
            (self.forget)();
        }
        cancelled
    }

    /// `true` while the timer has neither run nor been cancelled.
    pub fn is_active(&self) -> bool {
        self.state.0.load(Ordering::Acquire) == PENDING
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_and_claim_exclude_each_other() {
        let s = TimerState::new();
        let t = Timer::new(s.clone(), Box::new(|| ()));
        assert!(t.cancel());
        assert!(!s.claim(), "a cancelled timer was claimed");
        let s = TimerState::new();
        let t = Timer::new(s.clone(), Box::new(|| ()));
        assert!(s.claim());
        assert!(!t.cancel(), "a fired timer was cancelled");
        assert!(!t.is_active());
        assert!(deadline(Duration::MAX) > Instant::now());
    }
}
