//! The agent in a userland without its C library: bringing the loader.
//!
//! A program built the ordinary way on Linux (glibc, dynamically linked)
//! names an ELF interpreter (`PT_INTERP`, e.g.
//! `/lib64/ld-linux-x86-64.so.2`) and shared libraries (`libc.so.6`,
//! `libgcc_s.so.1`, …) that a busybox or Alpine container does not have:
//! executed there it fails with a bare "not found". So the parent
//! describes its own loader and libraries to the first stage (a
//! [`Runtime`]): when the target lacks the interpreter, the stage fetches
//! each file into the agent cache under its SHA-256 (like the agent,
//! uploaded once, verified), links them under their names in
//! `rt-<id>/`, and runs `LOADER --library-path rt-<id> AGENT`.
//!
//! The files are the ones this process has mapped right now
//! (`/proc/self/maps`), and the loader is the mapping at the auxiliary
//! vector's `AT_BASE`: exactly what the agent runs with here, found the same
//! way inside a container (where they are the `rt-<id>` copies), so a
//! chain through a container (docker → su) brings them along again.
//! Limits: a library loaded later with `dlopen` (NSS modules, for example)
//! is not brought; each file keeps the name it is mapped under, which for
//! the system libraries of Debian, Ubuntu and Fedora is their soname; the
//! kernel must be able to run the binary (same architecture, checked by the
//! stage against the agent's ELF `e_machine`). A static binary (musl, or
//! `static-pie`) has no loader and needs none of this.

use crate::bootstrap::AgentBinary;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One file of the runtime: where it is here, its name in `rt-<id>/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RtFile {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    pub(crate) sha: String,
    pub(crate) size: u64,
}

/// The loader and libraries a dynamically linked agent needs.
#[derive(Clone, Debug)]
pub(crate) struct Runtime {
    /// The interpreter the binary names (`PT_INTERP`): if the target has
    /// it, nothing is brought.
    pub(crate) interp: String,
    /// The loader itself (first) and the libraries.
    pub(crate) files: Vec<RtFile>,
    /// Hash of the file list: names the `rt-<id>` directory.
    pub(crate) id: String,
}

impl Runtime {
    /// The file with hash `sha`.
    pub(crate) fn file(&self, sha: &str) -> Option<&RtFile> {
        self.files.iter().find(|f| f.sha == sha)
    }
}

/// The runtime to bring for `agent`: this process's own, when `agent` is
/// this program and it is dynamically linked; `None` otherwise (another
/// program's binary is not described: if its loader is missing the stage
/// says so).
pub(crate) fn for_agent(agent: &AgentBinary) -> Option<Arc<Runtime>> {
    let own = crate::bootstrap::known_current()?;
    if own.sha != agent.sha {
        return None;
    }
    own_runtime()
}

/// This process's runtime, discovered once.
static RT: OnceLock<Option<Arc<Runtime>>> = OnceLock::new();
/// Held while discovering (see [`own_runtime`]).
static DISCOVERING: Mutex<()> = Mutex::new(());
/// Whether [`prefetch`] has started its thread.
static PREFETCHED: AtomicBool = AtomicBool::new(false);

/// Starts discovering this process's runtime in the background, once:
/// called by a connect before it waits for this executable's hash, so
/// the two (a few milliseconds of reading and hashing each: the binary,
/// the loader and the C library) overlap instead of adding up on the
/// first connect.
pub(crate) fn prefetch() {
    if RT.get().is_some() || PREFETCHED.swap(true, Ordering::Relaxed) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("mitogen-rt".into())
        .spawn(|| drop(own_runtime()));
}

/// This process's own loader and libraries, if it is dynamically linked,
/// found once (as `AgentBinary::current` hashes: `sync::once_across_fork`).
fn own_runtime() -> Option<Arc<Runtime>> {
    let found = crate::sync::once_across_fork(&RT, &DISCOVERING, || {
        // The path recorded with this executable's hash when there is
        // one: an agent renames its process (the title overwrites
        // `argv`), after which `own_file` no longer finds the agent
        // behind a loader.
        let exe = crate::bootstrap::known_current()
            .map(|b| b.path.clone())
            .unwrap_or_else(|| own_file().0);
        Ok::<_, std::convert::Infallible>(match discover(&exe) {
            Ok(rt) => rt.map(Arc::new),
            Err(e) => {
                tracing::debug!("mitogen: no loader to bring along: {e}");
                None
            }
        })
    });
    match found {
        Ok(rt) => rt,
        Err(never) => match never {},
    }
}

fn discover(exe: &Path) -> std::io::Result<Option<Runtime>> {
    let Some(interp) = elf_info(exe)?.interp else {
        return Ok(None); // static
    };
    // SAFETY: getauxval reads this process's auxiliary vector.
    let base = unsafe { libc::getauxval(libc::AT_BASE) } as u64;
    // Started as `LOADER --library-path DIR AGENT` (a runtime brought
    // along), the loader is the kernel's executable and has no base.
    let exe_is_loader = base == 0 && exe != Path::new("/proc/self/exe");
    if base == 0 && !exe_is_loader {
        return Ok(None);
    }
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    let exe_real = std::fs::canonicalize(exe).unwrap_or_else(|_| exe.to_path_buf());
    let mut loader: Option<PathBuf> = if exe_is_loader {
        Some(std::fs::canonicalize("/proc/self/exe")?)
    } else {
        None
    };
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in maps.lines() {
        let mut f = line.split_whitespace();
        let (Some(range), Some(_perms), Some(off)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let path: String = f.skip(2).collect::<Vec<_>>().join(" ");
        if !path.starts_with('/') || path.ends_with(" (deleted)") {
            continue;
        }
        let p = PathBuf::from(&path);
        let start = range
            .split('-')
            .next()
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        if !exe_is_loader && start == Some(base) && u64::from_str_radix(off, 16).ok() == Some(0) {
            loader = Some(p);
            continue;
        }
        if p != exe_real && !libs.contains(&p) && is_shared_object(&p) {
            libs.push(p);
        }
    }
    let Some(loader) = loader else {
        return Ok(None);
    };
    libs.retain(|l| *l != loader);
    let mut files = vec![rt_file(&loader)?];
    for l in &libs {
        files.push(rt_file(l)?);
    }
    let mut h = Sha256::new();
    h.update(interp.as_bytes());
    for f in &files {
        h.update(format!("\n{} {} {}", f.name, f.sha, f.size).as_bytes());
    }
    let id = hex(&h.finalize());
    Ok(Some(Runtime { interp, files, id }))
}

/// An ELF shared object (`ET_DYN`): a library, not a data file mapped
/// for reading (locale archives and the like).
fn is_shared_object(path: &Path) -> bool {
    let mut head = [0u8; 18];
    let ok = std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut head));
    ok.is_ok() && &head[..4] == b"\x7fELF" && {
        let t = if head[5] == 1 {
            u16::from_le_bytes([head[16], head[17]])
        } else {
            u16::from_be_bytes([head[16], head[17]])
        };
        t == 3
    }
}

/// Describes one file: named by its `DT_SONAME` (what the loader looks
/// for), else by its file name.
fn rt_file(path: &Path) -> std::io::Result<RtFile> {
    let bytes = std::fs::read(path)?;
    // The stage splits its list on spaces and colons, unquoted: only
    // plain names travel.
    let plain = |n: &String| {
        !n.is_empty()
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
    };
    let name = Elf::new(&bytes)
        .and_then(|e| e.soname())
        .filter(plain)
        .or_else(|| path.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(plain)
        .ok_or_else(|| {
            std::io::Error::other(format!("{}: no plain name to give it", path.display()))
        })?;
    Ok(RtFile {
        name,
        path: path.to_path_buf(),
        sha: hex(&Sha256::digest(&bytes)),
        size: bytes.len() as u64,
    })
}

/// This agent's own file and the name it was executed under. Normally
/// `/proc/self/exe`; run through a loader brought along, that is the
/// loader, and the agent is `argv[0]` (the loader sets it to the program's
/// path), recognised by its hash-like name.
pub(crate) fn own_file() -> (PathBuf, String) {
    let exe = std::fs::read_link("/proc/self/exe")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        // Linux marks a file replaced since it was executed (another
        // connect renamed an identical copy over it) " (deleted)".
        .map(|n| n.trim_end_matches(" (deleted)").to_string())
        .unwrap_or_default();
    let a0 = std::env::args_os().next().map(PathBuf::from);
    if let Some(a0) = a0 {
        let name = a0
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hashlike = name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit());
        if hashlike && name != exe && a0.is_absolute() && a0.is_file() {
            return (a0, name);
        }
    }
    (PathBuf::from("/proc/self/exe"), exe)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// What the stage needs from an ELF file's headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    /// `uname -m` names of the machine it is built for (empty: unknown).
    pub(crate) machines: &'static [&'static str],
    /// Its `PT_INTERP`, if dynamically linked.
    pub(crate) interp: Option<String>,
}

/// Reads the ELF header and program headers of `path` (little- and
/// big-endian, 32- and 64-bit). Not ELF: the default (nothing known).
pub(crate) fn elf_info(path: &Path) -> std::io::Result<ElfInfo> {
    let mut f = std::fs::File::open(path)?;
    let mut head = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < head.len() {
        let n = f.read(&mut head[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    head.truncate(got);
    Ok(parse_elf(&head))
}

/// Reads integers of an ELF file of either class and byte order.
struct Elf<'a> {
    b: &'a [u8],
    wide: bool,
    le: bool,
}

impl<'a> Elf<'a> {
    fn new(b: &'a [u8]) -> Option<Elf<'a>> {
        (b.len() >= 52 && &b[..4] == b"\x7fELF").then(|| Elf {
            b,
            wide: b[4] == 2,
            le: b[5] == 1,
        })
    }

    fn u16(&self, o: u64) -> Option<u64> {
        let o = usize::try_from(o).ok()?;
        let s: [u8; 2] = self.b.get(o..o.checked_add(2)?)?.try_into().ok()?;
        Some(u64::from(if self.le {
            u16::from_le_bytes(s)
        } else {
            u16::from_be_bytes(s)
        }))
    }

    fn u32(&self, o: u64) -> Option<u64> {
        let o = usize::try_from(o).ok()?;
        let s: [u8; 4] = self.b.get(o..o.checked_add(4)?)?.try_into().ok()?;
        Some(u64::from(if self.le {
            u32::from_le_bytes(s)
        } else {
            u32::from_be_bytes(s)
        }))
    }

    fn u64(&self, o: u64) -> Option<u64> {
        let o = usize::try_from(o).ok()?;
        let s: [u8; 8] = self.b.get(o..o.checked_add(8)?)?.try_into().ok()?;
        Some(if self.le {
            u64::from_le_bytes(s)
        } else {
            u64::from_be_bytes(s)
        })
    }

    /// A word: 8 bytes in a 64-bit file, 4 in a 32-bit one.
    fn word(&self, o: u64) -> Option<u64> {
        if self.wide {
            self.u64(o)
        } else {
            self.u32(o)
        }
    }

    /// Program headers: (type, file offset, virtual address, file size).
    fn segments(&self) -> Option<Vec<(u64, u64, u64, u64)>> {
        let (phoff, phentsize, phnum) = if self.wide {
            (self.u64(32)?, self.u16(54)?, self.u16(56)?)
        } else {
            (self.u32(28)?, self.u16(42)?, self.u16(44)?)
        };
        let mut out = Vec::new();
        for i in 0..phnum {
            let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
            let t = self.u32(ph)?;
            out.push(if self.wide {
                (t, self.u64(ph + 8)?, self.u64(ph + 16)?, self.u64(ph + 32)?)
            } else {
                (t, self.u32(ph + 4)?, self.u32(ph + 8)?, self.u32(ph + 16)?)
            });
        }
        Some(out)
    }

    /// The NUL-terminated string at file offset `o`.
    fn str_at(&self, o: u64) -> Option<String> {
        let s = self.b.get(usize::try_from(o).ok()?..)?;
        let s = s.split(|c| *c == 0).next()?;
        String::from_utf8(s.to_vec()).ok()
    }

    fn interp(&self) -> Option<String> {
        let segs = self.segments()?;
        let (_, off, _, _) = segs.iter().find(|s| s.0 == 3)?; // PT_INTERP
        self.str_at(*off)
    }

    /// `DT_SONAME`, found through `PT_DYNAMIC` and the string table's
    /// address mapped back to a file offset by the `PT_LOAD` segments.
    fn soname(&self) -> Option<String> {
        let segs = self.segments()?;
        let (_, dyn_off, _, dyn_size) = *segs.iter().find(|s| s.0 == 2)?; // PT_DYNAMIC
        let ent = if self.wide { 16 } else { 8 };
        let (mut strtab, mut soname) = (None, None);
        let mut o = dyn_off;
        while o + ent <= dyn_off + dyn_size {
            let tag = self.word(o)?;
            let val = self.word(o + ent / 2)?;
            match tag {
                0 => break,
                5 => strtab = Some(val),
                14 => soname = Some(val),
                _ => {}
            }
            o += ent;
        }
        let (strtab, soname) = (strtab?, soname?);
        let (_, off, vaddr, _) = segs
            .iter()
            .find(|s| s.0 == 1 && s.2 <= strtab && strtab < s.2 + s.3)?; // PT_LOAD
        self.str_at(strtab - vaddr + off + soname)
    }
}

fn parse_elf(b: &[u8]) -> ElfInfo {
    let Some(elf) = Elf::new(b) else {
        return ElfInfo::default();
    };
    let machines: &'static [&'static str] = match elf.u16(18) {
        Some(62) => &["x86_64", "amd64"],
        Some(3) => &["i386", "i486", "i586", "i686", "x86"],
        Some(183) => &["aarch64", "arm64", "aarch64_be", "armv8l", "armv8b"],
        Some(40) => &["armv5tel", "armv6l", "armv7l", "armv8l", "arm"],
        Some(243) => &["riscv64"],
        Some(21) => &["ppc64", "ppc64le"],
        Some(22) => &["s390x"],
        _ => &[],
    };
    ElfInfo {
        machines,
        interp: elf.interp(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_described() {
        let info = elf_info(Path::new("/proc/self/exe")).unwrap();
        assert!(
            info.machines.contains(&std::env::consts::ARCH)
                || (std::env::consts::ARCH == "x86" && info.machines.contains(&"i686")),
            "{info:?}"
        );
        // SAFETY: reading the auxiliary vector.
        let dynamic = unsafe { libc::getauxval(libc::AT_BASE) } != 0;
        assert_eq!(info.interp.is_some(), dynamic, "{info:?}");
        if dynamic {
            let rt = discover(Path::new("/proc/self/exe")).unwrap().unwrap();
            assert!(rt.files[0].name.starts_with("ld"), "{rt:?}");
            assert!(rt.files.iter().any(|f| f.name == "libc.so.6"), "{rt:?}");
        }
    }

    #[test]
    fn not_elf_is_unknown() {
        assert_eq!(parse_elf(b"#!/bin/sh\n"), ElfInfo::default());
        assert_eq!(parse_elf(&[0x7f, b'E', b'L', b'F']), ElfInfo::default());
    }
}
