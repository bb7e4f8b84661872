//! The bytes this process has handed to JavaScript in external Buffers (blob views, copies into
//! recycled memory) whose finalizers have not run yet.
//!
//! A finalizer runs only at a turn of the event loop after a collection found its Buffer dead,
//! so a receiver that takes ready values without ever waiting would hold on to all of them. Every
//! external Buffer `get()` and its relatives make goes through [`external_buffer`], which counts
//! its bytes until its finalizer runs. Past [`BOUND_BYTES`], `get()` turns the event loop before
//! it resolves (`src/pipe.ts`), and the synchronous takes copy into Node's allocator instead,
//! whose Buffers need no finalizer.
//!
//! V8 already counts an external Buffer's size when it schedules collections; nothing reports it
//! again. (Reporting a blob view's bytes a second time, with `napi_adjust_external_memory`, made
//! V8 collect twice as often, which gave blobs back sooner but took the CPU time the sender needed
//! to fill them: `get()` of 10 MB values ran at 6.7–7.7 GB/s with it and 8.5 GB/s without,
//! `docs/decisions/2026-12-08-blob-keep.md`.)
//!
//! The measurements behind the bound: `docs/decisions/2026-12-07-get-memory.md`.

use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Past this many outstanding bytes, `get()` turns the event loop before it resolves and the
/// synchronous takes hand out copies without a finalizer. Above what V8 lets pile up between two
/// full collections (about 40 MB), so a stream does not turn the loop for every value.
pub const BOUND_BYTES: usize = 64 << 20;

/// Bytes in external Buffers made by [`external_buffer`] and not yet finalized.
static OUTSTANDING: AtomicUsize = AtomicUsize::new(0);

/// Whether more than [`BOUND_BYTES`] are handed out and not yet finalized.
pub fn over_bound() -> bool {
    OUTSTANDING.load(Ordering::Relaxed) > BOUND_BYTES
}

/// Whether more than the bound of external bytes are out and not yet finalized: `get()` then
/// turns the event loop before it resolves.
#[napi(catch_unwind)]
pub fn external_over_bound() -> bool {
    over_bound()
}

/// Bytes handed out in external Buffers whose finalizers have not run yet.
#[napi(catch_unwind)]
pub fn external_bytes_outstanding() -> f64 {
    OUTSTANDING.load(Ordering::Relaxed) as f64
}

/// A Buffer over `len` bytes at `ptr`, owned by `owner`, which `finalize` receives once
/// JavaScript can no longer reach the Buffer; counted in the outstanding bytes until then.
///
/// # Safety
/// `ptr` must stay valid for `len` bytes for as long as `owner` lives, and nothing else may
/// write them meanwhile.
pub unsafe fn external_buffer<'env, T: 'static>(
    env: &'env Env,
    ptr: *mut u8,
    len: usize,
    owner: T,
    finalize: impl FnOnce(T) + 'static,
) -> Result<BufferSlice<'env>> {
    OUTSTANDING.fetch_add(len, Ordering::Relaxed);
    // Whether the finalizer ran (a runtime without external buffers copies and runs it at once).
    let finalized = Rc::new(Cell::new(false));
    let ran = finalized.clone();
    // SAFETY: the caller guarantees `ptr` is valid for `len` bytes while `owner` lives, and the
    // finalizer receives `owner` only once JavaScript can no longer reach the Buffer.
    let made = unsafe {
        BufferSlice::from_external(env, ptr, len, owner, move |_env, owner| {
            ran.set(true);
            OUTSTANDING.fetch_sub(len, Ordering::Relaxed);
            finalize(owner);
        })
    };
    if made.is_err() && !finalized.get() {
        OUTSTANDING.fetch_sub(len, Ordering::Relaxed);
    }
    made
}
