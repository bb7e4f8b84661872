//! Presence marks: a sign that a registered process is alive which means the same in every PID
//! namespace.
//!
//! A pid only names a process inside one PID namespace. Two containers that share `/dev/shm`
//! (`--ipc=host`) but not their PID namespace see each other's pids as missing or as unrelated
//! processes, so judging a peer there by its pid would declare a live peer dead, or a dead one
//! alive. A presence mark does not depend on pids:
//!
//! - A process registering in a shared segment (a queue's consumer or one of its producers)
//!   opens the segment's file once more and holds an exclusive open-file-description lock
//!   (`F_OFD_SETLK`) on one byte far past the file's end: one byte per registration slot.
//! - The kernel drops the lock when that open file is closed, and a dying process's files are
//!   closed before it becomes a zombie, however it dies (SIGKILL included). So the lock lasts
//!   exactly as long as the registration's process, unless the registration ends first.
//! - Any process that maps the segment tests the byte (`F_OFD_GETLK`) from its own descriptor.
//!   Locks are kept per file, not per namespace, so the answer is the same everywhere.
//! - Taking the mark before claiming the slot makes a held byte proof that the slot's owner is
//!   alive: a second process cannot take it (it is told [`Taken::HeldElsewhere`]).
//!
//! The descriptor is close-on-exec. A process that forks without exec passes the open file to
//! its child, which then keeps the mark (the registration looks alive) until it exits too.
//!
//! Linux only. Elsewhere no mark is taken ([`Taken::Unavailable`]) and
//! peers are judged by pid alone (macOS and Windows have no PID namespaces).

/// The byte of registration slot 0: far past any segment's end, so that no mark covers data
/// (a lock there would not stop anyone mapping it anyway: these locks are advisory).
#[cfg(target_os = "linux")]
const FIRST_MARK_BYTE: u64 = 1 << 56;

/// What [`take`] found.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub(crate) enum Taken {
    /// The mark, held until dropped.
    Mark(PresenceMark),
    /// A live process holds this slot's mark: the slot is not free, whatever its state says.
    HeldElsewhere,
    /// Marks cannot be taken here (no `/proc`, not Linux): register without one.
    Unavailable,
}

/// A held presence mark; dropping it releases the mark.
pub(crate) struct PresenceMark {
    #[cfg(target_os = "linux")]
    _file: std::os::fd::OwnedFd,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{PresenceMark, Taken, FIRST_MARK_BYTE};
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    /// A lock description of `slot`'s byte.
    fn byte_of(slot: u32, kind: libc::c_int) -> libc::flock {
        // SAFETY: `flock` is plain data for which all-zero bytes are valid.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = (FIRST_MARK_BYTE + u64::from(slot)) as libc::off_t;
        lock.l_len = 1;
        lock
    }

    pub(crate) fn take(segment: BorrowedFd<'_>, slot: u32) -> Taken {
        // A second open file of the same segment: its lock belongs to it alone, so registrations
        // of one process (or one mapping) never share or release each other's marks.
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", segment.as_raw_fd()))
            .expect("digits only");
        // SAFETY: `path` is a NUL-terminated string; open has no other memory preconditions.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            return Taken::Unavailable;
        }
        // SAFETY: `raw` was just returned by open and is owned by nobody else.
        let file = unsafe { OwnedFd::from_raw_fd(raw) };
        let lock = byte_of(slot, libc::F_WRLCK);
        // SAFETY: `file` is open and `lock` is a valid flock for the call's duration.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &lock) } == 0 {
            return Taken::Mark(PresenceMark { _file: file });
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Taken::HeldElsewhere,
            _ => Taken::Unavailable,
        }
    }

    pub(crate) fn is_held(segment: BorrowedFd<'_>, slot: u32) -> Option<bool> {
        let mut probe = byte_of(slot, libc::F_WRLCK);
        // SAFETY: `segment` is open and `probe` is a valid flock the kernel fills in.
        if unsafe { libc::fcntl(segment.as_raw_fd(), libc::F_OFD_GETLK, &mut probe) } != 0 {
            return None;
        }
        Some(probe.l_type != libc::F_UNLCK as libc::c_short)
    }
}

/// Takes the presence mark of registration `slot` in the segment open as `segment`.
#[cfg(target_os = "linux")]
pub(crate) fn take(segment: std::os::fd::BorrowedFd<'_>, slot: u32) -> Taken {
    imp::take(segment, slot)
}

/// Whether some open file other than `segment`'s holds the mark of `slot`; `None` if that cannot
/// be told. Tested from the segment's own descriptor, whose marks (none: marks have files of
/// their own) would not count.
#[cfg(target_os = "linux")]
pub(crate) fn is_held(segment: std::os::fd::BorrowedFd<'_>, slot: u32) -> Option<bool> {
    imp::is_held(segment, slot)
}

#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests {
    use super::*;
    use std::os::fd::{AsFd, OwnedFd};

    fn scratch_file() -> OwnedFd {
        let f = tempfile_in_dev_shm();
        OwnedFd::from(f)
    }

    fn tempfile_in_dev_shm() -> std::fs::File {
        let path = format!(
            "/dev/shm/shmpipe-presence-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        );
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn a_mark_is_seen_while_held_and_gone_when_dropped() {
        let file = scratch_file();
        assert_eq!(is_held(file.as_fd(), 3), Some(false));
        let Taken::Mark(mark) = take(file.as_fd(), 3) else {
            panic!("the mark of a free slot is taken");
        };
        assert_eq!(is_held(file.as_fd(), 3), Some(true));
        assert_eq!(is_held(file.as_fd(), 4), Some(false), "one byte per slot");
        assert!(
            matches!(take(file.as_fd(), 3), Taken::HeldElsewhere),
            "a held slot cannot be taken twice, even by its own process"
        );
        drop(mark);
        assert_eq!(is_held(file.as_fd(), 3), Some(false));
        assert!(matches!(take(file.as_fd(), 3), Taken::Mark(_)));
    }

    #[test]
    fn a_mark_goes_with_its_process() {
        use std::os::fd::AsRawFd;
        let file = scratch_file();
        // Everything the child needs is made before the fork: after it, the child only calls
        // async-signal-safe functions (another test thread may hold the allocator's lock).
        let path = std::ffi::CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap();
        // SAFETY: all-zero bytes are a valid flock.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        lock.l_start = FIRST_MARK_BYTE as libc::off_t;
        lock.l_len = 1;
        // SAFETY: the child calls only open, fcntl, pause and _exit on data made before the
        // fork, and never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: see above; a file of its own, so that its lock is the child's alone.
            unsafe {
                let own = libc::open(path.as_ptr(), libc::O_RDWR);
                if own < 0 || libc::fcntl(own, libc::F_OFD_SETLK, &lock) != 0 {
                    libc::_exit(3);
                }
                libc::pause();
                libc::_exit(0);
            }
        }
        let began = std::time::Instant::now();
        while is_held(file.as_fd(), 0) != Some(true) {
            assert!(began.elapsed().as_secs() < 10, "the child took the mark");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(matches!(take(file.as_fd(), 0), Taken::HeldElsewhere));
        // SAFETY: `pid` is our child; kill and waitpid have no memory preconditions.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert_eq!(
            is_held(file.as_fd(), 0),
            Some(false),
            "the kernel dropped the mark"
        );
        assert!(matches!(take(file.as_fd(), 0), Taken::Mark(_)));
    }
}
