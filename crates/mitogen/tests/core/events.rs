//! Events (the seed's signals) against real contexts: context and stream
//! disconnects, child exit statuses, the broker's shutdown sequence, and
//! callbacks that call back into the runtime without deadlocking.

use crate::util::pid;
use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{Broker, Disconnect, Receiver, Router};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "events::context_and_stream_disconnect",
            TEST_LIMIT,
            disconnects,
        ),
        trial("events::child_exit_status", TEST_LIMIT, child_exit),
        trial(
            "events::broker_shutdown_sequence",
            TEST_LIMIT,
            broker_sequence,
        ),
        trial("events::no_waiting_in_a_callback", TEST_LIMIT, no_waiting),
    ]
}

fn disconnects() -> TestResult {
    let router = util::router()?;
    let a = router.local().remote_name("ev-a").connect()?;
    let b = router.local().remote_name("ev-b").connect()?;
    let leaf = router.local().remote_name("ev-leaf").via(&a).connect()?;
    // Callbacks report through a Sender: routing a message takes the
    // router's locks, so a callback run under one would deadlock here.
    let inbox = Receiver::open(&router);
    let tx = inbox.to_sender();
    let t1 = tx.clone();
    let a_sub = a.on_disconnect(move |d: &Disconnect| {
        let _ = t1.send(&format!("ctx {} {}", d.name, d.context_id));
    });
    let t2 = tx.clone();
    let leaf2 = leaf.clone();
    router.on_context_disconnect(move |d| {
        let _ = t2.send(&format!(
            "any {} connected={}",
            d.name,
            leaf2.is_connected()
        ));
    });
    let t3 = tx.clone();
    let streams = router.on_stream_disconnect(move |d| {
        let _ = t3.send(&format!("stream {}", d.name));
    });
    util::kill9(a.call::<pid>(())?)?;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(inbox.get(Some(WAIT))?.decode::<String>()?);
    }
    got.sort();
    let want = [
        "any ev-a connected=false".to_string(),
        format!("any {} connected=false", leaf.name()),
        format!("ctx ev-a {}", a.context_id()),
        "stream ev-a".to_string(),
    ];
    ensure!(got == want, "events {got:?}, wanted {want:?}");
    ensure!(
        inbox.get(Some(Duration::from_millis(200))).is_err(),
        "an event fired twice"
    );
    ensure!(a_sub.unsubscribe(), "unsubscribe of a live subscription");
    ensure!(streams.unsubscribe(), "unsubscribe of a live subscription");
    util::kill9(b.call::<pid>(())?)?;
    let next = inbox.get(Some(WAIT))?.decode::<String>()?;
    ensure!(
        next == "any ev-b connected=false",
        "after unsubscribing: {next}"
    );
    ensure!(
        inbox.get(Some(Duration::from_millis(200))).is_err(),
        "an unsubscribed callback ran"
    );
    Ok(())
}

/// A reaped child as the test records it: pid, name, exit code, signal.
type Seen = (i32, String, Option<i32>, Option<i32>);

fn child_exit() -> TestResult {
    let router = util::router()?;
    let exits: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let e2 = exits.clone();
    router.on_child_exit(move |x| {
        let mut l = e2.lock().unwrap_or_else(|e| e.into_inner());
        l.push((x.pid, x.name.clone(), x.status.code(), x.status.signal()));
    });
    let calm = router.local().remote_name("calm").connect()?;
    let shot = router.local().remote_name("shot").connect()?;
    let calm_pid = calm.call::<pid>(())? as i32;
    let shot_pid = shot.call::<pid>(())? as i32;
    calm.shutdown(true, Some(WAIT))?;
    util::kill9(shot_pid as u32)?;
    let done = util::wait_for(WAIT, || exits.lock().map(|l| l.len() >= 2).unwrap_or(false));
    let mut l = exits.lock().map_err(|_| "poisoned")?.clone();
    ensure!(done, "child exits seen: {l:?}");
    l.sort();
    let calm_seen = l.iter().find(|x| x.0 == calm_pid);
    let shot_seen = l.iter().find(|x| x.0 == shot_pid);
    ensure!(
        matches!(calm_seen, Some((_, n, Some(0), None)) if n == "calm"),
        "graceful exit: {calm_seen:?}"
    );
    ensure!(
        matches!(shot_seen, Some((_, n, None, Some(9))) if n == "shot"),
        "kill -9: {shot_seen:?}"
    );
    Ok(())
}

fn broker_sequence() -> TestResult {
    let broker = Broker::new()?;
    let seq: Arc<Mutex<Vec<&'static str>>> = Arc::default();
    for (name, which) in [("before_shutdown", 0), ("shutdown", 1), ("exit", 2)] {
        let s = seq.clone();
        let f = move || s.lock().unwrap_or_else(|e| e.into_inner()).push(name);
        match which {
            0 => broker.on_before_shutdown(f),
            1 => broker.on_shutdown(f),
            _ => broker.on_exit(f),
        };
    }
    let observer = {
        let router = Router::with_broker(&broker);
        let ctx = router.local().remote_name("watched").connect()?;
        let child = ctx.call::<pid>(())?;
        (router.broker().clone(), child)
    };
    // The last owning handle goes: the broker shuts down by itself (the
    // seed's install_watcher), stopping the child.
    drop(broker);
    ensure!(observer.0.is_stopped(), "the broker still runs");
    util::wait_exited(observer.1, Duration::from_secs(10), false)?;
    let got = seq.lock().map_err(|_| "poisoned")?.clone();
    ensure!(
        got == ["before_shutdown", "shutdown", "exit"],
        "sequence {got:?}"
    );
    Ok(())
}

/// A callback runs on the broker thread, which delivers replies: a call
/// waited for there fails at once, saying why, instead of hanging the
/// broker. Starting a call without waiting works.
fn no_waiting() -> TestResult {
    let router = util::router()?;
    let doomed = router.local().remote_name("doomed").connect()?;
    let other = router.local().remote_name("other").connect()?;
    let inbox = Receiver::open(&router);
    let tx = inbox.to_sender();
    let o = other.clone();
    doomed.on_disconnect(move |_| {
        let waited = match o.call::<pid>(()) {
            Ok(p) => format!("answered {p}"),
            Err(e) => format!("refused: {e}"),
        };
        let started = o
            .call_async::<pid>(())
            .map(|_| "started")
            .unwrap_or("not started");
        let shutdown = match o.shutdown(true, Some(Duration::from_secs(30))) {
            Ok(()) => "waited".to_string(),
            Err(e) => format!("refused: {e}"),
        };
        let _ = tx.send(&(waited, started.to_string(), shutdown));
    });
    util::kill9(doomed.call::<pid>(())?)?;
    let (waited, started, shutdown): (String, String, String) = inbox.get(Some(WAIT))?.decode()?;
    ensure!(
        waited.starts_with("refused") && waited.contains("broker thread"),
        "waiting in a callback: {waited}"
    );
    ensure!(started == "started", "call_async in a callback: {started}");
    ensure!(
        shutdown.starts_with("refused") && shutdown.contains("broker thread"),
        "shutdown(wait) in a callback: {shutdown}"
    );
    ensure!(other.call::<pid>(())? > 0, "the broker is still healthy");
    Ok(())
}
