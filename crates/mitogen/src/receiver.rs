//! [`Receiver`]: a handle that collects messages sent to it.
//!
//! This is the basic form the runtime's own replies use; the seed's full
//! messaging API (`Sender`, `Channel`, `Select`) builds on it.

use crate::context::Context;
use crate::error::{ChannelError, Error, Result};
use crate::latch::Latch;
use crate::message::Message;
use crate::router::{Core, Policy, Router};
use std::sync::Arc;
use std::time::Duration;

/// Messages addressed to one handle of this context.
///
/// ```no_run
/// # fn demo(router: &mitogen::Router, child: &mitogen::Context) -> mitogen::Result<()> {
/// use mitogen::{Message, Receiver};
/// let rx = Receiver::new(router, true, Some(child), None);
/// // ... give rx.handle() to `child`, which sends to (master, handle) ...
/// let msg = rx.get(Some(std::time::Duration::from_secs(5)))?;
/// let text: String = msg.decode()?;
/// # Ok(()) }
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
    /// Registers a new handle on `router`. `persist: false` accepts one
    /// message; `respondent` makes its disconnect arrive as a dead
    /// message; `policy` refuses messages with a dead reply.
    pub fn new(
        router: &Router,
        persist: bool,
        respondent: Option<&Context>,
        policy: Option<Policy>,
    ) -> Receiver {
        let latch = Latch::new();
        let l = latch.clone();
        let core = router.core().clone();
        let handle = core.add_handler(
            Box::new(move |m| {
                let _ = l.put(m);
            }),
            persist,
            respondent.map(Context::context_id),
            policy,
        );
        Receiver {
            core,
            handle,
            latch,
        }
    }

    /// The handle senders address.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// `true` when no message is waiting.
    pub fn empty(&self) -> bool {
        self.latch.empty()
    }

    /// Waits up to `timeout` (`None`: forever) for the next message. A dead
    /// message (its respondent disconnected, or a send failed) becomes
    /// [`ChannelError`] with its reason; a closed receiver says so.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Message> {
        match self.latch.get(timeout) {
            Ok(m) if m.is_dead() => {
                Err(ChannelError::new(m.dead_reason().unwrap_or_default()).into())
            }
            Ok(m) => Ok(m),
            Err(Error::Latch(_)) => Err(ChannelError::new("the receiver was closed").into()),
            Err(e) => Err(e),
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

impl Drop for Receiver {
    fn drop(&mut self) {
        self.core.del_handler(self.handle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_delivery_and_close() {
        let router = Router::new().unwrap();
        let rx = Receiver::new(&router, true, None, None);
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
        assert!(rx.empty());
        rx.close();
        assert!(matches!(
            rx.get(Some(Duration::from_secs(1))),
            Err(Error::Channel(_))
        ));
    }

    #[test]
    fn policy_refusal_and_unknown_handle_bounce() {
        let router = Router::new().unwrap();
        let refuse: Policy = Arc::new(|_| false);
        let rx = Receiver::new(&router, true, None, Some(refuse));
        let answers = Receiver::new(&router, true, None, None);
        let mut m = Message::encode(&1u8)
            .unwrap()
            .to(router.context_id(), rx.handle());
        m.reply_to = answers.handle();
        router.route(m).unwrap();
        match answers.get(Some(Duration::from_secs(5))) {
            Err(Error::Channel(e)) => assert!(e.reason().contains("refused by policy"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(rx.empty());
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
        let rx = Receiver::new(&router, false, Some(&ghost), None);
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
