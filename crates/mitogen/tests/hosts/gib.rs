//! A 1 GiB call argument and a 1 GiB call result over ssh, with both
//! ends' peak memory bounded (the bound and why: `common/gib.rs`).

#[path = "../common/gib.rs"]
mod common;

use crate::util::{router, ssh_key, tb, trial, TestResult};
use std::time::Duration;

/// ssh's encryption makes this slower than a socketpair; hangs only.
const LIMIT: Duration = Duration::from_secs(180);

pub fn tests() -> Vec<libtest_mimic::Trial> {
    vec![
        trial(
            "gib::a_1gib_argument_over_ssh",
            LIMIT,
            a_1gib_argument_over_ssh,
        ),
        trial("gib::a_1gib_result_over_ssh", LIMIT, a_1gib_result_over_ssh),
    ]
}

fn a_1gib_argument_over_ssh() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host1, "root").connect()?;
    common::argument(&ctx, common::GIB)?.check("a 1 GiB argument over ssh", common::GIB, 1, 1)?;
    Ok(())
}

fn a_1gib_result_over_ssh() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host1, "root").connect()?;
    common::result(&ctx, common::GIB)?.check("a 1 GiB result over ssh", common::GIB, 1, 1)?;
    Ok(())
}
