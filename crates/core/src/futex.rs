//! The smallest cross-process wait: block while a shared `AtomicU32` holds a value.
//!
//! Linux uses a shared (non-private) futex, macOS `__ulock_wait` with the shared flag; both take
//! the timeout as a relative value, so there is no timespec arithmetic to get wrong (raw_sync's
//! timed waits fail with EINVAL for that reason). Elsewhere a short sleep stands in (see README).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Blocks while `*word == expected`, for at most `timeout`. May return early or spuriously:
/// callers re-check their condition in a loop.
pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    imp::wait(word, expected, timeout)
}

/// Wakes every process and thread blocked in [`wait`] on `word`.
pub fn wake_all(word: &AtomicU32) {
    imp::wake_all(word)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;

    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        // At most i32::MAX seconds (68 years), which fits every time_t, converted without naming
        // `libc::time_t`: the libc crate deprecates that name for musl, where it keeps the old
        // 32-bit definition on 32-bit targets while musl ≥ 1.2 made it 64-bit; on the 64-bit
        // targets built here (x86_64, aarch64) it is `c_long`, i.e. 64 bits, what musl uses.
        let secs = timeout.as_secs().min(i32::MAX as u64) as i32;
        let ts = libc::timespec {
            tv_sec: secs.into(),
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `word` is a valid, aligned u32 for the duration of the call; FUTEX_WAIT (without
        // FUTEX_PRIVATE_FLAG, so it works across processes sharing the mapping) only reads it.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }

    pub fn wake_all(word: &AtomicU32) {
        // SAFETY: FUTEX_WAKE only uses the address as a key; it does not access memory.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAKE,
                i32::MAX,
                std::ptr::null::<libc::timespec>(),
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::*;

    const UL_COMPARE_AND_WAIT_SHARED: u32 = 3;
    const ULF_WAKE_ALL: u32 = 0x100;

    extern "C" {
        fn __ulock_wait(
            operation: u32,
            addr: *mut libc::c_void,
            value: u64,
            timeout_us: u32,
        ) -> libc::c_int;
        fn __ulock_wake(operation: u32, addr: *mut libc::c_void, wake_value: u64) -> libc::c_int;
    }

    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        let us = timeout.as_micros().clamp(1, u32::MAX as u128) as u32;
        // SAFETY: `word` is a valid, aligned u32 for the duration of the call; the shared
        // compare-and-wait only reads it, keyed by the physical page so it works across processes.
        unsafe {
            __ulock_wait(
                UL_COMPARE_AND_WAIT_SHARED,
                word.as_ptr().cast(),
                expected as u64,
                us,
            );
        }
    }

    pub fn wake_all(word: &AtomicU32) {
        // SAFETY: wake uses the address only as a key.
        unsafe {
            __ulock_wake(
                UL_COMPARE_AND_WAIT_SHARED | ULF_WAKE_ALL,
                word.as_ptr().cast(),
                0,
            );
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    use super::*;
    use std::sync::atomic::Ordering;

    /// Portable stand-in: sleeps in short steps, so a wake is seen within about 200 µs.
    pub fn wait(word: &AtomicU32, expected: u32, timeout: Duration) {
        if word.load(Ordering::Acquire) == expected {
            std::thread::sleep(timeout.min(Duration::from_micros(200)));
        }
    }

    pub fn wake_all(_word: &AtomicU32) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn timed_wait_honours_timeout_including_whole_seconds() {
        let word = AtomicU32::new(7);
        for ms in [5u64, 30, 1_100] {
            let start = Instant::now();
            wait(&word, 7, Duration::from_millis(ms));
            let took = start.elapsed();
            assert!(
                took >= Duration::from_millis(ms),
                "{ms} ms wait returned after {took:?}"
            );
            assert!(
                took < Duration::from_millis(ms + 50),
                "{ms} ms wait took {took:?}"
            );
        }
    }

    #[test]
    fn mismatched_value_returns_at_once() {
        let word = AtomicU32::new(1);
        let start = Instant::now();
        wait(&word, 2, Duration::from_secs(5));
        assert!(start.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn wake_releases_a_waiter() {
        let word = Arc::new(AtomicU32::new(0));
        let w = word.clone();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            while w.load(Ordering::Acquire) == 0 {
                wait(&w, 0, Duration::from_secs(10));
            }
            start.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        word.store(1, Ordering::Release);
        wake_all(&word);
        let took = t.join().unwrap();
        assert!(took < Duration::from_secs(2), "woken after {took:?}");
    }
}
