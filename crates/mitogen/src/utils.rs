//! Utilities of the seed's `mitogen.utils`: [`run_with_router`] (and the
//! `#[with_router]` attribute), [`cast`] and the dynamic [`Value`], and
//! [`log_to_file`].
//!
//! Most calls are typed: `ctx.call::<f>(args)` checks arguments and result
//! at compile time. Programs that decide at run time what to call — a
//! task runner reading a playbook, say — use
//! [`crate::Context::call_by_name`] with [`Value`]s instead; [`cast`] turns
//! any serde value into one.

use crate::error::{CodecError, CodecOp, Result};
use crate::router::Router;
use serde::Serialize;

/// A dynamically typed value: what any MessagePack payload decodes to.
/// (This is `rmpv::Value`; `Value::from(3)`, `Value::from("text")`,
/// `Value::Array(..)`, `Value::Map(..)` build one.)
pub use rmpv::Value;

/// Converts any serializable value into a [`Value`] — the plain data it
/// will be on the wire (structs become maps, tuples arrays, newtypes their
/// inner value).
///
/// ```
/// #[derive(serde::Serialize)]
/// struct Disk { path: &'static str, free: u64 }
///
/// let v = mitogen::cast(&Disk { path: "/", free: 42 }).unwrap();
/// assert_eq!(v["path"].as_str(), Some("/"));
/// assert_eq!(v["free"].as_u64(), Some(42));
/// ```
pub fn cast<T: Serialize + ?Sized>(value: &T) -> Result<Value> {
    let bytes = crate::message::to_msgpack(value)?;
    rmpv::decode::read_value(&mut bytes.as_slice())
        .map_err(|e| CodecError::new(CodecOp::Decode, "mitogen::Value", e).into())
}

/// Runs `f` with a new router (and broker), then shuts them down — every
/// context started inside is stopped — and returns what `f` returned. The
/// attribute form is [`crate::with_router`].
///
/// Unlike [`crate::main()`], this does not make the program a possible
/// context: the program still needs `mitogen::main` for children to start.
/// Use it for a router with a lifetime shorter than the program's.
///
/// ```
/// #[mitogen::remote]
/// fn answer() -> u32 { 42 }
///
/// #[mitogen::main]
/// fn main(_router: mitogen::Router) -> mitogen::Result<()> {
///     let got = mitogen::run_with_router(|router| {
///         let ctx = router.local().connect()?;
///         mitogen::call!(ctx, answer())
///     })??;
///     assert_eq!(got, 42);
///     Ok(())
/// }
/// ```
pub fn run_with_router<R>(f: impl FnOnce(Router) -> R) -> Result<R> {
    let router = Router::new()?;
    let broker = router.broker().clone();
    let r = f(router);
    broker.shutdown();
    broker.join();
    Ok(r)
}

/// Sends this process's logs — and, in the master, every child's, which
/// arrive as `tracing` events of target `mitogen::child` — to `path`
/// (appended; `None`: standard error), at `level` and above. One line per
/// record with time, level, thread and target.
///
/// Installs a global `tracing` subscriber, so it fails if one is already
/// installed; programs with their own subscriber need not call it.
///
/// ```
/// let path = std::env::temp_dir().join(format!("mitogen-doc-{}.log", std::process::id()));
/// mitogen::log_to_file(Some(&path), tracing::Level::INFO).unwrap();
/// tracing::info!("hello");
/// let text = std::fs::read_to_string(&path).unwrap();
/// assert!(text.contains("hello"));
/// # std::fs::remove_file(&path).ok();
/// ```
pub fn log_to_file(path: Option<&std::path::Path>, level: tracing::Level) -> Result<()> {
    use crate::error::StreamError;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_thread_names(true)
        .with_ansi(false);
    let installed = match path {
        None => builder.with_writer(std::io::stderr).try_init(),
        Some(p) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| {
                    StreamError::new(format!("cannot open log file {}: {e}", p.display()))
                })?;
            builder.with_writer(std::sync::Mutex::new(file)).try_init()
        }
    };
    installed.map_err(|e| StreamError::new(format!("cannot install the logger: {e}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_keeps_the_shape() {
        let v = cast(&(1u8, "two", vec![3.5f64], Option::<u8>::None)).unwrap();
        let a = v.as_array().unwrap();
        assert_eq!(a[0].as_u64(), Some(1));
        assert_eq!(a[1].as_str(), Some("two"));
        assert_eq!(a[2][0].as_f64(), Some(3.5));
        assert!(a[3].is_nil());
        let round: (u8, String, Vec<f64>, Option<u8>) =
            crate::message::from_msgpack(&crate::message::to_msgpack(&v).unwrap()).unwrap();
        assert_eq!(round, (1, "two".into(), vec![3.5], None));
    }

    #[test]
    fn run_with_router_stops_its_broker() {
        let mut kept = None;
        let r = run_with_router(|router| {
            kept = Some(router.broker().clone());
            7
        })
        .unwrap();
        assert_eq!(r, 7);
        assert!(kept.unwrap().is_stopped());
    }
}
