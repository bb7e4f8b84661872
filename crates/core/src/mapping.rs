//! The memory map behind a named segment, and the rule for whose segments may be mapped.
//!
//! Creation is exclusive and private: on Unix `shm_open(O_CREAT | O_EXCL)` with mode 0600.
//! Opening maps only a segment of our own: on Unix, after `shm_open`, `fstat` on that same
//! descriptor must show a regular file owned by our effective uid with no group or other
//! permission bits, and only then is that descriptor mapped. So a name squatted by another user
//! (with mode 0666, say) is refused with [`Error::Permission`] before a byte of it is read, and no
//! rename between the check and the map can slip another file in.
//!
//! Windows keeps the `shared_memory` crate: named mappings there carry no owner to check.

use crate::error::{Error, Result};
use crate::name::os_id;

#[cfg(target_os = "linux")]
pub(crate) use imp::names_same_file;
pub(crate) use imp::Mapping;

#[cfg(unix)]
mod imp {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

    /// A shared mapping of a whole segment, and the descriptor it was mapped from.
    pub(crate) struct Mapping {
        ptr: *mut u8,
        len: usize,
        fd: OwnedFd,
    }

    fn c_id(name: &str) -> CString {
        CString::new(os_id(name)).expect("validated names have no NUL")
    }

    fn errno() -> i32 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    }

    /// Maps `len` bytes of `fd` shared, read and write.
    fn map(fd: &OwnedFd, len: usize) -> std::result::Result<*mut u8, i32> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing; `fd` is open. The
        // mapping does not depend on the descriptor staying open.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            Err(errno())
        } else {
            Ok(ptr.cast())
        }
    }

    /// Who may map a segment found under our name: a regular file owned by `euid` with no
    /// group or other bits. macOS reports no file type for shared-memory objects, so there a
    /// type of 0 passes too (`shm_open` opens nothing else).
    pub(crate) fn is_ours(st: &libc::stat, euid: u32) -> bool {
        let kind = st.st_mode & libc::S_IFMT;
        let regular = kind == libc::S_IFREG || (cfg!(target_os = "macos") && kind == 0);
        regular && st.st_uid == euid && st.st_mode & 0o077 == 0
    }

    impl Mapping {
        /// Creates the segment `name` exclusively, with mode 0600, `len` bytes long, and maps it.
        /// The name is removed again if a later step fails.
        pub(crate) fn create(name: &str, len: usize) -> Result<Self> {
            let id = c_id(name);
            // SAFETY: `id` is a valid NUL-terminated string for the duration of the call.
            let raw = unsafe {
                libc::shm_open(
                    id.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_RDWR,
                    0o600 as libc::c_uint,
                )
            };
            if raw < 0 {
                return Err(match errno() {
                    libc::EEXIST => Error::AlreadyExists {
                        name: name.to_owned(),
                    },
                    libc::ENOSPC => Error::no_space(len as u64, 0),
                    code => Error::Os {
                        op: "create shared memory",
                        code,
                    },
                });
            }
            // SAFETY: `raw` is a descriptor shm_open just returned, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let made = (|| {
                // SAFETY: `fd` is open; ftruncate only sets the size of the fresh object.
                if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
                    return Err(match errno() {
                        libc::ENOSPC => Error::no_space(len as u64, 0),
                        code => Error::Os {
                            op: "ftruncate",
                            code,
                        },
                    });
                }
                map(&fd, len).map_err(|code| Error::Os {
                    op: "mmap shared memory",
                    code,
                })
            })();
            match made {
                Ok(ptr) => Ok(Self { ptr, len, fd }),
                Err(e) => {
                    // SAFETY: `id` is a valid C string; the name is the one we just created.
                    unsafe { libc::shm_unlink(id.as_ptr()) };
                    Err(e)
                }
            }
        }

        /// Opens the segment `name` and maps it whole, if it is ours (see the module's rule) and
        /// at least `min_len` bytes long (else [`BadSegmentReason::TooSmall`]).
        ///
        /// [`BadSegmentReason::TooSmall`]: crate::error::BadSegmentReason::TooSmall
        pub(crate) fn open(name: &str, min_len: usize) -> Result<Self> {
            Self::open_at_most(name, min_len, usize::MAX)
        }

        /// Like [`open`](Self::open), mapping at most the first `limit` bytes.
        pub(crate) fn open_at_most(name: &str, min_len: usize, limit: usize) -> Result<Self> {
            let id = c_id(name);
            // SAFETY: `id` is a valid NUL-terminated string for the duration of the call.
            let raw = unsafe { libc::shm_open(id.as_ptr(), libc::O_RDWR, 0) };
            if raw < 0 {
                return Err(match errno() {
                    libc::ENOENT => Error::NotFound {
                        name: name.to_owned(),
                    },
                    code => Error::Os {
                        op: "open shared memory",
                        code,
                    },
                });
            }
            // SAFETY: `raw` is a descriptor shm_open just returned, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: `fd` is open and `st` is a valid out pointer that fstat fills on success.
            if unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) } != 0 {
                return Err(Error::Os {
                    op: "fstat shared memory",
                    code: errno(),
                });
            }
            // SAFETY: fstat returned 0, so it initialised `st`.
            let st = unsafe { st.assume_init() };
            // SAFETY: geteuid has no preconditions.
            let euid = unsafe { libc::geteuid() };
            if !is_ours(&st, euid) {
                // `st_mode` is narrower than u32 on macOS.
                #[allow(clippy::unnecessary_cast)]
                return Err(Error::Permission {
                    name: name.to_owned(),
                    owner: st.st_uid,
                    mode: st.st_mode as u32,
                    euid,
                });
            }
            let size = usize::try_from(st.st_size).unwrap_or(0);
            if size < min_len {
                return Err(Error::BadSegment {
                    name: name.to_owned(),
                    reason: crate::error::BadSegmentReason::TooSmall,
                });
            }
            let len = size.min(limit);
            let ptr = map(&fd, len).map_err(|code| Error::Os {
                op: "mmap shared memory",
                code,
            })?;
            Ok(Self { ptr, len, fd })
        }

        /// Maps `len` bytes of `fd` (sealed memory this process holds), taking the descriptor.
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        pub(crate) fn from_fd(fd: OwnedFd, len: usize) -> Result<Self> {
            let ptr = map(&fd, len).map_err(|code| Error::Os {
                op: "mmap shared memory",
                code,
            })?;
            Ok(Self { ptr, len, fd })
        }

        /// The first byte of the mapping (page-aligned).
        pub(crate) fn as_ptr(&self) -> *mut u8 {
            self.ptr
        }

        /// The mapping's length in bytes.
        pub(crate) fn len(&self) -> usize {
            self.len
        }

        /// The descriptor the mapping was made from (for reserving its pages).
        #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
        pub(crate) fn fd(&self) -> RawFd {
            self.fd.as_raw_fd()
        }

        /// Whether dropping the mapping also frees the memory's name: on Unix never (the segment
        /// removes its name itself).
        pub(crate) fn set_owner(&mut self, _owner: bool) {}
    }

    fn fstat_id(fd: RawFd) -> Option<(u64, u64)> {
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: `fd` is open for the duration of the call and `st` is a valid out pointer.
        if unsafe { libc::fstat(fd, st.as_mut_ptr()) } != 0 {
            return None;
        }
        // SAFETY: fstat returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        // The fields' widths vary between targets.
        #[allow(clippy::unnecessary_cast)]
        Some((st.st_dev as u64, st.st_ino as u64))
    }

    /// Whether the name `name` stands for the very file `map` was mapped from now (so that
    /// removing the name removes that file's name, not a newer segment's of the same name).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn names_same_file(name: &str, map: &Mapping) -> bool {
        let id = c_id(name);
        // SAFETY: `id` is a valid NUL-terminated string for the duration of the call.
        let raw = unsafe { libc::shm_open(id.as_ptr(), libc::O_RDONLY, 0) };
        if raw < 0 {
            return false;
        }
        // SAFETY: `raw` is a descriptor shm_open just returned, owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let now = fstat_id(fd.as_raw_fd());
        now.is_some() && now == fstat_id(map.fd.as_raw_fd())
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: `ptr`/`len` are exactly what mmap returned and nothing of ours uses them
            // after the mapping drops (segments hand out no references that outlive them).
            unsafe { libc::munmap(self.ptr.cast(), self.len) };
        }
    }
}

#[cfg(not(unix))]
mod imp {
    use super::*;
    use crate::name::os_id;
    use shared_memory::{Shmem, ShmemConf, ShmemError};

    /// A mapping made by the `shared_memory` crate.
    pub(crate) struct Mapping {
        shmem: Shmem,
    }

    fn map_create_error(err: ShmemError, name: &str, requested: u64) -> Error {
        match err {
            ShmemError::MappingIdExists => Error::AlreadyExists {
                name: name.to_owned(),
            },
            ShmemError::MapCreateFailed(112) => Error::no_space(requested, 0), // ERROR_DISK_FULL
            ShmemError::MapCreateFailed(code) | ShmemError::UnknownOsError(code) => Error::Os {
                op: "create shared memory",
                code: code as i32,
            },
            _ => Error::Os {
                op: "create shared memory",
                code: 0,
            },
        }
    }

    impl Mapping {
        /// Creates the mapping `name`, `len` bytes long.
        pub(crate) fn create(name: &str, len: usize) -> Result<Self> {
            let shmem = ShmemConf::new()
                .size(len)
                .os_id(os_id(name))
                .create()
                .map_err(|e| map_create_error(e, name, len as u64))?;
            Ok(Self { shmem })
        }

        /// Opens the mapping `name` whole (its length is checked by the caller, against the view
        /// Windows maps).
        pub(crate) fn open(name: &str, _min_len: usize) -> Result<Self> {
            let shmem = ShmemConf::new()
                .os_id(os_id(name))
                .open()
                .map_err(|e| match e {
                    ShmemError::MapOpenFailed(2) => Error::NotFound {
                        name: name.to_owned(),
                    }, // ERROR_FILE_NOT_FOUND
                    ShmemError::MapOpenFailed(code) | ShmemError::UnknownOsError(code) => {
                        Error::Os {
                            op: "open shared memory",
                            code: code as i32,
                        }
                    }
                    _ => Error::Os {
                        op: "open shared memory",
                        code: 0,
                    },
                })?;
            Ok(Self { shmem })
        }

        /// Like [`open`](Self::open) (Windows maps the whole view).
        pub(crate) fn open_at_most(name: &str, min_len: usize, _limit: usize) -> Result<Self> {
            Self::open(name, min_len)
        }

        /// The first byte of the mapping.
        pub(crate) fn as_ptr(&self) -> *mut u8 {
            self.shmem.as_ptr()
        }

        /// The mapping's length in bytes.
        pub(crate) fn len(&self) -> usize {
            self.shmem.len()
        }

        /// Whether the crate treats this handle as the mapping's owner.
        pub(crate) fn set_owner(&mut self, owner: bool) {
            self.shmem.set_owner(owner);
        }
    }
}

/// Removes a name at the OS level (and from this process's signal cleanup, once it is gone).
pub(crate) fn unlink(name: &str) -> Result<()> {
    crate::registry::remove(name);
    #[cfg(unix)]
    {
        let id = std::ffi::CString::new(os_id(name)).expect("validated names have no NUL");
        // SAFETY: `id` is a valid NUL-terminated string for the duration of the call.
        let failed = unsafe { libc::shm_unlink(id.as_ptr()) } != 0;
        let code = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
        if !failed || code == libc::ENOENT {
            crate::signals::untrack(name);
        }
        if failed {
            return Err(if code == libc::ENOENT {
                Error::NotFound {
                    name: name.to_owned(),
                }
            } else {
                Error::Os {
                    op: "shm_unlink",
                    code,
                }
            });
        }
        Ok(())
    }
    #[cfg(not(unix))]
    {
        // Windows removes a mapping when its last handle closes: opening it as owner and
        // dropping it is all `shared_memory` offers.
        let mut shmem = shared_memory::ShmemConf::new()
            .os_id(os_id(name))
            .open()
            .map_err(|_| Error::NotFound {
                name: name.to_owned(),
            })?;
        shmem.set_owner(true);
        Ok(())
    }
}
