//! `sudo`, `su` and `doas`, with and without passwords, and every
//! parameter; wrong passwords for each method, in parallel.

use crate::util::*;
use libtest_mimic::{Failed, Trial};
use mitogen::{Error, Router};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("become::sudo_with_password", TEST_LIMIT, sudo_with_password),
        trial("become::sudo_parameters", TEST_LIMIT, sudo_parameters),
        trial("become::sudo_args", TEST_LIMIT, sudo_args),
        trial(
            "become::sudo_selinux_options_reach_sudo",
            TEST_LIMIT,
            sudo_selinux,
        ),
        trial("become::sudo_nopasswd", TEST_LIMIT, sudo_nopasswd),
        trial("become::sudo_local_as_root", TEST_LIMIT, sudo_local_as_root),
        trial("become::su_with_password", TEST_LIMIT, su_with_password),
        trial(
            "become::su_prompt_parameters",
            TEST_LIMIT,
            su_prompt_parameters,
        ),
        trial("become::doas_with_password", TEST_LIMIT, doas_with_password),
        trial("become::unknown_users", TEST_LIMIT, unknown_users),
        trial(
            "become::doas_nopass_and_parameters",
            TEST_LIMIT,
            doas_nopass,
        ),
        trial(
            "become::wrong_passwords_in_parallel",
            TEST_LIMIT,
            wrong_passwords_in_parallel,
        ),
    ]
}

fn alice_at(r: &Router, host: &str) -> Result<mitogen::Context, Failed> {
    Ok(ssh_key(r, host, "alice").connect()?)
}

fn user_of(ctx: &mitogen::Context) -> Result<String, Failed> {
    Ok(ctx.call::<whoami>(())?.1)
}

fn sudo_with_password() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let root = r.sudo().password(&t.alice_pw).via(&alice).connect()?;
    ensure!(user_of(&root)? == "root", "not root");
    let bob = r
        .sudo()
        .username("bob")
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    ensure!(user_of(&bob)? == "bob", "not bob");
    ensure!(bob.name().ends_with("sudo.bob"), "name {}", bob.name());
    Ok(())
}

fn sudo_parameters() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let home = |ctx: &mitogen::Context| -> Result<Option<String>, Failed> {
        Ok(ctx.call::<env_var>(("HOME".into(),))?)
    };
    let plain = r
        .sudo()
        .username("bob")
        .sudo_path("/usr/bin/sudo")
        .password(&t.alice_pw)
        .remote_name("plain")
        .via(&alice)
        .connect()?;
    ensure!(user_of(&plain)? == "bob", "not bob");
    let set_home = r
        .sudo()
        .username("bob")
        .set_home(true)
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    ensure!(
        home(&set_home)?.as_deref() == Some("/home/bob"),
        "set_home: HOME {:?}",
        home(&set_home)?
    );
    // preserve_env keeps a variable sudo's env_reset would drop.
    let before = alice.call::<env_var>(("SSH_CONNECTION".into(),))?;
    ensure!(before.is_some(), "alice has no SSH_CONNECTION");
    let kept = r
        .sudo()
        .username("bob")
        .preserve_env(true)
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    let after = kept.call::<env_var>(("SSH_CONNECTION".into(),))?;
    ensure!(after == before, "preserve_env: {after:?} != {before:?}");
    let reset = plain.call::<env_var>(("SSH_CONNECTION".into(),))?;
    ensure!(reset.is_none(), "without preserve_env: {reset:?}");
    Ok(())
}

fn sudo_args() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let ctx = r
        .sudo()
        .sudo_args(["-u", "bob", "-H", "-S", "-n"])
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    ensure!(user_of(&ctx)? == "bob", "-u bob ignored");
    let h = ctx.call::<env_var>(("HOME".into(),))?;
    ensure!(h.as_deref() == Some("/home/bob"), "-H ignored: {h:?}");
    // -i: bob's login shell runs the agent, in bob's home.
    let login = r
        .sudo()
        .sudo_args(["-i", "-u", "bob"])
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    ensure!(user_of(&login)? == "bob", "-i -u bob: not bob");
    let cwd = login.call::<current_dir>(())?;
    ensure!(cwd == "/home/bob", "-i: the working directory is {cwd:?}");
    let plain = r
        .sudo()
        .username("bob")
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    let cwd = plain.call::<current_dir>(())?;
    ensure!(
        cwd != "/home/bob",
        "without -i the working directory is bob's home"
    );
    for (args, named) in [
        (vec!["-s"], "-s"),
        (vec!["-u", "bob", "--shell"], "--shell"),
    ] {
        let e = expect_err(
            "bad sudo_args",
            r.sudo().sudo_args(args.clone()).via(&alice).connect(),
        )?;
        ensure!(matches!(e, Error::Stream(_)), "{args:?}: {e:?}");
        ensure!(
            e.to_string().contains(named),
            "{args:?}: message does not name {named}: {e}"
        );
    }
    Ok(())
}

/// Without SELinux enabled this sudo accepts and ignores `-r`/`-t`: check
/// that they reached its command line.
fn sudo_selinux() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let ctx = r
        .sudo()
        .username("bob")
        .selinux_role("staff_r")
        .selinux_type("staff_t")
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    let cmds = ctx.call::<ancestor_cmdlines>(())?;
    let sudo = cmds
        .iter()
        .find(|c| c.starts_with("sudo "))
        .ok_or(format!("no sudo ancestor: {cmds:?}"))?;
    ensure!(
        sudo.contains("-r staff_r") && sudo.contains("-t staff_t"),
        "sudo argv: {sudo}"
    );
    ensure!(sudo.contains("-u bob"), "sudo argv: {sudo}");
    Ok(())
}

fn sudo_nopasswd() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let bob = ssh_key(&r, &t.host2, "bob").connect()?;
    let alice = r.sudo().username("alice").via(&bob).connect()?;
    ensure!(user_of(&alice)? == "alice", "not alice");
    Ok(())
}

/// sudo from the master itself (root needs no password).
fn sudo_local_as_root() -> TestResult {
    let r = router()?;
    let ctx = r.sudo().username("dan").connect()?;
    ensure!(user_of(&ctx)? == "dan", "not dan");
    Ok(())
}

fn su_with_password() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let bob = r
        .su()
        .username("bob")
        .password(&t.bob_pw)
        .via(&alice)
        .connect()?;
    ensure!(user_of(&bob)? == "bob", "not bob");
    ensure!(bob.name().ends_with("su.bob"), "name {}", bob.name());
    Ok(())
}

fn su_prompt_parameters() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    // A prompt given in another case still matches; su_path honoured.
    let bob = r
        .su()
        .username("bob")
        .su_path("/bin/su")
        .password_prompt("PASSWORD:")
        .incorrect_prompts(["su: authentication failure"])
        .password(&t.bob_pw)
        .via(&alice)
        .connect()?;
    ensure!(user_of(&bob)? == "bob", "not bob");
    // A prompt that never comes: the connect times out, it does not hang.
    let start = Instant::now();
    let e = expect_err(
        "unexpected prompt text",
        r.su()
            .username("bob")
            .password_prompt("Kennwort:")
            .password(&t.bob_pw)
            .connect_timeout(Duration::from_secs(3))
            .via(&alice)
            .connect(),
    )?;
    ensure!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    ensure!(
        matches!(&e, Error::Timeout(_)) && e.to_string().contains("su to bob"),
        "not a timeout of su to bob: {e:?}"
    );
    // su from root needs no password.
    let root = ssh_key(&r, &t.host1, "root").connect()?;
    let dan = r.su().username("dan").via(&root).connect()?;
    ensure!(user_of(&dan)? == "dan", "not dan");
    Ok(())
}

fn doas_with_password() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let root = r.doas().password(&t.alice_pw).via(&alice).connect()?;
    ensure!(user_of(&root)? == "root", "not root");
    let bob = r
        .doas()
        .username("bob")
        .doas_path("/usr/bin/doas")
        .password_prompt("Password:")
        .incorrect_prompts(["doas: authentication failed"])
        .password(&t.alice_pw)
        .via(&alice)
        .connect()?;
    ensure!(user_of(&bob)? == "bob", "not bob");
    Ok(())
}

/// A user that does not exist: each tool's own words, not a hang.
fn unknown_users() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = alice_at(&r, &t.host1)?;
    let cases = [
        (
            "sudo",
            r.sudo()
                .username("nosuch")
                .password(&t.alice_pw)
                .via(&alice)
                .connect(),
            "unknown user",
        ),
        (
            "su",
            r.su()
                .username("nosuch")
                .password(&t.alice_pw)
                .via(&alice)
                .connect(),
            "does not exist",
        ),
        (
            "doas",
            r.doas()
                .username("nosuch")
                .password(&t.alice_pw)
                .via(&alice)
                .connect(),
            "unknown user",
        ),
    ];
    for (what, res, says) in cases {
        let e = expect_err(what, res)?;
        ensure!(matches!(e, Error::Stream(_)), "{what}: {e:?}");
        ensure!(e.to_string().contains(says), "{what}: message {e}");
    }
    Ok(())
}

fn doas_nopass() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let bob = ssh_key(&r, &t.host2, "bob").connect()?;
    let alice = r.doas().username("alice").via(&bob).connect()?;
    ensure!(user_of(&alice)? == "alice", "not alice");
    // Not permitted: a clear error, not a password error.
    let e = expect_err("bob -> root by doas", r.doas().via(&bob).connect())?;
    ensure!(matches!(e, Error::Stream(_)), "{e:?}");
    ensure!(e.to_string().contains("not permitted"), "message: {e}");
    Ok(())
}

/// Every method with a wrong password, and with none, at once: each a
/// PasswordError within a bound (PAM delays a refusal by 2-3 s).
fn wrong_passwords_in_parallel() -> TestResult {
    let t = tb()?;
    // Each attempt gets a router of its own and alice on host1 over ssh
    // (by key) to start its method from; the ssh case ignores her.
    type Attempt = fn(&Router, &mitogen::Context) -> mitogen::Result<mitogen::Context>;
    let cases: Vec<(&str, Attempt)> = vec![
        ("ssh wrong", |r, _| {
            let t = testbed().expect("checked");
            ssh_pw(r, &t.host2, "alice", "wrong-ssh").connect()
        }),
        ("sudo wrong", |r, a| {
            r.sudo().password("wrong-sudo").via(a).connect()
        }),
        ("sudo none", |r, a| r.sudo().via(a).connect()),
        ("su wrong", |r, a| {
            r.su().username("bob").password("wrong-su").via(a).connect()
        }),
        ("su none", |r, a| r.su().username("bob").via(a).connect()),
        ("doas wrong", |r, a| {
            r.doas()
                .username("bob")
                .password("wrong-doas")
                .via(a)
                .connect()
        }),
        ("doas none", |r, a| {
            r.doas().username("bob").via(a).connect()
        }),
        // incorrect_prompts replace the defaults, matched without case.
        ("su custom incorrect", |r, a| {
            r.su()
                .username("bob")
                .incorrect_prompts(["AUTHENTICATION FAILURE"])
                .password("wrong-su2")
                .via(a)
                .connect()
        }),
        ("doas custom incorrect", |r, a| {
            r.doas()
                .username("bob")
                .incorrect_prompts(["Authentication FAILED"])
                .password("wrong-doas2")
                .via(a)
                .connect()
        }),
        // A list that does not match: su's refusal is then only its exit.
        ("su unmatched incorrect (stream)", |r, a| {
            r.su()
                .username("bob")
                .incorrect_prompts(["no such text"])
                .password("wrong-su3")
                .via(a)
                .connect()
        }),
    ];
    let start = Instant::now();
    let host = t.host1.clone();
    let handles: Vec<_> = cases
        .into_iter()
        .map(|(what, f)| {
            let host = host.clone();
            std::thread::spawn(move || {
                let r = Router::new().map_err(|e| e.to_string())?;
                let alice = ssh_key(&r, &host, "alice")
                    .connect()
                    .map_err(|e| format!("ssh alice@{host}: {e}"))?;
                let t0 = Instant::now();
                let res = f(&r, &alice);
                eprintln!("{what}: {:?}", t0.elapsed());
                Ok::<_, String>((what, res.map(|_| ())))
            })
        })
        .collect();
    let mut failures = Vec::new();
    for h in handles {
        let (what, res) = bounded(
            "a wrong-password attempt",
            Duration::from_secs(40),
            move || h.join(),
        )?
        .map_err(|_| "attempt panicked")??;
        match res {
            Err(Error::Stream(e)) if what.ends_with("(stream)") => {
                let m = e.to_string();
                if !m.contains("Authentication failure") || m.contains("wrong-") {
                    failures.push(format!("{what}: message {m:?}"));
                }
            }
            Err(Error::Password(e)) if !what.ends_with("(stream)") => {
                let m = e.to_string();
                if m.contains("wrong-") {
                    failures.push(format!("{what}: the password is in the message: {m}"));
                }
                if what.ends_with("none") && !m.contains("none was given") {
                    failures.push(format!("{what}: message {m:?}"));
                }
            }
            other => failures.push(format!("{what}: wrong outcome: {other:?}")),
        }
    }
    ensure!(failures.is_empty(), "{failures:#?}");
    ensure!(
        start.elapsed() < Duration::from_secs(30),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

#[mitogen::remote]
fn current_dir() -> String {
    std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}
