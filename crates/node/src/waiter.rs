//! A dedicated thread per handle for blocking waits, so that async waits never sit on libuv's
//! small thread pool (shared with `fs` and `dns`). Results reach JavaScript through a deferred
//! promise, which keeps the process alive while it is pending.

use crate::errors::{closed, error, for_deferred, poisoned, ErrorCode, IntoNapi, Result};
use napi::bindgen_prelude::{Env, Object, ToNapiValue};
use napi::JsDeferred;
use std::sync::mpsc::{channel, Sender};
use std::sync::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// Runs jobs one at a time on a thread started on first use; the thread ends when the waiter is
/// dropped.
#[derive(Default)]
pub struct Waiter {
    jobs: Mutex<Option<Sender<Job>>>,
}

impl Waiter {
    /// Queues `job` on the waiter thread.
    pub fn run(&self, job: Job) -> Result<()> {
        let mut jobs = self.jobs.lock().map_err(|_| poisoned())?;
        if jobs.is_none() {
            let (tx, rx) = channel::<Job>();
            std::thread::Builder::new()
                .name("shmpipe-waiter".into())
                .spawn(move || {
                    for job in rx {
                        job();
                    }
                })
                .map_err(|e| error(ErrorCode::Os, format!("spawn waiter: {e}")))?;
            *jobs = Some(tx);
        }
        jobs.as_ref()
            .expect("started above")
            .send(job)
            .map_err(|_| error(ErrorCode::Os, "waiter thread is gone"))
    }

    /// Blocks until every job queued so far has run; returns at once if the thread never
    /// started. A queued job owns its wait's cancel token, which keeps the queue mapped: `close()`
    /// drains after taking the handle (so those jobs end at once), and then the creator's
    /// segment is removed before `close()` returns, not later on this thread.
    pub fn drain(&self) -> Result<()> {
        let (done, finished) = channel::<()>();
        {
            let jobs = self.jobs.lock().map_err(|_| poisoned())?;
            let Some(tx) = jobs.as_ref() else {
                return Ok(());
            };
            if tx
                .send(Box::new(move || {
                    let _ = done.send(());
                }))
                .is_err()
            {
                return Ok(()); // the thread is gone, and its jobs with it
            }
        }
        // Jobs run in order, each dropped before the next: once this one ran, the others are
        // gone. An error means the thread ended, which also drops them.
        let _ = finished.recv();
        Ok(())
    }
}

/// Runs `f` on the handle in `inner` from the JS thread. Fails with `ERR_SHMPIPE_BUSY` while a
/// waiter thread holds it for an asynchronous wait, and `ERR_SHMPIPE_CLOSED` once it is closed.
pub fn with_handle<H, T>(
    inner: &Mutex<Option<H>>,
    what: &str,
    f: impl FnOnce(&mut H) -> Result<T>,
) -> Result<T> {
    let mut guard = match inner.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::WouldBlock) => {
            return Err(error(
                ErrorCode::Busy,
                format!("an asynchronous wait is in progress on this {what}"),
            ))
        }
        Err(std::sync::TryLockError::Poisoned(_)) => return Err(poisoned()),
    };
    f(guard.as_mut().ok_or_else(closed)?)
}

/// Runs `wait` on the handle in `inner` with `opts`, on the calling (waiter) thread; fails with
/// `ERR_SHMPIPE_CLOSED` if the handle was closed first. The options (whose cancel token keeps the
/// queue mapped) are dropped before the lock is released, so a `close()` waiting for the lock
/// never finds them still alive.
pub fn wait_with<H>(
    inner: &Mutex<Option<H>>,
    opts: shmpipe_core::WaitOptions,
    wait: impl FnOnce(&mut H, &shmpipe_core::WaitOptions) -> Result<()>,
) -> Result<()> {
    let mut guard = inner.lock().map_err(|_| poisoned())?;
    let result = match guard.as_mut() {
        Some(handle) => wait(handle, &opts),
        None => Err(closed()),
    };
    drop(opts);
    drop(guard);
    result
}

/// What settles a deferred promise on the JavaScript thread.
pub type Settle<T> = Box<dyn FnOnce(Env) -> napi::Result<T> + Send>;

/// Settles `deferred` with `outcome` (on the JavaScript thread, later): a rejection carries the
/// error's code.
pub fn settle<T: ToNapiValue + Send + 'static>(
    deferred: JsDeferred<T, Settle<T>>,
    outcome: Result<T>,
) {
    deferred.resolve(Box::new(move |env| {
        outcome.map_err(|err| for_deferred(env, err))
    }));
}

/// Runs `work` on `waiter` and returns a promise settled with its result on the JS thread.
pub fn spawn_wait<'env, F>(env: &'env Env, waiter: &Waiter, work: F) -> Result<Object<'env>>
where
    F: FnOnce() -> Result<()> + Send + 'static,
{
    let (deferred, promise) = env.create_deferred::<(), Settle<()>>().napi()?;
    waiter.run(Box::new(move || settle(deferred, work())))?;
    Ok(promise)
}
