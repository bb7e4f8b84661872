//! `BufferPool`: the memory of large Buffers that a receiver made and the garbage collector has
//! since collected, kept for its next large messages.
//!
//! A message stored inline is copied out into a Buffer the program owns. For a large message,
//! fresh memory costs more than the copy: the kernel maps and zeroes it one 4 KiB page fault at a
//! time (measured on this project's VM: receiving a 100 MB value took 24,421 page faults without
//! recycling, 815 with it). A stream of large values reuses the same few sizes, so the Buffers'
//! memory is recycled: the Buffer's finalizer (which runs on the event loop some time after the
//! garbage collector found the Buffer unreachable) hands it back, and the next copy of a message
//! of about that size goes there.
//!
//! Kept: buffers of at least [`MIN_BYTES`]; any two, and more while they total at most
//! [`MAX_BYTES`]. Everything kept is freed when the receiver closes (or is collected).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this come from the allocator every time (which reuses them well).
pub const MIN_BYTES: usize = 256 << 10;
/// Beyond two buffers, the pool keeps at most this many bytes.
pub const MAX_BYTES: usize = 64 << 20;

/// Recycled memory, by capacity.
#[derive(Default)]
pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    closed: AtomicBool,
}

impl BufferPool {
    /// An empty vector with room for at least `len` bytes: a kept one that is not more than twice
    /// as large, else a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len >= MIN_BYTES {
            if let Ok(mut free) = self.free.lock() {
                let fits = free
                    .iter()
                    .position(|v| v.capacity() >= len && v.capacity() / 2 <= len);
                if let Some(i) = fits {
                    let mut v = free.swap_remove(i);
                    v.clear();
                    return v;
                }
            }
        }
        Vec::with_capacity(len)
    }

    /// Hands `v` back: kept if it is large and there is room, else freed.
    pub fn give(&self, v: Vec<u8>) {
        if v.capacity() < MIN_BYTES || self.closed.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut free) = self.free.lock() else {
            return;
        };
        let total: usize = free.iter().map(Vec::capacity).sum();
        if free.len() < 2 || total + v.capacity() <= MAX_BYTES {
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
    fn keeps_large_buffers_within_bounds_and_reuses_them() {
        let pool = BufferPool::default();
        // Small buffers are never kept.
        pool.give(Vec::with_capacity(MIN_BYTES - 1));
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        // Any two are kept, even if together they exceed MAX_BYTES.
        pool.give(Vec::with_capacity(MAX_BYTES));
        pool.give(Vec::with_capacity(MAX_BYTES));
        pool.give(Vec::with_capacity(MIN_BYTES));
        assert_eq!(pool.free.lock().unwrap().len(), 2);
        // A kept buffer serves a request of at least half its size, and only once.
        let v = pool.take(MAX_BYTES / 2);
        assert!(v.capacity() >= MAX_BYTES && v.is_empty());
        assert_eq!(pool.free.lock().unwrap().len(), 1);
        // Too large a buffer is not handed out for a small request.
        assert!(pool.take(MIN_BYTES).capacity() < MAX_BYTES);
        // Closing frees what is kept, and what comes back later.
        pool.close();
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        pool.give(v);
        assert_eq!(pool.free.lock().unwrap().len(), 0);
    }

    #[test]
    fn beyond_two_buffers_keeps_at_most_max_bytes() {
        let pool = BufferPool::default();
        for _ in 0..(MAX_BYTES / MIN_BYTES + 10) {
            pool.give(Vec::with_capacity(MIN_BYTES));
        }
        let total: usize = pool.free.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!((MAX_BYTES - MIN_BYTES..=MAX_BYTES).contains(&total));
    }
}
