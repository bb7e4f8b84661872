//! `NativeProducer`: the sending end's primitive operations. Ordering and the async API live in
//! TypeScript; this layer never blocks the JS thread except in the explicitly synchronous calls.

use crate::args::{byte_count, timeout};
use crate::errors::{closed, invalid, poisoned, IntoNapi, Result};
use crate::waiter::{spawn_wait, wait_with, with_handle, Waiter};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use shmpipe_core::{CancelToken, Loan, Producer, Queue, RawLoan, WaitOptions};
use std::sync::{Arc, Mutex};

/// The sender as the fast free functions reach it (through an External, see
/// [`NativeProducer::handle`]): the same shared slot as the class instance's, so closing the
/// instance closes it for them too.
pub struct ProducerHandle(Arc<Mutex<Option<Producer>>>);

/// Sends a copy of `data` if the queue has room now; returns whether it was sent.
///
/// The same as `NativeProducer.trySend`, as a free function on the sender's
/// [`handle`](NativeProducer::handle): a class method's receiver checks cost napi-rs about
/// 200 ns per call, as much as the send itself for a small message.
#[napi(catch_unwind)]
pub fn producer_try_send(handle: &External<ProducerHandle>, data: Uint8ArraySlice) -> Result<bool> {
    with_handle(&handle.0, "sender", |p| p.try_send(&data).napi())
}

/// Sends `head[..headLen]` followed by `body` as one message if the queue has room now;
/// returns whether it was sent. Both parts are copied straight into place (into the ring, or
/// into the message's own segment), so a lone binary value needs neither an intermediate buffer
/// nor a Buffer over the reserved memory.
#[napi(catch_unwind)]
pub fn producer_try_send_parts(
    handle: &External<ProducerHandle>,
    head: Uint8ArraySlice,
    head_len: u32,
    body: Uint8ArraySlice,
) -> Result<bool> {
    let head = head
        .get(..head_len as usize)
        .ok_or_else(|| invalid("headLen is longer than head"))?;
    send_gathered(handle, head, &[head.len() as u32], &[&body])
}

/// Sends, if the queue has room now, the message that is `scratch` with `parts[i]` inserted at
/// `scratch` offset `at[i]` (offsets in order, within `scratch`; checked by the callers); returns
/// whether it was sent. The parts are copied with [`Loan::copy_from`] (streamed when large).
fn send_gathered(
    handle: &External<ProducerHandle>,
    scratch: &[u8],
    at: &[u32],
    parts: &[&[u8]],
) -> Result<bool> {
    let total = parts
        .iter()
        .try_fold(scratch.len() as u64, |n, p| n.checked_add(p.len() as u64))
        .ok_or_else(|| invalid("the message is too large"))?;
    with_handle(&handle.0, "sender", |p| {
        let Some(mut loan) = p.try_reserve(total).napi()? else {
            return Ok(false);
        };
        fill_gathered(&mut loan, scratch, at, parts);
        loan.commit().napi()?;
        Ok(true)
    })
}

/// Writes the gathered message of [`send_gathered`] into `loan`, which has its exact length.
fn fill_gathered(loan: &mut Loan<'_>, scratch: &[u8], at: &[u32], parts: &[&[u8]]) {
    let (mut from, mut to) = (0usize, 0usize);
    for (&a, part) in at.iter().zip(parts) {
        let a = a as usize;
        loan.as_mut_slice()[to..to + (a - from)].copy_from_slice(&scratch[from..a]);
        to += a - from;
        from = a;
        loan.copy_from(to, part);
        to += part.len();
    }
    loan.as_mut_slice()[to..].copy_from_slice(&scratch[from..]);
}

/// Sends one message gathered from `scratch[..scratchLen]` and the binary `parts`: part `i` goes
/// where `scratch` offset `at[i]` falls in the message (the rest of `scratch` around it, in
/// order), as the codec lays out a value with deferred binary parts. Returns whether it was
/// sent (the queue had room). Every byte is copied straight into place, so a value holding large
/// binary parts needs no Buffer over the reserved memory (V8 would count one of the message's
/// whole size, for every message, until it collected it).
#[napi(catch_unwind)]
pub fn producer_try_send_gathered(
    handle: &External<ProducerHandle>,
    scratch: Uint8ArraySlice,
    scratch_len: u32,
    at: Vec<u32>,
    parts: Vec<Uint8Array>,
) -> Result<bool> {
    let scratch = scratch
        .get(..scratch_len as usize)
        .ok_or_else(|| invalid("scratchLen is longer than scratch"))?;
    if at.len() != parts.len() {
        return Err(invalid("at and parts differ in length"));
    }
    if at.windows(2).any(|w| w[0] > w[1]) || at.last().is_some_and(|&a| a > scratch_len) {
        return Err(invalid(
            "the offsets in at must be in order and within scratchLen",
        ));
    }
    let parts: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
    send_gathered(handle, scratch, &at, &parts)
}

/// A registered sender.
#[napi]
pub struct NativeProducer {
    inner: Arc<Mutex<Option<Producer>>>,
    queue: Option<Queue>,
    cancel: Arc<Mutex<Option<CancelToken>>>,
    waiter: Waiter,
    loan: Option<RawLoan>,
}

impl NativeProducer {
    pub(crate) fn new(producer: Producer, queue: Queue) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Some(producer))),
            queue: Some(queue),
            cancel: Arc::default(),
            waiter: Waiter::default(),
            loan: None,
        }
    }

    /// Takes the open reservation, detaching `buffer` (its memory) so JavaScript cannot reach the
    /// reserved bytes once the reservation ends.
    fn end_reservation(&mut self, buffer: ArrayBuffer) -> Result<RawLoan> {
        let loan = self
            .loan
            .take()
            .ok_or_else(|| invalid("no reservation is open"))?;
        if !loan.is_empty() {
            buffer.detach().napi()?;
        }
        Ok(loan)
    }

    /// Options for a wait cancellable through `cancelWait`.
    fn wait_options(&self, timeout_ms: Option<f64>) -> Result<WaitOptions> {
        let token = self.queue.as_ref().ok_or_else(closed)?.cancel_token();
        *self.cancel.lock().map_err(|_| poisoned())? = Some(token.clone());
        Ok(WaitOptions {
            timeout: timeout(timeout_ms)?,
            cancel: Some(token),
            spin: None,
        })
    }
}

#[napi]
impl NativeProducer {
    /// This sender's handle for the fast free functions (`producerTrySend`).
    #[napi(ts_return_type = "ExternalObject<ProducerHandle>", catch_unwind)]
    pub fn handle(&self) -> External<ProducerHandle> {
        External::new(ProducerHandle(self.inner.clone()))
    }

    /// Sends a copy of `data` if the queue has room now; returns whether it was sent.
    #[napi(catch_unwind)]
    pub fn try_send(&self, data: Uint8ArraySlice) -> Result<bool> {
        with_handle(&self.inner, "sender", |p| p.try_send(&data).napi())
    }

    /// Sends a copy of `data`, blocking this thread while the queue is full.
    #[napi(catch_unwind)]
    pub fn send_sync(&self, data: Uint8ArraySlice, timeout_ms: Option<f64>) -> Result<()> {
        let opts = WaitOptions {
            timeout: timeout(timeout_ms)?,
            ..WaitOptions::default()
        };
        shmpipe_core::signals::interruptible(|| {
            with_handle(&self.inner, "sender", |p| p.send(&data, &opts).napi())
        })
    }

    /// Resolves once a message of `len` bytes would fit (on a dedicated waiter thread), which
    /// polls `spin` times (default: the core's `DEFAULT_SPIN`) before it sleeps.
    #[napi(ts_return_type = "Promise<void>", catch_unwind)]
    pub fn wait_space<'env>(
        &self,
        env: &'env Env,
        len: f64,
        timeout_ms: Option<f64>,
        spin: Option<u32>,
    ) -> Result<Object<'env>> {
        let len = byte_count(len, "length")?;
        let mut opts = self.wait_options(timeout_ms)?;
        opts.spin = spin;
        let inner = self.inner.clone();
        spawn_wait(env, &self.waiter, move || {
            wait_with(&inner, opts, |p, opts| p.wait_space(len, opts).napi())
        })
    }

    /// Resolves once the receiver has released every message this sender sent.
    #[napi(ts_return_type = "Promise<void>", catch_unwind)]
    pub fn wait_for_all_ack<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
    ) -> Result<Object<'env>> {
        let opts = self.wait_options(timeout_ms)?;
        let inner = self.inner.clone();
        spawn_wait(env, &self.waiter, move || {
            wait_with(&inner, opts, |p, opts| p.wait_for_all_ack(opts).napi())
        })
    }

    /// Blocks until every message of this sender is released.
    #[napi(catch_unwind)]
    pub fn wait_for_all_ack_sync(&self, timeout_ms: Option<f64>) -> Result<()> {
        let opts = WaitOptions {
            timeout: timeout(timeout_ms)?,
            ..WaitOptions::default()
        };
        with_handle(&self.inner, "sender", |p| p.wait_for_all_ack(&opts).napi())
    }

    /// Interrupts the current asynchronous wait, which then rejects with `ERR_SHMPIPE_ABORTED`.
    #[napi(catch_unwind)]
    pub fn cancel_wait(&self) -> Result<()> {
        if let Some(token) = self.cancel.lock().map_err(|_| poisoned())?.take() {
            token.cancel();
        }
        Ok(())
    }

    /// Whether a message of `len` bytes would be accepted now.
    #[napi(catch_unwind)]
    pub fn has_space(&self, len: f64) -> Result<bool> {
        let len = byte_count(len, "length")?;
        match self.inner.try_lock() {
            Ok(guard) => Ok(guard.as_ref().is_some_and(|p| p.has_space(len))),
            Err(_) => Ok(false),
        }
    }

    /// Messages this sender committed.
    #[napi(getter, catch_unwind)]
    pub fn sent(&self) -> Result<f64> {
        with_handle(&self.inner, "sender", |p| Ok(p.sent() as f64))
    }

    /// Messages of this sender the receiver released.
    #[napi(getter, catch_unwind)]
    pub fn acked(&self) -> Result<f64> {
        with_handle(&self.inner, "sender", |p| Ok(p.acked() as f64))
    }

    /// Reserves `len` bytes for writing in place, if the queue has room now. Returns a Buffer over
    /// the reserved shared memory (or null when full); write it, then `commit()` or `abort()`.
    /// The Buffer must not be used after either: pass it back so it can be detached.
    #[napi(catch_unwind)]
    pub fn try_reserve<'env>(
        &mut self,
        env: &'env Env,
        len: f64,
    ) -> Result<Option<ArrayBuffer<'env>>> {
        if self.loan.is_some() {
            return Err(invalid("a reservation is already open on this sender"));
        }
        let len = byte_count(len, "length")?;
        let Some(mut loan) = with_handle(&self.inner, "sender", |p| p.try_reserve_raw(len).napi())?
        else {
            return Ok(None);
        };
        if loan.is_empty() {
            self.loan = Some(loan);
            return ArrayBuffer::from_data(env, Vec::<u8>::new())
                .napi()
                .map(Some);
        }
        let ptr = loan.as_mut_ptr();
        let len = loan.len();
        self.loan = Some(loan);
        // SAFETY: `ptr` points at `len` bytes of the open reservation, in the queue's mapping,
        // which the reservation keeps mapped. `commit`/`abort` detach this ArrayBuffer before
        // they end the reservation, so no view reaches the memory afterwards. `close` ends an
        // open reservation without detaching; the caller (`src/pipe.ts`) never leaves one open
        // across calls: it commits or aborts in the same synchronous call as `tryReserve`. A
        // peer may write the reserved bytes meanwhile: they are plain bytes to JavaScript.
        unsafe { ArrayBuffer::from_external(env, ptr, len, (), |_, ()| {}) }
            .napi()
            .map(Some)
    }

    /// Publishes the open reservation; `buffer` (from `tryReserve`) is detached first.
    #[napi(catch_unwind)]
    pub fn commit(&mut self, buffer: ArrayBuffer) -> Result<()> {
        let loan = self.end_reservation(buffer)?;
        with_handle(&self.inner, "sender", |p| p.commit_raw(loan).napi())
    }

    /// Copies `source` into the open reservation from byte `offset`, streaming a large copy past
    /// the cache where that is faster (`shmpipe_core::copy_to_shared`): how the codec writes the
    /// large binary parts of a value into shared memory.
    #[napi(catch_unwind)]
    pub fn write_reserved(&mut self, offset: f64, source: Uint8ArraySlice) -> Result<()> {
        let loan = self
            .loan
            .as_mut()
            .ok_or_else(|| invalid("no reservation is open"))?;
        let len = source.len();
        let start = usize::try_from(byte_count(offset, "offset")?)
            .ok()
            .filter(|&start| start.checked_add(len).is_some_and(|end| end <= loan.len()))
            .ok_or_else(|| {
                invalid(&format!(
                    "{len} bytes at offset {offset} do not fit the reservation of {} bytes",
                    loan.len()
                ))
            })?;
        let (src, dst) = (source.as_ptr() as usize, loan.as_mut_ptr() as usize);
        if src < dst + loan.len() && dst < src + len {
            return Err(invalid("the source overlaps the reservation"));
        }
        loan.copy_from(start, &source);
        Ok(())
    }

    /// Abandons the open reservation; the receiver never sees it.
    #[napi(catch_unwind)]
    pub fn abort(&mut self, buffer: ArrayBuffer) -> Result<()> {
        drop(self.end_reservation(buffer)?);
        Ok(())
    }

    /// Closes the sender; a pending wait is interrupted first.
    #[napi(catch_unwind)]
    pub fn close(&mut self) -> Result<()> {
        self.cancel_wait()?;
        self.loan = None;
        let producer = self.inner.lock().map_err(|_| poisoned())?.take();
        if let Some(p) = producer {
            p.close();
        }
        self.waiter.drain()?;
        self.queue = None;
        Ok(())
    }
}
