//! Tests against real hosts: ssh, sudo, su and doas with real passwords,
//! and containers (docker through podman's API, podman, lxc, setns; stubs
//! for the tools with no engine here).
//!
//! The hosts are network namespaces each running a real `sshd`, and the
//! containers podman, LXC and unshare ones, built by
//! `scripts/testbed/setup.sh` (root only; `./scripts/test.sh` runs it when
//! it is root). When the test bed is absent every test here is reported
//! as ignored, and the reason is printed once. Like `tests/core`, this
//! binary is also the agent: it enters through `mitogen::main`.

#[macro_use]
mod util;

mod become_user;
mod cache;
mod chain;
mod ctr_chain;
mod ctr_util;
mod docker;
mod fakessh;
mod files;
mod fleet;
mod gib;
mod leftovers;
mod lxc_setns;
mod secrets;
mod shells;
mod ssh;
mod stubbed;
mod tmpfiles;

fn tests() -> Vec<libtest_mimic::Trial> {
    let mut all = Vec::new();
    all.extend(ssh::tests());
    all.extend(leftovers::tests());
    all.extend(become_user::tests());
    all.extend(cache::tests());
    all.extend(chain::tests());
    all.extend(docker::tests());
    all.extend(lxc_setns::tests());
    all.extend(stubbed::tests());
    all.extend(ctr_chain::tests());
    all.extend(fleet::tests());
    all.extend(gib::tests());
    all.extend(secrets::tests());
    all.extend(shells::tests());
    all.extend(tmpfiles::tests());
    all.extend(fakessh::tests());
    all.extend(files::tests());
    all
}

fn main() {
    mitogen::main(|_router| {
        let args = libtest_mimic::Arguments::from_args();
        let mut trials = tests();
        if let Err(why) = util::testbed() {
            if !args.list {
                eprintln!(
                    "\n*** hosts tests: {} tests SKIPPED: {why}\n*** run ./scripts/test.sh as root \
                     (it builds the test bed with scripts/testbed/setup.sh)\n",
                    trials.len()
                );
            }
            trials = trials
                .into_iter()
                .map(|t| t.with_ignored_flag(true))
                .collect();
        }
        libtest_mimic::run(&args, trials).exit()
    })
}
