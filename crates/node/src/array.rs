//! `NativeArray`: a named shared array (create, attach, remove, list), its data as an external
//! ArrayBuffer over the shared mapping, and its cross-process lock (blocking, non-blocking, and
//! asynchronous on a dedicated waiter thread).
//!
//! The ArrayBuffer's finalizer keeps the mapping alive, so a view that outlives its handle never
//! reads freed memory; `close` detaches the buffer, so every view of it becomes empty at once.

use crate::args::{dimensions, timeout};
use crate::errors::{closed, error, invalid, poisoned, ErrorCode, IntoNapi, Result};
use crate::waiter::{settle, Settle, Waiter};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use shmpipe_core::{Acquired, Backing, CancelToken, Dtype, SharedArray, WaitOptions};
use std::sync::{Arc, Mutex};

/// How a lock was obtained, as JavaScript sees it.
#[napi(object)]
pub struct LockInfo {
    /// The previous holder went away without unlocking (its process died, or its handle was
    /// closed or collected while holding the lock): the data may be inconsistent.
    pub recovered: bool,
    /// The pid of that previous holder, when `recovered`.
    pub previous_owner_pid: Option<u32>,
}

impl From<Acquired> for LockInfo {
    fn from(a: Acquired) -> Self {
        Self {
            recovered: a.recovered,
            previous_owner_pid: a.previous_owner_pid,
        }
    }
}

/// A handle on a shared array.
#[napi]
pub struct NativeArray {
    array: Option<Arc<SharedArray>>,
    cancel: Arc<Mutex<Option<CancelToken>>>,
    waiter: Waiter,
}

impl NativeArray {
    fn new(array: SharedArray) -> Self {
        Self {
            array: Some(Arc::new(array)),
            cancel: Arc::default(),
            waiter: Waiter::default(),
        }
    }

    fn array(&self) -> Result<&Arc<SharedArray>> {
        self.array.as_ref().ok_or_else(closed)
    }
}

#[napi]
impl NativeArray {
    /// Creates the array `name` of `dtype` (`"float64"`, `"int32"`…) and `shape`, zero-filled,
    /// in `backing` (`'shm'` or `'memfd'`; absent: `'shm'`, whatever `SHMPIPE_BACKING` says).
    #[napi(factory, catch_unwind)]
    pub fn create(
        name: String,
        dtype: String,
        shape: Vec<f64>,
        backing: Option<String>,
    ) -> Result<Self> {
        let dtype =
            Dtype::from_name(&dtype).ok_or_else(|| invalid(&format!("unknown dtype {dtype:?}")))?;
        let dims = dimensions(&shape)?;
        let backing = match backing.as_deref() {
            None => Backing::Shm,
            Some(text) => {
                Backing::parse(text).ok_or_else(|| invalid("backing must be 'shm' or 'memfd'"))?
            }
        };
        Ok(Self::new(
            SharedArray::create_in(&name, dtype, &dims, backing).napi()?,
        ))
    }

    /// Attaches to the array `name`.
    #[napi(factory, catch_unwind)]
    pub fn open(name: String) -> Result<Self> {
        Ok(Self::new(SharedArray::open(&name).napi()?))
    }

    /// Removes the array `name` (handles already open keep working).
    #[napi(catch_unwind)]
    pub fn remove(name: String) -> Result<()> {
        SharedArray::remove(&name).napi()
    }

    /// Removes the array `name` if it is still the one whose `nonce` is given; returns whether it
    /// did.
    #[napi(catch_unwind)]
    pub fn remove_if_same(name: String, nonce: String) -> Result<bool> {
        let nonce = u64::from_str_radix(&nonce, 16).map_err(|_| invalid("nonce must be hex"))?;
        SharedArray::remove_if_same(&name, nonce).napi()
    }

    /// The names of the arrays that exist now (Linux only).
    #[napi(catch_unwind)]
    pub fn list() -> Result<Vec<String>> {
        SharedArray::list().napi()
    }

    /// The array's name.
    #[napi(getter, catch_unwind)]
    pub fn name(&self) -> Result<String> {
        Ok(self.array()?.name().to_owned())
    }

    /// The name of the segment behind it (the file in `/dev/shm` on Linux).
    #[napi(getter, catch_unwind)]
    pub fn segment_name(&self) -> Result<String> {
        Ok(self.array()?.segment_name().to_owned())
    }

    /// Where the array's memory lives: `'shm'` or `'memfd'`.
    #[napi(getter, catch_unwind)]
    pub fn backing(&self) -> Result<String> {
        Ok(self.array()?.backing().as_str().to_owned())
    }

    /// The dtype's name (`"float64"`…).
    #[napi(getter, catch_unwind)]
    pub fn dtype(&self) -> Result<String> {
        Ok(self.array()?.dtype().name().to_owned())
    }

    /// The shape.
    #[napi(getter, catch_unwind)]
    pub fn shape(&self) -> Result<Vec<f64>> {
        Ok(self.array()?.shape().iter().map(|&d| d as f64).collect())
    }

    /// Number of elements.
    #[napi(getter, catch_unwind)]
    pub fn length(&self) -> Result<f64> {
        Ok(self.array()?.len() as f64)
    }

    /// Size of the data in bytes.
    #[napi(getter, catch_unwind)]
    pub fn byte_length(&self) -> Result<f64> {
        Ok(self.array()?.byte_len() as f64)
    }

    /// This array's creation nonce, in hex (tells it from a later array of the same name).
    #[napi(getter, catch_unwind)]
    pub fn nonce(&self) -> Result<String> {
        Ok(format!("{:016x}", self.array()?.nonce()))
    }

    /// An ArrayBuffer over the shared data (the same memory every attached process sees).
    #[napi(catch_unwind)]
    pub fn buffer<'env>(&self, env: &'env Env) -> Result<ArrayBuffer<'env>> {
        let array = self.array()?;
        let ptr = array.as_ptr();
        let len = array.byte_len() as usize;
        let keep = array.keep_alive();
        let _ = env.adjust_external_memory(len as i64);
        // SAFETY: `ptr` is valid for `len` bytes while the mapping lives; `keep` holds the mapping
        // and moves into the finalizer, which runs only once JavaScript can no longer reach the
        // buffer. `close` detaches the buffer first, so no view reads it after that either.
        let buffer = unsafe {
            ArrayBuffer::from_external(env, ptr, len, keep, move |env, keep| {
                let _ = env.adjust_external_memory(-(len as i64));
                drop(keep);
            })
        }
        .napi()?;
        if !std::ptr::eq(buffer.as_ptr(), ptr) {
            // The runtime refused external buffers (Electron) and napi-rs fell back to a copy,
            // which would not be shared.
            return Err(error(
                ErrorCode::Unsupported,
                "this runtime does not allow external ArrayBuffers, which shared arrays need",
            ));
        }
        Ok(buffer)
    }

    /// Takes the lock, blocking this thread (at most `timeoutMs`).
    #[napi(catch_unwind)]
    pub fn lock_sync(&self, timeout_ms: Option<f64>) -> Result<LockInfo> {
        let opts = WaitOptions {
            timeout: timeout(timeout_ms)?,
            ..WaitOptions::default()
        };
        let array = self.array()?;
        Ok(shmpipe_core::signals::interruptible(|| array.lock(&opts))
            .napi()?
            .into())
    }

    /// Takes the lock if it is free or its holder died; null if a live holder has it.
    #[napi(catch_unwind)]
    pub fn try_lock(&self) -> Result<Option<LockInfo>> {
        Ok(self.array()?.try_lock().napi()?.map(LockInfo::from))
    }

    /// Takes the lock on a dedicated waiter thread; resolves once this handle holds it.
    #[napi(ts_return_type = "Promise<LockInfo>", catch_unwind)]
    pub fn lock_async<'env>(
        &self,
        env: &'env Env,
        timeout_ms: Option<f64>,
    ) -> Result<Object<'env>> {
        let array = self.array()?.clone();
        let token = array.cancel_token();
        *self.cancel.lock().map_err(|_| poisoned())? = Some(token.clone());
        let opts = WaitOptions {
            timeout: timeout(timeout_ms)?,
            cancel: Some(token),
            spin: None,
        };
        let (deferred, promise) = env.create_deferred::<LockInfo, Settle<LockInfo>>().napi()?;
        self.waiter.run(Box::new(move || {
            settle(deferred, array.lock(&opts).map(LockInfo::from).napi())
        }))?;
        Ok(promise)
    }

    /// Interrupts a pending `lockAsync`, which then rejects with `ERR_SHMPIPE_ABORTED`.
    #[napi(catch_unwind)]
    pub fn cancel_lock(&self) -> Result<()> {
        if let Some(token) = self.cancel.lock().map_err(|_| poisoned())?.take() {
            token.cancel();
        }
        Ok(())
    }

    /// Releases the lock; `ERR_SHMPIPE_LOCK_NOT_HELD` if this handle does not hold it.
    #[napi(catch_unwind)]
    pub fn unlock(&self) -> Result<()> {
        self.array()?.unlock().napi()
    }

    /// Whether this handle holds the lock.
    #[napi(getter, catch_unwind)]
    pub fn holds_lock(&self) -> bool {
        self.array.as_ref().is_some_and(|a| a.holds_lock())
    }

    /// The pid of the process holding the lock now (0: free).
    #[napi(getter, catch_unwind)]
    pub fn lock_holder_pid(&self) -> Result<u32> {
        Ok(self.array()?.lock_holder_pid())
    }

    /// Closes the handle: detaches `buffer` (every view of it becomes empty), interrupts a
    /// pending `lockAsync`, and releases the lock if this handle holds it (the next holder is
    /// told it was recovered). A named array stays until it is removed; a sealed one until its
    /// last holder closes.
    #[napi(catch_unwind)]
    pub fn close(&mut self, buffer: Option<ArrayBuffer>) -> Result<()> {
        if let Some(buffer) = buffer {
            if !buffer.is_detached().napi()? {
                buffer.detach().napi()?;
            }
        }
        if let Some(array) = self.array.take() {
            array.close_lock();
        }
        self.cancel_lock()
    }
}
