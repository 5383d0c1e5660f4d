//! The serving side of services: one host per router, installed when the
//! router is made (so a master serves its children too), answering
//! `CALL_SERVICE` messages.
//!
//! What runs where, and why:
//!
//! - On the thread that read the message (the broker, or a thread reading
//!   its own link): only what is cheap and bounded — split the payload,
//!   find the method, check its policy. An unknown name or a refusal is
//!   answered there, so a caller that may not call never takes a pool
//!   slot.
//! - On the service pool (`pool.rs`, bounded in threads and queue; its
//!   own, beside the pool of concurrent remote functions): activation and
//!   the method itself, which may block. A full or stopped pool answers
//!   the call at once with the pool's error.
//!
//! Instances are kept in the host, which the router holds; an instance
//! that keeps a [`crate::Context`] or router handle therefore keeps the
//! router alive in a cycle. The cycle is cut when the broker stops: the
//! host drops every instance then. The router handles a service receives
//! never stop the broker when dropped (`Router::borrowed`).

use super::{Allow, Caller, Instance, MethodEntry, Service, ServiceEnv, SERVICE_METHODS};
use crate::broker::{Loop, Participant};
use crate::call::CallEnv;
use crate::context::Context;
use crate::dispatch::ExternalContext;
use crate::error::{CallError, Result, StreamError};
use crate::frame::handle;
use crate::message::Message;
use crate::pool::{Job, Pool, PoolSize, DEFAULT_IDLE_TIMEOUT};
#[cfg(not(test))]
use crate::router::ON_NEW_ROUTER;
use crate::router::{Core, Router};
use crate::sync::lock;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// The services of one context, seen from inside it: the service pool's
/// size and stop, and the context's own instances.
///
/// ```
/// # use mitogen::service::{Service, Services};
/// # struct Config(String);
/// # impl Service for Config {
/// #     const NAME: &'static str = "doc::Config";
/// #     fn new(_: &mitogen::ExternalContext) -> Result<Self, mitogen::service::BoxError> {
/// #         Ok(Config("defaults".into()))
/// #     }
/// # }
/// let router = mitogen::Router::new()?;
/// let services = Services::of(&router);
/// services.set_pool_size(4, 64)?; // before the first service call
/// let config = services.get::<Config>()?; // activated here, kept for callers
/// assert_eq!(config.0, "defaults");
/// assert!(services.is_active::<Config>());
/// # Ok::<(), mitogen::Error>(())
/// ```
#[derive(Clone)]
pub struct Services {
    host: Arc<Host>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let active: Vec<&str> = lock(&self.host.instances).keys().copied().collect();
        f.debug_struct("Services").field("active", &active).finish()
    }
}

impl Services {
    /// The services of `router`'s context.
    pub fn of(router: &Router) -> Services {
        Services {
            host: host_of(router.core()),
        }
    }

    /// Sets the service pool's bounds: at most `threads` threads (at
    /// least 1; started on demand, ended after 5 s idle) and `queued`
    /// calls waiting for one; one more is refused with
    /// `mitogen::PoolFull`. Defaults: [`crate::DEFAULT_POOL_THREADS`],
    /// [`crate::DEFAULT_POOL_QUEUED`]. Fails with a [`StreamError`] once
    /// the pool has taken its first call or been stopped.
    pub fn set_pool_size(&self, threads: usize, queued: usize) -> Result<()> {
        let mut size = lock(&self.host.size);
        if self.host.pool.get().is_some() {
            return Err(StreamError::new(
                "the service pool is already running: its size is set before the first service call",
            )
            .into());
        }
        *size = PoolSize::new(threads, queued);
        Ok(())
    }

    /// Stops the service pool: calls waiting for a thread fail with
    /// `mitogen::PoolStopped`, as does every later call; threads end once
    /// their running call returns. The broker's shutdown does the same.
    /// Stopping is final.
    pub fn stop(&self) {
        self.host.pool().stop();
    }

    /// This context's instance of `S`, activated now if no call has done
    /// so: a context hosting a service may set it up (paths a file
    /// service may serve, say) before others call it.
    pub fn get<S: Service>(&self) -> Result<Arc<S>> {
        let core = self.host.core()?;
        let inst = self.host.instance(S::NAME, super::activate::<S>, &core)?;
        inst.downcast::<S>().map_err(|_| {
            CallError::new(
                "mitogen::ServiceError",
                format!("two service types are named {}", S::NAME),
            )
            .into()
        })
    }

    /// `true` once `S` has been activated in this context.
    pub fn is_active<S: Service>(&self) -> bool {
        lock(&self.host.instances)
            .get(S::NAME)
            .is_some_and(|slot| lock(slot).is_some())
    }
}

/// One slot per service: locked while activating, so `new` runs once.
type Slot = Arc<Mutex<Option<Instance>>>;

pub(crate) struct Host {
    core: Weak<Core>,
    size: Mutex<PoolSize>,
    pool: OnceLock<Pool>,
    instances: Mutex<HashMap<&'static str, Slot>>,
}

#[cfg(not(test))]
#[linkme::distributed_slice(ON_NEW_ROUTER)]
static INSTALL: fn(&Arc<Core>) = install;

/// Gives a new router its host: the `CALL_SERVICE` handler, and a part
/// in the broker's shutdown.
#[cfg_attr(test, allow(dead_code))]
fn install(core: &Arc<Core>) {
    let host = host_of(core);
    let h = host.clone();
    core.add_handler_at(
        handle::CALL_SERVICE,
        Box::new(move |m| h.on_call(m)),
        true,
        None,
        None,
    );
    core.broker.add_participant(host);
}

fn host_of(core: &Arc<Core>) -> Arc<Host> {
    let any = core.services.get_or_init(|| {
        Arc::new(Host {
            core: Arc::downgrade(core),
            size: Mutex::new(PoolSize::default()),
            pool: OnceLock::new(),
            instances: Mutex::new(HashMap::new()),
        })
    });
    match any.clone().downcast::<Host>() {
        Ok(h) => h,
        // Only this module sets the field.
        Err(_) => unreachable!("the router's service host has another type"),
    }
}

/// The exposed methods by (service, method), and the service names.
struct Registry {
    methods: HashMap<(&'static str, &'static str), &'static MethodEntry>,
    services: HashSet<&'static str>,
}

fn registry() -> &'static Registry {
    static REG: OnceLock<Registry> = OnceLock::new();
    REG.get_or_init(|| {
        let mut methods = HashMap::new();
        for e in SERVICE_METHODS.iter() {
            if methods.insert((e.service, e.method), e).is_some() {
                tracing::error!(
                    "mitogen: service method {}.{} is exposed twice (two services with one NAME?)",
                    e.service,
                    e.method
                );
            }
        }
        let services = methods.keys().map(|(s, _)| *s).collect();
        Registry { methods, services }
    })
}

/// Finds the method, or says which name is unknown.
fn lookup(
    service: &str,
    method: &str,
    here: u32,
) -> std::result::Result<&'static MethodEntry, CallError> {
    let reg = registry();
    if let Some(e) = reg.methods.get(&(service, method)) {
        return Ok(e);
    }
    if reg.services.contains(service) {
        Err(CallError::new(
            "mitogen::UnknownMethod",
            format!("service {service} in context {here} exposes no method named {method}"),
        ))
    } else {
        Err(CallError::new(
            "mitogen::UnknownService",
            format!("no service named {service} in context {here}: only types with a #[mitogen::service] impl can be called"),
        ))
    }
}

fn malformed(what: &str) -> CallError {
    CallError::new(
        "mitogen::DecodeError",
        format!("malformed service call: {what}"),
    )
}

fn read_str<'a>(rd: &mut &'a [u8]) -> std::result::Result<&'a str, CallError> {
    let n = rmp::decode::read_str_len(rd).map_err(|_| malformed("expected a string"))? as usize;
    if rd.len() < n {
        return Err(malformed("truncated string"));
    }
    let (s, rest) = rd.split_at(n);
    *rd = rest;
    std::str::from_utf8(s).map_err(|_| malformed("a name is not UTF-8"))
}

/// Splits `[service, method, args]`; returns the names and where the
/// arguments start.
fn decode_service_call(data: &[u8]) -> std::result::Result<(&str, &str, usize), CallError> {
    let mut rd = data;
    let n = rmp::decode::read_array_len(&mut rd).map_err(|_| malformed("expected an array"))?;
    if n != 3 {
        return Err(malformed("expected 3 elements"));
    }
    let service = read_str(&mut rd)?;
    let method = read_str(&mut rd)?;
    Ok((service, method, data.len() - rd.len()))
}

/// Answers `msg` (when a reply is wanted) with `result`.
fn answer(msg: &Message, what: &str, result: std::result::Result<Vec<u8>, CallError>) {
    let reply = match result {
        Ok(bytes) => Message::with_payload(bytes),
        Err(e) => {
            if msg.reply_to == 0 {
                tracing::warn!("mitogen: service call {what} failed with nobody waiting: {e}");
                return;
            }
            Message::call_error(&e)
        }
    };
    if msg.reply_to == 0 {
        return;
    }
    if let Err(e) = msg.reply_message(reply) {
        // The caller must still hear, or it would wait forever.
        let why = CallError::new(
            "mitogen::ReplyError",
            format!("the result of {what} could not be sent: {e}"),
        );
        let _ = msg.reply_message(Message::call_error(&why));
    }
}

impl Host {
    fn core(&self) -> Result<Arc<Core>> {
        self.core
            .upgrade()
            .ok_or_else(|| StreamError::new("the router of these services is gone").into())
    }

    fn pool(&self) -> &Pool {
        self.pool.get_or_init(|| {
            let size = *lock(&self.size);
            let id = self.core.upgrade().map_or(0, |c| c.id);
            Pool::new(
                format!("the service pool of context {id}"),
                size,
                DEFAULT_IDLE_TIMEOUT,
            )
        })
    }

    /// A message to `CALL_SERVICE`: checked here, run on the pool.
    fn on_call(self: &Arc<Self>, msg: Message) {
        let Ok(core) = self.core() else { return };
        let (entry, args_at) = match decode_service_call(&msg.data) {
            Ok((service, method, at)) => match lookup(service, method, core.id) {
                Ok(e) => (e, at),
                Err(e) => return answer(&msg, &format!("{service}.{method}"), Err(e)),
            },
            Err(e) => return answer(&msg, "?", Err(e)),
        };
        let what = format!("{}.{}", entry.service, entry.method);
        let trusted = msg.auth_id == core.id || core.parent_ids.contains(&msg.auth_id);
        if entry.allow == Allow::Parents && !trusted {
            tracing::warn!("mitogen: refused {what} to context {}", msg.auth_id);
            let e = CallError::new(
                "mitogen::Refused",
                format!(
                    "{what} in context {} accepts calls from its parents only; context {} is not one",
                    core.id, msg.auth_id
                ),
            );
            return answer(&msg, &what, Err(e));
        }
        let msg = Arc::new(msg);
        let (host, m, w) = (self.clone(), msg.clone(), what.clone());
        let run = move || {
            let r = host.run(&core, entry, &m, args_at);
            answer(&m, &w, r);
        };
        let fail = move |e| answer(&msg, &what, Err(e));
        // Refused (full, stopped): `fail` has answered.
        let _ = self.pool().submit(Job::new(run, fail));
    }

    /// Activates the service if needed and runs the method (a pool thread).
    fn run(
        &self,
        core: &Arc<Core>,
        entry: &'static MethodEntry,
        msg: &Message,
        args_at: usize,
    ) -> std::result::Result<Vec<u8>, CallError> {
        let inst = self.instance(entry.service, entry.activate, core)?;
        let router = Router::borrowed(core.clone());
        let econtext = ExternalContext::for_router(router.clone());
        let name = core
            .table
            .name_of(msg.src_id)
            .unwrap_or_else(|| format!("context {}", msg.src_id));
        let caller = Caller {
            context: Context::new(core.clone(), msg.src_id, &name),
            auth_id: msg.auth_id,
        };
        let env = ServiceEnv {
            call: CallEnv {
                router: &router,
                econtext: &econtext,
            },
            caller: &caller,
        };
        let args = msg.data.get(args_at..).unwrap_or_default();
        let run = std::panic::AssertUnwindSafe(|| {
            // Handles among the arguments bind to this context's router.
            crate::router::decoding_for(core, || (entry.invoke)(&inst, &env, args))
        });
        std::panic::catch_unwind(run).unwrap_or_else(|p| {
            Err(CallError::from_panic(
                &format!("{}.{}", entry.service, entry.method),
                &*p,
            ))
        })
    }

    /// The instance of `service`, activated by `activate` if there is none
    /// (once: concurrent first calls wait for the first to finish).
    fn instance(
        &self,
        service: &'static str,
        activate: super::Activate,
        core: &Arc<Core>,
    ) -> std::result::Result<Instance, CallError> {
        let slot = lock(&self.instances).entry(service).or_default().clone();
        let mut slot = lock(&slot);
        if let Some(inst) = &*slot {
            return Ok(inst.clone());
        }
        let econtext = ExternalContext::for_router(Router::borrowed(core.clone()));
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| activate(&econtext)))
            .unwrap_or_else(|p| {
            Err(CallError::from_panic(
                &format!("activating service {service}"),
                &*p,
            ))
        })?;
        *slot = Some(made.clone());
        tracing::debug!(
            "mitogen: service {service} activated in context {}",
            core.id
        );
        Ok(made)
    }
}

impl Participant for Host {
    fn on_shutdown(self: Arc<Self>, _: &mut Loop) {
        // Before the links close: queued calls' failures still reach
        // their callers.
        if let Some(pool) = self.pool.get() {
            pool.stop();
        }
    }

    fn keep_alive(&self) -> bool {
        false
    }

    fn on_exit(self: Arc<Self>, _: &mut Loop) {
        if let Some(pool) = self.pool.get() {
            pool.stop();
        }
        // Cuts the cycle router → host → instance → router.
        let gone = std::mem::take(&mut *lock(&self.instances));
        drop(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_service_calls_are_errors() {
        for junk in [
            &b""[..],
            b"\x93",
            b"\x93\xa1s",
            b"\x93\xa5ab",
            b"\x92\xa1s\xa1m",
            b"\x93\xc0\xa1m\x90",
            b"\x93\xa1s\xa2\xff\xfe\x90",
        ] {
            assert!(decode_service_call(junk).is_err(), "{junk:?}");
        }
        let ok = b"\x93\xa1s\xa1m\x91\x05";
        assert_eq!(decode_service_call(ok).unwrap(), ("s", "m", 5));
    }
}
