//! Anonymous memory files (`memfd`) holding a pattern message, as a blob's memory is handed from
//! a producer to a consumer, and their check by the process that receives them (Linux).

use crate::pattern;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// Maps `len` bytes of `fd` shared, writable if `write`; panics on failure.
fn map(fd: BorrowedFd<'_>, len: usize, write: bool) -> *mut u8 {
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new shared mapping chosen by the kernel (null hint) overlaps nothing of ours;
    // the result is checked before use.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

/// A memfd named `name` of `len` bytes (at least `pattern::HEADER`) holding pattern message
/// `seq` of `producer`, every page written (so resident, counted in `Shmem:`).
pub fn filled(name: &str, len: usize, producer: u32, seq: u64) -> OwnedFd {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: cname is a live NUL-terminated string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just returned by memfd_create and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ftruncate takes no pointers.
    let r = unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) };
    assert_eq!(r, 0, "ftruncate: {}", std::io::Error::last_os_error());
    let p = map(fd.as_fd(), len, true);
    {
        // SAFETY: p maps `len` writable bytes of a memfd no other process has yet, and this
        // slice is the only reference to them until it ends.
        let bytes = unsafe { std::slice::from_raw_parts_mut(p, len) };
        pattern::write(producer, seq, bytes);
    }
    // SAFETY: p and len are the mapping made above, no longer referenced.
    unsafe { libc::munmap(p.cast(), len) };
    fd
}

/// Checks the pattern message in the memory behind `fd` (its whole size); returns
/// (producer, seq) or what is wrong with it.
pub fn check(fd: BorrowedFd<'_>) -> Result<(u32, u64), String> {
    let file = std::fs::File::from(fd.try_clone_to_owned().map_err(|e| e.to_string())?);
    let len = file.metadata().map_err(|e| e.to_string())?.len() as usize;
    if len == 0 {
        return Err("empty memory".into());
    }
    let p = map(fd, len, false);
    // SAFETY: p maps `len` readable bytes; they are only read through this slice, which ends
    // before the unmap.
    let result = pattern::check(unsafe { std::slice::from_raw_parts(p, len) });
    // SAFETY: p and len are the mapping made above, no longer referenced.
    unsafe { libc::munmap(p.cast(), len) };
    result
}
