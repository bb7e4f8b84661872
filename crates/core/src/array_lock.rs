//! A robust cross-process lock in shared memory: the writers' lock of a shared array.
//!
//! The lock is one 64-bit owner word: 0 when free, else the holder's identity, its pid in the low
//! 32 bits and the low 32 bits of its process start time in the high ones. Taking the lock is a
//! CAS from 0 to that identity, so the identity is published in the same instruction that takes
//! the lock: there is no moment at which the lock is held by nobody known. Waiters sleep on an
//! [`EventWord`] in bounded slices (see [`crate::event`]); between slices they check whether the
//! holder's process still lives (pid and start time, so a recycled pid reads as dead), and take a
//! dead holder's lock over with a CAS from its identity to theirs. Only one waiter's CAS can win.
//!
//! The new holder is told when it got the lock from a holder that went away without unlocking
//! ([`Acquired::recovered`]): like a robust mutex's `EOWNERDEAD`, the data the lock protects may
//! be half-updated. That covers a process that died holding it, and a handle dropped (or closed)
//! while holding it, which releases the lock and leaves a mark for the next holder.
//!
//! The lock belongs to a handle ([`LockHolder`]), not to a thread: a handle may take the lock on
//! one thread and release it on another (the Node bindings wait on a helper thread). It is not
//! reentrant: a handle that holds the lock or is waiting for it cannot lock again
//! ([`Error::AlreadyLocked`]), and only the holding handle may unlock ([`Error::LockNotHeld`]).
//! Two handles in one process exclude each other like two processes do, but their holders share
//! an identity, so a holder is only recovered from when its whole process is gone.

use crate::error::{Error, Result};
use crate::event::{wait_until, EventWord, WaitOptions};
use crate::process::{start_time, ProcessIdentity};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

/// Spin iterations before a lock waiter sleeps (unless the caller sets its own): short, because a
/// spinning waiter on a busy machine takes the CPU the holder needs to finish.
pub const LOCK_SPIN: u32 = 100;

/// The lock's state in shared memory: one 128-byte line of its own.
#[repr(C)]
pub struct LockWord {
    /// 0 when free, else [`identity_word`] of the holder's process.
    owner: AtomicU64,
    /// The pid of a holder whose handle went away while holding the lock (it released the lock
    /// and left this mark), or 0. Cleared by the next holder, which is told.
    abandoned_by: AtomicU32,
    _pad: u32,
    /// Wakes waiters when the lock is released.
    event: EventWord,
    _pad2: u32,
    /// How many times the lock was taken over from a dead holder or released by a lost handle.
    recoveries: AtomicU64,
    _reserved: [u64; 11],
}

const _: () = assert!(std::mem::size_of::<LockWord>() == 128);

/// How a lock was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    /// The previous holder went away without unlocking (its process died, or its handle was
    /// closed or dropped while holding the lock): the protected data may be inconsistent.
    pub recovered: bool,
    /// The pid of that previous holder, when `recovered`.
    pub previous_owner_pid: Option<u32>,
}

impl Acquired {
    const CLEAN: Self = Self {
        recovered: false,
        previous_owner_pid: None,
    };
}

/// The owner word for `who`: pid in the low half, low 32 bits of the start time in the high half.
pub fn identity_word(who: ProcessIdentity) -> u64 {
    u64::from(who.pid) | (who.start & 0xffff_ffff) << 32
}

/// Whether the process named by an owner word still runs. A start-time tag of 0 (the OS exposes
/// no start time) falls back to the pid alone.
fn owner_alive(word: u64) -> bool {
    let pid = word as u32;
    let tag = (word >> 32) as u32;
    if tag == 0 {
        return ProcessIdentity { pid, start: 0 }.is_alive();
    }
    match start_time(pid) {
        Some(start) if start as u32 == tag => ProcessIdentity { pid, start }.is_alive(),
        _ => false,
    }
}

impl LockWord {
    /// Takes the lock if it is free.
    fn try_acquire(&self, me: u64) -> Option<Acquired> {
        if self.owner.load(Ordering::Relaxed) != 0
            || self
                .owner
                .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        // We hold the lock: nobody else touches `abandoned_by` now. The releasing holder wrote it
        // before its Release store of 0, which our Acquire CAS read.
        match self.abandoned_by.swap(0, Ordering::Relaxed) {
            0 => Some(Acquired::CLEAN),
            pid => Some(Acquired {
                recovered: true,
                previous_owner_pid: Some(pid),
            }),
        }
    }

    /// Takes the lock over if its holder's process is dead.
    fn try_recover(&self, me: u64) -> Option<Acquired> {
        let holder = self.owner.load(Ordering::Acquire);
        if holder == 0 || owner_alive(holder) {
            return None;
        }
        // Only a dead process's word is replaced: a live holder that released and re-took the
        // lock meanwhile wrote 0 and then its word again, and a dead process writes nothing, so
        // if the word still names that dead process, it still holds the lock.
        self.owner
            .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Relaxed)
            .ok()?;
        self.abandoned_by.store(0, Ordering::Relaxed);
        self.recoveries.fetch_add(1, Ordering::Relaxed);
        Some(Acquired {
            recovered: true,
            previous_owner_pid: Some(holder as u32),
        })
    }

    /// Releases the lock held under `me`; with `abandoned`, marks it for the next holder.
    fn release(&self, me: u64, abandoned: bool) -> bool {
        if self.owner.load(Ordering::Relaxed) != me {
            return false;
        }
        if abandoned {
            self.abandoned_by.store(me as u32, Ordering::Relaxed);
            self.recoveries.fetch_add(1, Ordering::Relaxed);
        }
        let released = self
            .owner
            .compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok();
        self.event.notify();
        released
    }

    /// The event waiters sleep on (for cancel tokens).
    pub(crate) fn event(&self) -> &EventWord {
        &self.event
    }

    /// The pid of the current holder (0: free).
    pub fn holder_pid(&self) -> u32 {
        self.owner.load(Ordering::Relaxed) as u32
    }

    /// How many times the lock was recovered from a holder that went away without unlocking.
    pub fn recoveries(&self) -> u64 {
        self.recoveries.load(Ordering::Relaxed)
    }
}

/// What a handle is doing with the lock.
const IDLE: u8 = 0;
const WAITING: u8 = 1;
const HELD: u8 = 2;
const CLOSED: u8 = 3;

/// One handle's side of the lock: whether it holds it, and the identity it holds it under.
pub struct LockHolder {
    me: u64,
    state: AtomicU8,
}

impl Default for LockHolder {
    fn default() -> Self {
        Self::new()
    }
}

impl LockHolder {
    /// A holder for the calling process that does not hold the lock.
    pub fn new() -> Self {
        Self {
            me: identity_word(ProcessIdentity::current()),
            state: AtomicU8::new(IDLE),
        }
    }

    /// Whether this handle holds the lock.
    pub fn holds(&self) -> bool {
        self.state.load(Ordering::SeqCst) == HELD
    }

    fn begin(&self) -> Result<()> {
        match self
            .state
            .compare_exchange(IDLE, WAITING, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => Ok(()),
            Err(CLOSED) => Err(Error::Closed),
            Err(_) => Err(Error::AlreadyLocked),
        }
    }

    /// Ends a lock attempt: records the outcome, or gives the lock back if this handle was closed
    /// while it waited.
    fn finish(&self, word: &LockWord, got: Result<Option<Acquired>>) -> Result<Option<Acquired>> {
        match got {
            Ok(Some(acquired)) => {
                if self
                    .state
                    .compare_exchange(WAITING, HELD, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    // Closed meanwhile: nobody will unlock through this handle. The mark of a
                    // lost holder stays for the next one, which must still be told.
                    if acquired.recovered {
                        word.abandoned_by.store(
                            acquired.previous_owner_pid.unwrap_or(self.me as u32),
                            Ordering::Relaxed,
                        );
                    }
                    word.release(self.me, false);
                    return Err(Error::Closed);
                }
                Ok(Some(acquired))
            }
            other => {
                let _ =
                    self.state
                        .compare_exchange(WAITING, IDLE, Ordering::SeqCst, Ordering::SeqCst);
                other
            }
        }
    }

    /// Takes the lock, waiting as `opts` allows (spinning [`LOCK_SPIN`] times unless `opts` says
    /// otherwise). A dead holder's lock is taken over, at most one health slice after its death.
    pub fn lock(&self, word: &LockWord, opts: &WaitOptions) -> Result<Acquired> {
        self.begin()?;
        let opts = WaitOptions {
            spin: Some(opts.spin.unwrap_or(LOCK_SPIN)),
            ..opts.clone()
        };
        let me = self.me;
        let got = wait_until(
            &word.event,
            &opts,
            || Ok(word.try_acquire(me)),
            || Ok(word.try_recover(me)),
        );
        self.finish(word, got.map(Some))
            .map(|a| a.expect("a wait only ends with a value or an error"))
    }

    /// Takes the lock if it is free or its holder is dead; `None` if a live holder has it.
    pub fn try_lock(&self, word: &LockWord) -> Result<Option<Acquired>> {
        self.begin()?;
        let got = word
            .try_acquire(self.me)
            .or_else(|| word.try_recover(self.me));
        self.finish(word, Ok(got))
    }

    /// Releases the lock held by this handle.
    pub fn unlock(&self, word: &LockWord) -> Result<()> {
        match self
            .state
            .compare_exchange(HELD, IDLE, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) if word.release(self.me, false) => Ok(()),
            Ok(_) => Err(Error::LockNotHeld),
            Err(CLOSED) => Err(Error::Closed),
            Err(_) => Err(Error::LockNotHeld),
        }
    }

    /// Ends this handle's use of the lock: later calls fail with [`Error::Closed`]. A lock it
    /// still holds is released and marked, so the next holder is told it was recovered; a wait in
    /// progress gives the lock back if it gets it.
    pub fn close(&self, word: &LockWord) {
        if self.state.swap(CLOSED, Ordering::SeqCst) == HELD {
            word.release(self.me, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    fn word() -> Arc<LockWord> {
        // SAFETY: LockWord is atomics and padding; all zeros is a free lock.
        Arc::new(unsafe { std::mem::zeroed() })
    }

    #[test]
    fn identity_word_round_trips_pid_and_tag() {
        let me = ProcessIdentity::current();
        let w = identity_word(me);
        assert_eq!(w as u32, me.pid);
        assert_eq!((w >> 32) as u32, me.start as u32);
        assert!(owner_alive(w));
        assert!(!owner_alive(w ^ (1 << 32)) || me.start == 0);
    }

    #[test]
    fn lock_unlock_and_misuse() {
        let w = word();
        let a = LockHolder::new();
        let b = LockHolder::new();
        assert!(matches!(a.unlock(&w), Err(Error::LockNotHeld)));
        assert_eq!(
            a.lock(&w, &WaitOptions::forever()).unwrap(),
            Acquired::CLEAN
        );
        assert!(a.holds());
        assert!(matches!(
            a.lock(&w, &WaitOptions::forever()),
            Err(Error::AlreadyLocked)
        ));
        assert!(matches!(b.unlock(&w), Err(Error::LockNotHeld)));
        assert_eq!(b.try_lock(&w).unwrap(), None);
        let start = Instant::now();
        assert!(matches!(
            b.lock(&w, &WaitOptions::timeout(Duration::from_millis(50))),
            Err(Error::Timeout)
        ));
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert_eq!(w.holder_pid(), std::process::id());
        a.unlock(&w).unwrap();
        assert!(!a.holds());
        assert_eq!(w.holder_pid(), 0);
        assert_eq!(b.try_lock(&w).unwrap(), Some(Acquired::CLEAN));
        b.unlock(&w).unwrap();
    }

    #[test]
    fn closing_a_holding_handle_tells_the_next_holder() {
        let w = word();
        let a = LockHolder::new();
        a.lock(&w, &WaitOptions::forever()).unwrap();
        a.close(&w);
        assert!(matches!(a.unlock(&w), Err(Error::Closed)));
        assert!(matches!(a.try_lock(&w), Err(Error::Closed)));
        let b = LockHolder::new();
        let got = b.try_lock(&w).unwrap().unwrap();
        assert!(got.recovered);
        assert_eq!(got.previous_owner_pid, Some(std::process::id()));
        assert_eq!(w.recoveries(), 1);
        b.unlock(&w).unwrap();
        assert_eq!(b.try_lock(&w).unwrap(), Some(Acquired::CLEAN), "told once");
        b.unlock(&w).unwrap();
    }

    #[test]
    fn a_dead_holder_is_taken_over() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = ProcessIdentity {
            pid: child.id(),
            start: start_time(child.id()).unwrap_or(0),
        };
        child.wait().unwrap();
        let w = word();
        w.owner.store(identity_word(dead), Ordering::Relaxed);
        let b = LockHolder::new();
        let start = Instant::now();
        let got = b
            .lock(&w, &WaitOptions::timeout(Duration::from_secs(5)))
            .unwrap();
        assert!(got.recovered);
        assert_eq!(got.previous_owner_pid, Some(dead.pid));
        // Found at the first health check, one slice into the wait.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        b.unlock(&w).unwrap();
        assert_eq!(w.recoveries(), 1);
    }

    #[test]
    fn a_recycled_pid_reads_as_dead() {
        let me = ProcessIdentity::current();
        if me.start == 0 {
            return; // no start times on this OS
        }
        let w = word();
        let impostor = ProcessIdentity {
            start: me.start + 1,
            ..me
        };
        w.owner.store(identity_word(impostor), Ordering::Relaxed);
        let got = LockHolder::new().try_lock(&w).unwrap().unwrap();
        assert!(got.recovered);
    }

    #[test]
    fn threads_exclude_each_other() {
        let w = word();
        let counter = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (w, counter) = (w.clone(), counter.clone());
                std::thread::spawn(move || {
                    let h = LockHolder::new();
                    for _ in 0..20_000 {
                        assert!(!h.lock(&w, &WaitOptions::forever()).unwrap().recovered);
                        // A non-atomic read-modify-write: only mutual exclusion keeps it exact.
                        let v = counter.load(Ordering::Relaxed);
                        std::hint::spin_loop();
                        counter.store(v + 1, Ordering::Relaxed);
                        h.unlock(&w).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 80_000);
    }

    #[test]
    fn close_during_a_wait_gives_the_lock_back() {
        let w = word();
        let a = LockHolder::new();
        a.lock(&w, &WaitOptions::forever()).unwrap();
        let b = Arc::new(LockHolder::new());
        let (w2, b2) = (w.clone(), b.clone());
        let t = std::thread::spawn(move || b2.lock(&w2, &WaitOptions::forever()));
        std::thread::sleep(Duration::from_millis(50));
        b.close(&w);
        a.unlock(&w).unwrap();
        assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
        let c = LockHolder::new();
        assert_eq!(c.try_lock(&w).unwrap(), Some(Acquired::CLEAN));
    }
}
