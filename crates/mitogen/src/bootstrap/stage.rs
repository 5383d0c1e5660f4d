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
//! - `MITO-ERR <text>`: the stage gave up, for the reason given.
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
//! rules out `noexec` mounts. The only external commands are `ls`, `head`,
//! `wc`, `chmod`, `mv`, `rm`, `rmdir`, `sleep`, and optionally `sha256sum`.

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

/// Builds the stage for an agent of `size` bytes with hash `sha`, executed
/// through `prefix` (the seed's `python_path`: e.g. `["nice", "-n", "10"]`).
///
/// The result is one line: it reaches `/bin/sh` through the target user's
/// login shell (ssh's remote command, su's `-c`), and the csh family
/// rejects a newline inside quotes.
pub(crate) fn script(sha: &str, size: u64, prefix: &[String]) -> String {
    one_line(&template(sha, size, prefix))
}

/// Joins the template's lines with `;`, or a space after a line ending in
/// a keyword that opens a block (`do`, `then`, `else`).
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            let opens = [" do", " then", " else"].iter().any(|k| out.ends_with(k));
            out.push_str(if opens { " " } else { "; " });
        }
        out.push_str(line);
    }
    out
}

fn template(sha: &str, size: u64, prefix: &[String]) -> String {
    let mut run: String = prefix.iter().map(|p| quote(p) + " ").collect();
    run.push_str("\"$f\" ");
    run.push_str(AGENT_FLAG);
    format!(
        r#"umask 077
S={sha}; N={size}
u=${{LOGNAME:-$USER}}
l=
fail() {{ [ -z "$l" ] || rmdir "$l" 2>/dev/null; echo "MITO-ERR $*"; exit 1; }}
skipped=
for d in ${{XDG_RUNTIME_DIR:+"$XDG_RUNTIME_DIR/mitogen"}} ${{HOME:+"$HOME/.cache/mitogen"}} /dev/shm/mitogen- /tmp/mitogen-; do
  case "$d" in */mitogen-) [ -n "$u" ] || u=$(id -u); d="$d$u";; esac
  [ -d "$d" ] || mkdir -p "$d" 2>/dev/null || continue
  set -- $(ls -ldn "$d" 2>/dev/null)
  case "$1" in drwx------|drwx------.) ;; *) skipped="$skipped $d(mode $1)"; continue;; esac
  [ -O "$d" ] || {{ skipped="$skipped $d(owner $3)"; continue; }}
  f="$d/$S"
  if [ -f "$f" ] && [ -x "$f" ]; then echo MITO-EXEC; exec {run}; fi
  t="$d/.probe.$$"
  if : > "$t" && chmod 700 "$t" && [ -x "$t" ]; then rm -f "$t"; else rm -f "$t"; skipped="$skipped $d(noexec)"; continue; fi
  l="$d/.$S.lock"
  if mkdir "$l" 2>/dev/null; then :; else
    n=0
    while [ -d "$l" ] && [ $n -lt 100 ]; do sleep 0.1 2>/dev/null || sleep 1; n=$((n+1)); done
    if [ -f "$f" ] && [ -x "$f" ]; then echo MITO-EXEC; exec {run}; fi
    mkdir "$l" 2>/dev/null
  fi
  tmp="$d/.$S.$$"
  echo "MITO-NEED $N"
  head -c "$N" > "$tmp" || {{ rm -f "$tmp"; fail "cannot write the agent to $d (disk full?)"; }}
  [ "$(( $(wc -c < "$tmp") ))" -eq "$N" ] || {{ rm -f "$tmp"; fail "short write of the agent to $d (disk full?)"; }}
  if command -v sha256sum >/dev/null 2>&1; then
    set -- $(sha256sum "$tmp")
    [ "$1" = "$S" ] || {{ rm -f "$tmp"; fail "agent checksum mismatch in $d"; }}
  fi
  chmod 700 "$tmp" && mv -f "$tmp" "$f" || {{ rm -f "$tmp"; fail "cannot install the agent in $d"; }}
  rmdir "$l" 2>/dev/null
  echo MITO-EXEC
  exec {run}
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
        let s = script("ab12", 10, &["nice".into(), "-n".into(), "10".into()]);
        let st = std::process::Command::new("sh")
            .args(["-n", "-c", &s])
            .status()
            .unwrap();
        assert!(st.success());
        assert!(s.contains("exec nice -n 10 \"$f\" --mitogen-agent"));
        assert!(!s.contains('\n'), "the stage must be one line: {s}");
        assert!(!s.contains('!'), "csh would expand history in: {s}");
    }
}
