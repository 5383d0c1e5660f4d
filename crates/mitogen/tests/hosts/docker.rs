//! docker (the real CLI, through podman's Docker-compatible API) and
//! podman: exec into the test bed's running container, run a temporary
//! one from its busybox image, `username`, typed failures, the agent cache
//! inside a container. The image has no C library: the agent (this
//! dynamically linked test binary) runs there with its loader brought
//! along.

use crate::ctr_util::*;
use crate::util::*;
use libtest_mimic::Trial;
use mitogen::TargetErrorKind;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    gated(vec![
        trial("docker::exec_into_running", TEST_LIMIT, exec_into_running),
        trial("docker::username", TEST_LIMIT, username),
        trial(
            "docker::temporary_from_image",
            TEST_LIMIT,
            temporary_from_image,
        ),
        trial(
            "docker::podman_exec_and_image",
            TEST_LIMIT,
            podman_exec_and_image,
        ),
        trial("docker::missing_container_image_tool", TEST_LIMIT, missing),
        trial("docker::cache_in_container", TEST_LIMIT, cache_in_container),
        trial(
            "docker::sweep_removes_orphans",
            TEST_LIMIT,
            sweep_removes_orphans,
        ),
    ])
}

fn docker(c: &Ctr) -> Result<&str, libtest_mimic::Failed> {
    c.docker
        .as_deref()
        .ok_or_else(|| "no docker CLI in the test bed (setup.sh installs docker.io)".into())
}

fn exec_into_running() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .docker()
        .container(&c.podman_ctr)
        .docker_path(docker(c)?)
        .connect_timeout(Duration::from_secs(30))
        .connect()?;
    let ns = pidns_of(podman_pid(&c.podman_ctr)?);
    check_where(&ctx, &c.podman_ctr, 0, Some(&ns))?;
    ensure!(ctx.name() == "docker.mtb-ctr1", "name {}", ctx.name());
    Ok(())
}

fn username() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .docker()
        .container(&c.podman_ctr)
        .username("alice")
        .docker_path(docker(c)?)
        .connect()?;
    check_where(&ctx, &c.podman_ctr, uid_of(c, "alice"), None)
}

fn temporary_from_image() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .docker()
        .image(&c.image)
        .docker_path(docker(c)?)
        .connect()?;
    let c2 = ctx.clone();
    let (host, uid, ns) = bounded("a call", Duration::from_secs(20), move || {
        c2.call::<where_am_i>(())
    })??;
    ensure!(uid == 0, "uid {uid}");
    ensure!(
        ns != pidns_of(std::process::id()) && ns != pidns_of(podman_pid(&c.podman_ctr)?),
        "pid namespace {ns} is not a new one"
    );
    // The container's hostname is its id: find it by that, not by name
    // (other tests of this process make temporary containers too).
    let exists = |id: &str| {
        std::process::Command::new("podman")
            .args(["ps", "-a", "-q", "--filter", &format!("id={id}")])
            .output()
            .map(|o| !String::from_utf8_lossy(&o.stdout).trim().is_empty())
            .unwrap_or(true)
    };
    ensure!(exists(&host), "no container {host} while the context runs");
    drop(ctx);
    r.broker().shutdown();
    r.broker().join();
    let gone = wait_for(Duration::from_secs(20), || !exists(&host));
    ensure!(gone, "temporary container {host} left behind");
    Ok(())
}

fn podman_exec_and_image() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let ctx = r
        .podman()
        .container(&c.podman_ctr)
        .username("alice")
        .connect()?;
    check_where(&ctx, &c.podman_ctr, uid_of(c, "alice"), None)?;
    let tmp = r.podman().image(&c.image).connect()?;
    let t2 = tmp.clone();
    let (_, uid, _) = bounded("a call", Duration::from_secs(20), move || {
        t2.call::<where_am_i>(())
    })??;
    ensure!(uid == 0, "uid {uid}");
    ensure!(tmp.name().starts_with("podman."), "name {}", tmp.name());
    Ok(())
}

fn missing() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let limit = Duration::from_secs(15);
    let t0 = std::time::Instant::now();
    let (k, m) = target_kind(
        r.docker()
            .container("nosuch-ctr")
            .docker_path(docker(c)?)
            .connect_timeout(limit)
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    ensure!(m.contains("nosuch-ctr"), "{m}");
    let (k, m) = target_kind(
        r.podman()
            .image("localhost/nosuch-image:1")
            .connect_timeout(limit)
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    let (k, m) = target_kind(
        r.docker()
            .container(&c.podman_ctr)
            .docker_path("/nonexistent/docker")
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::ToolNotFound, "{k:?}: {m}");
    ensure!(m.contains("/nonexistent/docker"), "{m}");
    ensure!(t0.elapsed() < limit * 2, "took {:?}", t0.elapsed());
    Ok(())
}

/// Empties bob's agent cache in the podman container (this test's alone:
/// no other test connects to it as bob).
fn empty_bobs_cache(c: &Ctr) -> TestResult {
    let st = std::process::Command::new("podman")
        .args([
            "exec",
            &c.podman_ctr,
            "rm",
            "-rf",
            "/home/bob/.cache",
            "/tmp/mitogen-bob",
        ])
        .status()
        .map_err(|e| format!("podman exec rm: {e}"))?;
    ensure!(st.success(), "could not empty bob's cache");
    Ok(())
}

/// The agent and its loader are uploaded into the container once, then
/// found in the cache. Contexts started at once into an empty cache all
/// start (rounds of four): they once raced on the runtime directory, one
/// stage's `ln -sf` removing a library link another had just made, so the
/// agent failed to load (`libgcc_s.so.1: cannot open shared object
/// file`) or the link failed (`File exists`) — 2 runs in 25 of the CLI
/// with two such targets.
fn cache_in_container() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let agent = std::fs::metadata("/proc/self/exe")
        .map(|m| m.len())
        .unwrap_or(0);
    for round in 0..3 {
        empty_bobs_cache(c)?;
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let (r, ctr) = (r.clone(), c.podman_ctr.clone());
                std::thread::spawn(move || {
                    r.podman()
                        .container(&ctr)
                        .username("bob")
                        .connect_timeout(Duration::from_secs(60))
                        .connect()
                })
            })
            .collect();
        let mut uploaded = 0;
        for s in starts {
            let ctx = s
                .join()
                .map_err(|_| "a connecting thread panicked")?
                .map_err(|e| format!("round {round}: a cold start failed: {e}"))?;
            uploaded += ctx.agent_upload_bytes().unwrap_or(0);
            check_where(&ctx, &c.podman_ctr, uid_of(c, "bob"), None)?;
        }
        ensure!(
            uploaded > agent,
            "round {round}: {uploaded} bytes uploaded in all (agent {agent} + loader)"
        );
    }
    let warm = r
        .podman()
        .container(&c.podman_ctr)
        .username("bob")
        .connect()?;
    let up = warm.agent_upload_bytes().unwrap_or(u64::MAX);
    ensure!(up == 0, "a connect to the warm cache uploaded {up} bytes");
    check_where(&warm, &c.podman_ctr, uid_of(c, "bob"), None)?;
    // A pruned runtime (a library and the loader's link gone) is mended:
    // the missing file alone is sent again.
    let st = std::process::Command::new("podman")
        .args(["exec", &c.podman_ctr, "sh", "-c"])
        .arg(
            "cd /home/bob/.cache/mitogen && rm -f rt-*/ld-linux* \
             && rm -f \"$(readlink -f rt-*/libc.so.6)\" && [ -L rt-*/libc.so.6 ]",
        )
        .output()
        .map_err(|e| format!("podman exec: {e}"))?;
    ensure!(st.status.success(), "could not prune: {st:?}");
    let mended = r
        .podman()
        .container(&c.podman_ctr)
        .username("bob")
        .connect()?;
    let up = mended.agent_upload_bytes().unwrap_or(0);
    ensure!(
        up > 0 && up < agent,
        "a connect to the pruned cache uploaded {up} bytes (the agent is {agent})"
    );
    check_where(&mended, &c.podman_ctr, uid_of(c, "bob"), None)
}

/// A temporary container whose maker died without its tool passing the
/// end of file on (here: made by hand, named after a process that does not
/// exist) is removed when another temporary container is made.
fn sweep_removes_orphans() -> TestResult {
    let c = cb()?;
    let host: String = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .chars()
        .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
        .collect();
    let orphan = format!("mitogen-tmp-{host}-999999999-1-{}", std::process::id());
    let st = std::process::Command::new("podman")
        .args([
            "run",
            "-d",
            "--rm",
            "--label",
            "mitogen.temporary=1",
            "--name",
            &orphan,
        ])
        .arg(&c.image)
        .args(["sleep", "300"])
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("podman run: {e}"))?;
    ensure!(st.success(), "could not make the orphan");
    ensure!(
        temporaries().contains(&orphan),
        "orphan {orphan} not listed"
    );
    let r = router()?;
    let ctx = r.podman().image(&c.image).connect()?;
    let gone = wait_for(Duration::from_secs(30), || !temporaries().contains(&orphan));
    drop(ctx);
    ensure!(gone, "the orphan {orphan} was not swept");
    Ok(())
}
