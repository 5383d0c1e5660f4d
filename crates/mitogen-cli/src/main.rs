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
//! `transfer` (`copy` and `fetch`), `rsync` (rsync through fakessh),
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
mod rsync;
mod secret;
mod session;
mod target;
mod transfer;

use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

#[mitogen::main]
fn main(router: mitogen::Router) -> ExitCode {
    run(&router)
}

/// Parses the arguments and runs the command; the exit status says
/// whether every target succeeded.
fn run(router: &mitogen::Router) -> ExitCode {
    let cli = cli::Cli::parse();
    let r = match cli.command {
        cli::Command::Run(args) => crate::commands::run(router, &args),
        cli::Command::Ping(c) => crate::commands::ping(router, &c),
        cli::Command::Facts(c) => crate::commands::facts(router, &c),
        cli::Command::Tree(c) => crate::commands::tree(router, &c),
        cli::Command::Copy(args) => crate::transfer::copy(router, &args),
        cli::Command::Fetch(args) => crate::transfer::fetch(router, &args),
        cli::Command::Rsync(args) => crate::rsync::rsync(router, &args),
        cli::Command::Master(m) => match m.action {
            None => crate::commands::master(router, &m.common, &m.name),
            Some(cli::MasterAction::Status { name, json }) => {
                crate::commands::master_status(name.as_deref(), json)
            }
            Some(cli::MasterAction::Stop { name, all }) => {
                crate::commands::master_stop(name.as_deref(), all)
            }
        },
        cli::Command::List { select, fold } => select.targets().map(|ts| {
            let names: Vec<String> = ts.iter().map(|t| t.name()).collect();
            // A closed pipe (`| head`) ends the listing quietly.
            let out = std::io::stdout();
            let mut o = out.lock();
            if fold {
                let _ = writeln!(o, "{}", crate::nodeset::fold_str(&names));
            } else {
                for n in names {
                    if writeln!(o, "{n}").is_err() {
                        break;
                    }
                }
            }
            ExitCode::SUCCESS
        }),
    };
    r.unwrap_or_else(|e| {
        eprintln!("mitogen: {e}");
        ExitCode::from(2)
    })
}
