//! The container half of the benchmark suite (`bench/run` runs it when the
//! test bed's containers are up): start → first call per method, the agent
//! cached, beside the bare tool running `true` in the same container in
//! the same run (`docker exec … true`, `lxc-attach … true`,
//! `nsenter … true`), interleaved so load changes hit both alike.
//! kubectl/lxd/incus/jail/buildah/machinectl run through the test bed's
//! stubs (which enter the unshare container with nsenter), so their
//! numbers measure mitogen-rs and the stub, not a real engine.
//!
//! With `--py-ctr NAME` (a container where the host's Python is visible,
//! made by `bench/run`), also docker exec and setns into it, the
//! scenarios `bench/python/ctr_bench.py` measures for Python Mitogen.
//!
//! `bench_containers ENV_FILE [--quick] [--py-ctr NAME]`; prints JSON lines
//! like `bench`.

use mitogen::{Router, SetnsKind};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[mitogen::remote]
fn noop() {}

fn emit(scenario: &str, imp: &str, value: Option<f64>, unit: &str, extra: &str) {
    let v = value.map_or("null".to_string(), |v| format!("{v:.3}"));
    println!("{{\"scenario\": \"{scenario}\", \"impl\": \"{imp}\", \"value\": {v}, \"unit\": \"{unit}\"{extra}}}");
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bare(argv: &[String]) -> mitogen::Result<f64> {
    let t = Instant::now();
    let st = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| mitogen::StreamError::new(format!("{}: {e}", argv[0])))?;
    if !st.success() {
        let msg = format!("bare {} failed", argv.join(" "));
        return Err(mitogen::StreamError::new(msg).into());
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

type Connect<'a> = Box<dyn Fn() -> mitogen::Result<mitogen::Context> + 'a>;

#[mitogen::main]
fn main(router: Router) -> mitogen::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let Some(env) = args.get(1).filter(|a| !a.starts_with("--")) else {
        eprintln!("usage: bench_containers ENV_FILE [--quick]");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(env)
        .map_err(|e| mitogen::StreamError::new(format!("{env}: {e}")))?;
    let vars: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    let var = |k: &str| vars.get(k).copied().unwrap_or_default().to_string();
    let (docker, image, ctr, lxc) = (
        var("TB_DOCKER"),
        var("TB_IMAGE"),
        var("TB_PODMAN_CTR"),
        var("TB_LXC_CTR"),
    );
    let (nspid, stubs) = (var("TB_NSCTR_PID"), var("TB_STUBS"));
    let py_ctr = args
        .iter()
        .position(|a| a == "--py-ctr")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let n = if quick { 3 } else { 10 };
    let s = |v: &[&str]| -> Vec<String> { v.iter().map(|x| x.to_string()).collect() };
    let stub = |t: &str| format!("{stubs}/{t}");
    let r = &router;
    // (scenario, bare tool argv, connect, real or stub)
    let mut cases: Vec<(&str, Vec<String>, Connect<'_>, &str)> = vec![
        (
            "docker_exec",
            s(&[&docker, "exec", "-i", &ctr, "true"]),
            Box::new(|| r.docker().container(&ctr).docker_path(&docker).connect()),
            "real",
        ),
        (
            "podman_exec",
            s(&["podman", "exec", "-i", &ctr, "true"]),
            Box::new(|| r.podman().container(&ctr).connect()),
            "real",
        ),
        (
            "lxc",
            s(&["lxc-attach", "--clear-env", "-n", &lxc, "--", "true"]),
            Box::new(|| r.lxc(&lxc).connect()),
            "real",
        ),
        (
            "setns_pid",
            s(&["nsenter", "-t", &nspid, "-a", "-r", "-w", "true"]),
            Box::new(|| r.setns(&nspid, SetnsKind::Pid).connect()),
            "real",
        ),
        (
            "setns_docker",
            s(&[&docker, "inspect", "--format={{.State.Pid}}", &ctr]),
            Box::new(|| {
                r.setns(&ctr, SetnsKind::Docker)
                    .docker_path(&docker)
                    .connect()
            }),
            "real",
        ),
        (
            "setns_lxc",
            s(&["lxc-info", "-n", &lxc, "-p", "-H"]),
            Box::new(|| r.setns(&lxc, SetnsKind::Lxc).connect()),
            "real",
        ),
        (
            "kubectl",
            s(&[&stub("kubectl"), "exec", "-i", "mtb-bench", "--", "true"]),
            Box::new(|| {
                r.kubectl("mtb-bench")
                    .kubectl_path(stub("kubectl"))
                    .connect()
            }),
            "stub",
        ),
        (
            "lxd",
            s(&[
                &stub("lxc"),
                "exec",
                "--mode=non-interactive",
                "mtb-bench",
                "--",
                "true",
            ]),
            Box::new(|| r.lxd("mtb-bench").lxc_path(stub("lxc")).connect()),
            "stub",
        ),
        (
            "jail",
            s(&[&stub("jexec"), "mtb-bench", "true"]),
            Box::new(|| r.jail("mtb-bench").jexec_path(stub("jexec")).connect()),
            "stub",
        ),
    ];
    if !py_ctr.is_empty() {
        let pc = py_ctr.as_str();
        let dk = docker.as_str();
        cases.push((
            "docker_exec_pyctr",
            s(&[dk, "exec", "-i", pc, "true"]),
            Box::new(move || r.docker().container(pc).docker_path(dk).connect()),
            "real",
        ));
        cases.push((
            "setns_docker_pyctr",
            s(&[dk, "inspect", "--format={{.State.Pid}}", pc]),
            Box::new(move || r.setns(pc, SetnsKind::Docker).docker_path(dk).connect()),
            "real",
        ));
    }
    if !quick {
        cases.push((
            "docker_image",
            s(&[&docker, "run", "--rm", "-i", "--pull=never", &image, "true"]),
            Box::new(|| r.docker().image(&image).docker_path(&docker).connect()),
            "real",
        ));
    }
    for (name, argv, connect, how) in &cases {
        // Warm up: the agent (and its loader) cached in the container.
        connect()?.shutdown(true, Some(Duration::from_secs(10)))?;
        let (mut b, mut m, mut up) = (Vec::new(), Vec::new(), 0);
        for _ in 0..n {
            b.push(bare(argv)?);
            let t = Instant::now();
            let ctx = connect()?;
            ctx.call::<noop>(())?;
            m.push(t.elapsed().as_secs_f64() * 1e3);
            up = up.max(ctx.agent_upload_bytes().unwrap_or(0));
            ctx.shutdown(true, Some(Duration::from_secs(10)))?;
        }
        let (bv, mv) = (median(&mut b), median(&mut m));
        let extra = format!(", \"n\": {n}, \"engine\": \"{how}\"");
        emit(&format!("ctr_{name}_bare"), "raw", Some(bv), "ms", &extra);
        emit(
            &format!("ctr_{name}_start"),
            "rust",
            Some(mv),
            "ms",
            &format!(
                "{extra}, \"over_bare_ms\": {:.3}, \"uploaded\": {up}",
                mv - bv
            ),
        );
        if !name.ends_with("_pyctr") {
            emit(
                &format!("ctr_{name}_start"),
                "python",
                None,
                "ms",
                ", \"note\": \"Python Mitogen needs a Python in the container; the busybox ones have none\"",
            );
        }
    }
    Ok(())
}
