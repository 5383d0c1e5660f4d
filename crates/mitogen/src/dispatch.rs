//! The child side of calls: [`ExternalContext`] and the loop that runs
//! calls, one at a time in arrival order, on the child's main thread.
//!
//! The broker thread only queues `CALL_FUNCTION` messages (after checking
//! that the caller is a parent); the main thread decodes, runs and answers
//! them, writing the reply straight to the parent's socket. A panic in a
//! function is caught and answered as a [`CallError`]; the loop goes on.

use crate::broker::{Loop, Participant};
use crate::call::{decode_call, lookup, CallEnv};
use crate::context::Context;
use crate::error::CallError;
use crate::frame::handle;
use crate::latch::Latch;
use crate::message::Message;
use crate::router::{Policy, Router};
use std::collections::HashMap;
use std::sync::Arc;
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

/// Stops the dispatch loop when the broker shuts down.
struct StopOnShutdown(Latch<Message>);

impl Participant for StopOnShutdown {
    fn on_shutdown(self: Arc<Self>, _: &mut Loop) {
        self.0.close();
    }
    fn keep_alive(&self) -> bool {
        false
    }
    fn on_exit(self: Arc<Self>, _: &mut Loop) {
        self.0.close();
    }
}

/// Serves calls until the parent disconnects or a shutdown is requested.
pub(crate) struct Dispatcher {
    econtext: ExternalContext,
    queue: Latch<Message>,
    failed_chains: HashMap<String, CallError>,
    profile: Option<HashMap<String, (u64, Duration)>>,
}

impl Dispatcher {
    pub(crate) fn new(router: Router, profiling: bool) -> Dispatcher {
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
        core.broker
            .add_participant(Arc::new(StopOnShutdown(queue.clone())));
        let q = queue.clone();
        let b = core.broker.clone();
        *crate::sync::lock(&core.on_parent_lost) = Some(Box::new(move || {
            q.close();
            b.shutdown();
        }));
        Dispatcher {
            econtext: ExternalContext { router, parent },
            queue,
            failed_chains: HashMap::new(),
            profile: profiling.then(HashMap::new),
        }
    }

    pub(crate) fn econtext(&self) -> &ExternalContext {
        &self.econtext
    }

    /// Runs calls until the queue closes.
    pub(crate) fn run(mut self) {
        let core = self.econtext.router.core().clone();
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
        self.write_profile();
    }

    fn handle(&mut self, msg: Message) {
        let started = Instant::now();
        // A failed call in a chain is not logged: the chain reports it to
        // the caller's next waiting call.
        let mut in_chain = false;
        let (name, result) = match decode_call(&msg.data) {
            Err(e) => (String::from("?"), Err(e)),
            Ok(parts) => {
                in_chain = parts.chain.is_some();
                let r = self.run_one(parts.chain.as_deref(), &parts.name, parts.args);
                if let (Err(e), Some(chain)) = (&r, parts.chain) {
                    self.failed_chains.entry(chain).or_insert_with(|| e.clone());
                }
                (parts.name, r)
            }
        };
        if let Some(p) = &mut self.profile {
            let e = p.entry(name.clone()).or_default();
            e.0 += 1;
            e.1 += started.elapsed();
        }
        let reply = match result {
            Ok(bytes) => Message::with_payload(bytes),
            Err(e) => {
                if msg.reply_to == 0 && !in_chain {
                    tracing::warn!("mitogen: call to {name} failed with nobody waiting: {e}");
                }
                Message::call_error(&e)
            }
        };
        if msg.reply_to != 0 {
            if let Err(e) = msg.reply_message(reply) {
                // The result could not travel (over max_message_size, say):
                // the caller must still hear about it, or it would wait
                // forever.
                let why = CallError::new(
                    "mitogen::ReplyError",
                    format!("the result of {name} could not be sent: {e}"),
                );
                let _ = msg.reply_message(Message::call_error(&why));
            }
        }
    }

    fn run_one(
        &mut self,
        chain: Option<&str>,
        name: &str,
        args: &[u8],
    ) -> Result<Vec<u8>, CallError> {
        if let Some(e) = chain.and_then(|c| self.failed_chains.get(c)) {
            return Err(e.clone());
        }
        if name == FORGET_CHAIN {
            let (id,): (String,) = crate::call::decode_args(name, args)?;
            self.failed_chains.remove(&id);
            return crate::call::encode_output(&());
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
            crate::sender::decoding_for(self.econtext.router.core(), || (entry.invoke)(&env, args))
        })) {
            Ok(r) => r,
            Err(p) => Err(CallError::from_panic(name, &*p)),
        }
    }

    fn write_profile(&self) {
        let Some(p) = &self.profile else { return };
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
