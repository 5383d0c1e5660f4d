//! The first stage: a POSIX `sh` script run on the target that finds the
//! cached agent or receives it, then executes it.
//!
//! It talks to the parent with lines on stdout:
//!
//! - `MITO-NEED <size>`: no usable cached copy; the parent sends exactly
//!   `size` bytes on stdin, which are written to a temporary name, checked
//!   (size, and SHA-256 where `sha256sum` exists), made executable and
//!   renamed into place, so a partial file is never executed;
//! - `MITO-EXEC`: the agent is about to be executed; frames follow;
//! - `MITO-ERR <text>`: the stage gave up, for the reason given;
//! - `MITO-ARCH <machine>`: the target's `uname -m` is not one the agent's
//!   ELF header was built for (checked before anything is uploaded);
//! - `MITO-NOLOADER <path>`: the agent is dynamically linked, the target
//!   lacks its interpreter, and no runtime was offered to bring along;
//! - `MITO-NEED-FILE <sha> <size>`: the target lacks the agent's
//!   interpreter (a busybox or Alpine userland): it asks for one file of
//!   the [`Runtime`] (loader or library) by hash, stores it in the cache
//!   under that hash, links it by name in `rt-<id>/` and runs the agent
//!   as `LOADER --library-path rt-<id> AGENT` (see `runtime.rs`). Stages
//!   that build the same `rt-<id>/` at once may each fetch a file (each
//!   installs it by `mv` from its own temporary name); a link is only ever
//!   added, never replaced (a name in `rt-<id>/` always means the same
//!   file), so no stage finds a library missing while another works.
//!   Every file and link is checked on each start (shell built-ins, no
//!   process), so a cache someone pruned is mended, not trusted.
//!
//! Contexts started at once for the same user and binary upload it once:
//! the first takes a lock directory (`.<sha>.lock`, `mkdir` is atomic), the
//! others wait for the lock to go (at most ~10 s, polling every 0.1 s) and
//! then find the agent cached. A lock left by an uploader that died only
//! delays the next one, which then uploads and removes it.
//!
//! Cache directories are tried in order: `$XDG_RUNTIME_DIR/mitogen`,
//! `~/.cache/mitogen`, `/dev/shm/mitogen-$USER`, `/tmp/mitogen-$USER`. One
//! is used only when it is owned by the current user with mode `0700`
//! exactly, and (for an upload) when files in it can be executed, which
//! rules out `noexec` mounts, and the agent can be written there in full:
//! a full disk moves on to the next directory (the upload is read to its
//! end either way, so the protocol stays in step, and sent again there).
//! The only external commands are `ls`, `head`, `cat`,
//! `wc`, `chmod`, `mv`, `rm`, `rmdir`, `sleep`, `uname`, optionally
//! `sha256sum`, and with a runtime to bring, `mkdir` and `ln`.

use crate::bootstrap::runtime::{ElfInfo, Runtime};
use crate::bootstrap::AgentBinary;

/// Quotes `s` for a POSIX shell.
pub(crate) fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:@,+%".contains(&b))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Flag the agent is executed with; `mitogen::main` looks for it.
pub(crate) const AGENT_FLAG: &str = "--mitogen-agent";

/// Builds the stage for `agent`, executed through `prefix` (the seed's
/// `python_path`: e.g. `["nice", "-n", "10"]`), bringing this process's
/// loader and libraries along if the target lacks the interpreter.
///
/// The result is one line: it reaches `/bin/sh` through the target user's
/// login shell (ssh's remote command, su's `-c`), and the csh family
/// rejects a newline inside quotes.
pub(crate) fn script(agent: &AgentBinary, prefix: &[String]) -> String {
    let elf = crate::bootstrap::runtime::elf_info(&agent.path).unwrap_or_default();
    let rt = crate::bootstrap::runtime::for_agent(agent);
    one_line(&template(
        &agent.sha,
        agent.size,
        prefix,
        &elf,
        rt.as_deref(),
    ))
}

/// Joins the template's lines with `;`, or a space after a line ending in
/// a keyword that opens a block (`do`, `then`, `else`).
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            let opens = [" do", " then", " else", " {"]
                .iter()
                .any(|k| out.ends_with(k));
            out.push_str(if opens { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

/// The cache directory candidates, in order (sh words; `*/mitogen-` gets
/// the user id appended). The stage looks for a cached agent in all of
/// them first, then uploads to the first that takes it: a full or
/// `noexec` directory early in the list never costs a second upload.
const DIRS: &str = r#"${XDG_RUNTIME_DIR:+"$XDG_RUNTIME_DIR/mitogen"} ${HOME:+"$HOME/.cache/mitogen"} /dev/shm/mitogen- /tmp/mitogen-"#;

fn template(
    sha: &str,
    size: u64,
    prefix: &[String],
    elf: &ElfInfo,
    rt: Option<&Runtime>,
) -> String {
    let pre: String = prefix.iter().map(|p| quote(p) + " ").collect();
    let run = format!("{pre}\"$f\" {AGENT_FLAG}");
    let machines = elf.machines.join(" ");
    let interp = quote(elf.interp.as_deref().unwrap_or(""));
    let (rt_id, loader, manifest) = match rt {
        Some(rt) if elf.interp.as_deref() == Some(rt.interp.as_str()) => (
            rt.id.as_str(),
            rt.files[0].sha.as_str(),
            rt.files
                .iter()
                .map(|f| format!("{}:{}:{}", f.name, f.sha, f.size))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => ("", "", String::new()),
    };
    let manifest = quote(&manifest);
    format!(
        r#"umask 077
S={sha}; N={size}
A='{machines}'; I={interp}; B={rt_id}; L={loader}; M={manifest}
u=${{LOGNAME:-$USER}}
l=
fail() {{ [ -z "$l" ] || rmdir "$l" 2>/dev/null; echo "MITO-ERR $*"; exit 1; }}
m=$(uname -m 2>/dev/null)
if [ -n "$A" ] && [ -n "$m" ]; then
  ok=
  for a in $A; do [ "$a" = "$m" ] && ok=1; done
  [ -n "$ok" ] || {{ echo "MITO-ARCH $m"; exit 1; }}
fi
if [ -n "$I" ] && [ -z "$M" ]; then [ -e "$I" ] || {{ echo "MITO-NOLOADER $I"; exit 1; }}; fi
go() {{
  x=
  [ -z "$I" ] || [ -e "$I" ] || x=1
  if [ -n "$x" ]; then
    r="$d/rt-$B"
    for e in $M; do
      n=${{e%%:*}}; e=${{e#*:}}; s=${{e%%:*}}; z=${{e#*:}}
      if [ -f "$d/$s" ]; then :; else
        t="$d/.$s.$$"
        echo "MITO-NEED-FILE $s $z"
        head -c "$z" > "$t" || {{ rm -f "$t"; fail "cannot write $n to $d"; }}
        [ "$(( $(wc -c < "$t") ))" -eq "$z" ] || {{ rm -f "$t"; fail "short write of $n to $d (disk full?)"; }}
        if command -v sha256sum >/dev/null 2>&1; then
          set -- $(sha256sum "$t")
          [ "$1" = "$s" ] || {{ rm -f "$t"; fail "checksum mismatch of $n in $d"; }}
        fi
        chmod 700 "$t" && mv -f "$t" "$d/$s" || {{ rm -f "$t"; fail "cannot install $n in $d"; }}
      fi
      [ -L "$r/$n" ] || {{ [ -d "$r" ] || mkdir -p "$r"; ln -s "../$s" "$r/$n" 2>/dev/null || [ -L "$r/$n" ]; }} || fail "cannot link $n in $r"
    done
    echo MITO-EXEC
    exec {pre}"$d/$L" --library-path "$r" "$f" {AGENT_FLAG}
  fi
  echo MITO-EXEC
  exec {run}
}}
for d in {DIRS}; do
  case "$d" in */mitogen-) [ -n "$u" ] || u=$(id -u); d="$d$u";; esac
  [ -d "$d" ] || continue
  set -- $(ls -ldn "$d" 2>/dev/null)
  case "$1" in drwx------|drwx------.) ;; *) continue;; esac
  [ -O "$d" ] || continue
  f="$d/$S"
  if [ -f "$f" ] && [ -x "$f" ]; then go; fi
done
skipped=
for d in {DIRS}; do
  case "$d" in */mitogen-) [ -n "$u" ] || u=$(id -u); d="$d$u";; esac
  [ -d "$d" ] || mkdir -p "$d" 2>/dev/null || continue
  set -- $(ls -ldn "$d" 2>/dev/null)
  case "$1" in drwx------|drwx------.) ;; *) skipped="$skipped $d(mode $1)"; continue;; esac
  [ -O "$d" ] || {{ skipped="$skipped $d(owner $3)"; continue; }}
  f="$d/$S"
  if [ -f "$f" ] && [ -x "$f" ]; then go; fi
  t="$d/.probe.$$"
  if : > "$t" && chmod 700 "$t" && [ -x "$t" ]; then rm -f "$t"; else rm -f "$t"; skipped="$skipped $d(noexec)"; continue; fi
  l="$d/.$S.lock"
  if mkdir "$l" 2>/dev/null; then :; else
    n=0
    while [ -d "$l" ] && [ $n -lt 100 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n+1)); done
    if [ -f "$f" ] && [ -x "$f" ]; then go; fi
    mkdir "$l" 2>/dev/null
  fi
  tmp="$d/.$S.$$"
  echo "MITO-NEED $N"
  if head -c "$N" | {{ cat > "$tmp" || {{ cat > /dev/null; exit 1; }}; }} && [ "$(( $(wc -c < "$tmp") ))" -eq "$N" ]; then :; else
    rm -f "$tmp"; rmdir "$l" 2>/dev/null; l=; skipped="$skipped $d(cannot write: disk full?)"; continue
  fi
  if command -v sha256sum >/dev/null 2>&1; then
    set -- $(sha256sum "$tmp")
    [ "$1" = "$S" ] || {{ rm -f "$tmp"; fail "agent checksum mismatch in $d"; }}
  fi
  chmod 700 "$tmp" && mv -f "$tmp" "$f" || {{ rm -f "$tmp"; fail "cannot install the agent in $d"; }}
  rmdir "$l" 2>/dev/null
  go
done
fail "no usable agent cache directory for ${{u:-$(id -u)}}:$skipped"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("nice"), "nice");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }

    #[test]
    fn script_is_valid_sh() {
        let rt = Runtime {
            interp: "/lib/ld.so".into(),
            files: vec![crate::bootstrap::runtime::RtFile {
                name: "ld.so".into(),
                path: "/lib/ld.so".into(),
                sha: "cd34".into(),
                size: 5,
            }],
            id: "ef56".into(),
        };
        let elf = ElfInfo {
            machines: &["x86_64", "amd64"],
            interp: Some("/lib/ld.so".into()),
        };
        let prefix = ["nice".to_string(), "-n".into(), "10".into()];
        let s = one_line(&template("ab12", 10, &prefix, &elf, Some(&rt)));
        let st = std::process::Command::new("sh")
            .args(["-n", "-c", &s])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(s.contains("exec nice -n 10 \"$f\" --mitogen-agent"));
        assert!(s.contains("M=ld.so:cd34:5;"), "{s}");
        assert!(
            s.contains("exec nice -n 10 \"$d/$L\" --library-path"),
            "{s}"
        );
        assert!(!s.contains('\n'), "the stage must be one line: {s}");
        assert!(!s.contains('!'), "csh would expand history in: {s}");
    }
}
