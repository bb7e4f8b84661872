//! Tuning: every constant and environment variable that sets how shmpipe waits, copies and keeps
//! memory, in one place. The defaults suit most machines; nothing here needs setting to use the
//! crate. Each rule's own documentation (follow the links) says why it is what it is.
//!
//! # Waits
//!
//! A wait ([`WaitOptions`](crate::WaitOptions)) first spins, then sleeps on a cross-process
//! futex:
//!
//! - [`DEFAULT_SPIN`]: pause instructions a waiter spins before it sleeps, unless
//!   [`WaitOptions::spin`](crate::WaitOptions::spin) says otherwise (`Some(0)`: never spin).
//! - [`PAUSES_PER_POLL`]: while spinning, the waiter reads the shared line it waits on once every
//!   this many pauses, so that the writer keeps the line while it writes a few messages.
//! - [`HEALTH_SLICE`]: the longest single sleep; after each, the waiter checks that its peers
//!   are alive, so a peer that died is noticed within about this long.
//! - [`LOCK_SPIN`]: the spin of a [`SharedArray`](crate::SharedArray) lock waiter (short: the
//!   holder needs the CPU to finish).
//!
//! # Copies into shared memory
//!
//! [`copy_to_shared`](crate::copy_to_shared) (what [`Producer::send`](crate::Producer::send)
//! uses) copies with streaming stores, past the cache, when that is faster ([`streams`]): on
//! x86-64, a copy of at least [`STREAM_MIN_BYTES`] into memory the producer cycles through that
//! is more than half the last-level cache ([`last_level_cache_bytes`], or
//! [`DEFAULT_LAST_LEVEL_CACHE_BYTES`] where the system does not say).
//!
//! - [`STREAM_COPIES_ENV`] (`SHMPIPE_STREAM_COPIES`): `always` or `never` overrides the rule for
//!   the whole process, for a machine where it guesses wrong; `auto` (or unset) keeps it.
//!
//! # Blob reuse
//!
//! A message too large for the ring travels in a segment of its own (a blob). A producer keeps
//! blobs the consumer has released and reuses them instead of making new ones:
//!
//! - [`MAX_KEPT_BLOBS`]: at most this many per producer.
//! - [`process_keep_budget`]: at most this many bytes of blobs kept by all the producers of one
//!   process ([`kept_in_process`] is what they keep now); a producer can be given a smaller
//!   limit with [`Producer::set_blob_keep_limit`](crate::Producer::set_blob_keep_limit).
//!   That budget is for named blobs; sealed ones (Linux's default) have
//!   [`sealed_keep_budget`], bounded by memory instead of `/dev/shm`.
//! - [`KEEP_BUDGET_ENV`] (`SHMPIPE_BLOB_KEEP_BYTES`): sets both budgets in bytes; `0` turns reuse
//!   off.
//!
//! Both environment variables are read once per process, the first time they matter.

pub use crate::array_lock::LOCK_SPIN;
pub use crate::blob::{
    kept_in_process, process_keep_budget, sealed_keep_budget, KEEP_BUDGET_ENV,
    MAX_KEPT as MAX_KEPT_BLOBS,
};
pub use crate::copy::{
    last_level_cache_bytes, streams, DEFAULT_LAST_LEVEL_CACHE_BYTES, STREAM_COPIES_ENV,
    STREAM_MIN_BYTES,
};
pub use crate::event::{DEFAULT_SPIN, HEALTH_SLICE, PAUSES_PER_POLL};
