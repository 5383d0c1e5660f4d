//! [`Select`]: wait on many sources at once — receivers, pending calls,
//! latches and other selects — and learn which one produced each message.
//!
//! This is how a program fans results in from many contexts: start a call
//! on each, add the pending calls to a oneshot select, and take results in
//! the order they arrive.
//!
//! How it works: every source is a [`Latch`] of messages (a select's own
//! queue for a nested select). Adding a source installs a notify callback
//! on its latch that pushes the source's key onto the select's `ready`
//! latch, once per item. `get` pops a key and takes one item from that
//! source without blocking; a key whose item was taken by someone else
//! (another thread calling the receiver's own `get`) is skipped. A latch
//! carries one callback, so a source belongs to at most one select.

use crate::context::PendingCall;
use crate::error::{Error, Result, SelectError, TimeoutError};
use crate::latch::Latch;
use crate::message::Message;
use crate::receiver::Receiver;
use serde::de::DeserializeOwned;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

/// Names one source of a [`Select`]: compare with [`SourceId::of`] or
/// [`Event::is_from`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SourceId(usize);

impl SourceId {
    /// The id of `source`.
    pub fn of(source: &impl Selectable) -> SourceId {
        SourceId(source.source().key())
    }
}

/// One message from a [`Select`], and where it came from.
#[derive(Debug)]
pub struct Event {
    /// The receiver, pending call or latch that produced `data` (the
    /// innermost one when selects are nested).
    pub source: SourceId,
    /// The message as it arrived: a dead one (a context lost, a sender
    /// closed) is given as it is; [`Message::decode`] turns it into an
    /// error.
    pub data: Message,
}

impl Event {
    /// `true` when this event came from `source`.
    pub fn is_from(&self, source: &impl Selectable) -> bool {
        self.source == SourceId::of(source)
    }
}

/// Something a [`Select`] can wait on: [`Receiver`], [`PendingCall`],
/// `Latch<Message>` and [`Select`] itself.
pub trait Selectable: sealed::Sealed {
    #[doc(hidden)]
    fn source(&self) -> Source;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for crate::Receiver {}
    impl<T> Sealed for crate::PendingCall<T> {}
    impl Sealed for crate::Latch<crate::Message> {}
    impl Sealed for crate::Select {}
}

/// What a selectable hands to a select (not constructible outside).
#[doc(hidden)]
#[derive(Clone)]
pub struct Source(Kind);

#[derive(Clone)]
enum Kind {
    /// A latch of messages, and the router an answer to a call (which
    /// arrives without one) is to be decoded by.
    Messages(Latch<Message>, Option<Arc<dyn crate::message::Origin>>),
    Nested(Arc<Inner>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source({:#x})", self.key())
    }
}

impl Source {
    fn key(&self) -> usize {
        match &self.0 {
            Kind::Messages(l, _) => l.key(),
            Kind::Nested(i) => i.ready.key(),
        }
    }

    fn set_notify(&self, n: Option<crate::latch::Notify>) -> std::result::Result<(), ()> {
        match &self.0 {
            Kind::Messages(l, _) => l.set_notify(n),
            Kind::Nested(i) => i.ready.set_notify(n),
        }
    }

    /// Items waiting (for a nested select: keys, an upper bound).
    fn pending(&self) -> usize {
        match &self.0 {
            Kind::Messages(l, _) => l.size() + usize::from(l.is_closed()),
            Kind::Nested(i) => i.ready.size(),
        }
    }
}

impl Selectable for Receiver {
    fn source(&self) -> Source {
        Source(Kind::Messages(self.latch().clone(), None))
    }
}

impl<T> Selectable for PendingCall<T> {
    fn source(&self) -> Source {
        Source(Kind::Messages(self.latch().clone(), Some(self.origin())))
    }
}

impl Selectable for Latch<Message> {
    fn source(&self) -> Source {
        Source(Kind::Messages(self.clone(), None))
    }
}

impl Selectable for Select {
    fn source(&self) -> Source {
        Source(Kind::Nested(self.inner.clone()))
    }
}

struct Inner {
    oneshot: bool,
    /// Keys of members that (probably) have an item; 0 wakes a waiter to
    /// re-check membership.
    ready: Latch<usize>,
    members: Mutex<Vec<Source>>,
}

/// Waits on many sources; the seed's `mitogen.select.Select`.
///
/// With `oneshot` (the usual way), a source is removed once it has
/// produced a message, so iterating a select of pending calls yields each
/// result once and then ends.
///
/// ```
/// #[mitogen::remote]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> mitogen::Result<()> {
///     let a = router.local().remote_name("a").connect()?;
///     let b = router.local().remote_name("b").connect()?;
///     let select = mitogen::Select::new(true);
///     let calls = [a.call_async::<square>((3,))?, b.call_async::<square>((4,))?];
///     for c in &calls {
///         select.add(c)?;
///     }
///     let mut got: Vec<u64> = select.all(Some(std::time::Duration::from_secs(30)))?;
///     got.sort();
///     assert_eq!(got, [9, 16]);
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Select {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Select {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("oneshot", &self.inner.oneshot)
            .field("members", &self.len())
            .finish()
    }
}

impl Default for Select {
    fn default() -> Select {
        Select::new(true)
    }
}

impl Select {
    /// An empty select. `oneshot`: remove each source after its first
    /// message.
    pub fn new(oneshot: bool) -> Select {
        Select {
            inner: Arc::new(Inner {
                oneshot,
                ready: Latch::new(),
                members: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A select over `sources`.
    pub fn with<'a, S: Selectable + 'a>(
        sources: impl IntoIterator<Item = &'a S>,
        oneshot: bool,
    ) -> Result<Select> {
        let s = Select::new(oneshot);
        for src in sources {
            s.add(src)?;
        }
        Ok(s)
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Source>> {
        crate::sync::lock(&self.inner.members)
    }

    /// Sources currently added.
    pub fn len(&self) -> usize {
        self.members().len()
    }

    /// `true` when no source is added (`get` would fail at once).
    pub fn is_empty(&self) -> bool {
        self.members().is_empty()
    }

    /// Adds a source. Messages already queued in it count. Fails when the
    /// source already belongs to a select (this or another), or when it
    /// would make selects contain each other.
    pub fn add(&self, source: &impl Selectable) -> Result<()> {
        let src = source.source();
        if let Kind::Nested(other) = &src.0 {
            if contains(other, self.inner.ready.key()) {
                return Err(SelectError::new("adding this select would make a cycle").into());
            }
        }
        let key = src.key();
        let ready = self.inner.ready.clone();
        let notify: crate::latch::Notify = Arc::new(move || {
            let _ = ready.put(key);
        });
        if src.set_notify(Some(notify)).is_err() {
            return Err(SelectError::new("the source already belongs to a select").into());
        }
        let pending = src.pending();
        self.members().push(src);
        for _ in 0..pending {
            let _ = self.inner.ready.put(key);
        }
        Ok(())
    }

    /// Removes a source; fails when it is not a member.
    pub fn remove(&self, source: &impl Selectable) -> Result<()> {
        let key = SourceId::of(source).0;
        if self.take_member(key).is_none() {
            return Err(SelectError::new("the source is not a member of this select").into());
        }
        Ok(())
    }

    fn take_member(&self, key: usize) -> Option<Source> {
        let src = {
            let mut m = self.members();
            let i = m.iter().position(|s| s.key() == key)?;
            m.remove(i)
        };
        let _ = src.set_notify(None);
        // A waiter may be blocked on a source that is no longer here.
        let _ = self.inner.ready.put(0);
        Some(src)
    }

    /// Removes every source; waiting threads wake with an error saying
    /// the select is empty.
    pub fn close(&self) {
        let all = std::mem::take(&mut *self.members());
        for s in &all {
            let _ = s.set_notify(None);
        }
        let _ = self.inner.ready.put(0);
    }

    /// `true` when no source has a message waiting (`get` would block).
    pub fn empty(&self) -> bool {
        self.members().iter().all(|s| match &s.0 {
            Kind::Messages(l, _) => l.nothing_queued() && !l.is_closed(),
            Kind::Nested(i) => Select { inner: i.clone() }.empty(),
        })
    }

    /// Waits up to `timeout` (`None`: forever) for the next message from
    /// any source. Fails when the select is (or becomes) empty.
    pub fn get(&self, timeout: Option<Duration>) -> Result<Message> {
        self.get_event(timeout).map(|e| e.data)
    }

    /// Like [`Select::get`], also saying which source the message came
    /// from.
    pub fn get_event(&self, timeout: Option<Duration>) -> Result<Event> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(ev) = self.try_event()? {
                return Ok(ev);
            }
            if self.is_empty() {
                return Err(SelectError::new("the select is empty").into());
            }
            crate::broker::refuse_wait_on_broker("a select's next message")?;
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Err(
                    TimeoutError::new("waiting on a select", timeout.unwrap_or_default()).into(),
                );
            }
            match self.inner.ready.get(left) {
                Ok(key) => {
                    if let Some(ev) = self.take(key)? {
                        return Ok(ev);
                    }
                }
                Err(Error::Timeout(_)) => {
                    return Err(TimeoutError::new(
                        "waiting on a select",
                        timeout.unwrap_or_default(),
                    )
                    .into())
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes one event without blocking, if any source has one.
    fn try_event(&self) -> Result<Option<Event>> {
        while let Ok(Some(key)) = self.inner.ready.try_get() {
            if let Some(ev) = self.take(key)? {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// Takes the item a ready key announced, if it is still there.
    fn take(&self, key: usize) -> Result<Option<Event>> {
        if key == 0 {
            return Ok(None);
        }
        let src = self.members().iter().find(|s| s.key() == key).cloned();
        let Some(src) = src else { return Ok(None) };
        match &src.0 {
            Kind::Messages(l, origin) => match l.try_get_queued() {
                Ok(Some(mut m)) => {
                    if m.origin.is_none() {
                        m.origin = origin.clone();
                    }
                    if self.inner.oneshot {
                        self.take_member(key);
                    }
                    Ok(Some(Event {
                        source: SourceId(key),
                        data: m,
                    }))
                }
                Ok(None) => Ok(None),
                Err(_) => {
                    // Closed: it will never produce anything again.
                    self.take_member(key);
                    Ok(None)
                }
            },
            Kind::Nested(i) => {
                let nested = Select { inner: i.clone() };
                let ev = nested.try_event()?;
                if nested.is_empty() || (self.inner.oneshot && ev.is_some()) {
                    self.take_member(key);
                }
                Ok(ev)
            }
        }
    }

    /// Takes every remaining message of a oneshot select, decoded as `T`,
    /// in the order they arrive, until the select is empty. The first
    /// failure (a remote error, a lost context) is returned instead.
    /// `timeout` bounds the whole wait.
    pub fn all<T: DeserializeOwned>(&self, timeout: Option<Duration>) -> Result<Vec<T>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut out = Vec::new();
        while !self.is_empty() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            out.push(self.get(left)?.decode()?);
        }
        Ok(out)
    }

    /// Messages until the select is empty (a oneshot select whose sources
    /// all answered) or closed. Dead messages are yielded as they are.
    pub fn iter(&self) -> impl Iterator<Item = Message> + '_ {
        std::iter::from_fn(move || self.get(None).ok())
    }
}

fn contains(inner: &Arc<Inner>, key: usize) -> bool {
    if inner.ready.key() == key {
        return true;
    }
    let members = crate::sync::lock(&inner.members).clone();
    members.iter().any(|m| match &m.0 {
        Kind::Nested(i) => contains(i, key),
        Kind::Messages(..) => false,
    })
}

impl futures_core::Stream for Select {
    type Item = Event;
    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Event>> {
        loop {
            match self.try_event() {
                Ok(Some(ev)) => return Poll::Ready(Some(ev)),
                Ok(None) => {}
                Err(_) => return Poll::Ready(None),
            }
            if self.is_empty() {
                return Poll::Ready(None);
            }
            match self.inner.ready.poll_get(cx) {
                Poll::Ready(Ok(key)) => match self.take(key) {
                    Ok(Some(ev)) => return Poll::Ready(Some(ev)),
                    Ok(None) => {}
                    Err(_) => return Poll::Ready(None),
                },
                Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
