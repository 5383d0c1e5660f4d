//! Errors: remote errors with their type, message and source chain;
//! panics; a context dying mid-call; timeouts; calls after shutdown.

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use crate::util::{pid, sleep_ms};
use libtest_mimic::Trial;
use mitogen::Error;
use std::fmt;
use std::time::{Duration, Instant};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("errors::io_error", TEST_LIMIT, io_error),
        trial("errors::source_chain", TEST_LIMIT, source_chain),
        trial("errors::panic_then_serve", TEST_LIMIT, panic_then_serve),
        trial(
            "errors::debug_gives_full_backtraces",
            TEST_LIMIT,
            debug_gives_full_backtraces,
        ),
        trial("errors::killed_mid_call", TEST_LIMIT, killed_mid_call),
        trial(
            "errors::pending_call_timeout",
            TEST_LIMIT,
            pending_call_timeout,
        ),
        trial(
            "errors::call_after_shutdown",
            TEST_LIMIT,
            call_after_shutdown,
        ),
        trial(
            "errors::unserializable_result",
            TEST_LIMIT,
            unserializable_result,
        ),
        trial(
            "errors::unserializable_argument_no_reply",
            TEST_LIMIT,
            unserializable_argument_no_reply,
        ),
        trial("errors::oversized_argument", TEST_LIMIT, oversized_argument),
        trial(
            "errors::child_calls_master_fails",
            TEST_LIMIT,
            child_calls_master_fails,
        ),
        trial(
            "errors::reply_of_the_wrong_type",
            TEST_LIMIT,
            reply_of_the_wrong_type,
        ),
        // Former library bugs (hangs, a doubled message), kept as regression tests.
        trial(
            "errors::regression::unserializable_argument_fails_call",
            TEST_LIMIT,
            unserializable_argument_fails_call,
        ),
        trial(
            "errors::regression::oversized_result_fails_call",
            TEST_LIMIT,
            oversized_result_fails_call,
        ),
    ]
}

/// A value whose serialization always fails.
#[derive(Debug)]
pub struct Unserializable;

impl serde::Serialize for Unserializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("refusing to serialize"))
    }
}

impl<'de> serde::Deserialize<'de> for Unserializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Unserializable)
    }
}

#[mitogen::remote]
fn make_unserializable() -> Unserializable {
    Unserializable
}

#[mitogen::remote]
fn take_unserializable(_v: Unserializable) -> u32 {
    1
}

#[mitogen::remote]
fn make_bytes(n: usize) -> mitogen::ByteBuf {
    mitogen::ByteBuf::from(vec![7u8; n])
}

#[mitogen::remote]
fn byte_len(v: mitogen::ByteBuf) -> usize {
    v.len()
}

/// Calls `add` in the master from a child: the master serves no calls.
#[mitogen::remote]
fn call_master(econtext: &mitogen::ExternalContext) -> String {
    match econtext
        .master()
        .call_async::<add>((1, 2))
        .and_then(|p| p.get(Some(Duration::from_secs(10))))
    {
        Ok(v) => format!("ok {v}"),
        Err(Error::Timeout(e)) => format!("timeout {e}"),
        Err(e) => format!("error {e}"),
    }
}

#[mitogen::remote]
fn open_missing(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Outermost error of a three-level chain.
#[derive(Debug)]
pub struct ReportError {
    source: SpoolError,
}

/// Middle of the chain.
#[derive(Debug)]
pub struct SpoolError {
    source: std::io::Error,
}

impl fmt::Display for ReportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("saving the report failed")
    }
}

impl fmt::Display for SpoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("opening the spool failed")
    }
}

impl std::error::Error for ReportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl std::error::Error for SpoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

#[mitogen::remote]
fn save_report(fail: bool) -> Result<u32, ReportError> {
    if !fail {
        return Ok(1);
    }
    Err(ReportError {
        source: SpoolError {
            source: std::io::Error::other("disk on fire"),
        },
    })
}

#[mitogen::remote]
fn explode(what: String) -> u32 {
    panic!("kaboom: {what}")
}

#[mitogen::remote]
fn explode_with_number() -> u32 {
    std::panic::panic_any(42u32)
}

#[mitogen::remote]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

fn io_error() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let err = ctx.call::<open_missing>(("/nonexistent/mitogen-errors-test".into(),));
    let Err(Error::Call(e)) = err else {
        return Err(format!("expected Error::Call, got {err:?}").into());
    };
    ensure!(
        e.type_name().contains("io"),
        "type name {:?} does not name io",
        e.type_name()
    );
    ensure!(
        e.message().contains("No such file or directory"),
        "message {:?}",
        e.message()
    );
    let shown = e.to_string();
    ensure!(
        shown.contains(e.type_name()) && shown.contains(e.message()),
        "Display {shown:?}"
    );
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}

fn source_chain() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ensure!(ctx.call::<save_report>((false,))? == 1, "success path");
    let err = ctx.call::<save_report>((true,));
    let Err(Error::Call(e)) = err else {
        return Err(format!("expected Error::Call, got {err:?}").into());
    };
    ensure!(
        e.type_name().ends_with("ReportError"),
        "type name {:?}",
        e.type_name()
    );
    ensure!(
        e.message() == "saving the report failed",
        "message {:?}",
        e.message()
    );
    ensure!(
        e.chain() == ["opening the spool failed", "disk on fire"],
        "chain {:?}",
        e.chain()
    );
    let shown = Error::Call(e.clone()).to_string();
    ensure!(
        shown.contains("saving the report failed")
            && shown.contains("opening the spool failed")
            && shown.contains("disk on fire"),
        "Display {shown:?}"
    );
    Ok(())
}

fn panic_then_serve() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("panicky").connect()?;
    let pid = ctx.call::<pid>(())?;
    let err = ctx.call::<explode>(("left wire".into(),));
    let Err(Error::Call(e)) = err else {
        return Err(format!("expected Error::Call, got {err:?}").into());
    };
    ensure!(e.type_name() == "panic", "type name {:?}", e.type_name());
    ensure!(
        e.message().contains("kaboom: left wire"),
        "message {:?}",
        e.message()
    );
    // The function and where it panicked, whatever RUST_BACKTRACE is.
    ensure!(
        e.message().contains("explode panicked at ")
            && e.message().contains("tests/core/errors.rs:"),
        "message {:?}",
        e.message()
    );
    ensure!(ctx.call::<add>((2, 2))? == 4, "call after a panic");

    let err = ctx.call::<explode_with_number>(());
    let Err(Error::Call(e)) = err else {
        return Err(format!("expected Error::Call, got {err:?}").into());
    };
    ensure!(e.type_name() == "panic", "type name {:?}", e.type_name());
    // Still the same process serving.
    ensure!(ctx.call::<pid>(())? == pid, "the context was replaced");
    ensure!(ctx.call::<add>((3, 3))? == 6, "call after a second panic");
    Ok(())
}

/// A context started with `debug` puts a full backtrace in error results
/// and panics, whatever RUST_BACKTRACE says; without it, none (the test
/// environment does not set RUST_BACKTRACE for children).
fn debug_gives_full_backtraces() -> TestResult {
    let router = util::router()?;
    let plain = router.local().connect()?;
    let Err(Error::Call(e)) = plain.call::<explode>(("quiet".into(),)) else {
        return Err("expected a CallError".into());
    };
    if std::env::var_os("RUST_BACKTRACE").is_none() {
        ensure!(e.backtrace().is_none(), "a backtrace without debug");
    }
    let verbose = router.local().debug(true).connect()?;
    let Err(Error::Call(e)) = verbose.call::<explode>(("loud".into(),)) else {
        return Err("expected a CallError".into());
    };
    let bt = e.backtrace().unwrap_or_default();
    ensure!(bt.contains("explode"), "the panic's backtrace: {bt:?}");
    let Err(Error::Call(e)) = verbose.call::<open_missing>(("/nonexistent/x".into(),)) else {
        return Err("expected a CallError".into());
    };
    ensure!(e.backtrace().is_some(), "no backtrace for an error result");
    Ok(())
}

fn killed_mid_call() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("doomed").connect()?;
    let pid = ctx.call::<pid>(())?;
    let pending = ctx.call_async::<sleep_ms>((30_000,))?;
    // Queued behind it, and awaited as a future on another thread.
    let queued = ctx.call_async::<add>((1, 1))?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(queued));
    });
    std::thread::sleep(Duration::from_millis(200));
    ensure!(!pending.ready(), "the 30 s call finished early");
    util::kill9(pid)?;
    let t = Instant::now();
    let r = pending.get(Some(Duration::from_secs(10)));
    let took = t.elapsed();
    match &r {
        Err(Error::Channel(e)) => ensure!(
            e.reason().contains("disconnected"),
            "reason {:?} does not name the disconnect",
            e.reason()
        ),
        other => return Err(format!("expected Error::Channel, got {other:?}").into()),
    }
    ensure!(took < Duration::from_secs(5), "the failure took {took:?}");
    let queued = rx
        .recv_timeout(Duration::from_secs(5))
        .map_err(|_| "the awaited call did not fail within 5 s")?;
    ensure!(
        matches!(&queued, Err(Error::Channel(e)) if e.reason().contains("disconnected")),
        "awaited call: {queued:?}"
    );
    ensure!(
        util::wait_for(WAIT, || !ctx.is_connected()),
        "still connected"
    );
    // Later calls fail at once too.
    let c = ctx.clone();
    let r = util::bounded("a call to a dead context", WAIT, move || {
        c.call::<add>((1, 1))
    })?;
    ensure!(
        matches!(r, Err(Error::Channel(_))),
        "call to dead context: {r:?}"
    );
    // The router reaped it.
    util::wait_exited(pid, Duration::from_secs(5), false)?;
    Ok(())
}

fn pending_call_timeout() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let p = ctx.call_async::<sleep_ms>((1500,))?;
    let t = Instant::now();
    let r = p.get(Some(Duration::from_millis(100)));
    let took = t.elapsed();
    match &r {
        Err(Error::Timeout(e)) => {
            ensure!(
                e.after() == Duration::from_millis(100),
                "after {:?}",
                e.after()
            )
        }
        other => return Err(format!("expected Error::Timeout, got {other:?}").into()),
    }
    ensure!(
        took >= Duration::from_millis(100) && took < Duration::from_millis(1400),
        "get(100 ms) returned after {took:?}"
    );
    // The call still completes and can be collected afterwards.
    ensure!(p.get(Some(WAIT))? == 1500, "late result");
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}

fn call_after_shutdown() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().remote_name("short-lived").connect()?;
    let pid = ctx.call::<pid>(())?;
    ctx.shutdown(true, Some(WAIT))?;
    ensure!(!ctx.is_connected(), "connected after shutdown(wait)");
    let c = ctx.clone();
    let r = util::bounded("a call after shutdown", WAIT, move || c.call::<add>((1, 1)))?;
    ensure!(r.is_err(), "call after shutdown returned {r:?}");
    let c = ctx.clone();
    let r = util::bounded("call_async after shutdown", WAIT, move || {
        c.call_async::<add>((1, 1)).and_then(|p| p.get(Some(WAIT)))
    })?;
    ensure!(
        !matches!(r, Err(Error::Timeout(_))) && r.is_err(),
        "call_async after shutdown: {r:?}"
    );
    let c = ctx.clone();
    util::bounded("a second shutdown", WAIT, move || {
        c.shutdown(true, Some(Duration::from_secs(5)))
    })?
    .ok();
    util::wait_exited(pid, Duration::from_secs(5), false)?;
    Ok(())
}

fn unserializable_result() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let r = ctx.call_async::<make_unserializable>(())?.get(Some(WAIT));
    let Err(Error::Call(e)) = r else {
        return Err(format!("expected Error::Call, got {r:?}").into());
    };
    ensure!(
        e.type_name() == "mitogen::EncodeError",
        "type name {:?}",
        e.type_name()
    );
    ensure!(
        e.message().contains("refusing to serialize"),
        "message {:?}",
        e.message()
    );
    // Regression: the message used to repeat the type name
    // ("mitogen::EncodeError: mitogen::EncodeError: ...").
    ensure!(
        !e.message().starts_with(e.type_name()),
        "message {:?} repeats the type name",
        e.message()
    );
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}

fn unserializable_argument_no_reply() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let r = ctx.call_no_reply::<take_unserializable>((Unserializable,));
    local_encode_failure(&r)?;
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}

fn oversized_argument() -> TestResult {
    let router = util::router()?;
    // Frames are limited to 64 KiB: a larger argument travels as several.
    router.set_max_message_size(64 * 1024);
    let ctx = router.local().connect()?;
    let small = mitogen::ByteBuf::from(vec![1u8; 1000]);
    ensure!(ctx.call::<byte_len>((small,))? == 1000, "small argument");
    let big = mitogen::ByteBuf::from(vec![1u8; 300_000]);
    ensure!(
        ctx.call::<byte_len>((big.clone(),))? == 300_000,
        "an argument of several frames"
    );
    // A message over max_payload_size is refused before sending:
    // call_async itself reports it.
    router.set_max_payload_size(100_000);
    let r = ctx
        .call_async::<byte_len>((big,))
        .and_then(|p| p.get(Some(WAIT)));
    match &r {
        Err(Error::Channel(e)) => ensure!(
            e.reason().contains("max_payload_size"),
            "reason {:?}",
            e.reason()
        ),
        other => return Err(format!("expected Error::Channel, got {other:?}").into()),
    }
    ensure!(ctx.is_connected(), "the link was dropped");
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}

fn child_calls_master_fails() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let r = ctx.call::<call_master>(())?;
    ensure!(r.starts_with("error "), "a call to the master gave {r:?}");
    // Also from a grandchild, whose route to the master crosses a child.
    let g = router.local().via(&ctx).connect()?;
    let r = g.call::<call_master>(())?;
    ensure!(r.starts_with("error "), "from a grandchild: {r:?}");
    Ok(())
}

/// Regression: `call_async` with an argument whose serialization fails
/// used to return a `PendingCall` that never completed (nothing bounced,
/// as no message existed). It now returns the `EncodeError` at once.
fn unserializable_argument_fails_call() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let r = ctx
        .call_async::<take_unserializable>((Unserializable,))
        .and_then(|p| p.get(Some(Duration::from_secs(5))));
    local_encode_failure(&r)?;
    Ok(())
}

/// An argument that cannot be encoded fails here, as a [`CodecError`]
/// keeping the serializer's error as its source — not as a `CallError`,
/// which would say the remote side failed.
fn local_encode_failure<T: std::fmt::Debug>(r: &mitogen::Result<T>) -> TestResult {
    let Err(Error::Codec(e)) = r else {
        return Err(format!("expected Error::Codec, got {r:?}").into());
    };
    ensure!(e.op() == mitogen::CodecOp::Encode, "op {:?}", e.op());
    ensure!(
        e.type_name().contains("Unserializable"),
        "type {}",
        e.type_name()
    );
    let source = std::error::Error::source(e).map(|s| s.to_string());
    ensure!(
        source
            .as_deref()
            .is_some_and(|s| s.contains("refusing to serialize")),
        "source {source:?}"
    );
    Ok(())
}

/// A result that does not decode into the type the caller asked for is a
/// local [`CodecError`] naming that type; the context is fine.
fn reply_of_the_wrong_type() -> TestResult {
    use mitogen::RemoteFn;
    let router = util::router()?;
    let ctx = router.local().connect()?;
    // `call_master` returns a String.
    let got = ctx.call_by_name::<u64>(<call_master as RemoteFn>::NAME, &());
    let Err(Error::Codec(e)) = &got else {
        return Err(format!("expected Error::Codec, got {got:?}").into());
    };
    ensure!(e.op() == mitogen::CodecOp::Decode, "op {:?}", e.op());
    ensure!(e.type_name() == "u64", "type {}", e.type_name());
    ensure!(std::error::Error::source(e).is_some(), "no source kept");
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}

/// Regression: a result larger than the limit used to vanish (the
/// refusal went to the reply's own `reply_to`, 0), leaving `call` blocked
/// forever. The dispatcher now sends a `ReplyError` instead. The limit is
/// `max_payload_size` (inherited by the child); a result merely larger
/// than a frame (`max_message_size`) travels in several.
fn oversized_result_fails_call() -> TestResult {
    let router = util::router()?;
    router.set_max_message_size(16 * 1024);
    router.set_max_payload_size(64 * 1024);
    let ctx = router.local().connect()?;
    ensure!(
        ctx.call::<make_bytes>((50_000,))?.len() == 50_000,
        "a result of several frames"
    );
    let r = ctx
        .call_async::<make_bytes>((100_000,))?
        .get(Some(Duration::from_secs(10)));
    match &r {
        Err(Error::Timeout(_)) => {
            return Err("an oversized result left the caller waiting (timed out after 10 s)".into())
        }
        Err(e) => ensure!(
            e.to_string().contains("max_payload_size"),
            "error {e} does not name the limit"
        ),
        Ok(v) => return Err(format!("{} bytes arrived over the limit", v.len()).into()),
    }
    ensure!(ctx.call::<add>((1, 2))? == 3, "next call");
    Ok(())
}
