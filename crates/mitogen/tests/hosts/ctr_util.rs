//! What the container tests share: the container part of the test bed
//! (`scripts/testbed/containers.sh`), a call that says where it runs, and
//! checks on what a connect leaves behind.

use crate::util::*;
use libtest_mimic::{Failed, Trial};
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

/// The container part of the test bed.
#[derive(Debug)]
pub struct Ctr {
    pub rootfs: String,
    pub image: String,
    pub podman_ctr: String,
    /// The real docker CLI talking to podman's API (a wrapper setting
    /// `DOCKER_HOST`), if the docker CLI is installed.
    pub docker: Option<String>,
    pub lxc_ctr: String,
    pub nsctr_pid: u32,
    pub stubs: String,
    pub dir: String,
}

pub fn ctr_bed() -> Result<&'static Ctr, String> {
    static C: OnceLock<Result<Ctr, String>> = OnceLock::new();
    C.get_or_init(|| {
        testbed()?;
        let path = std::env::var("MITOGEN_TESTBED")
            .unwrap_or_else(|_| "/var/lib/mitogen-testbed/env".into());
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
        let vars: HashMap<&str, &str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |k: &str| {
            vars.get(k).map(|v| v.to_string()).ok_or_else(|| {
                format!("{path} lacks {k} (the test bed was built without containers)")
            })
        };
        let pid: u32 = get("TB_NSCTR_PID")?
            .parse()
            .map_err(|e| format!("TB_NSCTR_PID: {e}"))?;
        if !std::path::Path::new(&format!("/proc/{pid}/ns/pid")).exists() {
            return Err("the unshare container is gone (run scripts/testbed/setup.sh)".into());
        }
        Ok(Ctr {
            rootfs: get("TB_ROOTFS")?,
            image: get("TB_IMAGE")?,
            podman_ctr: get("TB_PODMAN_CTR")?,
            docker: get("TB_DOCKER").ok().filter(|d| !d.is_empty()),
            lxc_ctr: get("TB_LXC_CTR")?,
            nsctr_pid: pid,
            stubs: get("TB_STUBS")?,
            dir: get("TB_DIR")?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

pub fn cb() -> Result<&'static Ctr, Failed> {
    ctr_bed().map_err(Failed::from)
}

/// Marks `trials` ignored when the container test bed is absent.
pub fn gated(trials: Vec<Trial>) -> Vec<Trial> {
    match ctr_bed() {
        Ok(_) => trials,
        Err(why) => {
            if testbed().is_ok() {
                eprintln!("*** container tests SKIPPED: {why}");
            }
            trials
                .into_iter()
                .map(|t| t.with_ignored_flag(true))
                .collect()
        }
    }
}

/// Where a context runs: hostname, uid, pid namespace (`pid:[N]`).
#[mitogen::remote]
pub fn where_am_i() -> (String, u32, String) {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    let ns = std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    (host.trim().to_string(), uid, ns)
}

/// The pid namespace of process `pid` here.
pub fn pidns_of(pid: u32) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/pid"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A user's uid, from the test bed's rootfs.
pub fn uid_of(c: &Ctr, user: &str) -> u32 {
    std::fs::read_to_string(format!("{}/etc/passwd", c.rootfs))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&user)).then(|| f.get(2).and_then(|u| u.parse().ok()))?
        })
        .unwrap_or(u32::MAX)
}

/// Calls `where_am_i` in `ctx` (bounded) and checks hostname, uid and
/// that the pid namespace is `ns` (when given) and not ours.
pub fn check_where(ctx: &mitogen::Context, host: &str, uid: u32, ns: Option<&str>) -> TestResult {
    let c = ctx.clone();
    let (h, u, n) = bounded("a call", Duration::from_secs(20), move || {
        c.call::<where_am_i>(())
    })??;
    ensure!(h == host, "{}: hostname {h}, expected {host}", ctx.name());
    ensure!(u == uid, "{}: uid {u}, expected {uid}", ctx.name());
    ensure!(
        n != pidns_of(std::process::id()),
        "{}: runs in our own pid namespace {n}",
        ctx.name()
    );
    if let Some(ns) = ns {
        ensure!(n == ns, "{}: pid namespace {n}, expected {ns}", ctx.name());
    }
    Ok(())
}

/// The main pid of podman container `name`.
pub fn podman_pid(name: &str) -> Result<u32, Failed> {
    let out = std::process::Command::new("podman")
        .args(["inspect", "-f", "{{.State.Pid}}", name])
        .output()
        .map_err(|e| format!("podman inspect: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("podman inspect {name}: {e}").into())
}

/// The init pid of LXC container `name`.
pub fn lxc_pid(name: &str) -> Result<u32, Failed> {
    let out = std::process::Command::new("lxc-info")
        .args(["-n", name, "-pH"])
        .output()
        .map_err(|e| format!("lxc-info: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("lxc-info {name}: {e}").into())
}

/// Temporary containers (label `mitogen.temporary`) that exist now.
pub fn temporaries() -> Vec<String> {
    let out = std::process::Command::new("podman")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=mitogen.temporary",
            "--format",
            "{{.Names}}",
        ])
        .output();
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    })
    .unwrap_or_default()
}

/// The error kind of a failed connect, or a failure saying what came.
pub fn target_kind(
    r: mitogen::Result<mitogen::Context>,
) -> Result<(mitogen::TargetErrorKind, String), Failed> {
    match r {
        Err(mitogen::Error::Target(e)) => Ok((e.kind(), e.to_string())),
        Err(e) => Err(format!("expected a TargetError, got {e:?}").into()),
        Ok(c) => Err(format!("expected a TargetError, connected {}", c.name()).into()),
    }
}

/// The argv a stub recorded for container `key` (its first element the
/// tool's name).
pub fn stub_argv(c: &Ctr, tool: &str, key: &str) -> Result<Vec<String>, Failed> {
    let path = format!("{}/stubs-log/{tool}.{key}", c.dir);
    let raw = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}
