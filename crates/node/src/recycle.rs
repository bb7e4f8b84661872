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
//! Kept: at most [`MAX_BUFFERS`] buffers, each of at least [`MIN_BYTES`]; everything kept is
//! freed when the receiver closes (or is collected). Smaller messages are left to the allocator,
//! which reuses such blocks: recycling 1 MB and 10 MB messages too measured slower in the
//! transport benchmark (alternating runs, get() at 10 MB: 0.7-0.9 GB/s with it, 1.1-2.5 without),
//! probably because Buffers external to V8 are only reclaimed by full collections and their
//! finalizers, where V8's own ArrayBuffers are swept by the cheap young-generation collections.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this come from the allocator every time. glibc serves blocks up to
/// 32 MiB from its heap once it has seen them freed; larger ones are always fresh mappings.
pub const MIN_BYTES: usize = 32 << 20;
/// The pool keeps at most this many buffers.
pub const MAX_BUFFERS: usize = 2;

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
        pool.give(Vec::with_capacity(MIN_BYTES - 1));
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        // At most MAX_BUFFERS are kept.
        for _ in 0..MAX_BUFFERS + 1 {
            pool.give(Vec::with_capacity(2 * MIN_BYTES));
        }
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS);
        // A kept buffer serves a request of at least half its size, and only once.
        let v = pool.take(MIN_BYTES + 1);
        assert!(v.capacity() >= 2 * MIN_BYTES && v.is_empty());
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS - 1);
        // Too large a buffer is not handed out for a small request, nor any for a tiny one.
        assert!(pool.take(MIN_BYTES - 2).capacity() < 2 * MIN_BYTES);
        assert_eq!(pool.free.lock().unwrap().len(), MAX_BUFFERS - 1);
        // Closing frees what is kept, and what comes back later.
        pool.close();
        assert_eq!(pool.free.lock().unwrap().len(), 0);
        pool.give(v);
        assert_eq!(pool.free.lock().unwrap().len(), 0);
    }
}
