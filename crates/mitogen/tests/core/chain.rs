//! `CallChain`: pipelined chains remember their first failure until
//! `reset`; non-pipelined chains do not.

use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{CallChain, Error};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "chain::pipelined_reports_first_failure",
            TEST_LIMIT,
            pipelined,
        ),
        trial("chain::pipelined_call_async", TEST_LIMIT, pipelined_async),
        trial("chain::independent_chains", TEST_LIMIT, independent_chains),
        trial("chain::not_pipelined", TEST_LIMIT, not_pipelined),
    ]
}

#[mitogen::remote]
fn fail(tag: String) -> Result<u32, std::io::Error> {
    Err(std::io::Error::other(format!("failure {tag}")))
}

#[mitogen::remote]
fn ok(v: u32) -> u32 {
    v
}

#[mitogen::remote]
fn touch(path: String) -> std::io::Result<()> {
    std::fs::write(path, "touched")
}

fn failure_tag(r: mitogen::Result<u32>) -> Result<String, String> {
    match r {
        Err(Error::Call(e)) => Ok(e.message().to_string()),
        other => Err(format!("expected a CallError, got {other:?}")),
    }
}

fn pipelined() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("chain")?;
    let marker = dir.path().join("after-failure");
    let cc = CallChain::new(&ctx, true);
    ensure!(cc.context() == &ctx, "context()");
    ensure!(cc.call::<ok>((1,))? == 1, "first call");
    cc.call_no_reply::<fail>(("one".into(),))?;
    cc.call_no_reply::<fail>(("two".into(),))?;
    // Not run: the chain has failed.
    cc.call_no_reply::<touch>((marker.to_string_lossy().into_owned(),))?;
    let m = failure_tag(cc.call::<ok>((2,)))?;
    ensure!(m == "failure one", "reported {m:?}");
    // Still failed, still the first failure.
    let m = failure_tag(cc.call::<ok>((3,)))?;
    ensure!(m == "failure one", "reported {m:?} the second time");
    ensure!(!marker.exists(), "a call after the failure ran");
    // The context itself is fine.
    ensure!(ctx.call::<ok>((4,))? == 4, "plain call on the context");
    cc.reset()?;
    ensure!(cc.call::<ok>((5,))? == 5, "after reset");
    cc.call_no_reply::<touch>((marker.to_string_lossy().into_owned(),))?;
    ensure!(cc.call::<ok>((6,))? == 6, "after reset, twice");
    ensure!(marker.exists(), "call_no_reply after reset did not run");
    // A reset without a failure is harmless.
    cc.reset()?;
    ensure!(cc.call::<ok>((7,))? == 7, "after a second reset");
    Ok(())
}

fn pipelined_async() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let cc = CallChain::new(&ctx, true);
    let a = cc.call_async::<ok>((1,))?;
    let b = cc.call_async::<fail>(("async".into(),))?;
    let c = cc.call_async::<ok>((3,))?;
    ensure!(a.get(Some(WAIT))? == 1, "call before the failure");
    ensure!(
        failure_tag(b.get(Some(WAIT)))? == "failure async",
        "the failure"
    );
    ensure!(
        failure_tag(c.get(Some(WAIT)))? == "failure async",
        "call after the failure"
    );
    Ok(())
}

fn independent_chains() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let broken = CallChain::new(&ctx, true);
    let healthy = CallChain::new(&ctx, true);
    broken.call_no_reply::<fail>(("x".into(),))?;
    ensure!(
        failure_tag(broken.call::<ok>((1,)))? == "failure x",
        "broken"
    );
    ensure!(
        healthy.call::<ok>((2,))? == 2,
        "a failure leaked into another chain"
    );
    Ok(())
}

fn not_pipelined() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let dir = TempDir::new("chain-np")?;
    let marker = dir.path().join("ran");
    let cc = CallChain::new(&ctx, false);
    cc.call_no_reply::<fail>(("ignored".into(),))?;
    cc.call_no_reply::<touch>((marker.to_string_lossy().into_owned(),))?;
    ensure!(
        cc.call::<ok>((8,))? == 8,
        "failure was reported by the next call"
    );
    ensure!(marker.exists(), "the call after a failure did not run");
    // Its own failures are still reported by the call that fails.
    ensure!(
        failure_tag(cc.call::<fail>(("direct".into(),)))? == "failure direct",
        "direct failure"
    );
    ensure!(cc.call::<ok>((9,))? == 9, "after a direct failure");
    cc.reset()?;
    Ok(())
}
