//! Files the runtime writes into `/tmp`: debug logs
//! (`/tmp/mitogen.<pid>.log`) and profiles
//! (`/tmp/mitogen.stats.<pid>.main.log`).
//!
//! Why this needs care: their names are predictable and a context often
//! runs as root (sudo, su, doas), while `/tmp` is writable by every user.
//! Anyone could plant a symbolic link at the name a root context is about
//! to use, pointing at `/etc/shadow`; an open that creates or truncates
//! and follows links would then overwrite that file with root's rights.
//!
//! So such a file is always created, never reused: `O_CREAT | O_EXCL`
//! (which fails on any existing name, a link included, without following
//! it) plus `O_NOFOLLOW`, with mode 0600 since logs can hold private
//! data. When the usual name is taken — a planted link, a file left by an
//! earlier process with the same pid — a fresh name with a random part is
//! created the same way (`/tmp/mitogen.<pid>.<16 hex digits>.log`), up to
//! a few attempts; the name actually used is logged. An attacker can thus
//! only make the file move, never redirect it.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// Attempts at a random name after the usual one was taken.
const ATTEMPTS: usize = 8;

/// Creates a new file `dir/stem.ext` (or, when that name is taken,
/// `dir/stem.<random>.ext`), mode 0600, never following a link. Returns
/// the open file and the name it got.
pub(crate) fn create(dir: &Path, stem: &str, ext: &str) -> io::Result<(File, PathBuf)> {
    let usual = dir.join(format!("{stem}.{ext}"));
    let mut last = match create_new(&usual) {
        Ok(f) => return Ok((f, usual)),
        Err(e) if taken(&e) => e,
        Err(e) => return Err(e),
    };
    for _ in 0..ATTEMPTS {
        let path = dir.join(format!("{stem}.{}.{ext}", random_hex()));
        match create_new(&path) {
            Ok(f) => {
                tracing::debug!(
                    "mitogen: {} is taken; writing {} instead",
                    usual.display(),
                    path.display()
                );
                return Ok((f, path));
            }
            Err(e) if taken(&e) => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        last.kind(),
        format!("no free name for {}: {last}", usual.display()),
    ))
}

/// `true` for the errors a name that already exists gives.
fn taken(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ELOOP)
}

fn create_new(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
}

/// 16 hex digits from `getrandom` (the time and pid if that fails).
fn random_hex() -> String {
    let mut b = [0u8; 8];
    // SAFETY: getrandom fills the buffer it is given.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n != b.len() as isize {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = ((t as u64) ^ (u64::from(std::process::id()) << 32)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// A private scratch directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let p = std::env::temp_dir().join(format!(
                "mitogen-tmpfile-{tag}-{}-{}",
                std::process::id(),
                random_hex()
            ));
            std::fs::create_dir(&p).expect("scratch dir");
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_through(dir: &Path) -> PathBuf {
        let (mut f, path) = create(dir, "mitogen.42", "log").expect("create");
        f.write_all(b"log line\n").expect("write");
        path
    }

    #[test]
    fn usual_name_when_free_private_mode() {
        let s = Scratch::new("free");
        let path = write_through(&s.0);
        assert_eq!(path, s.0.join("mitogen.42.log"));
        let m = std::fs::symlink_metadata(&path).expect("stat");
        assert!(m.file_type().is_file());
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"log line\n");
    }

    /// A link planted at the usual name: its target is left untouched and
    /// the log goes to another, new file.
    #[test]
    fn planted_symlink_is_not_followed() {
        let s = Scratch::new("link");
        let victim = s.0.join("victim");
        std::fs::write(&victim, b"precious\n").expect("victim");
        let link = s.0.join("mitogen.42.log");
        std::os::unix::fs::symlink(&victim, &link).expect("plant");
        let path = write_through(&s.0);
        assert_eq!(std::fs::read(&victim).expect("victim"), b"precious\n");
        assert_ne!(path, link, "wrote through the planted link");
        let m = std::fs::symlink_metadata(&path).expect("stat");
        assert!(
            m.file_type().is_file(),
            "{} is not a plain file",
            path.display()
        );
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&path).expect("read"), b"log line\n");
        assert_eq!(std::fs::read_link(&link).expect("link"), victim);
    }

    /// A dangling link would make a following open create its target.
    #[test]
    fn dangling_symlink_creates_nothing_behind_it() {
        let s = Scratch::new("dangling");
        let target = s.0.join("created-by-root");
        std::os::unix::fs::symlink(&target, s.0.join("mitogen.42.log")).expect("plant");
        let path = write_through(&s.0);
        assert!(!target.exists(), "the link's target was created");
        assert!(path.starts_with(&s.0));
    }

    /// A file left at the usual name (an earlier process with this pid,
    /// or someone else's) is neither truncated nor appended to.
    #[test]
    fn existing_file_is_left_alone() {
        let s = Scratch::new("exists");
        let old = s.0.join("mitogen.42.log");
        std::fs::write(&old, b"someone else's\n").expect("old");
        let ino = std::fs::metadata(&old).expect("stat").ino();
        let path = write_through(&s.0);
        assert_ne!(path, old);
        assert_eq!(std::fs::read(&old).expect("old"), b"someone else's\n");
        assert_eq!(std::fs::metadata(&old).expect("stat").ino(), ino);
    }
}
