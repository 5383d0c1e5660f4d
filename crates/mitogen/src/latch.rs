//! [`Latch`]: a thread-safe queue that threads block on, the primitive every
//! blocking API of the crate waits with.
//!
//! `put` never blocks; `get` waits up to a timeout; `close` wakes every
//! waiter with [`LatchError`]. A latch can also be *ended* (crate-internal,
//! used by receivers): every current and later `get` that finds the queue
//! empty gets the same final item, so one `Sender::close` wakes all the
//! threads waiting on a receiver. A latch is also a [`Future`] source through
//! [`Latch::get_async`], so the same object serves blocking and async code.

use crate::error::{Error, LatchError, TimeoutError};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

struct State<T> {
    queue: Queue<T>,
    closed: bool,
    /// Threads blocked in `get`: `put` skips the wake-up syscall when zero.
    sleepers: usize,
    wakers: Vec<Waker>,
    /// Called after every `put` and on `close`: how a [`crate::Select`]
    /// learns that one of its sources has something.
    notify: Option<Notify>,
    /// Set once the latch is ended: makes the final item.
    end: Option<End<T>>,
}

/// Makes the item every `get` of an ended latch returns.
type End<T> = Arc<dyn Fn() -> T + Send + Sync>;

/// A callback run outside the latch's lock.
pub(crate) type Notify = Arc<dyn Fn() + Send + Sync>;

struct Inner<T> {
    state: Mutex<State<T>>,
    cond: Condvar,
}

/// A FIFO whose first item is kept inline: most latches (every pending
/// call's) carry one item at a time, and a `VecDeque`'s first push is an
/// allocation, made on the broker thread and freed on the caller's.
struct Queue<T> {
    /// The oldest item, when `more` holds none older.
    first: Option<T>,
    more: VecDeque<T>,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue {
            first: None,
            more: VecDeque::new(),
        }
    }
}

impl<T> Queue<T> {
    fn push_back(&mut self, item: T) {
        if self.first.is_none() && self.more.is_empty() {
            self.first = Some(item);
        } else {
            self.more.push_back(item);
        }
    }

    fn pop_front(&mut self) -> Option<T> {
        self.first.take().or_else(|| self.more.pop_front())
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.more.len()
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.more.is_empty()
    }

    fn clear(&mut self) {
        self.first = None;
        self.more.clear();
    }
}

/// A many-producer, many-consumer queue that consumers block on.
///
/// ```
/// use mitogen::Latch;
/// use std::time::Duration;
///
/// #[mitogen::remote]
/// fn square(x: u64) -> u64 { x * x }
///
/// #[mitogen::main]
/// fn main(router: mitogen::Router) -> mitogen::Result<()> {
///     let ctx = router.local().connect()?;
///     // Threads call the context and hand their results over a latch.
///     let results = Latch::new();
///     for x in 1..=3u64 {
///         let (ctx, results) = (ctx.clone(), results.clone());
///         std::thread::spawn(move || results.put(ctx.call::<square>((x,))));
///     }
///     let mut got = Vec::new();
///     for _ in 0..3 {
///         got.push(results.get(Some(Duration::from_secs(30)))??);
///     }
///     got.sort();
///     assert_eq!(got, [1, 4, 9]);
///     results.close();
///     assert!(results.get(None).is_err()); // LatchError: closed
///     Ok(())
/// }
/// ```
pub struct Latch<T> {
    inner: Arc<Inner<T>>,
}

impl<T> Clone for Latch<T> {
    fn clone(&self) -> Self {
        Latch {
            inner: self.inner.clone(),
        }
    }
}

impl<T> std::fmt::Debug for Latch<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Latch")
            .field("queued", &s.queue.len())
            .field("closed", &s.closed)
            .finish()
    }
}

impl<T> Default for Latch<T> {
    fn default() -> Self {
        Latch::new()
    }
}

impl<T> Latch<T> {
    /// An empty, open latch.
    pub fn new() -> Latch<T> {
        Latch {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    queue: Queue::default(),
                    closed: false,
                    sleepers: 0,
                    wakers: Vec::new(),
                    notify: None,
                    end: None,
                }),
                cond: Condvar::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock cannot leave the queue half
        // updated (every critical section is a single push or pop).
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an item and wakes one waiter. Fails if the latch is closed.
    pub fn put(&self, item: T) -> Result<(), LatchError> {
        let (wakers, sleepers, notify) = {
            let mut s = self.lock();
            if s.closed {
                return Err(LatchError);
            }
            s.queue.push_back(item);
            (std::mem::take(&mut s.wakers), s.sleepers, s.notify.clone())
        };
        if sleepers > 0 {
            self.inner.cond.notify_one();
        }
        wakers.into_iter().for_each(Waker::wake);
        if let Some(n) = notify {
            n();
        }
        Ok(())
    }

    /// Ends the latch: once the queue is empty, every current and later
    /// `get` returns `last()` instead of waiting. Only the first end counts;
    /// a closed latch stays closed.
    pub(crate) fn end_with(&self, last: impl Fn() -> T + Send + Sync + 'static) {
        let woken = {
            let mut s = self.lock();
            if s.closed || s.end.is_some() {
                return;
            }
            s.end = Some(Arc::new(last));
            Self::everyone(&mut s)
        };
        self.wake_all(woken);
    }

    /// `true` when a `get` would wait now: open, nothing queued, not ended.
    pub(crate) fn would_block(&self) -> bool {
        let s = self.lock();
        !s.closed && s.queue.is_empty() && s.end.is_none()
    }

    /// Items queued now.
    pub fn size(&self) -> usize {
        self.lock().queue.len()
    }

    /// Installs (`Some`) or removes (`None`) the notify callback. Installing
    /// fails when one is already installed: a latch feeds one select.
    pub(crate) fn set_notify(&self, notify: Option<Notify>) -> Result<(), ()> {
        let mut s = self.lock();
        if notify.is_some() && s.notify.is_some() {
            return Err(());
        }
        s.notify = notify;
        Ok(())
    }

    /// A number naming this latch (and its clones) while it lives.
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.inner) as *const () as usize
    }

    /// `true` when nothing is queued.
    ///
    /// Fails on a closed latch: "empty" would then suggest that waiting
    /// could help.
    pub fn empty(&self) -> Result<bool, LatchError> {
        let s = self.lock();
        if s.closed {
            return Err(LatchError);
        }
        Ok(s.queue.is_empty() && s.end.is_none())
    }

    /// `true` when nothing is queued (closed or not, ended or not).
    pub(crate) fn nothing_queued(&self) -> bool {
        self.lock().queue.is_empty()
    }

    /// `true` once [`Latch::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Closes the latch: queued items are dropped and every current and
    /// future waiter gets [`LatchError`].
    pub fn close(&self) {
        let woken = {
            let mut s = self.lock();
            s.closed = true;
            s.queue.clear();
            Self::everyone(&mut s)
        };
        self.wake_all(woken);
    }

    /// Who waits on the latch now (taken under its lock).
    fn everyone(s: &mut State<T>) -> (Vec<Waker>, Option<Notify>, usize) {
        (std::mem::take(&mut s.wakers), s.notify.clone(), s.sleepers)
    }

    /// Wakes every waiter, outside the lock. Every pending call closes its
    /// latch when dropped: the wake-up syscall is skipped when nobody
    /// sleeps.
    fn wake_all(&self, (wakers, notify, sleepers): (Vec<Waker>, Option<Notify>, usize)) {
        if sleepers > 0 {
            self.inner.cond.notify_all();
        }
        wakers.into_iter().for_each(Waker::wake);
        if let Some(n) = notify {
            n();
        }
    }

    /// Takes the next item without waiting.
    pub fn try_get(&self) -> Result<Option<T>, LatchError> {
        let mut s = self.lock();
        if s.closed {
            return Err(LatchError);
        }
        Ok(s.queue.pop_front().or_else(|| s.end.as_ref().map(|f| f())))
    }

    /// [`Latch::try_get`] of queued items only (an ended latch's final
    /// item is not returned): how a select takes from its sources, each
    /// dead message once.
    pub(crate) fn try_get_queued(&self) -> Result<Option<T>, LatchError> {
        let mut s = self.lock();
        if s.closed {
            return Err(LatchError);
        }
        Ok(s.queue.pop_front())
    }

    /// Waits for an item up to `timeout` (`None`: forever).
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, Error> {
        self.wait_for_item(timeout, true)
    }

    /// [`Latch::get`] that waits for queued items only: an ended latch's
    /// final item is not returned.
    pub(crate) fn get_queued(&self, timeout: Option<Duration>) -> Result<T, Error> {
        self.wait_for_item(timeout, false)
    }

    fn wait_for_item(&self, timeout: Option<Duration>, until_end: bool) -> Result<T, Error> {
        let mut s = self.lock();
        // Read the clock only once there is a wait.
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            if s.closed {
                return Err(LatchError.into());
            }
            if let Some(item) = s.queue.pop_front() {
                return Ok(item);
            }
            if let (true, Some(last)) = (until_end, &s.end) {
                return Ok(last());
            }
            let deadline = *deadline.get_or_insert_with(|| timeout.map(|t| Instant::now() + t));
            let wait = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        let t = timeout.unwrap_or_default();
                        return Err(TimeoutError::new("waiting on a latch", t).into());
                    }
                    Some(d - now)
                }
            };
            s.sleepers += 1;
            s = match wait {
                None => self.inner.cond.wait(s).unwrap_or_else(|e| e.into_inner()),
                Some(w) => {
                    self.inner
                        .cond
                        .wait_timeout(s, w)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
            s.sleepers -= 1;
        }
    }

    /// A future resolving to the next item, or [`LatchError`] on close.
    pub fn get_async(&self) -> LatchFuture<T> {
        LatchFuture {
            latch: self.clone(),
        }
    }

    pub(crate) fn poll_get(&self, cx: &mut Context<'_>) -> Poll<Result<T, LatchError>> {
        let mut s = self.lock();
        if s.closed {
            return Poll::Ready(Err(LatchError));
        }
        if let Some(item) = s.queue.pop_front() {
            return Poll::Ready(Ok(item));
        }
        if let Some(last) = &s.end {
            return Poll::Ready(Ok(last()));
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// Future returned by [`Latch::get_async`].
#[derive(Debug)]
pub struct LatchFuture<T> {
    latch: Latch<T>,
}

impl<T> Future for LatchFuture<T> {
    type Output = Result<T, LatchError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.latch.poll_get(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_come_out_in_order_across_the_inline_slot() {
        let l = Latch::new();
        l.put(1).unwrap();
        l.put(2).unwrap();
        assert_eq!(l.try_get().unwrap(), Some(1));
        // The inline slot is free again, but 2 is older than 3.
        l.put(3).unwrap();
        assert_eq!(l.size(), 2);
        assert_eq!(l.try_get().unwrap(), Some(2));
        l.put(4).unwrap();
        assert_eq!(l.try_get().unwrap(), Some(3));
        assert_eq!(l.try_get().unwrap(), Some(4));
        assert_eq!(l.try_get().unwrap(), None);
        l.put(5).unwrap();
        assert_eq!(l.size(), 1);
        assert_eq!(l.try_get().unwrap(), Some(5));
    }

    #[test]
    fn put_then_get() {
        let l = Latch::new();
        l.put(1).unwrap();
        assert!(!l.empty().unwrap());
        assert_eq!(l.get(None).unwrap(), 1);
        assert!(l.empty().unwrap());
    }

    #[test]
    fn timeout_is_typed() {
        let l: Latch<u8> = Latch::new();
        let err = l.get(Some(Duration::from_millis(20))).unwrap_err();
        assert!(matches!(err, Error::Timeout(_)), "{err}");
    }

    #[test]
    fn close_wakes_waiters() {
        let l: Latch<u8> = Latch::new();
        let waiters: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.get(Some(Duration::from_secs(10))))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        l.close();
        for w in waiters {
            assert!(matches!(w.join().unwrap(), Err(Error::Latch(_))));
        }
        assert_eq!(l.put(1), Err(LatchError));
    }

    #[test]
    fn many_threads_no_loss() {
        let l = Latch::new();
        let producers: Vec<_> = (0..8)
            .map(|t| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).for_each(|i| l.put(t * 1000 + i).unwrap()))
            })
            .collect();
        let mut seen = vec![false; 8000];
        for _ in 0..8000 {
            let v = l.get(Some(Duration::from_secs(10))).unwrap();
            assert!(!seen[v]);
            seen[v] = true;
        }
        producers.into_iter().for_each(|p| p.join().unwrap());
        assert!(l.empty().unwrap());
    }

    #[test]
    fn empty_on_a_closed_latch_is_an_error() {
        let l: Latch<u32> = Latch::new();
        assert_eq!(l.empty(), Ok(true));
        l.close();
        assert_eq!(l.empty(), Err(LatchError));
    }

    #[test]
    fn an_ended_latch_answers_every_getter_after_its_queue() {
        let l: Latch<u32> = Latch::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || l.get(Some(Duration::from_secs(10))).ok())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        l.end_with(|| 99);
        for w in waiters {
            assert_eq!(w.join().unwrap(), Some(99));
        }
        l.put(1).unwrap();
        assert_eq!(l.get(None).unwrap(), 1);
        assert_eq!(l.get(None).unwrap(), 99);
        assert!(l.get_queued(Some(Duration::from_millis(10))).is_err());
        assert_eq!(l.empty(), Ok(false));
    }
}
