//! Writes records into a live queue as a hostile (or buggy) process of the same user could:
//! validly stamped with the key from the queue's config, at the tail, and published by moving
//! the tail. The offsets are the queue layout's (`crates/core/src/queue/layout.rs`), checked against the config.

use shmpipe_core::{Segment, SegmentKind};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::common::queue_layout::{
    COMMITTED, DATA_OFFSET, DATA_UNITS, KIND_BLOB, MAX_PRODUCERS, MSG_MASK, POS_MASK,
    PRODUCERS_OFFSET, PRODUCER_ENTRY_SIZE, STAMP_KEY, TAIL, UNIT,
};

/// A second mapping of a queue, used to forge records into it.
pub struct Forger {
    seg: Segment,
}

impl Forger {
    /// Maps the queue `name`.
    pub fn open(name: &str) -> Self {
        let seg = Segment::open(name, SegmentKind::Queue, Duration::from_secs(1)).unwrap();
        let f = Self { seg };
        assert!(
            f.u32(MAX_PRODUCERS) >= 2,
            "forge into a multi-producer queue"
        );
        assert_eq!(
            f.u64(STAMP_KEY) >> 63,
            1,
            "the stamp key has its top bit set"
        );
        f
    }

    fn at<T>(&self, offset: u64) -> &T {
        assert!(offset as usize + std::mem::size_of::<T>() <= self.seg.body_len());
        // SAFETY: inside the body (checked above), aligned (every offset used is a multiple of
        // the field's size from a page-aligned body), mapped while `self` lives; atomics are
        // valid for any bit pattern.
        unsafe { &*(self.seg.body_ptr().add(offset as usize) as *const T) }
    }

    fn u64(&self, offset: u64) -> u64 {
        self.at::<AtomicU64>(offset).load(Ordering::Acquire)
    }

    fn u32(&self, offset: u64) -> u32 {
        self.at::<AtomicU32>(offset).load(Ordering::Acquire)
    }

    /// The generation of the registration in producer slot `index`.
    pub fn generation(&self, index: u32) -> u32 {
        let word = self.u64(self.u64(PRODUCERS_OFFSET) + index as u64 * PRODUCER_ENTRY_SIZE);
        ((word >> 8) as u32) & ((1 << 24) - 1)
    }

    /// Appends a committed blob record of producer registration (`index`, `generation`) whose
    /// descriptor names segment `name` and a message of `len` bytes.
    pub fn blob_record(&self, index: u32, generation: u32, name: &str, len: u64) {
        assert!(name.len() <= 32);
        let mut desc = [0u8; 48];
        desc[..8].copy_from_slice(&len.to_le_bytes());
        desc[8..16].copy_from_slice(&(name.len() as u64).to_le_bytes());
        desc[16..16 + name.len()].copy_from_slice(name.as_bytes());
        let units = 1 + (desc.len() as u64).div_ceil(UNIT);
        let data_units = self.u64(DATA_UNITS);
        let tail = self.at::<AtomicU64>(TAIL);
        let seen = tail.load(Ordering::Acquire);
        let pos = seen & POS_MASK;
        assert!(
            data_units - (pos & (data_units - 1)) >= units,
            "the test's ring must not wrap under a forged record"
        );
        let rec = self.u64(DATA_OFFSET) + (pos & (data_units - 1)) * UNIT;
        for (i, b) in desc.iter().enumerate() {
            // SAFETY: the record's payload lies inside the data area (it fits before the end
            // of the ring, checked above) and nobody else writes past the tail.
            unsafe { self.seg.body_ptr().add((rec + UNIT) as usize + i).write(*b) };
        }
        self.at::<AtomicU64>(rec + 8)
            .store(desc.len() as u64, Ordering::Relaxed);
        self.at::<AtomicU32>(rec + 16)
            .store(units as u32, Ordering::Relaxed);
        self.at::<AtomicU32>(rec + 20)
            .store(KIND_BLOB, Ordering::Relaxed);
        self.at::<AtomicU32>(rec + 24)
            .store(index, Ordering::Relaxed);
        self.at::<AtomicU32>(rec + 28)
            .store(generation, Ordering::Relaxed);
        let stamp = self.u64(STAMP_KEY) ^ ((pos << 3) | COMMITTED);
        self.at::<AtomicU64>(rec).store(stamp, Ordering::Release);
        let msgs = ((seen >> 40) + 1) & MSG_MASK;
        let next = (msgs << 40) | ((pos + units) & POS_MASK);
        tail.compare_exchange(seen, next, Ordering::AcqRel, Ordering::Relaxed)
            .expect("nobody else claims while the test forges");
    }
}
