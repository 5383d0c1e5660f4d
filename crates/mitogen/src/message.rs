//! [`Message`]: one frame's routing fields plus its payload, as user code
//! sees it.

use crate::error::{CallError, ChannelError, CodecError, CodecOp, Error, Result, StreamError};
use crate::frame::{Encoding, Header};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt;
use std::sync::Arc;

/// Where a received message came in: the router that handed it to a
/// handler, as the message sees it.
///
/// A message is a plain value through the wire, link and router layers;
/// only when the router hands it to a handler does it stamp it with its
/// origin, so that [`Message::reply`] can answer and the handles inside its
/// payload ([`crate::Sender`], [`crate::Context`]) bind to that router.
/// Defined here and implemented by the router, so this module knows
/// nothing above it.
pub(crate) trait Origin: Send + Sync {
    /// Sends `msg` through the router the message arrived at.
    fn send(self: Arc<Self>, msg: Message) -> Result<()>;
    /// Runs `f` with handles decoded on this thread bound to that router.
    fn decoding(self: Arc<Self>, f: &mut dyn FnMut());
}

/// A routed message: the seed's `Message`.
///
/// `data` holds the payload as it travelled; [`Message::decode`] reads a
/// MessagePack payload into any serde type, [`Message::bytes`] gives raw
/// bytes. A message received through a [`crate::Router`] remembers where
/// it came in, so [`Message::reply`] can answer it.
///
/// ```
/// use mitogen::{Message, Receiver};
///
/// /// In the child: asks its parent a question and returns the answer.
/// #[mitogen::remote]
/// fn ask(econtext: &mitogen::ExternalContext, handle: u32) -> mitogen::Result<String> {
///     let answers = Receiver::open(econtext.router());
///     let mut q = Message::encode("what time is it?")?.to(econtext.parent().context_id(), handle);
///     q.reply_to = answers.handle();
///     econtext.parent().send(q)?;
///     answers.get(Some(std::time::Duration::from_secs(10)))?.decode()
/// }
///
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> mitogen::Result<()> {
///     let child = router.local().connect()?;
///     let questions = Receiver::open(&router);
///     let pending = child.call_async::<ask>((questions.handle(),))?;
///     let q = questions.get(Some(std::time::Duration::from_secs(10)))?;
///     assert_eq!((q.src_id, q.decode::<String>()?.as_str()), (child.context_id(), "what time is it?"));
///     q.reply(&"tea time")?;
///     assert_eq!(pending.get(None)?, "tea time");
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Message {
    /// Destination context id.
    pub dst_id: u32,
    /// Source context id.
    pub src_id: u32,
    /// Context on whose authority the message was sent.
    pub auth_id: u32,
    /// Handle in the destination.
    pub handle: u32,
    /// Handle in the source expecting a reply, or 0.
    pub reply_to: u32,
    /// How `data` is encoded.
    pub encoding: Encoding,
    /// The payload.
    pub data: Vec<u8>,
    /// Set when a router hands the message to a handler.
    pub(crate) origin: Option<Arc<dyn Origin>>,
    /// Fragment flags and id while this is one frame of a larger message
    /// in transit (see `frame.rs`); `(0, 0)` for a whole message.
    pub(crate) frag: (u8, u32),
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("dst_id", &self.dst_id)
            .field("src_id", &self.src_id)
            .field("auth_id", &self.auth_id)
            .field("handle", &self.handle)
            .field("reply_to", &self.reply_to)
            .field("encoding", &self.encoding)
            .field("len", &self.data.len())
            .finish()
    }
}

/// Serializes `value` as the MessagePack payloads of this crate use.
pub(crate) fn to_msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(64);
    encode_into(&mut buf, value)?;
    Ok(buf)
}

/// Appends `value` in MessagePack (structs as maps: self-describing).
pub(crate) fn encode_into<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<()> {
    value
        .serialize(&mut rmp_serde::Serializer::new(buf).with_struct_map())
        .map_err(|e| CodecError::new(CodecOp::Encode, std::any::type_name::<T>(), e).into())
}

/// Reads a MessagePack payload into `T`.
pub(crate) fn from_msgpack<T: DeserializeOwned>(data: &[u8]) -> Result<T> {
    rmp_serde::from_slice(data)
        .map_err(|e| CodecError::new(CodecOp::Decode, std::any::type_name::<T>(), e).into())
}

impl Message {
    fn with(encoding: Encoding, data: Vec<u8>) -> Message {
        // Built here: from this context until a router sends it (which
        // sets both again).
        let me = crate::identity::context_id();
        Message {
            dst_id: 0,
            src_id: me,
            auth_id: me,
            handle: 0,
            reply_to: 0,
            encoding,
            data,
            origin: None,
            frag: (0, 0),
        }
    }

    /// A message whose payload is `value` in MessagePack.
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Message> {
        Ok(Message::with(Encoding::MsgPack, to_msgpack(value)?))
    }

    /// A message carrying raw bytes, never passed through a serializer.
    pub fn raw(data: Vec<u8>) -> Message {
        Message::with(Encoding::Raw, data)
    }

    /// A dead message: tells the receiver its message could not be handled.
    pub fn dead(reason: impl Into<String>) -> Message {
        Message::with(Encoding::Dead, reason.into().into_bytes())
    }

    /// A message whose payload is already-encoded MessagePack.
    pub(crate) fn with_payload(data: Vec<u8>) -> Message {
        Message::with(Encoding::MsgPack, data)
    }

    pub(crate) fn call_error(err: &CallError) -> Message {
        let data = to_msgpack(err).unwrap_or_default();
        Message::with(Encoding::CallError, data)
    }

    /// Sets the destination and handle, for sending.
    pub fn to(mut self, dst_id: u32, handle: u32) -> Message {
        self.dst_id = dst_id;
        self.handle = handle;
        self
    }

    /// `true` for a dead message.
    pub fn is_dead(&self) -> bool {
        self.encoding == Encoding::Dead
    }

    /// The reason of a dead message, or `None`.
    pub fn dead_reason(&self) -> Option<String> {
        self.is_dead()
            .then(|| String::from_utf8_lossy(&self.data).into_owned())
    }

    /// The raw payload. A dead message or a remote error is returned as
    /// its error, so bulk readers cannot mistake a failure for data.
    pub fn bytes(&self) -> Result<&[u8]> {
        self.check()?;
        Ok(&self.data)
    }

    fn check(&self) -> Result<()> {
        match self.encoding {
            Encoding::Dead => Err(ChannelError::new(String::from_utf8_lossy(&self.data)).into()),
            // The remote side failed either way: an error that does not
            // decode is still its failure, not a local one.
            Encoding::CallError => Err(Error::Call(
                from_msgpack::<CallError>(&self.data).unwrap_or_else(|e| {
                    CallError::new(
                        "mitogen::DecodeError",
                        format!("the remote side failed, and its error is unreadable: {e}"),
                    )
                }),
            )),
            _ => Ok(()),
        }
    }

    /// Reads the payload into `T`. A dead message becomes
    /// [`ChannelError`] with its reason; a remote failure [`CallError`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        self.check()?;
        match (self.encoding, &self.origin) {
            // Handles inside (Sender, Context) bind to the receiving router.
            (Encoding::MsgPack, Some(origin)) => {
                let mut out = None;
                origin
                    .clone()
                    .decoding(&mut || out = Some(from_msgpack(&self.data)));
                out.expect("Origin::decoding runs its closure")
            }
            (Encoding::MsgPack, None) => from_msgpack(&self.data),
            (_, _) => Err(CodecError::new(
                CodecOp::Decode,
                std::any::type_name::<T>(),
                format!("a {:?} payload is not a serialized value", self.encoding),
            )
            .into()),
        }
    }

    /// [`Message::decode`], consuming the message: a large byte string
    /// ending the payload becomes the value's buffer (`owned.rs`).
    pub(crate) fn into_decoded<T: DeserializeOwned>(self) -> Result<T> {
        if self.encoding != Encoding::MsgPack {
            return self.decode();
        }
        let Message { data, origin, .. } = self;
        let decode = move || {
            crate::owned::from_msgpack(data, 0).map_err(|e| {
                Error::from(CodecError::new(
                    CodecOp::Decode,
                    std::any::type_name::<T>(),
                    e.to_string(),
                ))
            })
        };
        match origin {
            Some(origin) => {
                let mut decode = Some(decode);
                let mut out = None;
                origin.decoding(&mut || out = decode.take().map(|d| d()));
                out.expect("Origin::decoding runs its closure")
            }
            None => decode(),
        }
    }

    /// Answers this message with `value`, sent to its `reply_to` handle.
    pub fn reply<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        self.reply_message(Message::encode(value)?)
    }

    /// Answers this message with a prepared message.
    pub fn reply_message(&self, msg: Message) -> Result<()> {
        let origin = self.origin.as_ref().ok_or_else(|| {
            StreamError::new(
                "this message was not received through a router; it cannot be replied to",
            )
        })?;
        if self.reply_to == 0 {
            return Err(ChannelError::new("the message asked for no reply").into());
        }
        origin.clone().send(msg.to(self.src_id, self.reply_to))
    }

    pub(crate) fn header(&self) -> Header {
        Header {
            encoding: self.encoding,
            dst_id: self.dst_id,
            src_id: self.src_id,
            auth_id: self.auth_id,
            handle: self.handle,
            reply_to: self.reply_to,
            length: self.data.len() as u32,
            flags: self.frag.0,
            frag_id: self.frag.1,
        }
    }

    pub(crate) fn from_frame(h: Header, data: Vec<u8>) -> Message {
        Message {
            dst_id: h.dst_id,
            src_id: h.src_id,
            auth_id: h.auth_id,
            handle: h.handle,
            reply_to: h.reply_to,
            encoding: h.encoding,
            data,
            origin: None,
            frag: (h.flags, h.frag_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode() {
        let m = Message::encode(&(1u32, "two".to_string())).unwrap();
        let v: (u32, String) = m.decode().unwrap();
        assert_eq!(v, (1, "two".to_string()));
    }

    #[test]
    fn dead_decodes_to_channel_error() {
        let m = Message::dead("gone");
        assert!(m.is_dead());
        match m.decode::<u32>() {
            Err(Error::Channel(e)) => assert_eq!(e.reason(), "gone"),
            other => panic!("{other:?}"),
        }
        assert!(m.bytes().is_err());
    }

    #[test]
    fn reply_without_router_is_an_error() {
        assert!(Message::raw(vec![1]).reply(&1).is_err());
    }
}
