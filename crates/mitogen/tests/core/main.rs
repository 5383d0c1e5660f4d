//! Integration tests of mitogen, run by libtest-mimic.
//!
//! The test binary is also the agent: every local context started by a
//! test runs a copy of it, entering through `mitogen::main`, which is why
//! `main` has this exact shape.

#[macro_use]
mod util;

mod asyncs;
mod bootstrap;
mod calls;
mod chain;
mod concurrent;
mod connects;
mod errors;
mod events;
mod flow;
mod fork;
mod gib;
mod hostile;
mod identity;
mod lifetimes;
mod logs;
mod messaging;
mod senders;
mod trees;

fn tests() -> Vec<libtest_mimic::Trial> {
    let mut all = Vec::new();
    all.extend(calls::tests());
    all.extend(errors::tests());
    all.extend(lifetimes::tests());
    all.extend(connects::tests());
    all.extend(fork::tests());
    all.extend(bootstrap::tests());
    all.extend(identity::tests());
    all.extend(chain::tests());
    all.extend(concurrent::tests());
    all.extend(logs::tests());
    all.extend(senders::tests());
    all.extend(messaging::tests());
    all.extend(events::tests());
    all.extend(asyncs::tests());
    all.extend(trees::tests());
    all.extend(hostile::tests());
    all.extend(flow::tests());
    all.extend(gib::tests());
    all
}

fn main() {
    mitogen::main(|_router| {
        let args = libtest_mimic::Arguments::from_args();
        libtest_mimic::run(&args, tests()).exit()
    })
}
