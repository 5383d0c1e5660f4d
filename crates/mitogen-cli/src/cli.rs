//! The command line: clap definitions and one function per command.

use crate::inventory::Inventory;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Run commands on many machines, accounts and local contexts at once,
/// with nothing installed on the targets.
#[derive(Debug, Parser)]
#[command(name = "mitogen", version, after_help = TARGET_HELP)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

const TARGET_HELP: &str = "\
Targets: one path per target, hop by hop, e.g.
  ssh:deploy@bastion/ssh:web[01-20]:2222/sudo:root
  web[01-03],db1          bare hops are ssh; ranges and lists as in pdsh
  local[1-50]             local contexts
  @web                    a group of the inventory file
Hops: [ssh:][USER@]HOST[:PORT], sudo[:USER], su[:USER], doas[:USER], local[N].";

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the targets a selection expands to, one per line.
    List {
        #[command(flatten)]
        select: Select,
        /// Print them folded on one line instead (`web[01-20]`).
        #[arg(long)]
        fold: bool,
    },
}

/// Which targets: positional and `-w` lists, less `-x` ones.
#[derive(Debug, Args)]
struct Select {
    /// Targets (comma-separated; ranges, groups).
    targets: Option<String>,
    /// More targets (repeatable).
    #[arg(short = 'w', value_name = "TARGETS")]
    with: Vec<String>,
    /// Leave out targets whose name or any hop is one of these.
    #[arg(short = 'x', value_name = "TARGETS")]
    exclude: Vec<String>,
    /// The inventory file (default $MITOGEN_INVENTORY, else
    /// ~/.config/mitogen/inventory).
    #[arg(short = 'I', long, value_name = "FILE")]
    inventory: Option<PathBuf>,
}

impl Select {
    fn targets(&self) -> Result<Vec<crate::target::Target>, String> {
        let inv = Inventory::load(self.inventory.as_deref())?;
        let mut include: Vec<String> = self.targets.iter().cloned().collect();
        include.extend(self.with.iter().cloned());
        if include.is_empty() {
            return Err("no targets given (a positional list or -w)".into());
        }
        let t = inv.select(&include, &self.exclude)?;
        if t.is_empty() {
            return Err("the selection is empty (everything was excluded)".into());
        }
        Ok(t)
    }
}

/// Parses the arguments and runs the command; the exit status says
/// whether every target succeeded.
pub fn main(_router: &mitogen::Router) -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::List { select, fold } => select.targets().map(|ts| {
            let names: Vec<String> = ts.iter().map(|t| t.name()).collect();
            if fold {
                println!("{}", crate::nodeset::fold_str(&names));
            } else {
                for n in names {
                    println!("{n}");
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
