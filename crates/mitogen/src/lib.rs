//! Distributed self-replicating programs for Rust.
//!
//! A program linking `mitogen` starts copies of *itself* as other
//! processes — local subprocesses, forks, ssh hosts, and other accounts
//! through sudo, su or doas — with nothing installed on the target but a
//! POSIX shell. It then calls functions compiled into the
//! binary in any of those contexts, with arguments and results checked by
//! the compiler.
//!
//! ```
//! use mitogen::{Router, Result};
//!
//! /// Runs wherever it is called.
//! #[mitogen::remote]
//! fn hostname_and_pid() -> std::io::Result<(String, u32)> {
//!     let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
//!     Ok((host.trim().to_string(), std::process::id()))
//! }
//!
//! #[mitogen::main]            // children enter here before any user code
//! fn main(router: Router) -> Result<()> {
//!     let ctx = router.local().remote_name("demo").connect()?;
//!     let (host, pid) = mitogen::call!(ctx, hostname_and_pid())?;
//!     println!("{} runs on {host} as pid {pid}", ctx.name());
//!     Ok(())
//! }
//! ```
//!
//! # How it fits together
//!
//! - [`Router`] routes [`Message`]s between this context, its parent and
//!   its children, and has the context factories ([`Router::local`],
//!   [`Router::fork`], [`Router::ssh`], [`Router::sudo`], [`Router::su`],
//!   [`Router::doas`]; each also `.via(&ctx)` another context).
//! - [`Broker`] is the single I/O thread of a process.
//! - [`fakessh::run`] runs a local tool (rsync, scp, git) whose `ssh`
//!   runs its commands on a context.
//! - [`Context`] is a handle to another context: [`Context::call`],
//!   [`Context::call_async`], [`Context::call_no_reply`], [`CallChain`].
//! - `#[remote]` exposes a function; only exposed functions can be called.
//! - Every failure is an [`Error`]: [`CallError`] (remote error or panic),
//!   [`StreamError`], [`TimeoutError`], [`ChannelError`], [`LatchError`],
//!   [`PasswordError`], [`HostKeyError`].
//!
//! `docs/ARCHITECTURE.md` in the repository describes the threads, a
//! message's path and the bootstrap; `docs/SEED-MAP.md` maps every entry of
//! Python Mitogen's API to its Rust form.

#![deny(missing_docs, rust_2018_idioms)]
#![warn(missing_debug_implementations)]

extern crate self as mitogen;

mod agent;
mod bootstrap;
mod broker;
pub mod bulk;
mod call;
mod callbacks;
mod channel;
mod child;
mod connect;
mod context;
mod dispatch;
mod error;
mod events;
pub mod fakessh;
pub mod files;
mod frame;
mod identity;
mod latch;
mod link;
mod logging;
mod message;
mod owned;
mod panics;
mod pool;
mod process;
mod reap;
mod reassembly;
mod receiver;
mod redact;
mod router;
mod select;
mod sender;
pub mod service;
mod streamed;
mod sync;
#[doc(hidden)]
#[cfg(feature = "testing")]
pub mod testing;
mod timer;
mod tmpfile;
pub mod unix;
mod utils;

pub use broker::{Broker, DEFAULT_SHUTDOWN_TIMEOUT};
pub use call::RemoteFn;
pub use channel::Channel;
pub use connect::doas::{DoasBuilder, DOAS_INCORRECT_PROMPTS};
pub use connect::fork::ForkBuilder;
pub use connect::local::LocalBuilder;
pub use connect::machinectl::MachinectlBuilder;
pub use connect::setns::{SetnsBuilder, SetnsKind};
pub use connect::ssh::{HostKeyCheck, SshBuilder, DEFAULT_KEEPALIVE};
pub use connect::su::{SuBuilder, SU_INCORRECT_PROMPTS};
pub use connect::sudo::SudoBuilder;
pub use connect::transport::buildah::BuildahBuilder;
pub use connect::transport::docker::{DockerBuilder, PodmanBuilder};
pub use connect::transport::jail::JailBuilder;
pub use connect::transport::kubectl::KubectlBuilder;
pub use connect::transport::lxc::LxcBuilder;
pub use connect::transport::lxd::{IncusBuilder, LxdBuilder};
pub use connect::DEFAULT_CONNECT_TIMEOUT;
pub use context::{CallChain, Context, PendingCall};
pub use dispatch::ExternalContext;
pub use error::{
    CallError, ChannelError, CodecError, CodecOp, Error, HostKeyError, LatchError, PasswordError,
    Result, SelectError, StreamError, TargetError, TargetErrorKind, TimeoutError,
};
pub use events::{ChildExit, Disconnect, Subscription};
pub use frame::{Encoding, DEFAULT_MAX_MESSAGE_SIZE};
pub use identity::{context_id, is_master, parent_id, parent_ids, MASTER_ID, VERSION};
pub use latch::{Latch, LatchFuture};
pub use link::DEFAULT_MAX_QUEUED;
pub use message::Message;
pub use pool::{DEFAULT_POOL_QUEUED, DEFAULT_POOL_THREADS};
pub use process::{default_remote_name, remote_name_of};
pub use reassembly::DEFAULT_MAX_PAYLOAD;
pub use receiver::Receiver;
pub use redact::{Blob, Secret};
pub use router::{LinkStats, Policy, Router, DEFAULT_SEND_TIMEOUT};
pub use select::{Event, Select, Selectable, SourceId};
pub use sender::Sender;
/// Bytes that serialize as one MessagePack `bin` (not an array of
/// integers): use it for bulk arguments and results.
pub use serde_bytes::ByteBuf;
pub use timer::Timer;
pub use utils::{cast, log_to_file, run_with_router, Value};

/// Exposes a function to parent contexts.
///
/// The function keeps working as a normal function. Beside it, in the type
/// namespace, the attribute defines a marker type of the same name
/// implementing [`RemoteFn`], which is what calls name:
///
/// ```no_run
/// #[mitogen::remote]
/// fn add(a: u64, b: u64) -> u64 { a + b }
///
/// # fn demo(ctx: &mitogen::Context) -> mitogen::Result<()> {
/// let sum = ctx.call::<add>((1, 2))?;        // type-checked: (u64, u64) -> u64
/// let sum2 = mitogen::call!(ctx, add(1, 2))?; // the same, as a call expression
/// assert_eq!(add(1, 2), 3);                   // still an ordinary function
/// # Ok(()) }
/// ```
///
/// - Parameters and the result are serde types. A function returning a
///   type spelled `...Result<T, E>` (with `E` convertible to
///   `Box<dyn Error + Send + Sync>`: any error type, `anyhow::Error`, …)
///   gives `T` to the caller, and its `Err` becomes a [`CallError`] with
///   the error's type name, message and source chain.
/// - A parameter of type `&Router` or `&ExternalContext` is injected by
///   the context running the call and not sent (the seed's
///   `takes_router` / `takes_econtext`).
/// - A panic becomes a [`CallError`] of type `"panic"`; the context goes on
///   serving.
/// - Generic and `async` functions cannot be remote.
///
/// # Concurrent functions
///
/// A context runs calls one at a time, in the order they arrive, on its
/// main thread. A function marked `#[mitogen::remote(concurrent)]` runs on
/// the context's worker pool instead, beside the main thread and other
/// concurrent calls, so a long transfer or command does not hold up the
/// calls behind it:
///
/// ```no_run
/// #[mitogen::remote(concurrent)]
/// fn run_backup(dir: String) -> std::io::Result<u64> {
///     // ... minutes of work ...
/// #   let _ = dir; Ok(0)
/// }
///
/// #[mitogen::remote]
/// fn load() -> f64 { 0.5 }
///
/// # fn demo(ctx: &mitogen::Context) -> mitogen::Result<()> {
/// let backup = ctx.call_async::<run_backup>(("/srv".into(),))?;
/// let l = ctx.call::<load>(())?; // answered while the backup runs
/// let bytes = backup.get(None)?;
/// # Ok(()) }
/// ```
///
/// Concurrent calls have no order, among themselves or with ordinary
/// calls (which keep theirs). The pool has at most
/// [`DEFAULT_POOL_THREADS`] threads and [`DEFAULT_POOL_QUEUED`] calls
/// waiting for one, unless the connect builder's `pool_size` says
/// otherwise; a call beyond that fails at once with a [`CallError`] of
/// type `mitogen::PoolFull`, and calls still queued when the context shuts
/// down fail with `mitogen::PoolStopped`. In a pipelined [`CallChain`], a
/// concurrent call does not wait for the calls before it, but does not run
/// once the chain has failed, and its own failure fails the chain's later
/// calls.
///
/// `concurrent` is the only argument; anything else does not compile:
///
/// ```compile_fail
/// #[mitogen::remote(parallel)]
/// fn f() {}
/// ```
pub use mitogen_macros::remote;

/// Exposes methods of a [`service::Service`] to other contexts.
///
/// On an `impl` block of a type implementing [`service::Service`], each
/// method marked `#[expose]` (parents only) or `#[expose(policy = any)]`
/// (any context) can be called by name; other methods stay private.
/// Exposed methods take `&self`, their parameters and result are serde
/// types, a result spelled `...Result<T, E>` gives `T` to the caller and
/// its `Err` a [`CallError`] (as for [`remote`]), and parameters of type
/// `&Router`, `&ExternalContext` and `&service::Caller` are injected,
/// not sent.
///
/// Beside the type, the attribute defines a module named after it in
/// snake case (`FileService` → `file_service`) holding one marker type
/// per exposed method, which calls name:
/// `ctx.call_service::<file_service::fetch>((path,))`. The module is as
/// visible as the attribute says: `#[mitogen::service]` keeps it private
/// to the enclosing module, `#[mitogen::service(pub)]` or
/// `#[mitogen::service(pub(crate))]` widen it. One such `impl` block per
/// type. See [`mod@service`] for an example.
///
/// ```compile_fail
/// # use mitogen::service::Service;
/// # struct S;
/// # impl Service for S { const NAME: &'static str = "s";
/// #   fn new(_: &mitogen::ExternalContext) -> Result<Self, mitogen::service::BoxError> { Ok(S) } }
/// #[mitogen::service]
/// impl S {
///     #[expose]
///     fn needs_mut(&mut self) {} // methods run concurrently: &self only
/// }
/// ```
pub use mitogen_macros::service;

/// Makes `main` the entry point of the master and of every child context.
///
/// `#[mitogen::main] fn main(router: Router) -> T { .. }` becomes
/// `fn main() -> T { mitogen::main(|router| { .. }) }`; see [`main()`].
pub use mitogen_macros::main;

/// Runs a function with a router of its own: the seed's `with_router`
/// decorator, the attribute form of [`run_with_router`].
///
/// The first parameter (`router: &Router` or `router: Router`) is removed
/// from the signature and supplied; the router is shut down when the
/// function returns.
///
/// ```no_run
/// #[mitogen::with_router]
/// fn uptime_of_a_child(router: &mitogen::Router, name: &str) -> mitogen::Result<String> {
///     let ctx = router.local().remote_name(name).connect()?;
///     Ok(ctx.name().to_string())
/// }
///
/// # fn demo() -> mitogen::Result<()> {
/// let name = uptime_of_a_child("probe")?; // no router argument
/// # Ok(()) }
/// ```
///
/// # Panics
///
/// When the broker cannot start (no epoll instance or thread available).
pub use mitogen_macros::with_router;

/// Entry point: call first thing in `main` (or use `#[mitogen::main]`).
///
/// In a process started as a context, this never returns: it runs the
/// agent (handshake, then serving calls) and exits when the parent
/// disconnects. Otherwise it starts a [`Broker`] and a [`Router`], runs `f`
/// with the router, then shuts the broker down (children are stopped and
/// reaped) and returns what `f` returned.
///
/// A program that does not call it cannot be a context: the parent's
/// connect fails with a [`StreamError`] saying that `mitogen::main` is
/// missing.
///
/// # Panics
///
/// When the broker cannot start (the system refuses an epoll instance or a
/// thread), before any user code runs.
pub fn main<R>(f: impl FnOnce(Router) -> R) -> R {
    // Run as the `ssh` of a tool under `fakessh::run`: never returns.
    fakessh::enter_if_invoked();
    if agent::is_agent() {
        agent::run();
    }
    bootstrap::prewarm();
    let router = match Router::new() {
        Ok(r) => r,
        Err(e) => panic!("mitogen: cannot start the broker: {e}"),
    };
    let broker = router.broker().clone();
    let r = f(router);
    broker.shutdown();
    broker.join();
    r
}

/// Calls a `#[remote]` function in a context, written as a call:
/// `call!(ctx, path::to::f(a, b))` is `ctx.call::<path::to::f>((a, b))`.
#[macro_export]
macro_rules! call {
    ($ctx:expr, $($f:ident)::+ ( $($arg:expr),* $(,)? )) => {
        $ctx.call::<$($f)::+>(( $($arg,)* ))
    };
}

#[doc(hidden)]
pub mod __private {
    //! Used by generated code; not a stable API.
    pub use crate::call::{
        decode_args, decode_args_owned, encode_output, CallEnv, Entry, IntoRemoteResult, Output,
        OutputOf, REMOTE_FNS,
    };
    pub use crate::service::{
        activate, instance, Instance, MethodEntry, ServiceEnv, SERVICE_METHODS,
    };
    pub use linkme;
}
