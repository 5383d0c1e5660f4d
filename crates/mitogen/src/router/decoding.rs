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
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// The router of the innermost [`decoding_for`] on this thread: a
    /// pointer to the caller's `Arc`, valid while its `f` runs (a decode
    /// costs no reference count; only a handle decoded takes one).
    static DECODING_FOR: Cell<*const Arc<Core>> = const { Cell::new(std::ptr::null()) };
}

/// Puts the previous router back, also when the decode panics.
struct Restore(*const Arc<Core>);

impl Drop for Restore {
    fn drop(&mut self) {
        DECODING_FOR.with(|d| d.set(self.0));
    }
}

/// Runs `f` with handles decoded on this thread bound to `core`.
pub(crate) fn decoding_for<R>(core: &Arc<Core>, f: impl FnOnce() -> R) -> R {
    let _restore = Restore(DECODING_FOR.with(|d| d.replace(core)));
    f()
}

/// The router a handle being decoded binds to; `what` names the handle in
/// the error when no router is decoding.
pub(crate) fn decoding_core<E: serde::de::Error>(what: &str) -> std::result::Result<Arc<Core>, E> {
    let core = DECODING_FOR.with(|d| d.get());
    // SAFETY: a non-null pointer was set by a `decoding_for` still running
    // on this thread (its guard resets it before it returns or unwinds),
    // so the `Arc` it points to is borrowed for at least that long.
    match unsafe { core.as_ref() } {
        Some(core) => Ok(core.clone()),
        None => Err(E::custom(format!(
            "a {what} can only be decoded by a context's router"
        ))),
    }
}

impl Origin for Core {
    fn send(self: Arc<Self>, msg: Message) -> Result<()> {
        Core::send(&self, msg)
    }

    fn decoding(self: Arc<Self>, f: &mut dyn FnMut()) {
        decoding_for(&self, f)
    }
}
