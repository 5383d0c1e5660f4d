//! Helper program of the integration tests (`tests/core`): a master that
//! starts one local context and prints `child-pid N` on stdout.
//!
//! - `orphan_master sleep` (the default) then sleeps 60 s, so that a test
//!   can SIGKILL this master and watch the orphaned child exit;
//! - `orphan_master once` exits at once, stopping the child: a test runs it
//!   with its own `HOME` / `XDG_RUNTIME_DIR` to look at the agent cache.

use mitogen::Router;
use std::io::Write;
use std::time::Duration;

/// The child's pid.
#[mitogen::remote]
fn child_pid() -> u32 {
    std::process::id()
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "sleep".into());
    let ctx = router.local().remote_name("orphan").connect()?;
    let pid = ctx.call::<child_pid>(())?;
    println!("child-pid {pid}");
    let _ = std::io::stdout().flush();
    if mode == "sleep" {
        std::thread::sleep(Duration::from_secs(60));
    }
    Ok(())
}
