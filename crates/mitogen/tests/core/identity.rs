//! Identity: `is_master`, `context_id`, `parent_id`, `parent_ids` and
//! `VERSION`, in the master, a child and a grandchild.

use crate::util::{self, trial, TestResult, TEST_LIMIT};
use libtest_mimic::Trial;

pub fn tests() -> Vec<Trial> {
    vec![
        trial("identity::master", TEST_LIMIT, master),
        trial("identity::child", TEST_LIMIT, child),
        trial("identity::grandchild", TEST_LIMIT, grandchild),
        trial("identity::ids_are_unique", TEST_LIMIT, ids_are_unique),
        trial(
            "identity::a_message_built_in_a_child_is_from_it",
            TEST_LIMIT,
            a_message_built_in_a_child_is_from_it,
        ),
        trial(
            "identity::ids_come_in_blocks_and_a_flood_is_refused",
            TEST_LIMIT,
            ids_come_in_blocks_and_a_flood_is_refused,
        ),
        trial(
            "identity::a_child_may_call_itself",
            TEST_LIMIT,
            a_child_may_call_itself,
        ),
        trial(
            "identity::a_context_may_receive_itself",
            TEST_LIMIT,
            a_context_may_receive_itself,
        ),
    ]
}

/// Everything a context knows about itself.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Who {
    is_master: bool,
    context_id: u32,
    parent_id: Option<u32>,
    parent_ids: Vec<u32>,
    version: String,
    router_id: u32,
}

#[mitogen::remote]
fn who(router: &mitogen::Router) -> Who {
    Who {
        is_master: mitogen::is_master(),
        context_id: mitogen::context_id(),
        parent_id: mitogen::parent_id(),
        parent_ids: mitogen::parent_ids().to_vec(),
        version: mitogen::VERSION.to_string(),
        router_id: router.context_id(),
    }
}

/// Starts a grandchild from inside a child and reports on it.
#[mitogen::remote]
fn grandchild_who(router: &mitogen::Router) -> mitogen::Result<(u32, Who)> {
    let g = router.local().remote_name("inner-grandchild").connect()?;
    Ok((g.context_id(), g.call::<who>(())?))
}

fn master() -> TestResult {
    ensure!(mitogen::is_master(), "is_master() is false in the master");
    ensure!(
        mitogen::context_id() == 0,
        "context_id {}",
        mitogen::context_id()
    );
    ensure!(mitogen::context_id() == mitogen::MASTER_ID, "MASTER_ID");
    ensure!(
        mitogen::parent_id().is_none(),
        "parent_id {:?}",
        mitogen::parent_id()
    );
    ensure!(
        mitogen::parent_ids().is_empty(),
        "parent_ids {:?}",
        mitogen::parent_ids()
    );
    ensure!(!mitogen::VERSION.is_empty(), "empty VERSION");
    ensure!(
        mitogen::VERSION.split('.').count() >= 3,
        "VERSION {:?} is not a version",
        mitogen::VERSION
    );
    let router = util::router()?;
    ensure!(
        router.context_id() == 0,
        "router id {}",
        router.context_id()
    );
    Ok(())
}

fn child() -> TestResult {
    let router = util::router()?;
    for ctx in [router.local().connect()?, router.fork().connect()?] {
        let w = ctx.call::<who>(())?;
        let want = Who {
            is_master: false,
            context_id: ctx.context_id(),
            parent_id: Some(0),
            parent_ids: vec![0],
            version: mitogen::VERSION.to_string(),
            router_id: ctx.context_id(),
        };
        ensure!(w == want, "{}: {w:?}, expected {want:?}", ctx.name());
        ensure!(ctx.context_id() != 0, "a child has id 0");
    }
    Ok(())
}

fn grandchild() -> TestResult {
    let router = util::router()?;
    let c = router.local().remote_name("id-child").connect()?;
    let g = router
        .local()
        .remote_name("id-grandchild")
        .via(&c)
        .connect()?;
    let gg = router.fork().remote_name("id-great").via(&g).connect()?;
    let w = g.call::<who>(())?;
    ensure!(
        w.context_id == g.context_id()
            && w.parent_id == Some(c.context_id())
            && w.parent_ids == [c.context_id(), 0]
            && !w.is_master
            && w.version == mitogen::VERSION,
        "grandchild: {w:?} (child {}, grandchild {})",
        c.context_id(),
        g.context_id()
    );
    let w = gg.call::<who>(())?;
    ensure!(
        w.context_id == gg.context_id() && w.parent_ids == [g.context_id(), c.context_id(), 0],
        "great-grandchild: {w:?}"
    );
    ensure!(
        g.name() == "id-child.id-grandchild",
        "name via a child: {:?}",
        g.name()
    );
    // A grandchild the child starts on its own gets an id from the master.
    let (gid, w) = c.call::<grandchild_who>(())?;
    ensure!(
        w.context_id == gid && w.parent_ids == [c.context_id(), 0],
        "grandchild started by the child: id {gid}, {w:?}"
    );
    let ids = [c.context_id(), g.context_id(), gg.context_id(), gid];
    for (i, a) in ids.iter().enumerate() {
        ensure!(!ids[i + 1..].contains(a), "duplicate id among {ids:?}");
    }
    Ok(())
}

fn ids_are_unique() -> TestResult {
    let router = util::router()?;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let ctx = router.local().connect()?;
        let w = ctx.call::<who>(())?;
        ensure!(w.context_id == ctx.context_id(), "{w:?}");
        ids.push(ctx.context_id());
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    ensure!(sorted.len() == ids.len(), "ids {ids:?}");
    Ok(())
}

/// The ids a message built here carries before any router touched it.
#[mitogen::remote]
fn built_message_ids() -> mitogen::Result<(u32, u32)> {
    let m = mitogen::Message::encode(&1u8)?;
    Ok((m.src_id, m.auth_id))
}

/// Before: `src_id` and `auth_id` were 0 (the master's id) until routed.
fn a_message_built_in_a_child_is_from_it() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let ids = ctx.call::<built_message_ids>(())?;
    let id = ctx.context_id();
    ensure!(
        ids == (id, id),
        "a message built in context {id} says {ids:?}"
    );
    let m = mitogen::Message::encode(&1u8)?;
    ensure!((m.src_id, m.auth_id) == (0, 0), "in the master: {m:?}");
    Ok(())
}

/// Decodes a `Context` that names the decoding context and uses it: its
/// id, and a message sent through it to a local receiver.
#[mitogen::remote]
fn receive_myself(me: mitogen::Context, router: &mitogen::Router) -> mitogen::Result<(u32, u32)> {
    let rx = mitogen::Receiver::open(router);
    me.send(mitogen::Message::encode(&7u32)?.to(me.context_id(), rx.handle()))?;
    let got: u32 = rx.get(Some(std::time::Duration::from_secs(10)))?.decode()?;
    Ok((me.context_id(), got))
}

/// Before: passing a child its own `Context` failed to decode ("a Context
/// naming the decoding context itself").
fn a_context_may_receive_itself() -> TestResult {
    let router = util::router()?;
    let me = router.myself();
    ensure!(me.name() == "self", "myself() is named {:?}", me.name());
    ensure!(
        me.context_id() == 0,
        "myself() in the master is {}",
        me.context_id()
    );
    let ctx = router.local().connect()?;
    let (id, got) = ctx.call::<receive_myself>((ctx.clone(),))?;
    ensure!(
        (id, got) == (ctx.context_id(), 7),
        "the child saw itself as {id} and received {got}"
    );
    Ok(())
}

/// Allocates ids until refused or `n` were given: the ids, the error.
#[mitogen::remote]
fn flood_ids(router: &mitogen::Router, n: u32) -> (Vec<u32>, Option<String>) {
    let mut ids = Vec::new();
    for _ in 0..n {
        match router.allocate_id() {
            Ok(id) => ids.push(id),
            Err(e) => return (ids, Some(e.to_string())),
        }
    }
    (ids, None)
}

/// Before: one ALLOCATE_ID round trip per id, and the master kept an
/// entry per id handed out, forever, whatever a child asked for.
fn ids_come_in_blocks_and_a_flood_is_refused() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    let (ids, err) = ctx.call::<flood_ids>((1_000_000,))?;
    // The first ids are one block: consecutive.
    ensure!(ids.len() >= 64, "only {} ids", ids.len());
    ensure!(
        ids.windows(2).take(63).all(|w| w[1] == w[0] + 1),
        "the first block is not consecutive: {:?}",
        &ids[..64]
    );
    let unique: std::collections::HashSet<_> = ids.iter().collect();
    ensure!(unique.len() == ids.len(), "an id was handed out twice");
    ensure!(ids.len() == 4096 * 64, "the flood got {} ids", ids.len());
    ensure!(
        err.as_deref()
            .is_some_and(|e| e.contains("too many context ids")),
        "the flood ended with {err:?}"
    );
    // The master still hands out ids, to others.
    let other = router.local().connect()?;
    let (more, err) = other.call::<flood_ids>((10,))?;
    ensure!(
        more.len() == 10 && err.is_none(),
        "another child: {more:?} {err:?}"
    );
    Ok(())
}

#[mitogen::remote]
fn double(x: u64) -> u64 {
    x * 2
}

/// From the main thread (inside a call), calls this very context.
#[mitogen::remote]
fn call_myself(router: &mitogen::Router, x: u64) -> mitogen::Result<u64> {
    router.myself().call::<double>((x,))
}

/// Before: a child's call to its own `myself()` was refused by the call
/// policy (only parents may call), and from the main thread it would have
/// waited on itself.
fn a_child_may_call_itself() -> TestResult {
    let router = util::router()?;
    let ctx = router.local().connect()?;
    ensure!(ctx.call::<call_myself>((21,))? == 42, "the self-call");
    // The master serves no calls: it says so at once.
    let r = router.myself().call::<double>((1,));
    ensure!(
        matches!(&r, Err(mitogen::Error::Stream(e)) if e.to_string().contains("serves no calls")),
        "the master calling itself: {r:?}"
    );
    Ok(())
}
