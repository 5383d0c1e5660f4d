//! Which router the handles decoded on this thread belong to.
//!
//! A [`crate::Sender`] or [`crate::Context`] inside a payload is only a
//! pair of ids on the wire; decoding turns it into a live handle, which
//! needs the router that received it. Serde gives `Deserialize` no
//! argument to carry that router, so it is set for the duration of a
//! decode in a thread-local: by [`Message::decode`] through the message's
//! origin, and by the dispatcher around a call's arguments.

use super::Core;
use crate::error::Result;
use crate::message::{Message, Origin};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    static DECODING_FOR: RefCell<Option<Arc<Core>>> = const { RefCell::new(None) };
}

/// Runs `f` with handles decoded on this thread bound to `core`.
pub(crate) fn decoding_for<R>(core: &Arc<Core>, f: impl FnOnce() -> R) -> R {
    let prev = DECODING_FOR.with(|d| d.borrow_mut().replace(core.clone()));
    let r = f();
    DECODING_FOR.with(|d| *d.borrow_mut() = prev);
    r
}

/// The router a handle being decoded binds to; `what` names the handle in
/// the error when no router is decoding.
pub(crate) fn decoding_core<E: serde::de::Error>(what: &str) -> std::result::Result<Arc<Core>, E> {
    DECODING_FOR.with(|d| d.borrow().clone()).ok_or_else(|| {
        E::custom(format!(
            "a {what} can only be decoded by a context's router"
        ))
    })
}

impl Origin for Core {
    fn send(self: Arc<Self>, msg: Message) -> Result<()> {
        Core::send(&self, msg)
    }

    fn decoding(self: Arc<Self>, f: &mut dyn FnMut()) {
        decoding_for(&self, f)
    }
}
