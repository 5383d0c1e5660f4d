//! The agent cache on real hosts: upload once, then cached; noexec mounts
//! skipped; wrong owner or mode refused; a full disk reported.

use crate::util::*;
use libtest_mimic::Trial;
use mitogen::Error;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("cache::upload_then_cached", TEST_LIMIT, upload_then_cached),
        trial("cache::noexec_falls_back", TEST_LIMIT, noexec_falls_back),
        trial(
            "cache::noexec_everywhere_refused",
            TEST_LIMIT,
            noexec_everywhere_refused,
        ),
        trial(
            "cache::wrong_owner_or_mode_refused",
            TEST_LIMIT,
            wrong_owner_or_mode_refused,
        ),
        trial("cache::full_disk", TEST_LIMIT, full_disk),
    ]
}

/// fay's cache dirs (fay is this test's alone) are emptied.
fn empty_fays_cache() {
    for d in [
        "/home/fay/.cache/mitogen",
        "/dev/shm/mitogen-fay",
        "/tmp/mitogen-fay",
    ] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The first connect uploads, the next finds the agent cached; then, from
/// an empty cache again, four connects at once upload it once between
/// them (the stage's lock), and all four work.
fn upload_then_cached() -> TestResult {
    let t = tb()?;
    empty_fays_cache();
    let size = std::fs::metadata("/proc/self/exe")?.len();
    let r = router()?;
    let first = ssh_key(&r, &t.host1, "fay").connect()?;
    ensure!(first.call::<whoami>(())?.1 == "fay", "not fay");
    ensure!(
        first.agent_upload_bytes() == Some(size),
        "first connect sent {:?} of {size}",
        first.agent_upload_bytes()
    );
    let exe = first.call::<exe_path>(())?;
    ensure!(
        exe.starts_with("/home/fay/.cache/mitogen/"),
        "agent at {exe}"
    );
    let second = ssh_key(&r, &t.host1, "fay").connect()?;
    ensure!(
        second.agent_upload_bytes() == Some(0),
        "cached connect sent {:?}",
        second.agent_upload_bytes()
    );
    ensure!(second.call::<exe_path>(())? == exe, "not the cached agent");

    empty_fays_cache();
    let host = t.host1.clone();
    let at_once: Vec<_> = (0..4)
        .map(|_| {
            let (r, host) = (r.clone(), host.clone());
            std::thread::spawn(move || ssh_key(&r, &host, "fay").connect())
        })
        .collect();
    let mut sent = Vec::new();
    for h in at_once {
        let ctx = h.join().map_err(|_| "a connect panicked")??;
        ensure!(ctx.call::<exe_path>(())? == exe, "not the shared agent");
        sent.push(ctx.agent_upload_bytes().unwrap_or(u64::MAX));
    }
    sent.sort();
    ensure!(
        sent == [0, 0, 0, size],
        "four connects at once sent {sent:?}: the agent ({size} bytes) should go once"
    );
    Ok(())
}

/// On host2 bob's ~/.cache is mounted noexec: the agent lands in /dev/shm.
fn noexec_falls_back() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let bob = ssh_key(&r, &t.host2, "bob").connect()?;
    let exe = bob.call::<exe_path>(())?;
    ensure!(exe.starts_with("/dev/shm/mitogen-bob/"), "agent at {exe}");
    Ok(())
}

/// On host3 /tmp, /dev/shm and bob's ~/.cache are all noexec.
fn noexec_everywhere_refused() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let e = expect_err("bob on host3", ssh_key(&r, &t.host3, "bob").connect())?;
    ensure!(matches!(e, Error::Stream(_)), "{e:?}");
    let m = e.to_string();
    ensure!(
        m.contains("no usable agent cache directory"),
        "message: {m}"
    );
    for d in [
        "/home/bob/.cache/mitogen(noexec)",
        "/dev/shm/mitogen-bob(noexec)",
        "/tmp/mitogen-bob(noexec)",
    ] {
        ensure!(m.contains(d), "message does not name {d}: {m}");
    }
    Ok(())
}

/// carol's directories have a wrong mode or owner (set up by the test
/// bed): each is refused, by name, and nothing is written to them.
fn wrong_owner_or_mode_refused() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let e = expect_err("carol", ssh_key(&r, &t.host1, "carol").connect())?;
    ensure!(matches!(e, Error::Stream(_)), "{e:?}");
    let m = e.to_string();
    for d in [
        "/home/carol/.cache/mitogen(mode drwxrwxrwx)",
        "/dev/shm/mitogen-carol(owner",
        "/tmp/mitogen-carol(owner 0)",
    ] {
        ensure!(m.contains(d), "message does not name {d}: {m}");
    }
    for d in [
        "/home/carol/.cache/mitogen",
        "/dev/shm/mitogen-carol",
        "/tmp/mitogen-carol",
    ] {
        let n = std::fs::read_dir(d)?.count();
        ensure!(n == 0, "{d} was written to ({n} entries)");
    }
    Ok(())
}

/// On host3 alice's ~/.cache is a 256 KiB filesystem.
fn full_disk() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let e = expect_err("alice on host3", ssh_key(&r, &t.host3, "alice").connect())?;
    ensure!(matches!(e, Error::Stream(_)), "{e:?}");
    let m = e.to_string();
    // Every candidate is named with why it was passed over: the full one
    // (tried, then the next), and the noexec ones.
    for d in [
        "/home/alice/.cache/mitogen(cannot write: disk full?)",
        "/dev/shm/mitogen-alice(noexec)",
        "/tmp/mitogen-alice(noexec)",
    ] {
        ensure!(m.contains(d), "message does not name {d}: {m}");
    }
    Ok(())
}
