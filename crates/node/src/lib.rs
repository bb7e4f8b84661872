//! Node.js bindings for shmpipe, built with napi-rs.
//!
//! Only bindings live here: the queue, waits and shared memory are `shmpipe-core`; ordering, the
//! codec and the public API are TypeScript. Module map:
//! - `queue`: `NativeQueue` (create/open a queue, register ends)
//! - `producer`: `NativeProducer` (send, reserve in place, waits for space and acks), and
//!   `producerTrySend`/`producerTrySendParts`/`producerTrySendGathered`, sends as free functions
//!   (cheaper to call)
//! - `consumer`: `NativeConsumer`, `NativeMessage` (receive copied or zero-copy), and
//!   `consumerTryRecvInto`, the small-message receive as a free function
//! - `recycle`: the memory of collected large Buffers, reused for the next large messages
//! - `external`: external Buffers made with a count of their bytes not yet finalized
//!   (`externalOverBound`, `externalBytesOutstanding`)
//! - `array`: `NativeArray` (named shared arrays: data as an external ArrayBuffer, and the lock)
//! - `waiter`: the dedicated waiter thread behind every async wait
//! - `cleanup`: the segment inventory (`listSegments`, `cleanSegments`, and the one definition
//!   of a segment record, `SegmentInfo`) and the signal cleanup (`installSignalCleanup`, the
//!   arrays it removes, the synchronous waits it interrupts)
//! - `parent`: `watchParent`, which ends a pool worker when its parent process is gone
//! - `args`: JavaScript arguments (byte counts, shapes, timeouts) checked and converted
//! - `errors`: this addon's errors, whose `code` is an `ERR_SHMPIPE_*` code (`ErrorCode`)
//!
//! Modules depend in one direction: `queue → producer/consumer → waiter/recycle/external/args → errors`
//! (`array`, `cleanup` and `parent` beside them).
//!
//! `binding.d.cts`, the TypeScript declarations of these exports, is generated from them by
//! `npm run build:native` and committed; `src/native.ts` types the addon with it.
//!
//! Every export is `#[napi(catch_unwind)]`: a panic becomes a JavaScript error, never an abort of
//! the process (the release profile unwinds; it must not set `panic = "abort"`).

#![deny(clippy::all)]
#![warn(missing_docs)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(unsafe_op_in_unsafe_fn)]

use napi_derive::napi;

mod args;
mod array;
mod cleanup;
mod consumer;
mod errors;
mod external;
mod parent;
mod producer;
mod queue;
mod recycle;
mod waiter;

pub use array::{LockInfo, NativeArray};
pub use cleanup::{
    clean_segments, install_signal_cleanup, interrupt_sync_waits_on_signal, keep_array_on_signal,
    list_segments, remove_array_on_signal, take_interrupting_signal,
};
pub use consumer::{consumer_try_recv_into, ConsumerHandle, NativeConsumer, NativeMessage};
pub use external::{external_bytes_outstanding, external_over_bound};
pub use parent::watch_parent;
pub use producer::{
    producer_try_send, producer_try_send_gathered, producer_try_send_parts, NativeProducer,
    ProducerHandle,
};
pub use queue::{default_pipe_backing, NativeQueue};

/// Version of the shared-memory layout implemented by `shmpipe-core`.
///
/// Processes may only share segments when they agree on this number.
/// Exposed to JavaScript as `layoutVersion()`.
#[napi(catch_unwind)]
pub fn layout_version() -> u32 {
    shmpipe_core::LAYOUT_VERSION
}

/// Version of this native addon crate (the workspace version).
///
/// Exposed to JavaScript as `coreVersion()`.
#[napi(catch_unwind)]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}
