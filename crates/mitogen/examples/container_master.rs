//! Helper program of the integration tests (`tests/hosts`): a master that
//! starts contexts in every real container of the test bed — a temporary
//! docker container from its image, podman exec, lxc, setns into the
//! unshare container — each named `k9-TAG-METHOD`, prints `ready` and
//! sleeps, so a test can SIGKILL it and check that nothing of it is left
//! (no agent process, no temporary container).
//!
//! `container_master DOCKER IMAGE PODMAN_CTR LXC_CTR NSCTR_PID TAG`

use mitogen::{Router, SetnsKind};
use std::io::Write;
use std::time::Duration;

/// The agent's pid.
#[mitogen::remote]
fn pid() -> u32 {
    std::process::id()
}

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [docker, image, podman_ctr, lxc_ctr, nspid, tag] = &a[..] else {
        eprintln!("usage: container_master DOCKER IMAGE PODMAN_CTR LXC_CTR NSCTR_PID TAG");
        std::process::exit(2);
    };
    let name = |m: &str| format!("k9-{tag}-{m}");
    let ctxs = [
        router
            .docker()
            .image(image)
            .docker_path(docker)
            .remote_name(name("docker"))
            .connect()?,
        router
            .podman()
            .container(podman_ctr)
            .remote_name(name("podman"))
            .connect()?,
        router.lxc(lxc_ctr).remote_name(name("lxc")).connect()?,
        router
            .setns(nspid, SetnsKind::Pid)
            .remote_name(name("setns"))
            .connect()?,
    ];
    for c in &ctxs {
        println!("{} {}", c.name(), c.call::<pid>(())?);
    }
    println!("ready");
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}
