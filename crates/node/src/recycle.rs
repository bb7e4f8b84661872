//! `BufferPool`: the memory of large Buffers that a receiver made and the garbage collector has
//! since collected, kept for its next large messages.
//!
//! A message stored inline is copied out into a Buffer the program owns. For a large message,
//! fresh memory costs more than the copy: the kernel maps and zeroes it one 4 KiB page fault at a
//! time. A stream of large values reuses the same few sizes, so the Buffers' memory is recycled:
//! the Buffer's finalizer (which runs on the event loop some time after the garbage collector
//! found the Buffer unreachable) hands it back, and the next copy of a message of about that size
//! goes there.
//!
//! Kept: at most [`MAX_BUFFERS`] buffers, each of at least [`MIN_BYTES`]; everything kept is
//! freed when the receiver closes (or is collected). Smaller messages are left to the allocator,
//! which reuses such blocks itself.
//!
//! Handed out: at most [`MAX_OUTSTANDING_BYTES`] at a time (at least one buffer). Past that
//! [`take`](BufferPool::take) says no and the caller copies into a Buffer Node allocates. The
//! finalizers that give the memory back run only at a turn of the event loop, which `get()` makes
//! once the external bytes out pass their bound (`external`); this bound is for what the program
//! keeps, and still holds two 1 GiB values, which a stream of them needs to recycle at all.
//!
//! The measurements behind these limits: `docs/decisions/2026-11-21-recycling-bound.md`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this come from the allocator every time. glibc serves blocks up to
/// 32 MiB from its heap once it has seen them freed; larger ones are always fresh mappings.
pub const MIN_BYTES: usize = 32 << 20;
/// The pool keeps at most this many buffers.
pub const MAX_BUFFERS: usize = 2;
/// The pool hands out at most this many bytes that have not come back yet, unless none are out.
pub const MAX_OUTSTANDING_BYTES: usize = 2 << 30;

/// Recycled memory, by capacity.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    /// Capacity of the vectors handed out by `take` and not yet given back.
    outstanding: AtomicUsize,
    closed: AtomicBool,
}

impl BufferPool {
    /// An empty vector with room for at least `len` bytes: a kept one that is not more than twice
    /// as large, else a new one; `None` if that would put more than [`MAX_OUTSTANDING_BYTES`]
    /// out (and some are out already). Hand it back with [`give`](Self::give).
    pub fn take(&self, len: usize) -> Option<Vec<u8>> {
        let mut reused = None;
        if len >= MIN_BYTES {
            if let Ok(mut free) = self.free.lock() {
                let fits = free
                    .iter()
                    .position(|v| v.capacity() >= len && v.capacity() / 2 <= len);
                reused = fits.map(|i| free.swap_remove(i));
            }
        }
        let capacity = reused.as_ref().map_or(len, Vec::capacity);
        let out = self.outstanding.load(Ordering::Relaxed);
        if out > 0 && out.saturating_add(capacity) > MAX_OUTSTANDING_BYTES {
            if let Some(v) = reused {
                self.keep(v);
            }
            return None;
        }
        let mut v = reused.unwrap_or_else(|| Vec::with_capacity(len));
        v.clear();
        self.outstanding.fetch_add(v.capacity(), Ordering::Relaxed);
        Some(v)
    }

    /// Hands back a vector from [`take`](Self::take): kept if it is large and there is room,
    /// else freed.
    pub fn give(&self, v: Vec<u8>) {
        self.outstanding.fetch_sub(v.capacity(), Ordering::Relaxed);
        self.keep(v);
    }

    /// Keeps `v` for a later `take` if it is large and there is room, else frees it.
    fn keep(&self, v: Vec<u8>) {
        if v.capacity() < MIN_BYTES || self.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        if free.len() < MAX_BUFFERS {
            free.push(v);
        }
    }

    /// Frees what is kept, and everything handed back from now on.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let kept = self.free.lock().map(|mut f| std::mem::take(&mut *f));
        drop(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_two_large_buffers_and_reuses_them() {
        let pool = BufferPool::default();
        // Small buffers are never kept.
        pool.keep(Vec::with_capacity(MIN_BYTES - 1));
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        // At most MAX_BUFFERS are kept.
        for _ in 0..MAX_BUFFERS + 1 {
            pool.keep(Vec::with_capacity(2 * MIN_BYTES));
        }
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
        // A kept buffer serves a request of at least half its size, and only once.
        let v = pool.take(MIN_BYTES + 1).unwrap();
        assert!(v.capacity() >= 2 * MIN_BYTES && v.is_empty());
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS - 1);
        // Too large a buffer is not handed out for a small request, nor any for a tiny one.
        let small = pool.take(MIN_BYTES - 2).unwrap();
        assert!(small.capacity() < 2 * MIN_BYTES);
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS - 1);
        pool.give(small);
        // Closing frees what is kept, and what comes back later.
        pool.close();
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        pool.give(v);
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        assert_eq!(pool.outstanding.load(Ordering::Relaxed), 0);
    }

    /// The vectors are reserved, never written: no page of them is touched.
    #[test]
    fn hands_out_at_most_the_outstanding_bound_unless_none_is_out() {
        let pool = BufferPool::default();
        let third = MAX_OUTSTANDING_BYTES / 3 + 1;
        let a = pool.take(third).unwrap();
        let b = pool.take(third).unwrap();
        // A third would pass the bound: refused, and a kept buffer that fits stays kept.
        pool.keep(Vec::with_capacity(third));
        assert!(pool.take(third).is_none());
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        // One back, and there is room again (the kept one is handed out).
        pool.give(a);
        let c = pool.take(third).unwrap();
        assert_eq!(c.capacity(), third);
        // With nothing out, even a buffer over the bound is handed out.
        pool.give(b);
        pool.give(c);
        let huge = pool.take(MAX_OUTSTANDING_BYTES + 1).unwrap();
        assert!(pool.take(MIN_BYTES).is_none());
        pool.give(huge);
        assert_eq!(pool.outstanding.load(Ordering::Relaxed), 0);
    }
}
