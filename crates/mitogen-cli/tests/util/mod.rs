//! Running the built `mitogen` binary with a bound on its run time, and
//! the test bed's description.

#![allow(dead_code)]

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mitogen");

/// What a run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// stdout's lines parsed as JSON objects.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}\nstderr: {}", self.stderr))
            })
            .collect()
    }

    /// The JSON object of `target`.
    pub fn target(&self, target: &str) -> serde_json::Value {
        self.json()
            .into_iter()
            .find(|v| v["target"] == target)
            .unwrap_or_else(|| panic!("no result for {target} in {}", self.stdout))
    }
}

/// Runs `cmd` to its end, at most `limit`, reading both outputs.
pub fn run_cmd(mut cmd: Command, limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} ran longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code(),
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
        took: start.elapsed(),
    }
}

/// Runs `mitogen ARGS`, at most 60 s.
pub fn mitogen(args: &[&str]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    run_cmd(cmd, Duration::from_secs(60))
}

/// The test bed (`scripts/testbed/setup.sh`), if it is up.
#[derive(Debug)]
pub struct Testbed {
    pub hosts: [String; 3],
    pub unreachable: String,
    pub ssh_config: String,
    pub alice_pw: String,
}

/// The test bed, or why there is none (printed, so a skip is loud).
pub fn testbed() -> Option<Testbed> {
    let path =
        std::env::var("MITOGEN_TESTBED").unwrap_or_else(|_| "/var/lib/mitogen-testbed/env".into());
    let skip = |why: String| {
        eprintln!("SKIPPED (no test bed): {why}; run scripts/testbed/setup.sh as root");
        None
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return skip(format!("cannot read {path}: {e}")),
    };
    if !std::path::Path::new("/run/netns/mtb-host1").exists() {
        return skip("the test bed's namespaces are gone".into());
    }
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    match (
        get("TB_HOST1"),
        get("TB_HOST2"),
        get("TB_HOST3"),
        get("TB_UNREACHABLE"),
        get("TB_SSH_CONFIG"),
        get("TB_ALICE_PW"),
    ) {
        (Some(a), Some(b), Some(c), Some(u), Some(cfg), Some(pw)) => Some(Testbed {
            hosts: [a, b, c],
            unreachable: u,
            ssh_config: cfg,
            alice_pw: pw,
        }),
        _ => skip(format!("{path} lacks a TB_ variable")),
    }
}
