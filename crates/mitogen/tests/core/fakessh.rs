//! `mitogen::fakessh`: real rsync, scp, git and sh run with a fake `ssh`
//! that reaches a local context. The scenarios are shared with the
//! real-host tests (`tests/common/fakessh_cases.rs`); a tool that is not
//! installed makes its tests ignored, with the reason printed
//! (`scripts/testbed/setup.sh` installs them).

#[path = "../common/fakessh_cases.rs"]
pub mod cases;

use crate::util::{router, trial, TestResult};
use libtest_mimic::Trial;
use mitogen::Context;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

pub fn tests() -> Vec<Trial> {
    let t = |name: &str, tools: &[&str], body: fn() -> TestResult| {
        let missing: Vec<&str> = tools.iter().copied().filter(|t| !cases::have(t)).collect();
        let trial = trial(&format!("fakessh::{name}"), LIMIT, body);
        if missing.is_empty() {
            trial
        } else {
            eprintln!(
                "fakessh::{name}: IGNORED: {} not installed",
                missing.join(", ")
            );
            trial.with_ignored_flag(true)
        }
    };
    vec![
        t("rsync_both_ways", &["rsync"], || {
            with_local(cases::rsync_both_ways)
        }),
        t("scp_both_ways", &["scp"], || {
            with_local(cases::scp_both_ways)
        }),
        t("git_clone_and_push", &["git"], || {
            with_local(cases::git_clone_and_push)
        }),
        t("concurrent_invocations", &["scp"], || {
            with_local(cases::concurrent_invocations)
        }),
        t("deadline_kills_everything", &[], || {
            with_local(cases::deadline_kills_everything)
        }),
        t("statuses", &[], || with_local(cases::statuses)),
        t("large_stdin_bounded", &[], || {
            with_local(cases::large_stdin)
        }),
        t("run_inherits_stdio", &[], run_inherits_stdio),
        t("rendezvous_is_private", &[], rendezvous_is_private),
        t(
            "lost_destination_ends_the_ssh",
            &[],
            lost_destination_ends_the_ssh,
        ),
        t("master_in_a_child_bounded", &[], master_in_a_child_bounded),
        {
            // Root only: the peer becomes another user with setpriv.
            let root = crate::util::euid() == 0;
            let trial = t(
                "another_user_is_refused",
                &["setpriv", "/usr/bin/python3"],
                another_user_is_refused,
            );
            if root {
                trial
            } else {
                eprintln!("fakessh::another_user_is_refused: IGNORED: not root");
                trial.with_ignored_flag(true)
            }
        },
    ]
}

/// Runs a scenario against a fresh local context.
fn with_local(f: fn(&Context) -> TestResult) -> TestResult {
    let r = router()?;
    let ctx = r.local().remote_name("fakessh-dest").connect()?;
    f(&ctx)
}

/// `fakessh::run` as the seed has it: arguments, a deadline, the exit
/// status; an empty argument list is an error.
fn run_inherits_stdio() -> TestResult {
    let r = router()?;
    let ctx = r.local().connect()?;
    let st = mitogen::fakessh::run(
        &ctx,
        &["ssh", "host", "exit 3"],
        Some(Duration::from_secs(30)),
    )?;
    ensure!(st.code() == Some(3), "status {st}");
    let none: [&str; 0] = [];
    ensure!(
        mitogen::fakessh::run(&ctx, &none, None).is_err(),
        "no tool accepted"
    );
    let missing = mitogen::fakessh::run(&ctx, &["/nonexistent/tool"], None);
    ensure!(
        missing
            .as_ref()
            .is_err_and(|e| e.to_string().contains("/nonexistent/tool")),
        "a missing tool: {missing:?}"
    );
    Ok(())
}

/// The socket is 0600 in a 0700 directory of this user, and a peer
/// without the run's token runs nothing.
fn rendezvous_is_private() -> TestResult {
    let r = router()?;
    let ctx = r.local().connect()?;
    let work = cases::Work::new("private")?;
    let script = format!(
        "s=$MITOGEN_FAKESSH_SOCKET; stat -c '%a %u' \"${{s%/*}}\" \"$s\"; \
         MITOGEN_FAKESSH_TOKEN=wrong ssh h 'touch {}/ran'; echo $?",
        work.s()
    );
    let out = cases::through_ok(&ctx, &work, &script)?;
    let uid = crate::util::euid();
    ensure!(
        out == format!("700 {uid}\n600 {uid}\n255\n"),
        "modes, owner, wrong token: {out:?}"
    );
    ensure!(
        !work.path().join("ran").exists(),
        "a wrong token ran a command"
    );
    Ok(())
}

/// The destination disconnecting mid-command: the tool's ssh ends at
/// once with 255 (as ssh does when its connection drops), and the
/// command does not outlive its context.
fn lost_destination_ends_the_ssh() -> TestResult {
    let r = router()?;
    let ctx = r.local().connect()?;
    let work = cases::Work::new("lost")?;
    let marker = format!("sleep {}", 800_000 + std::process::id() % 99_999);
    let (tx, rx) = std::sync::mpsc::channel();
    let (c, script) = (ctx.clone(), format!("ssh h 'exec {marker}'; echo $?"));
    std::thread::spawn(move || {
        let _ = tx.send(cases::through(&c, &work, &script, Duration::from_secs(60)));
    });
    let started = crate::util::wait_for(Duration::from_secs(20), || {
        cases::remote_procs_with(&ctx, &marker).is_ok_and(|s| !s.trim().is_empty())
    });
    ensure!(started, "the remote command never started");
    r.disconnect(&ctx)?;
    let (st, out, err) = rx
        .recv_timeout(Duration::from_secs(20))
        .map_err(|_| "the tool did not end after its destination went")??;
    ensure!(
        st.is_ok_and(|s| s.success()) && out == "255\n",
        "{out:?} {err}"
    );
    ensure!(err.contains("mitogen fakessh"), "no reason given: {err}");
    let r2 = router()?;
    let other = r2.local().connect()?;
    let gone = crate::util::wait_for(Duration::from_secs(10), || {
        cases::remote_procs_with(&other, &marker).is_ok_and(|s| s.trim().is_empty())
    });
    ensure!(gone, "{marker} outlived its context");
    Ok(())
}

/// In the context it runs in: connects a child of its own and runs
/// `ssh h cat < in > out` through fakessh to it; its peak memory before
/// and after, in KiB.
#[mitogen::remote]
fn cat_through_a_child(router: &mitogen::Router, dir: String) -> Result<(u64, u64), String> {
    let dest = router.local().connect().map_err(|e| e.to_string())?;
    let before = cases::peak_rss_kib();
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg("ssh h cat < in > out").current_dir(&dir);
    let st = mitogen::fakessh::Tool::new(&dest, cmd)
        .deadline(Duration::from_secs(60))
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("the tool: {st}"));
    }
    Ok((before, cases::peak_rss_kib()))
}

/// The master side run in a child context (so its memory is its own):
/// 64 MiB pass through it with its peak memory growing far less.
fn master_in_a_child_bounded() -> TestResult {
    let r = router()?;
    let master = r.local().remote_name("fakessh-master").connect()?;
    let work = cases::Work::new("child-master")?;
    cases::local_sh(&format!(
        "head -c 67108864 /dev/urandom > '{}/in'",
        work.s()
    ))?;
    let (before, after) = master.call::<cat_through_a_child>((work.s(),))?;
    let a = cases::local_sh(&format!("sha256sum < '{}/in'", work.s()))?;
    let b = cases::local_sh(&format!("sha256sum < '{}/out'", work.s()))?;
    ensure!(a == b, "64 MiB came back different");
    ensure!(
        after.saturating_sub(before) < 24 * 1024,
        "the master's peak memory grew by {} KiB for 64 MiB",
        after.saturating_sub(before)
    );
    Ok(())
}

/// A client of the rendezvous written apart from the shim (Python): it
/// sends a well-formed request with the run's token and descriptors,
/// then prints `answered` or `refused`.
const CLIENT: &str = r#"
import os, socket, sys
tok = os.environ["MITOGEN_FAKESSH_TOKEN"].encode()
cmd = sys.argv[1].encode()
body = b"\x94" + b"\xd9" + bytes([len(tok)]) + tok + b"\xc4" + bytes([len(cmd)]) + cmd + b"\xc2\x90"
rec = b"MFS1" + len(body).to_bytes(4, "big") + body
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["MITOGEN_FAKESSH_SOCKET"])
try:
    socket.send_fds(s, [rec], [0, 1, 2])
    got = s.recv(4)
except OSError:  # closed by the listener, before or after the request
    got = b""
print("answered" if got == b"MFS1" else "refused", flush=True)
"#;

/// The listener checks the peer's user: a process of another user that
/// reaches the socket (its directory and mode opened for the test) and
/// sends the right token and a well-formed request runs nothing. The
/// same client as this user is answered, so the refusal is the check's.
fn another_user_is_refused() -> TestResult {
    let r = router()?;
    let ctx = r.local().connect()?;
    let work = cases::Work::new("uid")?;
    std::fs::write(work.path().join("client.py"), CLIENT)?;
    let w = work.s();
    let script = format!(
        "chmod 755 '{w}'; chmod 644 '{w}/client.py'; \
         s=$MITOGEN_FAKESSH_SOCKET; chmod 711 \"${{s%/*}}\"; chmod 666 \"$s\"; \
         /usr/bin/python3 client.py 'touch {w}/by-me' < /dev/null; \
         setpriv --reuid=65534 --regid=65534 --clear-groups \
           /usr/bin/python3 client.py 'touch {w}/by-nobody' < /dev/null"
    );
    let out = cases::through_ok(&ctx, &work, &script)?;
    ensure!(out == "answered\nrefused\n", "clients: {out:?}");
    ensure!(
        work.path().join("by-me").exists(),
        "this user's request did not run"
    );
    ensure!(
        !work.path().join("by-nobody").exists(),
        "another user's request ran"
    );
    Ok(())
}
