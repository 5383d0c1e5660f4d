//! `Router::ssh`: authentication, host keys, parameters, dead links.

use crate::util::*;
use libtest_mimic::{Failed, Trial};
use mitogen::{Error, HostKeyCheck};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("ssh::key_auth_and_call", TEST_LIMIT, key_auth_and_call),
        trial("ssh::password_auth", TEST_LIMIT, password_auth),
        trial("ssh::parameters", TEST_LIMIT, parameters),
        trial(
            "ssh::ssh_config_and_identities_only",
            TEST_LIMIT,
            ssh_config_and_identities_only,
        ),
        trial(
            "ssh::unknown_host_key_enforce",
            TEST_LIMIT,
            unknown_host_key_enforce,
        ),
        trial("ssh::changed_host_key", TEST_LIMIT, changed_host_key),
        trial("ssh::jump_host", TEST_LIMIT, jump_host),
        trial(
            "ssh::agent_authentication",
            TEST_LIMIT,
            agent_authentication,
        ),
        trial(
            "ssh::agent_binary_of_another_program",
            TEST_LIMIT,
            agent_binary_of_another_program,
        ),
        trial(
            "ssh::accept_records_new_key",
            TEST_LIMIT,
            accept_records_new_key,
        ),
        trial(
            "ssh::ignore_checks_nothing",
            TEST_LIMIT,
            ignore_checks_nothing,
        ),
        trial(
            "ssh::unreachable_connect_timeout",
            TEST_LIMIT,
            unreachable_connect_timeout,
        ),
        trial(
            "ssh::silent_server_times_out",
            TEST_LIMIT,
            silent_server_times_out,
        ),
        trial(
            "ssh::shutdown_during_connect_to_silent_server",
            TEST_LIMIT,
            shutdown_during_connect_to_silent_server,
        ),
        trial("ssh::connection_refused", TEST_LIMIT, connection_refused),
        trial("ssh::no_password_given", TEST_LIMIT, no_password_given),
        trial(
            "ssh::sshd_killed_mid_session",
            TEST_LIMIT,
            sshd_killed_mid_session,
        ),
        trial(
            "ssh::dead_network_keepalive",
            TEST_LIMIT,
            dead_network_keepalive,
        ),
        trial(
            "ssh::bad_parameters_refused",
            TEST_LIMIT,
            bad_parameters_refused,
        ),
    ]
}

fn key_auth_and_call() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host1, "root").connect()?;
    ensure!(
        ctx.name() == format!("ssh.root@{}", t.host1),
        "name {}",
        ctx.name()
    );
    let (host, user, _) = ctx.call::<whoami>(())?;
    ensure!(host == "mtb-host1" && user == "root", "got {host} {user}");
    Ok(())
}

fn password_auth() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_pw(&r, &t.host2, "alice", &t.alice_pw).connect()?;
    let (host, user, _) = ctx.call::<whoami>(())?;
    ensure!(host == "mtb-host2" && user == "alice", "got {host} {user}");
    // A PTY for the prompt (stderr), the protocol on a socket.
    let (pid, _) = ssh_child(&t.host2)?;
    let fds = fd_kinds(pid);
    ensure!(
        fds[2].starts_with("/dev/pts/"),
        "stderr of ssh is {:?}",
        fds[2]
    );
    // (ssh keeps duplicates of its stdio elsewhere and may point fd 1 at
    // /dev/null: what matters is that no protocol fd is the terminal.)
    ensure!(
        fds[0].starts_with("socket:") && !fds[1].starts_with("/dev/pts"),
        "stdio of ssh: {fds:?}"
    );
    Ok(())
}

/// The ssh client this process started for `host`: (pid, argv).
fn ssh_child(host: &str) -> Result<(u32, String), libtest_mimic::Failed> {
    children()
        .into_iter()
        .find(|(_, c)| c.starts_with("ssh\0") && c.contains(host))
        .ok_or_else(|| format!("no ssh child for {host}").into())
}

/// What fds 0, 1 and 2 of `pid` point at.
fn fd_kinds(pid: u32) -> Vec<String> {
    (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// port, ssh_path, compression, ssh_debug_level, remote_name, keepalive,
/// connect_timeout, debug, profiling, unidirectional, agent_command.
fn parameters() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host1, "root")
        .port(22)
        .ssh_path("/usr/bin/ssh")
        .compression(false)
        .ssh_debug_level(1)
        .keepalive(Duration::from_secs(5), 2)
        .remote_name("params")
        .connect_timeout(Duration::from_secs(15))
        .debug(true)
        .profiling(false)
        .unidirectional(true)
        .agent_command(["nice", "-n", "3"])
        .connect()?;
    ensure!(ctx.name() == "params", "name {}", ctx.name());
    let (host, _, pid) = ctx.call::<whoami>(())?;
    ensure!(host == "mtb-host1", "host {host}");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let nice = stat[stat.rfind(')').unwrap_or(0) + 1..]
        .split_whitespace()
        .nth(16)
        .unwrap_or("");
    ensure!(nice == "3", "agent_command nice: niceness {nice}");
    let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline"))?;
    ensure!(cmd.starts_with("mitogen:params"), "title {cmd:?}");
    // The ssh client really got these options: find it among our children.
    let ssh = child_cmdlines()
        .into_iter()
        .find(|c| c.contains("ServerAliveInterval=5"));
    let ssh = ssh.ok_or("no ssh child with ServerAliveInterval=5")?;
    for want in [
        "Compression=no",
        "ServerAliveCountMax=2",
        "-p\0",
        "22",
        "-v\0",
        "ConnectTimeout=15",
        "/usr/bin/ssh",
    ] {
        ensure!(ssh.contains(want), "ssh argv lacks {want:?}: {ssh:?}");
    }
    Ok(())
}

/// Command lines of this process's children.
fn child_cmdlines() -> Vec<String> {
    children().into_iter().map(|(_, c)| c).collect()
}

/// This process's children: (pid, argv with NUL separators).
fn children() -> Vec<(u32, String)> {
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(me) {
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            out.push((pid, cmd));
        }
    }
    out
}

/// ~/.ssh/config-style files are honoured (`-F` here), and
/// identities_only decides whether its key may be used beside a password.
fn ssh_config_and_identities_only() -> TestResult {
    let t = tb()?;
    let cfg = format!(
        "{}/ssh_config",
        std::path::Path::new(&t.key)
            .parent()
            .ok_or("key path")?
            .display()
    );
    let r = router()?;
    // The config names the key: no identity_file, no password needed.
    let ctx = r
        .ssh(&t.host1)
        .username("dan")
        .ssh_args(["-F", &cfg])
        .connect()?;
    ensure!(ctx.call::<whoami>(())?.1 == "dan", "not dan");
    // A wrong password with identities_only(false): the config's key is
    // still offered, and accepted before any password prompt.
    let ctx = r
        .ssh(&t.host1)
        .username("alice")
        .ssh_args(["-F", &cfg])
        .password("wrong")
        .identities_only(false)
        .connect()?;
    ensure!(ctx.call::<whoami>(())?.1 == "alice", "not alice");
    // identities_only(true) (the default) with a password: only the
    // password is tried, and it is wrong.
    let e = expect_err(
        "identities_only with a wrong password",
        r.ssh(&t.host1)
            .username("alice")
            .ssh_args(["-F", &cfg])
            .password("wrong")
            .connect(),
    )?;
    ensure!(matches!(e, Error::Password(_)), "not a PasswordError: {e}");
    Ok(())
}

/// A key held only by an ssh-agent: no identity_file, no password. The
/// agent's socket is named with `IdentityAgent`, so the test changes no
/// process-wide environment; `identities_only(false)` lets ssh offer agent
/// keys not named in any `IdentityFile`.
fn agent_authentication() -> TestResult {
    let t = tb()?;
    let dir = std::env::temp_dir().join(format!("mitogen-agent-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let sock = dir.join("agent.sock");
    let _ = std::fs::remove_file(&sock);
    let mut agent = std::process::Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("ssh-agent: {e}"))?;
    let result = (|| -> TestResult {
        ensure!(
            wait_for(Duration::from_secs(5), || sock.exists()),
            "the agent's socket never appeared"
        );
        let added = std::process::Command::new("ssh-add")
            .arg(&t.key)
            .env("SSH_AUTH_SOCK", &sock)
            .output()
            .map_err(|e| format!("ssh-add: {e}"))?;
        ensure!(added.status.success(), "ssh-add: {added:?}");
        let r = router()?;
        let agent_opt = format!("IdentityAgent={}", sock.display());
        let mut args = known_hosts_args(&t.known_hosts);
        args.extend(["-o".to_string(), agent_opt.clone()]);
        let ctx = r
            .ssh(&t.host1)
            .username("dan")
            .identities_only(false)
            .ssh_args(args.clone())
            .connect_timeout(Duration::from_secs(20))
            .connect()?;
        ensure!(ctx.call::<whoami>(())?.1 == "dan", "not dan");
        // Without the agent the same connect has no key and no password.
        let mut no_agent = known_hosts_args(&t.known_hosts);
        no_agent.extend(["-o".to_string(), "IdentityAgent=none".to_string()]);
        let e = expect_err(
            "no agent, no key",
            r.ssh(&t.host1)
                .username("dan")
                .identities_only(false)
                .ssh_args(no_agent)
                .connect_timeout(Duration::from_secs(20))
                .connect(),
        )?;
        ensure!(
            matches!(e, Error::Password(_) | Error::Stream(_)),
            "without the agent: {e}"
        );
        Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `agent_binary`: the context runs another mitogen program (the fleet
/// example), uploaded to the host; its functions are reached by name.
fn agent_binary_of_another_program() -> TestResult {
    let t = tb()?;
    let fleet = example("fleet")?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host2, "root")
        .agent_binary(&fleet)
        .connect()?;
    let (host, _load, _mem): (String, String, u64) = ctx.call_by_name("fleet::facts", &())?;
    ensure!(host == "mtb-host2", "facts from {host}");
    // This test binary's own functions are not in that program.
    match ctx.call::<whoami>(()) {
        Err(Error::Call(e)) => ensure!(e.type_name().contains("UnknownFunction"), "{e}"),
        other => return Err(format!("a function of another binary: {other:?}").into()),
    }
    Ok(())
}

/// A jump host (`-J`) through the ssh config: host2 reached via host1.
fn jump_host() -> TestResult {
    let t = tb()?;
    let cfg = format!(
        "{}/ssh_config",
        std::path::Path::new(&t.key)
            .parent()
            .ok_or("key path")?
            .display()
    );
    let r = router()?;
    let jump = format!("root@{}", t.host1);
    let ctx = r
        .ssh(&t.host2)
        .username("dan")
        .ssh_args(["-F", cfg.as_str(), "-J", jump.as_str()])
        .connect()?;
    let (host, user, pid) = ctx.call::<whoami>(())?;
    ensure!(host == "mtb-host2" && user == "dan", "got {host} {user}");
    // The connection to host2's sshd came from host1's address.
    let conn = ctx
        .call::<env_var>(("SSH_CONNECTION".into(),))?
        .unwrap_or_default();
    ensure!(
        conn.starts_with(&format!("{} ", t.host1)),
        "SSH_CONNECTION {conn:?} (pid {pid})"
    );
    Ok(())
}

fn write_known_hosts(tag: &str, lines: &str) -> Result<String, libtest_mimic::Failed> {
    let dir = std::env::temp_dir().join(format!("mitogen-hosts-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let f = dir.join("known_hosts");
    std::fs::write(&f, lines)?;
    Ok(f.to_string_lossy().into_owned())
}

/// The real key of `host` from the test bed's known_hosts.
fn host_key_line(host: &str) -> Result<String, libtest_mimic::Failed> {
    let t = tb()?;
    let kh = std::fs::read_to_string(&t.known_hosts)?;
    kh.lines()
        .find(|l| l.split_whitespace().next() == Some(host))
        .map(|l| format!("{l}\n"))
        .ok_or_else(|| format!("{host} not in {}", t.known_hosts).into())
}

fn unknown_host_key_enforce() -> TestResult {
    let t = tb()?;
    let kh = write_known_hosts("unknown", "")?;
    let r = router()?;
    let e = expect_err(
        "unknown host under enforce",
        r.ssh(&t.host1)
            .username("root")
            .identity_file(&t.key)
            .ssh_args(known_hosts_args(&kh))
            .connect(),
    )?;
    match &e {
        Error::HostKey(h) => {
            ensure!(!h.changed(), "reported as changed: {h}");
            ensure!(h.message().contains("no host key is known"), "message: {h}");
        }
        other => return Err(format!("not a HostKeyError: {other:?}").into()),
    }
    Ok(())
}

fn changed_host_key() -> TestResult {
    let t = tb()?;
    // host1's address with host2's key: a changed key.
    let wrong = host_key_line(&t.host2)?.replacen(&t.host2, &t.host1, 1);
    let kh = write_known_hosts("changed", &wrong)?;
    let r = router()?;
    for mode in [HostKeyCheck::Enforce, HostKeyCheck::Accept] {
        let e = expect_err(
            "changed host key",
            r.ssh(&t.host1)
                .username("root")
                .identity_file(&t.key)
                .check_host_keys(mode)
                .ssh_args(known_hosts_args(&kh))
                .connect(),
        )?;
        match &e {
            Error::HostKey(h) => ensure!(h.changed(), "{mode:?}: not reported as changed: {h}"),
            other => return Err(format!("{mode:?}: not a HostKeyError: {other:?}").into()),
        }
    }
    Ok(())
}

fn accept_records_new_key() -> TestResult {
    let t = tb()?;
    let kh = write_known_hosts("accept", "")?;
    let r = router()?;
    let ctx = r
        .ssh(&t.host3)
        .username("root")
        .identity_file(&t.key)
        .check_host_keys(HostKeyCheck::Accept)
        .ssh_args(known_hosts_args(&kh))
        .connect()?;
    ensure!(ctx.call::<whoami>(())?.0 == "mtb-host3", "wrong host");
    let recorded = std::fs::read_to_string(&kh)?;
    ensure!(
        recorded.contains("ssh-ed25519"),
        "key not recorded: {recorded:?}"
    );
    Ok(())
}

fn ignore_checks_nothing() -> TestResult {
    let t = tb()?;
    let wrong = host_key_line(&t.host2)?.replacen(&t.host2, &t.host1, 1);
    let kh = write_known_hosts("ignore", &wrong)?;
    let r = router()?;
    // The user's known_hosts (given first) holds a wrong key; ignore
    // replaces the files with /dev/null, so it is never read.
    let ctx = r
        .ssh(&t.host1)
        .username("root")
        .identity_file(&t.key)
        .check_host_keys(HostKeyCheck::Ignore)
        .connect()?;
    ensure!(ctx.call::<whoami>(())?.0 == "mtb-host1", "wrong host");
    ensure!(
        std::fs::read_to_string(&kh)? == wrong,
        "known_hosts changed"
    );
    Ok(())
}

fn unreachable_connect_timeout() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let start = Instant::now();
    let e = expect_err(
        "unreachable host",
        ssh_key(&r, &t.unreachable, "root")
            .connect_timeout(Duration::from_secs(2))
            .connect(),
    )?;
    let took = start.elapsed();
    // Whichever gives up first, ssh (its ConnectTimeout) or this side.
    ensure!(matches!(e, Error::Timeout(_)), "not a TimeoutError: {e:?}");
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    let m = e.to_string();
    ensure!(
        m.contains(&t.unreachable),
        "message does not name the host: {m}"
    );
    Ok(())
}

/// A server that accepts TCP connections and never says a word: a frozen
/// sshd, without freezing one of the test bed's (other tests use them).
/// The kernel completes the handshake for connections left in the backlog.
fn silent_server() -> Result<(std::net::TcpListener, u16), Failed> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    let port = l
        .local_addr()
        .map_err(|e| format!("local_addr: {e}"))?
        .port();
    Ok((l, port))
}

/// ssh to a server that never answers ends at the connect timeout with
/// `Error::Timeout`, naming the method and the target.
fn silent_server_times_out() -> TestResult {
    let _t = tb()?;
    let r = router()?;
    let (_server, port) = silent_server()?;
    let start = Instant::now();
    let e = expect_err(
        "silent server",
        ssh_key(&r, "127.0.0.1", "root")
            .port(port)
            .connect_timeout(Duration::from_secs(1))
            .connect(),
    )?;
    let took = start.elapsed();
    ensure!(matches!(e, Error::Timeout(_)), "not a timeout: {e:?}");
    let m = e.to_string();
    ensure!(
        m.contains(&format!("ssh to root@127.0.0.1:{port}")),
        "the message does not name the method and target: {m}"
    );
    ensure!(took < Duration::from_secs(10), "took {took:?}");
    Ok(())
}

/// `Broker::shutdown` while ssh waits for a server that never answers:
/// the connect fails at once, not after its 30 s timeout, and ssh is
/// killed and reaped.
fn shutdown_during_connect_to_silent_server() -> TestResult {
    let _t = tb()?;
    let r = router()?;
    let (server, port) = silent_server()?;
    let (tx, rx) = std::sync::mpsc::channel();
    let r2 = r.clone();
    std::thread::spawn(move || {
        let res = ssh_key(&r2, "127.0.0.1", "root")
            .port(port)
            .connect_timeout(Duration::from_secs(30))
            .connect();
        let _ = tx.send((res, Instant::now()));
    });
    // ssh has reached the server: the connect is under way.
    server
        .set_nonblocking(true)
        .map_err(|e| format!("set_nonblocking: {e}"))?;
    let mut conn = None;
    let reached = wait_for(Duration::from_secs(20), || {
        conn = server.accept().ok();
        conn.is_some()
    });
    ensure!(reached, "ssh never connected to the silent server");
    let ssh_pid = ssh_to_port(port).ok_or("no ssh child process found")?;
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    r.broker().shutdown();
    let (res, at) = rx
        .recv_timeout(Duration::from_secs(10))
        .map_err(|_| "the connect did not return within 10 s of shutdown")?;
    let took = at.saturating_duration_since(start);
    ensure!(
        took < Duration::from_secs(2),
        "returned {took:?} after shutdown"
    );
    match &res {
        Err(Error::Stream(e)) => ensure!(
            e.message().contains("shut down"),
            "message {:?}",
            e.message()
        ),
        other => return Err(format!("expected a StreamError, got {other:?}").into()),
    }
    // ssh was our child: killed and reaped, so the server sees its end
    // (after the client's version line, which ssh sends first).
    let (mut c, _) = conn.ok_or("no connection")?;
    c.set_nonblocking(false)
        .and_then(|()| c.set_read_timeout(Some(Duration::from_secs(5))))
        .map_err(|e| format!("socket options: {e}"))?;
    let mut got = Vec::new();
    let n = std::io::Read::read_to_end(&mut c, &mut got);
    ensure!(
        n.is_ok() || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "ssh still holds its connection: {n:?} after {:?}",
        String::from_utf8_lossy(&got)
    );
    let st = std::fs::read_to_string(format!("/proc/{ssh_pid}/stat"));
    ensure!(st.is_err(), "ssh (pid {ssh_pid}) not reaped: {st:?}");
    Ok(())
}

/// The child of this process running `ssh … -p PORT …`.
fn ssh_to_port(port: u16) -> Option<u32> {
    let me = std::process::id().to_string();
    let arg = format!("\0-p\0{port}\0");
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid = stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (ppid == me && cmd.starts_with("ssh\0") && cmd.contains(&arg)).then_some(pid)
    })
}

fn connection_refused() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let e = expect_err(
        "refused port",
        ssh_key(&r, &t.host1, "root").port(2222).connect(),
    )?;
    ensure!(matches!(e, Error::Stream(_)), "not a StreamError: {e:?}");
    ensure!(e.to_string().contains("Connection refused"), "message: {e}");
    Ok(())
}

fn no_password_given() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let mut args = known_hosts_args(&t.known_hosts);
    args.extend(["-o".into(), "PubkeyAuthentication=no".into()]);
    let e = expect_err(
        "password needed, none given",
        r.ssh(&t.host2).username("alice").ssh_args(args).connect(),
    )?;
    ensure!(
        matches!(e, Error::Password(_)),
        "not a PasswordError: {e:?}"
    );
    ensure!(
        e.to_string().contains("no password was given"),
        "message: {e}"
    );
    Ok(())
}

/// The per-connection sshd dies: pending calls fail promptly.
fn sshd_killed_mid_session() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host2, "root").connect()?;
    let sshd = session_sshd(&ctx)?;
    let (_, _, agent_pid) = ctx.call::<whoami>(())?;
    let pending = ctx.call_async::<sleep_ms>((60_000,))?;
    std::thread::sleep(Duration::from_millis(200));
    signal(sshd, "KILL")?;
    let start = Instant::now();
    let r2 = bounded("the pending call", Duration::from_secs(15), move || {
        pending.get(None)
    })?;
    ensure!(r2.is_err(), "the call succeeded after sshd died");
    ensure!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    ensure!(!ctx.is_connected(), "context still connected");
    // The agent on the host notices too and exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{agent_pid}")).exists() {
        let st = std::fs::read_to_string(format!("/proc/{agent_pid}/stat")).unwrap_or_default();
        if st.contains(") Z") {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the agent {agent_pid} outlived its link"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A server that stops answering (its sshd frozen, as behind a dead
/// network) is noticed through keepalives, and calls fail.
fn dead_network_keepalive() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let ctx = ssh_key(&r, &t.host2, "root")
        .keepalive(Duration::from_secs(1), 2)
        .connect()?;
    let sshd = session_sshd(&ctx)?;
    let pending = ctx.call_async::<sleep_ms>((60_000,))?;
    signal(sshd, "STOP")?;
    let start = Instant::now();
    let res = bounded("the pending call", Duration::from_secs(20), move || {
        pending.get(None)
    });
    let _ = signal(sshd, "KILL");
    let res = res?;
    ensure!(res.is_err(), "the call succeeded with a frozen server");
    // Within the documented budget, interval × (count + 1) = 3 s, plus
    // the time for the failure to reach the call (generous: 2 s).
    ensure!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    Ok(())
}

fn bad_parameters_refused() -> TestResult {
    let r = router()?;
    for (what, b) in [
        (
            "host name starting with -",
            r.ssh("-oProxyCommand=touch /tmp/x"),
        ),
        ("debug level 4", r.ssh("h").ssh_debug_level(4)),
        ("zero keepalive", r.ssh("h").keepalive(Duration::ZERO, 3)),
    ] {
        let e = expect_err(what, b.connect())?;
        ensure!(matches!(e, Error::Stream(_)), "{what}: {e:?}");
    }
    Ok(())
}
