//! How results are shown: gathered (targets with identical output and
//! status printed once under their folded names, like `clush -b`),
//! inline (each line prefixed with its target, like pdsh and `pssh -i`),
//! or JSON lines (one object per target, for programs).
//!
//! Inline and JSON print each target as it finishes, so a long run shows
//! progress in a pipe too; gathered output waits for the end, since
//! grouping needs every result.

use crate::nodeset::fold_str;
use crate::remote::CommandOutput;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

/// How to print results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Grouped by identical output, at the end.
    Gather,
    /// `target: line`, as each target finishes.
    Inline,
    /// One JSON object per target per line.
    Json,
}

/// What happened on one target.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Never reached (a hop failed to connect).
    Unreachable(String),
    /// Reached, but the call failed (context lost, remote error).
    Failed(String),
    /// The command ran.
    Ran(CommandOutput),
}

/// One target's result.
#[derive(Debug, Clone)]
pub struct TargetResult {
    /// The target's canonical name.
    pub name: String,
    /// Time to reach it (its hops, shared ones included).
    pub connect: Duration,
    /// Time of the call, when it was made.
    pub run: Option<Duration>,
    /// What happened.
    pub outcome: Outcome,
}

impl TargetResult {
    /// Whether the target succeeded (exit status 0).
    pub fn ok(&self) -> bool {
        matches!(&self.outcome, Outcome::Ran(o) if o.status == Some(0) && !o.timed_out)
    }

    /// A short word for the status: `exit 1`, `killed by signal 9`, ….
    pub fn status_text(&self) -> String {
        match &self.outcome {
            Outcome::Unreachable(_) => "unreachable".into(),
            Outcome::Failed(_) => "failed".into(),
            Outcome::Ran(o) if o.timed_out => "timed out".into(),
            Outcome::Ran(o) if o.stopped => "stopped".into(),
            Outcome::Ran(o) => match (o.status, o.signal) {
                (Some(s), _) => format!("exit {s}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "ended".into(),
            },
        }
    }
}

/// The JSON form of a result.
#[derive(Debug, Serialize)]
struct JsonResult<'a> {
    target: &'a str,
    ok: bool,
    status: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
    stdout_dropped: u64,
    stderr_dropped: u64,
    timed_out: bool,
    stopped: bool,
    connect_ms: f64,
    run_ms: Option<f64>,
    error: Option<&'a str>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One JSON line for `r`.
pub fn json_line(r: &TargetResult) -> String {
    let empty = CommandOutput::default();
    let (o, error) = match &r.outcome {
        Outcome::Ran(o) => (o, None),
        Outcome::Unreachable(e) | Outcome::Failed(e) => (&empty, Some(e.as_str())),
    };
    let j = JsonResult {
        target: &r.name,
        ok: r.ok(),
        status: o.status,
        signal: o.signal,
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        stdout_dropped: o.stdout_dropped,
        stderr_dropped: o.stderr_dropped,
        timed_out: o.timed_out,
        stopped: o.stopped,
        connect_ms: ms(r.connect),
        run_ms: r.run.map(ms),
        error,
    };
    serde_json::to_string(&j).unwrap_or_else(|e| format!("{{\"error\":\"json: {e}\"}}"))
}

/// Prints one finished target, for the modes that print as they go.
pub fn print_one(mode: Mode, r: &TargetResult) {
    let (out, err) = (std::io::stdout(), std::io::stderr());
    match mode {
        Mode::Gather => {}
        Mode::Json => {
            let _ = writeln!(out.lock(), "{}", json_line(r));
        }
        Mode::Inline => {
            let mut o = out.lock();
            let mut e = err.lock();
            match &r.outcome {
                Outcome::Ran(c) => {
                    prefixed(&mut o, &r.name, &c.stdout);
                    truncated(&mut o, &r.name, "stdout", c.stdout_dropped);
                    prefixed(&mut e, &r.name, &c.stderr);
                    truncated(&mut e, &r.name, "stderr", c.stderr_dropped);
                    if !r.ok() {
                        let _ = writeln!(e, "{}: [{}]", r.name, r.status_text());
                    }
                }
                Outcome::Unreachable(why) | Outcome::Failed(why) => {
                    let _ = writeln!(e, "{}: [{}] {}", r.name, r.status_text(), why);
                }
            }
        }
    }
}

fn prefixed(w: &mut impl Write, name: &str, text: &[u8]) {
    for line in String::from_utf8_lossy(text).lines() {
        let _ = writeln!(w, "{name}: {line}");
    }
}

fn truncated(w: &mut impl Write, name: &str, what: &str, dropped: u64) {
    if dropped > 0 {
        let _ = writeln!(
            w,
            "{name}: [{dropped} more bytes of {what} not kept: --max-output]"
        );
    }
}

/// What identical results share.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    status: String,
    error: String,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    dropped: (u64, u64),
}

fn key(r: &TargetResult) -> Key {
    match &r.outcome {
        Outcome::Ran(o) => Key {
            status: r.status_text(),
            error: String::new(),
            stdout: o.stdout.to_vec(),
            stderr: o.stderr.to_vec(),
            dropped: (o.stdout_dropped, o.stderr_dropped),
        },
        Outcome::Unreachable(e) | Outcome::Failed(e) => Key {
            status: r.status_text(),
            error: e.clone(),
            stdout: Vec::new(),
            stderr: Vec::new(),
            dropped: (0, 0),
        },
    }
}

/// Groups identical results: each group's names and one result, in the
/// order of each group's first target.
pub fn groups(results: &[TargetResult]) -> Vec<(Vec<String>, &TargetResult)> {
    let mut by: BTreeMap<Key, (usize, Vec<String>, &TargetResult)> = BTreeMap::new();
    for (i, r) in results.iter().enumerate() {
        by.entry(key(r))
            .or_insert_with(|| (i, Vec::new(), r))
            .1
            .push(r.name.clone());
    }
    let mut v: Vec<_> = by.into_values().collect();
    v.sort_by_key(|(i, ..)| *i);
    v.into_iter().map(|(_, names, r)| (names, r)).collect()
}

/// Prints gathered results to `w`.
pub fn print_gathered(w: &mut impl Write, results: &[TargetResult]) {
    for (names, r) in groups(results) {
        let mut head = format!("{} ({})", fold_str(&names), names.len());
        if !r.ok() {
            head.push_str(&format!(" [{}]", r.status_text()));
        }
        let rule = "-".repeat(head.chars().count().clamp(15, 79));
        let _ = writeln!(w, "{rule}\n{head}\n{rule}");
        match &r.outcome {
            Outcome::Ran(o) => {
                let _ = w.write_all(&o.stdout);
                if !o.stdout.is_empty() && !o.stdout.ends_with(b"\n") {
                    let _ = writeln!(w);
                }
                if o.stdout_dropped > 0 {
                    let _ = writeln!(
                        w,
                        "[{} more bytes of stdout not kept: --max-output]",
                        o.stdout_dropped
                    );
                }
                if !o.stderr.is_empty() {
                    let _ = writeln!(w, "[stderr]");
                    let _ = w.write_all(&o.stderr);
                    if !o.stderr.ends_with(b"\n") {
                        let _ = writeln!(w);
                    }
                }
                if o.stderr_dropped > 0 {
                    let _ = writeln!(
                        w,
                        "[{} more bytes of stderr not kept: --max-output]",
                        o.stderr_dropped
                    );
                }
            }
            Outcome::Unreachable(e) | Outcome::Failed(e) => {
                let _ = writeln!(w, "{e}");
            }
        }
    }
}

/// A byte count as people read it.
pub fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / 1048576.0),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The summary line: counts, what did not finish, the time taken.
pub fn summary(results: &[TargetResult], unfinished: &[String], took: Duration) -> String {
    let ok = results.iter().filter(|r| r.ok()).count();
    let unreachable = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Unreachable(_)))
        .count();
    let mut s = tally(results.len(), ok, unreachable, unfinished);
    s.push_str(&format!(" in {:.2}s", took.as_secs_f64()));
    s
}

/// The start of every summary line: how many targets, how the `done`
/// ones ended, and which did not finish.
pub fn tally(done: usize, ok: usize, unreachable: usize, unfinished: &[String]) -> String {
    let failed = done - ok - unreachable;
    let total = done + unfinished.len();
    let mut s = format!(
        "{total} target{}: {ok} ok, {failed} failed, {unreachable} unreachable",
        if total == 1 { "" } else { "s" }
    );
    if !unfinished.is_empty() {
        s.push_str(&format!(
            ", {} not finished ({})",
            unfinished.len(),
            fold_str(unfinished)
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ran(name: &str, status: i32, out: &str) -> TargetResult {
        TargetResult {
            name: name.into(),
            connect: Duration::from_millis(3),
            run: Some(Duration::from_millis(1)),
            outcome: Outcome::Ran(CommandOutput {
                status: Some(status),
                stdout: mitogen::ByteBuf::from(out.as_bytes().to_vec()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn identical_results_gather_under_folded_names() {
        let mut rs: Vec<_> = (1..=19)
            .map(|i| ran(&format!("web{i:02}"), 0, "hi\n"))
            .collect();
        rs.insert(3, ran("web20", 1, "hi\n"));
        rs.push(TargetResult {
            name: "db1".into(),
            connect: Duration::ZERO,
            run: None,
            outcome: Outcome::Unreachable("connect db1: refused".into()),
        });
        let mut out = Vec::new();
        print_gathered(&mut out, &rs);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "---------------\nweb[01-19] (19)\n---------------\nhi\n\
             ------------------\nweb20 (1) [exit 1]\n------------------\nhi\n\
             ---------------------\ndb1 (1) [unreachable]\n---------------------\nconnect db1: refused\n"
        );
        let s = summary(&rs, &["web21".into()], Duration::from_millis(1500));
        assert_eq!(
            s,
            "22 targets: 19 ok, 1 failed, 1 unreachable, 1 not finished (web21) in 1.50s"
        );
    }

    #[test]
    fn json_lines_parse_back() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&ran("a", 2, "x"))).unwrap();
        assert_eq!(v["target"], "a");
        assert_eq!(v["status"], 2);
        assert_eq!(v["ok"], false);
        assert_eq!(v["stdout"], "x");
        assert!(v["error"].is_null());
    }
}
