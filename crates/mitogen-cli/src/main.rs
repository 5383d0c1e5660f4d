//! The `mitogen` command: run shell commands, ping and gather facts on
//! many hosts, accounts and local contexts at once, with nothing installed
//! on the targets.
//!
//! The binary is also the agent: every target runs a copy of it, which
//! enters through `#[mitogen::main]` and serves calls before any argument
//! is parsed. Modules, by concern: `target` and `nodeset` (the syntax),
//! `inventory` (groups and selection), `cli` (the commands).

#![deny(missing_docs, rust_2018_idioms)]

mod cli;
mod inventory;
mod nodeset;
mod target;

#[mitogen::main]
fn main(router: mitogen::Router) -> std::process::ExitCode {
    cli::main(&router)
}
