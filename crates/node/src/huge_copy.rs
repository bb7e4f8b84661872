//! Large copies out of shared memory into memory of this process's own, on transparent huge
//! pages where the kernel allows it.
//!
//! An inline message taken with `get()` is copied out of the ring into fresh memory, and on Linux
//! filling fresh memory costs a page fault (and a zeroed page) per 4 KiB. Measured on this
//! project's machine (a KVM guest, 2 vCPUs): copying 160 MB into fresh 4 KiB pages took ~74 ms
//! of CPU, into a fresh mapping advised `MADV_HUGEPAGE` ~24 ms (80 faults instead of 39,000).
//! So a large copy goes into an anonymous mapping aligned to 2 MiB and advised for huge pages,
//! handed to JavaScript as an external Buffer. With THP disabled
//! (`/sys/kernel/mm/transparent_hugepage/enabled` = `never`) the advice does nothing and the copy
//! costs what it did. Other systems, and smaller messages, copy into a Buffer Node makes.
//!
//! When such a Buffer is collected, its mapping is kept for the next large copy (at most
//! [`CACHE_ENTRIES`] mappings and [`CACHE_BYTES`] bytes, the oldest unmapped first), advised
//! `MADV_FREE` meanwhile: the kernel may take the pages back if it needs memory (a reuse then
//! faults them in again), and otherwise a reuse writes into pages already mapped, with nothing
//! to fault or zero. A process that receives large messages in a steady stream (a process pool's
//! results) then copies each at memory speed: 160 MB in ~13 ms here instead of ~25 ms.

use napi::bindgen_prelude::*;

/// Messages at least this long are copied into huge-page memory (two huge pages: below that,
/// rounding up to whole huge pages would waste more than it saves).
#[cfg(target_os = "linux")]
const HUGE_COPY_MIN: usize = 4 << 20;

/// Most mappings kept for reuse.
#[cfg(target_os = "linux")]
const CACHE_ENTRIES: usize = 4;

/// Most bytes of mappings kept for reuse.
#[cfg(target_os = "linux")]
const CACHE_BYTES: usize = 1 << 30;

/// Mappings of collected Buffers, kept for reuse, the oldest first. Finalizers may run on any
/// thread, hence the lock.
#[cfg(target_os = "linux")]
static CACHE: std::sync::Mutex<Vec<HugeMap>> = std::sync::Mutex::new(Vec::new());

/// A copy of `bytes` as a Buffer of its own.
pub fn copy_to_buffer<'env>(env: &'env Env, bytes: &[u8]) -> Result<BufferSlice<'env>> {
    #[cfg(target_os = "linux")]
    if bytes.len() >= HUGE_COPY_MIN {
        if let Some(mut map) = HugeMap::reuse(bytes.len()).or_else(|| HugeMap::new(bytes.len())) {
            let len = bytes.len();
            map.as_mut_slice()[..len].copy_from_slice(bytes);
            let ptr = map.base;
            let _ = env.adjust_external_memory(len as i64);
            // SAFETY: `map` is a private mapping of at least `len` bytes that nothing else refers
            // to; it moves into the finalizer, which runs once JavaScript can no longer reach the
            // Buffer, and keeps it for reuse or unmaps it then.
            return unsafe {
                BufferSlice::from_external(env, ptr, len, map, move |env, map| {
                    let _ = env.adjust_external_memory(-(len as i64));
                    map.recycle();
                })
            };
        }
    }
    BufferSlice::copy_from(env, bytes)
}

/// An anonymous private mapping aligned to 2 MiB, advised for transparent huge pages.
#[cfg(target_os = "linux")]
struct HugeMap {
    base: *mut u8,
    len: usize,
}

#[cfg(target_os = "linux")]
impl HugeMap {
    const HUGE_PAGE: usize = 2 << 20;

    /// Maps at least `len` bytes (`None` if the system refuses: the caller copies as before).
    fn new(len: usize) -> Option<Self> {
        let map_len = len.checked_next_multiple_of(Self::HUGE_PAGE)?;
        let total = map_len.checked_add(Self::HUGE_PAGE)?;
        // SAFETY: a fresh anonymous mapping; no existing memory is touched.
        let raw = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if raw == libc::MAP_FAILED {
            return None;
        }
        let start = raw as usize;
        let aligned = start.next_multiple_of(Self::HUGE_PAGE);
        let head = aligned - start;
        let tail = total - head - map_len;
        // SAFETY: both ranges lie inside the mapping made above and outside the part kept.
        unsafe {
            if head > 0 {
                libc::munmap(raw, head);
            }
            if tail > 0 {
                libc::munmap((aligned + map_len) as *mut libc::c_void, tail);
            }
            // Advice only: without THP the mapping works as usual.
            libc::madvise(aligned as *mut libc::c_void, map_len, libc::MADV_HUGEPAGE);
        }
        Some(Self {
            base: aligned as *mut u8,
            len: map_len,
        })
    }

    /// A kept mapping that fits `len` bytes without wasting more than half of it, if any.
    fn reuse(len: usize) -> Option<Self> {
        let mut cache = CACHE.lock().ok()?;
        let best = (0..cache.len())
            .filter(|&i| cache[i].len >= len && cache[i].len / 2 <= len)
            .min_by_key(|&i| cache[i].len)?;
        Some(cache.remove(best))
    }

    /// Keeps the mapping for a later copy (its pages freeable meanwhile), or unmaps it.
    fn recycle(self) {
        if self.len > CACHE_BYTES {
            return; // dropped: unmapped
        }
        // SAFETY: the range is this mapping, which nothing refers to any more; MADV_FREE only
        // lets the kernel drop its contents, which a reuse overwrites anyway.
        unsafe { libc::madvise(self.base as *mut libc::c_void, self.len, libc::MADV_FREE) };
        let Ok(mut cache) = CACHE.lock() else {
            return;
        };
        cache.push(self);
        let mut total: usize = cache.iter().map(|m| m.len).sum();
        while cache.len() > CACHE_ENTRIES || total > CACHE_BYTES {
            total -= cache.remove(0).len; // the oldest, unmapped as it drops
        }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `base..base + len` is mapped read-write and owned by `self`.
        unsafe { std::slice::from_raw_parts_mut(self.base, self.len) }
    }
}

#[cfg(target_os = "linux")]
impl Drop for HugeMap {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` and is unmapped exactly once.
        unsafe { libc::munmap(self.base as *mut libc::c_void, self.len) };
    }
}

// SAFETY: the mapping is plain memory owned by the value; it may be unmapped from any thread.
#[cfg(target_os = "linux")]
unsafe impl Send for HugeMap {}
