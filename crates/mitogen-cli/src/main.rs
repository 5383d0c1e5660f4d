//! The `mitogen` command: run shell commands, ping and gather facts on
//! many hosts, accounts and local contexts at once, with nothing installed
//! on the targets.
//!
//! The binary is also the agent: every target runs a copy of it, which
//! enters through `#[mitogen::main]` and serves calls before any argument
//! is parsed. Modules, by concern: `target` and `nodeset` (the syntax),
//! `inventory` (groups and selection), `plan` (the hop tree, connected
//! once per shared prefix, with bounded fan-out), `remote` (the functions
//! run on targets), `session` (one run: reports, progress, Ctrl-C),
//! `output` (gathered, inline, JSON), `secret` (become passwords),
//! `interrupt` (Ctrl-C on and off a terminal), `master` (the warm
//! master and attaching to it), `cli` and `commands`.

#![deny(missing_docs, rust_2018_idioms)]

mod cli;
mod commands;
mod interrupt;
mod inventory;
mod master;
mod nodeset;
mod output;
mod plan;
mod remote;
mod secret;
mod session;
mod target;

#[mitogen::main]
fn main(router: mitogen::Router) -> std::process::ExitCode {
    cli::main(&router)
}
