//! [`Receiver`]: a handle that collects messages sent to it.
//!
//! A receiver registers a handle on its router and queues what arrives in
//! a [`Latch`]; threads wait with [`Receiver::get`], async code polls it as
//! a `Stream`, and a [`crate::Select`] can wait on many receivers at once.

use crate::context::Context;
use crate::error::{ChannelError, Error, Result};
use crate::latch::Latch;
use crate::message::Message;
use crate::router::{Core, Policy, Router};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

/// Messages addressed to one handle of this context: the seed's
/// `Receiver`.
///
/// ```
/// use mitogen::{Receiver, Sender};
///
/// /// Runs in the child: streams three lines back through `out`.
/// #[mitogen::remote]
/// fn count_to_three(out: Sender) -> mitogen::Result<()> {
///     for i in 1..=3 {
///         out.send(&format!("line {i}"))?;
///     }
///     out.close()
/// }
///
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> mitogen::Result<()> {
///     let child = router.local().connect()?;
///     let rx = Receiver::open(&router);
///     mitogen::call!(child, count_to_three(rx.to_sender()))?;
///     let lines: Vec<String> = rx.iter().map(|m| m.decode().unwrap()).collect();
///     assert_eq!(lines, ["line 1", "line 2", "line 3"]);
///     Ok(())
/// }
/// ```
pub struct Receiver {
    core: Arc<Core>,
    handle: u32,
    latch: Latch<Message>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Receiver(handle={})", self.handle)
    }
}

impl Receiver {
    /// The seed's constructor, every parameter explicit.
    ///
    /// - `handle`: the handle to listen on, or `None` for a fresh one. An
    ///   explicit handle already in use is an error.
    /// - `persist`: `false` accepts one message, then the handle is gone.
    /// - `respondent`: when that context disconnects, a dead message
    ///   arrives (so a waiter learns its peer is gone instead of waiting
    ///   forever).
    /// - `policy`: called with each message; refused messages get a dead
    ///   reply "refused by policy" and are not queued.
    pub fn new(
        router: &Router,
        handle: Option<u32>,
        persist: bool,
        respondent: Option<&Context>,
        policy: Option<Policy>,
    ) -> Result<Receiver> {
        Receiver::on_core(router.core(), handle, persist, respondent, policy)
    }

    /// [`Receiver::new`] on a router's core (for code holding a `Context`).
    pub(crate) fn on_core(
        core: &Arc<Core>,
        handle: Option<u32>,
        persist: bool,
        respondent: Option<&Context>,
        policy: Option<Policy>,
    ) -> Result<Receiver> {
        let (core, latch, sink) = Self::parts(core);
        let respondent = respondent.map(Context::context_id);
        let handle = match handle {
            None => core.add_handler(sink, persist, respondent, policy),
            Some(h) => {
                if !core.add_handler_new(h, sink, persist, respondent, policy) {
                    return Err(ChannelError::new(format!("handle {h} is already in use")).into());
                }
                h
            }
        };
        Ok(Receiver {
            core,
            handle,
            latch,
        })
    }

    /// A persistent receiver on a fresh handle, with no respondent or
    /// policy: the common case of [`Receiver::new`].
    pub fn open(router: &Router) -> Receiver {
        let (core, latch, sink) = Self::parts(router.core());
        let handle = core.add_handler(sink, true, None, None);
        Receiver {
            core,
            handle,
            latch,
        }
    }

    /// The router's core, a new queue, and the sink that fills it.
    fn parts(core: &Arc<Core>) -> (Arc<Core>, Latch<Message>, crate::router::Sink) {
        let latch = Latch::new();
        let l = latch.clone();
        let sink = Box::new(move |m: Message| {
            if m.is_dead() {
                // Every thread waiting in `get` learns, not only one.
                let last = m.clone();
                let _ = l.put(m);
                l.end_with(move || last.clone());
            } else {
                let _ = l.put(m);
            }
        });
        (core.clone(), latch, sink)
    }

    /// The handle senders address.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    pub(crate) fn latch(&self) -> &Latch<Message> {
        &self.latch
    }

    /// The next message if one is queued, without waiting (dead messages
    /// included, as [`Receiver::get_message`] gives them).
    pub fn try_get(&self) -> Result<Option<Message>> {
        Ok(self.latch.try_get()?)
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    /// `true` when a [`Receiver::get`] would wait now. Fails once the
    /// receiver is closed, as waiting could not help.
    pub fn empty(&self) -> Result<bool> {
        self.latch
            .empty()
            .map_err(|_| ChannelError::new("the receiver was closed").into())
    }

    /// Waits up to `timeout` (`None`: forever) for the next message. A dead
    /// message (its respondent disconnected, the sender closed, a send
    /// failed) becomes [`ChannelError`] with its reason; a closed receiver
    /// says so.
    ///
    /// After a dead message every `get` fails with it, in every thread
    /// waiting now or later: one [`crate::Sender::close`] ends the work of
    /// all the threads reading a receiver. Messages that arrive later are
    /// still returned first.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Message> {
        if self.latch.would_block() {
            crate::broker::refuse_wait_on_broker("a message")?;
        }
        let m = match self.latch.get(timeout) {
            Err(Error::Latch(_)) => Err(ChannelError::new("the receiver was closed").into()),
            other => other,
        }?;
        match m.dead_reason() {
            Some(reason) => Err(ChannelError::new(reason).into()),
            None => Ok(m),
        }
    }

    /// Like [`Receiver::get`], but a dead message is returned as a message
    /// (see [`Message::is_dead`]) instead of an error: the seed's
    /// `get(throw_dead=False)`. For a receiver fed by several senders,
    /// each of which closes it when done.
    ///
    /// Each dead message is returned once, here: it does not end the
    /// receiver for `get_message` callers.
    pub fn get_message(&self, timeout: Option<Duration>) -> Result<Message> {
        if self.latch.nothing_queued() {
            crate::broker::refuse_wait_on_broker("a message")?;
        }
        match self.latch.get_queued(timeout) {
            Err(Error::Latch(_)) => Err(ChannelError::new("the receiver was closed").into()),
            other => other,
        }
    }

    /// A [`crate::Sender`] to this receiver, usable here or, passed in a
    /// call, from any context that can route to this one.
    pub fn to_sender(&self) -> crate::Sender {
        crate::Sender::from_parts(self.core.clone(), self.core.id, self.handle)
    }

    /// Unregisters the handle and wakes every waiter with an error.
    pub fn close(&self) {
        self.core.del_handler(self.handle);
        self.latch.close();
    }

    /// Messages until the receiver is closed or a dead message arrives.
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        std::iter::from_fn(move || self.get(None).ok())
    }
}

impl<'a> IntoIterator for &'a Receiver {
    type Item = Message;
    type IntoIter = Box<dyn Iterator<Item = Message> + 'a>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Async form: each message as `Ok`, a dead message as `Err` (then the
/// stream ends), and the end once the receiver is closed.
impl futures_core::Stream for Receiver {
    type Item = Result<Message>;
    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Message>>> {
        match self.latch.poll_get(cx) {
            Poll::Ready(Ok(m)) if m.is_dead() => {
                self.latch.close();
                Poll::Ready(Some(Err(ChannelError::new(
                    m.dead_reason().unwrap_or_default(),
                )
                .into())))
            }
            Poll::Ready(Ok(m)) => Poll::Ready(Some(Ok(m))),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.core.del_handler(self.handle);
        // A select waiting on this receiver learns it is gone.
        self.latch.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_delivery_and_close() {
        let router = Router::new().unwrap();
        let rx = Receiver::open(&router);
        for i in 0..3u32 {
            let m = Message::encode(&i)
                .unwrap()
                .to(router.context_id(), rx.handle());
            router.route(m).unwrap();
        }
        let got: Vec<u32> = (0..3)
            .map(|_| {
                rx.get(Some(Duration::from_secs(5)))
                    .unwrap()
                    .decode()
                    .unwrap()
            })
            .collect();
        assert_eq!(got, [0, 1, 2]);
        assert!(rx.empty().unwrap());
        rx.close();
        assert!(matches!(
            rx.get(Some(Duration::from_secs(1))),
            Err(Error::Channel(_))
        ));
    }

    #[test]
    fn broker_shutdown_wakes_a_waiter_without_respondent() {
        let router = Router::new().unwrap();
        let rx = Arc::new(Receiver::open(&router));
        let r2 = rx.clone();
        let waiter = std::thread::spawn(move || r2.get(Some(Duration::from_secs(30))));
        std::thread::sleep(Duration::from_millis(50));
        let start = std::time::Instant::now();
        router.shutdown();
        match waiter.join().unwrap() {
            Err(Error::Channel(e)) => assert!(e.reason().contains("shut down"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn get_message_returns_dead_messages() {
        let router = Router::new().unwrap();
        let rx = Receiver::open(&router);
        let tx = rx.to_sender();
        tx.send(&1u8).unwrap();
        tx.close().unwrap();
        let t = Some(Duration::from_secs(5));
        assert_eq!(rx.get_message(t).unwrap().decode::<u8>().unwrap(), 1);
        let dead = rx.get_message(t).unwrap();
        assert!(dead.is_dead(), "{dead:?}");
        assert_eq!(dead.dead_reason().as_deref(), Some(crate::sender::CLOSED));
        rx.close();
        assert!(matches!(rx.get_message(t), Err(Error::Channel(_))));
    }

    #[test]
    fn policy_refusal_and_unknown_handle_bounce() {
        let router = Router::new().unwrap();
        let refuse: Policy = Arc::new(|_| false);
        let rx = Receiver::new(&router, None, true, None, Some(refuse)).unwrap();
        let answers = Receiver::open(&router);
        let mut m = Message::encode(&1u8)
            .unwrap()
            .to(router.context_id(), rx.handle());
        m.reply_to = answers.handle();
        router.route(m).unwrap();
        match answers.get(Some(Duration::from_secs(5))) {
            Err(Error::Channel(e)) => assert!(e.reason().contains("refused by policy"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(rx.empty().unwrap());
        let mut m = Message::encode(&1u8)
            .unwrap()
            .to(router.context_id(), 999_999);
        m.reply_to = answers.handle();
        router.route(m).unwrap();
        match answers.get(Some(Duration::from_secs(5))) {
            Err(Error::Channel(e)) => assert!(e.reason().contains("no receiver"), "{e}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_route_and_absent_respondent_are_dead_at_once() {
        let router = Router::new().unwrap();
        let ghost = Context::new(router.core().clone(), 4242, "ghost");
        let rx = Receiver::new(&router, None, false, Some(&ghost), None).unwrap();
        match rx.get(Some(Duration::from_secs(5))) {
            Err(Error::Channel(e)) => assert!(e.reason().contains("not connected"), "{e}"),
            other => panic!("{other:?}"),
        }
        let err = ghost.call_no_reply::<NoSuchFn>(()).unwrap_err();
        assert!(err.to_string().contains("no route"), "{err}");
    }

    struct NoSuchFn;
    impl crate::RemoteFn for NoSuchFn {
        type Args = ();
        type Output = ();
        const NAME: &'static str = "nowhere::nothing";
    }
}
