//! Handles travel: a `Sender` made in a leaf of one branch, passed through
//! the master to a leaf of a sibling branch, works there — unless the
//! master routes unidirectionally, which refuses sibling traffic.

use crate::util::{self, trial, TestResult, TEST_LIMIT, WAIT};
use libtest_mimic::Trial;
use mitogen::{Error, Receiver, Router, Select, Sender};
use std::sync::Mutex;
use std::time::Duration;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("senders::leaf_to_sibling_branch", TEST_LIMIT, || {
            sender_across_branches(false)
        }),
        trial(
            "senders::leaf_to_sibling_branch_unidirectional",
            TEST_LIMIT,
            || sender_across_branches(true),
        ),
        trial(
            "senders::a_sender_returned_through_a_select_works",
            TEST_LIMIT,
            sender_through_select,
        ),
        trial(
            "senders::sender_close_ends_iteration",
            TEST_LIMIT,
            sender_close,
        ),
    ]
}

/// The receiver a leaf keeps for the test's lifetime.
static INBOX: Mutex<Option<Receiver>> = Mutex::new(None);

/// In the receiving leaf: makes an inbox and returns a Sender to it.
#[mitogen::remote]
fn open_inbox(router: &Router) -> Sender {
    let rx = Receiver::open(router);
    let tx = rx.to_sender();
    *INBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    tx
}

/// In the receiving leaf: what the inbox got within `ms`, as text.
#[mitogen::remote]
fn inbox_next(ms: u64) -> Result<String, Error> {
    let guard = INBOX.lock().unwrap_or_else(|e| e.into_inner());
    let rx = guard
        .as_ref()
        .ok_or_else(|| Error::Channel(mitogen::ChannelError::new("no inbox")))?;
    rx.get(Some(Duration::from_millis(ms)))?.decode::<String>()
}

/// In the sending leaf: sends through the Sender it was given.
#[mitogen::remote]
fn send_through(tx: Sender, text: String) -> Result<(), Error> {
    tx.send(&text)
}

fn sender_across_branches(unidirectional: bool) -> TestResult {
    let router = util::router()?;
    router.set_unidirectional(unidirectional);
    let a = router.local().remote_name("branch-a").connect()?;
    let b = router.local().remote_name("branch-b").connect()?;
    let leaf_a = router.local().remote_name("leaf-a").via(&a).connect()?;
    let leaf_b = router.local().remote_name("leaf-b").via(&b).connect()?;
    let tx = leaf_a.call::<open_inbox>(())?;
    ensure!(
        tx.context_id() == leaf_a.context_id(),
        "the Sender names context {} instead of leaf-a {}",
        tx.context_id(),
        leaf_a.context_id()
    );
    leaf_b.call::<send_through>((tx, "hello across".to_string()))?;
    let got = leaf_a.call::<inbox_next>((1000,));
    if unidirectional {
        ensure!(
            matches!(&got, Err(Error::Call(e)) if e.message().contains("timed out")),
            "unidirectional routing let sibling traffic through: {got:?}"
        );
    } else {
        ensure!(
            matches!(&got, Ok(s) if s == "hello across"),
            "the message did not arrive: {got:?}"
        );
    }
    // The tree keeps working either way.
    ensure!(
        leaf_b.call::<open_inbox>(()).is_ok(),
        "leaf-b stopped serving"
    );
    Ok(())
}

#[mitogen::remote]
fn drain_inbox() -> Result<Vec<String>, Error> {
    let guard = INBOX.lock().unwrap_or_else(|e| e.into_inner());
    let rx = guard
        .as_ref()
        .ok_or_else(|| Error::Channel(mitogen::ChannelError::new("no inbox")))?;
    Ok(rx
        .iter()
        .map(|m| m.decode::<String>().unwrap_or_default())
        .collect())
}

/// A Sender closed by its holder ends the receiver's iteration after the
/// messages sent before the close.
fn sender_close() -> TestResult {
    let router = util::router()?;
    let leaf = router.local().connect()?;
    let tx = leaf.call::<open_inbox>(())?;
    for t in ["a", "b", "c"] {
        tx.send(&t.to_string())?;
    }
    tx.close()?;
    let got = util::bounded("drain", WAIT, move || leaf.call::<drain_inbox>(()))??;
    ensure!(got == ["a", "b", "c"], "got {got:?}");
    Ok(())
}

/// A call's answer taken from a `Select` (not from the call's own `get`)
/// still decodes a handle in it bound to this router: the `Sender` sends.
fn sender_through_select() -> TestResult {
    let router = util::router()?;
    let leaf = router.local().remote_name("leaf").connect()?;
    let call = leaf.call_async::<open_inbox>(())?;
    let select = Select::with(std::slice::from_ref(&call), true)?;
    let event = select.get_event(Some(WAIT))?;
    ensure!(event.is_from(&call), "the event names another source");
    let tx: Sender = event.data.decode()?;
    ensure!(
        tx.context_id() == leaf.context_id(),
        "the Sender names context {} instead of the leaf {}",
        tx.context_id(),
        leaf.context_id()
    );
    tx.send(&"through a select")?;
    let got = leaf.call::<inbox_next>((5000,))?;
    ensure!(got == "through a select", "the inbox got {got:?}");
    Ok(())
}
