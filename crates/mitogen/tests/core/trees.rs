//! Trees of contexts: deep chains, a wide tree called from several threads
//! at once, losing a middle node (kill -9) or shutting a subtree down, and
//! sibling traffic with and without unidirectional routing.

use crate::util::sleep_ms;
use crate::util::{self, trial, TestResult, WAIT};
use libtest_mimic::{Failed, Trial};
use mitogen::{Context, Error, Message, Receiver, RemoteFn, Router};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Bound on each tree test: they start up to a dozen contexts.
const LIMIT: Duration = Duration::from_secs(90);

pub fn tests() -> Vec<Trial> {
    vec![
        trial(
            "trees::links_count_their_traffic",
            LIMIT,
            links_count_their_traffic,
        ),
        trial("trees::chain_1", LIMIT, || chain_of(1)),
        trial("trees::chain_3", LIMIT, || chain_of(3)),
        trial("trees::chain_5", LIMIT, || chain_of(5)),
        trial("trees::chain_10", LIMIT, || chain_of(10)),
        trial("trees::wide_tree_concurrent_calls", LIMIT, wide_tree),
        trial("trees::kill_middle_of_chain", LIMIT, kill_middle_of_chain),
        trial("trees::shutdown_subtree", LIMIT, shutdown_subtree),
        trial(
            "trees::unidirectional_refuses_siblings",
            LIMIT,
            unidirectional_refuses_siblings,
        ),
        trial(
            "trees::siblings_talk_by_default",
            LIMIT,
            siblings_talk_by_default,
        ),
        trial(
            "trees::unidirectional_intermediate",
            LIMIT,
            unidirectional_intermediate,
        ),
    ]
}

/// What a context reports about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    id: u32,
    parent_ids: Vec<u32>,
    pid: u32,
    ppid: u32,
}

#[mitogen::remote]
fn whoami() -> Node {
    Node {
        id: mitogen::context_id(),
        parent_ids: mitogen::parent_ids().to_vec(),
        pid: std::process::id(),
        ppid: std::os::unix::process::parent_id(),
    }
}

/// `whoami` with a caller's tag echoed back, so crossed replies show.
#[mitogen::remote]
fn tagged(tag: u64) -> (u64, Node) {
    (tag, whoami())
}

/// The persistent receiver a sibling test sends to (kept for the life of
/// the process: a `Receiver` unregisters its handle when dropped).
static INBOX: Mutex<Option<Receiver>> = Mutex::new(None);

/// Opens this context's inbox and returns its handle.
#[mitogen::remote]
fn open_inbox(router: &Router) -> u32 {
    let rx = Receiver::open(router);
    let h = rx.handle();
    *INBOX.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
    h
}

/// The next text that arrived in the inbox within `wait_ms`, or `None`.
#[mitogen::remote]
fn inbox_next(wait_ms: u64) -> Result<Option<String>, String> {
    let guard = INBOX.lock().unwrap_or_else(|e| e.into_inner());
    let rx = guard.as_ref().ok_or("no inbox open")?;
    match rx.get(Some(Duration::from_millis(wait_ms))) {
        Ok(m) => m.decode::<String>().map(Some).map_err(|e| e.to_string()),
        Err(Error::Timeout(_)) => Ok(None),
        Err(e) => Err(format!("inbox: {e}")),
    }
}

/// Sends `text` to handle `handle` of context `dst`, with a reply handle
/// of its own, and reports what came back within `wait_ms`: `dead: REASON`,
/// `reply: ...`, or `nothing`.
#[mitogen::remote]
fn send_to(
    router: &Router,
    dst: u32,
    handle: u32,
    text: String,
    wait_ms: u64,
) -> Result<String, String> {
    let replies = Receiver::new(router, None, false, None, None).unwrap();
    let mut m = Message::encode(&text)
        .map_err(|e| e.to_string())?
        .to(dst, handle);
    m.reply_to = replies.handle();
    router.route(m).map_err(|e| format!("route: {e}"))?;
    Ok(match replies.get(Some(Duration::from_millis(wait_ms))) {
        Err(Error::Channel(e)) => format!("dead: {}", e.reason()),
        Err(Error::Timeout(_)) => "nothing".to_string(),
        Err(e) => return Err(format!("waiting for a reply: {e}")),
        Ok(m) => format!("reply: {m:?}"),
    })
}

/// Calls `F` and waits at most [`WAIT`].
fn call<F: RemoteFn>(ctx: &Context, args: F::Args) -> mitogen::Result<F::Output> {
    ctx.call_async::<F>(args)?.get(Some(WAIT))
}

fn who(ctx: &Context) -> Result<Node, Failed> {
    call::<whoami>(ctx, ()).map_err(|e| format!("whoami in {}: {e}", ctx.name()).into())
}

/// `depth` contexts, each started from the previous one.
fn build_chain(router: &Router, tag: &str, depth: usize) -> Result<Vec<Context>, Failed> {
    let mut chain: Vec<Context> = Vec::new();
    for i in 0..depth {
        let b = router.local().remote_name(format!("{tag}{i}"));
        let c = match chain.last() {
            Some(prev) => b.via(prev).connect(),
            None => b.connect(),
        }
        .map_err(|e| format!("connecting {tag}{i}: {e}"))?;
        chain.push(c);
    }
    Ok(chain)
}

fn expect_disconnected<T: std::fmt::Debug>(what: &str, r: mitogen::Result<T>) -> TestResult {
    match r {
        Err(Error::Channel(e)) => {
            ensure!(
                e.reason().contains("disconnected"),
                "{what}: reason {:?} does not mention the disconnect",
                e.reason()
            );
            Ok(())
        }
        other => Err(format!("{what}: expected a ChannelError, got {other:?}").into()),
    }
}

fn chain_of(depth: usize) -> TestResult {
    let router = util::router()?;
    let tag = format!("d{depth}n");
    let chain = build_chain(&router, &tag, depth)?;
    let mut ids = HashSet::new();
    let mut pids = HashSet::new();
    let mut expected_parents = vec![mitogen::MASTER_ID];
    let mut expected_ppid = std::process::id();
    let mut expected_name = String::new();
    for (i, ctx) in chain.iter().enumerate() {
        let n = who(ctx)?;
        ensure!(
            n.id == ctx.context_id() && n.id != mitogen::MASTER_ID,
            "node {i}: reports id {}, handle says {}",
            n.id,
            ctx.context_id()
        );
        ensure!(ids.insert(n.id), "node {i}: id {} used twice", n.id);
        ensure!(pids.insert(n.pid), "node {i}: pid {} used twice", n.pid);
        ensure!(
            n.parent_ids == expected_parents,
            "node {i}: parent_ids {:?}, expected {expected_parents:?}",
            n.parent_ids
        );
        ensure!(
            n.ppid == expected_ppid,
            "node {i}: parent process {}, expected {expected_ppid}",
            n.ppid
        );
        if i > 0 {
            expected_name.push('.');
        }
        expected_name.push_str(&format!("{tag}{i}"));
        ensure!(
            ctx.name() == expected_name,
            "node {i}: name {:?}, expected {expected_name:?}",
            ctx.name()
        );
        expected_parents.insert(0, n.id);
        expected_ppid = n.pid;
    }
    // The deepest node again, after every other node was used: routes stay.
    if let Some(last) = chain.last() {
        let n = who(last)?;
        ensure!(
            n.parent_ids.len() == depth,
            "deepest node: parent_ids {:?}",
            n.parent_ids
        );
    }
    // Dropping the master's router takes the whole chain down.
    util::bounded("dropping the router", WAIT, move || drop(router))?;
    for pid in pids {
        util::wait_exited_or_kill(pid, Duration::from_secs(10), true)?;
    }
    Ok(())
}

/// 3 children of the master, each with 3 children; every node called from
/// four threads at once, synchronously and with several calls in flight.
fn wide_tree() -> TestResult {
    let router = util::router()?;
    let tops: Vec<Context> = (0..3)
        .map(|b| router.local().remote_name(format!("w{b}")).connect())
        .collect::<mitogen::Result<_>>()?;
    // Leaves of the three branches are started concurrently.
    let starters: Vec<_> = tops
        .iter()
        .enumerate()
        .map(|(b, top)| {
            let router = router.clone();
            let top = top.clone();
            std::thread::spawn(move || -> Result<Vec<Context>, String> {
                (0..3)
                    .map(|l| {
                        router
                            .local()
                            .remote_name(format!("leaf{l}"))
                            .via(&top)
                            .connect()
                            .map_err(|e| format!("leaf {l} of branch {b}: {e}"))
                    })
                    .collect()
            })
        })
        .collect();
    // (context, expected parent_ids)
    let mut nodes: Vec<(Context, Vec<u32>)> = Vec::new();
    for (top, s) in tops.iter().zip(starters) {
        nodes.push((top.clone(), vec![mitogen::MASTER_ID]));
        let leaves = s.join().map_err(|_| "a starter thread panicked")??;
        for (l, leaf) in leaves.into_iter().enumerate() {
            let want = format!("{}.leaf{l}", top.name());
            ensure!(
                leaf.name() == want,
                "leaf name {:?}, expected {want:?}",
                leaf.name()
            );
            nodes.push((leaf, vec![top.context_id(), mitogen::MASTER_ID]));
        }
    }
    ensure!(nodes.len() == 12, "{} nodes", nodes.len());
    let ids: HashSet<u32> = nodes.iter().map(|(c, _)| c.context_id()).collect();
    ensure!(
        ids.len() == 12 && !ids.contains(&mitogen::MASTER_ID),
        "ids not unique tree-wide: {:?}",
        nodes
            .iter()
            .map(|(c, _)| c.context_id())
            .collect::<Vec<_>>()
    );
    let pids: HashSet<u32> = nodes
        .iter()
        .map(|(c, _)| who(c).map(|n| n.pid))
        .collect::<Result<_, _>>()?;
    ensure!(pids.len() == 12, "pids not distinct: {pids:?}");

    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let nodes = nodes.clone();
            std::thread::spawn(move || -> Result<usize, String> {
                let mut done = 0;
                for round in 0..5u64 {
                    let check = |c: &Context, want: &[u32], tag: u64, got: (u64, Node)| {
                        let (echo, n) = got;
                        if echo != tag || n.id != c.context_id() || n.parent_ids != want {
                            return Err(format!(
                                "thread {t} round {round}: {} answered tag {echo} as {n:?} \
                                 (sent tag {tag}, expected parents {want:?})",
                                c.name()
                            ));
                        }
                        Ok(())
                    };
                    // Every node at once: all calls in flight, then collected.
                    let pending = nodes
                        .iter()
                        .enumerate()
                        .map(|(i, (c, _))| {
                            let tag = t << 32 | round << 16 | i as u64;
                            c.call_async::<tagged>((tag,))
                                .map(|p| (tag, p))
                                .map_err(|e| format!("thread {t}: call_async {}: {e}", c.name()))
                        })
                        .collect::<Result<Vec<_>, String>>()?;
                    for ((c, want), (tag, p)) in nodes.iter().zip(pending) {
                        let got = p
                            .get(Some(WAIT))
                            .map_err(|e| format!("thread {t}: {}: {e}", c.name()))?;
                        check(c, want, tag, got)?;
                        done += 1;
                    }
                    // And one at a time.
                    for (i, (c, want)) in nodes.iter().enumerate() {
                        let tag = 1 << 60 | t << 32 | round << 16 | i as u64;
                        let got = call::<tagged>(c, (tag,))
                            .map_err(|e| format!("thread {t}: {}: {e}", c.name()))?;
                        check(c, want, tag, got)?;
                        done += 1;
                    }
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in threads {
        total += t.join().map_err(|_| "a caller thread panicked")??;
    }
    ensure!(total == 4 * 5 * 2 * 12, "{total} calls answered");
    Ok(())
}

/// kill -9 of the middle of a 5-chain: every call pending at it or below
/// fails promptly, every descendant exits, and the rest of the tree (the
/// nodes above it, an unrelated branch, the master) keeps working.
fn kill_middle_of_chain() -> TestResult {
    let router = util::router()?;
    let chain = build_chain(&router, "k", 5)?;
    let other = build_chain(&router, "u", 2)?;
    let nodes: Vec<Node> = chain.iter().map(who).collect::<Result<_, _>>()?;
    let other_nodes: Vec<Node> = other.iter().map(who).collect::<Result<_, _>>()?;

    // Busy calls everywhere at and below the victim, plus a short one on
    // its parent, which must still complete.
    let doomed: Vec<_> = chain[2..]
        .iter()
        .map(|c| c.call_async::<sleep_ms>((60_000,)).map(|p| (c.clone(), p)))
        .collect::<mitogen::Result<_>>()?;
    let above = chain[1].call_async::<sleep_ms>((800,))?;
    std::thread::sleep(Duration::from_millis(100));
    for (c, p) in &doomed {
        ensure!(!p.ready(), "the call to {} finished early", c.name());
    }

    util::kill9(nodes[2].pid)?;
    let killed = Instant::now();
    let bound = Duration::from_secs(5);
    for (c, p) in &doomed {
        let left = bound.saturating_sub(killed.elapsed());
        expect_disconnected(&format!("pending call to {}", c.name()), p.get(Some(left)))?;
    }
    let took = killed.elapsed();
    ensure!(took < bound, "the pending calls failed after {took:?}");

    // Every descendant of the victim goes within 3 s of the kill (nobody
    // reaps them: zombies ok).
    let exit_bound = Duration::from_secs(3);
    for n in &nodes[3..] {
        util::wait_exited_or_kill(n.pid, exit_bound.saturating_sub(killed.elapsed()), true)?;
        let t = killed.elapsed();
        ensure!(t < exit_bound, "pid {} exited {t:?} after the kill", n.pid);
    }
    // The victim itself is reaped by its parent.
    util::wait_exited(nodes[2].pid, Duration::from_secs(5), false)?;
    ensure!(
        util::wait_for(WAIT, || chain[2..].iter().all(|c| !c.is_connected())),
        "still connected: {:?}",
        chain[2..]
            .iter()
            .map(|c| (c.name(), c.is_connected()))
            .collect::<Vec<_>>()
    );

    // The rest is untouched.
    ensure!(
        above.get(Some(WAIT))? == 800,
        "the call above the victim failed"
    );
    for (c, n) in chain[..2].iter().zip(&nodes) {
        ensure!(c.is_connected(), "{} disconnected", c.name());
        ensure!(who(c)? == *n, "{} changed", c.name());
    }
    for (c, n) in other.iter().zip(&other_nodes) {
        ensure!(who(c)? == *n, "unrelated {} changed", c.name());
    }
    // New calls below the victim fail at once, not after a timeout.
    for c in &chain[2..] {
        let t = Instant::now();
        let r = c
            .call_async::<whoami>(())
            .and_then(|p| p.get(Some(Duration::from_secs(5))));
        ensure!(
            matches!(r, Err(Error::Channel(_))),
            "a new call to {} gave {r:?}",
            c.name()
        );
        ensure!(
            t.elapsed() < Duration::from_secs(2),
            "a new call to {} took {:?} to fail",
            c.name(),
            t.elapsed()
        );
    }
    // The victim's parent can grow a new branch, with a fresh id.
    let again = router
        .local()
        .remote_name("k2-again")
        .via(&chain[1])
        .connect()?;
    let n = who(&again)?;
    ensure!(
        n.parent_ids == [nodes[1].id, nodes[0].id, mitogen::MASTER_ID],
        "replacement parent_ids {:?}",
        n.parent_ids
    );
    ensure!(
        nodes.iter().chain(&other_nodes).all(|o| o.id != n.id),
        "replacement reused id {}",
        n.id
    );
    Ok(())
}

/// Graceful shutdown of a subtree root in the middle of the tree:
/// top -> {x -> {x1, x2 -> x2a}, y -> y1}. Shutting x down stops x, x1,
/// x2 and x2a; top, y and y1 keep working.
fn shutdown_subtree() -> TestResult {
    let router = util::router()?;
    let top = router.local().remote_name("top").connect()?;
    let x = router.local().remote_name("x").via(&top).connect()?;
    let y = router.local().remote_name("y").via(&top).connect()?;
    let x1 = router.local().remote_name("x1").via(&x).connect()?;
    let x2 = router.local().remote_name("x2").via(&x).connect()?;
    let x2a = router.local().remote_name("x2a").via(&x2).connect()?;
    let y1 = router.local().remote_name("y1").via(&y).connect()?;
    let gone = [&x, &x1, &x2, &x2a];
    let kept = [&top, &y, &y1];
    let gone_nodes: Vec<Node> = gone.iter().map(|c| who(c)).collect::<Result<_, _>>()?;
    let kept_nodes: Vec<Node> = kept.iter().map(|c| who(c)).collect::<Result<_, _>>()?;
    // A call that must survive, in flight on a sibling during the shutdown.
    let busy_sibling = y1.call_async::<sleep_ms>((500,))?;

    x.shutdown(true, Some(WAIT))?;
    ensure!(!x.is_connected(), "x still connected after shutdown(wait)");
    for (c, n) in gone.iter().zip(&gone_nodes) {
        util::wait_exited_or_kill(n.pid, Duration::from_secs(5), true)
            .map_err(|e| format!("{}: {}", c.name(), e.message().unwrap_or("")))?;
    }
    ensure!(
        util::wait_for(WAIT, || gone.iter().all(|c| !c.is_connected())),
        "still connected after the shutdown: {:?}",
        gone.iter()
            .map(|c| (c.name(), c.is_connected()))
            .collect::<Vec<_>>()
    );
    for c in gone {
        let r = c
            .call_async::<whoami>(())
            .and_then(|p| p.get(Some(Duration::from_secs(5))));
        ensure!(
            matches!(r, Err(Error::Channel(_))),
            "a call to {} after the shutdown gave {r:?}",
            c.name()
        );
    }
    ensure!(
        busy_sibling.get(Some(WAIT))? == 500,
        "the sibling's call was disturbed"
    );
    for (c, n) in kept.iter().zip(&kept_nodes) {
        ensure!(c.is_connected(), "{} disconnected", c.name());
        ensure!(who(c)? == *n, "{} changed", c.name());
    }
    // x's parent reaped it and can start another child.
    util::wait_exited(gone_nodes[0].pid, Duration::from_secs(5), false)?;
    let x3 = router.local().remote_name("x3").via(&top).connect()?;
    ensure!(
        who(&x3)?.parent_ids == [top.context_id(), mitogen::MASTER_ID],
        "new child of top"
    );
    Ok(())
}

/// Two children of the master; B opens an inbox, A sends to it.
fn siblings(router: &Router) -> Result<(Context, Context, u32), Failed> {
    let a = router.local().remote_name("sib-a").connect()?;
    let b = router.local().remote_name("sib-b").connect()?;
    let inbox = call::<open_inbox>(&b, ())?;
    Ok((a, b, inbox))
}

fn unidirectional_refuses_siblings() -> TestResult {
    let router = util::router()?;
    router.set_unidirectional(true);
    ensure!(router.unidirectional(), "unidirectional() after set");
    let (a, b, inbox) = siblings(&router)?;
    let got = call::<send_to>(&a, (b.context_id(), inbox, "psst".into(), 5000))?;
    ensure!(
        got.starts_with("dead: ") && got.contains("unidirectional"),
        "A's message to its sibling: {got:?}"
    );
    ensure!(
        call::<inbox_next>(&b, (300,))?.is_none(),
        "B received a sibling message"
    );
    // Up and down the tree still work: the master calls both and can
    // message B's inbox itself.
    ensure!(who(&a)?.id == a.context_id(), "a call to A");
    let mut m = Message::encode("from the master")?.to(b.context_id(), inbox);
    m.reply_to = 0;
    router.route(m)?;
    ensure!(
        call::<inbox_next>(&b, (5000,))?.as_deref() == Some("from the master"),
        "the master's message to B"
    );
    Ok(())
}

fn siblings_talk_by_default() -> TestResult {
    let router = util::router()?;
    ensure!(!router.unidirectional(), "unidirectional by default");
    let (a, b, inbox) = siblings(&router)?;
    let got = call::<send_to>(&a, (b.context_id(), inbox, "psst".into(), 300))?;
    ensure!(got == "nothing", "A got {got:?} for its message");
    ensure!(
        call::<inbox_next>(&b, (5000,))?.as_deref() == Some("psst"),
        "B did not receive A's message"
    );
    Ok(())
}

/// `.unidirectional(true)` on one context: that context refuses traffic
/// between its own children, while the master (not unidirectional) still
/// relays between its children.
fn unidirectional_intermediate() -> TestResult {
    let router = util::router()?;
    let mid = router
        .local()
        .remote_name("uni-mid")
        .unidirectional(true)
        .connect()?;
    let c1 = router.local().remote_name("c1").via(&mid).connect()?;
    let c2 = router.local().remote_name("c2").via(&mid).connect()?;
    let other = router.local().remote_name("other").connect()?;
    let inbox2 = call::<open_inbox>(&c2, ())?;
    let got = call::<send_to>(&c1, (c2.context_id(), inbox2, "cousin".into(), 5000))?;
    ensure!(
        got.starts_with("dead: ") && got.contains("unidirectional"),
        "c1's message to its sibling c2: {got:?}"
    );
    ensure!(
        call::<inbox_next>(&c2, (300,))?.is_none(),
        "c2 received a sibling message"
    );
    // Through the master, which is not unidirectional, it passes.
    let inbox_o = call::<open_inbox>(&other, ())?;
    let got = call::<send_to>(&mid, (other.context_id(), inbox_o, "hi".into(), 300))?;
    ensure!(got == "nothing", "mid got {got:?} for its message");
    ensure!(
        call::<inbox_next>(&other, (5000,))?.as_deref() == Some("hi"),
        "the master did not relay between its children"
    );
    Ok(())
}

#[mitogen::remote]
fn my_links(router: &Router) -> Vec<mitogen::LinkStats> {
    router.links()
}

#[mitogen::remote]
fn swallow(data: mitogen::ByteBuf) -> usize {
    data.len()
}

/// Each context counts the bytes on each of its links, both ways: 4 MiB
/// sent to a grandchild shows on every hop it took, once.
fn links_count_their_traffic() -> TestResult {
    let router = util::router()?;
    let mid = router.local().remote_name("traffic-mid").connect()?;
    let leaf = router
        .local()
        .remote_name("traffic-leaf")
        .via(&mid)
        .connect()?;
    const N: u64 = 4 << 20;
    let before = router.links();
    ensure!(
        leaf.call::<swallow>((mitogen::ByteBuf::from(vec![7u8; N as usize]),))? == N as usize,
        "size"
    );
    let after = router.links();
    let to_mid = |v: &[mitogen::LinkStats]| {
        v.iter()
            .find(|l| l.context_id == mid.context_id())
            .map(|l| (l.bytes_sent, l.bytes_received))
            .unwrap_or_default()
    };
    let (s0, _) = to_mid(&before);
    let (s1, r1) = to_mid(&after);
    ensure!(
        s1 - s0 >= N && s1 - s0 < N + (64 << 10),
        "master → mid: {} bytes",
        s1 - s0
    );
    ensure!(r1 > 0, "nothing came back from mid");
    let mid_links = mid.call::<my_links>(())?;
    let up = mid_links
        .iter()
        .find(|l| l.to_parent)
        .ok_or("mid has no parent link")?;
    let down = mid_links
        .iter()
        .find(|l| l.context_id == leaf.context_id())
        .ok_or("mid has no link to the leaf")?;
    ensure!(
        up.bytes_received >= N,
        "mid received {} from its parent",
        up.bytes_received
    );
    ensure!(
        down.bytes_sent >= N,
        "mid sent {} to the leaf",
        down.bytes_sent
    );
    let leaf_links = leaf.call::<my_links>(())?;
    ensure!(
        leaf_links.len() == 1 && leaf_links[0].to_parent && leaf_links[0].bytes_received >= N,
        "the leaf's links: {leaf_links:?}"
    );
    Ok(())
}
