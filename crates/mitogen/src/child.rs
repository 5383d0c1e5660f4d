//! Child processes: the one place where the runtime signals its children.

use std::io;

/// Tests read which signals reached which pid.
#[cfg(test)]
static SENT: std::sync::Mutex<Vec<(i32, i32)>> = std::sync::Mutex::new(Vec::new());

/// Signals sent to `pid` through this module so far (tests only).
#[cfg(test)]
pub(crate) fn signals_sent_to(pid: i32) -> Vec<i32> {
    crate::broker::lock(&SENT)
        .iter()
        .filter(|(p, _)| *p == pid)
        .map(|(_, s)| *s)
        .collect()
}

/// `kill(pid, sig)`.
pub(crate) fn kill_pid(pid: i32, sig: i32) -> io::Result<()> {
    #[cfg(test)]
    crate::broker::lock(&SENT).push((pid, sig));
    // SAFETY: kill takes plain integers.
    if unsafe { libc::kill(pid, sig) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
