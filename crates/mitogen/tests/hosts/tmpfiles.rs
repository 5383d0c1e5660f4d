//! Files a root context writes into `/tmp` under predictable names: a
//! link planted at such a name must not let it overwrite another user's
//! file.
//!
//! The root context (alice → sudo) plants the link itself, at the name
//! its own profile will get when it exits — the one name that can be
//! predicted exactly — pointing at a file alice owns. (A link planted by
//! root is followed by root even where `fs.protected_symlinks` is on, so
//! the test does not depend on that setting; the victim lives in a
//! directory of alice's, outside the sticky `/tmp`, so neither does it
//! depend on `fs.protected_regular`.)

use crate::util::*;
use libtest_mimic::Trial;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![trial(
        "tmpfiles::root_profile_ignores_planted_link",
        TEST_LIMIT,
        root_profile_ignores_planted_link,
    )]
}

const VICTIM_TEXT: &str = "alice's precious file\n";

/// Creates `/tmp/mitogen-victim.<pid>/victim` (a directory and a file of
/// the caller's, mode 0755 and 0644) and returns the file's path.
#[mitogen::remote]
fn make_victim() -> Result<String, String> {
    let dir = format!("/tmp/mitogen-victim.{}", std::process::id());
    std::fs::create_dir(&dir).map_err(|e| format!("mkdir {dir}: {e}"))?;
    let path = format!("{dir}/victim");
    std::fs::write(&path, VICTIM_TEXT).map_err(|e| format!("write {path}: {e}"))?;
    Ok(path)
}

/// Plants a link to `victim` at the name this context's profile will be
/// written to; returns this context's pid.
#[mitogen::remote]
fn plant_profile_link(victim: String) -> Result<u32, String> {
    let pid = std::process::id();
    let link = format!("/tmp/mitogen.stats.{pid}.main.log");
    std::os::unix::fs::symlink(&victim, &link).map_err(|e| format!("symlink {link}: {e}"))?;
    Ok(pid)
}

/// The text of `path`, and its owner's uid.
#[mitogen::remote]
fn read_owned(path: String) -> Result<(String, u32), String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata(&path)
        .map_err(|e| format!("stat {path}: {e}"))?
        .uid();
    let text = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
    Ok((text, uid))
}

/// Whether process `pid` still exists (a zombie counts as gone).
#[mitogen::remote]
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Plain files in `/tmp` whose names start with `prefix`: (name, mode,
/// owner uid, text).
#[mitogen::remote]
fn profiles(prefix: String) -> Vec<(String, u32, u32, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    for e in std::fs::read_dir("/tmp").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(m) = std::fs::symlink_metadata(e.path()) else {
            continue;
        };
        if name.starts_with(&prefix) && m.file_type().is_file() {
            let text = std::fs::read_to_string(e.path()).unwrap_or_default();
            out.push((name, m.mode() & 0o777, m.uid(), text));
        }
    }
    out
}

/// Removes what the test left: the link, the profiles, the victim.
#[mitogen::remote]
fn clean(paths: Vec<String>) {
    for p in paths {
        let _ = std::fs::remove_file(&p);
        let _ = std::fs::remove_dir_all(&p);
    }
}

fn root_profile_ignores_planted_link() -> TestResult {
    let t = tb()?;
    let r = router()?;
    let alice = ssh_key(&r, &t.host1, "alice").connect()?;
    let victim = alice.call::<make_victim>(())?;
    let root = r
        .sudo()
        .password(&t.alice_pw)
        .profiling(true)
        .via(&alice)
        .connect()?;
    let pid = root.call::<plant_profile_link>((victim.clone(),))?;
    let link = format!("/tmp/mitogen.stats.{pid}.main.log");
    // The profile is written as the context exits.
    root.shutdown(true, Some(Duration::from_secs(20)))?;
    let gone = wait_for(Duration::from_secs(20), || {
        alice.call::<alive>((pid,)).is_ok_and(|a| !a)
    });
    // Root, to read the 0600 profile and remove root's files from /tmp.
    let cleaner = r.sudo().password(&t.alice_pw).via(&alice).connect()?;
    let written = cleaner.call::<profiles>((format!("mitogen.stats.{pid}.main."),))?;
    let victim_now = alice.call::<read_owned>((victim.clone(),));
    let mut junk: Vec<String> = written.iter().map(|w| format!("/tmp/{}", w.0)).collect();
    junk.push(link.clone());
    let victim_dir = victim.trim_end_matches("/victim").to_string();
    junk.push(victim_dir);
    cleaner.call::<clean>((junk,))?;

    ensure!(gone, "the root context (pid {pid}) did not exit");
    let (text, _) = victim_now?;
    ensure!(
        text == VICTIM_TEXT,
        "root wrote through the planted link {link}: {victim} now holds {text:?}"
    );
    ensure!(
        written.len() == 1,
        "expected one profile beside the link, found {written:?}"
    );
    let (name, mode, uid, stats) = &written[0];
    ensure!(
        *uid == 0 && *mode == 0o600,
        "{name}: uid {uid}, mode {mode:o}"
    );
    ensure!(
        stats.contains("plant_profile_link"),
        "{name} lacks the call: {stats:?}"
    );
    Ok(())
}
