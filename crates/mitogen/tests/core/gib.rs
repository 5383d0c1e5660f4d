//! A 1 GiB call argument and a 1 GiB call result to a local context, with
//! both ends' peak memory bounded (the bound and why: `common/gib.rs`).

#[path = "../common/gib.rs"]
mod common;

use crate::util::{self, trial, TestResult};
use std::time::Duration;

/// 1 GiB each way takes seconds over a socketpair; this only catches hangs.
const LIMIT: Duration = Duration::from_secs(120);

pub fn tests() -> Vec<libtest_mimic::Trial> {
    vec![
        trial(
            "gib::a_1gib_argument_to_a_local_context",
            LIMIT,
            a_1gib_argument_to_a_local_context,
        ),
        trial(
            "gib::a_1gib_result_from_a_local_context",
            LIMIT,
            a_1gib_result_from_a_local_context,
        ),
    ]
}

fn a_1gib_argument_to_a_local_context() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("gib-arg").connect()?;
    common::argument(&ctx, common::GIB)?.check("a 1 GiB argument", common::GIB, 1, 1)?;
    Ok(())
}

fn a_1gib_result_from_a_local_context() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("gib-result").connect()?;
    common::result(&ctx, common::GIB)?.check("a 1 GiB result", common::GIB, 1, 1)?;
    Ok(())
}
