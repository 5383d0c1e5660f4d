//! Log forwarding: children's `tracing` events and their stdout/stderr
//! lines travel to the master as `FORWARD_LOG` messages and are re-emitted
//! there as `tracing` events with target `mitogen::child` and a `context`
//! field naming the sender.
//!
//! A child installs [`ChildLogger`] as its global subscriber before user
//! code runs; the master keeps whatever subscriber its program installed.
//! A fork already has a global subscriber (its parent's, copied), so there
//! the logger becomes the default of the runtime's own threads instead.

pub(crate) mod record;

use record::{debug_file, format_event, u8_to_filter};
pub(crate) use record::{filter_to_u8, level_to_u8, Record};

use crate::broker::Loop;
use crate::frame::handle;
use crate::message::Message;
use crate::router::Core;
use crate::sync::lock;
use std::cell::Cell;
use std::io::Write as _;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use tracing::level_filters::LevelFilter;
use tracing::{Level, Metadata};

thread_local! {
    /// Set while a record is being sent, so logging done by the send path
    /// itself is dropped instead of recursing.
    static SENDING: Cell<bool> = const { Cell::new(false) };
}

/// The router records are forwarded through. It lives outside the
/// subscriber because the global subscriber cannot be replaced: a context
/// forked from a child inherits its parent's `ChildLogger`, which must then
/// forward through the fork's own router, not the parent's copy. An atomic
/// pointer to a leaked `Weak` (one per context start) keeps reads lock-free
/// and fork-safe.
static LOG_CORE: AtomicPtr<Weak<Core>> = AtomicPtr::new(std::ptr::null_mut());

fn set_log_core(core: &Arc<Core>) {
    let leaked: &'static mut Weak<Core> = Box::leak(Box::new(Arc::downgrade(core)));
    LOG_CORE.store(leaked, Ordering::Release);
}

fn log_core() -> Option<Arc<Core>> {
    let p = LOG_CORE.load(Ordering::Acquire);
    // SAFETY: only `set_log_core` stores here, a leaked, never-freed Weak.
    (!p.is_null())
        .then(|| unsafe { &*p })
        .and_then(Weak::upgrade)
}

/// The subscriber of a child context: forwards events to the master and,
/// with `debug`, also writes them to `/tmp/mitogen.<pid>.log` (created
/// new, mode 0600; another name if that one is taken).
pub(crate) struct ChildLogger {
    level: LevelFilter,
    file: Option<Mutex<std::fs::File>>,
    next_span: AtomicU64,
}

impl ChildLogger {
    pub(crate) fn install(core: &Arc<Core>, level: u8, debug: bool) {
        set_log_core(core);
        let level = if debug {
            LevelFilter::DEBUG.max(u8_to_filter(level))
        } else {
            u8_to_filter(level)
        };
        let logger = ChildLogger {
            level,
            file: debug.then(debug_file).flatten().map(Mutex::new),
            next_span: AtomicU64::new(1),
        };
        let dispatch = tracing::Dispatch::new(logger);
        if tracing::dispatcher::set_global_default(dispatch.clone()).is_err() {
            // A fork inherits its parent's global subscriber, which writes
            // where the parent's did (a terminal, or memory that is now a
            // copy). The threads the runtime runs here use this logger
            // instead: this one (on_start, then every call) and the broker.
            // The guards live as long as the process.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            core.broker
                .defer(move || std::mem::forget(tracing::dispatcher::set_default(&dispatch)))
                .ok();
        }
    }
}

/// Records not forwarded because the link to the parent was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Sends a record to the master from a child. Never waits: when the link
/// to the parent is full (a flood of log lines, a stalled parent), the
/// record is dropped and counted, and the next record that gets through
/// is preceded by one saying how many were lost.
pub(crate) fn forward(core: &Arc<Core>, level: u8, target: &str, message: String) {
    if SENDING.with(|s| s.replace(true)) {
        return;
    }
    let dropped = DROPPED.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let note = Record {
            level: level_to_u8(Level::WARN),
            target: "mitogen".to_string(),
            message: format!("{dropped} log records dropped: the link to the parent was full"),
        };
        if !try_forward(core, &note) {
            DROPPED.fetch_add(dropped, Ordering::Relaxed);
        }
    }
    let rec = Record {
        level,
        target: target.to_string(),
        message,
    };
    if !try_forward(core, &rec) {
        DROPPED.fetch_add(1, Ordering::Relaxed);
    }
    SENDING.with(|s| s.set(false));
}

fn try_forward(core: &Arc<Core>, rec: &Record) -> bool {
    let Ok(m) = Message::encode(rec) else {
        return true;
    };
    let m = m.to(crate::identity::MASTER_ID, handle::FORWARD_LOG);
    match core.send_with(m, crate::link::Mode::Try, None) {
        Ok(()) => true,
        Err(crate::Error::Stream(e)) => e.kind() != Some(std::io::ErrorKind::WouldBlock),
        Err(_) => true,
    }
}

impl tracing::Subscriber for ChildLogger {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= self.level && !SENDING.with(|s| s.get())
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.level)
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let text = format_event(e);
        let md = e.metadata();
        if let Some(f) = &self.file {
            let _ = writeln!(lock(f), "{} {} {}", md.level(), md.target(), text);
        }
        if let Some(core) = log_core() {
            forward(&core, level_to_u8(*md.level()), md.target(), text);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// Watches `fd` (a pipe) on the broker and hands each complete line to
/// `on_line`; a partial last line is flushed at end of file.
/// Longest line held while waiting for its newline.
const MAX_LINE: usize = 64 << 10;

pub(crate) fn watch_lines(
    lp: &mut Loop,
    fd: std::os::fd::OwnedFd,
    mut on_line: impl FnMut(&str) + Send + 'static,
) {
    let fd = crate::process::TrackedFd::new(fd);
    let raw: RawFd = std::os::fd::AsRawFd::as_raw_fd(&fd);
    if let Err(e) = crate::process::set_nonblocking(raw) {
        tracing::warn!("mitogen: cannot watch fd {raw}: {e}");
        return;
    }
    let mut pending: Vec<u8> = Vec::new();
    lp.register(
        raw,
        mio::Interest::READABLE,
        Box::new(move |lp, _| {
            let mut chunk = [0u8; 8192];
            loop {
                // SAFETY: reading into a stack buffer of the given length.
                let n = unsafe {
                    libc::read(raw, chunk.as_mut_ptr() as *mut libc::c_void, chunk.len())
                };
                if n > 0 {
                    pending.extend_from_slice(&chunk[..n as usize]);
                    while let Some(i) = pending.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=i).collect();
                        on_line(String::from_utf8_lossy(&line).trim_end());
                    }
                    if pending.len() > MAX_LINE {
                        // Output without newlines: pass it on in pieces
                        // rather than holding it without bound.
                        on_line(String::from_utf8_lossy(&pending).trim_end());
                        pending.clear();
                    }
                    continue;
                }
                let err = std::io::Error::last_os_error();
                if n < 0 && err.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if n < 0 && err.kind() == std::io::ErrorKind::WouldBlock {
                    return true;
                }
                if !pending.is_empty() {
                    on_line(String::from_utf8_lossy(&pending).trim_end());
                }
                let _ = lp.registry_deregister(raw);
                let _keep_open_until_now = &fd;
                return false;
            }
        }),
    );
}
