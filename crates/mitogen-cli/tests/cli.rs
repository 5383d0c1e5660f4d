//! End to end on this machine: the built `mitogen` binary run against
//! local contexts (which are real processes started from the binary, as
//! remote ones are), its output parsed back.

mod util;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use util::{mitogen, mitogen_env, private_runtime_dir, BIN};

#[test]
fn identical_outputs_are_gathered_under_a_folded_list() {
    let r = mitogen(&[
        "run",
        "local[1-4]",
        "--gather",
        "--",
        "echo same; echo warn >&2",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        "---------------\nlocal[1-4] (4)\n---------------\nsame\n[stderr]\nwarn\n"
    );
    assert!(
        r.stderr
            .contains("4 targets: 4 ok, 0 failed, 0 unreachable"),
        "{}",
        r.stderr
    );
}

#[test]
fn json_lines_parse_back_with_status_output_and_timings() {
    let r = mitogen(&[
        "run",
        "local[1-3]",
        "--json",
        "--",
        "echo out; echo err >&2; exit 2",
    ]);
    assert_eq!(r.code, Some(1), "any failure fails the run: {r:?}");
    let rows = r.json();
    assert_eq!(rows.len(), 3);
    for i in 1..=3 {
        let v = r.target(&format!("local{i}"));
        assert_eq!(v["status"], 2);
        assert_eq!(v["ok"], false);
        assert_eq!(v["stdout"], "out\n");
        assert_eq!(v["stderr"], "err\n");
        assert!(v["error"].is_null());
        assert!(v["connect_ms"].as_f64().unwrap() > 0.0);
        assert!(v["run_ms"].as_f64().unwrap() > 0.0);
    }
    assert!(
        r.stderr.contains("3 targets: 0 ok, 3 failed"),
        "{}",
        r.stderr
    );
}

#[test]
fn inline_mode_prefixes_each_line_with_its_target() {
    let r = mitogen(&[
        "run",
        "-i",
        "local[1-2]",
        "--",
        "printf 'a\\nb\\n'; echo e >&2",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let mut lines: Vec<&str> = r.stdout.lines().collect();
    lines.sort();
    assert_eq!(lines, ["local1: a", "local1: b", "local2: a", "local2: b"]);
    assert!(r.stderr.contains("local1: e\n") && r.stderr.contains("local2: e\n"));
}

#[test]
fn a_failing_target_fails_alone_and_sets_the_exit_status() {
    let r = mitogen(&[
        "run",
        "--json",
        "local[1-2],local/sudo:no-such-user-x",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.target("local1")["ok"], true);
    assert_eq!(r.target("local2")["ok"], true);
    let bad = r.target("local/sudo:no-such-user-x");
    assert_eq!(bad["ok"], false);
    let e = bad["error"].as_str().unwrap();
    assert!(e.contains("sudo:no-such-user-x"), "{e}");
    assert!(r
        .stderr
        .contains("3 targets: 2 ok, 0 failed, 1 unreachable"));
}

#[test]
fn timeouts_kill_the_command_and_output_is_bounded() {
    let r = mitogen(&[
        "run",
        "--json",
        "local",
        "--timeout",
        "0.5",
        "--",
        "echo hi; sleep 30",
    ]);
    assert!(r.took < Duration::from_secs(20), "{:?}", r.took);
    let v = r.target("local");
    assert_eq!(v["timed_out"], true);
    assert_eq!(v["stdout"], "hi\n");
    assert_eq!(r.code, Some(1));

    let r = mitogen(&[
        "run",
        "--json",
        "local",
        "--max-output",
        "10",
        "--",
        "head -c 1000 /dev/zero | tr '\\0' x",
    ]);
    let v = r.target("local");
    assert_eq!(v["stdout"], "xxxxxxxxxx");
    assert_eq!(v["stdout_dropped"], 990);
    assert_eq!(v["ok"], true);
    let r = mitogen(&[
        "run",
        "-i",
        "local",
        "--max-output",
        "2",
        "--",
        "echo abcdef",
    ]);
    assert!(
        r.stdout
            .contains("local: ab\nlocal: [5 more bytes of stdout not kept: --max-output]"),
        "{}",
        r.stdout
    );
}

/// Whether process `pid` is gone (or a zombie: dead, not yet reaped).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the parenthesised name.
        Ok(s) => s
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// A context that loses its parent (the command killed with SIGKILL)
/// stops what its commands started, background processes included: their
/// whole process group, not only the shell.
#[test]
fn commands_end_with_their_context() {
    let dir = std::env::temp_dir().join(format!("mitogen-cli-orphans-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pids = dir.join("pids");
    let script = format!(
        "sleep 300 & echo $! > {p}.tmp; mv {p}.tmp {p}; echo ready; wait",
        p = pids.display()
    );
    let mut cli = Command::new(BIN)
        .args(["run", "local", "--", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    let pid = loop {
        if let Some(p) = std::fs::read_to_string(&pids)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            break p;
        }
        assert!(Instant::now() < until, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!gone(pid), "sleep {pid} is not running");
    cli.kill().unwrap();
    cli.wait().unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    while !gone(pid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = !gone(pid);
    if left {
        // SAFETY: not leaving a stray process behind the test.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        !left,
        "the background sleep {pid} outlived its context by 10 s"
    );
}

/// A target's context is shut down as soon as its work is done, not when
/// the whole run ends: its teardown overlaps the other targets' work, as
/// each ssh of pdsh exits with its command. With one target at a time,
/// the second target sees the first one's context gone.
#[test]
fn a_finished_target_lets_its_context_go() {
    let file = std::env::temp_dir().join(format!("mitogen-cli-release-{}", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let script = format!(
        "f={f}; if [ -s $f ]; then p=$(head -1 $f); i=0; \
         while kill -0 $p 2>/dev/null && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done; \
         if kill -0 $p 2>/dev/null; then echo alive; else echo gone; fi; \
         else echo $PPID > $f; echo first; fi",
        f = file.display()
    );
    let r = mitogen(&["run", "--json", "-f", "1", "local[1-2]", "--", &script]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(r.ok_stdout("local1"), "first\n");
    assert_eq!(
        r.ok_stdout("local2"),
        "gone\n",
        "the first context outlived its target"
    );
}

/// A background process that keeps the output pipes open after the shell
/// exits does not hold the result: what came before the exit is kept, and
/// the result comes after a short grace.
#[test]
fn a_background_process_does_not_hold_the_result() {
    let file = std::env::temp_dir().join(format!("mitogen-cli-bg-{}", std::process::id()));
    let script = format!("echo hi; sleep 60 & echo $! > {}", file.display());
    let r = mitogen(&["run", "--json", "local", "--", &script]);
    if let Some(pid) = std::fs::read_to_string(&file)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // SAFETY: ending the test's own stray process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(&file);
    let v = r.target("local");
    assert_eq!(v["stdout"], "hi\n", "{r:?}");
    assert_eq!(v["ok"], true, "{r:?}");
    // Far below the sleep: the result did not wait for it.
    assert!(r.took < Duration::from_secs(30), "{:?}", r.took);
}

#[test]
fn bad_targets_are_shown_with_a_caret_and_exit_2() {
    let r = mitogen(&["run", "local,ssh:deploy@bastion/setns:app", "--", "true"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains(&format!(
            "method \"setns\" is not supported yet\n  local,ssh:deploy@bastion/setns:app\n  {}^^^^^\n",
            " ".repeat(25)
        )),
        "{}",
        r.stderr
    );
    let r = mitogen(&["list", "web[01-x]"]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("  web[01-x]\n      ^^^^\n"),
        "{}",
        r.stderr
    );
}

#[test]
fn list_expands_groups_and_exclusions() {
    let dir = std::env::temp_dir().join(format!("mitogen-cli-inv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inv = dir.join("inventory");
    std::fs::write(
        &inv,
        "web: ssh:deploy@bastion/web[01-04]:2222\nall: @web local\n",
    )
    .unwrap();
    let r = mitogen(&[
        "list",
        "-I",
        inv.to_str().unwrap(),
        "@all",
        "-x",
        "web[02-03]",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(
        r.stdout,
        "deploy@bastion/web01:2222\ndeploy@bastion/web04:2222\nlocal\n"
    );
    let r = mitogen(&["list", "--fold", "-I", inv.to_str().unwrap(), "@web"]);
    assert_eq!(r.stdout, "deploy@bastion/web[01-04]:2222\n");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ping_facts_and_tree_on_local_contexts() {
    let r = mitogen(&["ping", "--json", "local[1-2]"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for v in r.json() {
        assert_eq!(v["ok"], true);
        assert!(v["rtt_ms"].as_f64().unwrap() > 0.0);
    }
    let r = mitogen(&["facts", "--json", "local"]);
    let v = r.target("local");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(v["hostname"], host.trim());
    assert!(v["mem_total"].as_u64().unwrap() > 0);
    assert!(v["disk_total"].as_u64().unwrap() > 0);
    assert!(v["cpus"].as_u64().unwrap() > 0);

    // Three targets behind one shared hop: that hop is one context.
    let r = mitogen(&["tree", "--json", "local/local[1-3]"]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let nodes = r.json();
    assert_eq!(nodes.len(), 4, "{}", r.stdout);
    assert_eq!(nodes.iter().filter(|n| n["path"] == "local").count(), 1);
    // Each hop's link and its traffic, as the context holding it counts
    // it: the shared hop carried the three connects below it.
    let shared = nodes.iter().find(|n| n["path"] == "local").unwrap();
    assert!(shared["link_bytes_down"].as_u64().unwrap() > 0, "{shared}");
    assert!(shared["link_bytes_up"].as_u64().unwrap() > 0, "{shared}");
    for n in nodes.iter().filter(|n| n["path"] != "local") {
        assert!(n["link_bytes_down"].is_u64(), "no traffic for {n}");
    }
    let r = mitogen(&["tree", "local/local[1-2]"]);
    assert!(r.stdout.contains("└── local  [context "), "{}", r.stdout);
    assert!(
        r.stdout.contains("    ├── local1  [context "),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("    └── local2  [context "),
        "{}",
        r.stdout
    );
}

#[test]
fn a_password_from_the_environment_is_not_passed_on() {
    let r = util::run_cmd(
        {
            let mut c = Command::new(BIN);
            c.args([
                "run",
                "-i",
                "--password-env",
                "MTB_SECRET",
                "local",
                "--",
                "echo ${MTB_SECRET:-unset}",
            ])
            .env("MTB_SECRET", "hunter2");
            c
        },
        Duration::from_secs(60),
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.stdout, "local: unset\n");
    let r = mitogen(&[
        "run",
        "--password-env",
        "MTB_NOT_SET_X",
        "local",
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(2));
    assert!(
        r.stderr.contains("--password-env MTB_NOT_SET_X"),
        "{}",
        r.stderr
    );
}

/// A terminal session: the progress display, then Ctrl-C stops the
/// running commands, prints what finished and what did not, exits 130.
#[test]
fn terminal_session_shows_progress_and_ctrl_c_stops_the_commands() {
    // Two at a time: local1 and local2 run, local3 and local4 never start.
    let mut t = util::Pty::spawn(&[
        "run",
        "-f",
        "2",
        "local[1-4]",
        "--",
        "echo started; sleep 30",
    ]);
    t.wait_for("connected 2 · running 2", Duration::from_secs(30));
    // Let the commands print their first line.
    std::thread::sleep(Duration::from_millis(500));
    t.type_(&[3]);
    let (status, out) = t.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(
        out.contains("0/4 done"),
        "a progress bar was drawn: {out:?}"
    );
    assert!(out.contains("local[1-2] (2) [stopped]"), "{out:?}");
    assert!(out.contains("started"), "gathered output kept: {out:?}");
    assert!(
        out.contains("4 targets: 0 ok, 2 failed, 0 unreachable, 2 not finished (local[3-4])"),
        "{out:?}"
    );
}

/// `mitogen master` holds contexts; `--master` runs on them without
/// connecting (the same agent processes serve two runs).
#[test]
fn a_warm_master_serves_later_commands() {
    let name = format!("test-{}", std::process::id());
    let mut master = Command::new(BIN)
        .args(["master", "-q", "--name", &name, "local[1-2]"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the master starts");
    let log = Arc::new(Mutex::new(String::new()));
    let mut err = master.stderr.take().unwrap();
    let l = log.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 1024];
        while let Ok(n) = err.read(&mut b) {
            if n == 0 {
                break;
            }
            l.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&b[..n]));
        }
    });
    let start = Instant::now();
    while !log.lock().unwrap().contains("holds 2 of 2 targets") {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = master.kill();
            panic!("the master did not come up: {}", log.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let run = || {
        mitogen(&[
            "run",
            "--master",
            &name,
            "--json",
            "local[1-3]",
            "--",
            "echo $PPID",
        ])
    };
    let (a, b) = (run(), run());
    // local3 was not held: the master connects it for the first run and
    // keeps it for the second.
    assert_eq!(a.code, Some(0), "{a:?}");
    for i in 1..=3 {
        let t = format!("local{i}");
        assert_eq!(a.target(&t)["ok"], true, "{a:?}");
        assert_eq!(
            a.target(&t)["stdout"],
            b.target(&t)["stdout"],
            "the same context ran both"
        );
    }
    assert_ne!(a.target("local1")["stdout"], a.target("local3")["stdout"]);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(master.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = master.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the master did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0), "{}", log.lock().unwrap());
    let r = mitogen(&["ping", "--master", &name, "local1"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("no master is listening"), "{}", r.stderr);
}

/// The pid of master `name` per `master status --json`, if it runs.
fn master_pid(name: &str, env: &[(&str, &str)]) -> Option<u64> {
    let r = mitogen_env(&["master", "status", "--json", "--name", name], env);
    let v = r.json().into_iter().next()?;
    v["info"]["pid"].as_u64()
}

/// `--persist` starts a master in the background on the first run; the
/// second run uses its contexts (the same agent processes answer), and
/// `master status` / `master stop` see and stop it.
#[test]
fn persist_leaves_a_background_master_that_later_runs_reuse() {
    let rt = private_runtime_dir("persist");
    let env = [("XDG_RUNTIME_DIR", rt.as_str())];
    let run = || {
        mitogen_env(
            &[
                "run",
                "--persist",
                "1m",
                "--json",
                "local[1-2]",
                "--",
                "echo $PPID",
            ],
            &env,
        )
    };
    let a = run();
    assert_eq!(a.code, Some(0), "{a:?}");
    let b = run();
    assert_eq!(b.code, Some(0), "{b:?}");
    for t in ["local1", "local2"] {
        assert_eq!(a.target(t)["stdout"], b.target(t)["stdout"], "same context");
    }
    let s = mitogen_env(&["master", "status"], &env);
    assert_eq!(s.code, Some(0), "{s:?}");
    assert!(s.stdout.contains("auto-"), "{}", s.stdout);
    assert!(s.stdout.contains("holds 2 contexts"), "{}", s.stdout);
    assert!(s.stdout.contains("exits after 1m"), "{}", s.stdout);
    let stop = mitogen_env(&["master", "stop", "--all"], &env);
    assert_eq!(stop.code, Some(0), "{stop:?}");
    assert!(stop.stdout.contains(": stopped"), "{}", stop.stdout);
    let s = mitogen_env(&["master", "status"], &env);
    assert_eq!(s.stdout.trim(), "no masters", "{s:?}");
    // Stopped: the next run starts afresh (new agent processes).
    let c = run();
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_ne!(a.target("local1")["stdout"], c.target("local1")["stdout"]);
    mitogen_env(&["master", "stop", "--all"], &env);
    let _ = std::fs::remove_dir_all(&rt);
}

/// A master killed with SIGKILL leaves its socket; the next run sees it
/// is dead and starts a new master in its place.
#[test]
fn a_killed_master_is_replaced() {
    let rt = private_runtime_dir("killed");
    let env = [("XDG_RUNTIME_DIR", rt.as_str())];
    let args = [
        "run",
        "--master",
        "m",
        "--persist",
        "1m",
        "--json",
        "local1",
        "--",
        "echo $PPID",
    ];
    let a = mitogen_env(&args, &env);
    assert_eq!(a.code, Some(0), "{a:?}");
    let pid = master_pid("m", &env).expect("the master runs");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "SIGKILL did not kill {pid}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let s = mitogen_env(&["master", "status", "--name", "m"], &env);
    assert_eq!(s.code, Some(1), "{s:?}");
    assert!(s.stdout.contains("m: not running"), "{}", s.stdout);
    // Without --persist, attaching to the dead master is an error...
    let r = mitogen_env(&["run", "--master", "m", "local1", "--", "true"], &env);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("no master is listening"), "{}", r.stderr);
    // ...with it, a new master takes the socket over.
    let b = mitogen_env(&args, &env);
    assert_eq!(b.code, Some(0), "{b:?}");
    assert_ne!(a.target("local1")["stdout"], b.target("local1")["stdout"]);
    let new = master_pid("m", &env).expect("a new master runs");
    assert_ne!(new, pid);
    mitogen_env(&["master", "stop", "--name", "m"], &env);
    let _ = std::fs::remove_dir_all(&rt);
}

/// A background master exits once nothing has been attached for its
/// persist time.
#[test]
fn an_idle_master_exits_after_its_persist_time() {
    let rt = private_runtime_dir("idle");
    let env = [("XDG_RUNTIME_DIR", rt.as_str())];
    let r = mitogen_env(&["ping", "--persist", "1s", "--json", "local1"], &env);
    assert_eq!(r.code, Some(0), "{r:?}");
    let names = std::fs::read_dir(Path::new(&rt).join("mitogen"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(names.contains(".sock"), "a master socket: {names}");
    let t = Instant::now();
    loop {
        let s = mitogen_env(&["master", "status"], &env);
        if s.stdout.trim() == "no masters" {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the master did not expire: {}",
            s.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_dir_all(&rt);
}

/// A command that watches for Ctrl-C twice (`master`: while connecting,
/// then while holding) stops at the first Ctrl-C typed on its terminal:
/// the first watch's key reader does not keep the key from the second.
#[test]
fn a_warm_master_on_a_terminal_stops_at_the_first_ctrl_c() {
    let name = format!("pty-{}", std::process::id());
    let mut t = util::Pty::spawn(&["master", "--name", &name, "local1"]);
    t.wait_for("holds 1 of 1 targets", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(200));
    t.type_(&[3]);
    let (status, out) = t.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(out.contains("stopped"), "{out:?}");
    assert!(!out.contains("interrupted twice"), "{out:?}");
}
