//! A child takes on its parent's flow limits whole: the frame and message
//! bounds, each link's queue bound, and how long a send waits for room.

use crate::util::{self, trial, TestResult, TEST_LIMIT};
use mitogen::ExternalContext;
use std::time::Duration;

pub fn tests() -> Vec<libtest_mimic::Trial> {
    vec![trial(
        "limits::a_child_inherits_every_flow_limit",
        TEST_LIMIT,
        a_child_inherits_every_flow_limit,
    )]
}

/// The child's limits, as its own router reports them.
#[mitogen::remote]
fn my_limits(econtext: &ExternalContext) -> (u64, u64, u64, Option<u64>) {
    let r = econtext.router();
    (
        r.max_message_size() as u64,
        r.max_payload_size() as u64,
        r.max_queued() as u64,
        r.send_timeout().map(|t| t.as_millis() as u64),
    )
}

fn a_child_inherits_every_flow_limit() -> TestResult {
    let router = util::router()?;
    router.set_max_message_size(3 << 20);
    router.set_max_payload_size(77 << 20);
    router.set_max_queued(5 << 20);
    router.set_send_timeout(Some(Duration::from_millis(4321)));
    let child = router.local().connect()?;
    let got = child.call::<my_limits>(())?;
    ensure!(
        got == (3 << 20, 77 << 20, 5 << 20, Some(4321)),
        "the child's limits are {got:?}"
    );
    // Each context inherits from its own parent: a grandchild started
    // through the child gets the child's limits, whatever the master has
    // since changed; "no limit" travels too.
    router.set_send_timeout(None);
    let grandchild = router.local().via(&child).connect()?;
    let (.., timeout) = grandchild.call::<my_limits>(())?;
    ensure!(
        timeout == Some(4321),
        "grandchild: send_timeout {timeout:?}"
    );
    let child2 = router.local().connect()?;
    let (.., timeout) = child2.call::<my_limits>(())?;
    ensure!(timeout.is_none(), "second child: send_timeout {timeout:?}");
    Ok(())
}
