//! Helper program of the integration tests (`tests/hosts`): an agent meant
//! to be built static (`--target x86_64-unknown-linux-musl`), reached with
//! `agent_binary` and `call_by_name`, to show a static program needs no
//! loader in a busybox container. Run directly it prints whether it is
//! static.

/// Where it runs: hostname, uid, and whether it is statically linked.
#[mitogen::remote]
fn static_where() -> (String, u32, bool) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    // SAFETY: reading the auxiliary vector.
    let is_static = unsafe { libc::getauxval(libc::AT_BASE) } == 0;
    (host.trim().to_string(), uid, is_static)
}

#[mitogen::main]
fn main(_router: mitogen::Router) -> mitogen::Result<()> {
    let (_, _, s) = static_where();
    println!("static: {s}");
    Ok(())
}
