//! `fakessh` scenarios with real tools (rsync, scp, git, sh), shared by
//! `tests/core` (a local context) and `tests/hosts` (a sudo context on a
//! test host, and a context reached through ssh → ssh). Each takes the
//! destination context; files on the destination are made and compared
//! through remote calls, so they work wherever the destination runs.

use libtest_mimic::Failed;
use mitogen::fakessh::Tool;
use mitogen::Context;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bound of one tool run in these scenarios.
pub const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// Runs `sh -c script` where it is called: (status, stdout, stderr).
#[mitogen::remote]
pub fn sh_here(script: String) -> (i32, String, String) {
    match Command::new("/bin/sh").arg("-c").arg(&script).output() {
        Ok(o) => (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        ),
        Err(e) => (-1, String::new(), e.to_string()),
    }
}

/// `script` on `dest`, which must succeed; its stdout.
pub fn remote_sh(dest: &Context, script: &str) -> Result<String, Failed> {
    let (code, out, err) = dest
        .call::<sh_here>((script.to_string(),))
        .map_err(|e| format!("remote {script:?}: {e}"))?;
    ensure!(code == 0, "remote {script:?} exited {code}: {err}");
    Ok(out)
}

/// `script` here, which must succeed; its stdout.
pub fn local_sh(script: &str) -> Result<String, Failed> {
    let (code, out, err) = sh_here(script.to_string());
    ensure!(code == 0, "{script:?} exited {code}: {err}");
    Ok(out)
}

/// What a tree holds: directories, links and each file's sha256, sorted.
pub fn digest_script(dir: &str) -> String {
    format!(
        "cd '{dir}' && {{ find . -type d | sort; find . -type l -printf '%p -> %l\\n' | sort; \
         find . -type f -exec sha256sum {{}} + | sort -k2; }}"
    )
}

/// A fresh directory on `dest`, writable by its user.
pub fn remote_tempdir(dest: &Context, tag: &str) -> Result<String, Failed> {
    let out = remote_sh(
        dest,
        &format!("mktemp -d /tmp/mitogen-fakessh-test-{tag}.XXXXXX"),
    )?;
    Ok(out.trim().to_string())
}

/// Whether a tool is installed here.
#[allow(dead_code)] // the host tests rely on the test bed instead
pub fn have(tool: &str) -> bool {
    Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("command -v {tool} >/dev/null"))
        .status()
        .is_ok_and(|s| s.success())
}

/// A local work directory (removed on drop).
pub struct Work(PathBuf);

impl Work {
    pub fn new(tag: &str) -> Result<Work, Failed> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "mitogen-fakessh-work-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).map_err(|e| format!("mkdir {}: {e}", p.display()))?;
        Ok(Work(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn s(&self) -> String {
        self.0.to_string_lossy().into_owned()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `sh -c script` as the tool, in `work`, its `ssh` reaching
/// `dest`: (status, stdout, stderr).
pub fn through(
    dest: &Context,
    work: &Work,
    script: &str,
    deadline: Duration,
) -> Result<(mitogen::Result<ExitStatus>, String, String), Failed> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let out_p = work.path().join(format!(".out{n}"));
    let err_p = work.path().join(format!(".err{n}"));
    let out = std::fs::File::create(&out_p).map_err(|e| format!("{e}"))?;
    let err = std::fs::File::create(&err_p).map_err(|e| format!("{e}"))?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    let status = Tool::new(dest, cmd).deadline(deadline).status();
    let o = std::fs::read_to_string(&out_p).unwrap_or_default();
    let e = std::fs::read_to_string(&err_p).unwrap_or_default();
    Ok((status, o, e))
}

/// Like [`through`], and the tool must exit 0: its stdout.
pub fn through_ok(dest: &Context, work: &Work, script: &str) -> Result<String, Failed> {
    let (st, out, err) = through(dest, work, script, TOOL_LIMIT)?;
    let st = st.map_err(|e| format!("{script:?}: {e}"))?;
    ensure!(st.success(), "{script:?}: {st}; stderr: {err}");
    Ok(out)
}

/// A local tree with what rsync must carry: nested directories, an empty
/// one, a symlink, names with spaces, a file of several windows.
fn make_tree(root: &Path) -> Result<(), Failed> {
    let s = root.to_string_lossy();
    local_sh(&format!(
        "mkdir -p '{s}/a/b/c' '{s}/empty' && echo hello > '{s}/a/hello.txt' && \
         printf 'x y' > '{s}/a/b/with space' && ln -s hello.txt '{s}/a/link' && \
         head -c 3000000 /dev/urandom > '{s}/a/b/c/big.bin' && chmod 640 '{s}/a/hello.txt'"
    ))?;
    Ok(())
}

/// rsync a tree to `dest` and back; both copies equal the original.
pub fn rsync_both_ways(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("rsync")?;
    let src = work.path().join("src");
    make_tree(&src)?;
    let remote = remote_tempdir(dest, "rsync")?;
    let r = (|| {
        through_ok(
            dest,
            &work,
            &format!("rsync -a src/ anyhost:{remote}/tree/"),
        )?;
        let want = local_sh(&digest_script(&format!("{}/src", work.s())))?;
        let there = remote_sh(dest, &digest_script(&format!("{remote}/tree")))?;
        ensure!(want == there, "pushed tree differs:\n{want}\n---\n{there}");
        through_ok(
            dest,
            &work,
            &format!("rsync -a -e 'ssh -l nobody -p 2222' h:{remote}/tree/ back/"),
        )?;
        let back = local_sh(&digest_script(&format!("{}/back", work.s())))?;
        ensure!(want == back, "pulled tree differs:\n{want}\n---\n{back}");
        Ok(())
    })();
    let _ = remote_sh(dest, &format!("rm -rf '{remote}'"));
    r
}

/// scp a file there (SFTP, scp's default) and back (the legacy protocol).
pub fn scp_both_ways(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("scp")?;
    local_sh(&format!(
        "head -c 1500000 /dev/urandom > '{}/f.bin'",
        work.s()
    ))?;
    let remote = remote_tempdir(dest, "scp")?;
    let r = (|| {
        through_ok(
            dest,
            &work,
            &format!("scp -q -S ssh f.bin h:{remote}/f.bin"),
        )?;
        through_ok(
            dest,
            &work,
            &format!("scp -q -O -S \"$MITOGEN_FAKESSH_SSH\" h:{remote}/f.bin back.bin"),
        )?;
        let a = local_sh(&format!("sha256sum < '{}/f.bin'", work.s()))?;
        let b = local_sh(&format!("sha256sum < '{}/back.bin'", work.s()))?;
        let c = remote_sh(dest, &format!("sha256sum < '{remote}/f.bin'"))?;
        ensure!(a == b && a == c, "copies differ: {a} {b} {c}");
        Ok(())
    })();
    let _ = remote_sh(dest, &format!("rm -rf '{remote}'"));
    r
}

/// `git clone` of a bare repository on `dest`, then a `git push` to it.
pub fn git_clone_and_push(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("git")?;
    let remote = remote_tempdir(dest, "git")?;
    let id = "-c user.name=t -c user.email=t@example.invalid";
    let r = (|| {
        remote_sh(
            dest,
            &format!(
                "cd '{remote}' && git init -q -b main src && cd src && echo one > f && git add f && \
                 git {id} commit -qm one && cd .. && git clone -q --bare src repo.git"
            ),
        )?;
        through_ok(
            dest,
            &work,
            &format!("git clone -q h:{remote}/repo.git clone"),
        )?;
        let f = std::fs::read_to_string(work.path().join("clone/f"))
            .map_err(|e| format!("clone/f: {e}"))?;
        ensure!(f == "one\n", "cloned f: {f:?}");
        through_ok(
            dest,
            &work,
            &format!(
                "cd clone && echo two > f && git {id} commit -qam two && git push -q origin main"
            ),
        )?;
        let log = remote_sh(
            dest,
            &format!("git -C '{remote}/repo.git' log --format=%s main"),
        )?;
        ensure!(log == "two\none\n", "pushed log: {log:?}");
        Ok(())
    })();
    let _ = remote_sh(dest, &format!("rm -rf '{remote}'"));
    r
}

/// Two invocations at once: each remote command waits (bounded) for the
/// other to have started, so run one after the other they would fail.
/// Then two scp at once.
pub fn concurrent_invocations(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("conc")?;
    let remote = remote_tempdir(dest, "conc")?;
    let r = (|| {
        let wait = |me: &str, other: &str| {
            format!(
                "touch {remote}/{me}; i=0; while [ ! -e {remote}/{other} ]; do \
                 i=$((i+1)); [ $i -gt 200 ] && exit 3; sleep 0.1; done; echo {me}"
            )
        };
        let out = through_ok(
            dest,
            &work,
            &format!(
                "ssh h '{}' > a & ssh h '{}' > b & wait %1 && wait %2 && cat a b",
                wait("a", "b"),
                wait("b", "a")
            ),
        )?;
        ensure!(out == "a\nb\n", "outputs: {out:?}");
        local_sh(&format!(
            "head -c 700000 /dev/urandom > '{0}/x' && head -c 900000 /dev/urandom > '{0}/y'",
            work.s()
        ))?;
        through_ok(
            dest,
            &work,
            &format!(
                "scp -q -S ssh x h:{remote}/x & scp -q -S ssh y h:{remote}/y & wait %1 && wait %2"
            ),
        )?;
        let here = local_sh(&format!("cd '{}' && sha256sum x y", work.s()))?;
        let there = remote_sh(dest, &format!("cd '{remote}' && sha256sum x y"))?;
        ensure!(here == there, "scp copies differ:\n{here}\n{there}");
        Ok(())
    })();
    let _ = remote_sh(dest, &format!("rm -rf '{remote}'"));
    r
}

/// Processes on `dest` whose command line contains `marker`.
pub fn remote_procs_with(dest: &Context, marker: &str) -> Result<String, Failed> {
    // The grep itself (and this shell) carry the marker split in two.
    let (a, b) = marker.split_at(marker.len() / 2);
    remote_sh(
        dest,
        &format!(
            "for p in /proc/[0-9]*; do c=$(tr '\\0' ' ' < $p/cmdline 2>/dev/null); \
             case \"$c\" in *'{a}''{b}'*) echo \"${{p#/proc/}} $c\";; esac; done; true"
        ),
    )
}

/// A tool past its deadline: killed with its remote command, and its
/// directory removed.
pub fn deadline_kills_everything(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("deadline")?;
    let marker = format!("{}", 900_000 + std::process::id() % 99_999);
    let started = std::time::Instant::now();
    let (st, _out, err) = through(
        dest,
        &work,
        &format!(
            "echo \"$MITOGEN_FAKESSH_SOCKET\" > sock; ssh h 'exec sleep {marker}'; echo survived"
        ),
        Duration::from_secs(2),
    )?;
    ensure!(
        matches!(st, Err(mitogen::Error::Timeout(_))),
        "not a timeout: {st:?} ({err})"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "the deadline was not kept"
    );
    let gone = crate::util::wait_for(Duration::from_secs(10), || {
        remote_procs_with(dest, &format!("sleep {marker}")).is_ok_and(|s| s.trim().is_empty())
    });
    ensure!(
        gone,
        "left on the destination: {}",
        remote_procs_with(dest, &marker)?
    );
    let sock = std::fs::read_to_string(work.path().join("sock")).map_err(|e| format!("{e}"))?;
    let dir = Path::new(sock.trim()).parent().ok_or("no socket path")?;
    ensure!(!dir.exists(), "{} left behind", dir.display());
    Ok(())
}

/// Exit codes, signals, stdin end of file and refused options.
pub fn statuses(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("status")?;
    let (st, _, _) = through(dest, &work, "ssh h 'exit 7'", TOOL_LIMIT)?;
    let st = st.map_err(|e| format!("{e}"))?;
    ensure!(st.code() == Some(7), "exit 7 gave {st}");
    let out = through_ok(dest, &work, "ssh h 'kill -TERM $$'; echo $?")?;
    ensure!(out == "143\n", "a remote SIGTERM gave {out:?}");
    let out = through_ok(
        dest,
        &work,
        "printf abc | ssh -T -x -oBatchMode=yes -l u h wc -c",
    )?;
    ensure!(out.trim() == "3", "stdin through wc: {out:?}");
    let out = through_ok(dest, &work, "echo 'echo from stdin' | ssh h")?;
    ensure!(
        out == "from stdin\n",
        "no command (a shell on stdin): {out:?}"
    );
    let out = through_ok(
        dest,
        &work,
        "ssh h 'echo out; echo err >&2' 2>&1 >/dev/null",
    )?;
    ensure!(out == "err\n", "stderr: {out:?}");
    // Neither a command that reads no input nor a tool that stops
    // reading output holds the session: both end at once, as with ssh.
    let started = std::time::Instant::now();
    let out = through_ok(
        dest,
        &work,
        "head -c 8000000 /dev/zero > z; ssh h 'exit 7' < z; echo $?; ssh h yes | head -2",
    )?;
    ensure!(out == "7\ny\ny\n", "unread stdin, closed stdout: {out:?}");
    ensure!(
        started.elapsed() < Duration::from_secs(30),
        "a session was held"
    );
    let (st, _, err) = through(dest, &work, "ssh -L 1:h:2 h true", TOOL_LIMIT)?;
    let st = st.map_err(|e| format!("{e}"))?;
    ensure!(
        st.code() == Some(255) && err.contains("not supported"),
        "-L: {st} {err}"
    );
    Ok(())
}

/// Peak resident memory of the process it runs in, in KiB.
#[mitogen::remote]
pub fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 64 MiB through `cat` on `dest`, intact, while the destination's
/// memory grows by much less than that.
pub fn large_stdin(dest: &Context) -> Result<(), Failed> {
    let work = Work::new("large")?;
    local_sh(&format!(
        "head -c 67108864 /dev/urandom > '{}/in'",
        work.s()
    ))?;
    let before = dest.call::<peak_rss_kib>(()).map_err(|e| format!("{e}"))?;
    through_ok(dest, &work, "ssh h cat < in > out")?;
    let after = dest.call::<peak_rss_kib>(()).map_err(|e| format!("{e}"))?;
    let a = local_sh(&format!("sha256sum < '{}/in'", work.s()))?;
    let b = local_sh(&format!("sha256sum < '{}/out'", work.s()))?;
    ensure!(a == b, "64 MiB came back different");
    ensure!(
        after.saturating_sub(before) < 24 * 1024,
        "the destination's peak memory grew by {} KiB for 64 MiB",
        after.saturating_sub(before)
    );
    Ok(())
}
