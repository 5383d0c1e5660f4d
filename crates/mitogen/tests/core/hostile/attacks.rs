//! The attacks themselves: each writes crafted frames from a fresh
//! hostile child and checks they had no effect beyond what is allowed.

use super::*;

pub(super) fn forged_src_master(env: &Env) -> TestResult {
    let h = env.hostile("src-master", None)?;
    let m = env.marker("forged_src_master");
    let out = still_up(
        &h,
        attack(&h, kind::FORGED_SRC_MASTER, env.sib.context_id(), 0, &m),
    )?;
    ensure!(out == "sent", "attack: {out}");
    absent_after(&env.sib, &m)?;
    env.sibling_ok()
}

pub(super) fn forged_src_sibling(env: &Env) -> TestResult {
    let h = env.hostile("src-sibling", None)?;
    let rx = Receiver::open(&env.router);
    let out = still_up(
        &h,
        attack(
            &h,
            kind::FORGED_SRC_OTHER,
            env.sib.context_id(),
            rx.handle(),
            &env.marker("unused"),
        ),
    )?;
    ensure!(out == "sent", "attack: {out}");
    // The forged frame came before the attack's reply on the same link.
    ensure!(
        rx.empty()?,
        "a message claiming to be the sibling was delivered: {:?}",
        rx.get(Some(Duration::ZERO))
    );
    // The sibling itself can reach that receiver.
    call::<send_text>(&env.sib, (mitogen::MASTER_ID, rx.handle(), "honest".into()))?;
    let m = rx.get(Some(WAIT))?;
    ensure!(
        m.src_id == env.sib.context_id() && m.decode::<String>()? == "honest",
        "the honest message: {m:?}"
    );
    env.sibling_ok()
}

pub(super) fn forged_auth(env: &Env) -> TestResult {
    let h = env.hostile("auth", None)?;
    let m = env.marker("forged_auth");
    let out = still_up(
        &h,
        attack(&h, kind::FORGED_AUTH, env.sib.context_id(), 0, &m),
    )?;
    ensure!(out == "sent", "attack: {out}");
    absent_after(&env.sib, &m)?;
    env.sibling_ok()
}

pub(super) fn call_into_master(env: &Env) -> TestResult {
    let h = env.hostile("call-master", None)?;
    let m = env.marker("call_into_master");
    let out = still_up(&h, attack(&h, kind::CALL, mitogen::MASTER_ID, 0, &m))?;
    ensure!(
        out.starts_with("dead: "),
        "a call into the master was answered with {out:?}"
    );
    ensure!(!m.exists(), "the call ran in the master");
    env.sibling_ok()
}

pub(super) fn call_sibling(env: &Env) -> TestResult {
    let h = env.hostile("call-sibling", None)?;
    let m = env.marker("call_sibling");
    let out = still_up(&h, attack(&h, kind::CALL, env.sib.context_id(), 0, &m))?;
    ensure!(
        out.starts_with("dead: ") && out.contains("refused by policy"),
        "a call into a sibling was answered with {out:?}"
    );
    absent_after(&env.sib, &m)?;
    env.sibling_ok()
}

pub(super) fn shutdown_sibling(env: &Env) -> TestResult {
    let h = env.hostile("shutdown-sibling", None)?;
    let out = still_up(
        &h,
        attack(
            &h,
            kind::SHUTDOWN,
            env.sib.context_id(),
            0,
            &env.marker("unused"),
        ),
    )?;
    ensure!(out == "sent", "attack: {out}");
    // A refused SHUTDOWN leaves nothing to wait for; a honoured one would
    // make the sibling disconnect promptly.
    std::thread::sleep(Duration::from_millis(200));
    env.sibling_ok()?;
    ensure!(
        util::proc_state(env.sib_pid).is_some_and(|s| s != 'Z'),
        "the sibling process is gone"
    );
    Ok(())
}

/// A fresh middle context with a hostile child of its own.
pub(super) fn middle(env: &Env, name: &str) -> Result<(Context, Hostile), Failed> {
    let mid = env
        .router
        .local()
        .remote_name(format!("middle-{name}"))
        .connect()?;
    let g = env.hostile(name, Some(&mid))?;
    Ok((mid, g))
}

pub(super) fn grandchild_calls_parent(env: &Env) -> TestResult {
    let (mid, g) = middle(env, "call-parent")?;
    let m = env.marker("grandchild_calls_parent");
    let out = still_up(&g, attack(&g, kind::CALL, mid.context_id(), 0, &m))?;
    ensure!(
        out.starts_with("dead: ") && out.contains("refused by policy"),
        "a call from a child into its parent was answered with {out:?}"
    );
    absent_after(&mid, &m)?;
    env.sibling_ok()
}

pub(super) fn grandchild_forged_auth(env: &Env) -> TestResult {
    let (mid, g) = middle(env, "auth-parent")?;
    let m = env.marker("grandchild_forged_auth");
    // In the name of the master, into its own parent.
    let out = still_up(&g, attack(&g, kind::FORGED_AUTH, mid.context_id(), 0, &m))?;
    ensure!(out == "sent", "attack: {out}");
    absent_after(&mid, &m)?;
    env.sibling_ok()
}

pub(super) fn add_route_sibling(env: &Env) -> TestResult {
    let h = env.hostile("route-sibling", None)?;
    let out = still_up(
        &h,
        attack(
            &h,
            kind::ADD_ROUTE,
            env.sib.context_id(),
            0,
            &env.marker("unused"),
        ),
    )?;
    ensure!(out == "sent", "attack: {out}");
    // Calls to the sibling still reach the sibling, not the attacker.
    env.sibling_ok()
}

/// A route to the master itself, in the master: messages to the master
/// must still be delivered there.
pub(super) fn add_route_master(env: &Env) -> TestResult {
    let h = env.hostile("route-master", None)?;
    let rx = Receiver::open(&env.router);
    let out = still_up(
        &h,
        attack(
            &h,
            kind::ADD_ROUTE,
            mitogen::MASTER_ID,
            0,
            &env.marker("unused"),
        ),
    )?;
    ensure!(out == "sent", "attack: {out}");
    call::<send_text>(
        &env.sib,
        (mitogen::MASTER_ID, rx.handle(), "to the master".into()),
    )?;
    let m = rx.get(Some(WAIT))?;
    ensure!(
        m.decode::<String>()? == "to the master",
        "the sibling's message to the master: {m:?}"
    );
    env.sibling_ok()
}

/// A child claims a route to the master in its parent: if believed, the
/// parent's replies to the master would go to the attacker.
pub(super) fn grandchild_add_route_master(env: &Env) -> TestResult {
    let (mid, g) = middle(env, "route-master-mid")?;
    let mid_pid = call::<pid>(&mid, ())?;
    let out = still_up(
        &g,
        attack(
            &g,
            kind::ADD_ROUTE,
            mitogen::MASTER_ID,
            0,
            &env.marker("unused"),
        ),
    )?;
    ensure!(out == "sent", "attack: {out}");
    let p = call::<pid>(&mid, ()).map_err(|e| format!("the middle context: {e}"))?;
    ensure!(p == mid_pid, "the middle context answered as {p}");
    env.sibling_ok()
}

/// Routes to ids not yet given out: a context started later (through
/// another branch, or directly) must still be reachable.
pub(super) fn add_route_future_id(env: &Env) -> TestResult {
    let h = env.hostile("route-future", None)?;
    let r = claim_future_ids(env, &h);
    // The attacker's claims go with it (they would mislead later attacks
    // of the summary).
    util::kill9(h.pid)?;
    util::wait_exited(h.pid, Duration::from_secs(5), false)?;
    r?;
    env.sibling_ok()
}

pub(super) fn claim_future_ids(env: &Env, h: &Hostile) -> TestResult {
    // Ids are handed out in order by the master: claim the next two.
    let next = env.router.allocate_id()? + 1;
    let claimed = next..next + 2;
    for id in claimed.clone() {
        let out = still_up(h, attack(h, kind::ADD_ROUTE, id, 0, &env.marker("unused")))?;
        ensure!(out == "sent", "attack: {out}");
    }
    let reach = |c: &Context| {
        c.call_async::<pid>(())
            .and_then(|p| p.get(Some(Duration::from_secs(3))))
    };
    // A child of the master: its own stream replaces the claimed route.
    let mid = env.router.local().remote_name("future-mid").connect()?;
    ensure!(
        claimed.contains(&mid.context_id()),
        "the new child got id {}, not one of those claimed ({claimed:?})",
        mid.context_id()
    );
    let r = reach(&mid);
    ensure!(r.is_ok(), "a direct child with a claimed id: {r:?}");
    // A grandchild: the master learns its route from an announcement.
    let late = env
        .router
        .local()
        .remote_name("future-late")
        .via(&mid)
        .connect()?;
    ensure!(
        claimed.contains(&late.context_id()),
        "the grandchild got id {}, not one of those claimed ({claimed:?})",
        late.context_id()
    );
    let r = reach(&late);
    ensure!(
        r.is_ok(),
        "a context started through another branch after the attacker claimed \
         its id {} is unreachable: {r:?}",
        late.context_id()
    );
    Ok(())
}

pub(super) fn del_route_sibling(env: &Env) -> TestResult {
    let h = env.hostile("del-sibling", None)?;
    // In flight across the attack: a believed DEL_ROUTE would fail it.
    let busy = env.sib.call_async::<sleep_ms>((300,))?;
    let out = still_up(
        &h,
        attack(
            &h,
            kind::DEL_ROUTE,
            env.sib.context_id(),
            0,
            &env.marker("unused"),
        ),
    )?;
    ensure!(out == "sent", "attack: {out}");
    ensure!(env.sib.is_connected(), "the sibling's route was removed");
    let r = busy.get(Some(WAIT));
    ensure!(
        matches!(r, Ok(300)),
        "a call in flight to the sibling: {r:?}"
    );
    env.sibling_ok()
}

/// The attacker's pending call fails with a disconnect naming the
/// malformed frame, the attacker is reaped, and nothing else changes.
pub(super) fn malformed(env: &Env, name: &str, kind: u8) -> TestResult {
    let h = env.hostile(name, None)?;
    let pending = h.ctx.call_async::<hostile>((
        kind,
        0,
        0,
        env.marker("unused").to_string_lossy().into_owned(),
    ))?;
    // `get` may read the attacker's link on this thread (direct read): the
    // malformed frame must end the link that way too.
    let t = Instant::now();
    let r = pending.get(Some(Duration::from_secs(5)));
    match &r {
        Err(Error::Channel(e)) => ensure!(
            e.reason().contains("disconnected") && e.reason().contains("malformed frame"),
            "the attack's call failed with {:?}",
            e.reason()
        ),
        other => {
            let _ = util::kill9(h.pid);
            return Err(format!(
                "expected a disconnect after {:?}, got {other:?}",
                t.elapsed()
            )
            .into());
        }
    }
    ensure!(!h.ctx.is_connected(), "the attacker is still connected");
    util::wait_exited_or_kill(h.pid, Duration::from_secs(5), false)?;
    env.sibling_ok()
}

pub(super) fn oversized_length(env: &Env) -> TestResult {
    malformed(env, "oversized", kind::OVERSIZED)
}

pub(super) fn bad_magic(env: &Env) -> TestResult {
    malformed(env, "magic", kind::BAD_MAGIC)
}

pub(super) fn bad_encoding(env: &Env) -> TestResult {
    malformed(env, "encoding", kind::BAD_ENCODING)
}

pub(super) fn reserved_bits(env: &Env) -> TestResult {
    malformed(env, "reserved", kind::RESERVED)
}

/// Half a header and silence: the master does not wait for the rest, and
/// a later end of the link is an ordinary disconnect.
pub(super) fn truncated_header(env: &Env) -> TestResult {
    let h = env.hostile("truncated", None)?;
    let pending = h.ctx.call_async::<hostile>((
        kind::TRUNCATED,
        0,
        0,
        env.marker("unused").to_string_lossy().into_owned(),
    ))?;
    std::thread::sleep(Duration::from_millis(200));
    let result = (|| -> TestResult {
        env.sibling_ok()?;
        let other = env
            .router
            .local()
            .remote_name("while-truncated")
            .connect()?;
        call::<pid>(&other, ())?;
        ensure!(
            !pending.ready(),
            "the attack's call finished: the header was not half written"
        );
        ensure!(
            h.ctx.is_connected(),
            "a half header disconnected the attacker at once"
        );
        Ok(())
    })();
    util::kill9(h.pid)?;
    result?;
    let r = pending.get(Some(Duration::from_secs(5)));
    ensure!(
        matches!(&r, Err(Error::Channel(e)) if e.reason().contains("disconnected")),
        "after the kill: {r:?}"
    );
    util::wait_exited(h.pid, Duration::from_secs(5), false)?;
    env.sibling_ok()
}

/// Regression. A malformed frame followed by silence, while the master's
/// caller waits for the attacker's reply with `get` (and so reads the
/// attacker's link itself): the link must still be dropped at once.
pub(super) fn bad_magic_while_caller_waits(env: &Env) -> TestResult {
    let h = env.hostile("magic-quiet", None)?;
    let pending = h.ctx.call_async::<hostile>((
        kind::BAD_MAGIC_QUIET,
        0,
        0,
        env.marker("unused").to_string_lossy().into_owned(),
    ))?;
    let r = pending.get(Some(Duration::from_secs(5)));
    let connected = h.ctx.is_connected();
    util::kill9(h.pid)?;
    util::wait_exited(h.pid, Duration::from_secs(5), false)?;
    ensure!(
        matches!(&r, Err(Error::Channel(e)) if e.reason().contains("malformed frame")),
        "5 s after the malformed frame: {r:?}; attacker still connected: {connected}"
    );
    env.sibling_ok()
}
