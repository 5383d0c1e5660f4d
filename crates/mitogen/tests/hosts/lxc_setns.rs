//! lxc (real `lxc-attach`), setns into the real containers of the test
//! bed (the unshare container by pid, the podman container through
//! `docker inspect` on podman's API, the LXC container through
//! `lxc-info`) and through stubs (LXD's `lxc info`, `machinectl show`).

use crate::ctr_util::*;
use crate::util::*;
use libtest_mimic::Trial;
use mitogen::{SetnsKind, TargetErrorKind};
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    gated(vec![
        trial("lxc::attach_and_cache", TEST_LIMIT, lxc_attach_and_cache),
        trial("lxc::missing_container_and_tool", TEST_LIMIT, lxc_missing),
        trial("setns::pid_kind", TEST_LIMIT, setns_pid),
        trial("setns::docker_kind", TEST_LIMIT, setns_docker),
        trial("setns::lxc_kind", TEST_LIMIT, setns_lxc),
        trial("setns::lxd_kind_stub", TEST_LIMIT, setns_lxd),
        trial("setns::machinectl_stub", TEST_LIMIT, machinectl),
        trial("setns::missing", TEST_LIMIT, setns_missing),
    ])
}

fn lxc_attach_and_cache() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ns = pidns_of(lxc_pid(&c.lxc_ctr)?);
    let first = r.lxc(&c.lxc_ctr).connect()?;
    check_where(&first, &c.lxc_ctr, 0, Some(&ns))?;
    let second = r.lxc(&c.lxc_ctr).connect()?;
    check_where(&second, &c.lxc_ctr, 0, Some(&ns))?;
    let up = second.agent_upload_bytes().unwrap_or(u64::MAX);
    ensure!(up == 0, "second connect uploaded {up} bytes");
    ensure!(first.name() == "lxc.mtb-lxc1", "name {}", first.name());
    Ok(())
}

fn lxc_missing() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let (k, m) = target_kind(r.lxc("nosuch-lxc").connect())?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    ensure!(m.contains("nosuch-lxc"), "{m}");
    let (k, m) = target_kind(
        r.lxc(&c.lxc_ctr)
            .lxc_attach_path("/nonexistent/lxc-attach")
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::ToolNotFound, "{k:?}: {m}");
    Ok(())
}

fn setns_pid() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let pid = c.nsctr_pid.to_string();
    let ns = pidns_of(c.nsctr_pid);
    let root = r.setns(&pid, SetnsKind::Pid).connect()?;
    check_where(&root, "mtb-ns1", 0, Some(&ns))?;
    let alice = r.setns(&pid, SetnsKind::Pid).username("alice").connect()?;
    check_where(&alice, "mtb-ns1", uid_of(c, "alice"), Some(&ns))?;
    let again = r.setns(&pid, SetnsKind::Pid).username("alice").connect()?;
    let up = again.agent_upload_bytes().unwrap_or(u64::MAX);
    ensure!(up == 0, "second connect uploaded {up} bytes");
    let e = r
        .setns(&pid, SetnsKind::Pid)
        .username("nosuchuser")
        .connect()
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    ensure!(e.contains("nosuchuser"), "unknown user: {e:?}");
    Ok(())
}

fn setns_docker() -> TestResult {
    let c = cb()?;
    let docker = c.docker.as_deref().ok_or("no docker CLI in the test bed")?;
    let r = router()?;
    let ns = pidns_of(podman_pid(&c.podman_ctr)?);
    let ctx = r
        .setns(&c.podman_ctr, SetnsKind::Docker)
        .docker_path(docker)
        .username("alice")
        .connect()?;
    check_where(&ctx, &c.podman_ctr, uid_of(c, "alice"), Some(&ns))?;
    ensure!(ctx.name() == "setns.mtb-ctr1", "name {}", ctx.name());
    Ok(())
}

fn setns_lxc() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ns = pidns_of(lxc_pid(&c.lxc_ctr)?);
    let ctx = r.setns(&c.lxc_ctr, SetnsKind::Lxc).connect()?;
    check_where(&ctx, &c.lxc_ctr, 0, Some(&ns))
}

fn setns_lxd() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .setns("mtb-lxd-setns", SetnsKind::Lxd)
        .lxc_path(format!("{}/lxc", c.stubs))
        .connect()?;
    check_where(&ctx, "mtb-ns1", 0, Some(&pidns_of(c.nsctr_pid)))?;
    let argv = stub_argv(c, "lxc", "mtb-lxd-setns")?;
    ensure!(argv == ["lxc", "info", "mtb-lxd-setns"], "argv {argv:?}");
    Ok(())
}

fn machinectl() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .machinectl("mtb-machine1")
        .machinectl_path(format!("{}/machinectl", c.stubs))
        .username("bob")
        .connect()?;
    check_where(
        &ctx,
        "mtb-ns1",
        uid_of(c, "bob"),
        Some(&pidns_of(c.nsctr_pid)),
    )?;
    let argv = stub_argv(c, "machinectl", "mtb-machine1")?;
    ensure!(
        argv == [
            "machinectl",
            "show",
            "--property=Leader",
            "--value",
            "mtb-machine1"
        ],
        "argv {argv:?}"
    );
    ensure!(
        ctx.name() == "machinectl.mtb-machine1",
        "name {}",
        ctx.name()
    );
    let (k, m) = target_kind(
        r.machinectl("missing-machine")
            .machinectl_path(format!("{}/machinectl", c.stubs))
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    ensure!(m.contains("No machine"), "{m}");
    Ok(())
}

fn setns_missing() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let limit = Duration::from_secs(10);
    let (k, m) = target_kind(r.setns("999999999", SetnsKind::Pid).connect())?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    let (k, m) = target_kind(
        r.setns("nosuch-lxc", SetnsKind::Lxc)
            .connect_timeout(limit)
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    ensure!(m.contains("doesn't exist"), "{m}");
    if let Some(d) = &c.docker {
        let (k, m) = target_kind(
            r.setns("nosuch-ctr", SetnsKind::Docker)
                .docker_path(d)
                .connect(),
        )?;
        ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    }
    let (k, m) = target_kind(
        r.setns(&c.lxc_ctr, SetnsKind::Lxc)
            .lxc_info_path("/nonexistent/lxc-info")
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::ToolNotFound, "{k:?}: {m}");
    Ok(())
}
