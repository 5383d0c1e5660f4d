//! `mitogen::fakessh` into real remote contexts: real rsync, scp and git
//! run here, their `ssh` reaching a sudo context on mtb-host1 (alice →
//! bob, with alice's password) or a context reached through ssh → ssh
//! (mtb-host1, then mtb-host2 through it). The scenarios are the ones
//! `tests/core/fakessh.rs` runs against a local context.

#[path = "../common/fakessh_cases.rs"]
pub mod cases;

use crate::util::*;
use libtest_mimic::{Failed, Trial};
use mitogen::{Context, Router};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(150);

pub fn tests() -> Vec<Trial> {
    vec![
        trial("fakessh::sudo_rsync", LIMIT, || {
            via_sudo(cases::rsync_both_ways)
        }),
        trial("fakessh::sudo_scp", LIMIT, || {
            via_sudo(cases::scp_both_ways)
        }),
        trial("fakessh::sudo_git", LIMIT, || {
            via_sudo(cases::git_clone_and_push)
        }),
        trial("fakessh::sudo_concurrent", LIMIT, || {
            via_sudo(cases::concurrent_invocations)
        }),
        trial("fakessh::sudo_deadline", LIMIT, || {
            via_sudo(cases::deadline_kills_everything)
        }),
        trial("fakessh::sudo_root_statuses", LIMIT, sudo_root_statuses),
        trial("fakessh::ssh_ssh_rsync", LIMIT, || {
            via_two_hops(cases::rsync_both_ways)
        }),
        trial("fakessh::ssh_ssh_scp", LIMIT, || {
            via_two_hops(cases::scp_both_ways)
        }),
        trial("fakessh::ssh_ssh_git", LIMIT, || {
            via_two_hops(cases::git_clone_and_push)
        }),
        trial("fakessh::ssh_ssh_deadline", LIMIT, || {
            via_two_hops(cases::deadline_kills_everything)
        }),
        trial("fakessh::ssh_ssh_large_stdin", LIMIT, || {
            via_two_hops(cases::large_stdin)
        }),
    ]
}

/// alice on mtb-host1, then sudo to `user` with her password.
fn sudo_dest(r: &Router, user: &str) -> Result<Context, Failed> {
    let t = tb()?;
    let alice = ssh_key(r, &t.host1, "alice").connect()?;
    let ctx = r
        .sudo()
        .username(user)
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    let (host, who, _) = ctx.call::<whoami>(())?;
    ensure!(host == "mtb-host1" && who == user, "reached {who}@{host}");
    Ok(ctx)
}

fn via_sudo(f: fn(&Context) -> TestResult) -> TestResult {
    let r = router()?;
    f(&sudo_dest(&r, "bob")?)
}

fn sudo_root_statuses() -> TestResult {
    let r = router()?;
    cases::statuses(&sudo_dest(&r, "root")?)
}

/// root on mtb-host1, then bob on mtb-host2 through it.
fn via_two_hops(f: fn(&Context) -> TestResult) -> TestResult {
    let t = tb()?;
    let r = router()?;
    let h1 = ssh_key(&r, &t.host1, "root").connect()?;
    let h2 = ssh_pw(&r, &t.host2, "bob", &t.bob_pw).via(&h1).connect()?;
    let (host, who, _) = h2.call::<whoami>(())?;
    ensure!(host == "mtb-host2" && who == "bob", "reached {who}@{host}");
    f(&h2)
}
