//! `watchParent`: ends a pool worker promptly when the process that started it is gone.
//!
//! A worker busy in a long synchronous task runs no JavaScript that could notice its parent's
//! death, so the watch lives below JavaScript:
//! - Linux: `prctl(PR_SET_PDEATHSIG, SIGTERM)`: the kernel sends SIGTERM the moment the parent
//!   thread that started the worker ends. libuv forks from the thread that calls `spawn`: a
//!   pool made on Node's main thread is tied to the parent process's life, one made on a worker
//!   thread to that thread's (its workers end with it, as its pool does). The parent's pid is
//!   then compared with `getppid()`, closing the race with a parent that died before the call.
//! - Every Unix: a thread compares `getppid()` with the parent's pid every
//!   [`POLL_INTERVAL`]; once the worker has been re-parented it sends itself SIGTERM, and
//!   SIGKILL [`KILL_GRACE`] later if it is still alive (a task module with a SIGTERM listener
//!   that keeps it running).
//!
//! SIGTERM rather than SIGKILL, so that the worker's own signal cleanup
//! (`shmpipe_core::signals`) removes the segments it owns before it dies.
//!
//! Windows has no such watch: a worker there ends when its next pipe operation finds the parent
//! gone (an idle worker at once, a busy one after its task).

use napi_derive::napi;
#[cfg(unix)]
use std::time::Duration;

/// How often the watch thread looks at `getppid()`.
#[cfg(unix)]
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a worker has to end after the SIGTERM before the watch sends SIGKILL.
#[cfg(unix)]
pub const KILL_GRACE: Duration = Duration::from_secs(1);

/// Ties this process's life to `parentPid`'s (see the module documentation). Returns `false` if
/// the parent is already gone (this process should end), `true` otherwise (also where no watch
/// exists). Call it once, early.
#[napi(catch_unwind)]
pub fn watch_parent(parent_pid: u32) -> bool {
    imp::watch(parent_pid)
}

#[cfg(unix)]
mod imp {
    use super::{KILL_GRACE, POLL_INTERVAL};
    use std::sync::atomic::{AtomicBool, Ordering};

    static WATCHING: AtomicBool = AtomicBool::new(false);

    fn parent_is(pid: u32) -> bool {
        // SAFETY: getppid has no preconditions and cannot fail.
        (unsafe { libc::getppid() }) as u32 == pid
    }

    fn send_self(sig: libc::c_int) {
        // SAFETY: kill on our own pid with a valid signal number has no memory effects.
        unsafe {
            libc::kill(libc::getpid(), sig);
        }
    }

    pub fn watch(parent_pid: u32) -> bool {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: PR_SET_PDEATHSIG takes a signal number and no pointers.
        unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            );
        }
        if !parent_is(parent_pid) {
            return false;
        }
        if WATCHING.swap(true, Ordering::AcqRel) {
            return true;
        }
        let started = std::thread::Builder::new()
            .name("shmpipe-parent-watch".into())
            .spawn(move || {
                while parent_is(parent_pid) {
                    std::thread::sleep(POLL_INTERVAL);
                }
                send_self(libc::SIGTERM);
                std::thread::sleep(KILL_GRACE);
                send_self(libc::SIGKILL);
            });
        if started.is_err() {
            WATCHING.store(false, Ordering::Release);
        }
        true
    }
}

#[cfg(not(unix))]
mod imp {
    pub fn watch(_parent_pid: u32) -> bool {
        true
    }
}
