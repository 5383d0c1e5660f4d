//! End to end against the real test hosts (`scripts/testbed/setup.sh`:
//! three sshd in network namespaces, users alice/bob, sudo rules).
//! Without the test bed every test is reported as ignored and the reason
//! is printed once (libtest-mimic, as `crates/mitogen/tests/hosts`).

mod util;

use std::process::Command;
use std::time::Duration;
use util::{mitogen, mitogen_env, private_runtime_dir, Testbed, BIN};

fn main() {
    util::run_on_testbed(
        "hosts",
        vec![
            (
                "a_warm_master_saves_the_second_run_every_ssh",
                a_warm_master_saves_the_second_run_every_ssh,
            ),
            (
                "a_container_hop_here_and_behind_another_hop",
                a_container_hop_here_and_behind_another_hop,
            ),
            (
                "run_over_the_three_hosts_and_local_contexts_in_one_invocation",
                run_over_the_three_hosts_and_local_contexts_in_one_invocation,
            ),
            (
                "an_unreachable_host_is_reported_on_its_own_and_fails_the_run",
                an_unreachable_host_is_reported_on_its_own_and_fails_the_run,
            ),
            (
                "identical_outputs_of_hosts_are_gathered",
                identical_outputs_of_hosts_are_gathered,
            ),
            (
                "hosts_behind_one_bastion_share_its_connection",
                hosts_behind_one_bastion_share_its_connection,
            ),
            (
                "a_become_password_read_from_a_file_descriptor",
                a_become_password_read_from_a_file_descriptor,
            ),
            (
                "a_become_password_asked_once_on_the_terminal",
                a_become_password_asked_once_on_the_terminal,
            ),
        ],
    )
}

/// The three hosts, local contexts and (when the test bed has one) a
/// podman container, in one invocation.
fn run_over_the_three_hosts_and_local_contexts_in_one_invocation(tb: &Testbed) {
    let mut targets = format!("{},{},{},local[1-2]", tb.hosts[0], tb.hosts[1], tb.hosts[2]);
    if let Some(ctr) = &tb.podman_ctr {
        targets.push_str(&format!(",podman:{ctr}"));
    }
    let r = mitogen(&[
        "run",
        "-F",
        &tb.ssh_config,
        "--json",
        &targets,
        "--",
        "hostname",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.json().len(), 5 + usize::from(tb.podman_ctr.is_some()));
    for (i, h) in tb.hosts.iter().enumerate() {
        assert_eq!(r.ok_stdout(h), format!("mtb-host{}\n", i + 1));
    }
    if let Some(ctr) = &tb.podman_ctr {
        assert_eq!(r.ok_stdout(&format!("podman:{ctr}")), format!("{ctr}\n"));
    }
    let local = r.target("local1")["stdout"].as_str().unwrap().to_string();
    assert_eq!(r.target("local2")["stdout"], local);
}

fn an_unreachable_host_is_reported_on_its_own_and_fails_the_run(tb: &Testbed) {
    let bad = format!("root@{}", tb.unreachable);
    let targets = format!("{},{},{bad}", tb.hosts[0], tb.hosts[1]);
    let r = mitogen(&[
        "run",
        "-F",
        &tb.ssh_config,
        // The good hosts have room on a loaded machine (a first run
        // uploads the agent); the bad one fails on ssh's own
        // ConnectTimeout (5 s in the test bed's ssh_config).
        "--connect-timeout",
        "30",
        "--json",
        &targets,
        "--",
        "true",
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.target(&tb.hosts[0])["ok"], true, "{r:?}");
    assert_eq!(r.target(&tb.hosts[1])["ok"], true, "{r:?}");
    let v = r.target(&bad);
    assert_eq!(v["ok"], false);
    assert!(
        v["error"].as_str().unwrap().contains(&tb.unreachable),
        "{v}"
    );
    assert!(
        r.stderr
            .contains("3 targets: 2 ok, 0 failed, 1 unreachable"),
        "{}",
        r.stderr
    );
}

fn identical_outputs_of_hosts_are_gathered(tb: &Testbed) {
    let targets = format!("{},{},{},local", tb.hosts[0], tb.hosts[1], tb.hosts[2]);
    let r = mitogen(&[
        "run",
        "-F",
        &tb.ssh_config,
        "--gather",
        &targets,
        "--",
        "echo same",
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let prefix = tb.hosts[0].rsplit_once('.').unwrap().0;
    let head = format!("{prefix}.[11-13],local (4)");
    assert!(r.stdout.contains(&format!("\n{head}\n")), "{}", r.stdout);
    assert_eq!(r.stdout.matches("same\n").count(), 1, "{}", r.stdout);
}

fn hosts_behind_one_bastion_share_its_connection(tb: &Testbed) {
    let targets = format!(
        "root@{}/root@{}/sudo:bob,root@{}/root@{}",
        tb.hosts[0], tb.hosts[1], tb.hosts[0], tb.hosts[2]
    );
    let r = mitogen(&["tree", "-F", &tb.ssh_config, "--json", &targets]);
    assert_eq!(r.code, Some(0), "{r:?}");
    let nodes = r.json();
    let bastion = format!("root@{}", tb.hosts[0]);
    assert_eq!(
        nodes
            .iter()
            .filter(|n| n["path"] == bastion.as_str())
            .count(),
        1
    );
    assert_eq!(nodes.len(), 4, "{}", r.stdout);
    let ids: std::collections::HashSet<u64> = nodes
        .iter()
        .map(|n| n["context_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 4);
}

/// alice's sudo rule asks her password every time: it comes from fd 3.
fn a_become_password_read_from_a_file_descriptor(tb: &Testbed) {
    let dir = std::env::temp_dir().join(format!("mitogen-cli-pw-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pw = dir.join("pw");
    std::fs::write(&pw, format!("{}\n", tb.alice_pw)).unwrap();
    let targets = format!("alice@{},alice@{}", tb.hosts[0], tb.hosts[1]);
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "exec 3<\"$1\"; shift; exec \"$@\"", "sh"])
        .arg(&pw)
        .args([
            BIN,
            "run",
            "-F",
            &tb.ssh_config,
            "--json",
            "-b",
            "--password-fd",
            "3",
            &targets,
            "--",
            "id -un",
        ]);
    let r = util::run_cmd(cmd, Duration::from_secs(60));
    assert_eq!(r.code, Some(0), "{r:?}");
    for h in &tb.hosts[..2] {
        assert_eq!(r.ok_stdout(&format!("alice@{h}/sudo:root")), "root\n");
    }
    assert!(!r.stdout.contains(&tb.alice_pw) && !r.stderr.contains(&tb.alice_pw));

    // Without it, sudo's question is a clear per-target failure.
    let r = mitogen(&[
        "run",
        "-F",
        &tb.ssh_config,
        "--json",
        "-b",
        &format!("alice@{}", tb.hosts[0]),
        "--",
        "id -un",
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let e = r.target(&format!("alice@{}/sudo:root", tb.hosts[0]))["error"].to_string();
    assert!(e.to_lowercase().contains("password"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-K` asks once on the terminal, for every target, and the password is
/// not echoed.
fn a_become_password_asked_once_on_the_terminal(tb: &Testbed) {
    let targets = format!("alice@{},alice@{}", tb.hosts[0], tb.hosts[1]);
    let mut t = util::Pty::spawn(&[
        "run",
        "-F",
        &tb.ssh_config,
        "-b",
        "-K",
        "-i",
        &targets,
        "--",
        "id -un",
    ]);
    t.wait_for("BECOME password: ", Duration::from_secs(20));
    t.type_(format!("{}\n", tb.alice_pw).as_bytes());
    let (status, out) = t.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(0), "{out}");
    assert_eq!(out.matches("BECOME password: ").count(), 1, "{out}");
    for h in &tb.hosts[..2] {
        assert!(out.contains(&format!("alice@{h}/sudo:root: root")), "{out}");
    }
    assert!(
        !out.contains(&tb.alice_pw),
        "the password was echoed: {out}"
    );
}

/// `podman:CTR` as a target and as the last hop behind a local context;
/// a missing container fails on its own.
fn a_container_hop_here_and_behind_another_hop(tb: &Testbed) {
    let Some(ctr) = &tb.podman_ctr else {
        eprintln!("SKIPPED: the test bed has no podman container (TB_PODMAN_CTR)");
        return;
    };
    let targets = format!("podman:{ctr},local/podman:{ctr},podman:no-such-ctr-x");
    let r = mitogen(&["run", "--json", &targets, "--", "id -un"]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert_eq!(r.ok_stdout(&format!("podman:{ctr}")), "root\n");
    assert_eq!(r.ok_stdout(&format!("local/podman:{ctr}")), "root\n");
    let e = r.target("podman:no-such-ctr-x")["error"].to_string();
    assert!(e.contains("no-such-ctr-x"), "{e}");
}

/// `--persist`: the first run starts a background master, which starts
/// one `ssh` per host; the second run starts none (every `ssh` started is
/// counted by a wrapper first on PATH) and reaches the same remote
/// processes. After `kill -9` of the master, the next run starts a new
/// one (and new ssh sessions).
fn a_warm_master_saves_the_second_run_every_ssh(tb: &Testbed) {
    use std::os::unix::fs::PermissionsExt;
    let rt = private_runtime_dir("ssh-count");
    let bin = std::path::Path::new(&rt).join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = std::path::Path::new(&rt).join("ssh.log");
    let real = ["/usr/bin/ssh", "/bin/ssh"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("ssh is installed");
    std::fs::write(
        bin.join("ssh"),
        format!(
            "#!/bin/sh\necho \"$*\" >>'{}'\nexec {real} \"$@\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(bin.join("ssh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = [("XDG_RUNTIME_DIR", rt.as_str()), ("PATH", path.as_str())];
    let ssh_started = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let targets = tb.hosts.join(",");
    let args = [
        "run",
        "-F",
        &tb.ssh_config,
        "--persist",
        "2m",
        "--json",
        &targets,
        "--",
        "echo $PPID",
    ];
    let a = mitogen_env(&args, &env);
    assert_eq!(a.code, Some(0), "{a:?}");
    assert_eq!(ssh_started(), 3, "one ssh per host");
    let b = mitogen_env(&args, &env);
    assert_eq!(b.code, Some(0), "{b:?}");
    assert_eq!(ssh_started(), 3, "the second run started no ssh");
    for h in &tb.hosts {
        assert_eq!(
            a.target(h)["stdout"],
            b.target(h)["stdout"],
            "the same remote process"
        );
    }
    // Warm, a run is round trips: generous bound, catches a reconnect.
    assert!(b.took < a.took, "warm {:?} vs cold {:?}", b.took, a.took);

    let st = mitogen_env(&["master", "status", "--json"], &env);
    let v = st.json().into_iter().next().expect("one master");
    let pid = v["info"]["pid"].as_u64().expect("its pid") as i32;
    assert_eq!(v["info"]["held"].as_array().map(Vec::len), Some(3), "{v}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let t = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the master survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = mitogen_env(&args, &env);
    assert_eq!(c.code, Some(0), "{c:?}");
    assert_eq!(ssh_started(), 6, "a new master, new ssh sessions");
    mitogen_env(&["master", "stop", "--all"], &env);
    let _ = std::fs::remove_dir_all(&rt);
}
