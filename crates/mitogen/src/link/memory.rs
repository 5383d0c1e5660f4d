//! Large buffers backed by huge pages.
//!
//! A large payload always lands in fresh memory (a reassembled message, a
//! frame read into its own buffer, an encoded call), and profiling a 64 MiB
//! call showed that touching fresh memory, not copying it, was most of the
//! time: a page fault, a cleared page and a cgroup charge per 4 KiB, which
//! costs even more under a hypervisor. Buffers of [`HUGE_FROM`] bytes and
//! more are therefore asked to be backed by 2 MiB pages
//! (`madvise(MADV_HUGEPAGE)`): 512 times fewer faults. The kernel honours
//! it when transparent huge pages are in `madvise` or `always` mode and
//! ignores it otherwise; the contents are never affected.
//!
//! The advice covers every page the buffer touches, so the whole mapping
//! of a large allocation (the allocator maps it on its own): advising only
//! its 2 MiB-aligned interior would split the mapping in three, and a
//! later `realloc` of a split mapping cannot `mremap` it and copies it
//! instead (measured: a 256 MiB buffer grown by a byte took 220 ms and
//! twice its memory, against 2 ms).
//!
//! A stream of large chunks (a bulk stream, a file transfer) would touch
//! fresh memory for every chunk too: the allocator hands a freed
//! megabyte back to the kernel and maps a new one for the next frame.
//! A consumer done with a chunk may give its buffer back ([`give`]); the
//! next large frame is read into it ([`spare`]), its pages already
//! there. At most [`SPARE_BYTES`] are kept.

/// Buffers at least this large are advised.
pub(crate) const HUGE_FROM: usize = 8 << 20;

/// Smallest buffer worth keeping: below it the allocator recycles well.
const SPARE_FROM: usize = 256 << 10;

/// Bytes of given-back buffers kept at most (the rest are freed).
pub(crate) const SPARE_BYTES: usize = 16 << 20;

/// Buffers given back, and their total capacity.
static SPARES: std::sync::Mutex<(Vec<Vec<u8>>, usize)> = std::sync::Mutex::new((Vec::new(), 0));

/// An empty buffer for a frame of `len` bytes: a given-back one that
/// fits (holding at most twice `len`), else a new, unallocated one.
pub(crate) fn spare(len: usize) -> Vec<u8> {
    if len < SPARE_FROM {
        return Vec::new();
    }
    let Ok(mut s) = SPARES.lock() else {
        return Vec::new();
    };
    let (list, total) = &mut *s;
    match list
        .iter()
        .position(|v| v.capacity() >= len && v.capacity() / 2 <= len)
    {
        Some(i) => {
            let v = list.swap_remove(i);
            *total -= v.capacity();
            v
        }
        None => Vec::new(),
    }
}

/// Keeps `v`'s memory for a later [`spare`] (when it is large, and the
/// keep is not full).
pub(crate) fn give(mut v: Vec<u8>) {
    let cap = v.capacity();
    if !(SPARE_FROM..=HUGE_FROM).contains(&cap) {
        return;
    }
    v.clear();
    if let Ok(mut s) = SPARES.lock() {
        let (list, total) = &mut *s;
        if *total + cap <= SPARE_BYTES {
            *total += cap;
            list.push(v);
        }
    }
}

/// Reserves room for `additional` more bytes in `v`, advising huge pages
/// when that made (or moved) a large allocation.
pub(crate) fn reserve(v: &mut Vec<u8>, additional: usize) {
    let (ptr, cap) = (v.as_ptr(), v.capacity());
    v.reserve(additional);
    if v.capacity() >= HUGE_FROM && (v.as_ptr() != ptr || v.capacity() != cap) {
        advise(v.as_ptr() as usize, v.capacity());
    }
}

fn advise(start: usize, len: usize) {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    let a = start & !(page - 1);
    let b = (start + len + page - 1) & !(page - 1);
    // SAFETY: [a, b) are the pages of an allocation this process owns
    // (and, at its ends, memory of the same process); MADV_HUGEPAGE only
    // changes how they are backed, never their contents.
    unsafe { libc::madvise(a as *mut libc::c_void, b - a, libc::MADV_HUGEPAGE) };
}

/// A `Write` into a `Vec<u8>` that grows it through [`reserve`], for
/// serializers writing large payloads.
pub(crate) struct HugeWriter<'a>(pub(crate) &'a mut Vec<u8>);

impl std::io::Write for HugeWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        // Vec's amortized growth, advised when large.
        reserve(self.0, buf.len());
        self.0.extend_from_slice(buf);
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn reserve_keeps_contents_and_grows() {
        let mut v = b"abc".to_vec();
        reserve(&mut v, 8 << 20);
        assert!(v.capacity() >= (8 << 20) + 3);
        assert_eq!(v, b"abc");
        let mut w = Vec::new();
        HugeWriter(&mut w).write_all(&vec![5u8; 5 << 20]).unwrap();
        HugeWriter(&mut w).write_all(b"xy").unwrap();
        assert_eq!(w.len(), (5 << 20) + 2);
        assert_eq!(&w[w.len() - 3..], b"\x05xy");
    }

    #[test]
    fn given_back_buffers_are_reused_when_they_fit_and_the_keep_is_bounded() {
        let mut a = Vec::with_capacity(1 << 20);
        a.extend_from_slice(b"old");
        give(a);
        // Too small a frame for it, then one it fits.
        assert_eq!(spare(100 << 10).capacity(), 0);
        assert_eq!(spare(300 << 10).capacity(), 0, "more than twice the frame");
        let b = spare(1 << 20);
        assert!(b.is_empty(), "given back cleared");
        // Other tests may give buffers too: ours or another that fits.
        assert!(b.capacity() >= 1 << 20);
        // The keep never holds more than its bound.
        for _ in 0..64 {
            give(Vec::with_capacity(1 << 20));
        }
        let s = SPARES.lock().unwrap();
        assert!(s.1 <= SPARE_BYTES && s.0.iter().map(Vec::capacity).sum::<usize>() == s.1);
    }
}
