//! `NativeConsumer`: the receiving end's primitive operations.
//!
//! Messages stored inline in the ring are copied out into a fresh Buffer and released at once, so
//! the ring never waits for the garbage collector (a large one into memory recycled from
//! collected Buffers, see `recycle`). Messages that travelled in a segment of their own are
//! handed over without a copy: the Buffer maps that segment, which is unmapped when the Buffer is
//! collected (its name was already removed, so nothing can leak). Both kinds of external Buffer
//! are counted until their finalizers run (`external`); a synchronous take past that count's
//! bound copies into a Buffer Node allocates instead, which needs no finalizer.

use crate::args::timeout;
use crate::errors::{closed, invalid, poisoned, IntoNapi, Result};
use crate::external::{self, external_buffer};
use crate::recycle::{BufferPool, MIN_BYTES};
use crate::waiter::{spawn_wait, wait_with, with_handle, Waiter};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use shmpipe_core::{CancelToken, Consumer, Message, Queue, WaitOptions};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The receiver as the fast free functions reach it (through an External, see
/// [`NativeConsumer::handle`]): the same shared slot as the class instance's, so closing the
/// instance closes it for them too.
pub struct ConsumerHandle {
    inner: Arc<Mutex<Option<Consumer>>>,
    pool: Arc<BufferPool>,
    /// Whether its caller cannot turn the event loop (`getNowait`): see `to_buffer`.
    sync: bool,
}

/// Takes the next message if one is ready, like `NativeConsumer.tryRecv`, but copies a message
/// stored inline that fits into `scratch` there and returns its length (the message is released
/// at once). Any other message comes back as a Buffer, as from `tryRecv`; `null` when none is
/// ready. A handle made for a caller that cannot turn the event loop (`getNowait`) copies a
/// large message into a Buffer Node allocates once the external bytes not yet finalized are past
/// their bound (see `to_buffer`).
///
/// A free function on the receiver's [`handle`](NativeConsumer::handle): a class method's
/// receiver checks cost napi-rs about 200 ns per call, and a new Buffer about as much again, more
/// than the rest of receiving a small message.
#[napi(ts_return_type = "number | Buffer | null", catch_unwind)]
pub fn consumer_try_recv_into<'env>(
    env: &'env Env,
    handle: &External<ConsumerHandle>,
    mut scratch: Uint8ArraySlice,
) -> Result<Option<Either<u32, BufferSlice<'env>>>> {
    let Some(msg) = with_handle(&handle.inner, "receiver", |c| c.try_recv().napi())? else {
        return Ok(None);
    };
    let len = msg.len();
    if !msg.is_blob() && len <= scratch.len() {
        // SAFETY: `scratch` is valid for `scratch.len()` bytes for this call. Only the JavaScript
        // thread can reach it, and it is inside this call: the caller (`src/pipe.ts`) passes
        // its own scratch array over an ordinary ArrayBuffer, never one over a
        // SharedArrayBuffer another thread could write. The peer's bytes are only copied from.
        let dst = unsafe { scratch.as_mut() };
        dst[..len].copy_from_slice(msg.as_slice());
        return Ok(Some(Either::A(len as u32)));
    }
    to_buffer(env, msg, &handle.pool, handle.sync).map(|b| Some(Either::B(b)))
}

/// The queue's receiver.
#[napi]
pub struct NativeConsumer {
    inner: Arc<Mutex<Option<Consumer>>>,
    pool: Arc<BufferPool>,
    queue: Option<Queue>,
    cancel: Arc<Mutex<Option<CancelToken>>>,
    waiter: Waiter,
}

/// A message's bytes as a Buffer: copied if inline (a large one into memory from `pool` while it
/// has some to hand out), mapped if it has a segment of its own. A `sync` take (one that cannot
/// turn the event loop) copies into a Buffer Node allocates, which needs no finalizer, once the
/// external bytes not yet finalized are past their bound (`external`).
fn to_buffer<'env>(
    env: &'env Env,
    msg: Message,
    pool: &Arc<BufferPool>,
    sync: bool,
) -> Result<BufferSlice<'env>> {
    let external = !msg.is_empty() && (!sync || !external::over_bound());
    let recycled = if external && !msg.is_blob() && msg.len() >= MIN_BYTES {
        pool.take(msg.len())
    } else {
        None
    };
    if let Some(mut bytes) = recycled {
        let len = msg.len();
        bytes.extend_from_slice(msg.as_slice());
        drop(msg); // released before JavaScript sees the copy, as for small messages
        let ptr = bytes.as_mut_ptr();
        let pool = Arc::downgrade(pool);
        // SAFETY: `ptr` points at `len` initialised bytes of `bytes`, which the finalizer owns and
        // runs only once JavaScript can no longer reach the Buffer; moving a Vec does not move
        // its heap memory. No other Buffer wraps this memory until the finalizer gives it back.
        return unsafe {
            external_buffer(env, ptr, len, bytes, move |bytes| {
                if let Some(pool) = pool.upgrade() {
                    pool.give(bytes);
                }
            })
        }
        .napi();
    }
    if !msg.is_blob() || !external {
        // A Buffer Node allocates: freed by the collection itself, no finalizer.
        return BufferSlice::copy_from(env, msg.as_slice()).napi();
    }
    let ptr = msg.as_slice().as_ptr() as *mut u8;
    let len = msg.len();
    // SAFETY: the blob segment is mapped read-write for as long as `msg` lives, and `msg` is
    // moved into the finalizer, which runs only once JavaScript can no longer reach the Buffer.
    // No other Buffer wraps this mapping meanwhile, and nothing writes it: its producer writes a
    // blob again only after the message in it is dropped (`shmpipe_core` blob reuse).
    unsafe { external_buffer(env, ptr, len, msg, drop) }.napi()
}

/// A message received without copying.
///
/// Its bytes reach JavaScript through one external ArrayBuffer (`buffer()`), whose finalizer
/// owns the message: the message is released when `release()` detaches that very buffer, or
/// else when the buffer's backing store is collected. A buffer moved away first
/// (`ArrayBuffer.prototype.transfer()`) takes its backing store and finalizer along, so the
/// moved buffer keeps the message, and with it the mapping under its bytes, until it is
/// collected: no view ever shows another message's bytes or unmapped memory.
#[napi]
pub struct NativeMessage {
    message: Arc<Mutex<Option<Message>>>,
    /// Whether `buffer()` handed out the external ArrayBuffer (it does so once).
    handed_out: AtomicBool,
}

/// Takes the message out of `slot` and drops it (after the lock is released), even if a panic
/// poisoned the lock.
fn release_slot(slot: &Mutex<Option<Message>>) {
    let message = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    drop(message);
}

#[napi]
impl NativeMessage {
    /// An ArrayBuffer over the message's bytes; callable once.
    #[napi(catch_unwind)]
    pub fn buffer<'env>(&self, env: &'env Env) -> Result<ArrayBuffer<'env>> {
        let (ptr, len) = {
            let guard = self.message.lock().map_err(|_| poisoned())?;
            let msg = guard.as_ref().ok_or_else(closed)?;
            (msg.as_slice().as_ptr() as *mut u8, msg.len())
        };
        if self.handed_out.swap(true, Ordering::AcqRel) {
            return Err(invalid("the message's buffer was already handed out"));
        }
        if len == 0 {
            return ArrayBuffer::from_data(env, Vec::<u8>::new()).napi();
        }
        let keep = self.message.clone();
        // SAFETY: the message's bytes stay valid and mapped while the shared slot holds it (an
        // inline message holds the queue's mapping, a blob its own segment's, whatever the peer
        // does). Only two things take it out, both on the JavaScript thread: this finalizer,
        // which runs once no ArrayBuffer holds the backing store any more (wherever
        // `transfer()` moved it), and `release`, which does so only after detaching this very
        // buffer while it still holds the backing store. No other ArrayBuffer wraps these
        // bytes: `handed_out` makes this the only one. (The lock is not held here: a runtime
        // without external buffers copies the bytes and runs the finalizer at once.)
        unsafe { ArrayBuffer::from_external(env, ptr, len, keep, |_, keep| release_slot(&keep)) }
            .napi()
    }

    /// Releases the message if `buffer` is the ArrayBuffer `buffer()` handed out and still holds
    /// its bytes: detaches it (every view of it becomes empty) and gives the memory back at
    /// once. If that buffer was moved away or detached meanwhile, the message stays with the
    /// moved backing store and is released when that is collected.
    #[napi(catch_unwind)]
    pub fn release(&self, buffer: Option<ArrayBuffer>) -> Result<()> {
        let mut guard = self.message.lock().map_err(|_| poisoned())?;
        let Some(msg) = guard.as_ref() else {
            return Ok(());
        };
        if msg.is_empty() || !self.handed_out.load(Ordering::Acquire) {
            drop(guard.take());
            return Ok(());
        }
        let Some(buffer) = buffer else {
            return Ok(());
        };
        let ours = !buffer.is_detached().napi()?
            && std::ptr::eq(buffer.as_ptr(), msg.as_slice().as_ptr())
            && buffer.len() == msg.len();
        if ours {
            buffer.detach().napi()?;
            let message = guard.take();
            drop(guard);
            drop(message);
        }
        Ok(())
    }
}

impl NativeConsumer {
    pub(crate) fn new(consumer: Consumer, queue: Queue) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Some(consumer))),
            pool: Arc::default(),
            queue: Some(queue),
            cancel: Arc::default(),
            waiter: Waiter::default(),
        }
    }
}

#[napi]
impl NativeConsumer {
    /// This receiver's handle for the fast free functions (`consumerTryRecvInto`); a `sync` one
    /// is for callers that cannot turn the event loop (`getNowait`).
    #[napi(ts_return_type = "ExternalObject<ConsumerHandle>", catch_unwind)]
    pub fn handle(&self, sync: bool) -> External<ConsumerHandle> {
        External::new(ConsumerHandle {
            inner: self.inner.clone(),
            pool: self.pool.clone(),
            sync,
        })
    }

    /// The next message if one is ready (null otherwise).
    #[napi(catch_unwind)]
    pub fn try_recv<'env>(&self, env: &'env Env) -> Result<Option<BufferSlice<'env>>> {
        match with_handle(&self.inner, "receiver", |c| c.try_recv().napi())? {
            Some(msg) => to_buffer(env, msg, &self.pool, true).map(Some),
            None => Ok(None),
        }
    }

    /// The next message, blocking this thread while the queue is empty.
    #[napi(catch_unwind)]
    pub fn recv_sync<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
    ) -> Result<BufferSlice<'env>> {
        let opts = WaitOptions {
            timeout: timeout(timeout_ms)?,
            ..WaitOptions::default()
        };
        let msg = shmpipe_core::signals::interruptible(|| {
            with_handle(&self.inner, "receiver", |c| c.recv(&opts).napi())
        })?;
        to_buffer(env, msg, &self.pool, true)
    }

    /// The next message without copying, if one is ready.
    #[napi(catch_unwind)]
    pub fn try_recv_view(&self) -> Result<Option<NativeMessage>> {
        Ok(
            with_handle(&self.inner, "receiver", |c| c.try_recv().napi())?.map(|m| NativeMessage {
                message: Arc::new(Mutex::new(Some(m))),
                handed_out: AtomicBool::new(false),
            }),
        )
    }

    /// Resolves once a message is ready (on a dedicated waiter thread, which polls `spin` times,
    /// default the core's `DEFAULT_SPIN`, before it sleeps); `tryRecv` then takes it.
    #[napi(ts_return_type = "Promise<void>", catch_unwind)]
    pub fn wait_ready<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
        spin: Option<u32>,
    ) -> Result<Object<'env>> {
        let token = self.queue.as_ref().ok_or_else(closed)?.cancel_token();
        *self.cancel.lock().map_err(|_| poisoned())? = Some(token.clone());
        let opts = WaitOptions {
            timeout: timeout(timeout_ms)?,
            cancel: Some(token),
            spin,
        };
        let inner = self.inner.clone();
        spawn_wait(env, &self.waiter, move || {
            wait_with(&inner, opts, |c, opts| c.wait_ready(opts).napi())
        })
    }

    /// Interrupts the current asynchronous wait, which then rejects with `ERR_SHMPIPE_ABORTED`.
    #[napi(catch_unwind)]
    pub fn cancel_wait(&self) -> Result<()> {
        if let Some(token) = self.cancel.lock().map_err(|_| poisoned())?.take() {
            token.cancel();
        }
        Ok(())
    }

    /// Closes the receiver; a pending wait is interrupted first.
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> Result<()> {
        self.cancel_wait()?;
        self.pool.close();
        let consumer = self.inner.lock().map_err(|_| poisoned())?.take();
        if let Some(c) = consumer {
            c.close();
        }
        self.waiter.drain()?;
        self.queue = None;
        Ok(())
    }
}
