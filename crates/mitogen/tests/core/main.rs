//! Integration tests of mitogen, run by libtest-mimic.
//!
//! The test binary is also the agent: every local context started by a
//! test runs a copy of it, entering through `mitogen::main`, which is why
//! `main` has this exact shape.

#[macro_use]
mod util;

mod asyncs;
mod attach;
mod bootstrap;
mod calls;
mod chain;
mod concurrent;
mod connects;
mod disconnects;
mod errors;
mod events;
mod fakessh;
mod files;
mod flow;
mod fork;
mod gib;
mod hostile;
mod identity;
mod lifetimes;
mod limits;
mod logs;
mod messaging;
mod senders;
mod services;
mod stalls;
mod timers;
mod trees;
mod values;

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
    all.extend(limits::tests());
    all.extend(stalls::tests());
    all.extend(disconnects::tests());
    all.extend(values::tests());
    all.extend(services::tests());
    all.extend(attach::tests());
    all.extend(timers::tests());
    all.extend(gib::tests());
    all.extend(fakessh::tests());
    all.extend(files::tests());
    all
}

fn main() {
    mitogen::main(|router| {
        // Run again by `attach` as a separate process of this program.
        if let Some(code) = attach::helper(&router) {
            drop(router); // stops the broker: children reaped, files removed
            std::process::exit(code);
        }
        let args = libtest_mimic::Arguments::from_args();
        libtest_mimic::run(&args, tests()).exit()
    })
}
