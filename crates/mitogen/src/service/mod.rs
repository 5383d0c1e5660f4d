//! Services: long-lived objects in a context whose methods other contexts
//! call by name (the seed's `mitogen.service`).
//!
//! A remote function ([`crate::remote`]) has no state of its own and runs
//! on the main thread of a child, called by its parents. Some work wants
//! more: a file server that remembers which paths it may hand out, a
//! fake `ssh` that keeps the contexts it started. A *service* is such an
//! object, one per context, created on the first call that needs it
//! ([`Service::new`], the seed's activation) and kept until the context
//! ends. Its methods run on the context's service pool, a bounded set of
//! threads beside the main thread ([`Services`]), so they run
//! concurrently with each other and with ordinary calls; state they share
//! lives behind the service's own locks (methods take `&self`).
//!
//! Every context serves services, the master included: a child may call a
//! service of its parent when the method allows it. Each exposed method
//! says who may call it ([`Allow`]): by default only the context's
//! parents (and the context itself); `policy = any` opens it to every
//! context that can reach this one (a child, a sibling). The check uses
//! the message's `auth_id`, which a router only lets through when it
//! routes back through the link it arrived on, so a child cannot pose as
//! a parent.
//!
//! ```
//! use mitogen::service::Service;
//! use std::sync::atomic::{AtomicU64, Ordering};
//!
//! /// Counts, across calls, in the context it lives in.
//! struct Counter(AtomicU64);
//!
//! impl Service for Counter {
//!     const NAME: &'static str = "example::Counter";
//!     fn new(_: &mitogen::ExternalContext) -> Result<Self, mitogen::service::BoxError> {
//!         Ok(Counter(AtomicU64::new(0)))
//!     }
//! }
//!
//! #[mitogen::service]
//! impl Counter {
//!     /// Adds `n`; returns the new total. Parents only (the default).
//!     #[expose]
//!     fn add(&self, n: u64) -> u64 {
//!         self.0.fetch_add(n, Ordering::SeqCst) + n
//!     }
//!
//!     /// The total, for any context.
//!     #[expose(policy = any)]
//!     fn total(&self) -> u64 {
//!         self.0.load(Ordering::SeqCst)
//!     }
//! }
//!
//! #[mitogen::main]
//! fn main(router: mitogen::Router) -> mitogen::Result<()> {
//!     let child = router.local().connect()?;
//!     // `counter::add` is the marker the attribute made for `Counter::add`.
//!     assert_eq!(child.call_service::<counter::add>((2,))?, 2);
//!     assert_eq!(child.call_service::<counter::add>((3,))?, 5);
//!     assert_eq!(child.call_service::<counter::total>(())?, 5);
//!     Ok(())
//! }
//! ```
//!
//! # Errors
//!
//! A call that cannot run fails with a [`crate::CallError`] whose
//! `type_name` says why: `mitogen::UnknownService` (no service of that
//! name in this program), `mitogen::UnknownMethod` (the service has no
//! exposed method of that name), `mitogen::Refused` (the method's policy
//! refuses the caller), `mitogen::ActivationFailed` ([`Service::new`]
//! failed; its error is the source chain; the next call tries again),
//! `mitogen::PoolFull` and `mitogen::PoolStopped` (see [`Services`]). A
//! method's own error or panic is reported as for a remote function.
//!
//! # Wire format
//!
//! A service call is a message to the reserved handle `CALL_SERVICE`
//! whose payload is the MessagePack array `[service, method, args]`;
//! the reply is a call's reply.

mod host;

pub use host::Services;

use crate::call::CallEnv;
use crate::context::{Context, PendingCall};
use crate::dispatch::ExternalContext;
use crate::error::{CallError, Result};
use crate::frame::handle;
use crate::message::{encode_into, Message};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::sync::Arc;

/// Any error, boxed: what [`Service::new`] may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A type whose methods other contexts call by name (with
/// `#[mitogen::service]` on an `impl` block exposing them).
///
/// One instance exists per context, made by [`Service::new`] on the
/// first call of one of its methods (or by [`Services::get`]) and kept
/// until the context's broker stops. Methods run concurrently on the
/// service pool, so the type is `Send + Sync` and keeps its state behind
/// locks or atomics.
pub trait Service: Send + Sync + Sized + 'static {
    /// The name calls address it by, unique in the program (a path such
    /// as `"myapp::FileService"` is a good choice).
    const NAME: &'static str;

    /// Makes the context's instance. An error fails the call that
    /// activated it (`mitogen::ActivationFailed`, with the error as its
    /// source chain); the next call tries again.
    fn new(econtext: &ExternalContext) -> std::result::Result<Self, BoxError>;
}

/// Who may call an exposed method (`#[expose(policy = ...)]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    /// The context's parents, and the context itself (`policy = parents`,
    /// the default).
    Parents,
    /// Any context that can reach this one (`policy = any`).
    Any,
}

/// An exposed method of a service, as a type: what
/// [`Context::call_service`] names.
///
/// `#[mitogen::service]` on `impl FileService` implements it on marker
/// types in a module named after the type in snake case
/// (`file_service::fetch` for `FileService::fetch`).
pub trait ServiceMethod {
    /// The service the method belongs to.
    type Service: Service;
    /// Tuple of the parameters sent over the wire.
    type Args: Serialize;
    /// What a successful call returns.
    type Output: DeserializeOwned;
    /// The method's name.
    const METHOD: &'static str;
}

/// The context that made a service call: a method receives it by
/// declaring a `&Caller` parameter (not sent; injected like
/// `&ExternalContext`).
#[derive(Clone, Debug)]
pub struct Caller {
    context: Context,
    auth_id: u32,
}

impl Caller {
    /// The calling context's id (the message's `src_id`).
    pub fn context_id(&self) -> u32 {
        self.context.context_id()
    }

    /// The id whose authority the call carries (the message's
    /// `auth_id`): the caller's, or a parent's acting through it.
    pub fn auth_id(&self) -> u32 {
        self.auth_id
    }

    /// The calling context, to call back or send to.
    pub fn context(&self) -> &Context {
        &self.context
    }
}

#[doc(hidden)]
/// A context's instance of a service, type-erased (generated code).
pub type Instance = Arc<dyn Any + Send + Sync>;

#[doc(hidden)]
/// What generated code receives to run a method.
#[derive(Debug)]
pub struct ServiceEnv<'a> {
    /// Router and running context (injected parameters).
    pub call: CallEnv<'a>,
    /// Who called.
    pub caller: &'a Caller,
}

#[doc(hidden)]
/// A registry entry for one exposed method, written by
/// `#[mitogen::service]`.
pub struct MethodEntry {
    /// [`Service::NAME`].
    pub service: &'static str,
    /// The method's name.
    pub method: &'static str,
    /// Who may call it.
    pub allow: Allow,
    /// Makes the service's instance.
    pub activate: Activate,
    /// Decodes the arguments, runs the method on the instance, encodes
    /// the result.
    pub invoke: Invoke,
}

#[doc(hidden)]
/// Makes a service's instance (generated code: [`activate`]).
pub type Activate = fn(&ExternalContext) -> std::result::Result<Instance, CallError>;

#[doc(hidden)]
/// Runs one method on an instance with encoded arguments (generated code).
pub type Invoke = fn(&Instance, &ServiceEnv<'_>, &[u8]) -> std::result::Result<Vec<u8>, CallError>;

impl std::fmt::Debug for MethodEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "MethodEntry({}.{}, {:?})",
            self.service, self.method, self.allow
        )
    }
}

#[doc(hidden)]
/// Every exposed service method linked into this binary.
#[linkme::distributed_slice]
pub static SERVICE_METHODS: [MethodEntry];

/// Why activation failed: the service's own error as the source.
#[derive(Debug)]
struct ActivationFailed {
    service: &'static str,
    source: BoxError,
}

impl std::fmt::Display for ActivationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "service {} could not start in context {}: {}",
            self.service,
            crate::context_id(),
            self.source
        )
    }
}

impl std::error::Error for ActivationFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

#[doc(hidden)]
/// Makes the instance of `S` (generated code).
pub fn activate<S: Service>(
    econtext: &ExternalContext,
) -> std::result::Result<Instance, CallError> {
    match S::new(econtext) {
        Ok(s) => Ok(Arc::new(s)),
        Err(source) => Err(CallError::from_error(
            "mitogen::ActivationFailed",
            &ActivationFailed {
                service: S::NAME,
                source,
            },
        )),
    }
}

#[doc(hidden)]
/// The instance as an `S` (generated code).
pub fn instance<S: Service>(i: &Instance) -> std::result::Result<&S, CallError> {
    i.downcast_ref::<S>().ok_or_else(|| {
        CallError::new(
            "mitogen::ServiceError",
            format!("two service types are named {}", S::NAME),
        )
    })
}

/// Builds a service call's payload: `[service, method, args]`.
fn encode_service_call<A: Serialize + ?Sized>(
    service: &str,
    method: &str,
    args: &A,
) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(32 + service.len() + method.len());
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut buf, 3);
    let _ = rmp::encode::write_str(&mut buf, service);
    let _ = rmp::encode::write_str(&mut buf, method);
    encode_into(&mut buf, args)?;
    Ok(buf)
}

/// Service calls, on the calling side.
impl Context {
    /// Calls the service method `M` in this context with `args` and waits
    /// for its result; see [`mod@crate::service`].
    pub fn call_service<M: ServiceMethod>(&self, args: M::Args) -> Result<M::Output> {
        self.call_service_async::<M>(args)?.get(None)
    }

    /// Starts a call of the service method `M` and returns at once.
    pub fn call_service_async<M: ServiceMethod>(
        &self,
        args: M::Args,
    ) -> Result<PendingCall<M::Output>> {
        let payload = encode_service_call(<M::Service as Service>::NAME, M::METHOD, &args)?;
        self.start_request(handle::CALL_SERVICE, payload)
    }

    /// Starts a call of the service method `M` whose result (and error)
    /// nobody waits for.
    pub fn call_service_no_reply<M: ServiceMethod>(&self, args: M::Args) -> Result<()> {
        let payload = encode_service_call(<M::Service as Service>::NAME, M::METHOD, &args)?;
        self.send(Message::with_payload(payload).to(self.context_id(), handle::CALL_SERVICE))
    }

    /// Calls `method` of the service named `service` with `args` (the
    /// tuple of its parameters), for programs that choose what to call at
    /// run time: nothing is checked at compile time. With
    /// `R` = [`crate::Value`], any result decodes.
    pub fn call_service_by_name<R: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        args: &(impl Serialize + ?Sized),
    ) -> Result<R> {
        let payload = encode_service_call(service, method, args)?;
        self.start_request::<R>(handle::CALL_SERVICE, payload)?
            .get(None)
    }
}
