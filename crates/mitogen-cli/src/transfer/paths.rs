//! Which path goes where: `copy`'s sources and destination, and the
//! directory of each target under `fetch`'s LOCALDIR.
//!
//! Decided from the command line alone (nothing is asked of the
//! targets), so every target gets the same paths and a push can serve
//! them all with one stream.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// One transfer of a command: from this path to that one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    /// Where the file or tree is read (here for `copy`, on the target
    /// for `fetch`).
    pub from: PathBuf,
    /// Where it lands: on the target for `copy`; for `fetch`, relative
    /// to the target's directory under LOCALDIR.
    pub to: PathBuf,
    /// Whether `to` was given whole (`copy SRC DEST`), not made of a
    /// directory and the source's name.
    pub exact: bool,
}

/// The last component of `p`, which names it inside a directory: none
/// for `/`, `.` or `..` (a trailing `/` is ignored: `dir/` is `dir`).
fn name_of(p: &Path) -> Result<&std::ffi::OsStr, String> {
    p.file_name().ok_or_else(|| {
        format!(
            "{:?} has no name of its own to be stored under (name the copy: one source, a destination not ending in /)",
            p.display().to_string()
        )
    })
}

/// `copy SRC... DEST`: with one SRC and a DEST not ending in `/`, DEST
/// is the copy; otherwise each SRC goes into the directory DEST under its
/// own name. Every SRC must exist here.
pub fn copy_pairs(paths: &[PathBuf]) -> Result<Vec<Pair>, String> {
    let Some((dest, srcs)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err("copy needs SRC... DEST (at least one source and a destination)".into());
    };
    if dest.as_os_str().is_empty() {
        return Err("the destination is empty".into());
    }
    let into = srcs.len() > 1 || dest.as_os_str().as_bytes().ends_with(b"/");
    let mut seen = HashSet::new();
    let mut pairs = Vec::with_capacity(srcs.len());
    for src in srcs {
        std::fs::symlink_metadata(src).map_err(|e| format!("{}: {e}", src.display()))?;
        let to = if into {
            dest.join(name_of(src)?)
        } else {
            dest.clone()
        };
        if !seen.insert(to.clone()) {
            return Err(format!(
                "two sources would both be copied to {}",
                to.display()
            ));
        }
        pairs.push(Pair {
            from: src.clone(),
            to,
            exact: !into,
        });
    }
    Ok(pairs)
}

/// `fetch REMOTE... LOCALDIR`: each REMOTE lands under its own name in
/// the target's directory; the pairs (`to` relative) and LOCALDIR.
pub fn fetch_pairs(paths: &[PathBuf]) -> Result<(Vec<Pair>, PathBuf), String> {
    let Some((local, remotes)) = paths.split_last().filter(|(_, r)| !r.is_empty()) else {
        return Err(
            "fetch needs REMOTE... LOCALDIR (at least one remote path and a local directory)"
                .into(),
        );
    };
    if local.as_os_str().is_empty() {
        return Err("the local directory is empty".into());
    }
    let mut seen = HashSet::new();
    let mut pairs = Vec::with_capacity(remotes.len());
    for r in remotes {
        let name = name_of(r)?;
        if !seen.insert(name.to_os_string()) {
            return Err(format!(
                "two remote paths have the same name {:?}: each would overwrite the other",
                name.to_string_lossy()
            ));
        }
        pairs.push(Pair {
            from: r.clone(),
            to: PathBuf::from(name),
            exact: false,
        });
    }
    Ok((pairs, local.clone()))
}

/// The directory name of a target under LOCALDIR: its canonical name
/// with each `/` (between hops) as `+` and each `:` as `_`, so the name
/// is one path component that no tool reads as `HOST:PATH`
/// (`deploy@bastion/web01:2222/sudo:root` →
/// `deploy@bastion+web01_2222+sudo_root`).
pub fn dir_name(target: &str) -> String {
    target
        .chars()
        .map(|c| match c {
            '/' => '+',
            ':' => '_',
            c => c,
        })
        .collect()
}

/// The directory of every target, refusing names that would not be a
/// directory of their own (`.`, `..`) or that two targets would share.
pub fn target_dirs(names: &[String]) -> Result<Vec<String>, String> {
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(names.len());
    for n in names {
        let d = dir_name(n);
        if d.is_empty() || d == "." || d == ".." {
            return Err(format!("target {n} has no usable directory name ({d:?})"));
        }
        if let Some(other) = seen.insert(d.clone(), n) {
            return Err(format!(
                "targets {other} and {n} would both be stored in the directory {d:?}"
            ));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn one_source_is_copied_to_dest_several_into_it() {
        let dir = std::env::temp_dir().join(format!("mitogen-cli-paths-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tree")).unwrap();
        std::fs::write(dir.join("a.conf"), b"x").unwrap();
        let a = dir.join("a.conf").to_string_lossy().into_owned();
        let t = format!("{}/", dir.join("tree").display());
        let exact = copy_pairs(&p(&[&a, "/etc/app.conf"])).unwrap();
        assert_eq!(exact[0].to, PathBuf::from("/etc/app.conf"));
        assert!(exact[0].exact);
        let into = copy_pairs(&p(&[&a, "/etc/"])).unwrap();
        assert_eq!(into[0].to, PathBuf::from("/etc/a.conf"));
        let two = copy_pairs(&p(&[&a, &t, "/srv"])).unwrap();
        assert_eq!(two[0].to, PathBuf::from("/srv/a.conf"));
        assert_eq!(two[1].to, PathBuf::from("/srv/tree"));
        assert!(!two[1].exact);
        let e = copy_pairs(&p(&[&a, &a, "/srv"])).unwrap_err();
        assert!(e.contains("both"), "{e}");
        let e = copy_pairs(&p(&["/no/such/file-x", "/srv"])).unwrap_err();
        assert!(e.contains("/no/such/file-x"), "{e}");
        let e = copy_pairs(&p(&[".", &a, "/srv"])).unwrap_err();
        assert!(e.contains("no name"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fetched_paths_keep_their_names_and_targets_get_safe_dirs() {
        let (pairs, local) = fetch_pairs(&p(&["/etc/hostname", "/var/log/", "out"])).unwrap();
        assert_eq!(local, PathBuf::from("out"));
        assert_eq!(pairs[0].to, PathBuf::from("hostname"));
        assert_eq!(pairs[1].to, PathBuf::from("log"));
        assert!(fetch_pairs(&p(&["/a/x", "/b/x", "out"])).is_err());
        assert!(fetch_pairs(&p(&["/", "out"])).is_err());
        assert_eq!(
            dir_name("deploy@bastion/web01:2222/sudo:root"),
            "deploy@bastion+web01_2222+sudo_root"
        );
        assert_eq!(dir_name("local1"), "local1");
        let names = vec!["a/sudo:root".to_string(), "a+sudo_root".to_string()];
        assert!(target_dirs(&names).unwrap_err().contains("both"));
        assert_eq!(target_dirs(&names[..1]).unwrap(), ["a+sudo_root"]);
    }
}
