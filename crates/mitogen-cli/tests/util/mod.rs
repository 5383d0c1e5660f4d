//! Running the built `mitogen` binary with a bound on its run time, and
//! the test bed's description.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
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

    /// The stdout of `target`, which must have succeeded: otherwise this
    /// panics with its whole record, whose `error` says why.
    pub fn ok_stdout(&self, target: &str) -> String {
        let rec = self.target(target);
        match (&rec["ok"], rec["stdout"].as_str()) {
            (serde_json::Value::Bool(true), Some(out)) => out.to_string(),
            _ => panic!("{target} failed: {rec}\nstderr: {}", self.stderr),
        }
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

/// Runs `mitogen ARGS` with `env` set, at most 60 s.
pub fn mitogen_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(BIN);
    cmd.args(args).envs(env.iter().copied());
    run_cmd(cmd, Duration::from_secs(60))
}

/// A private runtime directory (mode 0700) for the masters of one test,
/// to give as `XDG_RUNTIME_DIR`: tests do not see each other's masters.
pub fn private_runtime_dir(tag: &str) -> String {
    use std::os::unix::fs::DirBuilderExt;
    let d = std::env::temp_dir().join(format!("mitogen-cli-rt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&d)
        .expect("a private directory");
    d.to_string_lossy().into_owned()
}

/// The test bed (`scripts/testbed/setup.sh`), if it is up.
#[derive(Debug)]
pub struct Testbed {
    pub hosts: [String; 3],
    pub unreachable: String,
    pub ssh_config: String,
    pub alice_pw: String,
    /// A running podman container (`TB_PODMAN_CTR`), when the test bed
    /// has containers.
    pub podman_ctr: Option<String>,
}

/// The test bed, or why there is none.
pub fn testbed() -> Result<Testbed, String> {
    let path =
        std::env::var("MITOGEN_TESTBED").unwrap_or_else(|_| "/var/lib/mitogen-testbed/env".into());
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    if !std::path::Path::new("/run/netns/mtb-host1").exists() {
        return Err("the test bed's namespaces are gone".into());
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
        (Some(a), Some(b), Some(c), Some(u), Some(cfg), Some(pw)) => Ok(Testbed {
            hosts: [a, b, c],
            unreachable: u,
            ssh_config: cfg,
            alice_pw: pw,
            podman_ctr: get("TB_PODMAN_CTR").filter(|c| !c.is_empty()),
        }),
        _ => Err(format!("{path} lacks a TB_ variable")),
    }
}

/// The binary run on a terminal of its own (a PTY whose slave is its
/// controlling terminal), as a person would run it.
pub struct Pty {
    child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Starts `mitogen ARGS` on a new 120x24 terminal.
    pub fn spawn(args: &[&str]) -> Pty {
        use nix::pty::{openpty, Winsize};
        let ws = Winsize {
            ws_row: 24,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&ws), None).expect("a pty");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stdout(Stdio::from(pty.slave.try_clone().expect("dup")))
            .stderr(Stdio::from(pty.slave));
        // SAFETY: setsid and ioctl take no pointers and allocate nothing.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("the binary starts");
        drop(cmd);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("dup");
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            // EIO once every holder of the slave has closed it.
            while let Ok(n) = reader.read(&mut b) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&b[..n]);
            }
        });
        Pty {
            child,
            master,
            seen,
        }
    }

    /// Everything the terminal showed so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }

    /// Waits until the terminal shows `what`, at most `limit`.
    pub fn wait_for(&mut self, what: &str, limit: Duration) {
        let start = Instant::now();
        while !self.text().contains(what) {
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("the terminal never showed {what:?}: {:?}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Types `bytes`.
    pub fn type_(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("typing");
    }

    /// Waits for the exit, at most `limit`; then the terminal's text.
    pub fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                panic!("did not exit within {limit:?}: {:?}", self.text());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(200));
        (status, self.text())
    }
}

/// One test on the test bed.
pub type HostTest = fn(&Testbed);

/// Runs `tests` (libtest-mimic) on the test bed, or reports each as
/// ignored, saying once why, when the test bed is not up.
pub fn run_on_testbed(suite: &str, tests: Vec<(&'static str, HostTest)>) -> ! {
    use libtest_mimic::{Arguments, Trial};
    let args = Arguments::from_args();
    let tb = match testbed() {
        Ok(tb) => Some(&*Box::leak(Box::new(tb))),
        Err(why) => {
            if !args.list {
                eprintln!(
                    "\n*** mitogen-cli {suite} tests: {} tests SKIPPED: {why}\n*** run \
                     ./scripts/test.sh as root (it builds the test bed)\n",
                    tests.len()
                );
            }
            None
        }
    };
    let trials = tests
        .into_iter()
        .map(|(name, f)| match tb {
            Some(tb) => Trial::test(name, move || {
                f(tb);
                Ok(())
            }),
            None => Trial::test(name, || Ok(())).with_ignored_flag(true),
        })
        .collect();
    libtest_mimic::run(&args, trials).exit()
}

/// A file `app.conf` (mode 0640) and a tree `site/` (nested directories,
/// a symlink, a 600 KB file of mode 0600) under `root`.
pub fn make_sources(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(root).unwrap();
    std::fs::write(root.join("app.conf"), b"workers = 4\n").unwrap();
    std::fs::set_permissions(
        root.join("app.conf"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let site = root.join("site");
    std::fs::create_dir_all(site.join("css/deep")).unwrap();
    std::fs::write(site.join("index.html"), b"<h1>hi</h1>\n").unwrap();
    std::fs::write(site.join("css/deep/a.css"), b"body {}\n").unwrap();
    let big: Vec<u8> = (0..600_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(site.join("big.bin"), big).unwrap();
    std::fs::set_permissions(site.join("big.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink("index.html", site.join("home.html")).unwrap();
}
