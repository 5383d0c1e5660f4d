//! [`Context`]: a handle to another context, and the ways to call into it
//! ([`Context::call`], [`Context::call_async`], [`Context::call_no_reply`],
//! [`CallChain`]).

use crate::call::RemoteFn;
use crate::error::{Result, TimeoutError};
use crate::frame::handle;
use crate::latch::Latch;
use crate::link::direct::Hold;
use crate::message::Message;
use crate::router::Core;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

/// A context this process can talk to: a child, a descendant, or a parent.
///
/// Cloning is cheap. A context outlives nothing: once it disconnects, calls
/// fail with a [`crate::ChannelError`] naming the disconnect.
#[derive(Clone)]
pub struct Context {
    pub(crate) core: Arc<Core>,
    id: u32,
    name: Arc<str>,
    uploaded: Option<u64>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Context({:?}, id={})", self.name, self.id)
    }
}

impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && Arc::ptr_eq(&self.core, &other.core)
    }
}

impl Context {
    pub(crate) fn new(core: Arc<Core>, id: u32, name: &str) -> Context {
        Context {
            core,
            id,
            name: name.into(),
            uploaded: None,
        }
    }

    pub(crate) fn with_upload(mut self, bytes: u64) -> Context {
        self.uploaded = Some(bytes);
        self
    }

    /// Bytes of agent binary the connect that returned this handle sent to
    /// the target: the whole binary on a first connect, 0 when the target
    /// had it cached. `None` for handles not returned by a connect (and for
    /// `fork()`, which sends none).
    pub fn agent_upload_bytes(&self) -> Option<u64> {
        self.uploaded
    }

    /// The context's id, unique in the tree.
    pub fn context_id(&self) -> u32 {
        self.id
    }

    /// The context's name (`remote_name`, or a default naming its method).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `true` while a route to the context exists.
    pub fn is_connected(&self) -> bool {
        self.core.is_connected(self.id)
    }

    /// Sends a message to a handle in this context. When the link towards
    /// it is full (flow control: [`crate::Router::max_queued`]), waits for
    /// room at most [`crate::Router::send_timeout`], then fails with a
    /// [`crate::TimeoutError`].
    pub fn send(&self, msg: Message) -> Result<()> {
        let h = msg.handle;
        self.core.send(msg.to(self.id, h))
    }

    /// [`Context::send`] that never waits: a full link is a
    /// [`crate::StreamError`] of kind [`std::io::ErrorKind::WouldBlock`],
    /// and nothing was sent.
    pub fn try_send(&self, msg: Message) -> Result<()> {
        let h = msg.handle;
        self.core
            .send_with(msg.to(self.id, h), crate::link::Mode::Try, None)
    }

    /// Sends `msg` to its handle in this context with a fresh reply handle
    /// and returns the receiver the reply arrives on: the seed's
    /// `send_async`. The receiver takes one message; if this context is
    /// lost first, that message is a dead one saying so.
    pub fn send_async(&self, mut msg: Message) -> Result<crate::Receiver> {
        let rx = crate::Receiver::on_core(&self.core, None, false, Some(self), None)?;
        msg.reply_to = rx.handle();
        self.send(msg)?;
        Ok(rx)
    }

    /// [`Context::send_async`], then waits up to `timeout` for the reply:
    /// the seed's `send_await`. A dead reply (no receiver there, a refusal,
    /// the context lost) is a [`crate::ChannelError`].
    pub fn send_await(&self, msg: Message, timeout: Option<Duration>) -> Result<Message> {
        self.send_async(msg)?.get(timeout)
    }

    /// Calls `F` with `args` and waits for its result.
    ///
    /// ```
    /// #[mitogen::remote]
    /// fn add(a: u32, b: u32) -> u32 { a + b }
    ///
    /// #[mitogen::main]
    /// fn main(router: mitogen::Router) -> mitogen::Result<()> {
    ///     let ctx = router.local().connect()?;
    ///     assert_eq!(ctx.call::<add>((2, 3))?, 5);
    ///     assert_eq!(mitogen::call!(ctx, add(2, 3))?, 5);
    ///     Ok(())
    /// }
    /// ```
    pub fn call<F: RemoteFn>(&self, args: F::Args) -> Result<F::Output> {
        self.call_and_wait(None, F::NAME, &args)
    }

    /// Starts a call and returns at once; the result is collected with
    /// [`PendingCall::get`] or by awaiting it.
    pub fn call_async<F: RemoteFn>(&self, args: F::Args) -> Result<PendingCall<F::Output>> {
        self.start_call(None, F::NAME, &args)
    }

    /// Calls the remote function named `name` (its full path, as
    /// [`RemoteFn::NAME`] spells it) with `args` (the tuple of its
    /// parameters, or a [`crate::Value`] array), for programs that choose
    /// what to call at run time. Nothing is checked at compile time: a
    /// wrong name or argument shape is a [`crate::CallError`] (the remote
    /// side refused it), a result that is not an `R` a
    /// [`crate::CodecError`].
    /// With `R` = [`crate::Value`], any result decodes.
    pub fn call_by_name<R: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        args: &(impl serde::Serialize + ?Sized),
    ) -> Result<R> {
        self.call_and_wait(None, name, args)
    }

    /// Starts a call whose result (and error) nobody waits for.
    pub fn call_no_reply<F: RemoteFn>(&self, args: F::Args) -> Result<()> {
        self.send_call(None, F::NAME, &args, 0)
    }

    pub(crate) fn send_call<A: serde::Serialize + ?Sized>(
        &self,
        chain: Option<&str>,
        name: &str,
        args: &A,
        reply_to: u32,
    ) -> Result<()> {
        self.check_serves_calls(handle::CALL_FUNCTION)?;
        crate::streamed::send_call(&self.core, (self.id, reply_to), chain, name, args, None)
    }

    pub(crate) fn start_call<T, A: serde::Serialize + ?Sized>(
        &self,
        chain: Option<&str>,
        name: &str,
        args: &A,
    ) -> Result<PendingCall<T>> {
        self.start_call_holding(chain, name, args, None)
    }

    /// [`Context::start_call`], holding `hold`'s link before a request
    /// sent as one frame leaves (`streamed::HoldSlot`).
    fn start_call_holding<T, A: serde::Serialize + ?Sized>(
        &self,
        chain: Option<&str>,
        name: &str,
        args: &A,
        hold: crate::streamed::HoldSlot<'_, '_>,
    ) -> Result<PendingCall<T>> {
        self.check_serves_calls(handle::CALL_FUNCTION)?;
        let pending = self.pending::<T>();
        // A failed send (arguments that do not encode, no route, a message
        // over the size limit) is reported here, at once; dropping
        // `pending` removes the handler. Sent as it is encoded: a large
        // argument goes to the link from the caller's value (`streamed.rs`).
        let ids = (self.id, pending.handle);
        crate::streamed::send_call(&self.core, ids, chain, name, args, hold)?;
        Ok(pending)
    }

    /// [`Context::start_call`] and [`PendingCall::get`] in one: the link
    /// the answer will come back on is held before the request leaves
    /// (`link::direct::Hold`), so this thread, not the broker, reads it.
    pub(crate) fn call_and_wait<T, A>(&self, chain: Option<&str>, name: &str, args: &A) -> Result<T>
    where
        T: serde::de::DeserializeOwned,
        A: serde::Serialize + ?Sized,
    {
        let link = link_to(&self.core, self.id);
        let mut held = None;
        let hold = link.as_ref().map(|l| (l, &mut held));
        let pending = self.start_call_holding(chain, name, args, hold)?;
        pending.wait(None, held)
    }

    /// A child serves calls (its own too); the master does not (it does
    /// serve services): say so at once rather than with a dead message.
    fn check_serves_calls(&self, to: u32) -> Result<()> {
        if to == handle::CALL_FUNCTION
            && self.id == crate::identity::MASTER_ID
            && self.core.id == self.id
        {
            return Err(crate::StreamError::new(
                "the master serves no calls: call the function directly",
            )
            .into());
        }
        Ok(())
    }

    /// Sends `payload` to the reserved handle `to` of this context with a
    /// fresh reply handle, answered as a call is (a result or a
    /// [`crate::CallError`]).
    pub(crate) fn start_request<T>(&self, to: u32, payload: Vec<u8>) -> Result<PendingCall<T>> {
        self.check_serves_calls(to)?;
        let pending = self.pending::<T>();
        // A failed send (no route, a message over the size limit) is
        // reported here, at once; dropping `pending` removes the handler.
        let mut m = Message::with_payload(payload);
        m.reply_to = pending.handle;
        self.core.send(m.to(self.id, to))?;
        Ok(pending)
    }

    /// A pending answer from this context: a fresh reply handle whose
    /// respondent is this context.
    fn pending<T>(&self) -> PendingCall<T> {
        let latch = Latch::new();
        let h = self.core.add_latch_handler(latch.clone(), Some(self.id));
        PendingCall {
            latch,
            handle: h,
            answered: Default::default(),
            target: self.id,
            core: self.core.clone(),
            _t: PhantomData,
        }
    }

    /// Asks the context to shut down gracefully (it stops its own children
    /// first). With `wait`, blocks until it has disconnected, at most
    /// `timeout` (`None`: the broker's shutdown timeout plus 5 s).
    pub fn shutdown(&self, wait: bool, timeout: Option<Duration>) -> Result<()> {
        if wait {
            crate::broker::refuse_wait_on_broker("a context's shutdown")?;
        }
        let gone = Latch::new();
        let h = self.core.add_latch_handler(gone.clone(), Some(self.id));
        let sent = self
            .core
            .send(Message::encode(&())?.to(self.id, handle::SHUTDOWN));
        let result = match (sent, wait) {
            (Err(e), _) => Err(e),
            (Ok(()), false) => Ok(()),
            (Ok(()), true) => {
                let t =
                    timeout.unwrap_or(self.core.broker.shutdown_timeout() + Duration::from_secs(5));
                gone.get(Some(t)).map(drop).map_err(|e| match e {
                    crate::Error::Timeout(_) => {
                        TimeoutError::new(format!("waiting for {} to shut down", self.name), t)
                            .into()
                    }
                    e => e,
                })
            }
        };
        self.core.del_handler(h);
        result
    }
}

/// The link towards context `id`, which its answers come back on
/// (`None`: this context itself, or no route).
fn link_to(core: &Core, id: u32) -> Option<Arc<crate::link::Stream>> {
    (id != core.id).then(|| core.table.stream_for(id)).flatten()
}

/// A call in flight. [`PendingCall::get`] blocks for the result; the value
/// is also a [`Future`]. Dropping it abandons the result.
pub struct PendingCall<T> {
    latch: Latch<Message>,
    handle: u32,
    /// The answer was taken: delivering it removed the handler already.
    answered: std::sync::atomic::AtomicBool,
    /// The context that will answer.
    target: u32,
    core: Arc<Core>,
    _t: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for PendingCall<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PendingCall(handle={})", self.handle)
    }
}

impl<T: serde::de::DeserializeOwned> PendingCall<T> {
    /// Waits up to `timeout` (`None`: until the context answers or
    /// disconnects) and returns the result.
    pub fn get(&self, timeout: Option<Duration>) -> Result<T> {
        self.wait(timeout, None)
    }

    /// [`PendingCall::get`], reading the answer on `held` when the
    /// request was sent holding its link.
    fn wait(&self, timeout: Option<Duration>, held: Option<Hold<'_>>) -> Result<T> {
        if let Ok(Some(msg)) = self.latch.try_get() {
            // Already here: no clock, no wait.
            self.took_answer();
            return self.decode(msg);
        }
        let deadline = timeout.map(|t| std::time::Instant::now() + t);
        if self.latch.nothing_queued() {
            crate::broker::refuse_wait_on_broker("a call's result")?;
            // Read the reply ourselves rather than be woken by the broker.
            // A reply needs a round trip: poll before reading.
            let l = &self.latch;
            let done = || !l.nothing_queued() || l.is_closed();
            match held {
                Some(h) => {
                    self.core.read_held(h, &done, deadline, true);
                }
                None => {
                    if let Some(s) = link_to(&self.core, self.target) {
                        self.core.read_until(&s, &done, deadline, true);
                    }
                }
            }
        }
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        let msg = self.latch.get(left).map_err(|e| match e {
            crate::Error::Timeout(_) => {
                TimeoutError::new("waiting for a call's result", timeout.unwrap_or_default()).into()
            }
            e => e,
        })?;
        self.took_answer();
        self.decode(msg)
    }

    /// The answer as a `T`: handles in it (a `Context`, a `Sender`) bind
    /// to this router (the answer comes without a reference to it).
    fn decode(&self, msg: Message) -> Result<T> {
        crate::router::decoding_for(&self.core, || msg.into_decoded())
    }

    fn took_answer(&self) {
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// `true` once the result (or failure) has arrived.
    pub fn ready(&self) -> bool {
        !self.latch.nothing_queued()
    }
}

impl<T> PendingCall<T> {
    /// The router this call's answer is decoded by.
    pub(crate) fn origin(&self) -> Arc<dyn crate::message::Origin> {
        self.core.clone()
    }

    pub(crate) fn latch(&self) -> &Latch<Message> {
        &self.latch
    }
}

impl<T> Drop for PendingCall<T> {
    fn drop(&mut self) {
        // A one-shot handler is removed as its message is delivered.
        if !*self.answered.get_mut() {
            self.core.del_handler(self.handle);
        }
        // A select holding this call learns it is gone.
        self.latch.close();
    }
}

impl<T: serde::de::DeserializeOwned> Future for PendingCall<T> {
    type Output = Result<T>;
    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Result<T>> {
        let mut fut = self.latch.get_async();
        match Pin::new(&mut fut).poll(cx) {
            Poll::Ready(Ok(m)) => {
                self.took_answer();
                Poll::Ready(self.decode(m))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending => Poll::Pending,
        }
    }
}

static NEXT_CHAIN: AtomicU64 = AtomicU64::new(1);

/// Calls on one context whose failures are remembered by the context.
///
/// With `pipelined: true`, every call carries the chain's id: when one
/// fails, later calls in the chain are not run, and the next call that
/// waits for a reply ([`CallChain::call`]) returns the first failure. This
/// lets a program fire many [`CallChain::call_no_reply`]s without a round
/// trip each and still learn about an error. [`CallChain::reset`] forgets
/// the failure. With `pipelined: false`, calls are independent, as with
/// [`Context`]'s own methods.
#[derive(Debug)]
pub struct CallChain {
    context: Context,
    pipelined: bool,
    chain_id: Mutex<Option<String>>,
}

impl CallChain {
    /// A chain of calls on `context`.
    pub fn new(context: &Context, pipelined: bool) -> CallChain {
        CallChain {
            context: context.clone(),
            pipelined,
            chain_id: Mutex::new(None),
        }
    }

    /// The context the chain calls.
    pub fn context(&self) -> &Context {
        &self.context
    }

    fn chain(&self) -> Option<String> {
        if !self.pipelined {
            return None;
        }
        let mut c = crate::sync::lock(&self.chain_id);
        Some(
            c.get_or_insert_with(|| {
                format!(
                    "{}-{}-{}",
                    crate::context_id(),
                    std::process::id(),
                    NEXT_CHAIN.fetch_add(1, Ordering::Relaxed)
                )
            })
            .clone(),
        )
    }

    /// Starts `F` without waiting; a failure is kept for the next `call`.
    pub fn call_no_reply<F: RemoteFn>(&self, args: F::Args) -> Result<()> {
        self.context
            .send_call(self.chain().as_deref(), F::NAME, &args, 0)
    }

    /// Starts `F`; its result, or the chain's first failure, is collected
    /// from the pending call.
    pub fn call_async<F: RemoteFn>(&self, args: F::Args) -> Result<PendingCall<F::Output>> {
        self.context
            .start_call(self.chain().as_deref(), F::NAME, &args)
    }

    /// Calls `F` and waits: returns the chain's first failure if an
    /// earlier call failed.
    pub fn call<F: RemoteFn>(&self, args: F::Args) -> Result<F::Output> {
        self.context
            .call_and_wait(self.chain().as_deref(), F::NAME, &args)
    }

    /// Forgets the chain's recorded failure (in the context) and starts a
    /// new chain id.
    pub fn reset(&self) -> Result<()> {
        let saved = crate::sync::lock(&self.chain_id).take();
        match saved {
            Some(id) => self
                .context
                .send_call(None, crate::call::FORGET_CHAIN, &(id,), 0),
            None => Ok(()),
        }
    }
}
