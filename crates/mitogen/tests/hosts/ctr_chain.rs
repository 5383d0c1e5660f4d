//! Containers in chains (ssh → docker, sudo → setns, podman → su), targets
//! where the agent cannot run (another architecture, no shell, no loader),
//! a tool that hangs, and `kill -9` of the master leaving nothing behind.

use crate::ctr_util::*;
use crate::util::*;
use libtest_mimic::Trial;
use mitogen::{SetnsKind, TargetErrorKind};
use std::io::BufRead;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    gated(vec![
        trial("ctr_chain::ssh_to_docker", TEST_LIMIT, ssh_to_docker),
        trial("ctr_chain::sudo_to_setns", TEST_LIMIT, sudo_to_setns),
        trial("ctr_chain::podman_to_su", TEST_LIMIT, podman_to_su),
        trial(
            "ctr_chain::wrong_architecture",
            TEST_LIMIT,
            wrong_architecture,
        ),
        trial(
            "ctr_chain::no_shell_and_no_loader",
            TEST_LIMIT,
            no_shell_no_loader,
        ),
        trial(
            "ctr_chain::hanging_tool_times_out",
            TEST_LIMIT,
            hanging_tool,
        ),
        trial("ctr_chain::kill9_master_leaves_nothing", TEST_LIMIT, kill9),
    ])
    .into_iter()
    .chain(musl_gated(trial(
        "ctr_chain::static_musl_agent",
        // The first run builds the example and its dependencies for musl.
        Duration::from_secs(900),
        static_musl_agent,
    )))
    .collect()
}

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Ignored (saying why) unless Rust's musl target is installed.
fn musl_gated(t: Trial) -> Option<Trial> {
    let sysroot = std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let have =
        sysroot.is_some_and(|s| std::path::Path::new(&format!("{s}/lib/rustlib/{MUSL}")).exists());
    if have && ctr_bed().is_ok() {
        return Some(t);
    }
    if ctr_bed().is_ok() {
        eprintln!("*** ctr_chain::static_musl_agent SKIPPED: no Rust std for {MUSL} (rustup target add {MUSL})");
    }
    Some(t.with_ignored_flag(true))
}

/// A program built static (musl) reaches the busybox containers with
/// nothing brought along.
fn static_musl_agent() -> TestResult {
    let c = cb()?;
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    // target/<profile>/deps/hosts-HASH → target/
    let target = exe
        .ancestors()
        .nth(3)
        .ok_or("unexpected test binary location")?
        .to_path_buf();
    let out = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--target",
            MUSL,
            "--example",
            "static_agent",
        ])
        .arg("--manifest-path")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target)
        .output()
        .map_err(|e| format!("cargo build --target {MUSL}: {e}"))?;
    ensure!(
        out.status.success(),
        "cargo build --target {MUSL} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let agent = target.join(MUSL).join("debug/examples/static_agent");
    let r = router()?;
    for ctx in [
        r.podman()
            .container(&c.podman_ctr)
            .username("alice")
            .agent_binary(&agent)
            .connect()?,
        r.setns(c.nsctr_pid.to_string(), SetnsKind::Pid)
            .agent_binary(&agent)
            .connect()?,
    ] {
        let c2 = ctx.clone();
        let (host, _uid, is_static): (String, u32, bool) =
            bounded("a call", Duration::from_secs(20), move || {
                c2.call_by_name("static_agent::static_where", &())
            })??;
        ensure!(is_static, "{}: the agent is not static", ctx.name());
        ensure!(
            host == c.podman_ctr || host == "mtb-ns1",
            "{}: runs on {host}",
            ctx.name()
        );
        let size = std::fs::metadata(&agent).map(|m| m.len()).unwrap_or(0);
        let up = ctx.agent_upload_bytes().unwrap_or(0);
        ensure!(
            up == 0 || up == size,
            "{}: uploaded {up} bytes, the agent has {size}",
            ctx.name()
        );
    }
    Ok(())
}

fn ssh_to_docker() -> TestResult {
    let c = cb()?;
    let t = tb()?;
    let docker = c.docker.as_deref().ok_or("no docker CLI in the test bed")?;
    let r = router()?;
    let h1 = ssh_key(&r, &t.host1, "root").connect()?;
    let d = r
        .docker()
        .container(&c.podman_ctr)
        .username("alice")
        .docker_path(docker)
        .via(&h1)
        .connect()?;
    check_where(&d, &c.podman_ctr, uid_of(c, "alice"), None)?;
    ensure!(d.name().ends_with(".docker.mtb-ctr1"), "name {}", d.name());
    // A missing container is the same typed error through via.
    let (k, m) = target_kind(
        r.docker()
            .container("nosuch-ctr")
            .docker_path(docker)
            .via(&h1)
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NotFound, "{k:?}: {m}");
    Ok(())
}

fn sudo_to_setns() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let s = r.sudo().username("root").connect()?;
    let ns = r
        .setns(c.nsctr_pid.to_string(), SetnsKind::Pid)
        .username("bob")
        .via(&s)
        .connect()?;
    check_where(
        &ns,
        "mtb-ns1",
        uid_of(c, "bob"),
        Some(&pidns_of(c.nsctr_pid)),
    )
}

fn podman_to_su() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let p = r.podman().container(&c.podman_ctr).connect()?;
    // busybox su: root needs no password; the agent inside brings its
    // loader along again, found from its own mappings.
    let su = r.su().username("alice").via(&p).connect()?;
    check_where(&su, &c.podman_ctr, uid_of(c, "alice"), None)?;
    ensure!(su.name().ends_with("su.alice"), "name {}", su.name());
    Ok(())
}

/// A file with the ELF header of an aarch64 executable (and nothing else).
fn fake_aarch64() -> Result<std::path::PathBuf, libtest_mimic::Failed> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1;
    h[16] = 2; // ET_EXEC
    h[18] = 183; // EM_AARCH64
    h.resize(4096, 0);
    let p = std::env::temp_dir().join(format!("mtb-aarch64-{}", std::process::id()));
    std::fs::write(&p, &h).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(p)
}

fn wrong_architecture() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let fake = fake_aarch64()?;
    let t0 = Instant::now();
    let res = r
        .podman()
        .container(&c.podman_ctr)
        .agent_binary(&fake)
        .connect_timeout(Duration::from_secs(10))
        .connect();
    let _ = std::fs::remove_file(&fake);
    let (k, m) = target_kind(res)?;
    ensure!(k == TargetErrorKind::WrongArchitecture, "{k:?}: {m}");
    ensure!(m.contains("x86_64") && m.contains("aarch64"), "{m}");
    ensure!(
        t0.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t0.elapsed()
    );
    Ok(())
}

fn no_shell_no_loader() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let (k, m) = target_kind(
        r.podman()
            .image("localhost/mtb-noshell:latest")
            .connect_timeout(Duration::from_secs(10))
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NoShell, "{k:?}: {m}");
    // Another dynamically linked program as the agent: its loader is not
    // this process's to bring, and the busybox container has none.
    let (k, m) = target_kind(
        r.podman()
            .container(&c.podman_ctr)
            .agent_binary("/bin/true")
            .connect_timeout(Duration::from_secs(10))
            .connect(),
    )?;
    ensure!(k == TargetErrorKind::NoLoader, "{k:?}: {m}");
    ensure!(m.contains("ld-linux"), "{m}");
    Ok(())
}

fn hanging_tool() -> TestResult {
    let c = cb()?;
    let r = router()?;
    let limit = Duration::from_secs(2);
    for (what, res) in [
        (
            "kubectl exec",
            r.kubectl("hang-pod")
                .kubectl_path(format!("{}/kubectl", c.stubs))
                .connect_timeout(limit)
                .connect(),
        ),
        (
            "machinectl show",
            r.machinectl("hang-machine")
                .machinectl_path(format!("{}/machinectl", c.stubs))
                .connect_timeout(limit)
                .connect(),
        ),
    ] {
        let t0 = Instant::now();
        match res {
            Err(mitogen::Error::Timeout(_)) => {}
            other => return Err(format!("{what}: expected a timeout, got {other:?}").into()),
        }
        ensure!(t0.elapsed() < limit * 3, "{what}: took {:?}", t0.elapsed());
    }
    Ok(())
}

/// Processes whose command line (or process title) contains `needle`.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(") ")
            .is_some_and(|(_, r)| r.starts_with('Z'));
        if cmd.contains(needle) && !zombie {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

fn kill9() -> TestResult {
    let c = cb()?;
    let docker = c.docker.as_deref().ok_or("no docker CLI in the test bed")?;
    let exe = example("container_master")?;
    let tag = format!(
        "{}x{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos() % 1000
    );
    let mut child = std::process::Command::new(exe)
        .args([
            docker,
            &c.image,
            &c.podman_ctr,
            &c.lxc_ctr,
            &c.nsctr_pid.to_string(),
            &tag,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| format!("container_master: {e}"))?;
    let master = child.id();
    let out = child.stdout.take().ok_or("no stdout")?;
    let lines = bounded("the master's start", Duration::from_secs(60), move || {
        let mut seen = Vec::new();
        for l in std::io::BufReader::new(out).lines() {
            let Ok(l) = l else { break };
            let done = l == "ready";
            seen.push(l);
            if done {
                break;
            }
        }
        seen
    });
    let lines = match lines {
        Ok(l) => l,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let needle = format!("k9-{tag}-");
    let before = processes_with(&needle);
    let mine = |v: Vec<String>| -> Vec<String> {
        v.into_iter()
            .filter(|n| n.contains(&format!("-{master}-")))
            .collect()
    };
    let temps = mine(temporaries());
    // SIGKILL: nothing of the master runs any more.
    let _ = child.kill();
    let _ = child.wait();
    ensure!(
        lines.last().map(String::as_str) == Some("ready"),
        "the master did not start its contexts: {lines:?}"
    );
    ensure!(before.len() >= 4, "agents before the kill: {before:?}");
    ensure!(
        temps.len() == 1,
        "temporary containers before the kill: {temps:?}"
    );
    let clean = wait_for(Duration::from_secs(30), || {
        processes_with(&needle).is_empty() && mine(temporaries()).is_empty()
    });
    ensure!(
        clean,
        "left behind: processes {:?}, temporary containers {:?}",
        processes_with(&needle),
        mine(temporaries())
    );
    Ok(())
}
