//! The child side of calls: [`ExternalContext`] and the loop that runs
//! calls, one at a time in arrival order, on the child's main thread.
//!
//! The broker thread only queues `CALL_FUNCTION` messages (after checking
//! that the caller is a parent); the main thread decodes, runs and answers
//! them, writing the reply straight to the parent's socket. A panic in a
//! function is caught and answered as a [`CallError`]; the loop goes on.
//!
//! A function marked `#[mitogen::remote(concurrent)]` is not run there:
//! the main thread hands it to the context's worker pool (`pool.rs`) and
//! goes on with the next call, so a long transfer or command does not hold
//! up the calls behind it. It is answered the same way, from the pool's
//! thread (panics included); a call the pool cannot take (full, or the
//! context shutting down) is answered with the pool's [`CallError`].
//! Ordinary calls keep their order among themselves; concurrent ones have
//! none, with each other or with ordinary calls.
//!
//! Chains ([`crate::CallChain`]): a concurrent call ignores the chain's
//! order, but honours its failure. If the chain has failed when the call
//! arrives, or when a pool thread is about to run it, it fails with the
//! chain's first failure without running; if it fails itself, the chain
//! is failed for every call that arrives after that. Calls already under
//! way when it fails are not affected: a program that needs "B only if A
//! succeeded" waits for A's result, or keeps both ordinary.

use crate::broker::{Loop, Participant};
use crate::call::{decode_call, lookup, CallEnv, Output, OutputOf};
use crate::context::Context;
use crate::error::CallError;
use crate::frame::handle;
use crate::latch::Latch;
use crate::message::Message;
use crate::pool::{Job, Pool, PoolSize, DEFAULT_IDLE_TIMEOUT};
use crate::router::{Policy, Router};
use crate::streamed::HoldSlot;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The running context, as seen from code running inside it: the seed's
/// `ExternalContext`. Remote functions receive it by declaring an
/// `&ExternalContext` parameter.
#[derive(Clone, Debug)]
pub struct ExternalContext {
    router: Router,
    parent: Context,
}

impl ExternalContext {
    /// The running context as seen through `router`: its parent is the
    /// first of its parents (the master is its own parent).
    pub(crate) fn for_router(router: Router) -> ExternalContext {
        let core = router.core().clone();
        let parent_id = core.parent_ids.first().copied().unwrap_or(core.id);
        let parent = Context::new(core, parent_id, "parent");
        ExternalContext { router, parent }
    }

    /// This context's router.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The context that started this one.
    pub fn parent(&self) -> &Context {
        &self.parent
    }

    /// The master at the top of the tree.
    pub fn master(&self) -> Context {
        Context::new(
            self.router.core().clone(),
            crate::identity::MASTER_ID,
            "master",
        )
    }

    /// This context's id.
    pub fn context_id(&self) -> u32 {
        self.router.context_id()
    }

    /// Detaches this context from its parent, so that it outlives it: for
    /// a daemon, or a job that must finish whatever happens upstream.
    ///
    /// The parent is told first (and acknowledges): the end of this link
    /// is then no failure there, and this process is never signalled by
    /// it. This process leaves its session and ignores SIGHUP (an ssh
    /// login ending does not take it along). When the link to the parent
    /// ends, no new call arrives, but the call running on the main thread
    /// (typically the one that called `detach`) finishes, with this
    /// context's router and children still working; then the context
    /// exits as usual.
    pub fn detach(&self) -> crate::Result<()> {
        let core = self.router.core();
        let Some(&parent) = core.parent_ids.first() else {
            return Err(crate::StreamError::new("the master has no parent to detach from").into());
        };
        crate::broker::refuse_wait_on_broker("detaching")?;
        let answer = Latch::new();
        let h = core.add_latch_handler(answer.clone(), Some(parent));
        let mut m = Message::encode(&())?.to(parent, handle::DETACHING);
        m.reply_to = h;
        let sent = core.send(m);
        let got = sent.and_then(|()| answer.get(Some(Duration::from_secs(30))));
        core.del_handler(h);
        if let Some(why) = got?.dead_reason() {
            return Err(crate::ChannelError::new(why).into());
        }
        core.detached.store(true, Ordering::Release);
        // SAFETY: setsid and signal take no pointers; setsid fails
        // harmlessly for a session leader.
        unsafe {
            libc::setsid();
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
        }
        tracing::debug!("mitogen: context {} detached from its parent", core.id);
        Ok(())
    }
}

/// Stops the dispatch loop and the worker pool when the broker shuts
/// down. The pool is stopped here, on the broker thread, before the
/// parent's stream is closed: the queued calls' failures still reach
/// their callers.
struct StopOnShutdown {
    queue: Latch<Message>,
    pool: Pool,
}

impl Participant for StopOnShutdown {
    fn on_shutdown(self: Arc<Self>, _: &mut Loop) {
        self.queue.close();
        self.pool.stop();
    }
    fn keep_alive(&self) -> bool {
        false
    }
    fn on_exit(self: Arc<Self>, _: &mut Loop) {
        self.queue.close();
        self.pool.stop();
    }
}

/// Serves calls until the parent disconnects or a shutdown is requested.
pub(crate) struct Dispatcher {
    shared: Arc<Shared>,
    queue: Latch<Message>,
    pool: Pool,
}

/// What the main thread and the pool's threads share.
struct Shared {
    econtext: ExternalContext,
    /// First failure of each pipelined chain, until it is forgotten.
    failed_chains: Mutex<HashMap<String, CallError>>,
    /// Calls and time per function, when profiling.
    profile: Option<Mutex<HashMap<String, (u64, Duration)>>>,
}

impl Dispatcher {
    pub(crate) fn new(router: Router, profiling: bool, pool: PoolSize) -> Dispatcher {
        let core = router.core().clone();
        let queue = Latch::new();
        let q = queue.clone();
        let parents = core.parent_ids.clone();
        // Its parents may call it, and so may it (its `myself()`).
        let me = core.id;
        let policy: Policy =
            Arc::new(move |m: &Message| m.auth_id == me || parents.contains(&m.auth_id));
        // A call to oneself goes straight to the pool: the main thread may
        // well be the caller, waiting for it.
        let to_pool: Arc<OnceLock<(Arc<Shared>, Pool)>> = Arc::default();
        let tp = to_pool.clone();
        core.add_handler_at(
            handle::CALL_FUNCTION,
            Box::new(move |m| match tp.get() {
                Some((shared, pool)) if m.auth_id == me => {
                    submit(shared, pool, m, shared.clock());
                }
                _ => {
                    let _ = q.put(m);
                }
            }),
            true,
            None,
            Some(policy),
        );
        let pool = Pool::new(
            format!("the worker pool of context {}", core.id),
            pool,
            DEFAULT_IDLE_TIMEOUT,
        );
        core.broker.add_participant(Arc::new(StopOnShutdown {
            queue: queue.clone(),
            pool: pool.clone(),
        }));
        let q = queue.clone();
        let b = core.broker.clone();
        let weak = Arc::downgrade(&core);
        *crate::sync::lock(&core.on_parent_lost) = Some(Box::new(move || {
            q.close();
            // Detached: the running call finishes first; the context
            // shuts down once the call loop ends.
            if !weak
                .upgrade()
                .is_some_and(|c| c.detached.load(Ordering::Acquire))
            {
                b.shutdown();
            }
        }));
        let shared = Arc::new(Shared {
            econtext: ExternalContext::for_router(router),
            failed_chains: Mutex::new(HashMap::new()),
            profile: profiling.then(|| Mutex::new(HashMap::new())),
        });
        let _ = to_pool.set((shared.clone(), pool.clone()));
        Dispatcher {
            shared,
            queue,
            pool,
        }
    }

    pub(crate) fn econtext(&self) -> &ExternalContext {
        &self.shared.econtext
    }

    /// Runs calls until the queue closes.
    pub(crate) fn run(self) {
        let core = self.shared.econtext.router.core().clone();
        let parent = core.table.parent_stream();
        // The parent link, held since the last answer was sent on it.
        let mut held = None;
        loop {
            let msg = match self.queue.try_get() {
                Err(_) => break,
                Ok(Some(m)) => {
                    held = None;
                    m
                }
                Ok(None) => {
                    // Idle: wait for the next call by reading the parent
                    // link ourselves (see link/direct.rs); fall back to the queue.
                    // Poll first: a caller waiting for the answer just sent
                    // has sent nothing more, so a first read would come back
                    // empty; when calls are pipelined, the poll returns at
                    // once and costs what that read would.
                    let q = &self.queue;
                    let done = || !q.nothing_queued() || q.is_closed();
                    let read = match (held.take(), &parent) {
                        (Some(h), _) => core.read_held(h, &done, None, true),
                        (None, Some(s)) => core.read_until(s, &done, None, true),
                        (None, None) => false,
                    };
                    if read {
                        continue;
                    }
                    match self.queue.get(None) {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            // With nothing else queued, this thread reads the parent link
            // next: it holds it before its answer leaves (`Hold`), when
            // the answer goes that way (the caller has no route of its own
            // here, as a parent never has).
            let hold = parent
                .as_ref()
                .filter(|_| self.queue.nothing_queued())
                .filter(|_| core.table.route_link(msg.src_id).is_none())
                .map(|s| (s, &mut held));
            self.handle(msg, hold);
        }
        drop(held);
        self.pool.stop();
        self.shared.write_profile();
    }

    /// Runs an ordinary call here; hands a concurrent one to the pool.
    fn handle(&self, mut msg: Message, hold: HoldSlot<'_, '_>) {
        let started = self.shared.clock();
        let (chain, target, args_at) = match parse(&msg.data) {
            Ok(p) => p,
            Err(e) => return self.shared.finish(&msg, "?", None, Err(e), started, None),
        };
        if target.entry.is_some_and(|e| e.concurrent) {
            let call = (chain, target, args_at);
            return submit_parsed(&self.shared, &self.pool, msg, call, started);
        }
        // The arguments are decoded from the payload they own (a large
        // byte string in them is not copied); the message keeps what the
        // reply needs.
        let payload = std::mem::take(&mut msg.data);
        let r = self
            .shared
            .run_one(chain.as_deref(), &target, payload, args_at);
        self.shared
            .finish(&msg, &target.name, chain, r, started, hold)
    }
}

/// The function a call names: its registry entry (`None`: unknown, or
/// the runtime's own `FORGET_CHAIN`) and its name, borrowed from the
/// registry when known, so a call costs no copy of it.
struct Target {
    entry: Option<&'static crate::call::Entry>,
    name: Cow<'static, str>,
}

/// A call split by [`parse`]: its chain, its target, where its arguments
/// start.
type Parsed = (Option<String>, Target, usize);

/// Splits a call payload.
fn parse(data: &[u8]) -> Result<Parsed, CallError> {
    let p = decode_call(data)?;
    let entry = lookup(p.name);
    let name = match entry {
        Some(e) => Cow::Borrowed(e.name),
        None => Cow::Owned(p.name.to_owned()),
    };
    let args_at = data.len() - p.args.len();
    Ok((p.chain.map(str::to_owned), Target { entry, name }, args_at))
}

/// Hands a call to the worker pool (a concurrent function, or a call to
/// oneself); a refusal (full, stopped) is answered to the caller.
fn submit(shared: &Arc<Shared>, pool: &Pool, msg: Message, started: Option<Instant>) {
    match parse(&msg.data) {
        Ok(call) => submit_parsed(shared, pool, msg, call, started),
        Err(e) => shared.finish(&msg, "?", None, Err(e), started, None),
    }
}

/// [`submit`] for a call already split by [`parse`].
fn submit_parsed(
    shared: &Arc<Shared>,
    pool: &Pool,
    mut msg: Message,
    (chain, target, args_at): Parsed,
    started: Option<Instant>,
) {
    // A chain that has already failed stays failed without queueing.
    if let Some(e) = shared.chain_failure(chain.as_deref()) {
        return shared.finish(&msg, &target.name, chain, Err(e), started, None);
    }
    let payload = std::mem::take(&mut msg.data);
    let target = Arc::new(target);
    let msg = Arc::new(msg);
    let (s, m, t, c) = (shared.clone(), msg.clone(), target.clone(), chain.clone());
    let run = move || {
        let r = s.run_one(c.as_deref(), &t, payload, args_at);
        s.finish(&m, &t.name, c, r, started, None);
    };
    let s = shared.clone();
    let fail = move |e| s.finish(&msg, &target.name, chain, Err(e), started, None);
    // Refused (full, stopped): `fail` has answered the caller.
    let _ = pool.submit(Job::new(run, fail));
}

impl Shared {
    /// The recorded failure of `chain`, if any.
    fn chain_failure(&self, chain: Option<&str>) -> Option<CallError> {
        let chain = chain?;
        crate::sync::lock(&self.failed_chains).get(chain).cloned()
    }

    /// Records a chain's failure, profiles, and answers the caller; an
    /// answer sent as one frame leaves holding `hold`'s link
    /// (`streamed::HoldSlot`).
    fn finish(
        &self,
        msg: &Message,
        name: &str,
        chain: Option<String>,
        result: Result<Box<dyn Output>, CallError>,
        started: Option<Instant>,
        hold: HoldSlot<'_, '_>,
    ) {
        // A failed call in a chain is not logged: the chain reports it to
        // the caller's next waiting call.
        let in_chain = chain.is_some();
        if let (Err(e), Some(chain)) = (&result, &chain) {
            self.fail_chain(chain, e);
        }
        if let (Some(p), Some(started)) = (&self.profile, started) {
            let mut p = crate::sync::lock(p);
            let e = p.entry(name.to_string()).or_default();
            e.0 += 1;
            e.1 += started.elapsed();
        }
        if msg.reply_to == 0 {
            if let (Err(e), false) = (&result, in_chain) {
                tracing::warn!("mitogen: call to {name} failed with nobody waiting: {e}");
            }
            return;
        }
        // A result is encoded as it is sent (a large one from the value).
        let sent = match result {
            Ok(out) => crate::streamed::send_reply(self.econtext.router.core(), msg, &*out, hold),
            Err(e) => msg.reply_message(Message::call_error(&e)),
        };
        let why = match sent {
            Ok(()) => return,
            // The result does not encode: the call failed.
            Err(crate::Error::Call(e)) => {
                if let Some(chain) = &chain {
                    self.fail_chain(chain, &e);
                }
                e
            }
            // The result could not travel (over max_message_size, say):
            // the caller must still hear about it, or it would wait
            // forever.
            Err(e) => CallError::new(
                "mitogen::ReplyError",
                format!("the result of {name} could not be sent: {e}"),
            ),
        };
        let _ = msg.reply_message(Message::call_error(&why));
    }

    /// Records the first failure of `chain`.
    fn fail_chain(&self, chain: &str, e: &CallError) {
        crate::sync::lock(&self.failed_chains)
            .entry(chain.to_string())
            .or_insert_with(|| e.clone());
    }

    /// When a call started, read only when calls are profiled.
    fn clock(&self) -> Option<Instant> {
        self.profile.as_ref().map(|_| Instant::now())
    }

    fn run_one(
        &self,
        chain: Option<&str>,
        target: &Target,
        payload: Vec<u8>,
        args_at: usize,
    ) -> Result<Box<dyn Output>, CallError> {
        let name = &*target.name;
        if let Some(e) = self.chain_failure(chain) {
            return Err(e);
        }
        if name == crate::call::FORGET_CHAIN {
            let (id,): (String,) = crate::call::decode_args(name, &payload[args_at..])?;
            crate::sync::lock(&self.failed_chains).remove(&id);
            return Ok(Box::new(OutputOf(())));
        }
        let Some(entry) = target.entry else {
            return Err(CallError::new(
                "mitogen::UnknownFunction",
                format!("no remote function named {name}: only functions marked #[mitogen::remote] can be called"),
            ));
        };
        let env = CallEnv {
            router: &self.econtext.router,
            econtext: &self.econtext,
        };
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Handles among the arguments bind to this context's router.
            crate::router::decoding_for(self.econtext.router.core(), || {
                (entry.invoke)(&env, payload, args_at)
            })
        })) {
            Ok(r) => r,
            Err(p) => Err(CallError::from_panic(name, &*p)),
        }
    }

    fn write_profile(&self) {
        let Some(p) = &self.profile else { return };
        let p = crate::sync::lock(p);
        let mut rows: Vec<_> = p.iter().collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
        let mut text = String::from("calls\ttotal_us\tfunction\n");
        for (name, (n, d)) in rows {
            text.push_str(&format!("{n}\t{}\t{name}\n", d.as_micros()));
        }
        // Created new, never through a link planted at the predictable
        // name (this may be root): see crate::tmpfile.
        let stem = format!("mitogen.stats.{}.main", std::process::id());
        let written = crate::tmpfile::create(std::path::Path::new("/tmp"), &stem, "log").and_then(
            |(mut f, path)| {
                std::io::Write::write_all(&mut f, text.as_bytes())?;
                Ok(path)
            },
        );
        match written {
            Ok(path) => tracing::debug!("mitogen: profile written to {}", path.display()),
            Err(e) => tracing::warn!("mitogen: cannot write the profile /tmp/{stem}.log: {e}"),
        }
    }
}
