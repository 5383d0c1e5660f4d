//! The worker pool that runs `#[mitogen::remote(concurrent)]` calls.

use serde::{Deserialize, Serialize};

/// Default most threads of a context's worker pool.
pub const DEFAULT_POOL_THREADS: usize = 16;

/// Default most jobs waiting for a thread of a context's worker pool.
pub const DEFAULT_POOL_QUEUED: usize = 1024;

/// How big a pool may grow; carried to a child in its config.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PoolSize {
    /// Threads at most (at least 1).
    pub(crate) max_threads: u32,
    /// Jobs waiting for a thread at most.
    pub(crate) max_queued: u32,
}

impl PoolSize {
    /// `max_threads` (at least 1) and `max_queued`, saturated to `u32`.
    pub(crate) fn new(max_threads: usize, max_queued: usize) -> PoolSize {
        let cap = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        PoolSize {
            max_threads: cap(max_threads).max(1),
            max_queued: cap(max_queued),
        }
    }
}

impl Default for PoolSize {
    fn default() -> PoolSize {
        PoolSize::new(DEFAULT_POOL_THREADS, DEFAULT_POOL_QUEUED)
    }
}
