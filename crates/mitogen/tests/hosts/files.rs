//! File transfer on real hosts (`mitogen::files`): over ssh, through a
//! bastion and sudo, owner kept where permitted, permission denied and a
//! full disk reported by path, and a push to every account of the three
//! hosts through one bastion.
//!
//! The hosts share this machine's file system (outside their own tmpfs
//! mounts), so what lands on a host is checked here directly.

use crate::util::*;
use libtest_mimic::{Failed, Trial};
use mitogen::files::{self, FileErrorKind, Options};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("files::over_ssh_and_sudo", TEST_LIMIT, over_ssh_and_sudo),
        trial("files::permission_denied", TEST_LIMIT, permission_denied),
        trial("files::disk_full", TEST_LIMIT, disk_full),
        trial(
            "files::push_through_a_bastion",
            TEST_LIMIT,
            push_through_a_bastion,
        ),
    ]
}

/// A fresh directory every test-bed account may write, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Result<Scratch, Failed> {
        let p = PathBuf::from(format!("/tmp/mitogen-files-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir(&p)?;
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
        Ok(Scratch(p))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn noise(path: &Path, n: u64) -> Result<(), Failed> {
    let mut f = std::fs::File::create(path)?;
    let mut r = std::io::Read::take(std::fs::File::open("/dev/urandom")?, n);
    std::io::copy(&mut r, &mut f)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
    Ok(())
}

/// The file's bytes (the files here are small enough to compare whole).
fn digest(p: &Path) -> Result<Vec<u8>, Failed> {
    Ok(std::fs::read(p)?)
}

fn over_ssh_and_sudo() -> TestResult {
    let t = tb()?;
    let s = Scratch::new("ssh")?;
    let src = s.0.join("src");
    noise(&src, (24 << 20) + 7)?;
    let r = router()?;
    let alice = ssh_key(&r, &t.host1, "alice").connect()?;
    let rep = files::put(&alice, &src, s.0.join("a1"), &Options::new())?;
    ensure!(rep.files == 1 && rep.bytes == (24 << 20) + 7, "{rep:?}");
    ensure!(
        digest(&src)? == digest(&s.0.join("a1"))?,
        "put over ssh differs"
    );
    // Owned by root here; alice may not give it away: hers, no error.
    ensure!(
        std::fs::metadata(s.0.join("a1"))?.uid() != 0,
        "alice made a root file"
    );
    let rep = files::get(&alice, s.0.join("a1"), s.0.join("back"), &Options::new())?;
    ensure!(rep.files == 1, "{rep:?}");
    ensure!(
        digest(&src)? == digest(&s.0.join("back"))?,
        "get over ssh differs"
    );
    // A bastion (root on host1), then ssh to host2, then sudo to bob.
    let bastion = ssh_key(&r, &t.host1, "root").connect()?;
    let h2 = ssh_key(&r, &t.host2, "alice").via(&bastion).connect()?;
    let bob = r
        .sudo()
        .username("bob")
        .password(&t.alice_pw)
        .via(&h2)
        .connect()?;
    let rep = files::put(&bob, &src, s.0.join("b1"), &Options::new())?;
    ensure!(rep.files == 1, "{rep:?}");
    ensure!(
        digest(&src)? == digest(&s.0.join("b1"))?,
        "put through sudo differs"
    );
    let bob_uid = std::fs::metadata(s.0.join("b1"))?.uid();
    // root on host1 keeps an owner: bob's file stays bob's.
    let rep = files::copy(
        &bob,
        s.0.join("b1"),
        &bastion,
        s.0.join("b2"),
        &Options::new(),
    )?;
    ensure!(rep.files == 1, "{rep:?}");
    ensure!(
        std::fs::metadata(s.0.join("b2"))?.uid() == bob_uid,
        "owner not kept by root"
    );
    Ok(())
}

fn permission_denied() -> TestResult {
    let t = tb()?;
    let s = Scratch::new("denied")?;
    let src = s.0.join("src");
    std::fs::write(&src, b"secret stuff")?;
    let r = router()?;
    let alice = ssh_key(&r, &t.host1, "alice").connect()?;
    let e = files::put(&alice, &src, "/root/mitogen-denied", &Options::new())
        .expect_err("alice writing into /root");
    ensure!(e.kind() == FileErrorKind::PermissionDenied, "{e}");
    ensure!(e.path() == Path::new("/root/mitogen-denied"), "{e}");
    ensure!(
        e.io_kind() == Some(std::io::ErrorKind::PermissionDenied),
        "{e:?}"
    );
    ensure!(e.context_id() == alice.context_id(), "{e:?}");
    let e = files::get(&alice, "/etc/shadow", s.0.join("shadow"), &Options::new())
        .expect_err("alice reading /etc/shadow");
    ensure!(e.kind() == FileErrorKind::PermissionDenied, "{e}");
    ensure!(e.path() == Path::new("/etc/shadow"), "{e}");
    ensure!(!s.0.join("shadow").exists(), "something landed");
    ensure!(
        !files::part_path(&s.0.join("shadow")).exists(),
        "a part file was left"
    );
    Ok(())
}

/// Mounts (or unmounts) a 256 KiB tmpfs owned by `uid` at `dir` in the
/// host's mount namespace (run as root on the host).
#[mitogen::remote]
fn tiny_tmpfs(dir: String, uid: u32, mount: bool) -> Result<(), String> {
    let args: Vec<String> = if mount {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        vec![
            "-t".into(),
            "tmpfs".into(),
            "-o".into(),
            format!("size=256k,mode=0700,uid={uid}"),
            "mtb-files-full".into(),
            dir.clone(),
        ]
    } else {
        vec![dir.clone()]
    };
    let prog = if mount { "mount" } else { "umount" };
    let st = std::process::Command::new(prog)
        .args(&args)
        .status()
        .map_err(|e| format!("{prog}: {e}"))?;
    if !st.success() {
        return Err(format!("{prog} {args:?}: {st}"));
    }
    if !mount {
        let _ = std::fs::remove_dir(&dir);
    }
    Ok(())
}

fn disk_full() -> TestResult {
    let t = tb()?;
    let s = Scratch::new("full")?;
    let (big, small) = (s.0.join("big"), s.0.join("small"));
    noise(&big, 1 << 20)?;
    noise(&small, 100 << 10)?;
    let r = router()?;
    let root = ssh_key(&r, &t.host1, "root").connect()?;
    let alice = ssh_key(&r, &t.host1, "alice").connect()?;
    let uid = std::fs::metadata("/home/alice")?.uid();
    // Only host1's mount namespace sees it; nothing outside changes.
    let full = format!("/tmp/mitogen-files-tmpfs-{}", std::process::id());
    root.call::<tiny_tmpfs>((full.clone(), uid, true))?;
    let r1 = files::put(&alice, &big, format!("{full}/big"), &Options::new());
    let r2 = files::put(&alice, &small, format!("{full}/a"), &Options::new());
    let r3 = files::put(&alice, &small, format!("{full}/b"), &Options::new());
    let r4 = files::put(&alice, &small, format!("{full}/c"), &Options::new());
    let listing = root.call::<list_dir>((full.clone(),));
    root.call::<tiny_tmpfs>((full.clone(), 0, false))?;
    // Four puts at once that each fit alone, into a fresh 256 KiB: the
    // plans all see room, so the losers run out while writing (ENOSPC).
    // Each fails as DiskFull by its own path and leaves nothing behind.
    let mid = s.0.join("mid");
    noise(&mid, 120 << 10)?;
    root.call::<tiny_tmpfs>((full.clone(), uid, true))?;
    let racing: Vec<_> = (0..4)
        .map(|i| {
            let (alice, mid, full) = (alice.clone(), mid.clone(), full.clone());
            std::thread::spawn(move || {
                files::put(&alice, &mid, format!("{full}/r{i}"), &Options::new())
            })
        })
        .collect();
    let raced: Vec<_> = racing.into_iter().map(|h| h.join()).collect();
    let left = root.call::<list_dir>((full.clone(),));
    root.call::<tiny_tmpfs>((full.clone(), 0, false))?;
    let mut ok = Vec::new();
    for (i, r) in raced.into_iter().enumerate() {
        match r.map_err(|_| "a put panicked")? {
            Ok(_) => ok.push(format!("r{i}")),
            Err(e) => {
                ensure!(e.kind() == FileErrorKind::DiskFull, "r{i}: {e}");
                ensure!(e.path() == Path::new(&format!("{full}/r{i}")), "{e}");
            }
        }
    }
    ensure!((1..=2).contains(&ok.len()), "{} of 4 fitted", ok.len());
    ensure!(left? == ok, "left on the full disk beside {ok:?}");
    let e = r1.expect_err("1 MiB into 256 KiB");
    ensure!(e.kind() == FileErrorKind::DiskFull, "{e}");
    ensure!(e.path() == Path::new(&format!("{full}/big")), "{e}");
    r2?;
    r3?;
    let e = r4.expect_err("the third 100 KiB file");
    ensure!(e.kind() == FileErrorKind::DiskFull, "{e}");
    let names = listing?;
    ensure!(names == ["a", "b"], "left on the full disk: {names:?}");
    Ok(())
}

/// The names in `dir`, sorted.
#[mitogen::remote]
fn list_dir(dir: String) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|d| d.ok())
                .map(|d| d.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Makes relative paths of this context resolve in `dir`.
#[mitogen::remote]
fn enter(dir: String) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir)?;
    std::env::set_current_dir(dir)
}

fn push_through_a_bastion() -> TestResult {
    let t = tb()?;
    let s = Scratch::new("push")?;
    let src = s.0.join("src");
    noise(&src, 8 << 20)?;
    let r = router()?;
    let bastion = ssh_key(&r, &t.host1, "root").connect()?;
    let mut targets = Vec::new();
    for (i, (host, user)) in [
        (&t.host1, "alice"),
        (&t.host1, "bob"),
        (&t.host2, "alice"),
        (&t.host2, "bob"),
        (&t.host2, "dan"),
    ]
    .into_iter()
    .enumerate()
    {
        let c = ssh_key(&r, host, user).via(&bastion).connect()?;
        let home = s.0.join(format!("t{i}"));
        c.call::<enter>((home.to_string_lossy().into_owned(),))?;
        targets.push(c);
    }
    let results = files::push(&targets, &src, "copy", &Options::new());
    for (i, (c, res)) in results.iter().enumerate() {
        let rep = res.as_ref().map_err(|e| format!("{}: {e}", c.name()))?;
        ensure!(rep.files == 1, "{}: {rep:?}", c.name());
        ensure!(
            digest(&src)? == digest(&s.0.join(format!("t{i}/copy")))?,
            "{} differs",
            c.name()
        );
    }
    Ok(())
}
