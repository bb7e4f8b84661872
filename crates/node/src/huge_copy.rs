//! Large copies out of shared memory into memory of this process's own, on transparent huge
//! pages where the kernel allows it.
//!
//! An inline message taken with `get()` is copied out of the ring into fresh memory, and on Linux
//! filling fresh memory costs a page fault (and a zeroed page) per 4 KiB. Measured on this
//! project's machine (a KVM guest, 2 vCPUs): copying 160 MB into fresh 4 KiB pages took ~74 ms
//! of CPU, into a fresh mapping advised `MADV_HUGEPAGE` ~24 ms (80 faults instead of 39,000).
//! So a large copy goes into an anonymous mapping aligned to 2 MiB and advised for huge pages,
//! handed to JavaScript as an external Buffer that unmaps it when it is collected. With THP
//! disabled (`/sys/kernel/mm/transparent_hugepage/enabled` = `never`) the advice does nothing and
//! the copy costs what it did. Other systems, and smaller messages, copy into a Buffer Node makes.

use napi::bindgen_prelude::*;

/// Messages at least this long are copied into huge-page memory (two huge pages: below that,
/// rounding up to whole huge pages would waste more than it saves).
#[cfg(target_os = "linux")]
const HUGE_COPY_MIN: usize = 4 << 20;

/// A copy of `bytes` as a Buffer of its own.
pub fn copy_to_buffer<'env>(env: &'env Env, bytes: &[u8]) -> Result<BufferSlice<'env>> {
    #[cfg(target_os = "linux")]
    if bytes.len() >= HUGE_COPY_MIN {
        if let Some(mut map) = HugeMap::new(bytes.len()) {
            let len = bytes.len();
            map.as_mut_slice()[..len].copy_from_slice(bytes);
            let ptr = map.base;
            let _ = env.adjust_external_memory(len as i64);
            // SAFETY: `map` is a private mapping of at least `len` bytes that nothing else refers
            // to; it moves into the finalizer, which runs once JavaScript can no longer reach the
            // Buffer, and unmaps it then.
            return unsafe {
                BufferSlice::from_external(env, ptr, len, map, move |env, map| {
                    let _ = env.adjust_external_memory(-(len as i64));
                    drop(map);
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
