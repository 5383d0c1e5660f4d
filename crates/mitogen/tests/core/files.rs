//! File transfer (`mitogen::files`): put, get and copy of files and trees
//! with their metadata, skip of identical files, typed errors, a sender
//! killed mid-file (no partial destination, then a resume), bounded
//! memory for 1 GiB both ways, and a push to 20 contexts through two
//! intermediates where each link carries the bytes once (counted by the
//! kernel: `/proc/PID/io`).

use crate::util::{self, trial, TempDir, TestResult, TEST_LIMIT};
use libtest_mimic::Trial;
use mitogen::files::{self, Checksum, FileErrorKind, Options};
use mitogen::Context;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    let long = Duration::from_secs(300);
    vec![
        trial(
            "files::put_and_get_one_file",
            TEST_LIMIT,
            put_and_get_one_file,
        ),
        trial("files::tree_round_trip", TEST_LIMIT, tree_round_trip),
        trial("files::skip_identical", TEST_LIMIT, skip_identical),
        trial("files::typed_errors", TEST_LIMIT, typed_errors),
        trial(
            "files::copy_between_children",
            TEST_LIMIT,
            copy_between_children,
        ),
        trial(
            "files::killed_sender_then_resume",
            TEST_LIMIT,
            killed_sender_then_resume,
        ),
        trial(
            "files::stopped_sender_times_out",
            TEST_LIMIT,
            stopped_sender_times_out,
        ),
        trial("files::gib_bounded_memory", long, gib_bounded_memory),
        trial("files::push_each_link_once", long, push_each_link_once),
        trial("files::push_a_tree", TEST_LIMIT, push_a_tree),
    ]
}

/// Writes `n` bytes that do not compress (the kernel's random bytes)
/// to `path`.
pub fn write_noise(path: &Path, n: u64, _seed: u64) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    let mut r = std::io::Read::take(std::fs::File::open("/dev/urandom")?, n);
    std::io::copy(&mut r, &mut f)?;
    f.flush()
}

fn same_bytes(a: &Path, b: &Path) -> Result<(), libtest_mimic::Failed> {
    let (x, y) = (util::sha256_file(a)?, util::sha256_file(b)?);
    ensure!(x == y, "{} and {} differ", a.display(), b.display());
    Ok(())
}

fn same_meta(a: &Path, b: &Path) -> Result<(), libtest_mimic::Failed> {
    let (x, y) = (std::fs::symlink_metadata(a)?, std::fs::symlink_metadata(b)?);
    ensure!(
        x.mode() == y.mode(),
        "mode of {}: {:o} vs {:o}",
        b.display(),
        x.mode(),
        y.mode()
    );
    if !x.file_type().is_symlink() {
        ensure!(
            (x.mtime(), x.mtime_nsec()) == (y.mtime(), y.mtime_nsec()),
            "mtime of {}",
            b.display()
        );
    }
    ensure!(
        (x.uid(), x.gid()) == (y.uid(), y.gid()),
        "owner of {}",
        b.display()
    );
    Ok(())
}

fn put_and_get_one_file() -> TestResult {
    let dir = TempDir::new("files-one")?;
    let (src, mid, back) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    write_noise(&src, (3 << 20) + 12345, 1)?;
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640))?;
    let r = util::router()?;
    let child = r.local().connect()?;
    let calls = Arc::new(AtomicU64::new(0));
    let last = Arc::new(AtomicU64::new(0));
    let (c, l) = (calls.clone(), last.clone());
    let opts = Options::new().progress(move |p| {
        c.fetch_add(1, Ordering::SeqCst);
        l.store(p.bytes, Ordering::SeqCst);
    });
    let rep = files::put(&child, &src, &mid, &opts)?;
    ensure!(rep.files == 1 && rep.bytes == (3 << 20) + 12345, "{rep:?}");
    same_bytes(&src, &mid)?;
    same_meta(&src, &mid)?;
    ensure!(calls.load(Ordering::SeqCst) >= 1, "no progress reported");
    ensure!(
        last.load(Ordering::SeqCst) == rep.bytes,
        "last progress {}",
        last.load(Ordering::SeqCst)
    );
    ensure!(!files::part_path(&mid).exists(), "part file left");
    let rep = files::get(&child, &mid, &back, &Options::new())?;
    ensure!(rep.files == 1, "{rep:?}");
    same_bytes(&src, &back)?;
    same_meta(&src, &back)?;
    // An empty file too.
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"")?;
    files::put(&child, &empty, dir.path().join("empty2"), &Options::new())?;
    ensure!(
        std::fs::metadata(dir.path().join("empty2"))?.len() == 0,
        "empty"
    );
    Ok(())
}

fn make_tree(root: &Path) -> Result<(), libtest_mimic::Failed> {
    std::fs::create_dir_all(root.join("etc/app.d"))?;
    std::fs::create_dir_all(root.join("var/empty"))?;
    std::fs::write(root.join("etc/app.conf"), b"a = 1\n")?;
    std::fs::write(root.join("etc/app.d/10-x.conf"), b"x\n")?;
    write_noise(&root.join("var/blob"), 700_001, 7)?;
    std::fs::write(root.join("run.sh"), b"#!/bin/sh\n")?;
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o755))?;
    std::os::unix::fs::symlink("etc/app.conf", root.join("link"))?;
    std::fs::set_permissions(
        root.join("var/empty"),
        std::fs::Permissions::from_mode(0o500),
    )?;
    Ok(())
}

fn compare_trees(a: &Path, b: &Path) -> Result<usize, libtest_mimic::Failed> {
    let mut n = 0;
    for rel in [
        "",
        "etc",
        "etc/app.d",
        "etc/app.conf",
        "etc/app.d/10-x.conf",
        "var",
        "var/empty",
        "var/blob",
        "run.sh",
        "link",
    ] {
        let (x, y) = (a.join(rel), b.join(rel));
        same_meta(&x, &y)?;
        let m = std::fs::symlink_metadata(&x)?;
        if m.is_file() {
            same_bytes(&x, &y)?;
        } else if m.file_type().is_symlink() {
            ensure!(
                std::fs::read_link(&x)? == std::fs::read_link(&y)?,
                "link {rel}"
            );
        }
        n += 1;
    }
    Ok(n)
}

fn tree_round_trip() -> TestResult {
    let dir = TempDir::new("files-tree")?;
    let src = dir.path().join("src");
    make_tree(&src)?;
    let r = util::router()?;
    let child = r.local().connect()?;
    let rep = files::put(&child, &src, dir.path().join("dst"), &Options::new())?;
    ensure!(
        rep.files == 4 && rep.dirs == 5 && rep.symlinks == 1,
        "{rep:?}"
    );
    compare_trees(&src, &dir.path().join("dst"))?;
    let rep = files::get(
        &child,
        dir.path().join("dst"),
        dir.path().join("back"),
        &Options::new(),
    )?;
    ensure!(rep.files == 4, "{rep:?}");
    compare_trees(&src, &dir.path().join("back"))?;
    Ok(())
}

fn skip_identical() -> TestResult {
    // Both checksums decide what is identical; each is checked as a whole.
    for c in [Checksum::Xxh3, Checksum::Blake3] {
        skip_identical_with(Options::new().checksum(c)).map_err(|e| format!("{c:?}: {e:?}"))?;
    }
    Ok(())
}

fn skip_identical_with(o: Options) -> TestResult {
    let dir = TempDir::new("files-skip")?;
    let src = dir.path().join("src");
    make_tree(&src)?;
    let dst = dir.path().join("dst");
    let r = util::router()?;
    let child = r.local().connect()?;
    files::put(&child, &src, &dst, &o)?;
    let rep = files::put(&child, &src, &dst, &o)?;
    ensure!(
        rep.skipped == 4 && rep.files == 0 && rep.bytes == 0,
        "second put: {rep:?}"
    );
    // Same size, other bytes: sent; a changed mode alone: applied, not sent.
    std::fs::write(src.join("etc/app.conf"), b"a = 2\n")?;
    std::fs::set_permissions(
        src.join("etc/app.d/10-x.conf"),
        std::fs::Permissions::from_mode(0o600),
    )?;
    let rep = files::put(&child, &src, &dst, &o)?;
    ensure!(
        rep.files == 1 && rep.skipped == 3 && rep.bytes == 6,
        "third put: {rep:?}"
    );
    compare_trees(&src, &dst)?;
    // Skipping off: everything goes again.
    let rep = files::put(&child, &src, &dst, &o.clone().skip_identical(false))?;
    ensure!(rep.files == 4 && rep.skipped == 0, "no skip: {rep:?}");
    // And back: what the receiver fetches hashes the same.
    let back = dir.path().join("back");
    let rep = files::get(&child, &dst, &back, &o)?;
    ensure!(rep.files == 4, "get: {rep:?}");
    compare_trees(&src, &back)?;
    Ok(())
}

fn typed_errors() -> TestResult {
    let dir = TempDir::new("files-errors")?;
    let d = dir.path();
    std::fs::write(d.join("f"), b"data")?;
    std::fs::create_dir(d.join("adir"))?;
    let r = util::router()?;
    let child = r.local().connect()?;
    let o = Options::new();
    let e = files::put(&child, d.join("missing"), d.join("x"), &o).expect_err("missing source");
    ensure!(
        e.kind() == FileErrorKind::NotFound && e.path() == d.join("missing"),
        "{e}"
    );
    ensure!(e.io_kind() == Some(std::io::ErrorKind::NotFound), "{e:?}");
    let e = files::put(&child, d.join("f"), d.join("no/such/dir/x"), &o).expect_err("no parent");
    ensure!(
        e.kind() == FileErrorKind::NotFound && e.path() == d.join("no/such/dir"),
        "{e}"
    );
    ensure!(
        e.context_id() == child.context_id(),
        "failed in {}",
        e.context_id()
    );
    let e = files::put(&child, d.join("f"), d.join("f/x"), &o).expect_err("parent is a file");
    ensure!(e.kind() == FileErrorKind::NotADirectory, "{e}");
    let e = files::put(&child, d.join("f"), d.join("adir"), &o).expect_err("dest is a dir");
    ensure!(
        e.kind() == FileErrorKind::IsADirectory && e.path() == d.join("adir"),
        "{e}"
    );
    let e = files::get(&child, d.join("gone"), d.join("y"), &o).expect_err("missing remote");
    ensure!(
        e.kind() == FileErrorKind::NotFound && e.path() == d.join("gone"),
        "{e}"
    );
    ensure!(std::error::Error::source(&e).is_some(), "no cause: {e:?}");
    let as_error: mitogen::Error = e.into();
    ensure!(matches!(as_error, mitogen::Error::File(_)), "{as_error:?}");
    let e = files::put(&child, "/dev/null", d.join("z"), &o).expect_err("a device");
    ensure!(e.kind() == FileErrorKind::Unsupported, "{e}");
    ensure!(
        std::fs::read_dir(d)?.count() == 2,
        "something was left in {}",
        d.display()
    );
    Ok(())
}

fn copy_between_children() -> TestResult {
    let dir = TempDir::new("files-copy")?;
    let src = dir.path().join("src");
    make_tree(&src)?;
    let r = util::router()?;
    let a = r.local().remote_name("a").connect()?;
    let b = r.local().remote_name("b").connect()?;
    let rep = files::copy(&a, &src, &b, dir.path().join("dst"), &Options::new())?;
    ensure!(rep.files == 4, "{rep:?}");
    compare_trees(&src, &dir.path().join("dst"))?;
    // Either end may be this context.
    let rep = files::copy(
        &r.myself(),
        src.join("var/blob"),
        &b,
        dir.path().join("blob2"),
        &Options::new(),
    )?;
    ensure!(rep.files == 1, "{rep:?}");
    same_bytes(&src.join("var/blob"), &dir.path().join("blob2"))?;
    Ok(())
}

/// The pid of the context it runs in.
#[mitogen::remote]
fn my_pid() -> u32 {
    std::process::id()
}

fn killed_sender_then_resume() -> TestResult {
    let dir = TempDir::new("files-resume")?;
    let (src, dst) = (dir.path().join("big"), dir.path().join("copy"));
    let size: u64 = 96 << 20;
    write_noise(&src, size, 3)?;
    let r = util::router()?;
    let sender = r.local().remote_name("sender").connect()?;
    let pid = sender.call::<my_pid>(())?;
    let killed = Arc::new(AtomicU64::new(0));
    // The sender is killed once 20 MiB have arrived, watched from a
    // thread (progress reports, every 100 ms, come too late on a quiet
    // machine, which moves the whole file in about that time). SIGSTOP
    // first: nothing more is sent while the SIGKILL is on its way.
    let watcher = {
        let (killed, part) = (killed.clone(), files::part_path(&dst));
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if std::fs::metadata(&part).is_ok_and(|m| m.len() >= 20 << 20) {
                    // SAFETY: stopping a child context of this test.
                    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                    let _ = util::kill9(pid);
                    killed.store(1, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let opts = Options::new().window(1 << 20);
    let e = files::get(&sender, &src, &dst, &opts).expect_err("the sender was killed");
    let _ = watcher.join();
    ensure!(
        killed.load(Ordering::SeqCst) == 1,
        "the sender was never killed: {e}"
    );
    ensure!(
        e.kind() == FileErrorKind::Interrupted && e.path() == dst,
        "{e:?}"
    );
    ensure!(!dst.exists(), "a partial file at the destination");
    let part = files::part_path(&dst);
    let kept = std::fs::metadata(&part)?.len();
    ensure!(kept >= 20 << 20 && kept < size, "part file of {kept} bytes");
    let again = r.local().remote_name("sender2").connect()?;
    let rep = files::get(&again, &src, &dst, &Options::new())?;
    ensure!(
        rep.resumed == 1 && rep.bytes == size - kept,
        "resumed: {rep:?} after {kept}"
    );
    same_bytes(&src, &dst)?;
    ensure!(!part.exists(), "part file left after the resume");
    // A part that does not match the source is not trusted: all is sent.
    write_noise(&part, 5 << 20, 99)?;
    std::fs::remove_file(&dst)?;
    let rep = files::get(&again, &src, &dst, &Options::new())?;
    ensure!(rep.resumed == 0 && rep.bytes == size, "bad part: {rep:?}");
    same_bytes(&src, &dst)?;
    Ok(())
}

/// A sender that stops (SIGSTOP) mid-file: the receiver gives up after
/// `Options::timeout`, names the file, keeps the part; nothing hangs.
fn stopped_sender_times_out() -> TestResult {
    let dir = TempDir::new("files-stopped")?;
    let (src, dst) = (dir.path().join("big"), dir.path().join("copy"));
    write_noise(&src, 256 << 20, 4)?;
    let r = util::router()?;
    let sender = r.local().remote_name("stopped").connect()?;
    let pid = sender.call::<my_pid>(())?;
    let stopped = Arc::new(AtomicU64::new(0));
    // The sender is stopped once 4 MiB have arrived, watched from a
    // thread: progress reports may come too late on a quiet machine,
    // which moves the whole file in tens of milliseconds.
    let watcher = {
        let (stopped, part) = (stopped.clone(), files::part_path(&dst));
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if std::fs::metadata(&part).is_ok_and(|m| m.len() >= 4 << 20) {
                    // SAFETY: stopping a child context of this test.
                    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
                    stopped.store(1, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let opts = Options::new()
        .window(1 << 20)
        .timeout(Duration::from_secs(2));
    let t = std::time::Instant::now();
    let res = files::get(&sender, &src, &dst, &opts);
    let took = t.elapsed();
    let _ = watcher.join();
    let _ = util::kill9(pid);
    let e = res.expect_err("the sender stopped");
    ensure!(stopped.load(Ordering::SeqCst) == 1, "never stopped: {e}");
    ensure!(
        e.kind() == FileErrorKind::Interrupted && e.path() == dst,
        "{e:?}"
    );
    ensure!(took < Duration::from_secs(20), "gave up after {took:?}");
    ensure!(!dst.exists(), "a partial file at the destination");
    Ok(())
}

/// Peak resident memory of the context it runs in, in KiB.
#[mitogen::remote]
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// In a fresh process (so the peaks are this transfer's alone): puts
/// `src` to a new child of its own as `mid`, gets it back as `back`, and
/// returns both reports' byte counts and both processes' peak RSS (KiB).
#[mitogen::remote]
fn put_get_here(
    router: &mitogen::Router,
    src: String,
    mid: String,
    back: String,
) -> Result<(u64, u64, u64, u64), mitogen::Error> {
    let other = router.local().remote_name("gib-other").connect()?;
    let put = files::put(&other, &src, &mid, &Options::new())?;
    let got = files::get(&other, &mid, &back, &Options::new())?;
    let theirs = other.call::<peak_kib>(())?;
    Ok((put.bytes, got.bytes, peak_kib(), theirs))
}

fn gib_bounded_memory() -> TestResult {
    let dir = TempDir::new("files-gib")?;
    let path = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    write_noise(&dir.path().join("src"), 1 << 30, 5)?;
    let r = util::router()?;
    let child = r.local().remote_name("gib-caller").connect()?;
    let (put, got, here, there) =
        child.call::<put_get_here>((path("src"), path("mid"), path("back")))?;
    ensure!(
        put == 1 << 30 && got == 1 << 30,
        "moved {put} and {got} bytes"
    );
    same_bytes(&dir.path().join("src"), &dir.path().join("back"))?;
    // A window (16 MiB) and a few chunks on each side, far below 1 GiB.
    let (here, there) = (here / 1024, there / 1024);
    ensure!(here < 128, "the calling end's peak RSS was {here} MiB");
    ensure!(there < 128, "the other end's peak RSS was {there} MiB");
    Ok(())
}

/// Bytes this process read and wrote through system calls so far.
#[mitogen::remote]
fn io_counts() -> (u64, u64) {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let field = |k: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (field("rchar:"), field("wchar:"))
}

/// Makes relative paths of this context resolve in `dir`.
#[mitogen::remote]
fn enter(dir: String) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    std::env::set_current_dir(dir)
}

fn push_each_link_once() -> TestResult {
    let dir = TempDir::new("files-push")?;
    let src = dir.path().join("payload");
    let size: u64 = 24 << 20;
    write_noise(&src, size, 11)?;
    let r = util::router()?;
    let mut mids = Vec::new();
    let mut leaves: Vec<Context> = Vec::new();
    for m in 0..2 {
        let mid = r.local().remote_name(format!("mid{m}")).connect()?;
        for l in 0..10 {
            let leaf = r
                .local()
                .via(&mid)
                .remote_name(format!("leaf{m}.{l}"))
                .connect()?;
            let home = dir.path().join(format!("leaf{m}.{l}"));
            leaf.call::<enter>((home.to_string_lossy().into_owned(),))?;
            leaves.push(leaf);
        }
        mids.push(mid);
    }
    // One leaf cannot take it (a directory is in the way): it alone fails.
    std::fs::create_dir_all(dir.path().join("leaf1.3/out.bin"))?;
    let all: Vec<Context> = mids.iter().chain(&leaves).cloned().collect();
    let before: Vec<(u64, u64)> = all
        .iter()
        .map(|c| c.call::<io_counts>(()))
        .collect::<Result<_, _>>()?;
    let results = files::push(&leaves, &src, "out.bin", &Options::new().fsync(false));
    let after: Vec<(u64, u64)> = all
        .iter()
        .map(|c| c.call::<io_counts>(()))
        .collect::<Result<_, _>>()?;
    ensure!(results.len() == 20, "{} results", results.len());
    for (i, (ctx, res)) in results.iter().enumerate() {
        ensure!(ctx == &leaves[i], "results out of order");
        if ctx.name().contains("leaf1.3") {
            let e = res.as_ref().expect_err("the blocked leaf");
            ensure!(e.kind() == FileErrorKind::IsADirectory, "{e}");
            continue;
        }
        let rep = res.as_ref().map_err(|e| format!("{}: {e}", ctx.name()))?;
        ensure!(
            rep.files == 1 && rep.bytes == size,
            "{}: {rep:?}",
            ctx.name()
        );
    }
    same_bytes(&src, &dir.path().join("leaf0.0/out.bin"))?;
    same_bytes(&src, &dir.path().join("leaf1.9/out.bin"))?;
    // What each context read from its link: the file once (a leaf, an
    // intermediate), not once per leaf behind it. Each link is counted at
    // its lower end (the master's own counters would include the other
    // tests running in this process).
    let slack = size / 4;
    for (i, c) in all.iter().enumerate() {
        let read = after[i].0 - before[i].0;
        ensure!(
            read >= size && read < size + slack,
            "{} read {read} bytes for a {size}-byte push",
            c.name()
        );
    }
    for (i, m) in mids.iter().enumerate() {
        let wrote = after[i].1 - before[i].1;
        ensure!(
            wrote >= 10 * size && wrote < 10 * size + 10 * slack,
            "{} wrote {wrote}",
            m.name()
        );
    }
    Ok(())
}

/// A tree pushed through an intermediate: directories and links arrive
/// with the files; a file one target refuses (a directory in its way)
/// fails that target alone, whose other files still arrive.
fn push_a_tree() -> TestResult {
    let dir = TempDir::new("files-push-tree")?;
    let src = dir.path().join("src");
    make_tree(&src)?;
    let r = util::router()?;
    let mid = r.local().remote_name("mid").connect()?;
    let mut leaves = Vec::new();
    for l in 0..3 {
        let leaf = r
            .local()
            .via(&mid)
            .remote_name(format!("leaf{l}"))
            .connect()?;
        let home = dir.path().join(format!("leaf{l}"));
        leaf.call::<enter>((home.to_string_lossy().into_owned(),))?;
        leaves.push(leaf);
    }
    std::fs::create_dir_all(dir.path().join("leaf2/tree/etc/app.conf"))?;
    let results = files::push(&leaves, &src, "tree", &Options::new().fsync(false));
    ensure!(results.len() == 3, "{} results", results.len());
    for (i, (ctx, res)) in results.iter().enumerate() {
        let there = dir.path().join(format!("leaf{i}/tree"));
        if i == 2 {
            let e = res.as_ref().expect_err("the blocked leaf");
            ensure!(e.kind() == FileErrorKind::IsADirectory, "{e}");
            same_bytes(&src.join("var/blob"), &there.join("var/blob"))?;
            continue;
        }
        let rep = res.as_ref().map_err(|e| format!("{}: {e}", ctx.name()))?;
        ensure!(
            rep.files == 4 && rep.dirs == 5 && rep.symlinks == 1,
            "{}: {rep:?}",
            ctx.name()
        );
        compare_trees(&src, &there)?;
    }
    Ok(())
}
