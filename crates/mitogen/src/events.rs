//! Events: the seed's signals (`listen` / `fire`), typed.
//!
//! A program subscribes a callback to something that happens — a context
//! disconnecting ([`crate::Context::on_disconnect`],
//! [`crate::Router::on_context_disconnect`]), a stream closing
//! ([`crate::Router::on_stream_disconnect`]), a child process exiting
//! ([`crate::Router::on_child_exit`]), the broker shutting down
//! ([`crate::Broker::on_before_shutdown`], [`crate::Broker::on_shutdown`],
//! [`crate::Broker::on_exit`]) — and gets a [`Subscription`] to cancel it.
//!
//! Callbacks run on the broker thread, one after another, with no lock of
//! the runtime held: a callback may call into the router, start calls
//! (without waiting for them) or defer work. It must not block for long —
//! the broker moves every message of the process — and waiting for a
//! message or a call's result there fails at once with a
//! [`crate::ChannelError`] saying so (the broker is what would deliver it).
//! A panic in a callback is caught and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

type Callback<A> = Arc<dyn Fn(&A) + Send + Sync>;

struct Subscribers<A> {
    next: AtomicU64,
    list: Mutex<Vec<(u64, Callback<A>)>>,
}

/// Something callbacks subscribe to.
pub(crate) struct Signal<A> {
    subs: Arc<Subscribers<A>>,
}

impl<A> Default for Signal<A> {
    fn default() -> Self {
        Signal {
            subs: Arc::new(Subscribers {
                next: AtomicU64::new(1),
                list: Mutex::new(Vec::new()),
            }),
        }
    }
}

trait Unsubscribe: Send + Sync {
    fn remove(&self, id: u64) -> bool;
}

impl<A: 'static> Unsubscribe for Subscribers<A> {
    fn remove(&self, id: u64) -> bool {
        let mut l = crate::sync::lock(&self.list);
        let before = l.len();
        l.retain(|(i, _)| *i != id);
        l.len() != before
    }
}

impl<A: 'static> Signal<A> {
    /// Adds `f`; it runs for every later [`Signal::fire`].
    pub(crate) fn subscribe(&self, f: impl Fn(&A) + Send + Sync + 'static) -> Subscription {
        let id = self.subs.next.fetch_add(1, Ordering::Relaxed);
        crate::sync::lock(&self.subs.list).push((id, Arc::new(f)));
        let weak: Weak<dyn Unsubscribe> = Arc::downgrade(&self.subs) as Weak<dyn Unsubscribe>;
        Subscription { id, from: weak }
    }

    /// Runs every subscriber with `arg`. The list is copied first, so no
    /// lock is held while callbacks run (they may subscribe or cancel).
    pub(crate) fn fire(&self, arg: &A) {
        let subs: Vec<Callback<A>> = crate::sync::lock(&self.subs.list)
            .iter()
            .map(|(_, f)| f.clone())
            .collect();
        for f in subs {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(arg)));
            if r.is_err() {
                tracing::error!("mitogen: an event callback panicked");
            }
        }
    }
}

/// A subscribed callback. Dropping it keeps the callback subscribed (as
/// in the seed); [`Subscription::unsubscribe`] removes it.
#[derive(Clone)]
pub struct Subscription {
    id: u64,
    from: Weak<dyn Unsubscribe>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscription({})", self.id)
    }
}

impl Subscription {
    /// Removes the callback; `false` when it was already removed (or its
    /// source is gone). Once this returns, the callback is not started
    /// again, though a run already under way on the broker finishes.
    pub fn unsubscribe(&self) -> bool {
        self.from.upgrade().is_some_and(|s| s.remove(self.id))
    }
}

/// A context (or a direct link) that went away.
#[derive(Clone, Debug)]
pub struct Disconnect {
    /// The context that is no longer reachable.
    pub context_id: u32,
    /// Its name.
    pub name: String,
    /// Why, in words.
    pub reason: String,
}

/// A child process of this context that was reaped.
#[derive(Clone, Debug)]
pub struct ChildExit {
    /// Its process id.
    pub pid: i32,
    /// The name of the context (or transport) it ran.
    pub name: String,
    /// How it ended.
    pub status: std::process::ExitStatus,
}

impl crate::Router {
    /// Runs `f` whenever a context this one could reach becomes
    /// unreachable: a child's link closed, a descendant was announced
    /// lost, or (in a child) the parent link closed.
    pub fn on_context_disconnect(
        &self,
        f: impl Fn(&Disconnect) + Send + Sync + 'static,
    ) -> Subscription {
        self.core().events.context_lost.subscribe(f)
    }

    /// Runs `f` whenever a direct link of this context (to a child or to
    /// the parent) closes.
    pub fn on_stream_disconnect(
        &self,
        f: impl Fn(&Disconnect) + Send + Sync + 'static,
    ) -> Subscription {
        self.core().events.stream_lost.subscribe(f)
    }

    /// Runs `f` whenever a child process of this context is reaped, with
    /// its exit status.
    pub fn on_child_exit(&self, f: impl Fn(&ChildExit) + Send + Sync + 'static) -> Subscription {
        self.core().events.child_exit.subscribe(f)
    }
}

impl crate::Context {
    /// Runs `f` when this context becomes unreachable (the seed's
    /// `disconnect` signal of a context). Only later disconnects count.
    ///
    /// ```
    /// #[mitogen::main]
    /// fn main(router: mitogen::Router) -> mitogen::Result<()> {
    ///     let child = router.local().remote_name("short-lived").connect()?;
    ///     let gone = mitogen::Latch::new();
    ///     let g = gone.clone();
    ///     let sub = child.on_disconnect(move |d| {
    ///         let _ = g.put(d.name.clone());
    ///     });
    ///     child.shutdown(true, None)?;
    ///     let name = gone.get(Some(std::time::Duration::from_secs(10)))?;
    ///     assert_eq!(name, "short-lived");
    ///     assert!(sub.unsubscribe());
    ///     Ok(())
    /// }
    /// ```
    pub fn on_disconnect(&self, f: impl Fn(&Disconnect) + Send + Sync + 'static) -> Subscription {
        let id = self.context_id();
        self.core.events.context_lost.subscribe(move |d| {
            if d.context_id == id {
                f(d)
            }
        })
    }
}

/// The router's signals.
#[derive(Default)]
pub(crate) struct RouterEvents {
    pub(crate) context_lost: Signal<Disconnect>,
    pub(crate) stream_lost: Signal<Disconnect>,
    pub(crate) child_exit: Signal<ChildExit>,
}

/// The broker's signals.
#[derive(Default)]
pub(crate) struct BrokerEvents {
    pub(crate) before_shutdown: Signal<()>,
    pub(crate) shutdown: Signal<()>,
    pub(crate) exit: Signal<()>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn subscribe_fire_unsubscribe() {
        let sig: Signal<u32> = Signal::default();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let sub = sig.subscribe(move |v| {
            h.fetch_add(*v as usize, Ordering::SeqCst);
        });
        sig.fire(&2);
        sig.fire(&3);
        assert_eq!(hits.load(Ordering::SeqCst), 5);
        assert!(sub.unsubscribe());
        assert!(!sub.unsubscribe());
        sig.fire(&100);
        assert_eq!(hits.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn a_panicking_callback_does_not_stop_the_others() {
        let sig: Signal<()> = Signal::default();
        let hits = Arc::new(AtomicUsize::new(0));
        sig.subscribe(|_| panic!("callback bug"));
        let h = hits.clone();
        sig.subscribe(move |_| {
            h.fetch_add(1, Ordering::SeqCst);
        });
        sig.fire(&());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_callback_may_subscribe_and_cancel_while_firing() {
        let sig: Arc<Signal<()>> = Arc::new(Signal::default());
        let s2 = sig.clone();
        let me: Arc<Mutex<Option<Subscription>>> = Arc::default();
        let m2 = me.clone();
        let sub = sig.subscribe(move |_| {
            s2.subscribe(|_| {});
            if let Some(s) = crate::sync::lock(&m2).take() {
                s.unsubscribe();
            }
        });
        *crate::sync::lock(&me) = Some(sub);
        sig.fire(&());
        assert_eq!(crate::sync::lock(&sig.subs.list).len(), 1);
    }
}
