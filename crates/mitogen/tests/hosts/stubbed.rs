//! The tools with no engine on this machine (kubectl, LXD's lxc, incus,
//! jexec, buildah), through the test bed's stubs: each stub refuses any
//! argv but the one the real tool would get from us, records it, and runs
//! the command for real in the unshare container (busybox, no C library),
//! so the whole bootstrap runs. Each test checks the exact argv, a call
//! inside, `username` where the method has one, a missing container
//! (the real tool's message) and a missing tool binary.

use crate::ctr_util::*;
use crate::util::*;
use libtest_mimic::{Failed, Trial};
use mitogen::TargetErrorKind;

pub fn tests() -> Vec<Trial> {
    gated(vec![
        trial("stubbed::kubectl", TEST_LIMIT, kubectl),
        trial("stubbed::lxd", TEST_LIMIT, lxd),
        trial("stubbed::incus", TEST_LIMIT, incus),
        trial("stubbed::jail", TEST_LIMIT, jail),
        trial("stubbed::buildah", TEST_LIMIT, buildah),
    ])
}

/// `argv` is `want` followed by `/bin/sh -c STAGE`.
fn check_argv(argv: &[String], want: &[&str]) -> TestResult {
    let n = want.len();
    ensure!(
        argv.len() == n + 3,
        "argv {argv:?}, expected {want:?} + sh -c STAGE"
    );
    ensure!(
        argv[..n] == *want,
        "argv {:?}, expected {want:?}",
        &argv[..n]
    );
    ensure!(
        argv[n] == "/bin/sh" && argv[n + 1] == "-c" && argv[n + 2].starts_with("umask 077"),
        "argv tail {:?}",
        &argv[n..]
    );
    Ok(())
}

fn stub(c: &Ctr, tool: &str) -> String {
    format!("{}/{tool}", c.stubs)
}

fn expect_kind(
    r: mitogen::Result<mitogen::Context>,
    want: TargetErrorKind,
) -> Result<String, Failed> {
    let (k, m) = target_kind(r)?;
    ensure!(k == want, "{k:?}, expected {want:?}: {m}");
    Ok(m)
}

fn kubectl() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .kubectl("mtb-pod1")
        .kubectl_path(stub(c, "kubectl"))
        .kubectl_args(["--context", "test", "-n", "default"])
        .connect()?;
    check_where(&ctx, "mtb-ns1", 0, Some(&pidns_of(c.nsctr_pid)))?;
    check_argv(
        &stub_argv(c, "kubectl", "mtb-pod1")?,
        &[
            "kubectl",
            "--context",
            "test",
            "-n",
            "default",
            "exec",
            "-i",
            "mtb-pod1",
            "--",
        ],
    )?;
    ensure!(ctx.name() == "kubectl.mtb-pod1", "name {}", ctx.name());
    let again = r
        .kubectl("mtb-pod1")
        .kubectl_path(stub(c, "kubectl"))
        .connect()?;
    let up = again.agent_upload_bytes().unwrap_or(u64::MAX);
    ensure!(up == 0, "second connect uploaded {up} bytes");
    let m = expect_kind(
        r.kubectl("missing-pod")
            .kubectl_path(stub(c, "kubectl"))
            .connect(),
        TargetErrorKind::NotFound,
    )?;
    ensure!(m.contains("pods \"missing-pod\" not found"), "{m}");
    expect_kind(
        r.kubectl("mtb-pod1")
            .kubectl_path("/nonexistent/kubectl")
            .connect(),
        TargetErrorKind::ToolNotFound,
    )?;
    Ok(())
}

fn lxd() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r.lxd("mtb-lxd1").lxc_path(stub(c, "lxc")).connect()?;
    check_where(&ctx, "mtb-ns1", 0, Some(&pidns_of(c.nsctr_pid)))?;
    check_argv(
        &stub_argv(c, "lxc", "mtb-lxd1")?,
        &["lxc", "exec", "--mode=non-interactive", "mtb-lxd1", "--"],
    )?;
    let m = expect_kind(
        r.lxd("missing-lxd").lxc_path(stub(c, "lxc")).connect(),
        TargetErrorKind::NotFound,
    )?;
    ensure!(m.contains("Instance not found"), "{m}");
    expect_kind(
        r.lxd("mtb-lxd1").lxc_path("/nonexistent/lxc").connect(),
        TargetErrorKind::ToolNotFound,
    )?;
    Ok(())
}

fn incus() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .incus("mtb-incus1")
        .incus_path(stub(c, "incus"))
        .connect()?;
    check_where(&ctx, "mtb-ns1", 0, Some(&pidns_of(c.nsctr_pid)))?;
    check_argv(
        &stub_argv(c, "incus", "mtb-incus1")?,
        &[
            "incus",
            "exec",
            "--mode=non-interactive",
            "mtb-incus1",
            "--",
        ],
    )?;
    expect_kind(
        r.incus("missing-incus")
            .incus_path(stub(c, "incus"))
            .connect(),
        TargetErrorKind::NotFound,
    )?;
    expect_kind(
        r.incus("mtb-incus1")
            .incus_path("/nonexistent/incus")
            .connect(),
        TargetErrorKind::ToolNotFound,
    )?;
    Ok(())
}

fn jail() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .jail("mtb-jail1")
        .username("alice")
        .jexec_path(stub(c, "jexec"))
        .connect()?;
    check_where(
        &ctx,
        "mtb-ns1",
        uid_of(c, "alice"),
        Some(&pidns_of(c.nsctr_pid)),
    )?;
    check_argv(
        &stub_argv(c, "jexec", "mtb-jail1")?,
        &["jexec", "-U", "alice", "mtb-jail1"],
    )?;
    let root = r.jail("mtb-jail2").jexec_path(stub(c, "jexec")).connect()?;
    check_where(&root, "mtb-ns1", 0, None)?;
    check_argv(
        &stub_argv(c, "jexec", "mtb-jail2")?,
        &["jexec", "mtb-jail2"],
    )?;
    let m = expect_kind(
        r.jail("missing-jail")
            .jexec_path(stub(c, "jexec"))
            .connect(),
        TargetErrorKind::NotFound,
    )?;
    ensure!(m.contains("jail \"missing-jail\" not found"), "{m}");
    expect_kind(
        r.jail("mtb-jail1").connect(), // default /usr/sbin/jexec: not on Linux
        TargetErrorKind::ToolNotFound,
    )?;
    Ok(())
}

fn buildah() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .buildah("mtb-build1")
        .username("bob")
        .buildah_path(stub(c, "buildah"))
        .connect()?;
    check_where(
        &ctx,
        "mtb-ns1",
        uid_of(c, "bob"),
        Some(&pidns_of(c.nsctr_pid)),
    )?;
    check_argv(
        &stub_argv(c, "buildah", "mtb-build1")?,
        &["buildah", "run", "--user", "bob", "mtb-build1", "--"],
    )?;
    let m = expect_kind(
        r.buildah("missing-build")
            .buildah_path(stub(c, "buildah"))
            .connect(),
        TargetErrorKind::NotFound,
    )?;
    ensure!(m.contains("container not known"), "{m}");
    expect_kind(
        r.buildah("mtb-build1")
            .buildah_path("/nonexistent/buildah")
            .connect(),
        TargetErrorKind::ToolNotFound,
    )?;
    Ok(())
}
