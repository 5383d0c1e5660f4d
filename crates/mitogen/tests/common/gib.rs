//! A 1 GiB call argument and a 1 GiB call result, with the peak memory of
//! both ends measured: shared by `tests/core` (a local context) and
//! `tests/hosts` (over ssh), included by path.
//!
//! **The bound.** Each side's peak resident memory may grow, over its
//! resident size before the call, by at most `payload + SLACK`:
//!
//! - the **sending** side holds the value only: the encoder sends the
//!   byte string's body to the link straight from the value
//!   (`streamed.rs`; a result is encoded only as it is sent), so no
//!   encoded copy is ever built;
//! - the **receiving** side holds one buffer: the message is read straight
//!   into it (fragments are appended where they land), and decoding moves
//!   the byte string out of that buffer instead of copying it.
//!
//! `SLACK` covers what does not scale with the payload (a link queue, a
//! frame being read, allocator slack, the test's own threads). One more
//! copy of the payload anywhere — a serializer buffer copied into
//! fragments, fragments copied into a reassembly buffer, a reassembled
//! message copied into the value — is over the bound by ~900 MiB, so the
//! test fails on it. (Before this work each side held 2 × payload.)
//!
//! Peaks are read from `VmHWM` in `/proc/self/status` after resetting it
//! (`echo 5 > /proc/self/clear_refs`) just before the call. `VmHWM` is
//! process-wide: the master's figure is only this test's when the test
//! runs alone in its process, as under nextest (`.config/nextest.toml`
//! also runs these tests one at a time, for the machine's sake).
//!
//! The payload is 4 KiB blocks each starting with its own index, so a
//! lost, repeated or misplaced block (at a fragment boundary, say) shows.

use mitogen::{ByteBuf, Context};

/// The payload size of these tests.
pub const GIB: usize = 1 << 30;

/// What a side may use besides its copies of the payload.
pub const SLACK: usize = 96 << 20;

const BLOCK: usize = 4096;

fn pattern() -> [u8; BLOCK] {
    let mut p = [0u8; BLOCK];
    for (i, b) in p.iter_mut().enumerate() {
        *b = (i * 7 + 1) as u8;
    }
    p
}

/// `n` bytes (a multiple of 4 KiB) of indexed blocks.
pub fn payload(n: usize) -> Vec<u8> {
    assert!(n % BLOCK == 0, "payload sizes are whole blocks");
    let mut block = pattern();
    let mut v = Vec::with_capacity(n);
    for i in 0..(n / BLOCK) as u64 {
        block[..8].copy_from_slice(&i.to_le_bytes());
        v.extend_from_slice(&block);
    }
    v
}

/// Checks that `b` is `payload(n)`.
pub fn verify(b: &[u8], n: usize) -> Result<(), String> {
    if b.len() != n {
        return Err(format!("{} bytes instead of {n}", b.len()));
    }
    let pat = pattern();
    for (i, c) in b.chunks(BLOCK).enumerate() {
        if c[..8] != (i as u64).to_le_bytes() || c[8..] != pat[8..] {
            return Err(format!("block {i} (at byte {}) is wrong", i * BLOCK));
        }
    }
    Ok(())
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resets this process's peak resident size to its current one, and
/// returns that (KiB).
#[mitogen::remote]
pub fn reset_peak() -> Result<u64, std::io::Error> {
    std::fs::write("/proc/self/clear_refs", "5")?;
    Ok(status_kib("VmRSS:"))
}

/// Peak resident size since the last reset (KiB).
#[mitogen::remote]
pub fn peak_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Checks a received argument; returns its length.
#[mitogen::remote]
pub fn check_bytes(b: ByteBuf, n: u64) -> Result<u64, String> {
    verify(&b, n as usize)?;
    Ok(b.len() as u64)
}

/// Makes a result of `n` bytes.
#[mitogen::remote]
pub fn make_payload(n: u64) -> ByteBuf {
    ByteBuf::from(payload(n as usize))
}

/// How much each side's peak grew over its size before the transfer.
#[derive(Debug)]
pub struct Growth {
    pub master_mib: u64,
    pub child_mib: u64,
}

/// `k × n + SLACK`, in MiB.
fn bound(k: usize, n: usize) -> u64 {
    ((k * n + SLACK) >> 20) as u64
}

impl Growth {
    /// `Err` unless the master grew by at most `km × n + SLACK` and the
    /// child by at most `kc × n + SLACK`.
    pub fn check(&self, what: &str, n: usize, km: usize, kc: usize) -> Result<(), String> {
        let (bm, bc) = (bound(km, n), bound(kc, n));
        eprintln!(
            "{what}: peak growth master {} MiB (bound {bm}), child {} MiB (bound {bc})",
            self.master_mib, self.child_mib
        );
        if self.master_mib > bm || self.child_mib > bc {
            return Err(format!(
                "{what} of {} MiB: the master grew by {} MiB (bound {km} × payload + {} MiB = \
                 {bm} MiB) and the child by {} MiB (bound {kc} × payload + {} MiB = {bc} MiB)",
                n >> 20,
                self.master_mib,
                SLACK >> 20,
                self.child_mib,
                SLACK >> 20,
            ));
        }
        Ok(())
    }
}

fn growth(ctx: &Context, master0: u64, child0: u64) -> mitogen::Result<Growth> {
    let master = peak_kib().saturating_sub(master0) >> 10;
    let child = ctx.call::<peak_kib>(())?.saturating_sub(child0) >> 10;
    Ok(Growth {
        master_mib: master,
        child_mib: child,
    })
}

fn reset_both(ctx: &Context) -> Result<(u64, u64), String> {
    let master = reset_peak().map_err(|e| format!("resetting the master's peak: {e}"))?;
    let child = ctx
        .call::<reset_peak>(())
        .map_err(|e| format!("resetting the child's peak: {e}"))?;
    Ok((master, child))
}

/// Sends `payload(n)` to `ctx` as a call argument; returns the growth.
pub fn argument(ctx: &Context, n: usize) -> Result<Growth, String> {
    let (m0, c0) = reset_both(ctx)?;
    let arg = ByteBuf::from(payload(n));
    let got = ctx
        .call::<check_bytes>((arg, n as u64))
        .map_err(|e| e.to_string())?;
    if got != n as u64 {
        return Err(format!("the child saw {got} bytes of {n}"));
    }
    growth(ctx, m0, c0).map_err(|e| e.to_string())
}

/// Gets `payload(n)` from `ctx` as a call result; returns the growth.
pub fn result(ctx: &Context, n: usize) -> Result<Growth, String> {
    let (m0, c0) = reset_both(ctx)?;
    let r = ctx
        .call::<make_payload>((n as u64,))
        .map_err(|e| e.to_string())?;
    verify(&r, n).map_err(|e| format!("the result: {e}"))?;
    drop(r);
    growth(ctx, m0, c0).map_err(|e| e.to_string())
}
