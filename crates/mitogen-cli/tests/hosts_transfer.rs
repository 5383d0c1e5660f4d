//! `copy`, `fetch` and `rsync` end to end against the real test hosts
//! (`scripts/testbed/setup.sh`), as root over ssh. Without the test bed
//! every test is reported as ignored (libtest-mimic, as `hosts.rs`).
//!
//! The hosts are network namespaces sharing this machine's file system,
//! except a few tmpfs: host3 has a `/tmp` of its own, host1 and host2 see
//! this machine's. So a path under `/tmp` is one file for host1, host2 and
//! this test, and another on host3; copies to host1 and host2 together go
//! one at a time (`-f 1`: the second finds the file identical), and what
//! arrived on host3 is checked through `mitogen run` there.

mod util;

use std::path::{Path, PathBuf};
use util::{make_sources, mitogen, Testbed};

fn main() {
    util::run_on_testbed(
        "hosts_transfer",
        vec![
            (
                "copy_to_the_three_hosts_then_identical_files_are_skipped",
                copy_to_the_three_hosts_then_identical_files_are_skipped,
            ),
            (
                "a_host_missing_the_directory_and_an_unreachable_one_fail_alone",
                a_host_missing_the_directory_and_an_unreachable_one_fail_alone,
            ),
            (
                "fetch_from_hosts_into_a_directory_per_host",
                fetch_from_hosts_into_a_directory_per_host,
            ),
            (
                "copy_through_a_bastion_is_pushed",
                copy_through_a_bastion_is_pushed,
            ),
            (
                "rsync_to_a_host_then_nothing_to_transfer",
                rsync_to_a_host_then_nothing_to_transfer,
            ),
        ],
    )
}

/// A directory of this test under `/tmp` (here, host1 and host2) and on
/// host3 (its own `/tmp`); removed from both when dropped.
struct Scratch<'a> {
    dir: PathBuf,
    tb: &'a Testbed,
}

impl<'a> Scratch<'a> {
    fn new(tb: &'a Testbed, name: &str) -> Scratch<'a> {
        let dir = PathBuf::from(format!("/tmp/mitogen-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch { dir, tb }
    }

    fn path(&self, rel: &str) -> String {
        self.dir.join(rel).to_string_lossy().into_owned()
    }

    /// Makes the directory on host3 too.
    fn on_host3(&self) {
        sh(
            self.tb,
            &self.tb.hosts[2],
            &format!("mkdir -p '{}'", self.dir.display()),
        );
    }
}

impl Drop for Scratch<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = mitogen(&[
            "run",
            "-F",
            &self.tb.ssh_config,
            &self.tb.hosts[2],
            "--",
            &format!("rm -rf '{}'", self.dir.display()),
        ]);
    }
}

/// `script` on `target` (must succeed): its stdout.
fn sh(tb: &Testbed, target: &str, script: &str) -> String {
    let r = mitogen(&["run", "-F", &tb.ssh_config, "--json", target, "--", script]);
    assert_eq!(r.code, Some(0), "{script} on {target}: {r:?}");
    r.target(target)["stdout"].as_str().unwrap().to_string()
}

/// What a tree of `make_sources` under `dir` holds, as a shell sees it:
/// each file's mode and digest, the link's target.
fn digest_script(dir: &str) -> String {
    format!(
        "cd '{dir}' && stat -c '%a %n' app.conf site/index.html site/css/deep/a.css site/big.bin \
         && sha256sum app.conf site/index.html site/css/deep/a.css site/big.bin \
         && readlink site/home.html"
    )
}

fn local_digest(dir: &str) -> String {
    let o = std::process::Command::new("/bin/sh")
        .args(["-c", &digest_script(dir)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    String::from_utf8(o.stdout).unwrap()
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not a count: {v}"))
}

fn copy_to_the_three_hosts_then_identical_files_are_skipped(tb: &Testbed) {
    let s = Scratch::new(tb, "xfer-copy");
    make_sources(&s.dir.join("src"));
    std::fs::create_dir_all(s.dir.join("dst")).unwrap();
    s.on_host3();
    sh(tb, &tb.hosts[2], &format!("mkdir -p '{}'", s.path("dst")));
    let targets = tb.hosts.join(",");
    let args = [
        "copy",
        "-F",
        &tb.ssh_config,
        "-f",
        "1",
        "--json",
        &targets,
        &s.path("src/app.conf"),
        &s.path("src/site"),
        &s.path("dst/"),
    ];
    let r = mitogen(&args);
    assert_eq!(r.code, Some(0), "{r:?}");
    for h in &tb.hosts {
        let v = r.target(h);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(n(&v, "files") + n(&v, "skipped"), 4, "{v}");
    }
    // host3 has its own /tmp: everything was written there.
    let h3 = r.target(&tb.hosts[2]);
    assert_eq!((n(&h3, "files"), n(&h3, "bytes")), (4, 600_032), "{h3}");
    let want = local_digest(&s.path("src"));
    for h in &tb.hosts {
        assert_eq!(sh(tb, h, &digest_script(&s.path("dst"))), want, "on {h}");
    }

    // Again: every file is identical everywhere, nothing is sent.
    let r = mitogen(&args);
    assert_eq!(r.code, Some(0), "{r:?}");
    for h in &tb.hosts {
        let v = r.target(h);
        assert_eq!(
            (n(&v, "files"), n(&v, "skipped"), n(&v, "bytes")),
            (0, 4, 0),
            "{v}"
        );
    }
    assert!(
        r.stderr.contains(
            "3 targets: 3 ok, 0 failed, 0 unreachable; 0 files sent (0 B), 12 identical skipped"
        ),
        "{}",
        r.stderr
    );
}

fn a_host_missing_the_directory_and_an_unreachable_one_fail_alone(tb: &Testbed) {
    // The directory exists here (so for host1 and host2), not on host3.
    let s = Scratch::new(tb, "xfer-fail");
    make_sources(&s.dir);
    let bad = format!("root@{}", tb.unreachable);
    let targets = format!("{},{bad}", tb.hosts.join(","));
    let r = mitogen(&[
        "copy",
        "-F",
        &tb.ssh_config,
        "--connect-timeout",
        "5",
        "-f",
        "1",
        "--json",
        &targets,
        &s.path("app.conf"),
        &s.path("copied.conf"),
    ]);
    assert_eq!(r.code, Some(1), "{r:?}");
    for h in &tb.hosts[..2] {
        let v = r.target(h);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(n(&v, "files") + n(&v, "skipped"), 1, "{v}");
    }
    let v = r.target(&tb.hosts[2]);
    assert_eq!(
        (v["ok"].as_bool(), v["unreachable"].as_bool()),
        (Some(false), Some(false)),
        "{v}"
    );
    assert_eq!(v["error_kind"], "NotFound", "{v}");
    let dir = s.dir.display().to_string();
    assert!(v["error"].as_str().unwrap().contains(&dir), "{v}");
    let v = r.target(&bad);
    assert_eq!(
        (v["ok"].as_bool(), v["unreachable"].as_bool()),
        (Some(false), Some(true)),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains(&tb.unreachable),
        "{v}"
    );
    assert!(
        r.stderr
            .contains("4 targets: 2 ok, 1 failed, 1 unreachable"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read(s.dir.join("copied.conf")).unwrap(),
        b"workers = 4\n"
    );
}

fn fetch_from_hosts_into_a_directory_per_host(tb: &Testbed) {
    let s = Scratch::new(tb, "xfer-fetch");
    s.on_host3();
    // /tmp/…/who says which host wrote it: host1 here, host3 in its own.
    let who = s.path("who");
    for h in [&tb.hosts[0], &tb.hosts[2]] {
        sh(
            tb,
            h,
            &format!(
                "hostname > '{who}' && mkdir -p '{0}/d' && hostname > '{0}/d/x'",
                s.path("tree")
            ),
        );
    }
    let out = s.path("out");
    let targets = format!("{},root@{}", tb.hosts[0], tb.hosts[2]);
    let r = mitogen(&[
        "fetch",
        "-F",
        &tb.ssh_config,
        "--json",
        &targets,
        &who,
        &s.path("tree"),
        &out,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for (target, dir, host) in [
        (tb.hosts[0].clone(), tb.hosts[0].clone(), "mtb-host1\n"),
        (
            format!("root@{}", tb.hosts[2]),
            format!("root@{}", tb.hosts[2]),
            "mtb-host3\n",
        ),
    ] {
        let v = r.target(&target);
        assert_eq!((v["ok"].as_bool(), n(&v, "files")), (Some(true), 2), "{v}");
        let d = Path::new(&out).join(&dir);
        assert_eq!(v["dir"], d.to_string_lossy().as_ref());
        assert_eq!(std::fs::read_to_string(d.join("who")).unwrap(), host);
        assert_eq!(std::fs::read_to_string(d.join("tree/d/x")).unwrap(), host);
    }
}

fn copy_through_a_bastion_is_pushed(tb: &Testbed) {
    // host1 relays to host2 (this machine's /tmp) and host3 (its own).
    let s = Scratch::new(tb, "xfer-push");
    make_sources(&s.dir.join("src"));
    s.on_host3();
    let (b, h2, h3) = (&tb.hosts[0], &tb.hosts[1], &tb.hosts[2]);
    let targets = format!("root@{b}/root@{h2},root@{b}/root@{h3}");
    let r = mitogen(&[
        "copy",
        "-F",
        &tb.ssh_config,
        "--json",
        &targets,
        &s.path("src/app.conf"),
        &s.path("src/site"),
        &s.path(""),
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for h in [h2, h3] {
        let v = r.target(&format!("root@{b}/root@{h}"));
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["pushed"], true, "{v}");
        assert_eq!((n(&v, "files"), n(&v, "symlinks")), (4, 1), "{v}");
    }
    let want = local_digest(&s.path("src"));
    for h in [h2, h3] {
        assert_eq!(sh(tb, h, &digest_script(&s.path(""))), want, "on {h}");
    }
    // --no-push: each on its own; the files are there, identical.
    let r = mitogen(&[
        "copy",
        "-F",
        &tb.ssh_config,
        "--json",
        "--no-push",
        "-f",
        "1",
        &targets,
        &s.path("src/app.conf"),
        &s.path("src/site"),
        &s.path(""),
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    for v in r.json() {
        assert_eq!(
            (v["pushed"].as_bool(), n(&v, "skipped")),
            (Some(false), 4),
            "{v}"
        );
    }
}

fn rsync_to_a_host_then_nothing_to_transfer(tb: &Testbed) {
    let s = Scratch::new(tb, "xfer-rsync");
    make_sources(&s.dir.join("src"));
    s.on_host3();
    let h3 = &tb.hosts[2];
    let src = format!("{}/", s.path("src"));
    let dst = format!(":{}/", s.path("mirror"));
    let r = mitogen(&[
        "rsync",
        "-F",
        &tb.ssh_config,
        "--json",
        h3,
        "--",
        "-a",
        &src,
        &dst,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.target(h3)["status"], 0);
    let want = local_digest(&s.path("src"));
    assert_eq!(sh(tb, h3, &digest_script(&s.path("mirror"))), want);
    // Not here: host3's /tmp is its own.
    assert!(!s.dir.join("mirror").exists());
    let r = mitogen(&[
        "rsync",
        "-F",
        &tb.ssh_config,
        "--json",
        h3,
        "--",
        "-ai",
        &src,
        &dst,
    ]);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert_eq!(r.target(h3)["stdout"], "", "nothing to transfer: {r:?}");
}
