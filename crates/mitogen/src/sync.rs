//! Lock helpers shared by every layer.
//!
//! A panic while a runtime lock is held (in user code called back under
//! it, say) must not turn every later use of that lock into a second
//! panic: the data the runtime keeps under its locks stays consistent at
//! every await point, so a poisoned lock is simply taken over.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking over a lock poisoned by a panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
