//! Named shared-memory segments with a validated header, built on the `shared_memory` crate.
//!
//! Layout: a 128-byte [`SegmentHeader`] at offset 0 (so the body is aligned for line-padded
//! structures), then the kind-specific body. The creator fills the header and publishes `ready`
//! last with Release ordering, so an opener never sees a half-built segment. Creation is exclusive and, on Unix, mode 0600 (both by `shared_memory`).
//!
//! While this process owns a segment (it created it and has not handed it over), its name is in
//! the table the SIGINT/SIGTERM cleanup reads ([`crate::signals`]).

use crate::error::{BadSegmentReason, Error, Result};
use crate::name::{os_id, random_name, validate_name};
use crate::process::ProcessIdentity;
use shared_memory::{Shmem, ShmemConf, ShmemError};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// `b"SHMPIPE\0"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPIPE\0");

/// Size of [`SegmentHeader`] in bytes; the body starts at this offset.
pub const SEGMENT_HEADER_SIZE: usize = 128;

/// What a segment's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// A message queue ([`crate::Queue`]).
    Queue = 1,
    /// One large message that did not fit a queue's data area.
    Blob = 2,
    /// A named shared array.
    Array = 3,
}

impl SegmentKind {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Queue),
            2 => Some(Self::Blob),
            3 => Some(Self::Array),
            _ => None,
        }
    }
}

/// The header every shmpipe segment starts with.
#[repr(C)]
pub struct SegmentHeader {
    magic: AtomicU64,
    layout_version: AtomicU32,
    kind: AtomicU32,
    /// The body size the creator asked for (Windows may round the mapping up).
    body_size: AtomicU64,
    creator_pid: AtomicU32,
    ready: AtomicU32,
    creator_start: AtomicU64,
    /// The creator's PID namespace ([`crate::process::pid_namespace`]; 0: not recorded). Added
    /// in a formerly reserved (zero) word, so older segments of the same layout read as "unknown".
    creator_pid_ns: AtomicU64,
    /// A word the body's kind may use: a blob's reuse state ([`crate::blob`]).
    kind_word: AtomicU64,
    _reserved: [AtomicU64; 9],
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_SIZE);

impl SegmentHeader {
    /// The creator process recorded in the header.
    pub fn creator(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.creator_pid.load(Ordering::Relaxed),
            start: self.creator_start.load(Ordering::Relaxed),
        }
    }

    /// The body size the creator asked for.
    pub fn body_size(&self) -> u64 {
        self.body_size.load(Ordering::Relaxed)
    }

    /// The creator's PID namespace ([`crate::pid_namespace`]), 0 if not recorded.
    pub fn creator_pid_namespace(&self) -> u64 {
        self.creator_pid_ns.load(Ordering::Relaxed)
    }

    /// The word the body's kind may use (a blob's reuse state); 0 in a new segment.
    pub(crate) fn kind_word(&self) -> &AtomicU64 {
        &self.kind_word
    }
}

#[cfg(all(test, target_os = "linux"))]
impl SegmentHeader {
    /// Rewrites the header through `change` (tests of code that judges headers).
    pub(crate) fn forge(&self, change: impl FnOnce(&mut HeaderFields)) {
        let mut f = HeaderFields {
            magic: self.magic.load(Ordering::Relaxed),
            layout_version: self.layout_version.load(Ordering::Relaxed),
            kind: self.kind.load(Ordering::Relaxed),
            body_size: self.body_size(),
            creator: self.creator(),
            creator_pid_ns: self.creator_pid_ns.load(Ordering::Relaxed),
            ready: self.ready.load(Ordering::Relaxed) == 1,
        };
        change(&mut f);
        self.magic.store(f.magic, Ordering::Relaxed);
        self.layout_version
            .store(f.layout_version, Ordering::Relaxed);
        self.kind.store(f.kind, Ordering::Relaxed);
        self.body_size.store(f.body_size, Ordering::Relaxed);
        self.creator_pid.store(f.creator.pid, Ordering::Relaxed);
        self.creator_start.store(f.creator.start, Ordering::Relaxed);
        self.creator_pid_ns
            .store(f.creator_pid_ns, Ordering::Relaxed);
        self.ready.store(f.ready as u32, Ordering::Release);
    }
}

/// The header's fields decoded from a copy of a segment's first bytes: how the inventory reads
/// segments it does not map. Any bit pattern decodes; judging it is the caller's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderFields {
    pub magic: u64,
    pub layout_version: u32,
    pub kind: u32,
    pub body_size: u64,
    pub creator: ProcessIdentity,
    pub creator_pid_ns: u64,
    pub ready: bool,
}

// Windows lists no segments (see `inventory`), so nothing decodes headers there.
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
impl HeaderFields {
    /// Decodes `bytes` (native byte order, as the creator's atomics wrote them).
    pub fn decode(bytes: &[u8; SEGMENT_HEADER_SIZE]) -> Self {
        use std::mem::offset_of;
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        Self {
            magic: u64_at(offset_of!(SegmentHeader, magic)),
            layout_version: u32_at(offset_of!(SegmentHeader, layout_version)),
            kind: u32_at(offset_of!(SegmentHeader, kind)),
            body_size: u64_at(offset_of!(SegmentHeader, body_size)),
            creator: ProcessIdentity {
                pid: u32_at(offset_of!(SegmentHeader, creator_pid)),
                start: u64_at(offset_of!(SegmentHeader, creator_start)),
            },
            creator_pid_ns: u64_at(offset_of!(SegmentHeader, creator_pid_ns)),
            ready: u32_at(offset_of!(SegmentHeader, ready)) == 1,
        }
    }
}

/// A mapped shared-memory segment. The creator owns it: dropping the creator's handle removes
/// the name (other processes' mappings stay valid until they drop theirs).
pub struct Segment {
    shmem: Shmem,
    name: String,
    kind: SegmentKind,
    /// The body size, as created or as checked against the mapping at open: never re-read from
    /// the shared header, which another process may rewrite.
    body_len: usize,
}

// SAFETY: `Shmem` is only `!Send` because it holds a raw pointer to the mapping. The mapping is
// process-wide and stays valid until the `Shmem` is dropped, wherever that happens; all shared
// state in it is accessed through atomics.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only exposes the base pointer and immutable metadata.
unsafe impl Sync for Segment {}

fn map_create_error(err: ShmemError, name: &str, requested: u64) -> Error {
    match err {
        ShmemError::MappingIdExists => Error::AlreadyExists {
            name: name.to_owned(),
        },
        ShmemError::MapCreateFailed(code) if code as i32 == libc_enospc() => {
            Error::NoSpace { requested }
        }
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

fn libc_enospc() -> i32 {
    #[cfg(unix)]
    {
        libc::ENOSPC
    }
    #[cfg(not(unix))]
    {
        112 // ERROR_DISK_FULL
    }
}

impl Segment {
    /// Creates a segment under a fresh random name with a body of `body_size` bytes.
    pub fn create(kind: SegmentKind, body_size: u64) -> Result<Self> {
        loop {
            match Self::create_named(&random_name(), kind, body_size) {
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Creates a segment named `name`; fails with [`Error::AlreadyExists`] if the name is taken.
    /// Call [`publish_ready`](Self::publish_ready) once the body is initialised.
    pub fn create_named(name: &str, kind: SegmentKind, body_size: u64) -> Result<Self> {
        validate_name(name)?;
        let total = body_size
            .checked_add(SEGMENT_HEADER_SIZE as u64)
            .filter(|&t| t <= isize::MAX as u64 && usize::try_from(t).is_ok())
            .ok_or(Error::TooLarge {
                requested: body_size,
                limit: (isize::MAX as u64).saturating_sub(SEGMENT_HEADER_SIZE as u64),
            })?;
        let shmem = ShmemConf::new()
            .size(total as usize)
            .os_id(os_id(name))
            .create()
            .map_err(|e| map_create_error(e, name, total))?;
        let seg = Self {
            shmem,
            name: name.to_owned(),
            kind,
            body_len: body_size as usize,
        };
        // From here on, dropping `seg` on an error path removes the name again (we own it).
        crate::signals::track(name);
        crate::registry::add(name);
        reserve_pages(name, total)?;
        let me = ProcessIdentity::current();
        let h = seg.header();
        h.magic.store(MAGIC, Ordering::Relaxed);
        h.layout_version
            .store(crate::LAYOUT_VERSION, Ordering::Relaxed);
        h.kind.store(kind as u32, Ordering::Relaxed);
        h.body_size.store(body_size, Ordering::Relaxed);
        h.creator_pid.store(me.pid, Ordering::Relaxed);
        h.creator_start.store(me.start, Ordering::Relaxed);
        h.creator_pid_ns
            .store(crate::process::pid_namespace(), Ordering::Relaxed);
        Ok(seg)
    }

    /// Publishes the ready flag: call once the body is initialised.
    pub fn publish_ready(&self) {
        self.header().ready.store(1, Ordering::Release);
    }

    /// Opens an existing segment and validates its header against `kind`.
    ///
    /// A segment whose ready flag is not yet set is waited for up to `ready_timeout`.
    pub fn open(name: &str, kind: SegmentKind, ready_timeout: Duration) -> Result<Self> {
        validate_name(name)?;
        let shmem = ShmemConf::new()
            .os_id(os_id(name))
            .open()
            .map_err(|e| match e {
                ShmemError::MapOpenFailed(code) if is_not_found(code) => Error::NotFound {
                    name: name.to_owned(),
                },
                ShmemError::MapOpenFailed(code) | ShmemError::UnknownOsError(code) => Error::Os {
                    op: "open shared memory",
                    code: code as i32,
                },
                _ => Error::Os {
                    op: "open shared memory",
                    code: 0,
                },
            })?;
        let mut seg = Self {
            shmem,
            name: name.to_owned(),
            kind,
            body_len: 0,
        };
        seg.body_len = seg.validate(ready_timeout)?;
        Ok(seg)
    }

    fn bad(&self, reason: BadSegmentReason) -> Error {
        Error::BadSegment {
            name: self.name.clone(),
            reason,
        }
    }

    /// Checks the header; returns the body size, which fits the mapping.
    fn validate(&self, ready_timeout: Duration) -> Result<usize> {
        if self.shmem.len() < SEGMENT_HEADER_SIZE {
            return Err(self.bad(BadSegmentReason::TooSmall));
        }
        let h = self.header();
        let deadline = Instant::now() + ready_timeout;
        while h.ready.load(Ordering::Acquire) != 1 {
            if Instant::now() >= deadline {
                return Err(self.bad(BadSegmentReason::NotReady));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        if h.magic.load(Ordering::Relaxed) != MAGIC {
            return Err(self.bad(BadSegmentReason::BadMagic));
        }
        if h.layout_version.load(Ordering::Relaxed) != crate::LAYOUT_VERSION {
            return Err(self.bad(BadSegmentReason::IncompatibleVersion));
        }
        if SegmentKind::from_u32(h.kind.load(Ordering::Relaxed)) != Some(self.kind) {
            return Err(self.bad(BadSegmentReason::WrongKind));
        }
        let body = h.body_size();
        if body > (self.shmem.len() - SEGMENT_HEADER_SIZE) as u64 {
            return Err(self.bad(BadSegmentReason::TooSmall));
        }
        Ok(body as usize)
    }

    /// Removes the name `name` so that no new process can open it; existing mappings stay valid.
    pub fn remove(name: &str) -> Result<()> {
        validate_name(name)?;
        unlink(name)
    }

    /// Stops removing the name when this handle drops (ownership passes to another process).
    pub fn disown(&mut self) {
        if self.shmem.is_owner() {
            crate::signals::hand_over(&self.name);
        }
        self.shmem.set_owner(false);
    }

    /// Stops removing the name when this handle drops, yet leaves it to the signal cleanup
    /// ([`crate::signals`]) until [`unlink`] removes it: for a blob whose receiver is in this
    /// process, and dies with it.
    pub(crate) fn disown_to_this_process(&mut self) {
        self.shmem.set_owner(false);
    }

    /// Makes this handle remove the name when it drops.
    pub fn adopt(&mut self) {
        if !self.shmem.is_owner() {
            crate::signals::track(&self.name);
        }
        self.shmem.set_owner(true);
    }

    /// Whether dropping this handle removes the name.
    pub fn is_owner(&self) -> bool {
        self.shmem.is_owner()
    }

    /// The segment's name (without the OS prefix).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The segment's header.
    pub fn header(&self) -> &SegmentHeader {
        // SAFETY: the mapping is at least SEGMENT_HEADER_SIZE bytes (checked on open, and by
        // construction on create), page-aligned, and lives as long as `self`; the header is all
        // atomics, valid for any bit pattern.
        unsafe { &*(self.shmem.as_ptr() as *const SegmentHeader) }
    }

    /// Pointer to the body (just after the header). Valid for [`body_len`](Self::body_len) bytes
    /// while `self` lives.
    pub fn body_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is at least SEGMENT_HEADER_SIZE bytes long.
        unsafe { self.shmem.as_ptr().add(SEGMENT_HEADER_SIZE) }
    }

    /// The body length as created (not the page-rounded mapping length), as checked against
    /// the mapping when opened.
    pub fn body_len(&self) -> usize {
        self.body_len
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.shmem.is_owner() {
            // On Unix the owner unlinks the name itself (`Shmem` then only unmaps), so the name
            // leaves the signal handler's table only once it is gone.
            #[cfg(unix)]
            {
                let _ = unlink(&self.name);
                self.shmem.set_owner(false);
            }
            crate::signals::untrack(&self.name);
        }
    }
}

fn is_not_found(code: u32) -> bool {
    #[cfg(unix)]
    {
        code as i32 == libc::ENOENT
    }
    #[cfg(not(unix))]
    {
        code == 2 // ERROR_FILE_NOT_FOUND
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
        let mut shmem =
            ShmemConf::new()
                .os_id(os_id(name))
                .open()
                .map_err(|_| Error::NotFound {
                    name: name.to_owned(),
                })?;
        shmem.set_owner(true);
        Ok(())
    }
}

/// Reserves the pages of a fresh segment so that a full `/dev/shm` is an error now, not a SIGBUS
/// on first write.
fn reserve_pages(name: &str, total: u64) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        let id = std::ffi::CString::new(os_id(name)).expect("validated names have no NUL");
        // SAFETY: `id` is a valid C string; the returned fd is closed below.
        let fd = unsafe { libc::shm_open(id.as_ptr(), libc::O_RDWR, 0) };
        if fd < 0 {
            return Err(Error::last_os("shm_open for reservation"));
        }
        // SAFETY: `fd` is an open descriptor of the segment; posix_fallocate only extends storage.
        let rc = unsafe { libc::posix_fallocate(fd, 0, total as libc::off_t) };
        // SAFETY: `fd` is open and closed exactly once.
        unsafe { libc::close(fd) };
        match rc {
            0 => Ok(()),
            libc::ENOSPC => Err(Error::NoSpace { requested: total }),
            code => Err(Error::Os {
                op: "posix_fallocate",
                code,
            }),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (name, total);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_open_and_remove() {
        let seg = Segment::create(SegmentKind::Blob, 1000).unwrap();
        // SAFETY: the body is 1000 bytes long.
        unsafe { seg.body_ptr().write(42) };
        seg.publish_ready();
        let other = Segment::open(seg.name(), SegmentKind::Blob, Duration::ZERO).unwrap();
        // SAFETY: as above, in the second mapping.
        assert_eq!(unsafe { other.body_ptr().read() }, 42);
        assert_eq!(other.body_len(), 1000);
        assert_eq!(other.header().creator(), ProcessIdentity::current());
        assert_eq!(
            other.header().creator_pid_namespace(),
            crate::process::pid_namespace()
        );
        let name = seg.name().to_owned();
        drop(seg);
        assert!(matches!(
            Segment::open(&name, SegmentKind::Blob, Duration::ZERO),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn creation_is_exclusive_and_private() {
        let seg = Segment::create(SegmentKind::Blob, 10).unwrap();
        assert!(matches!(
            Segment::create_named(seg.name(), SegmentKind::Blob, 10),
            Err(Error::AlreadyExists { .. })
        ));
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(format!("/dev/shm/{}", seg.name()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn wrong_kind_and_unready_segments_are_rejected() {
        let seg = Segment::create(SegmentKind::Blob, 10).unwrap();
        let err = Segment::open(seg.name(), SegmentKind::Blob, Duration::from_millis(20));
        assert!(matches!(
            err,
            Err(Error::BadSegment {
                reason: BadSegmentReason::NotReady,
                ..
            })
        ));
        seg.publish_ready();
        let err = Segment::open(seg.name(), SegmentKind::Queue, Duration::ZERO);
        assert!(matches!(
            err,
            Err(Error::BadSegment {
                reason: BadSegmentReason::WrongKind,
                ..
            })
        ));
        seg.header().magic.store(0, Ordering::Relaxed);
        let err = Segment::open(seg.name(), SegmentKind::Blob, Duration::ZERO);
        assert!(matches!(
            err,
            Err(Error::BadSegment {
                reason: BadSegmentReason::BadMagic,
                ..
            })
        ));
    }
}
