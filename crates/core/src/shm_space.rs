//! The size and free space of the filesystem that holds shared memory (`/dev/shm` on Linux, a
//! tmpfs: 64 MB by default in a Docker container).

/// Where named shared memory lives on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// The shared-memory filesystem's size and free bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmSpace {
    /// Its size in bytes.
    pub total: u64,
    /// Bytes an unprivileged process may still reserve on it.
    pub free: u64,
}

/// The size and free space of [`SHM_DIR`] now (`statvfs`), on Linux; `None` elsewhere or if it
/// cannot be read.
pub fn shm_space() -> Option<ShmSpace> {
    #[cfg(target_os = "linux")]
    {
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: the path is a NUL-terminated C string and `st` is a valid out pointer that
        // statvfs fills completely when it returns 0.
        if unsafe { libc::statvfs(c"/dev/shm".as_ptr(), st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: statvfs returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        // The fields are narrower on some 32-bit targets.
        #[allow(clippy::unnecessary_cast)]
        let (blocks, available, unit) =
            (st.f_blocks as u64, st.f_bavail as u64, st.f_frsize as u64);
        Some(ShmSpace {
            total: blocks.saturating_mul(unit),
            free: available.saturating_mul(unit),
        })
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}
