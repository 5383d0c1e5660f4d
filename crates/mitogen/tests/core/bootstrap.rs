//! Bootstrap: option validation, the process title, `agent_command`,
//! `agent_binary` failures and timeouts, and the agent cache.

use crate::util::pid;
use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::{Failed, Trial};
use mitogen::{Error, RemoteFn};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "bootstrap::a_full_cache_directory_falls_back",
            TEST_LIMIT,
            a_full_cache_directory_falls_back,
        ),
        trial(
            "bootstrap::remote_name_with_slash",
            TEST_LIMIT,
            remote_name_with_slash,
        ),
        trial("bootstrap::process_title", TEST_LIMIT, process_title),
        trial(
            "bootstrap::agent_command_nice",
            TEST_LIMIT,
            agent_command_nice,
        ),
        trial(
            "bootstrap::agent_binary_without_mitogen_main",
            TEST_LIMIT,
            agent_binary_without_mitogen_main,
        ),
        trial(
            "bootstrap::agent_binary_connect_timeout",
            TEST_LIMIT,
            agent_binary_connect_timeout,
        ),
        trial(
            "bootstrap::agent_failure_reports_stderr",
            TEST_LIMIT,
            agent_failure_reports_stderr,
        ),
        trial(
            "bootstrap::agent_command_missing",
            TEST_LIMIT,
            agent_command_missing,
        ),
        trial(
            "bootstrap::agent_without_its_libraries",
            TEST_LIMIT,
            agent_without_its_libraries,
        ),
        trial(
            "bootstrap::agent_binary_missing",
            TEST_LIMIT,
            agent_binary_missing,
        ),
        trial("bootstrap::agent_cache", TEST_LIMIT, agent_cache),
        trial(
            "bootstrap::cache_skips_insecure_dirs",
            Duration::from_secs(120),
            cache_skips_insecure_dirs,
        ),
        trial("bootstrap::debug_option", TEST_LIMIT, debug_option),
        trial("bootstrap::profiling_option", TEST_LIMIT, profiling_option),
    ]
}

/// First argument and kernel name (`comm`) of the process.
#[mitogen::remote]
fn title() -> std::io::Result<(String, String)> {
    let cmdline = std::fs::read("/proc/self/cmdline")?;
    let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    let comm = std::fs::read_to_string("/proc/self/comm")?;
    Ok((
        String::from_utf8_lossy(first).into_owned(),
        comm.trim_end().to_string(),
    ))
}

/// The nice value of the process (field 19 of `/proc/self/stat`).
#[mitogen::remote]
fn nice_value() -> std::io::Result<i32> {
    own_nice()
}

#[mitogen::remote]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

fn own_nice() -> std::io::Result<i32> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    util::stat_field(&stat, 19)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no nice field in {stat:?}")))
}

fn stream_message(r: mitogen::Result<mitogen::Context>, what: &str) -> Result<String, String> {
    match r {
        Err(Error::Stream(e)) => Ok(e.message().to_string()),
        other => Err(format!("{what}: expected Error::Stream, got {other:?}")),
    }
}

fn remote_name_with_slash() -> TestResult {
    let router = util::router()?;
    let m = stream_message(router.local().remote_name("a/b").connect(), "local")?;
    ensure!(m.contains("a/b") && m.contains('/'), "message {m:?}");
    let m = stream_message(router.fork().remote_name("x/").connect(), "fork")?;
    ensure!(m.contains("x/"), "message {m:?}");
    let ok = router.local().remote_name("a-b.c_d@e:f").connect()?;
    ensure!(ok.call::<add>((1, 1))? == 2, "valid name");
    Ok(())
}

fn process_title() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("title-check").connect()?;
    let (argv0, comm) = ctx.call::<title>(())?;
    ensure!(
        argv0 == "mitogen:title-check",
        "cmdline starts with {argv0:?}"
    );
    ensure!(comm == "mitogen:title-c", "comm is {comm:?}");
    ensure!(ctx.name() == "title-check", "name {:?}", ctx.name());

    // The default names this process.
    let anon = router.local().connect()?;
    let (argv0, _) = anon.call::<title>(())?;
    let suffix = format!(":{}", std::process::id());
    ensure!(
        argv0.starts_with("mitogen:") && argv0.contains('@') && argv0.ends_with(&suffix),
        "default title {argv0:?}"
    );
    // Fork children take the title too.
    let forked = router.fork().remote_name("forked-title").connect()?;
    let (argv0, _) = forked.call::<title>(())?;
    ensure!(argv0 == "mitogen:forked-title", "fork title {argv0:?}");
    Ok(())
}

fn agent_command_nice() -> TestResult {
    let router = util::router()?;
    let ours = own_nice().map_err(|e| e.to_string())?;
    let ctx = router
        .local()
        .agent_command(["nice", "-n", "10"])
        .connect()?;
    let theirs = ctx.call::<nice_value>(())?;
    ensure!(
        theirs == (ours + 10).min(19),
        "child nice {theirs}, ours {ours}"
    );
    // Without the prefix, the child inherits our value.
    let plain = router.local().connect()?;
    ensure!(plain.call::<nice_value>(())? == ours, "plain child nice");
    Ok(())
}

fn agent_binary_without_mitogen_main() -> TestResult {
    let router = util::router()?;
    let t = Instant::now();
    let r = router
        .local()
        .agent_binary("/bin/true")
        .connect_timeout(Duration::from_secs(10))
        .connect();
    let m = stream_message(r, "agent_binary(/bin/true)")?;
    ensure!(m.contains("mitogen::main"), "message {m:?}");
    ensure!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

fn agent_binary_connect_timeout() -> TestResult {
    let router = util::router()?;
    let dir = TempDir::new("sleeper")?;
    let pidfile = dir.path().join("pid");
    let (script, sha) = script(
        dir.path(),
        "sleeper.sh",
        &format!(
            "#!/bin/sh\necho $$ > '{}'\nexec sleep 60\n",
            pidfile.display()
        ),
    )?;

    let t = Instant::now();
    let r = router
        .local()
        .agent_binary(&script)
        .connect_timeout(Duration::from_secs(1))
        .connect();
    let took = t.elapsed();
    let result = (|| -> TestResult {
        let m = match r {
            Err(Error::Timeout(e)) => e.to_string(),
            other => return Err(format!("expected Error::Timeout, got {other:?}").into()),
        };
        ensure!(m.contains("timed out"), "message {m:?}");
        ensure!(took < Duration::from_secs(10), "took {took:?}");
        ensure!(
            took >= Duration::from_millis(900),
            "gave up early, after {took:?}"
        );
        // The sleeper ran as the agent, and was killed and reaped.
        let pid: u32 = std::fs::read_to_string(&pidfile)
            .map_err(|e| format!("the sleeper never ran: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("pid file: {e}"))?;
        util::wait_exited(pid, Duration::from_secs(5), false)?;
        Ok(())
    })();
    // Its copy in the cache is of no further use.
    uncache(&sha);
    result
}

/// Writes an executable script into `dir` and returns its path and hash.
fn script(dir: &Path, name: &str, body: &str) -> Result<(PathBuf, String), Failed> {
    let path = dir.join(name);
    std::fs::write(&path, body).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let sha = util::sha256_file(&path)?;
    Ok((path, sha))
}

/// Removes an agent uploaded by a test from the cache directories.
fn uncache(sha: &str) {
    for d in util::cache_dirs(|k| std::env::var(k).ok()) {
        let _ = std::fs::remove_file(d.join(sha));
    }
}

fn agent_failure_reports_stderr() -> TestResult {
    let router = util::router()?;
    let dir = TempDir::new("failing-agent")?;
    let (path, sha) = script(
        dir.path(),
        "failing.sh",
        &format!(
            "#!/bin/sh\n# {}\necho 'custom failure text' >&2\nexit 3\n",
            dir.path().display()
        ),
    )?;
    let r = router.local().agent_binary(&path).connect();
    uncache(&sha);
    let m = stream_message(r, "agent_binary(failing.sh)")?;
    ensure!(m.contains("custom failure text"), "message {m:?}");
    ensure!(m.contains("status 3"), "message {m:?}");
    Ok(())
}

/// A wrapper command that does not exist is reported as such, not as a
/// program lacking `mitogen::main`.
fn agent_command_missing() -> TestResult {
    let router = util::router()?;
    let r = router
        .local()
        .agent_command(["/nonexistent/wrapper"])
        .connect();
    let m = stream_message(r, "agent_command(missing)")?;
    ensure!(m.contains("not found"), "message {m:?}");
    ensure!(m.contains("status 127"), "message {m:?}");
    ensure!(!m.contains("mitogen::main"), "misleading hint in {m:?}");
    Ok(())
}

/// The dynamic loader cannot find a library the agent needs (a damaged
/// cache, a target without the C library): it exits 127, as a shell does
/// for a command not found, and its own words must lead the message.
/// Made real with a chroot holding the agent and its loader, no library.
fn agent_without_its_libraries() -> TestResult {
    let root = TempDir::new("nolibs")?;
    let r = root.path().display().to_string();
    // `$0` is the agent's path in the cache, the same inside the chroot.
    let wrapper = format!(
        r#"r='{r}'; i=$(ldd "$0" | awk '$1 ~ /^\// {{print $1}}')
mkdir -p "$r${{0%/*}}" "$r${{i%/*}}" && cp "$0" "$r$0" && cp -L "$i" "$r$i" && exec chroot "$r" "$0" "$@""#
    );
    let router = util::router()?;
    let r = router
        .local()
        .agent_command(["sh", "-c", wrapper.as_str()])
        .connect();
    let m = stream_message(r, "agent without its libraries")?;
    ensure!(
        m.contains("error while loading shared libraries"),
        "the loader's words are missing from {m:?}"
    );
    ensure!(m.contains("status 127"), "message {m:?}");
    ensure!(
        m.contains("could not load a library"),
        "no hint about libraries in {m:?}"
    );
    ensure!(
        !m.contains("agent_command) was not found"),
        "misleading hint in {m:?}"
    );
    Ok(())
}

fn agent_binary_missing() -> TestResult {
    let router = util::router()?;
    let r = router
        .local()
        .agent_binary("/nonexistent/mitogen-agent")
        .connect();
    let m = stream_message(r, "agent_binary(missing)")?;
    ensure!(m.contains("/nonexistent/mitogen-agent"), "message {m:?}");
    Ok(())
}

/// Whether the first stage accepts `d` as it stands: a directory owned by
/// us with mode 0700 exactly.
fn usable(d: &Path) -> bool {
    std::fs::symlink_metadata(d)
        .is_ok_and(|m| m.is_dir() && m.mode() & 0o7777 == 0o700 && m.uid() == util::euid())
}

/// (inode, mtime in ns) of the cached agent, or why it is not right.
fn check_cached(dir: &Path, sha: &str, size: u64) -> Result<(u64, i128), String> {
    let d = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if d.mode() & 0o7777 != 0o700 || d.uid() != util::euid() {
        return Err(format!(
            "cache dir {} has mode {:o}, owner {}",
            dir.display(),
            d.mode() & 0o7777,
            d.uid()
        ));
    }
    let f = dir.join(sha);
    let m = std::fs::symlink_metadata(&f).map_err(|e| format!("{}: {e}", f.display()))?;
    if !m.is_file() || m.mode() & 0o7777 != 0o700 || m.uid() != util::euid() || m.len() != size {
        return Err(format!(
            "cached agent {} is file={} mode {:o} owner {} size {} (want {size})",
            f.display(),
            m.is_file(),
            m.mode() & 0o7777,
            m.uid(),
            m.len()
        ));
    }
    Ok((
        m.ino(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    ))
}

fn agent_cache() -> TestResult {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let sha = util::sha256_file(&exe)?;
    ensure!(util::is_sha_name(&sha), "sha {sha}");
    let size = std::fs::metadata(&exe).map_err(|e| e.to_string())?.len();
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ctx.call::<add>((1, 1))?;

    // The agent is in the first directory the stage accepts.
    let dirs = util::cache_dirs(|k| std::env::var(k).ok());
    let first = dirs
        .iter()
        .find(|d| usable(d))
        .ok_or_else(|| format!("no usable cache dir among {dirs:?}"))?
        .clone();
    let found: Vec<&PathBuf> = dirs.iter().filter(|d| d.join(&sha).exists()).collect();
    ensure!(
        found.first() == Some(&&first),
        "agent {sha} found in {found:?}; expected it in {}",
        first.display()
    );
    let mut before = check_cached(&first, &sha, size)?;

    // A second connect uses the cached copy: same file, untouched.
    let mut attempt = 0;
    let after = loop {
        let again = router.local().connect()?;
        again.call::<add>((2, 2))?;
        let after = check_cached(&first, &sha, size)?;
        if after == before || attempt == 1 {
            break after;
        }
        // Another test process may have been finishing an upload of the
        // same binary when we looked first: take a new baseline, once.
        attempt += 1;
        std::thread::sleep(Duration::from_millis(500));
        before = check_cached(&first, &sha, size)?;
    };
    ensure!(
        after == before,
        "the cached agent was rewritten by a second connect: {before:?} -> {after:?}"
    );
    Ok(())
}

/// Runs the helper master once with extra environment variables; returns
/// whether it succeeded, and its stdout and stderr.
fn run_example_once(path: &Path, envs: &[(&str, &Path)]) -> Result<(bool, String), String> {
    let mut cmd = std::process::Command::new(path);
    cmd.arg("once")
        .env_remove("XDG_RUNTIME_DIR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
    let pid = child.id();
    let out = util::bounded("the helper master", Duration::from_secs(60), move || {
        child.wait_with_output()
    })
    .map_err(|_| {
        let _ = util::kill9(pid);
        "the helper master hung".to_string()
    })?
    .map_err(|e| format!("wait: {e}"))?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// Directories removed on drop.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn mkdir_mode(d: &Path, mode: u32) -> TestResult {
    std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", d.display()))?;
    Ok(())
}

fn cache_skips_insecure_dirs() -> TestResult {
    let example = util::example("orphan_master")?;
    let sha = util::sha256_file(&example)?;
    let size = std::fs::metadata(&example)
        .map_err(|e| e.to_string())?
        .len();
    let tmp = TempDir::new("cache")?;
    let xdg = tmp.path().join("xdg");
    let home = tmp.path().join("home");
    let bad = xdg.join("mitogen");
    let good = home.join(".cache/mitogen");
    // A user name of our own, so that the /dev/shm and /tmp fallbacks are
    // ours to spoil too (they are named after $LOGNAME).
    let user = format!("mitogen-test-{}", std::process::id());
    let shm = PathBuf::from(format!("/dev/shm/mitogen-{user}"));
    let tmpdir = PathBuf::from(format!("/tmp/mitogen-{user}"));
    let _cleanup = Cleanup(vec![shm.clone(), tmpdir.clone()]);
    for d in [&bad, &shm, &tmpdir] {
        mkdir_mode(d, 0o777)?;
    }
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    // A planted "agent" under the right name: running it would fail the
    // connect, so a success proves the directory was not used.
    let planted = bad.join(&sha);
    std::fs::write(&planted, "#!/bin/sh\nexit 7\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let user_path = PathBuf::from(&user);
    let envs = [
        ("XDG_RUNTIME_DIR", xdg.as_path()),
        ("HOME", home.as_path()),
        ("LOGNAME", user_path.as_path()),
    ];

    // 1. The 0777 directory is skipped; the agent lands in ~/.cache.
    let (ok, out) = run_example_once(&example, &envs)?;
    ensure!(ok && out.contains("child-pid "), "helper failed: {out}");
    check_cached(&good, &sha, size).map_err(|e| format!("{e}; helper said: {out}"))?;
    let in_bad: Vec<String> = std::fs::read_dir(&bad)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        in_bad == [sha.clone()],
        "the 0777 dir was written to: {in_bad:?}"
    );
    ensure!(
        std::fs::read_to_string(&planted).ok().as_deref() == Some("#!/bin/sh\nexit 7\n"),
        "the planted file was replaced"
    );

    // 2. A 0700 directory owned by someone else is skipped too (needs root
    //    to arrange).
    if util::euid() == 0 {
        std::fs::remove_dir_all(&good).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| e.to_string())?;
        std::os::unix::fs::chown(&bad, Some(65534), Some(65534)).map_err(|e| e.to_string())?;
        let r = run_example_once(&example, &envs);
        std::os::unix::fs::chown(&bad, Some(0), Some(0)).map_err(|e| e.to_string())?;
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        let (ok, out) = r?;
        ensure!(ok && out.contains("child-pid "), "helper failed: {out}");
        check_cached(&good, &sha, size).map_err(|e| format!("{e}; helper said: {out}"))?;
    }

    // 3. With no usable directory at all, the connect fails and says why.
    std::fs::remove_dir_all(&good).map_err(|e| e.to_string())?;
    mkdir_mode(&good, 0o755)?;
    let (ok, out) = run_example_once(&example, &envs)?;
    ensure!(!ok, "helper succeeded without a usable cache dir: {out}");
    ensure!(
        out.contains("no usable agent cache directory"),
        "helper output: {out}"
    );
    ensure!(
        !good.join(&sha).exists() && !shm.join(&sha).exists() && !tmpdir.join(&sha).exists(),
        "an agent was written to an unusable directory"
    );
    Ok(())
}

fn debug_option() -> TestResult {
    let router = util::router()?;
    let ctx = router
        .local()
        .debug(true)
        .remote_name("debugged")
        .connect()?;
    let pid = ctx.call::<pid>(())?;
    let log = PathBuf::from(format!("/tmp/mitogen.{pid}.log"));
    let found = util::wait_for(WAIT, || std::fs::metadata(&log).is_ok_and(|m| m.len() > 0));
    ctx.shutdown(true, Some(WAIT))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    ensure!(found, "{} missing or empty", log.display());
    ensure!(
        text.contains("debugged") || text.contains("mitogen"),
        "log {text:?}"
    );

    // A file of that name may be left from an earlier process with the
    // same pid: only one written while the quiet context ran counts.
    let since = std::time::SystemTime::now() - Duration::from_secs(1);
    let quiet = router.local().debug(false).connect()?;
    let pid = quiet.call::<pid>(())?;
    quiet.shutdown(true, Some(WAIT))?;
    let log = PathBuf::from(format!("/tmp/mitogen.{pid}.log"));
    let written = std::fs::metadata(&log)
        .and_then(|m| m.modified())
        .is_ok_and(|t| t >= since);
    ensure!(!written, "debug(false) wrote {}", log.display());
    Ok(())
}

fn profiling_option() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().profiling(true).connect()?;
    let pid = ctx.call::<pid>(())?;
    for i in 0..5 {
        ctx.call::<add>((i, i))?;
    }
    ctx.shutdown(true, Some(WAIT))?;
    // The file is written as the context exits, after its link closed.
    util::wait_exited(pid, Duration::from_secs(5), false)?;
    let stats = PathBuf::from(format!("/tmp/mitogen.stats.{pid}.main.log"));
    let found = stats.exists();
    let text = std::fs::read_to_string(&stats).unwrap_or_default();
    let _ = std::fs::remove_file(&stats);
    ensure!(found, "{} not written", stats.display());
    ensure!(
        text.lines()
            .any(|l| l.starts_with("5\t") && l.ends_with(<add as RemoteFn>::NAME)),
        "stats {text:?}"
    );
    Ok(())
}

/// In a child whose first cache candidate (`$XDG_RUNTIME_DIR/mitogen`) is
/// a full 64 KiB tmpfs and whose `$HOME` is empty: starts a grandchild
/// twice. Returns the bytes each connect uploaded and where the agent ran.
#[mitogen::remote]
fn connect_with_a_full_cache(
    router: &mitogen::Router,
    xdg: String,
    home: String,
) -> mitogen::Result<(u64, u64, String)> {
    std::env::set_var("XDG_RUNTIME_DIR", &xdg);
    std::env::set_var("HOME", &home);
    let first = router.local().connect()?;
    let exe = first.call::<agent_exe>(())?;
    let again = router.local().connect()?;
    Ok((
        first.agent_upload_bytes().unwrap_or(0),
        again.agent_upload_bytes().unwrap_or(u64::MAX),
        exe,
    ))
}

#[mitogen::remote]
fn agent_exe() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Before: a full cache directory failed the connect ("disk full?"),
/// though the next candidate would have taken the agent.
fn a_full_cache_directory_falls_back() -> TestResult {
    if util::euid() != 0 {
        eprintln!(
            "*** bootstrap::a_full_cache_directory_falls_back SKIPPED: needs root (mounts a tmpfs)"
        );
        return Ok(());
    }
    let dir = util::TempDir::new("fullcache")?;
    let (xdg, home) = (dir.path().join("run"), dir.path().join("home"));
    std::fs::create_dir_all(&xdg)?;
    std::fs::create_dir_all(&home)?;
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0700", "mtb-fullcache"])
        .arg(&xdg)
        .status()?;
    ensure!(mounted.success(), "mount tmpfs failed");
    let r = (|| -> TestResult {
        let router = util::router()?;
        let ctx = router.local().connect()?;
        let args = (xdg.display().to_string(), home.display().to_string());
        let (first, again, exe) = ctx.call::<connect_with_a_full_cache>(args)?;
        let cache = home.join(".cache/mitogen");
        ensure!(
            exe.starts_with(&*cache.to_string_lossy()),
            "the agent ran from {exe}"
        );
        ensure!(first > 0, "nothing was uploaded the first time");
        ensure!(again == 0, "the second connect uploaded {again} bytes");
        Ok(())
    })();
    let _ = std::process::Command::new("umount").arg(&xdg).status();
    r
}
