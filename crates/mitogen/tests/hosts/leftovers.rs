//! What an ssh context leaves on its target: nothing after a connect
//! that timed out, and no zombie after the stage's watchdog is stopped.
//! The test hosts share this machine's process table, so the target's
//! processes are read from here.

use crate::util::*;
use libtest_mimic::Trial;
use mitogen::Error;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "ssh::nothing_left_after_a_connect_timeout",
            TEST_LIMIT,
            nothing_left_after_a_connect_timeout,
        ),
        trial(
            "ssh::the_stopped_watchdog_is_reaped",
            TEST_LIMIT,
            the_stopped_watchdog_is_reaped,
        ),
    ]
}

/// Processes whose command line is exactly `words`.
fn processes_running(words: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = words
        .iter()
        .flat_map(|w| [w.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .filter(|pid| {
                    std::fs::read(format!("/proc/{pid}/cmdline")).ok() == Some(want.clone())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Before: the stage's processes on the target (here a wrapper that
/// sleeps before the agent) outlived a timed-out connect: sshd does not
/// end a session's processes when its client goes. The test hosts share
/// this machine's process table, so they are looked for here.
fn nothing_left_after_a_connect_timeout() -> TestResult {
    let t = tb()?;
    let r = router()?;
    // The agent cached first, so the stage reaches the wrapper at once.
    let ok = ssh_key(&r, &t.host1, "alice").connect()?;
    let nap = ["sleep", "41.5"];
    let e = expect_err(
        "a stage that sleeps",
        ssh_key(&r, &t.host1, "alice")
            .agent_command(["sh", "-c", "sleep 41.5; exec \"$0\" \"$@\""])
            .connect_timeout(Duration::from_secs(3))
            .connect(),
    )?;
    ensure!(matches!(e, Error::Timeout(_)), "not a timeout: {e:?}");
    let gone = wait_for(Duration::from_secs(10), || {
        processes_running(&nap).is_empty()
    });
    let left = processes_running(&nap);
    for pid in &left {
        // SAFETY: cleaning up after a failed test.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    ensure!(
        gone,
        "still running on the target after the timeout: {left:?}"
    );
    // And a context that did start keeps running (the watchdog was
    // stopped by the agent, not left to fire).
    std::thread::sleep(Duration::from_secs(3));
    ensure!(ok.call::<sleep_ms>((1,)).is_ok(), "a started context died");
    Ok(())
}

/// The children of process `pid` (every thread's), with their state
/// letter from `/proc/PID/stat`.
fn children_states(pid: u32) -> Vec<(u32, char)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in tasks.flatten() {
        let f = t.path().join("children");
        for c in std::fs::read_to_string(f)
            .unwrap_or_default()
            .split_whitespace()
        {
            let Ok(c) = c.parse::<u32>() else { continue };
            let stat = std::fs::read_to_string(format!("/proc/{c}/stat")).unwrap_or_default();
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next())
                .unwrap_or('?');
            out.push((c, state));
        }
    }
    out
}

/// Before: the agent stopped the stage's watchdog (SIGTERM) but never
/// waited for it, leaving a zombie child for the agent's whole life. The
/// test hosts share this machine's process table: the agent's children
/// are read from here.
fn the_stopped_watchdog_is_reaped() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host1, "alice").connect()?;
    let (_, _, pid) = ctx.call::<whoami>(())?;
    let clean = wait_for(Duration::from_secs(5), || {
        children_states(pid).iter().all(|(_, s)| *s != 'Z')
    });
    let kids = children_states(pid);
    ensure!(clean, "zombie children of the agent {pid}: {kids:?}");
    Ok(())
}
