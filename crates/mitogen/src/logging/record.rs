//! A log record as it travels between contexts, and the places records
//! end up in this process without a router: re-emitted as `tracing`
//! events, or written to the debug file. The router's control plane
//! re-emits what children forward; `enable_debug` opens the file. Nothing
//! here sends: forwarding is `logging/mod.rs`, above the router.

use crate::message::Message;
use crate::sync::lock;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};

/// One forwarded record.
#[derive(Serialize, Deserialize)]
pub(crate) struct Record {
    pub(crate) level: u8,
    pub(crate) target: String,
    pub(crate) message: String,
}

pub(crate) fn level_to_u8(l: Level) -> u8 {
    match l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

pub(crate) fn filter_to_u8(f: LevelFilter) -> u8 {
    f.into_level().map_or(0, level_to_u8)
}

pub(crate) fn u8_to_filter(v: u8) -> LevelFilter {
    match v {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Re-emits a record received from `context` in this process.
pub(crate) fn emit_forwarded(context: &str, msg: &Message) {
    let Ok(r) = msg.decode::<Record>() else {
        return;
    };
    let (t, m) = (r.target.as_str(), r.message.as_str());
    match r.level {
        1 => tracing::error!(target: "mitogen::child", context, source = t, "{m}"),
        2 => tracing::warn!(target: "mitogen::child", context, source = t, "{m}"),
        3 => tracing::info!(target: "mitogen::child", context, source = t, "{m}"),
        4 => tracing::debug!(target: "mitogen::child", context, source = t, "{m}"),
        _ => tracing::trace!(target: "mitogen::child", context, source = t, "{m}"),
    }
}

/// Creates this process's debug log, `/tmp/mitogen.<pid>.log`, or a fresh
/// name beside it when that is taken (see [`crate::tmpfile`]: never
/// through a planted link). Once per process: a second call (a repeated
/// `enable_debug`) gets `None` instead of a second, unused file.
pub(crate) fn debug_file() -> Option<std::fs::File> {
    static OPENED_BY: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // A fork inherits the pid that opened it, not the file: compare pids.
    let me = std::process::id();
    if OPENED_BY.swap(me, Ordering::Relaxed) == me {
        return None;
    }
    let stem = format!("mitogen.{me}");
    match crate::tmpfile::create(std::path::Path::new("/tmp"), &stem, "log") {
        Ok((f, path)) => {
            tracing::debug!("mitogen: debug log in {}", path.display());
            Some(f)
        }
        Err(e) => {
            tracing::warn!("mitogen: cannot create a debug log in /tmp: {e}");
            None
        }
    }
}

/// `enable_debug` in this process: with no subscriber installed yet,
/// install one writing debug records to `/tmp/mitogen.<pid>.log` (or a
/// fresh name beside it, see [`crate::tmpfile`]).
pub(crate) fn enable_debug_file() {
    struct FileLogger(Mutex<std::fs::File>, AtomicU64);
    impl tracing::Subscriber for FileLogger {
        fn enabled(&self, m: &Metadata<'_>) -> bool {
            *m.level() <= Level::DEBUG
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(self.1.fetch_add(1, Ordering::Relaxed))
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, e: &tracing::Event<'_>) {
            let line = format_event(e);
            let _ = writeln!(lock(&self.0), "{} {}", e.metadata().level(), line);
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }
    // With a subscriber already installed the file would stay empty.
    if tracing::dispatcher::has_been_set() {
        return;
    }
    if let Some(f) = debug_file() {
        let _ =
            tracing::subscriber::set_global_default(FileLogger(Mutex::new(f), AtomicU64::new(1)));
    }
}

struct Visitor(String);

impl tracing::field::Visit for Visitor {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            if !self.0.is_empty() {
                self.0.push(' ');
            }
            self.0.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

pub(crate) fn format_event(e: &tracing::Event<'_>) -> String {
    let mut v = Visitor(String::new());
    e.record(&mut v);
    v.0
}
