//! Reproducing an entry's metadata on the receiving side: owner (where
//! permitted), mode and mtime of files, directories and links, and
//! making directories and links (links atomically: a temporary link
//! renamed over).

use super::error::FileError;
use super::wire::{Answer, Entry};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The part file of `dest`: beside it, hidden, named after it.
pub(crate) fn part_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().map(|n| n.as_bytes()).unwrap_or(b"file");
    let mut p = b".".to_vec();
    p.extend_from_slice(name);
    p.extend_from_slice(b".mitogen-part");
    dest.with_file_name(std::ffi::OsStr::from_bytes(&p))
}

/// The time `secs` + `nsec` after the epoch (before it when negative).
pub(crate) fn time_of(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(nsec.into())
    }
}

/// Makes directory `dest` unless it is one already.
pub(crate) fn make_dir(dest: &Path) -> Answer<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(FileError::io(
            "mkdir",
            dest,
            &std::io::Error::from_raw_os_error(libc::ENOTDIR),
        )),
        Err(_) => std::fs::create_dir(dest).map_err(|e| FileError::io("mkdir", dest, &e)),
    }
}

/// Changes owner and group to the entry's when they differ and `want`;
/// refusal (not root, not a member of the group) is not an error.
pub(crate) fn set_owner(
    now: Option<std::fs::Metadata>,
    e: &Entry,
    want: bool,
    chown: impl FnOnce(Option<u32>, Option<u32>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let Some(m) = now else { return Ok(()) };
    if !want || (m.uid() == e.uid && m.gid() == e.gid) {
        return Ok(());
    }
    match chown(Some(e.uid), Some(e.gid)) {
        Err(err) if err.raw_os_error() == Some(libc::EPERM) => Ok(()),
        r => r,
    }
}

/// Gives an existing file or directory the entry's owner, mode and mtime.
pub(crate) fn set_meta_path(path: &Path, e: &Entry, owner: bool) -> Answer<()> {
    set_owner(std::fs::symlink_metadata(path).ok(), e, owner, |u, g| {
        std::os::unix::fs::lchown(path, u, g)
    })
    .map_err(|err| FileError::io("chown", path, &err))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(e.mode))
        .map_err(|err| FileError::io("chmod", path, &err))?;
    let f = File::open(path).map_err(|err| FileError::io("open", path, &err))?;
    let t = std::fs::FileTimes::new().set_modified(time_of(e.mtime, e.mtime_nsec));
    f.set_times(t)
        .map_err(|err| FileError::io("set mtime of", path, &err))
}

/// Makes a symbolic link atomically (a temporary link renamed over).
pub(crate) fn make_link(dest: &Path, target: &[u8], e: &Entry, owner: bool) -> Answer<()> {
    let target = Path::new(std::ffi::OsStr::from_bytes(target));
    if std::fs::read_link(dest).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let tmp = part_path(dest);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|err| FileError::io("symlink", dest, &err))?;
    let _ = set_owner(std::fs::symlink_metadata(&tmp).ok(), e, owner, |u, g| {
        std::os::unix::fs::lchown(&tmp, u, g)
    });
    std::fs::rename(&tmp, dest).map_err(|err| {
        let _ = std::fs::remove_file(&tmp);
        FileError::io("rename", dest, &err)
    })
}
