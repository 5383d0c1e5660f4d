//! The flow limits a router enforces and its children inherit: the frame
//! bound, the message bound, each link's queue bound and how long a user
//! thread waits for room. One place holds them so the child's config
//! frame carries them whole ([`FlowLimits`]) and none is forgotten.

use crate::frame::DEFAULT_MAX_MESSAGE_SIZE;
use crate::link::DEFAULT_MAX_QUEUED;
use crate::reassembly::DEFAULT_MAX_PAYLOAD;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use super::DEFAULT_SEND_TIMEOUT;

/// The limits as a value, as a parent hands them to its child.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FlowLimits {
    /// Largest frame accepted from a peer.
    pub(crate) max_message_size: u64,
    /// Largest message put together from frames (and bound of what one
    /// peer may have partly sent).
    pub(crate) max_payload: u64,
    /// Bound of each link's output queue, in bytes.
    pub(crate) max_queued: u64,
    /// How long a user thread waits for room in a full link (ms; 0: as
    /// long as the link lives).
    pub(crate) send_timeout_ms: u64,
}

/// The limits of one router; each can change while it runs.
pub(crate) struct Limits {
    max_message_size: AtomicUsize,
    max_payload: AtomicUsize,
    max_queued: AtomicUsize,
    send_timeout_ms: AtomicU64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_size: AtomicUsize::new(DEFAULT_MAX_MESSAGE_SIZE),
            max_payload: AtomicUsize::new(DEFAULT_MAX_PAYLOAD),
            max_queued: AtomicUsize::new(DEFAULT_MAX_QUEUED),
            send_timeout_ms: AtomicU64::new(DEFAULT_SEND_TIMEOUT.as_millis() as u64),
        }
    }
}

impl Limits {
    pub(crate) fn max_message_size(&self) -> usize {
        self.max_message_size.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_message_size(&self, n: usize) {
        self.max_message_size.store(n, Ordering::Relaxed);
    }

    pub(crate) fn max_payload(&self) -> usize {
        self.max_payload.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_payload(&self, n: usize) {
        self.max_payload.store(n, Ordering::Relaxed);
    }

    pub(crate) fn max_queued(&self) -> usize {
        self.max_queued.load(Ordering::Relaxed)
    }

    pub(crate) fn set_max_queued(&self, n: usize) {
        self.max_queued.store(n.max(1), Ordering::Relaxed);
    }

    pub(crate) fn send_timeout(&self) -> Option<Duration> {
        match self.send_timeout_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }

    pub(crate) fn set_send_timeout(&self, t: Option<Duration>) {
        let ms = t.map_or(0, |t| (t.as_millis() as u64).max(1));
        self.send_timeout_ms.store(ms, Ordering::Relaxed);
    }

    /// The limits now, for a child to inherit.
    pub(crate) fn snapshot(&self) -> FlowLimits {
        FlowLimits {
            max_message_size: self.max_message_size() as u64,
            max_payload: self.max_payload() as u64,
            max_queued: self.max_queued() as u64,
            send_timeout_ms: self.send_timeout_ms.load(Ordering::Relaxed),
        }
    }

    /// Takes on a parent's limits.
    pub(crate) fn apply(&self, l: &FlowLimits) {
        let size = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        self.set_max_message_size(size(l.max_message_size));
        self.set_max_payload(size(l.max_payload));
        self.set_max_queued(size(l.max_queued));
        self.send_timeout_ms
            .store(l.send_timeout_ms, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_applied_elsewhere_gives_the_same_limits() {
        let a = Limits::default();
        a.set_max_message_size(1000);
        a.set_max_payload(5000);
        a.set_max_queued(0);
        a.set_send_timeout(Some(Duration::from_millis(1500)));
        let b = Limits::default();
        b.apply(&a.snapshot());
        assert_eq!(b.snapshot(), a.snapshot());
        assert_eq!(
            b.max_queued(),
            1,
            "a queue bound of 0 would refuse everything"
        );
        assert_eq!(b.send_timeout(), Some(Duration::from_millis(1500)));
        a.set_send_timeout(None);
        b.apply(&a.snapshot());
        assert_eq!(b.send_timeout(), None);
    }
}
