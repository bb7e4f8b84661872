//! The queue's shared layout (`crates/core/src/queue/layout.rs`) as the forging tests write
//! it: record states and kinds, and byte offsets into the queue segment's body. The forgers
//! check the config against these before they write.

/// Bytes of a record unit.
pub const UNIT: u64 = 32;
/// The position bits of a stamp.
pub const POS_MASK: u64 = (1 << 40) - 1;
/// The message-count bits of a tail word (above its 40 position bits).
pub const MSG_MASK: u64 = (1 << 24) - 1;
/// A record being written.
pub const WRITING: u64 = 1;
/// A record the consumer may read.
pub const COMMITTED: u64 = 2;
/// A record the consumer steps over.
pub const SKIP: u64 = 3;
/// The record kind of a message in a segment of its own.
pub const KIND_BLOB: u32 = 2;
/// Bytes of a blob descriptor (a blob record's payload).
pub const DESCRIPTOR: u64 = 48;
/// Bytes of a producer entry.
pub const PRODUCER_ENTRY_SIZE: u64 = 384;
/// Body offset of the producer count.
pub const MAX_PRODUCERS: u64 = 4;
/// Body offset of the data area's size in units.
pub const DATA_UNITS: u64 = 8;
/// Body offset of the producer entries.
pub const PRODUCERS_OFFSET: u64 = 16;
/// Body offset of the data area.
pub const DATA_OFFSET: u64 = 24;
/// Body offset of the stamp key.
pub const STAMP_KEY: u64 = 32;
/// Body offset of the tail.
pub const TAIL: u64 = 128;
