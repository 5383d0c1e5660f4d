//! A stopped context costs its own traffic, never its parent's or its
//! siblings': an intermediate pauses the link that floods a full queue,
//! but lets it go once that queue has made no progress for the send
//! timeout, refusing (dead) what is still relayed to the stopped context.

use crate::util::{self, pid, trial, TestResult, TEST_LIMIT};
use mitogen::{Error, Message};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<libtest_mimic::Trial> {
    vec![trial(
        "stalls::a_stopped_grandchild_does_not_wedge_its_parent",
        TEST_LIMIT,
        a_stopped_grandchild_does_not_wedge_its_parent,
    )]
}

#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

fn sig(pid: u32, sig: i32) {
    // SAFETY: signalling a child context of this test.
    unsafe { libc::kill(pid as i32, sig) };
}

/// Before: `mid` paused its link from the master while its queue to the
/// stopped leaf was full, and only resumed it once the leaf read again, so
/// a call to `mid` itself waited as long as the leaf was stopped.
fn a_stopped_grandchild_does_not_wedge_its_parent() -> TestResult {
    let router = util::router()?;
    router.set_max_queued(1 << 20);
    router.set_send_timeout(Some(Duration::from_secs(1)));
    let mid = router.local().remote_name("stall-mid").connect()?;
    let leaf = router
        .local()
        .remote_name("stall-leaf")
        .via(&mid)
        .connect()?;
    let leaf_pid = leaf.call::<pid>(())?;
    sig(leaf_pid, libc::SIGSTOP);
    let r = (|| -> TestResult {
        // 48 MiB at a context that reads nothing, through mid.
        let flood = {
            let leaf = leaf.clone();
            std::thread::spawn(move || {
                for _ in 0..48 {
                    let m = Message::raw(vec![1u8; 1 << 20]).to(leaf.context_id(), 5000);
                    let _ = leaf.send(m);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let sum = mid
            .call_async::<add>((2, 2))?
            .get(Some(Duration::from_secs(20)))?;
        ensure!(sum == 4, "mid answered {sum}");
        let took = t.elapsed();
        ensure!(
            took < Duration::from_secs(10),
            "mid answered only after {took:?}"
        );
        flood
            .join()
            .map_err(|_| "the flooding thread panicked".to_string())?;
        // A call to the stopped leaf is answered dead, saying why, instead
        // of waiting for the leaf.
        let r = leaf
            .call_async::<add>((1, 1))?
            .get(Some(Duration::from_secs(20)));
        match &r {
            Err(Error::Channel(e)) => ensure!(
                e.reason().contains("made no progress"),
                "reason {:?}",
                e.reason()
            ),
            other => return Err(format!("expected a dead answer, got {other:?}").into()),
        }
        Ok(())
    })();
    sig(leaf_pid, libc::SIGCONT);
    r?;
    // Once the leaf reads again, its link drains and it is reachable.
    ensure!(
        util::wait_for(Duration::from_secs(20), || leaf
            .call_async::<add>((3, 4))
            .and_then(|p| p.get(Some(Duration::from_secs(5))))
            .is_ok_and(|v| v == 7)),
        "the leaf did not recover"
    );
    Ok(())
}
