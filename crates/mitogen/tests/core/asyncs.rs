//! The async faces of the API — `PendingCall` and `LatchFuture` as
//! futures, `Receiver` and `Select` as streams — under tokio (current-thread
//! and multi-thread runtimes) and under `futures::executor`, against real
//! contexts. The library itself depends on no runtime.

use crate::util::sleep_ms;
use crate::util::{self, trial, TestResult, TEST_LIMIT};
use futures::StreamExt;
use libtest_mimic::Trial;
use mitogen::{Context, Error, Latch, Receiver, Router, Select, Sender};
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("asyncs::tokio_current_thread", TEST_LIMIT, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(scenario())
        }),
        trial("asyncs::tokio_multi_thread", TEST_LIMIT, || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_time()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                scenario().await?;
                // A call that never answers in time is abandoned by a
                // runtime timeout; the context keeps serving.
                let router = util::router()?;
                let ctx = router.local().connect()?;
                let slow = ctx.call_async::<sleep_ms>((1_500,))?;
                let r = tokio::time::timeout(Duration::from_millis(100), slow).await;
                ensure!(r.is_err(), "the slow call finished early: {r:?}");
                let fast = ctx.call_async::<add>((2, 3))?.await?;
                ensure!(fast == 5, "{fast}");
                Ok(())
            })
        }),
        trial("asyncs::futures_executor", TEST_LIMIT, || {
            futures::executor::block_on(scenario())
        }),
    ]
}

#[mitogen::remote]
fn add(a: u64, b: u64) -> u64 {
    a + b
}

#[mitogen::remote]
fn lines(tx: Sender, n: u32) -> mitogen::Result<()> {
    for i in 0..n {
        tx.send(&format!("line {i}"))?;
    }
    tx.close()
}

async fn scenario() -> TestResult {
    let router = util::router()?;
    let ctxs: Vec<Context> = (0..3)
        .map(|i| router.local().remote_name(format!("async{i}")).connect())
        .collect::<mitogen::Result<_>>()?;

    // A pending call is a future.
    let sum = ctxs[0].call_async::<add>((40, 2))?.await?;
    ensure!(sum == 42, "sum {sum}");

    // A receiver is a stream; the sender's close ends it with an error
    // item saying so.
    let rx = Receiver::open(&router);
    ctxs[1].call_async::<lines>((rx.to_sender(), 5))?.await?;
    let mut got = Vec::new();
    let mut rx = rx;
    while let Some(item) = rx.next().await {
        match item {
            Ok(m) => got.push(m.decode::<String>()?),
            Err(Error::Channel(e)) => {
                ensure!(e.reason().contains("closed"), "{e}");
                break;
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
    ensure!(got.len() == 5 && got[4] == "line 4", "lines {got:?}");
    ensure!(
        rx.next().await.is_none(),
        "the stream went on after the close"
    );

    // A select over pending calls is a stream ending when all answered.
    let calls: Vec<_> = ctxs
        .iter()
        .enumerate()
        .map(|(i, c)| c.call_async::<add>((i as u64, 100)))
        .collect::<mitogen::Result<_>>()?;
    let mut select = Select::with(&calls, true)?;
    let mut sums = Vec::new();
    while let Some(ev) = select.next().await {
        ensure!(calls.iter().any(|c| ev.is_from(c)), "an event from nowhere");
        sums.push(ev.data.decode::<u64>()?);
    }
    sums.sort();
    ensure!(sums == [100, 101, 102], "sums {sums:?}");

    // A latch's get is a future; a put from another thread wakes it.
    let latch: Latch<u32> = Latch::new();
    let l2 = latch.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        let _ = l2.put(7);
    });
    ensure!(latch.get_async().await == Ok(7), "latch value");
    latch.close();
    ensure!(latch.get_async().await.is_err(), "a closed latch answered");
    drop::<Router>(router);
    Ok(())
}
