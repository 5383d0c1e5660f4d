//! One target's transfer result: counted, printed as a line or a JSON
//! object, and summed up for the summary.

use crate::output::bytes;
use mitogen::files::{FileError, Report};
use std::time::Duration;

/// Which way the bytes went, for the words shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// `copy`: from here to the targets.
    Sent,
    /// `fetch`: from the targets to here.
    Received,
}

impl Way {
    fn word(self) -> &'static str {
        match self {
            Way::Sent => "sent",
            Way::Received => "received",
        }
    }
}

/// One error of a target: its kind (for programs) and its text.
#[derive(Debug, Clone)]
pub struct Failure {
    /// `NotFound`, `PermissionDenied`, …, or `Unreachable`, `Failed`.
    pub kind: String,
    /// What failed, naming the path.
    pub text: String,
}

/// What the transfers of one target did.
#[derive(Debug, Clone)]
pub struct XferResult {
    /// The target's canonical name.
    pub name: String,
    /// Time to reach it.
    pub connect: Duration,
    /// Time of its transfers, when they ran.
    pub took: Option<Duration>,
    /// Its transfers' counts, added up.
    pub report: Report,
    /// Why it could not be reached, if so.
    pub unreachable: Option<String>,
    /// Every transfer that failed (the others went on).
    pub errors: Vec<Failure>,
    /// Whether its bytes came through a push shared with other targets.
    pub pushed: bool,
    /// Where its files landed here (`fetch`).
    pub dir: Option<String>,
}

impl XferResult {
    /// A target not reached.
    pub fn unreachable(name: String, connect: Duration, why: String) -> XferResult {
        XferResult {
            unreachable: Some(why),
            ..XferResult::new(name, connect)
        }
    }

    /// A target reached, nothing done yet.
    pub fn new(name: String, connect: Duration) -> XferResult {
        XferResult {
            name,
            connect,
            took: None,
            report: Report::default(),
            unreachable: None,
            errors: Vec::new(),
            pushed: false,
            dir: None,
        }
    }

    /// Whether every transfer succeeded.
    pub fn ok(&self) -> bool {
        self.unreachable.is_none() && self.errors.is_empty()
    }

    /// Counts a transfer's outcome; `hint` is added to an error's text.
    pub fn add(&mut self, r: Result<Report, FileError>, hint: impl Fn(&FileError) -> String) {
        match r {
            Ok(r) => {
                let t = &mut self.report;
                t.files += r.files;
                t.skipped += r.skipped;
                t.resumed += r.resumed;
                t.dirs += r.dirs;
                t.symlinks += r.symlinks;
                t.bytes += r.bytes;
                t.total_bytes += r.total_bytes;
            }
            Err(e) => self.errors.push(Failure {
                kind: format!("{:?}", e.kind()),
                text: format!(
                    "{} {}: {}{}",
                    e.op(),
                    e.path().display(),
                    e.message(),
                    hint(&e)
                ),
            }),
        }
    }

    /// Counts a failure that is no file error (the call itself failed).
    pub fn fail(&mut self, text: String) {
        self.errors.push(Failure {
            kind: "Failed".into(),
            text,
        });
    }

    /// The lines shown for this target: one with the counts, or one per
    /// error.
    pub fn lines(&self, way: Way) -> Vec<String> {
        if let Some(e) = &self.unreachable {
            return vec![format!("{}: [unreachable] {e}", self.name)];
        }
        if !self.errors.is_empty() {
            return self
                .errors
                .iter()
                .map(|e| format!("{}: [failed] {}", self.name, e.text))
                .collect();
        }
        let r = &self.report;
        let mut s = format!(
            "{}: {} file{} {} ({})",
            self.name,
            r.files,
            if r.files == 1 { "" } else { "s" },
            way.word(),
            bytes(r.bytes)
        );
        if r.skipped > 0 {
            s.push_str(&format!(", {} identical skipped", r.skipped));
        }
        if r.resumed > 0 {
            s.push_str(&format!(", {} resumed", r.resumed));
        }
        if r.symlinks > 0 {
            let s_ = if r.symlinks == 1 { "" } else { "s" };
            s.push_str(&format!(", {} symlink{s_}", r.symlinks));
        }
        if let Some(t) = self.took {
            s.push_str(&format!(" in {:.2}s", t.as_secs_f64()));
        }
        if self.pushed {
            s.push_str(" (pushed)");
        }
        if let Some(d) = &self.dir {
            s.push_str(&format!(" -> {d}"));
        }
        vec![s]
    }

    /// The JSON object of this target (one line).
    pub fn json(&self) -> String {
        let r = &self.report;
        let error = match (&self.unreachable, self.errors.is_empty()) {
            (Some(e), _) => Some(e.clone()),
            (None, false) => Some(
                self.errors
                    .iter()
                    .map(|e| e.text.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            (None, true) => None,
        };
        let kind = match (&self.unreachable, self.errors.first()) {
            (Some(_), _) => Some("Unreachable".to_string()),
            (None, Some(e)) => Some(e.kind.clone()),
            (None, None) => None,
        };
        serde_json::json!({
            "target": self.name,
            "ok": self.ok(),
            "unreachable": self.unreachable.is_some(),
            "files": r.files,
            "skipped": r.skipped,
            "resumed": r.resumed,
            "dirs": r.dirs,
            "symlinks": r.symlinks,
            "bytes": r.bytes,
            "total_bytes": r.total_bytes,
            "pushed": self.pushed,
            "dir": self.dir,
            "connect_ms": ms(self.connect),
            "transfer_ms": self.took.map(ms),
            "error": error,
            "error_kind": kind,
            "errors": self.errors.iter().map(|e| e.text.clone()).collect::<Vec<_>>(),
        })
        .to_string()
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The summary: targets ok, failed, unreachable and not finished; files
/// and bytes moved; time.
pub fn summary(results: &[&XferResult], unfinished: &[String], took: Duration, way: Way) -> String {
    let ok = results.iter().filter(|r| r.ok()).count();
    let unreachable = results.iter().filter(|r| r.unreachable.is_some()).count();
    let files: u64 = results.iter().map(|r| r.report.files).sum();
    let skipped: u64 = results.iter().map(|r| r.report.skipped).sum();
    let moved: u64 = results.iter().map(|r| r.report.bytes).sum();
    let mut s = crate::output::tally(results.len(), ok, unreachable, unfinished);
    s.push_str(&format!(
        "; {files} file{} {} ({}), {skipped} identical skipped in {:.2}s",
        if files == 1 { "" } else { "s" },
        way.word(),
        bytes(moved),
        took.as_secs_f64()
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_json_and_summary() {
        let mut a = XferResult::new("local1".into(), Duration::from_millis(2));
        a.add(
            Ok(Report {
                files: 2,
                skipped: 1,
                bytes: 2048,
                total_bytes: 3000,
                ..Default::default()
            }),
            |_| String::new(),
        );
        a.took = Some(Duration::from_millis(30));
        assert_eq!(
            a.lines(Way::Sent),
            ["local1: 2 files sent (2.0 KiB), 1 identical skipped in 0.03s"]
        );
        let mut b = XferResult::new("local2".into(), Duration::ZERO);
        b.fail("no answer".into());
        assert_eq!(b.lines(Way::Sent), ["local2: [failed] no answer"]);
        let c = XferResult::unreachable("h".into(), Duration::ZERO, "connect h: refused".into());
        let v: serde_json::Value = serde_json::from_str(&c.json()).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["unreachable"], true);
        assert_eq!(v["error_kind"], "Unreachable");
        let v: serde_json::Value = serde_json::from_str(&a.json()).unwrap();
        assert_eq!(
            (v["files"].as_u64(), v["skipped"].as_u64()),
            (Some(2), Some(1))
        );
        assert!(v["error"].is_null());
        let s = summary(
            &[&a, &b, &c],
            &["x".into()],
            Duration::from_secs(1),
            Way::Sent,
        );
        assert_eq!(
            s,
            "4 targets: 1 ok, 1 failed, 1 unreachable, 1 not finished (x); \
             2 files sent (2.0 KiB), 1 identical skipped in 1.00s"
        );
    }
}
