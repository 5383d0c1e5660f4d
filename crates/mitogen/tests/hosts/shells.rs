//! A user whose login shell is tcsh (erin in the test bed), as root's is
//! on FreeBSD: ssh runs the remote command through it, and so does su. The
//! csh family rejects a newline inside quotes and has no `N<&M`
//! redirection, so the first stage must reach `/bin/sh` as one line that
//! csh passes on untouched.

use crate::util::*;
use libtest_mimic::Trial;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("shells::ssh_key_to_tcsh_user", TEST_LIMIT, ssh_key_tcsh),
        trial("shells::ssh_password_to_tcsh_user", TEST_LIMIT, ssh_pw_tcsh),
        trial("shells::su_to_tcsh_user", TEST_LIMIT, su_tcsh),
    ]
}

/// The login shell of the user a context runs as.
#[mitogen::remote]
fn login_shell() -> std::io::Result<String> {
    let uid = std::fs::read_to_string("/proc/self/status")?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    Ok(passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 6 && f[2] == uid)
        .map(|f| f[6].to_string())
        .unwrap_or_default())
}

fn expect_erin(ctx: &mitogen::Context) -> TestResult {
    let (_, user, _) = ctx.call::<whoami>(())?;
    ensure!(user == "erin", "runs as {user}");
    let shell = ctx.call::<login_shell>(())?;
    ensure!(
        shell.ends_with("tcsh"),
        "erin's shell is {shell:?}, not tcsh"
    );
    Ok(())
}

fn ssh_key_tcsh() -> TestResult {
    let t = tb()?;
    let r = router()?;
    expect_erin(&ssh_key(&r, &t.host1, "erin").connect()?)
}

fn ssh_pw_tcsh() -> TestResult {
    let t = tb()?;
    let r = router()?;
    expect_erin(&ssh_pw(&r, &t.host2, "erin", &t.erin_pw).connect()?)
}

fn su_tcsh() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = ssh_key(&r, &t.host1, "alice").connect()?;
    let erin = r
        .su()
        .username("erin")
        .password(&t.erin_pw)
        .via(&alice)
        .connect()?;
    expect_erin(&erin)
}
