//! The queue's shared-memory layout and the arithmetic on its positions.
//!
//! Everything here is addressed by offsets from the segment body, never by pointers, because
//! every process maps the segment at a different address. All fields are atomics, so any bit
//! pattern another process (or a corruption) leaves is a valid value, checked before use.
//!
//! ```text
//! body offset 0     QueueHeader   config, tail, head, published, events, consumer (128-byte lines)
//! producers_offset  [ProducerEntry; max_producers]                       (128 bytes each)
//! data_offset       data area: records of UNIT-aligned size, a ring of data_units units
//! ```
//!
//! Positions count UNITs modulo 2^40; the data area is a power of two of units, so a position's
//! offset in the ring is `pos & (data_units - 1)` across the wrap of the counter too. The tail
//! and head cursors pack a position with a message count (modulo 2^24), so that one CAS claims
//! both bytes and a message slot.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::event::EventWord;

/// Allocation granule of the data area, and the size of a record header.
pub const UNIT: u64 = 32;
/// Bits of a cursor holding the position.
pub const POS_BITS: u32 = 40;
/// Mask of a position.
pub const POS_MASK: u64 = (1 << POS_BITS) - 1;
/// Mask of a cursor's message count.
pub const MSG_MASK: u64 = (1 << (64 - POS_BITS)) - 1;
/// Largest message capacity (message counts must never be ambiguous modulo 2^24).
pub const MAX_CAPACITY: u32 = (1 << 23) - 1;
/// Largest data area, in units (128 GiB): record sizes are stored as u32 units, and positions
/// must never be ambiguous modulo 2^40.
pub const MAX_DATA_UNITS: u64 = 1 << 32;
/// Smallest data area, in bytes.
pub const MIN_DATA_BYTES: u64 = 4096;
/// Largest producer slot count.
pub const MAX_PRODUCERS: u32 = 4096;

/// A packed cursor: message count in the high 24 bits, position in the low 40.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub u64);

impl Cursor {
    /// The position part.
    #[inline]
    pub fn pos(self) -> u64 {
        self.0 & POS_MASK
    }

    /// The message-count part.
    #[inline]
    pub fn msgs(self) -> u64 {
        self.0 >> POS_BITS
    }

    /// The cursor moved on by `units` and `msgs`.
    #[inline]
    pub fn advance(self, units: u64, msgs: u64) -> Self {
        Self((((self.msgs() + msgs) & MSG_MASK) << POS_BITS) | ((self.pos() + units) & POS_MASK))
    }

    /// Units between `head` and `self` (self is ahead).
    #[inline]
    pub fn units_since(self, head: Cursor) -> u64 {
        self.pos().wrapping_sub(head.pos()) & POS_MASK
    }

    /// Messages between `head` and `self`.
    #[inline]
    pub fn msgs_since(self, head: Cursor) -> u64 {
        self.msgs().wrapping_sub(head.msgs()) & MSG_MASK
    }
}

/// Distance from position `a` forward to `b`, modulo 2^40.
#[inline]
pub fn pos_distance(a: u64, b: u64) -> u64 {
    b.wrapping_sub(a) & POS_MASK
}

/// Record states, kept in the low bits of a record's stamp.
pub mod state {
    /// Claimed; the producer is writing.
    pub const WRITING: u64 = 1;
    /// Complete and visible to the consumer.
    pub const COMMITTED: u64 = 2;
    /// To be passed over: aborted by its producer, or left by a producer that died.
    pub const SKIP: u64 = 3;
    /// Consumed and released; the head may move past it.
    pub const RELEASED: u64 = 4;
}

/// Record kinds.
pub mod kind {
    /// The payload follows the header in the ring.
    pub const INLINE: u32 = 1;
    /// The payload is a [`super::BlobDescriptor`] naming a segment of its own.
    pub const BLOB: u32 = 2;
    /// Filler up to the end of the ring; not a message.
    pub const PAD: u32 = 3;
}

/// A record stamp for position `pos` in `state`, keyed per queue so that stale payload bytes
/// never read as a valid stamp. Never zero (the key's top bit is set).
#[inline]
pub fn stamp(key: u64, pos: u64, state: u64) -> u64 {
    key ^ (((pos & POS_MASK) << 3) | state)
}

/// Padding to one 128-byte line (two cache lines: the adjacent-line prefetcher pulls pairs).
/// Dereferences to the padded value.
#[repr(C, align(128))]
#[derive(Default)]
pub struct Line<T>(pub T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Immutable configuration, written before the segment's ready flag.
#[repr(C)]
#[derive(Default)]
pub struct QueueConfig {
    pub capacity: AtomicU32,
    pub max_producers: AtomicU32,
    pub data_units: AtomicU64,
    pub producers_offset: AtomicU64,
    pub data_offset: AtomicU64,
    pub stamp_key: AtomicU64,
}

/// The consumer's registration.
#[repr(C)]
#[derive(Default)]
pub struct ConsumerEntry {
    /// The entry state (low 32 bits) and a generation bumped by every registration (high 32
    /// bits), changed together by CAS so that a stale observer cannot act on a newer consumer.
    pub state: AtomicU64,
    pub pid: AtomicU32,
    /// The consumer's PID namespace ([`crate::process::own_pid_namespace`]); 0 if unknown.
    pub pid_ns: AtomicU32,
    pub start: AtomicU64,
    /// 1 if the consumer holds its presence mark ([`crate::presence`]), 0 if it could not.
    pub marked: AtomicU32,
}

/// The state part of a packed consumer state.
#[inline]
pub fn consumer_state(packed: u64) -> u32 {
    packed as u32
}

/// A packed consumer state: `state` in the low half, `generation` in the high half.
#[inline]
pub fn pack_consumer(state: u32, generation: u32) -> u64 {
    ((generation as u64) << 32) | state as u64
}

/// The generation part of a packed consumer state.
#[inline]
pub fn consumer_generation(packed: u64) -> u32 {
    (packed >> 32) as u32
}

/// The queue's control block at body offset 0.
#[repr(C)]
#[derive(Default)]
pub struct QueueHeader {
    pub config: Line<QueueConfig>,
    /// Claim cursor, advanced by producers with CAS.
    pub tail: Line<AtomicU64>,
    /// Free cursor, advanced by the consumer only.
    pub head: Line<AtomicU64>,
    /// Single-producer queues only: the position just past the latest record its producer
    /// finished (committed or aborted), never moving back. The consumer, once it has read up to
    /// here, waits on this line instead of polling the record the producer is writing, which
    /// would pull that line away from the producer mid-write. A hint: every record is still
    /// checked by its stamp.
    pub published: Line<AtomicU64>,
    /// Signalled when a record is committed or a producer leaves; the consumer sleeps here.
    pub data_event: Line<EventWord>,
    /// Signalled when the head moves or the consumer leaves; producers sleep here.
    pub space_event: Line<EventWord>,
    pub consumer: Line<ConsumerEntry>,
    /// Bumped (modulo 2^31) whenever a producer registers or leaves; its top bit,
    /// [`MEMBERSHIP_ENDED`], is set for good when the consumer finds that the stream has ended.
    /// Registration and the end are decided by CAS on this one word, so a producer either
    /// registers before the end (and the consumer sees it) or is refused.
    pub membership: Line<AtomicU32>,
}

/// The bit of [`QueueHeader::membership`] that says the stream has ended: every producer that
/// registered has closed and the consumer has read every message. No producer registers after it.
pub const MEMBERSHIP_ENDED: u32 = 1 << 31;

/// Entry states of producers and the consumer.
pub mod entry {
    /// Never used, or free for reuse.
    pub const FREE: u32 = 0;
    /// Being filled in by a registering process.
    pub const REGISTERING: u32 = 1;
    /// In use by a live (as far as anyone knows) process.
    pub const ACTIVE: u32 = 2;
    /// Closed cleanly.
    pub const CLOSED: u32 = 3;
    /// Its process died; found so by the other side.
    pub const DEAD: u32 = 4;
}

/// Marks a pending claim as valid (the position alone might be 0).
pub const PENDING_VALID: u64 = 1 << 63;

/// A producer's registration: three 128-byte lines, so that what the producer writes for every
/// message, what the consumer writes for every message, and the read-mostly identity never share
/// a line (nor an adjacent-line prefetch pair).
#[repr(C)]
#[derive(Default)]
pub struct ProducerEntry {
    pub identity: Line<ProducerIdentity>,
    pub claims: Line<ProducerClaims>,
    /// Messages of this producer released by the consumer (written by the consumer side).
    pub consumed: Line<ProducerCredits>,
}

/// What the consumer side writes into a producer's entry: how many of its messages were
/// released, in two counters so that the consumer's read-in-place path needs no locked
/// instruction.
#[repr(C)]
#[derive(Default)]
pub struct ProducerCredits {
    /// Released through message handles, from any thread of the consumer's process (atomic
    /// add).
    pub by_handle: AtomicU64,
    /// Released in place by the consumer itself (its only writer: a plain store).
    pub in_place: AtomicU64,
}

impl ProducerCredits {
    /// Messages released in total.
    pub fn total(&self) -> u64 {
        self.by_handle
            .load(Ordering::Acquire)
            .wrapping_add(self.in_place.load(Ordering::Acquire))
    }

    /// Starts both counters over (at registration).
    pub fn reset(&self) {
        self.by_handle.store(0, Ordering::Relaxed);
        self.in_place.store(0, Ordering::Relaxed);
    }
}

/// The read-mostly part of a producer entry.
#[repr(C)]
#[derive(Default)]
pub struct ProducerIdentity {
    /// A packed [`EntryWord`]: state, generation and pid change together, by CAS, so that an
    /// observer acting on what it saw (marking the producer dead, reclaiming its slot) can never
    /// act on a newer registration.
    pub word: AtomicU64,
    /// Start stamp of the process named in `word`, written before the entry turns ACTIVE.
    pub start: AtomicU64,
    /// The PID namespace of the process named in `word`, written with `start`; 0 if unknown.
    pub pid_ns: AtomicU32,
    /// 1 if the process named in `word` holds the slot's presence mark ([`crate::presence`]).
    pub marked: AtomicU32,
}

/// Bits of an entry's generation (records carry it to tell registrations of one slot apart).
pub const GENERATION_MASK: u32 = (1 << 24) - 1;

/// The unpacked form of a producer entry's word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryWord {
    /// One of the [`entry`] states.
    pub state: u32,
    /// Bumped by every registration of the slot, modulo [`GENERATION_MASK`] + 1.
    pub generation: u32,
    /// The registered (or registering) process.
    pub pid: u32,
}

impl EntryWord {
    /// The word as stored: state in bits 0..8, generation in 8..32, pid in 32..64.
    #[inline]
    pub fn pack(self) -> u64 {
        ((self.pid as u64) << 32)
            | (((self.generation & GENERATION_MASK) as u64) << 8)
            | (self.state & 0xff) as u64
    }

    /// The inverse of [`pack`](Self::pack).
    #[inline]
    pub fn unpack(word: u64) -> Self {
        Self {
            state: (word & 0xff) as u32,
            generation: ((word >> 8) as u32) & GENERATION_MASK,
            pid: (word >> 32) as u32,
        }
    }
}

impl ProducerIdentity {
    /// The current word.
    #[inline]
    pub fn load(&self) -> EntryWord {
        EntryWord::unpack(self.word.load(Ordering::Acquire))
    }

    /// Replaces `seen` with `new` if the word is still `seen`.
    pub fn replace(&self, seen: EntryWord, new: EntryWord) -> bool {
        self.word
            .compare_exchange(seen.pack(), new.pack(), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

/// The part of a producer entry the producer writes as it sends.
#[repr(C)]
#[derive(Default)]
pub struct ProducerClaims {
    /// Position of the claim being attempted, with [`PENDING_VALID`]; 0 when none.
    pub pending_pos: AtomicU64,
    /// Units of the claim being attempted (padding included).
    pub pending_units: AtomicU64,
    /// Messages committed by this producer.
    pub committed: AtomicU64,
    /// The position just past this producer's latest claim: while it is ahead of the head, a
    /// record of this producer may still be unreleased, so its slot is not reused yet.
    pub claimed_end: AtomicU64,
    /// Length of `blob_name`; 0 when none. See [`ProducerClaims::set_blob_name`].
    pub blob_name_len: AtomicU64,
    /// The name of a blob segment this producer is creating and has not yet put in a record:
    /// whoever finds the producer dead removes it, so a crash between creating a blob and
    /// queueing it leaks nothing.
    pub blob_name: [AtomicU64; 4],
}

impl ProducerClaims {
    /// Records `name` (at most 32 bytes) as a blob being made; call before creating it.
    pub fn set_blob_name(&self, name: &str) {
        let bytes = name.as_bytes();
        debug_assert!(bytes.len() <= 32);
        let mut words = [0u8; 32];
        words[..bytes.len()].copy_from_slice(bytes);
        for (slot, chunk) in self.blob_name.iter().zip(words.chunks_exact(8)) {
            slot.store(
                u64::from_le_bytes(chunk.try_into().expect("8 bytes")),
                Ordering::Relaxed,
            );
        }
        self.blob_name_len
            .store(bytes.len() as u64, Ordering::Release);
    }

    /// Forgets the blob being made (it is queued now, or was removed).
    pub fn clear_blob_name(&self) {
        self.blob_name_len.store(0, Ordering::Release);
    }

    /// The blob being made, if one is recorded and its name is one of ours.
    pub fn blob_name(&self) -> Option<String> {
        let len = self.blob_name_len.load(Ordering::Acquire) as usize;
        if len == 0 || len > 32 {
            return None;
        }
        let mut bytes = Vec::with_capacity(32);
        for slot in &self.blob_name {
            bytes.extend_from_slice(&slot.load(Ordering::Relaxed).to_le_bytes());
        }
        bytes.truncate(len);
        let name = String::from_utf8(bytes).ok()?;
        (crate::name::validate_name(&name).is_ok() && name.starts_with(crate::name::NAME_PREFIX))
            .then_some(name)
    }
}

/// Size of one producer entry.
pub const PRODUCER_ENTRY_SIZE: u64 = 384;
const _: () = assert!(std::mem::size_of::<ProducerEntry>() as u64 == PRODUCER_ENTRY_SIZE);

/// A record's header, at the start of every record in the ring.
#[repr(C)]
pub struct RecordHeader {
    pub stamp: AtomicU64,
    /// Payload bytes (for a blob record: the descriptor's size).
    pub len: AtomicU64,
    /// Record size in units, header included.
    pub units: AtomicU32,
    pub kind: AtomicU32,
    pub producer: AtomicU32,
    pub generation: AtomicU32,
}

const _: () = assert!(std::mem::size_of::<RecordHeader>() as u64 == UNIT);

/// The payload of a blob record: the message's size and the segment that holds it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct BlobDescriptor {
    pub len: u64,
    pub name_len: u64,
    pub name: [u8; 32],
}

/// Size of a [`BlobDescriptor`].
pub const BLOB_DESCRIPTOR_SIZE: u64 = std::mem::size_of::<BlobDescriptor>() as u64;

/// Offsets and sizes of a queue segment's regions for a given configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub producers_offset: u64,
    pub data_offset: u64,
    pub data_units: u64,
    pub body_size: u64,
}

impl Geometry {
    /// Lays out a queue with `max_producers` slots and `data_units` units of data.
    pub fn new(max_producers: u32, data_units: u64) -> Self {
        let header = std::mem::size_of::<QueueHeader>() as u64;
        let producers_offset = header.next_multiple_of(128);
        // Page-align the data area in the mapping (the body starts after the segment header).
        let seg_header = crate::segment::SEGMENT_HEADER_SIZE as u64;
        let producers_end = producers_offset + max_producers as u64 * PRODUCER_ENTRY_SIZE;
        let data_offset = (producers_end + seg_header).next_multiple_of(4096) - seg_header;
        Self {
            producers_offset,
            data_offset,
            data_units,
            body_size: data_offset + data_units * UNIT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_wraps_both_parts() {
        let c = Cursor(((MSG_MASK) << POS_BITS) | (POS_MASK - 1));
        let d = c.advance(3, 1);
        assert_eq!(d.pos(), 1);
        assert_eq!(d.msgs(), 0);
        assert_eq!(d.units_since(c), 3);
        assert_eq!(d.msgs_since(c), 1);
    }

    #[test]
    fn stamps_differ_by_state_and_position_and_are_never_zero() {
        let key = 1 << 63 | 12345;
        assert_ne!(
            stamp(key, 5, state::WRITING),
            stamp(key, 5, state::COMMITTED)
        );
        assert_ne!(
            stamp(key, 5, state::COMMITTED),
            stamp(key, 6, state::COMMITTED)
        );
        assert_ne!(stamp(key, POS_MASK, state::RELEASED), 0);
    }

    #[test]
    fn geometry_keeps_regions_apart() {
        let g = Geometry::new(64, 1024);
        assert!(g.producers_offset >= std::mem::size_of::<QueueHeader>() as u64);
        assert!(g.data_offset >= g.producers_offset + 64 * PRODUCER_ENTRY_SIZE);
        assert_eq!(g.body_size, g.data_offset + 1024 * UNIT);
    }

    #[test]
    fn entry_words_round_trip_and_keep_fields_apart() {
        for word in [
            EntryWord {
                state: entry::ACTIVE,
                generation: 0,
                pid: 1,
            },
            EntryWord {
                state: entry::DEAD,
                generation: GENERATION_MASK,
                pid: u32::MAX,
            },
            EntryWord {
                state: entry::REGISTERING,
                generation: 12_345,
                pid: 4_000_000,
            },
        ] {
            assert_eq!(EntryWord::unpack(word.pack()), word);
        }
        // A generation past the mask wraps instead of spilling into the pid.
        let wrapped = EntryWord {
            state: entry::FREE,
            generation: GENERATION_MASK + 1,
            pid: 7,
        };
        assert_eq!(EntryWord::unpack(wrapped.pack()).generation, 0);
        assert_eq!(EntryWord::unpack(wrapped.pack()).pid, 7);
    }

    #[test]
    fn blob_names_round_trip_and_foreign_names_are_refused() {
        let claims = ProducerClaims::default();
        assert_eq!(claims.blob_name(), None);
        let name = crate::name::random_name();
        claims.set_blob_name(&name);
        assert_eq!(claims.blob_name().as_deref(), Some(name.as_str()));
        claims.set_blob_name("not_ours");
        assert_eq!(
            claims.blob_name(),
            None,
            "only our own names are ever removed"
        );
        claims.clear_blob_name();
        assert_eq!(claims.blob_name(), None);
    }
}
