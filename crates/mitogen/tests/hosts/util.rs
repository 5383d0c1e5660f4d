//! Shared helpers: the test bed's description, the per-test watchdog,
//! ssh builders for the test hosts, and functions the tests call remotely.

#[macro_use]
#[path = "../common/harness.rs"]
mod harness;
pub use harness::{bounded, example, router, trial, wait_for, TestResult};

use libtest_mimic::Failed;
use mitogen::{Context, Router};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// Hard bound on one test (a hang is reported as a failure).
pub const TEST_LIMIT: Duration = Duration::from_secs(90);

/// The test bed, read from the env file `scripts/testbed/setup.sh` writes
/// (`$MITOGEN_TESTBED`, default `/var/lib/mitogen-testbed/env`).
#[derive(Debug)]
pub struct Testbed {
    pub host1: String,
    pub host2: String,
    pub host3: String,
    pub unreachable: String,
    pub key: String,
    pub known_hosts: String,
    pub alice_pw: String,
    pub bob_pw: String,
    pub erin_pw: String,
}

pub fn testbed() -> Result<&'static Testbed, String> {
    static TB: OnceLock<Result<Testbed, String>> = OnceLock::new();
    TB.get_or_init(|| {
        let path = std::env::var("MITOGEN_TESTBED")
            .unwrap_or_else(|_| "/var/lib/mitogen-testbed/env".into());
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("no test bed: cannot read {path}: {e}"))?;
        let vars: HashMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |k: &str| {
            vars.get(k)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("{path} lacks {k}"))
        };
        if !std::path::Path::new("/run/netns/mtb-host1").exists() {
            return Err("the test bed's namespaces are gone (run scripts/testbed/setup.sh)".into());
        }
        Ok(Testbed {
            host1: get("TB_HOST1")?,
            host2: get("TB_HOST2")?,
            host3: get("TB_HOST3")?,
            unreachable: get("TB_UNREACHABLE")?,
            key: get("TB_KEY")?,
            known_hosts: get("TB_KNOWN_HOSTS")?,
            alice_pw: get("TB_ALICE_PW")?,
            bob_pw: get("TB_BOB_PW")?,
            erin_pw: get("TB_ERIN_PW")?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// The test bed, or a failure (tests only run when it exists).
pub fn tb() -> Result<&'static Testbed, Failed> {
    testbed().map_err(Failed::from)
}

/// ssh options every test uses: the test bed's known hosts only.
pub fn known_hosts_args(file: &str) -> Vec<String> {
    vec![
        "-o".into(),
        format!("UserKnownHostsFile={file}"),
        "-o".into(),
        "GlobalKnownHostsFile=/dev/null".into(),
    ]
}

/// `ssh user@host` with the test bed's key and known hosts.
pub fn ssh_key<'r>(router: &'r Router, host: &str, user: &str) -> mitogen::SshBuilder<'r> {
    let t = testbed().expect("test bed checked before the test ran");
    router
        .ssh(host)
        .username(user)
        .identity_file(&t.key)
        .ssh_args(known_hosts_args(&t.known_hosts))
        .connect_timeout(Duration::from_secs(20))
}

/// `ssh user@host` authenticated by password only.
pub fn ssh_pw<'r>(router: &'r Router, host: &str, user: &str, pw: &str) -> mitogen::SshBuilder<'r> {
    let t = testbed().expect("test bed checked before the test ran");
    router
        .ssh(host)
        .username(user)
        .password(pw)
        .ssh_args(known_hosts_args(&t.known_hosts))
        .connect_timeout(Duration::from_secs(20))
}

/// Where a context runs: (hostname, user name, pid).
#[mitogen::remote]
pub fn whoami() -> (String, String, u32) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    (host.trim().to_string(), user_name(), std::process::id())
}

/// The effective user's name, from `/proc/self/status` and `/etc/passwd`.
pub fn user_name() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?")
        .to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid).then(|| f[0].to_string())
        })
        .unwrap_or(uid)
}

/// The agent's executable path.
#[mitogen::remote]
pub fn exe_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// An environment variable of the context.
#[mitogen::remote]
pub fn env_var(name: String) -> Option<String> {
    std::env::var(name).ok()
}

/// Sleeps, then returns.
#[mitogen::remote]
pub fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// The context's ancestors: (pid, comm), nearest first, up to 8.
#[mitogen::remote]
pub fn ancestors() -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let mut pid = std::process::id();
    for _ in 0..8 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            break;
        };
        let Some(close) = stat.rfind(')') else { break };
        let ppid: u32 = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid <= 1 {
            break;
        }
        let comm = std::fs::read_to_string(format!("/proc/{ppid}/comm")).unwrap_or_default();
        out.push((ppid, comm.trim().to_string()));
        pid = ppid;
    }
    out
}

/// The nearest `sshd` ancestor of a context: its per-connection sshd.
pub fn session_sshd(ctx: &Context) -> Result<u32, Failed> {
    let chain = ctx
        .call::<ancestors>(())
        .map_err(|e| format!("ancestors: {e}"))?;
    chain
        .iter()
        .find(|(_, c)| c == "sshd")
        .map(|(p, _)| *p)
        .ok_or_else(|| format!("no sshd among the ancestors {chain:?}").into())
}

/// Sends `sig` to `pid` with kill(1).
pub fn signal(pid: u32, sig: &str) -> TestResult {
    let st = std::process::Command::new("kill")
        .args([format!("-{sig}"), pid.to_string()])
        .status()
        .map_err(|e| format!("kill: {e}"))?;
    ensure!(st.success(), "kill -{sig} {pid} failed");
    Ok(())
}

/// Runs `f` and returns its error, failing if it succeeded.
pub fn expect_err<T>(what: &str, r: mitogen::Result<T>) -> Result<mitogen::Error, Failed> {
    match r {
        Ok(_) => Err(format!("{what}: succeeded but should have failed").into()),
        Err(e) => Ok(e),
    }
}

/// Command lines of the context's ancestors, nearest first, up to 8
/// (arguments joined by spaces).
#[mitogen::remote]
pub fn ancestor_cmdlines() -> Vec<String> {
    ancestors()
        .into_iter()
        .map(|(pid, _)| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default()
        })
        .collect()
}
