//! Log forwarding: what a child prints and logs reaches the master as
//! `tracing` events (target `mitogen::child`), from a child, a grandchild,
//! and a context forked from a child.

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use std::io::Write;
use std::sync::{Mutex, OnceLock};

pub fn tests() -> Vec<Trial> {
    vec![
        trial("logs::child_stdout", TEST_LIMIT, child_stdout),
        trial(
            "logs::a_child_first_names_itself_and_its_parent",
            TEST_LIMIT,
            a_child_first_names_itself_and_its_parent,
        ),
        trial(
            "logs::words_before_the_agent_reach_the_log",
            TEST_LIMIT,
            words_before_the_agent_reach_the_log,
        ),
        trial(
            "logs::refusals_name_the_contexts",
            TEST_LIMIT,
            refusals_name_the_contexts,
        ),
        trial("logs::child_tracing", TEST_LIMIT, child_tracing),
        trial("logs::grandchild_tracing", TEST_LIMIT, grandchild_tracing),
        trial(
            "logs::fork_of_child_tracing",
            TEST_LIMIT,
            fork_of_child_tracing,
        ),
        trial(
            "logs::fork_of_master_tracing",
            TEST_LIMIT,
            fork_of_master_tracing,
        ),
    ]
}

/// Everything the master's subscriber wrote, in this test process.
static CAPTURED: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut c = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
        c.push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs the capturing subscriber once per process (before the test's
/// contexts start, so they inherit its INFO level).
fn capture() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

fn seen(marker: &str) -> bool {
    util::wait_for(WAIT, || {
        CAPTURED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(marker)
    })
}

fn marker(what: &str) -> String {
    format!(
        "{what}-{}-{:?}",
        std::process::id(),
        std::time::Instant::now()
    )
}

#[mitogen::remote]
fn print_line(text: String) {
    println!("{text}");
}

#[mitogen::remote]
fn log_warning(text: String) {
    tracing::warn!("{text}");
}

fn child_stdout() -> TestResult {
    capture();
    let router = util::router()?;
    let c = router.local().connect()?;
    let m = marker("stdout");
    c.call::<print_line>((m.clone(),))?;
    ensure!(seen(&m), "the child's stdout line never reached the master");
    Ok(())
}

fn child_tracing() -> TestResult {
    capture();
    let router = util::router()?;
    let c = router.local().connect()?;
    let m = marker("warn");
    c.call::<log_warning>((m.clone(),))?;
    ensure!(seen(&m), "the child's warning never reached the master");
    let text = CAPTURED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let line = text.lines().find(|l| l.contains(&m)).unwrap_or_default();
    ensure!(line.contains("WARN"), "level lost: {line}");
    ensure!(line.contains("mitogen::child"), "target lost: {line}");
    Ok(())
}

fn grandchild_tracing() -> TestResult {
    capture();
    let router = util::router()?;
    let a = router.local().connect()?;
    let b = router.local().via(&a).connect()?;
    let m = marker("grandchild");
    b.call::<log_warning>((m.clone(),))?;
    ensure!(
        seen(&m),
        "the grandchild's warning never reached the master"
    );
    Ok(())
}

fn fork_of_child_tracing() -> TestResult {
    capture();
    let router = util::router()?;
    let a = router.local().connect()?;
    let f = router.fork().via(&a).connect()?;
    let m = marker("forked");
    f.call::<log_warning>((m.clone(),))?;
    ensure!(
        seen(&m),
        "the warning of a fork of a child never reached the master"
    );
    Ok(())
}

/// A fork of the master inherits the master's own subscriber (here one
/// writing to memory, which in the fork is the fork's copy): its events
/// must be forwarded like any child's instead, from the thread running
/// calls and from its broker thread.
fn fork_of_master_tracing() -> TestResult {
    capture();
    let router = util::router()?;
    let f = router.fork().connect()?;
    let m = marker("master-fork");
    f.call::<log_warning>((m.clone(),))?;
    ensure!(
        seen(&m),
        "the warning of a fork of the master never arrived"
    );
    let text = CAPTURED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let line = text.lines().find(|l| l.contains(&m)).unwrap_or_default();
    ensure!(
        line.contains("WARN") && line.contains("mitogen::child"),
        "not forwarded as a record: {line}"
    );
    Ok(())
}

static INBOX: Mutex<Option<mitogen::Receiver>> = Mutex::new(None);

/// Opens a receiver in this context and returns a sender to it.
#[mitogen::remote]
fn open_inbox(router: &mitogen::Router) -> mitogen::Sender {
    let rx = mitogen::Receiver::open(router);
    let tx = rx.to_sender();
    *INBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    tx
}

#[mitogen::remote]
fn send_text(tx: mitogen::Sender, text: String) -> mitogen::Result<()> {
    tx.send(&text)
}

/// Before: a unidirectional refusal and an oversized message were
/// answered dead without a word in the log of the router that refused.
fn refusals_name_the_contexts() -> TestResult {
    capture();
    let router = util::router()?;
    router.set_unidirectional(true);
    let a = router.local().remote_name("refuse-a").connect()?;
    let b = router.local().remote_name("refuse-b").connect()?;
    let tx = a.call::<open_inbox>(())?;
    b.call::<send_text>((tx, "across".into()))?;
    let (ida, idb) = (a.context_id(), b.context_id());
    let expect = format!("unidirectional routing refused a message from context \"{}\" (id {idb}) to context \"{}\" (id {ida})", b.name(), a.name());
    ensure!(seen(&expect), "no log line {expect:?}");
    // An oversized message to a local handle is refused like any other,
    // and logged with its size and both ends.
    router.set_max_payload_size(1000);
    let rx = mitogen::Receiver::open(&router);
    let r = rx.to_sender().send_bytes(vec![0u8; 4321]);
    ensure!(
        matches!(&r, Err(mitogen::Error::Channel(e)) if e.reason().contains("max_payload_size")),
        "a local message over the bound: {r:?}"
    );
    ensure!(
        seen("refused a message of 4321 bytes from context \"master\" (id 0) to context \"master\" (id 0)"),
        "no log line for the oversized message"
    );
    Ok(())
}

/// Before: nothing in the master's log said which version a child runs
/// and who its parent is.
fn a_child_first_names_itself_and_its_parent() -> TestResult {
    capture();
    let router = util::router()?;
    let a = router.local().remote_name("first-a").connect()?;
    let b = router.local().via(&a).connect()?;
    let parent_of_b = format!("context {} ({})", a.context_id(), a.name());
    for (ctx, parent) in [(&a, "context 0 (master)"), (&b, parent_of_b.as_str())] {
        let head = format!(
            "mitogen {} context {} (",
            mitogen::VERSION,
            ctx.context_id()
        );
        let tail = format!(
            ") serving as pid {}; parent is {parent}",
            ctx.call::<util::pid>(())?
        );
        let found = util::wait_for(WAIT, || {
            let text = CAPTURED.lock().unwrap_or_else(|e| e.into_inner());
            text.lines().any(|l| l.contains(&head) && l.contains(&tail))
        });
        ensure!(found, "no log line {head}...{tail}");
    }
    Ok(())
}

/// Before: what a wrapper (`agent_command`) printed before the agent ran
/// was read by the bootstrap and, on success, dropped.
fn words_before_the_agent_reach_the_log() -> TestResult {
    capture();
    let router = util::router()?;
    for i in 0..3 {
        let m = marker(&format!("early{i}"));
        let wrapper = format!("echo {m} >&2; exec \"$0\" \"$@\"");
        let ctx = router
            .local()
            .agent_command(["sh", "-c", wrapper.as_str()])
            .connect()?;
        ensure!(ctx.call::<util::pid>(()).is_ok(), "the context works");
        ensure!(seen(&m), "the wrapper's line {m:?} never reached the log");
    }
    Ok(())
}
