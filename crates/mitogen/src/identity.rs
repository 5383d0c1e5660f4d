//! Who this process is in the tree: the seed's `is_master`, `context_id`,
//! `parent_id` and `parent_ids`.
//!
//! The identity is set once when a child starts (and again in a forked
//! child), and read often. It lives behind an atomic pointer to a leaked,
//! never-freed value, so reading takes no lock and a `fork()` that happens
//! while another thread reads cannot leave a lock held in the child.

use std::sync::atomic::{AtomicPtr, Ordering};

/// The crate version, the seed's `mitogen.__version__`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Context id of a master.
pub const MASTER_ID: u32 = 0;

#[derive(Debug)]
pub(crate) struct Identity {
    pub(crate) context_id: u32,
    pub(crate) parent_ids: Vec<u32>,
}

static MASTER: Identity = Identity {
    context_id: MASTER_ID,
    parent_ids: Vec::new(),
};

static CURRENT: AtomicPtr<Identity> = AtomicPtr::new(std::ptr::null_mut());

fn current() -> &'static Identity {
    let p = CURRENT.load(Ordering::Acquire);
    if p.is_null() {
        &MASTER
    } else {
        // SAFETY: only `set` stores here, always a pointer from Box::leak
        // that is never freed.
        unsafe { &*p }
    }
}

/// Records this process's place in the tree (called by the agent and by a
/// forked child before any user code runs).
pub(crate) fn set(context_id: u32, parent_ids: Vec<u32>) {
    let leaked: &'static mut Identity = Box::leak(Box::new(Identity {
        context_id,
        parent_ids,
    }));
    CURRENT.store(leaked, Ordering::Release);
}

/// `true` in the master: the process that was not started by mitogen.
pub fn is_master() -> bool {
    current().context_id == MASTER_ID
}

/// This context's id; 0 in the master.
pub fn context_id() -> u32 {
    current().context_id
}

/// The id of the context that started this one; `None` in the master.
pub fn parent_id() -> Option<u32> {
    current().parent_ids.first().copied()
}

/// Ids of every context above this one, nearest first, ending with the
/// master; empty in the master.
pub fn parent_ids() -> &'static [u32] {
    &current().parent_ids
}
