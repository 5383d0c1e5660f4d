//! Broker timers (`Broker::call_later` → `Timer`): they run on the broker
//! thread in the order they are due, a cancelled one never runs (even
//! when cancelled by another timer), and none are taken once the broker
//! shuts down. Bounded waits only: a timer that never fires fails a
//! `Latch::get` with a timeout instead of hanging.

use crate::util::{trial, TestResult, TEST_LIMIT};
use libtest_mimic::Trial;
use mitogen::{Broker, Latch};
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "timers::fire_by_due_time_on_the_broker_thread",
            TEST_LIMIT,
            fire_by_due_time_on_the_broker_thread,
        ),
        trial(
            "timers::a_cancelled_timer_never_fires",
            TEST_LIMIT,
            a_cancelled_timer_never_fires,
        ),
        trial(
            "timers::refused_after_shutdown",
            TEST_LIMIT,
            refused_after_shutdown,
        ),
    ]
}

fn fire_by_due_time_on_the_broker_thread() -> TestResult {
    let b = Broker::new()?;
    let out = Latch::new();
    for (delay, n) in [(60, 3), (20, 1), (40, 2)] {
        let (o, b2) = (out.clone(), b.clone());
        // Dropping the handle leaves the timer set.
        drop(b.call_later(Duration::from_millis(delay), move || {
            let _ = o.put((n, b2.on_broker_thread()));
        })?);
    }
    let t = Some(Duration::from_secs(5));
    let got = (0..3).map(|_| out.get(t)).collect::<Result<Vec<_>, _>>()?;
    assert_eq!(got, [(1, true), (2, true), (3, true)]);
    b.shutdown();
    b.join();
    Ok(())
}

fn a_cancelled_timer_never_fires() -> TestResult {
    let b = Broker::new()?;
    let out = Latch::new();
    let o = out.clone();
    let doomed = b.call_later(Duration::from_millis(10), move || {
        let _ = o.put("cancelled one");
    })?;
    assert!(doomed.is_active());
    assert!(doomed.cancel());
    assert!(!doomed.cancel(), "cancelling twice reports the second");
    assert!(!doomed.is_active());
    // A timer cancelled by another timer, on the broker thread.
    let o = out.clone();
    let victim = b.call_later(Duration::from_millis(40), move || {
        let _ = o.put("victim");
    })?;
    let o = out.clone();
    let killer = b.call_later(Duration::from_millis(20), move || {
        let _ = o.put(if victim.cancel() { "killer" } else { "late" });
    })?;
    let o = out.clone();
    b.call_later(Duration::from_millis(80), move || {
        let _ = o.put("sentinel");
    })?;
    let t = Some(Duration::from_secs(5));
    assert_eq!(out.get(t)?, "killer");
    assert_eq!(out.get(t)?, "sentinel");
    assert!(out.empty()?, "nothing else fired");
    assert!(!killer.cancel(), "a timer that ran cannot be cancelled");
    b.shutdown();
    b.join();
    Ok(())
}

fn refused_after_shutdown() -> TestResult {
    let b = Broker::new()?;
    let t = b.call_later(Duration::from_secs(3600), || ())?;
    b.shutdown();
    let Err(e) = b.call_later(Duration::ZERO, || ()) else {
        return Err("a timer was taken after shutdown began".into());
    };
    assert!(e.to_string().contains("shutting down"), "{e}");
    b.join();
    // The pending one was dropped with the broker, unrun.
    assert!(t.is_active());
    assert!(t.cancel());
    Ok(())
}
