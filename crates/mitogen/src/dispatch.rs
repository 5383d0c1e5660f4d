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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Name under which [`crate::CallChain::reset`] asks a context to forget a
/// chain's failure.
pub(crate) const FORGET_CHAIN: &str = "mitogen::forget_chain";

/// The running context, as seen from code running inside it: the seed's
/// `ExternalContext`. Remote functions receive it by declaring an
/// `&ExternalContext` parameter.
#[derive(Clone, Debug)]
pub struct ExternalContext {
    router: Router,
    parent: Context,
}

impl ExternalContext {
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
        let parent_id = core.parent_ids.first().copied().unwrap_or(0);
        let parent = Context::new(core.clone(), parent_id, "parent");
        let queue = Latch::new();
        let q = queue.clone();
        let parents = core.parent_ids.clone();
        let policy: Policy = Arc::new(move |m: &Message| parents.contains(&m.auth_id));
        core.add_handler_at(
            handle::CALL_FUNCTION,
            Box::new(move |m| {
                let _ = q.put(m);
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
        *crate::sync::lock(&core.on_parent_lost) = Some(Box::new(move || {
            q.close();
            b.shutdown();
        }));
        Dispatcher {
            shared: Arc::new(Shared {
                econtext: ExternalContext { router, parent },
                failed_chains: Mutex::new(HashMap::new()),
                profile: profiling.then(|| Mutex::new(HashMap::new())),
            }),
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
        loop {
            let msg = match self.queue.try_get() {
                Err(_) => break,
                Ok(Some(m)) => m,
                Ok(None) => {
                    // Idle: wait for the next call by reading the parent
                    // link ourselves (see direct.rs); fall back to the queue.
                    let q = &self.queue;
                    let read = core.parent_stream().is_some_and(|s| {
                        crate::direct::read_until(&core, &s, &|| !q.empty() || q.is_closed(), None)
                    });
                    if read {
                        continue;
                    }
                    match self.queue.get(None) {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                }
            };
            self.handle(msg);
        }
        self.pool.stop();
        self.shared.write_profile();
    }

    /// Runs an ordinary call here; hands a concurrent one to the pool.
    fn handle(&self, mut msg: Message) {
        let started = Instant::now();
        let (chain, name, args_at) = match decode_call(&msg.data) {
            Ok(p) => (p.chain, p.name, msg.data.len() - p.args.len()),
            Err(e) => return self.shared.finish(&msg, "?", None, Err(e), started),
        };
        // The arguments are decoded from the payload they own (a large
        // byte string in them is not copied); the message keeps what the
        // reply needs.
        let payload = std::mem::take(&mut msg.data);
        if !lookup(&name).is_some_and(|e| e.concurrent) {
            let r = self
                .shared
                .run_one(chain.as_deref(), &name, payload, args_at);
            return self.shared.finish(&msg, &name, chain, r, started);
        }
        // A chain that has already failed stays failed without queueing.
        if let Some(e) = self.shared.chain_failure(chain.as_deref()) {
            return self.shared.finish(&msg, &name, chain, Err(e), started);
        }
        let name = Arc::<str>::from(name);
        let msg = Arc::new(msg);
        let (s, m, n, c) = (
            self.shared.clone(),
            msg.clone(),
            name.clone(),
            chain.clone(),
        );
        let run = move || {
            let r = s.run_one(c.as_deref(), &n, payload, args_at);
            s.finish(&m, &n, c, r, started);
        };
        let s = self.shared.clone();
        let fail = move |e| s.finish(&msg, &name, chain, Err(e), started);
        // Refused (full, stopped): `fail` has answered the caller.
        let _ = self.pool.submit(Job::new(run, fail));
    }
}

impl Shared {
    /// The recorded failure of `chain`, if any.
    fn chain_failure(&self, chain: Option<&str>) -> Option<CallError> {
        let chain = chain?;
        crate::sync::lock(&self.failed_chains).get(chain).cloned()
    }

    /// Records a chain's failure, profiles, and answers the caller.
    fn finish(
        &self,
        msg: &Message,
        name: &str,
        chain: Option<String>,
        result: Result<Box<dyn Output>, CallError>,
        started: Instant,
    ) {
        // A failed call in a chain is not logged: the chain reports it to
        // the caller's next waiting call.
        let in_chain = chain.is_some();
        if let (Err(e), Some(chain)) = (&result, &chain) {
            self.fail_chain(chain, e);
        }
        if let Some(p) = &self.profile {
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
            Ok(out) => crate::streamed::send_reply(self.econtext.router.core(), msg, &*out),
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

    fn run_one(
        &self,
        chain: Option<&str>,
        name: &str,
        payload: Vec<u8>,
        args_at: usize,
    ) -> Result<Box<dyn Output>, CallError> {
        if let Some(e) = self.chain_failure(chain) {
            return Err(e);
        }
        if name == FORGET_CHAIN {
            let (id,): (String,) = crate::call::decode_args(name, &payload[args_at..])?;
            crate::sync::lock(&self.failed_chains).remove(&id);
            return Ok(Box::new(OutputOf(())));
        }
        let Some(entry) = lookup(name) else {
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
            crate::sender::decoding_for(self.econtext.router.core(), || {
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
