//! Removal of this process's own segments when SIGINT or SIGTERM ends it.
//!
//! **The table.** Every segment this process would remove when its handle drops (a queue it
//! created, a blob it is still writing) has its name in a fixed table of [`OWNED_SLOTS`] atomic
//! words: a generated name is `shmpipe_` plus 64 random bits, so one `AtomicU64` holds it
//! (0 = free slot). Registering is a CAS into a free slot, unregistering a CAS back to 0: no
//! lock, no allocation, so a signal handler can read the table at any moment. A name is taken
//! out of the table as soon as this process stops owning it: a blob once committed (its consumer
//! removes it), a queue once its last handle is dropped (the name is unlinked first).
//!
//! **The handler** (Unix, installed by [`install_signal_cleanup`], never implicitly):
//! - The previous disposition was the default (terminate): unlink every name in the table, reset
//!   the disposition to the default and re-raise, so the process still dies *of the signal*
//!   (exit status "killed by SIGINT/SIGTERM", as a shell or a supervisor expects).
//! - The previous disposition was a handler (for example Node's own, which restores the terminal
//!   and re-raises, or libuv's, which hands the signal to a JavaScript listener): chain to it, as
//!   the kernel would have called it (including `SA_RESETHAND`'s reset to the default). Whether
//!   the process dies is that handler's decision, so the names are unlinked only if, once it
//!   returns, the signal is pending with the default disposition, i.e. the process is about to die
//!   of it. A handler that keeps the process running (a JavaScript listener that ignores SIGINT)
//!   leaves every segment in place; one that exits by itself (`_exit`) leaves them to the dead-owner
//!   cleanup ([`crate::inventory`]).
//! - The previous disposition was "ignore": nothing is installed for that signal.
//!
//! Unlinking a name is what a normal exit does too: the other processes' mappings stay valid
//! (they finish reading what is queued), and new attaches fail with `NotFound`. Committed blobs
//! are never in the table, so a live consumer still receives every message sent before the
//! signal. Only async-signal-safe calls are made in the handler: `unlink` of
//! `/dev/shm/<name>` on Linux (which is all glibc's and musl's `shm_unlink` does; `shm_unlink`
//! itself is not on POSIX's list), `shm_unlink` elsewhere (a system call on macOS), `sigaction`,
//! `sigpending`, `raise`, `getpid`.
//!
//! A forked child that did not exec inherits the table; the handler only unlinks in the process
//! that filled it.

use crate::name::generated_bits;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Capacity of the table of owned names. A process owning more segments at once (queues it
/// created plus blobs being written) leaves the extra ones to the dead-owner cleanup if a signal
/// ends it; [`untracked_count`] says how often that happened.
pub const OWNED_SLOTS: usize = 1024;

static OWNED: [AtomicU64; OWNED_SLOTS] = [const { AtomicU64::new(0) }; OWNED_SLOTS];

/// The process that filled the table (0 before the first registration).
static TABLE_PID: AtomicU32 = AtomicU32::new(0);

/// Set by the handler before it empties the table: the process is dying of a signal.
static TERMINATING: AtomicBool = AtomicBool::new(false);

/// Names that could not be registered (table full, or a name not made by `random_name`).
static UNTRACKED: AtomicUsize = AtomicUsize::new(0);

/// Registers `name` as owned by this process. Names not made by [`crate::random_name`] (and the
/// one name whose random bits are all zero) are not tracked.
pub(crate) fn track(name: &str) {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        UNTRACKED.fetch_add(1, Ordering::Relaxed);
        return;
    };
    TABLE_PID.store(std::process::id(), Ordering::Relaxed);
    for slot in &OWNED {
        if slot.load(Ordering::Relaxed) == 0
            && slot
                .compare_exchange(0, bits, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return;
        }
    }
    UNTRACKED.fetch_add(1, Ordering::Relaxed);
}

/// Unregisters `name`; returns whether it was in the table.
pub(crate) fn untrack(name: &str) -> bool {
    let Some(bits) = generated_bits(name).filter(|&b| b != 0) else {
        return false;
    };
    // Acquire even on failure: a slot emptied by the handler must show its TERMINATING store.
    OWNED.iter().any(|slot| {
        slot.load(Ordering::Acquire) == bits
            && slot
                .compare_exchange(bits, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    })
}

/// Unregisters `name` before ownership passes to another process (a blob about to be
/// committed). If a signal handler has already taken the name to unlink it, this process is
/// dying and the hand-over must not happen (a consumer would find a committed blob without its
/// segment): the calling thread then waits for the end.
pub(crate) fn hand_over(name: &str) {
    if !untrack(name) && TERMINATING.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// How many owned names could not be put in the table since the process started.
pub fn untracked_count() -> usize {
    UNTRACKED.load(Ordering::Relaxed)
}

/// Whether `name` is in this process's table of owned names (for tests and diagnostics).
pub fn is_tracked(name: &str) -> bool {
    generated_bits(name)
        .filter(|&b| b != 0)
        .is_some_and(|bits| OWNED.iter().any(|s| s.load(Ordering::Acquire) == bits))
}

/// Empties the table and unlinks every name in it. Async-signal-safe: atomics, a stack buffer
/// and one `unlink`/`shm_unlink` per name.
#[cfg(unix)]
fn remove_owned() {
    // SAFETY: getpid has no preconditions and is async-signal-safe.
    if TABLE_PID.load(Ordering::Relaxed) != unsafe { libc::getpid() } as u32 {
        return; // a forked child: the names belong to its parent
    }
    TERMINATING.store(true, Ordering::SeqCst);
    for slot in &OWNED {
        let bits = slot.swap(0, Ordering::AcqRel);
        if bits != 0 {
            unlink_generated(bits);
        }
    }
}

/// Unlinks the generated name for `bits` without allocating.
#[cfg(unix)]
fn unlink_generated(bits: u64) {
    use crate::name::{write_generated, NAME_PREFIX};
    #[cfg(target_os = "linux")]
    const DIR: &[u8] = b"/dev/shm/";
    #[cfg(not(target_os = "linux"))]
    const DIR: &[u8] = b"/";
    let mut name = [0u8; NAME_PREFIX.len() + 16];
    write_generated(bits, &mut name);
    let mut path = [0u8; 9 + NAME_PREFIX.len() + 16 + 1];
    path[..DIR.len()].copy_from_slice(DIR);
    path[DIR.len()..DIR.len() + name.len()].copy_from_slice(&name);
    // path[DIR.len() + name.len()] is already the terminating NUL.
    let path = path.as_ptr() as *const libc::c_char;
    #[cfg(target_os = "linux")]
    // SAFETY: `path` is a NUL-terminated string on our stack; unlink is async-signal-safe.
    unsafe {
        libc::unlink(path);
    }
    #[cfg(not(target_os = "linux"))]
    // SAFETY: as above; shm_unlink is a plain system call on macOS and the BSDs.
    unsafe {
        libc::shm_unlink(path);
    }
}

/// What [`install_signal_cleanup`] did for one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalSetup {
    /// Our handler is now installed, chaining to the previous disposition.
    Installed,
    /// Our handler was already the current one.
    AlreadyInstalled,
    /// The signal is ignored in this process; it stays ignored (it cannot end the process).
    LeftIgnored,
    /// This platform has no POSIX signals (Windows): nothing to do.
    Unsupported,
}

/// The signals [`install_signal_cleanup`] covers, by name.
pub const CLEANUP_SIGNALS: [&str; 2] = ["SIGINT", "SIGTERM"];

/// Installs the handler that unlinks this process's owned segments when SIGINT or SIGTERM ends
/// it (see the module documentation for how it chains). Idempotent; call it again after another
/// library replaced the handler (Node's libuv does when a JavaScript listener is added, and
/// resets the signal to the default when the last one is removed).
///
/// Returns what was done for each signal of [`CLEANUP_SIGNALS`], in that order.
pub fn install_signal_cleanup() -> crate::Result<[SignalSetup; 2]> {
    imp::install()
}

#[cfg(unix)]
mod imp {
    use super::{remove_owned, SignalSetup};
    use crate::error::Error;
    use libc::{c_int, c_void, siginfo_t};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const SIGNALS: [c_int; 2] = [libc::SIGINT, libc::SIGTERM];

    /// The disposition each signal had before ours: handler address and flags.
    static PREV_HANDLER: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];
    static PREV_FLAGS: [AtomicUsize; 2] = [const { AtomicUsize::new(0) }; 2];

    /// Serialises installs (never taken in the handler).
    static INSTALL: Mutex<()> = Mutex::new(());

    fn index(sig: c_int) -> Option<usize> {
        SIGNALS.iter().position(|&s| s == sig)
    }

    fn errno_ptr() -> *mut c_int {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: returns the calling thread's errno location; always valid.
        unsafe {
            libc::__errno_location()
        }
        #[cfg(any(target_os = "macos", target_os = "ios", target_os = "freebsd"))]
        // SAFETY: as above.
        unsafe {
            libc::__error()
        }
        #[cfg(not(any(
            target_os = "linux",
            target_os = "android",
            target_os = "macos",
            target_os = "ios",
            target_os = "freebsd"
        )))]
        {
            std::ptr::null_mut()
        }
    }

    /// Sets `sig` to its default disposition.
    fn set_default(sig: c_int) {
        // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask and no flags; sigaction is
        // async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = libc::SIG_DFL;
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }

    /// Whether `sig` is about to kill the process: default disposition and pending.
    fn about_to_die_of(sig: c_int) -> bool {
        // SAFETY: the out-parameters are valid locals; sigaction (query only) and sigpending are
        // async-signal-safe.
        unsafe {
            let mut cur: libc::sigaction = std::mem::zeroed();
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut cur) == 0
                && cur.sa_sigaction == libc::SIG_DFL
                && libc::sigpending(&mut pending) == 0
                && libc::sigismember(&pending, sig) == 1
        }
    }

    extern "C" fn on_signal(sig: c_int, info: *mut siginfo_t, context: *mut c_void) {
        let errno = errno_ptr();
        // SAFETY: `errno` is this thread's errno location (or null where unknown).
        let saved_errno = (!errno.is_null()).then(|| unsafe { *errno });
        if let Some(i) = index(sig) {
            let prev = PREV_HANDLER[i].load(Ordering::Acquire);
            let flags = PREV_FLAGS[i].load(Ordering::Acquire) as c_int;
            if prev == libc::SIG_DFL {
                remove_owned();
                set_default(sig);
                // Blocked while this handler runs (our mask is full): delivered, with the default
                // action, as soon as it returns.
                // SAFETY: raise is async-signal-safe.
                unsafe { libc::raise(sig) };
            } else if prev != libc::SIG_IGN {
                if flags & libc::SA_RESETHAND != 0 {
                    set_default(sig); // what the kernel does before calling a one-shot handler
                }
                if flags & libc::SA_SIGINFO != 0 {
                    // SAFETY: `prev` was installed with SA_SIGINFO, so it has this signature; it
                    // is called with the arguments the kernel gave us.
                    let f: extern "C" fn(c_int, *mut siginfo_t, *mut c_void) =
                        unsafe { std::mem::transmute(prev) };
                    f(sig, info, context);
                } else {
                    // SAFETY: `prev` was installed as a plain `sa_handler`.
                    let f: extern "C" fn(c_int) = unsafe { std::mem::transmute(prev) };
                    f(sig);
                }
                if about_to_die_of(sig) {
                    remove_owned();
                }
            }
        }
        if let Some(value) = saved_errno {
            // SAFETY: as above.
            unsafe { *errno = value };
        }
    }

    pub fn install() -> crate::Result<[SignalSetup; 2]> {
        let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let ours = on_signal as extern "C" fn(c_int, *mut siginfo_t, *mut c_void) as usize;
        let mut out = [SignalSetup::Installed; 2];
        for (i, &sig) in SIGNALS.iter().enumerate() {
            // SAFETY: plain queries and installs of a disposition with valid pointers to locals.
            unsafe {
                let mut cur: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, std::ptr::null(), &mut cur) != 0 {
                    return Err(Error::last_os("sigaction"));
                }
                if cur.sa_sigaction == ours {
                    out[i] = SignalSetup::AlreadyInstalled;
                    continue;
                }
                if cur.sa_sigaction == libc::SIG_IGN {
                    out[i] = SignalSetup::LeftIgnored;
                    continue;
                }
                // Our handler is not installed for `sig` now, so none of its runs reads these.
                PREV_FLAGS[i].store(cur.sa_flags as usize, Ordering::Release);
                PREV_HANDLER[i].store(cur.sa_sigaction, Ordering::Release);
                let mut act: libc::sigaction = std::mem::zeroed();
                act.sa_sigaction = ours;
                act.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
                // Every signal blocked while ours runs: covers the mask of any handler we chain to.
                libc::sigfillset(&mut act.sa_mask);
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &act, &mut old) != 0 {
                    return Err(Error::last_os("sigaction"));
                }
                if old.sa_sigaction != cur.sa_sigaction || old.sa_flags != cur.sa_flags {
                    // Another thread changed it in between: chain to what we actually replaced.
                    PREV_FLAGS[i].store(old.sa_flags as usize, Ordering::Release);
                    PREV_HANDLER[i].store(old.sa_sigaction, Ordering::Release);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(not(unix))]
mod imp {
    use super::SignalSetup;

    pub fn install() -> crate::Result<[SignalSetup; 2]> {
        Ok([SignalSetup::Unsupported; 2])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_is_exact_and_reversible() {
        let a = crate::random_name();
        let b = crate::random_name();
        track(&a);
        track(&b);
        assert!(is_tracked(&a) && is_tracked(&b));
        assert!(untrack(&a));
        assert!(!is_tracked(&a) && is_tracked(&b));
        assert!(!untrack(&a), "a name is in the table once");
        hand_over(&b); // not terminating: returns
        assert!(!is_tracked(&b));
        let before = untracked_count();
        track("not-generated");
        assert_eq!(untracked_count(), before + 1);
    }
}
