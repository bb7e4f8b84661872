//! A cross-process event: a sequence word to sleep on and a count of sleepers, so that the
//! notifying side makes no system call when nobody waits. Also the wait loop every blocking
//! operation uses (spin briefly, then sleep in bounded slices, checking peers between slices),
//! and the token that interrupts such a wait from another thread.

use crate::error::{Error, Result};
use crate::futex;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one sleep lasts at most before the waiter re-checks its peers' liveness.
pub const HEALTH_SLICE: Duration = Duration::from_millis(100);

/// Default spin before a waiter goes to sleep, in pause instructions (`spin_loop` hints).
pub const DEFAULT_SPIN: u32 = 2_000;

/// A spinning waiter polls once every this many pauses. Polling reads the line the other side
/// writes next (the `published` cursor, a record's stamp, the head); reading it at every pause
/// pulls it away from the writer once per message, where polling less often lets the writer
/// finish a few messages and the reader take them in a batch. The price is latency while
/// spinning. The measurements behind 8: `docs/decisions/2026-11-21-poll-every-8-pauses.md`.
pub const PAUSES_PER_POLL: u32 = 8;

/// The longest first sleep of a wait (see [`EventWord::notify`]): bounds the delay of the one
/// wake-up an x86-64 notifier can miss, while its store is still in its store buffer.
///
/// Longer than a scheduler tick (4 ms at the common HZ=250, 10 ms at HZ=100) on purpose: a
/// futex timeout shorter than the next tick makes the kernel reprogram the timer hardware on
/// every sleep and again on every wake, which under a hypervisor is a VM exit each time. The
/// measurements behind 20 ms: `docs/decisions/2026-11-21-first-sleep-20ms.md`.
pub const FIRST_SLEEP: Duration = Duration::from_millis(20);

/// An event word in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct EventWord {
    seq: AtomicU32,
    sleepers: AtomicU32,
    /// Set by the first notifier after sleepers last re-armed it: later notifiers skip the
    /// system call until a sleeper has run again (a woken thread may take tens of µs to run).
    woken: AtomicU32,
}

impl EventWord {
    /// Wakes sleepers if there are any. Call right after publishing, with a Release store (or
    /// stronger), the state change they wait for.
    ///
    /// A sleeper counts itself in `sleepers` with a locked RMW, then re-checks the state, then
    /// sleeps. The race is a notifier reading `sleepers` as 0 while that sleeper's re-check misses
    /// the notifier's state change. This is the hot path (once per message), so it has no fence
    /// where the hardware orders enough without one:
    /// - aarch64: the state is published with STLR and `sleepers` read with LDAR (a SeqCst load),
    ///   and an LDAR is never performed before an earlier STLR: no race.
    /// - x86-64 (TSO): the load may be performed while the state store still sits in this core's
    ///   store buffer, so the race exists, but only until that buffer drains (nanoseconds; a VM
    ///   exit drains it too). `wait_until` caps the first sleep after counting itself at
    ///   [`FIRST_SLEEP`], so such a missed wake-up costs at most that much, once; afterwards the
    ///   waiter stays counted until it returns, so no later notify can miss it.
    /// - elsewhere: a SeqCst fence first, the textbook pairing.
    #[inline]
    pub fn notify(&self) {
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) != 0 && self.woken.swap(1, Ordering::SeqCst) == 0 {
            self.wake();
        }
    }

    /// Like [`notify`](Self::notify), for a caller that has just issued a SeqCst fence after
    /// publishing its state change.
    #[inline]
    pub fn notify_after_fence(&self) {
        if self.sleepers.load(Ordering::SeqCst) != 0 && self.woken.swap(1, Ordering::SeqCst) == 0 {
            self.wake();
        }
    }

    /// Wakes every sleeper unconditionally (used for interrupts and closes).
    pub fn wake(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        futex::wake_all(&self.seq);
    }
}

/// Interrupts waits from another thread: once cancelled, every wait that was given this token
/// returns [`Error::Interrupted`] promptly.
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<CancelInner>,
}

struct CancelInner {
    cancelled: AtomicBool,
    /// Event words to kick so that sleepers notice; they live in a mapping kept alive by `_keep`.
    kick: Vec<*const EventWord>,
    _keep: Arc<dyn Send + Sync>,
}

// SAFETY: the raw pointers point into a shared mapping that `_keep` keeps mapped for as long as
// the token lives; `EventWord` is made of atomics, so using it from any thread is sound.
unsafe impl Send for CancelInner {}
// SAFETY: as above; all access through the pointers is atomic.
unsafe impl Sync for CancelInner {}

impl CancelToken {
    pub(crate) fn new(kick: Vec<*const EventWord>, keep: Arc<dyn Send + Sync>) -> Self {
        Self {
            inner: Arc::new(CancelInner {
                cancelled: AtomicBool::new(false),
                kick,
                _keep: keep,
            }),
        }
    }

    /// Interrupts the waits using this token, now and in future.
    pub fn cancel(&self) {
        self.inner.cancelled.store(true, Ordering::SeqCst);
        for &word in &self.inner.kick {
            // SAFETY: see `CancelInner`: the mapping is alive while the token is.
            unsafe { &*word }.wake();
        }
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::SeqCst)
    }
}

/// How a blocking operation waits: its timeout, its cancel token, and how long it spins first.
/// A wait also returns [`Error::Interrupted`] when run inside [`crate::signals::interruptible`]
/// and a signal left to JavaScript arrives.
#[derive(Clone, Default)]
pub struct WaitOptions {
    /// Give up with [`Error::Timeout`] after this long; `None` waits until ready or failed.
    pub timeout: Option<Duration>,
    /// Interrupts the wait when cancelled.
    pub cancel: Option<CancelToken>,
    /// Spin before sleeping, in pause instructions (a poll every [`PAUSES_PER_POLL`]); `None`
    /// uses [`DEFAULT_SPIN`], `Some(0)` never spins.
    pub spin: Option<u32>,
}

impl WaitOptions {
    /// Wait as long as it takes.
    pub fn forever() -> Self {
        Self::default()
    }

    /// Wait at most `timeout`.
    pub fn timeout(timeout: Duration) -> Self {
        Self {
            timeout: Some(timeout),
            ..Self::default()
        }
    }

    /// Sets the cancel token.
    pub fn with_cancel(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Sets the spin count.
    pub fn with_spin(mut self, spins: u32) -> Self {
        self.spin = Some(spins);
        self
    }
}

/// Waits on `event` until `poll` yields a value.
///
/// `poll` is the cheap readiness check, called often. `health` is the slow check (peer liveness,
/// recovery of a dead peer's work); it runs when the waiter first sleeps and then at least every
/// [`HEALTH_SLICE`], and may itself produce the value or the error that ends the wait. Every
/// sleep is bounded, so a dead peer is always noticed.
pub(crate) fn wait_until<T>(
    event: &EventWord,
    opts: &WaitOptions,
    mut poll: impl FnMut() -> Result<Option<T>>,
    mut health: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    // A timeout too long for the clock (years) is no deadline.
    let deadline = opts.timeout.and_then(|t| Instant::now().checked_add(t));
    let mut counted = SleeperCount {
        event,
        counted: false,
    };
    for _ in 0..opts.spin.unwrap_or(DEFAULT_SPIN).div_ceil(PAUSES_PER_POLL) {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        for _ in 0..PAUSES_PER_POLL {
            std::hint::spin_loop();
        }
    }
    // The first health check comes one slice after the wait starts: reading a peer's liveness
    // costs microseconds, too much for a wait that data ends quickly.
    let mut next_health = Instant::now() + HEALTH_SLICE;
    loop {
        if let Some(v) = poll()? {
            return Ok(v);
        }
        if opts.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
            || crate::signals::wait_interrupted()
        {
            return Err(Error::Interrupted);
        }
        let mut now = Instant::now();
        if now >= next_health {
            if let Some(v) = health()? {
                return Ok(v);
            }
            now = Instant::now();
            next_health = now + HEALTH_SLICE;
        }
        let mut sleep_for = next_health - now;
        if let Some(deadline) = deadline {
            if now >= deadline {
                return Err(Error::Timeout);
            }
            sleep_for = sleep_for.min(deadline - now);
        }
        if !counted.counted {
            // Counted once for the whole wait: only a notify racing with this first count can
            // miss us (see `EventWord::notify`), and the first sleep is bounded to cover it.
            event.sleepers.fetch_add(1, Ordering::SeqCst);
            counted.counted = true;
            sleep_for = sleep_for.min(FIRST_SLEEP);
        }
        // Read the sequence first, then re-arm the wake-up, then re-check. A notifier that
        // skipped its wake because `woken` was still set bumped the sequence before, so we saw
        // that; one that comes after the re-arm finds `woken` clear and wakes us. (Re-arming
        // first would let an unrelated notify set `woken` between the re-arm and our read of the
        // sequence, suppressing the wake we wait for.)
        let seq = event.seq.load(Ordering::SeqCst);
        event.woken.store(0, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        let ready = poll();
        let cancelled = opts.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
            || crate::signals::wait_interrupted();
        if !matches!(ready, Ok(None)) || cancelled {
            match ready? {
                Some(v) => return Ok(v),
                None => return Err(Error::Interrupted),
            }
        }
        futex::wait(&event.seq, seq, sleep_for);
    }
}

/// A waiter's place in `sleepers`, given back however the wait ends.
struct SleeperCount<'a> {
    event: &'a EventWord,
    counted: bool,
}

impl Drop for SleeperCount<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.event.sleepers.fetch_sub(1, Ordering::SeqCst);
        }
    }
}
