//! [`Sender`]: the sending end of a handle, and how handles travel.
//!
//! A `Sender` (and a [`Context`]) can be a call's argument or result: it
//! is written as the ids it names and, when decoded on the other side,
//! bound to that side's router, so it works there at once. Decoding
//! happens where a router is known (a message received through a router,
//! or a call being run); decoding one elsewhere is an error that says so.

use crate::context::Context;
use crate::error::Result;
use crate::message::Message;
use crate::router::Core;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::sync::Arc;

/// Reason carried by the dead message [`Sender::close`] sends.
pub const CLOSED: &str = "the sender closed the channel";

/// Sends messages to one handle of one context: the seed's `Sender`.
///
/// A sender is cheap to clone, and can be a call's argument or result: a
/// child given one streams data back, here lines of a file.
///
/// ```
/// use mitogen::{Receiver, Sender};
/// use std::io::BufRead;
///
/// #[mitogen::remote]
/// fn read_lines(path: String, out: Sender) -> mitogen::Result<usize> {
///     let f = std::fs::File::open(&path).map_err(|e| mitogen::StreamError::new(e.to_string()))?;
///     let mut n = 0;
///     for line in std::io::BufReader::new(f).lines().map_while(Result::ok) {
///         out.send(&line)?;
///         n += 1;
///     }
///     out.close()?;
///     Ok(n)
/// }
///
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> mitogen::Result<()> {
///     let path = std::env::temp_dir().join(format!("mitogen-doc-lines-{}", std::process::id()));
///     std::fs::write(&path, "alpha\nbeta\n").unwrap();
///     let child = router.local().connect()?;
///     let rx = Receiver::open(&router);
///     let n = mitogen::call!(child, read_lines(path.display().to_string(), rx.to_sender()))?;
///     let lines: Vec<String> = rx.iter().filter_map(|m| m.decode().ok()).collect();
///     assert_eq!((n, lines), (2, vec!["alpha".to_string(), "beta".to_string()]));
///     std::fs::remove_file(&path).ok();
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Sender {
    core: Arc<Core>,
    dst_id: u32,
    handle: u32,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sender(context={}, handle={})", self.dst_id, self.handle)
    }
}

impl Sender {
    /// A sender to `handle` in `context`.
    pub fn new(context: &Context, handle: u32) -> Sender {
        Sender {
            core: context.core.clone(),
            dst_id: context.context_id(),
            handle,
        }
    }

    pub(crate) fn from_parts(core: Arc<Core>, dst_id: u32, handle: u32) -> Sender {
        Sender {
            core,
            dst_id,
            handle,
        }
    }

    /// The context messages go to.
    pub fn context_id(&self) -> u32 {
        self.dst_id
    }

    /// The handle messages go to.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// Sends `value` (MessagePack). When the link towards the receiver is
    /// full, waits for room (at most [`crate::Router::send_timeout`]).
    pub fn send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.core
            .send(Message::encode(value)?.to(self.dst_id, self.handle))
    }

    /// [`Sender::send`] that never waits for room in a full link: it fails
    /// with a [`crate::StreamError`] of kind
    /// [`std::io::ErrorKind::WouldBlock`] instead, and nothing was sent.
    pub fn try_send<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let m = Message::encode(value)?.to(self.dst_id, self.handle);
        self.core.send_with(m, crate::link::Mode::Try, None)
    }

    /// Sends a prepared message (its `reply_to` and encoding kept) to this
    /// sender's handle.
    pub fn send_message(&self, msg: Message) -> Result<()> {
        self.core.send(msg.to(self.dst_id, self.handle))
    }

    /// Sends bytes as they are (a raw frame: no serializer involved).
    pub fn send_bytes(&self, bytes: Vec<u8>) -> Result<()> {
        self.core
            .send(Message::raw(bytes).to(self.dst_id, self.handle))
    }

    /// Tells the receiver no more messages will come: once what was sent
    /// before is taken, its `get` fails with a [`crate::ChannelError`]
    /// saying the sender closed it — in every thread waiting on it, now or
    /// later — and its iteration ends. ([`crate::Receiver::get_message`]
    /// sees each close once, for receivers fed by several senders.)
    pub fn close(&self) -> Result<()> {
        self.core
            .send(Message::dead(CLOSED).to(self.dst_id, self.handle))
    }
}

#[derive(Serialize, Deserialize)]
struct SenderWire {
    context_id: u32,
    handle: u32,
}

impl Serialize for Sender {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        SenderWire {
            context_id: self.dst_id,
            handle: self.handle,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Sender {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Sender, D::Error> {
        let w = SenderWire::deserialize(d)?;
        Ok(Sender::from_parts(
            crate::router::decoding_core("Sender")?,
            w.context_id,
            w.handle,
        ))
    }
}

#[derive(Serialize, Deserialize)]
struct ContextWire {
    context_id: u32,
    name: String,
}

impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        ContextWire {
            context_id: self.context_id(),
            name: self.name().to_string(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Context, D::Error> {
        let w = ContextWire::deserialize(d)?;
        let core = crate::router::decoding_core("Context")?;
        // A Context naming the decoding context itself is its `myself()`:
        // what it sends to it is delivered here.
        Ok(Context::new(core, w.context_id, &w.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, Receiver, Router};
    use std::time::Duration;

    #[test]
    fn send_then_close() {
        let router = Router::new().unwrap();
        let rx = Receiver::open(&router);
        let tx = rx.to_sender();
        tx.send(&"one").unwrap();
        tx.send_bytes(vec![1, 2, 3]).unwrap();
        tx.close().unwrap();
        let t = Some(Duration::from_secs(5));
        assert_eq!(rx.get(t).unwrap().decode::<String>().unwrap(), "one");
        assert_eq!(rx.get(t).unwrap().bytes().unwrap(), [1, 2, 3]);
        match rx.get(t) {
            Err(Error::Channel(e)) => assert_eq!(e.reason(), CLOSED),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn handles_bind_to_the_decoding_router() {
        let router = Router::new().unwrap();
        let rx = Receiver::open(&router);
        let wire = Message::encode(&rx.to_sender()).unwrap();
        // No router to bind to: a clear error, not a dangling handle.
        let err = wire.decode::<Sender>().unwrap_err();
        assert!(err.to_string().contains("only be decoded"), "{err}");
        let tx: Sender = crate::router::decoding_for(router.core(), || wire.decode()).unwrap();
        assert_eq!(
            (tx.context_id(), tx.handle()),
            (router.context_id(), rx.handle())
        );
        tx.send(&7u8).unwrap();
        let got: u8 = rx
            .get(Some(Duration::from_secs(5)))
            .unwrap()
            .decode()
            .unwrap();
        assert_eq!(got, 7);
    }
}
