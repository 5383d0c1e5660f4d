//! Lock helpers shared by every layer.
//!
//! A panic while a runtime lock is held (in user code called back under
//! it, say) must not turn every later use of that lock into a second
//! panic: the data the runtime keeps under its locks stays consistent at
//! every await point, so a poisoned lock is simply taken over.
//!
//! A value a process computes once (its own hash, its loader) must also
//! survive `fork`: a child inherits a `OnceLock` being initialised, or a
//! lock held, by a thread it does not have, and would wait for it forever
//! ([`once_across_fork`]).

use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Locks `m`, taking over a lock poisoned by a panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The value in `cell`, computed by `init` once: a thread finding another
/// computing it (holding `busy`) waits for that one rather than compute
/// twice. Only `try_lock` is used, for at most ten seconds: a forked child
/// may have inherited `busy` held by a thread that does not exist in it,
/// and then computes by itself. The value is set outside the `OnceLock`
/// for the same reason.
pub(crate) fn once_across_fork<T: Clone, E>(
    cell: &OnceLock<T>,
    busy: &Mutex<()>,
    init: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    if let Some(v) = cell.get() {
        return Ok(v.clone());
    }
    let start = Instant::now();
    let _guard = loop {
        match busy.try_lock() {
            Ok(g) => break Some(g),
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                if let Some(v) = cell.get() {
                    return Ok(v.clone());
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => break None,
        }
    };
    if let Some(v) = cell.get() {
        return Ok(v.clone());
    }
    let v = init()?;
    let _ = cell.set(v.clone());
    Ok(cell.get().cloned().unwrap_or(v))
}

/// Hashes maps keyed by ids this process hands out in sequence (handles,
/// context ids): the id itself picks the bucket, so neighbours share cache
/// lines, and a multiple of it fills the top bits the table filters
/// probes by. Not for keys a peer chooses: it assumes no one arranges
/// collisions. Cheaper than the default SipHash, which guards against
/// exactly that.
pub(crate) type IdHash = BuildHasherDefault<IdHasher>;

/// The [`Hasher`] of [`IdHash`].
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 | (self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15) & (0x7f << 57))
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n);
    }
}
