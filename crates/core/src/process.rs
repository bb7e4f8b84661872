//! Process identity and liveness, robust against pid reuse where the OS allows.

/// A process as seen from shared memory: its pid and, where the OS exposes it, its start time,
/// so that a recycled pid is not mistaken for the original process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessIdentity {
    /// The process id.
    pub pid: u32,
    /// An OS-specific start stamp (Linux: clock ticks since boot); 0 where unknown.
    pub start: u64,
}

impl ProcessIdentity {
    /// The calling process.
    pub fn current() -> Self {
        let pid = std::process::id();
        Self {
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Whether the process is still running (a zombie counts as dead).
    pub fn is_alive(&self) -> bool {
        if self.pid == 0 {
            return false;
        }
        imp::is_alive(self.pid, self.start)
    }

    /// Whether the process is running and not on its way out: on Linux one the kernel has begun
    /// to tear down (`PF_EXITING`, set before it closes its files and before its children are
    /// sent their parent-death signal) counts as gone, as a zombie does. For judging who will
    /// still hold memory, where a process that is exiting never will.
    #[cfg(target_os = "linux")]
    pub(crate) fn is_staying(&self) -> bool {
        self.pid != 0 && imp::is_staying(self.pid, self.start)
    }
}

/// The start stamp of `pid`, where the OS exposes one.
pub fn start_time(pid: u32) -> Option<u64> {
    imp::start_time(pid)
}

/// An identifier of the PID namespace this process lives in (Linux: the inode of
/// `/proc/self/ns/pid`), or 0 where there is none or it cannot be read. Pids (and liveness
/// checks by pid) only mean something inside one namespace: two containers sharing `/dev/shm`
/// see each other's pids as unrelated or missing processes.
pub fn pid_namespace() -> u64 {
    #[cfg(target_os = "linux")]
    {
        // Not cached: a child forked into a new namespace inherits this process's memory.
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// [`pid_namespace`] of the calling process as 32 bits (namespace inodes are 32-bit numbers),
/// read once per process: the cache is keyed by pid, so a forked child reads its own.
pub(crate) fn own_pid_namespace() -> u32 {
    use std::sync::atomic::{AtomicU64, Ordering};
    /// The pid (high half) and namespace (low half) last read; 0 before the first read.
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    let seen = CACHED.load(Ordering::Relaxed);
    if seen != 0 && (seen >> 32) as u32 == pid {
        return seen as u32;
    }
    let ns = pid_namespace() as u32;
    CACHED.store((u64::from(pid) << 32) | u64::from(ns), Ordering::Relaxed);
    ns
}

#[cfg(target_os = "linux")]
mod imp {
    /// The kernel's flag of a process being torn down (`include/linux/sched.h`).
    pub const PF_EXITING: u32 = 0x4;

    /// Fields of `/proc/<pid>/stat` after the `(comm)` field: (state, flags, starttime).
    fn stat(pid: u32) -> Option<(u8, u32, u64)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // comm may contain spaces and parentheses: the fields resume after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.bytes().next()?;
        // flags is field 9 of the file, the 7th after comm; starttime field 22, the 20th.
        let flags = fields.nth(5)?.parse().ok()?;
        let start = fields.nth(12)?.parse().ok()?;
        Some((state, flags, start))
    }

    pub fn start_time(pid: u32) -> Option<u64> {
        stat(pid).map(|(_, _, start)| start)
    }

    pub fn is_alive(pid: u32, start: u64) -> bool {
        match stat(pid) {
            Some((state, _, now_start)) => {
                state != b'Z' && state != b'X' && (start == 0 || now_start == start)
            }
            None => false,
        }
    }

    pub fn is_staying(pid: u32, start: u64) -> bool {
        match stat(pid) {
            Some((state, flags, now_start)) => {
                state != b'Z'
                    && state != b'X'
                    && flags & PF_EXITING == 0
                    && (start == 0 || now_start == start)
            }
            None => false,
        }
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod imp {
    pub fn start_time(_pid: u32) -> Option<u64> {
        None
    }

    pub fn is_alive(pid: u32, _start: u64) -> bool {
        // SAFETY: kill with signal 0 only checks for existence and permission; it sends nothing.
        let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
}

#[cfg(windows)]
mod imp {
    pub fn start_time(_pid: u32) -> Option<u64> {
        None
    }

    pub fn is_alive(pid: u32, _start: u64) -> bool {
        use windows_sys::Win32::Foundation::{CloseHandle, STILL_ACTIVE};
        use windows_sys::Win32::System::Threading::{
            GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
        };
        // SAFETY: OpenProcess has no memory-safety preconditions; a null handle means no access.
        let handle = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
        if handle.is_null() {
            return false;
        }
        let mut code = 0u32;
        // SAFETY: `handle` is a valid process handle we own; `code` is a valid out pointer.
        let ok = unsafe { GetExitCodeProcess(handle, &mut code) } != 0;
        // SAFETY: `handle` was returned by OpenProcess and is closed exactly once.
        unsafe { CloseHandle(handle) };
        ok && code == STILL_ACTIVE as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_process_is_alive() {
        let me = ProcessIdentity::current();
        assert!(me.is_alive());
        if cfg!(target_os = "linux") {
            assert_ne!(me.start, 0);
            let recycled = ProcessIdentity {
                start: me.start + 1,
                ..me
            };
            assert!(
                !recycled.is_alive(),
                "a different start time must read as dead"
            );
        }
    }

    #[test]
    fn the_pid_namespace_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert_ne!(pid_namespace(), 0);
        }
        assert_eq!(pid_namespace(), pid_namespace());
    }

    #[test]
    fn reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcessIdentity {
            pid: child.id(),
            start: start_time(child.id()).unwrap_or(0),
        };
        child.wait().unwrap();
        assert!(!id.is_alive());
    }
}
