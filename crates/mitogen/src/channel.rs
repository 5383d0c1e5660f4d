//! [`Channel`]: a [`Sender`] and a [`Receiver`] paired, for two contexts
//! that talk both ways over one pair of handles.
//!
//! As in the seed, each end must know the other's handle before it can
//! send: one side creates its channel, tells the other its handle (in a
//! call argument, say), and the other creates its channel addressed to
//! it. Passing a [`Sender`] (from [`Receiver::to_sender`]) in a call does
//! the same job in one step and is usually simpler.

use crate::context::Context;
use crate::error::Result;
use crate::message::Message;
use crate::receiver::Receiver;
use crate::router::Router;
use crate::sender::Sender;
use serde::Serialize;
use std::time::Duration;

/// Both ends of a conversation with one peer: sends to `(context,
/// dst_handle)` and receives on its own handle.
///
/// ```
/// use mitogen::{Channel, Sender};
///
/// /// Runs in the child: answers each number with its double on `back`
/// /// until `back`'s peer says it is done.
/// #[mitogen::remote]
/// fn doubler(econtext: &mitogen::ExternalContext, back: Sender) -> mitogen::Result<u32> {
///     let chan = Channel::new(econtext.router(), econtext.parent(), back.handle(), None)?;
///     back.send(&chan.handle())?; // tell the parent where to send
///     let mut n = 0;
///     for msg in chan.iter() {
///         let x: u64 = msg.decode()?;
///         chan.send(&(x * 2))?;
///         n += 1;
///     }
///     Ok(n)
/// }
///
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> mitogen::Result<()> {
///     let child = router.local().connect()?;
///     let t = Some(std::time::Duration::from_secs(30));
///     let rx = mitogen::Receiver::open(&router);
///     let pending = child.call_async::<doubler>((rx.to_sender(),))?;
///     let theirs: u32 = rx.get(t)?.decode()?;
///     let chan = Channel::from_parts(Sender::new(&child, theirs), rx);
///     for x in [1u64, 2, 3] {
///         chan.send(&x)?;
///         assert_eq!(chan.get(t)?.decode::<u64>()?, x * 2);
///     }
///     chan.close()?;
///     assert_eq!(pending.get(t)?, 3);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Channel {
    sender: Sender,
    receiver: Receiver,
}

impl Channel {
    /// A channel sending to `dst_handle` in `context` and receiving on
    /// `handle` (`None`: a fresh handle). Its receiver's respondent is
    /// `context`: if the peer disconnects, `get` fails instead of waiting.
    pub fn new(
        router: &Router,
        context: &Context,
        dst_handle: u32,
        handle: Option<u32>,
    ) -> Result<Channel> {
        Ok(Channel {
            sender: Sender::new(context, dst_handle),
            receiver: Receiver::new(router, handle, true, Some(context), None)?,
        })
    }

    /// A channel made of an existing sender and receiver.
    pub fn from_parts(sender: Sender, receiver: Receiver) -> Channel {
        Channel { sender, receiver }
    }

    /// The handle this end receives on (give it to the peer).
    pub fn handle(&self) -> u32 {
        self.receiver.handle()
    }

    /// The sending half.
    pub fn sender(&self) -> &Sender {
        &self.sender
    }

    /// The receiving half.
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// Sends `value` to the peer.
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.sender.send(value)
    }

    /// Sends raw bytes to the peer.
    pub fn send_bytes(&self, bytes: Vec<u8>) -> Result<()> {
        self.sender.send_bytes(bytes)
    }

    /// Tells the peer no more messages will come (its iteration ends).
    pub fn close(&self) -> Result<()> {
        self.sender.close()
    }

    /// Waits for the peer's next message; see [`Receiver::get`].
    pub fn get(&self, timeout: Option<Duration>) -> Result<Message> {
        self.receiver.get(timeout)
    }

    /// `true` when no message from the peer is waiting; fails once the
    /// channel's receiver is closed.
    pub fn empty(&self) -> Result<bool> {
        self.receiver.empty()
    }

    /// The peer's messages until it closes or disconnects.
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        self.receiver.iter()
    }
}
