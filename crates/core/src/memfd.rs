//! Sealed anonymous shared memory (Linux): memory that belongs to no filesystem and cannot be
//! resized.
//!
//! [`create_sealed`] makes it with `memfd_create`, reserves every page with `posix_fallocate`
//! (so running out of memory is an error now, not a SIGBUS on first write), and seals it with
//! `F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`: from then on nobody, not even its creator, can
//! change its size, so a mapping of it can never lose its pages. The memory lives exactly as
//! long as some process holds a descriptor or a mapping of it, and is not counted against the
//! size of `/dev/shm`.
//!
//! Another process reaches it by opening `/proc/<holder>/fd/<n>` ([`open_held`]), which the
//! kernel allows to processes that may inspect the holder (the same user, or root). What it
//! opened is checked before use: the identity (device and inode) the caller expects, our
//! effective uid as owner, and all three seals, so a descriptor number reused meanwhile for
//! something else, or memory that could still be resized, is refused.

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The seals every shmpipe memfd carries.
pub(crate) const SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// Device and inode: what identifies one memfd among all open files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileId {
    pub dev: u64,
    pub ino: u64,
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn fstat(fd: &OwnedFd) -> Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open and `st` is a valid out pointer that fstat fills on success.
    if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
        return Err(Error::Os {
            op: "fstat memfd",
            code: errno(),
        });
    }
    // SAFETY: fstat returned 0, so it initialised `st`.
    Ok(unsafe { st.assume_init() })
}

/// The identity and size of the open file `fd`.
pub(crate) fn identify(fd: &OwnedFd) -> Result<(FileId, u64)> {
    let st = fstat(fd)?;
    // The fields' widths vary between targets.
    #[allow(clippy::unnecessary_cast)]
    Ok((
        FileId {
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
        },
        st.st_size as u64,
    ))
}

/// Makes `len` bytes of sealed anonymous shared memory, every page reserved. `label` shows in
/// `/proc/<pid>/fd` and `/proc/<pid>/maps` as `memfd:<label>`, for people reading them.
///
/// Fails with [`Error::NoSpace`] when the reservation does not fit: checked against the memory
/// limits first ([`crate::memory_limit`]): past a cgroup's limit the kernel does not fail the
/// reservation but OOM-kills a process, so the check is what turns that into an error.
pub(crate) fn create_sealed(label: &str, len: u64) -> Result<OwnedFd> {
    let label = std::ffi::CString::new(label).map_err(|_| Error::InvalidArgument {
        name: "name",
        expected: "a name without NUL bytes",
    })?;
    let off_len = libc::off_t::try_from(len).map_err(|_| Error::TooLarge {
        requested: len,
        limit: libc::off_t::MAX as u64,
    })?;
    crate::memory_limit::check_headroom(len)?;
    // SAFETY: `label` is a valid NUL-terminated string for the duration of the call.
    let raw =
        unsafe { libc::memfd_create(label.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if raw < 0 {
        return Err(Error::Os {
            op: "memfd_create",
            code: errno(),
        });
    }
    // SAFETY: `raw` is a descriptor memfd_create just returned, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `fd` is an open memfd of ours; ftruncate only sets its size.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), off_len) } != 0 {
        return Err(match errno() {
            libc::ENOSPC | libc::ENOMEM | libc::EFBIG => no_memory(len),
            code => Error::Os {
                op: "ftruncate memfd",
                code,
            },
        });
    }
    if len > 0 {
        // SAFETY: `fd` is an open memfd of ours; posix_fallocate only reserves its pages.
        let rc = unsafe { libc::posix_fallocate(fd.as_raw_fd(), 0, off_len) };
        match rc {
            0 => {}
            libc::ENOSPC | libc::ENOMEM | libc::EFBIG => return Err(no_memory(len)),
            code => {
                return Err(Error::Os {
                    op: "posix_fallocate memfd",
                    code,
                })
            }
        }
    }
    // SAFETY: `fd` is an open memfd created with MFD_ALLOW_SEALING; F_ADD_SEALS takes an int.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } != 0 {
        return Err(Error::Os {
            op: "seal memfd",
            code: errno(),
        });
    }
    Ok(fd)
}

fn no_memory(len: u64) -> Error {
    crate::memory_limit::refused(len)
}

/// The size of the memfd `fd` if it is ours (owned by our effective uid, a regular file) and
/// carries all of [`SEALS`]: what a descriptor received from another process must show.
pub(crate) fn verify(fd: &OwnedFd) -> Option<u64> {
    let st = fstat(fd).ok()?;
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    // SAFETY: `fd` is open; F_GET_SEALS takes no argument and only reads.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    let ok = st.st_uid == euid
        && st.st_mode & libc::S_IFMT == libc::S_IFREG
        && seals >= 0
        && seals & SEALS == SEALS;
    // The field's width varies between targets.
    #[allow(clippy::unnecessary_cast)]
    ok.then_some(st.st_size as u64)
}

/// Why [`open_held`] refused or failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenHeldError {
    /// Nothing to open there (the holder exited or closed it, `/proc` hides it, or the process
    /// is in another PID namespace): try another holder.
    Gone,
    /// Something is there, but not the memory asked for (another file, not ours, not sealed).
    NotIt,
    /// The kernel refused: we may not inspect the holder (another user, a non-dumpable process).
    Denied,
}

/// Opens the memfd that process `pid` holds as descriptor `fd`, read and write, if it is the
/// file `expected`, owned by our effective uid and carrying all of [`SEALS`]. Returns it with
/// its size.
pub(crate) fn open_held(
    pid: u32,
    fd: u32,
    expected: FileId,
) -> std::result::Result<(OwnedFd, u64), OpenHeldError> {
    let path = std::ffi::CString::new(format!("/proc/{pid}/fd/{fd}")).expect("digits only");
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(match errno() {
            libc::EACCES | libc::EPERM => OpenHeldError::Denied,
            libc::ENXIO | libc::EISDIR | libc::ELOOP | libc::ENOTDIR => OpenHeldError::NotIt,
            _ => OpenHeldError::Gone,
        });
    }
    // SAFETY: `raw` is a descriptor open just returned, owned by nobody else.
    let opened = unsafe { OwnedFd::from_raw_fd(raw) };
    let (id, _) = identify(&opened).map_err(|_| OpenHeldError::NotIt)?;
    if id != expected {
        return Err(OpenHeldError::NotIt);
    }
    let size = verify(&opened).ok_or(OpenHeldError::NotIt)?;
    Ok((opened, size))
}

/// Opens, read and write, the memfd named `name` (as given to [`create_sealed`]) that process
/// `pid` holds open, found among its descriptors in `/proc/<pid>/fd`, if it is owned by our
/// effective uid and carries all of [`SEALS`]. Returns it with its size; `None` if `pid` holds
/// no such memory (or `/proc` does not show it).
///
/// The link of a memfd reads `/memfd:NAME (deleted)`. The descriptor found may be closed and its
/// number reused between the look and the open: what was opened is checked ([`verify`]), and
/// the caller checks the segment in it.
pub(crate) fn open_by_name(pid: u32, name: &str) -> Option<(OwnedFd, u64)> {
    let target = format!("/memfd:{name} (deleted)");
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for entry in dir.flatten() {
        let Ok(link) = std::fs::read_link(entry.path()) else {
            continue;
        };
        if link.as_os_str().as_encoded_bytes() != target.as_bytes() {
            continue;
        }
        let Ok(path) = std::ffi::CString::new(entry.path().as_os_str().as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
        let raw = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if raw < 0 {
            continue;
        }
        // SAFETY: `raw` is a descriptor open just returned, owned by nobody else.
        let opened = unsafe { OwnedFd::from_raw_fd(raw) };
        if let Some(size) = verify(&opened) {
            return Some((opened, size));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_memory_is_found_by_name_among_a_processs_descriptors() {
        let fd = create_sealed("shmpipe:test-open-by-name", 1 << 16).unwrap();
        let me = std::process::id();
        let (found, size) = open_by_name(me, "shmpipe:test-open-by-name").expect("found");
        assert_eq!(size, 1 << 16);
        assert_eq!(identify(&found).unwrap().0, identify(&fd).unwrap().0);
        assert!(open_by_name(me, "shmpipe:test-open-by-nam").is_none());
        drop(fd);
        drop(found);
        assert!(open_by_name(me, "shmpipe:test-open-by-name").is_none());
    }

    #[test]
    fn sealed_memory_cannot_be_resized_and_reopens_through_proc() {
        let fd = create_sealed("shmpipe-test", 1 << 20).unwrap();
        let (id, size) = identify(&fd).unwrap();
        assert_eq!(size, 1 << 20);
        for new_len in [0, 4096, 2 << 20] {
            // SAFETY: `fd` is open; a refused ftruncate changes nothing.
            let rc = unsafe { libc::ftruncate(fd.as_raw_fd(), new_len) };
            assert_eq!((rc, errno()), (-1, libc::EPERM), "ftruncate to {new_len}");
        }
        let (again, size) = open_held(std::process::id(), fd.as_raw_fd() as u32, id).unwrap();
        assert_eq!(size, 1 << 20);
        assert_eq!(identify(&again).unwrap().0, id);
    }

    #[test]
    fn another_file_under_the_number_is_refused() {
        let fd = create_sealed("shmpipe-test", 4096).unwrap();
        let other = create_sealed("shmpipe-test", 4096).unwrap();
        let (id, _) = identify(&fd).unwrap();
        let err = open_held(std::process::id(), other.as_raw_fd() as u32, id).unwrap_err();
        assert_eq!(err, OpenHeldError::NotIt);
        let err = open_held(std::process::id(), 1 << 30, id).unwrap_err();
        assert_eq!(err, OpenHeldError::Gone);
    }

    #[test]
    fn unsealed_memory_is_refused() {
        // SAFETY: a valid C string literal.
        let raw = unsafe { libc::memfd_create(c"plain".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a descriptor just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let (id, _) = identify(&fd).unwrap();
        let err = open_held(std::process::id(), fd.as_raw_fd() as u32, id).unwrap_err();
        assert_eq!(err, OpenHeldError::NotIt);
    }
}
