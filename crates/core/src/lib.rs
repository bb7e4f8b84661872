//! # shmpipe-core
//!
//! Moves messages between OS processes through shared memory:
//!
//! - [`Segment`]: named shared-memory segments with a validated header (magic number, layout
//!   version, size, creator, ready flag), created exclusively with mode 0600.
//! - [`Queue`]: a bounded, lock-free multi-producer single-consumer queue of variable-size
//!   messages in one segment. Small and medium messages live inline in a reused ring; larger
//!   ones travel in a segment of their own (a blob), so there is no size limit but memory. A
//!   producer reuses its blobs once the consumer has released them (its budget:
//!   [`tuning::process_keep_budget`], [`Producer::set_blob_keep_limit`]).
//! - [`Producer`] / [`Consumer`]: zero-copy on both sides ([`Producer::reserve`] →
//!   [`Loan::commit`]; [`Consumer::recv`] → [`Message`], released on drop), with copying
//!   [`Producer::send`] built on top.
//! - Waits spin briefly, then sleep on a cross-process futex in bounded slices, checking that the
//!   peer is alive; they honour timeouts and [`CancelToken`]s.
//! - [`install_signal_cleanup`] (opt-in, Unix): when SIGINT or SIGTERM ends the process, the
//!   segments it owns are removed first, as on a normal exit ([`signals`]).
//! - [`list_segments`] / [`clean`]: the segments on this machine with their owner, and removal
//!   of those whose owner is dead ([`inventory`]).
//!
//! - [`SharedArray`]: a named N-dimensional array of numbers in shared memory, with a robust
//!   cross-process lock for its writers (a dead holder's lock is recovered, and the next holder
//!   is told).
//! - [`tuning`]: the constants and environment variables behind the rules above (how long waits
//!   spin and sleep, when copies stream, how much blob memory is kept), in one place.
//! - `fd_mailbox` (Linux): descriptors handed from producers to a consumer over an abstract Unix
//!   socket, so that a blob's memory outlives its sender and dies with its receiver.
//!
//! No Node.js here: the bindings live in `crates/node`.

#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

mod array;
mod array_lock;
mod backing;
mod blob;
mod blob_state;
mod copy;
/// The repository's Markdown files, whose ```rust blocks run as doctests.
#[cfg(doctest)]
mod doc_blocks;
mod error;
mod event;
#[cfg(target_os = "linux")]
pub mod fd_mailbox;
mod futex;
mod header;
pub mod inventory;
mod mapping;
#[cfg(target_os = "linux")]
mod memfd;
mod memory_limit;
mod name;
mod presence;
mod process;
mod queue;
#[cfg(target_os = "linux")]
mod record;
mod registry;
#[cfg(target_os = "linux")]
mod rendezvous;
mod segment;
mod shm_space;
pub mod signals;
pub mod tuning;

// The queue's two sides, where their types are re-exported below.
use queue::{consumer, producer};

pub use array::{
    Dtype, SharedArray, ARRAY_NAME_PREFIX, MAX_ARRAY_NAME_LEN, MAX_NDIM, MAX_SEALED_ARRAY_HOLDERS,
};
pub use array_lock::Acquired;
pub use backing::{Backing, BACKING_ENV};
pub use consumer::{Consumer, Message};
pub use copy::copy_to_shared;
pub use error::{BadSegmentReason, Error, Result, SpaceLimit};
pub use event::{CancelToken, WaitOptions};
pub use inventory::{
    clean, clean_dead, list_segments, list_segments_with, CleanOptions, CleanReport, ListOptions,
    ProcessRef, SegmentInfo, Status,
};
/// Whether `bytes` more of shared memory fit this process's cgroup limits and the machine's
/// memory (the check made before reserving a pipe's memory); exposed for the cross-process tests.
#[doc(hidden)]
pub use memory_limit::check_headroom as check_memory_headroom;
pub use name::{MAX_NAME_LEN, NAME_PREFIX};
pub use process::{pid_namespace, ProcessIdentity};
pub use producer::{Loan, Producer, RawLoan};
pub use queue::{Queue, QueueOptions};
pub use segment::{Segment, SegmentHeader, SegmentKind, MAGIC, SEGMENT_HEADER_SIZE};
pub use signals::{install_signal_cleanup, SignalSetup};

/// Version of the shared-memory layout; bumped whenever any shared structure changes.
pub const LAYOUT_VERSION: u32 = 6;
