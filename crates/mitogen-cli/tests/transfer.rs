//! `copy`, `fetch` and `rsync` end to end on this machine: the built
//! binary against local contexts (real processes started from it). Local
//! contexts share this file system, so a copy to several of them writes
//! one path: those runs go one target at a time (`-f 1`), and the
//! targets after the first find the file identical.

mod util;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use util::{make_sources, mitogen};

/// A directory of this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("mitogen-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    fn path(&self, rel: &str) -> String {
        self.0.join(rel).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The regular files of the tree `site`, relative.
const SITE_FILES: [&str; 3] = ["index.html", "css/deep/a.css", "big.bin"];

/// `b` has `a`'s bytes and mode.
fn same_file(a: &Path, b: &Path) {
    assert_eq!(
        std::fs::read(a).unwrap(),
        std::fs::read(b).unwrap_or_else(|e| panic!("{}: {e}", b.display())),
        "{} differs",
        b.display()
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(a), mode(b), "mode of {}", b.display());
}

fn same_site(a: &Path, b: &Path) {
    for f in SITE_FILES {
        same_file(&a.join(f), &b.join(f));
    }
    assert_eq!(
        std::fs::read_link(b.join("home.html")).unwrap(),
        PathBuf::from("index.html")
    );
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not a count: {v}"))
}

#[test]
fn copy_a_file_and_a_tree_then_identical_files_are_skipped() {
    let s = Scratch::new("copy");
    make_sources(&s.0);
    std::fs::create_dir_all(s.0.join("dst")).unwrap();
    let args = [
        "copy",
        "-f",
        "1",
        "--json",
        "local[1-3]",
        &s.path("app.conf"),
        &s.path("site"),
        &s.path("dst/"),
    ];
    let r = mitogen(&args);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.json().len(), 3);
    same_file(&s.0.join("app.conf"), &s.0.join("dst/app.conf"));
    same_site(&s.0.join("site"), &s.0.join("dst/site"));
    // One target wrote the four files; the others found them identical.
    let (mut files, mut skipped) = (0, 0);
    for i in 1..=3 {
        let v = r.target(&format!("local{i}"));
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(n(&v, "files") + n(&v, "skipped"), 4, "{v}");
        assert_eq!(n(&v, "symlinks"), 1, "{v}");
        assert_eq!(n(&v, "total_bytes"), 12 + 12 + 8 + 600_000, "{v}");
        assert_eq!(v["pushed"], false, "{v}");
        files += n(&v, "files");
        skipped += n(&v, "skipped");
    }
    assert_eq!((files, skipped), (4, 8), "{}", r.stdout);
    assert!(
        r.stderr
            .contains("3 targets: 3 ok, 0 failed, 0 unreachable"),
        "{}",
        r.stderr
    );

    // Again (deciding with BLAKE3 this time): nothing is sent, every file
    // is reported skipped.
    let mut again = args.to_vec();
    again.insert(1, "--checksum=blake3");
    let r = mitogen(&again);
    assert_eq!(r.code, Some(0), "{r:?}");
    for v in r.json() {
        assert_eq!(
            (n(&v, "files"), n(&v, "skipped"), n(&v, "bytes")),
            (0, 4, 0),
            "{v}"
        );
    }
    assert!(
        r.stderr
            .contains("0 files sent (0 B), 12 identical skipped"),
        "{}",
        r.stderr
    );

    // --no-skip sends them again; the text form says what was done.
    let r = mitogen(&[
        "copy",
        "--no-skip",
        "local1",
        &s.path("site"),
        &s.path("dst/site"),
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(
        r.stdout
            .starts_with("local1: 3 files sent (586.0 KiB), 1 symlink in "),
        "{}",
        r.stdout
    );
    same_site(&s.0.join("site"), &s.0.join("dst/site"));
}

#[test]
fn a_failing_target_is_reported_alone_and_fails_the_run() {
    let s = Scratch::new("copy-fail");
    make_sources(&s.0);
    // A file onto a directory: refused, with the way out named.
    std::fs::create_dir_all(s.0.join("dst/app.conf")).unwrap();
    let r = mitogen(&[
        "copy",
        "--connect-timeout",
        "10",
        "local1,ssh:127.0.0.1:1",
        &s.path("app.conf"),
        &s.path("dst/app.conf"),
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("local1: [failed] write ")
            && r.stdout.contains("end the destination with /"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .contains("127.0.0.1:1: [unreachable] connect 127.0.0.1:1"),
        "{}",
        r.stdout
    );

    // One target fails, the other succeeds: exit status 1, each said.
    let r = mitogen(&[
        "copy",
        "--json",
        "--connect-timeout",
        "10",
        "local1,ssh:127.0.0.1:1",
        &s.path("app.conf"),
        &s.path("dst/app.conf/"),
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    let ok = r.target("local1");
    assert_eq!(
        (ok["ok"].as_bool(), n(&ok, "files")),
        (Some(true), 1),
        "{ok}"
    );
    let bad = r.target("127.0.0.1:1");
    assert_eq!(bad["ok"], false);
    assert_eq!(bad["unreachable"], true);
    assert_eq!(bad["error_kind"], "Unreachable");
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{bad}"
    );
    assert!(
        r.stderr
            .contains("2 targets: 1 ok, 0 failed, 1 unreachable"),
        "{}",
        r.stderr
    );
    same_file(&s.0.join("app.conf"), &s.0.join("dst/app.conf/app.conf"));
}

#[test]
fn usage_errors_exit_2_before_connecting() {
    let s = Scratch::new("copy-usage");
    let missing = s.path("no-such-file");
    let r = mitogen(&["copy", "local1", &missing, "/tmp/x"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("no-such-file"), "{}", r.stderr);
    let r = mitogen(&["copy", "local1", "/etc/hostname"]);
    assert_eq!(r.code, Some(2), "a destination is needed: {r:?}");
    let r = mitogen(&["fetch", "local1", "/a/x", "/b/x", &s.path("out")]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains("same name"), "{}", r.stderr);
    let r = mitogen(&["rsync", "local1", "--", "-a", "x/", "y/"]);
    assert_eq!(r.code, Some(2), "{r:?}");
    assert!(r.stderr.contains(":PATH"), "{}", r.stderr);
}

#[test]
fn fetch_stores_each_target_in_a_directory_of_its_own() {
    let s = Scratch::new("fetch");
    make_sources(&s.0);
    let out = s.path("out");
    let args = [
        "fetch",
        "--json",
        "local[1-2],local1/local2",
        &s.path("app.conf"),
        &s.path("site/"),
        &out,
    ];
    let r = mitogen(&args);
    assert_eq!(r.code, Some(0), "{r:?}");
    for (target, dir) in [
        ("local1", "local1"),
        ("local2", "local2"),
        ("local1/local2", "local1+local2"),
    ] {
        let v = r.target(target);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(n(&v, "files"), 4, "{v}");
        let d = s.0.join("out").join(dir);
        assert_eq!(v["dir"], d.to_string_lossy().as_ref(), "{v}");
        same_file(&s.0.join("app.conf"), &d.join("app.conf"));
        same_site(&s.0.join("site"), &d.join("site"));
    }
    // Fetched again: the copies there are identical.
    let r = mitogen(&args);
    assert_eq!(r.code, Some(0), "{r:?}");
    for v in r.json() {
        assert_eq!((n(&v, "files"), n(&v, "skipped")), (0, 4), "{v}");
    }
    // A missing remote path fails its target, naming the path.
    let r = mitogen(&["fetch", "local1", &s.path("gone"), &out]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(
        r.stdout.contains("local1: [failed]") && r.stdout.contains("gone"),
        "{}",
        r.stdout
    );
}

#[test]
fn rsync_to_a_local_target_then_nothing_to_transfer() {
    let s = Scratch::new("rsync");
    make_sources(&s.0);
    let dst = format!(":{}/", s.path("mirror"));
    let src = format!("{}/", s.path("site"));
    let r = mitogen(&["rsync", "--json", "local1", "--", "-a", &src, &dst]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.target("local1")["status"], 0);
    same_site(&s.0.join("site"), &s.0.join("mirror"));
    // Again, itemized: no change to list.
    let r = mitogen(&["rsync", "--json", "local1", "--", "-ai", &src, &dst]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.target("local1")["stdout"], "", "{r:?}");
    // rsync's own failure is the target's: its status and stderr.
    let r = mitogen(&[
        "rsync",
        "-i",
        "local1",
        "--",
        "-a",
        &s.path("no-such-dir/"),
        &dst,
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    assert!(r.stderr.contains("local1: [exit 23]"), "{}", r.stderr);
}

/// On a terminal, Ctrl-C during rsync runs (slowed by --bwlimit) ends the
/// command: what finished and what did not is said, exit status 130.
#[test]
fn ctrl_c_during_rsync_says_what_did_not_finish() {
    let s = Scratch::new("rsync-int");
    make_sources(&s.0);
    let src = s.path("site/big.bin");
    let dst = format!(":{}/", s.path("slow"));
    std::fs::create_dir_all(s.0.join("slow")).unwrap();
    let mut t = util::Pty::spawn(&[
        "rsync",
        "-f",
        "2",
        "local[1-4]",
        "--",
        "--bwlimit=20",
        &src,
        &dst,
    ]);
    t.wait_for("connected 2 · running 2", Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    t.type_(&[3]);
    let (status, out) = t.wait(Duration::from_secs(20));
    assert_eq!(status.code(), Some(130), "{out}");
    assert!(out.contains("not finished (local[1-4])"), "{out:?}");
}

/// On a terminal, a transfer's progress line counts bytes too.
#[test]
fn a_copy_on_a_terminal_shows_bytes_in_its_progress() {
    let s = Scratch::new("copy-pty");
    make_sources(&s.0);
    let mut t = util::Pty::spawn(&["copy", "local1", &s.path("site"), &s.path("copy")]);
    let (status, out) = t.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{out}");
    assert!(
        out.contains("0/1 done"),
        "a progress bar was drawn: {out:?}"
    );
    assert!(out.contains("failed 0 · 0 B"), "bytes shown: {out:?}");
    assert!(out.contains("local1: 3 files sent (586.0 KiB)"), "{out:?}");
}
