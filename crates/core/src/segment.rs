//! Named shared-memory segments with a validated header.
//!
//! Layout: a 128-byte [`SegmentHeader`] at offset 0 (so the body is aligned for line-padded
//! structures), then the kind-specific body. The creator fills the header and publishes `ready`
//! last with Release ordering, so an opener never sees a half-built segment. Creation is
//! exclusive and, on Unix, mode 0600; a segment is opened only if it is ours ([`crate::mapping`]).
//!
//! While this process owns a segment (it created it and has not handed it over), its name is in
//! the table the SIGINT/SIGTERM cleanup reads ([`crate::signals`]).

use crate::backing::Backing;
use crate::error::{BadSegmentReason, Error, Result};
pub(crate) use crate::mapping::unlink;
use crate::mapping::Mapping;
use crate::name::{random_name, validate_name};
use crate::process::ProcessIdentity;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

pub(crate) use crate::header::HeaderFields;
pub use crate::header::{SegmentHeader, SegmentKind, MAGIC, SEGMENT_HEADER_SIZE};

/// A mapped shared-memory segment. The creator owns it: dropping the creator's handle removes
/// the name (other processes' mappings stay valid until they drop theirs).
pub struct Segment {
    map: Mapping,
    /// Whether dropping this handle removes the name.
    owner: bool,
    name: String,
    /// The body size, as created or as checked against the mapping at open: never re-read from
    /// the shared header, which another process may rewrite.
    body_len: usize,
    /// For sealed memory, this process's hold on it (its record slot and descriptor).
    #[cfg(target_os = "linux")]
    sealed: Option<std::sync::Arc<crate::rendezvous::Hold>>,
    /// Sealed memory without a record: reachable only through its descriptor (a blob passed to
    /// its receiver over a socket); its name is only an identity, never in `/dev/shm`.
    #[cfg(target_os = "linux")]
    anonymous: bool,
}

// SAFETY: `Mapping` is only `!Send` because it holds a raw pointer to the mapping. The mapping
// is process-wide and stays valid until the `Mapping` is dropped, wherever that happens; all
// shared state in it is accessed through atomics.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only exposes the base pointer and immutable metadata.
unsafe impl Sync for Segment {}

/// The memfd label of the sealed segment `name` (what `/proc/<pid>/fd` shows after `/memfd:`).
#[cfg(target_os = "linux")]
pub(crate) fn memfd_label(name: &str) -> String {
    format!("shmpipe:{name}")
}

impl Segment {
    /// Creates a segment under a fresh random name with a body of `body_size` bytes, in named
    /// shared memory.
    pub fn create(kind: SegmentKind, body_size: u64) -> Result<Self> {
        Self::create_in(kind, body_size, Backing::Shm, 0)
    }

    /// Creates a segment under a fresh random name in `backing`; `holders` is how many
    /// processes at once a sealed segment's record makes room for (at least a page's worth).
    pub fn create_in(
        kind: SegmentKind,
        body_size: u64,
        backing: Backing,
        holders: u32,
    ) -> Result<Self> {
        loop {
            match Self::create_named_in(&random_name(), kind, body_size, backing, holders) {
                Err(Error::AlreadyExists { .. }) => continue,
                other => return other,
            }
        }
    }

    /// Creates a segment named `name` in named shared memory; fails with
    /// [`Error::AlreadyExists`] if the name is taken. Call [`publish_ready`](Self::publish_ready)
    /// once the body is initialised.
    pub fn create_named(name: &str, kind: SegmentKind, body_size: u64) -> Result<Self> {
        Self::create_named_in(name, kind, body_size, Backing::Shm, 0)
    }

    /// Creates a segment named `name` in `backing` (see [`create_in`](Self::create_in)).
    pub fn create_named_in(
        name: &str,
        kind: SegmentKind,
        body_size: u64,
        backing: Backing,
        #[cfg_attr(not(target_os = "linux"), allow(unused_variables))] holders: u32,
    ) -> Result<Self> {
        validate_name(name)?;
        let total = total_len(body_size)?;
        match backing.check()? {
            Backing::Shm => {
                let map = make_named(name, kind, body_size, total)?;
                Ok(Self {
                    map,
                    owner: true,
                    name: name.to_owned(),
                    body_len: body_size as usize,
                    #[cfg(target_os = "linux")]
                    sealed: None,
                    #[cfg(target_os = "linux")]
                    anonymous: false,
                })
            }
            #[cfg(target_os = "linux")]
            Backing::Memfd => Self::create_sealed(name, kind, body_size, total, holders),
            #[cfg(not(target_os = "linux"))]
            Backing::Memfd => unreachable!("checked above: memfd is Linux only"),
        }
    }

    /// Creates sealed memory of `total` bytes and its record `name`, this process its first
    /// holder. The record is made first (exclusive, so the name is taken before the long
    /// reservation) and published ready last, once the memory's header names it.
    #[cfg(target_os = "linux")]
    fn create_sealed(
        name: &str,
        kind: SegmentKind,
        body_size: u64,
        total: u64,
        holders: u32,
    ) -> Result<Self> {
        let record_body = crate::record::record_body_size(holders);
        let record = make_named(
            name,
            SegmentKind::SealedRecord,
            record_body,
            record_body + SEGMENT_HEADER_SIZE as u64,
        )?;
        let made = (|| {
            let fd = crate::memfd::create_sealed(&memfd_label(name), total)?;
            let map = Mapping::from_fd(
                fd.try_clone().map_err(|e| Error::Os {
                    op: "dup memfd",
                    code: e.raw_os_error().unwrap_or(0),
                })?,
                total as usize,
            )?;
            write_header(&map, kind, body_size);
            Ok((fd, map))
        })();
        let (fd, map) = match made {
            Ok(made) => made,
            Err(e) => {
                let _ = unlink(name);
                return Err(e);
            }
        };
        // The record's header pointer, read before the mapping moves into the hold.
        // SAFETY: the record mapping is at least a header long (made so above), page-aligned,
        // and lives in the hold below as long as `record_header` is used; all atomics.
        let record_header = unsafe { &*(record.as_ptr() as *const SegmentHeader) };
        let hold = match crate::rendezvous::fill(name, record, fd, kind, holders) {
            Ok(hold) => hold,
            Err(e) => {
                let _ = unlink(name);
                return Err(e);
            }
        };
        record_header.ready.store(1, Ordering::Release);
        // From now on the record outlives this process if others hold the memory: a signal
        // ending it must not remove the name (the record's last holder, or a sweep, does).
        crate::signals::untrack(name);
        Ok(Self {
            map,
            owner: true,
            name: name.to_owned(),
            body_len: body_size as usize,
            sealed: Some(hold),
            anonymous: false,
        })
    }

    /// Publishes the ready flag: call once the body is initialised.
    pub fn publish_ready(&self) {
        self.header().ready.store(1, Ordering::Release);
    }

    /// Opens an existing segment and validates its header against `kind`. A name that stands for
    /// sealed memory is followed to it through its record ([`crate::rendezvous`]).
    ///
    /// A segment whose ready flag is not yet set is waited for up to `ready_timeout`. On Unix a
    /// segment that is not ours (another user's, or open to group or others) is
    /// [`Error::Permission`].
    pub fn open(name: &str, kind: SegmentKind, ready_timeout: Duration) -> Result<Self> {
        validate_name(name)?;
        let map = Mapping::open(name, SEGMENT_HEADER_SIZE)?;
        #[cfg(target_os = "linux")]
        if map.len() >= SEGMENT_HEADER_SIZE
            && header_of(&map).kind.load(Ordering::Relaxed) == SegmentKind::SealedRecord as u32
        {
            validate(&map, name, SegmentKind::SealedRecord, ready_timeout)?;
            let hold = crate::rendezvous::join(name, map)?;
            let len = usize::try_from(hold.len()).map_err(|_| Error::BadSegment {
                name: name.to_owned(),
                reason: BadSegmentReason::TooSmall,
            })?;
            let fd = hold.fd().try_clone().map_err(|e| Error::Os {
                op: "dup memfd",
                code: e.raw_os_error().unwrap_or(0),
            })?;
            let map = Mapping::from_fd(fd, len)?;
            let body_len = validate(&map, name, kind, ready_timeout)?;
            return Ok(Self {
                map,
                owner: false,
                name: name.to_owned(),
                body_len,
                sealed: Some(hold),
                anonymous: false,
            });
        }
        let body_len = validate(&map, name, kind, ready_timeout)?;
        Ok(Self {
            map,
            owner: false,
            name: name.to_owned(),
            body_len,
            #[cfg(target_os = "linux")]
            sealed: None,
            #[cfg(target_os = "linux")]
            anonymous: false,
        })
    }

    /// Whether the segment lives in sealed memory ([`Backing::Memfd`]).
    pub fn backing(&self) -> Backing {
        #[cfg(target_os = "linux")]
        if self.sealed.is_some() || self.anonymous {
            return Backing::Memfd;
        }
        Backing::Shm
    }

    /// Creates sealed memory with a body of `body_size` bytes and no record: nothing can open it
    /// by name, only through its descriptor ([`fd`](Self::fd)). It carries a fresh generated name
    /// as its identity (in its header's place of a name: the records that name it).
    #[cfg(target_os = "linux")]
    pub(crate) fn create_anonymous(kind: SegmentKind, body_size: u64) -> Result<Self> {
        let name = random_name();
        let total = total_len(body_size)?;
        let fd = crate::memfd::create_sealed(&memfd_label(&name), total)?;
        let map = Mapping::from_fd(fd, total as usize)?;
        write_header(&map, kind, body_size);
        Ok(Self {
            map,
            owner: false,
            name,
            body_len: body_size as usize,
            sealed: None,
            anonymous: true,
        })
    }

    /// Maps sealed memory received as `fd` (a blob from its producer), under the identity `name`,
    /// if it is ours, sealed, and holds a valid ready segment of `kind`.
    #[cfg(target_os = "linux")]
    pub(crate) fn from_sealed_fd(
        name: &str,
        fd: std::os::fd::OwnedFd,
        kind: SegmentKind,
    ) -> Result<Self> {
        let bad = |reason| Error::BadSegment {
            name: name.to_owned(),
            reason,
        };
        let len = crate::memfd::verify(&fd).ok_or_else(|| bad(BadSegmentReason::Corrupt))?;
        let len = usize::try_from(len).map_err(|_| bad(BadSegmentReason::TooSmall))?;
        if len < SEGMENT_HEADER_SIZE {
            return Err(bad(BadSegmentReason::TooSmall));
        }
        let map = Mapping::from_fd(fd, len)?;
        let body_len = validate(&map, name, kind, Duration::ZERO)?;
        Ok(Self {
            map,
            owner: false,
            name: name.to_owned(),
            body_len,
            sealed: None,
            anonymous: true,
        })
    }

    /// The descriptor of the segment's memory (to pass it to another process).
    #[cfg(target_os = "linux")]
    pub(crate) fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: the mapping's descriptor stays open as long as `self.map`, which outlives the
        // borrow.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(self.map.fd()) }
    }

    /// The header of segment `name` as it reads now, ready or not, without validating it; only
    /// the header is mapped. A segment that is not ours is [`Error::Permission`], as for
    /// [`open`](Self::open).
    pub(crate) fn peek_header(name: &str) -> Result<HeaderFields> {
        validate_name(name)?;
        let map = Mapping::open_at_most(name, SEGMENT_HEADER_SIZE, SEGMENT_HEADER_SIZE)?;
        if map.len() < SEGMENT_HEADER_SIZE {
            return Err(Error::BadSegment {
                name: name.to_owned(),
                reason: BadSegmentReason::TooSmall,
            });
        }
        // SAFETY: the mapping is at least SEGMENT_HEADER_SIZE bytes (checked above) and
        // page-aligned, and outlives this borrow; the header is all atomics, valid for any bits.
        let header = unsafe { &*(map.as_ptr() as *const SegmentHeader) };
        Ok(header.fields())
    }

    /// Removes the name `name` so that no new process can open it; existing mappings stay valid.
    pub fn remove(name: &str) -> Result<()> {
        validate_name(name)?;
        unlink(name)
    }

    /// Stops removing the name when this handle drops (ownership passes to another process).
    pub fn disown(&mut self) {
        if self.owner {
            crate::signals::hand_over(&self.name);
        }
        self.set_owner(false);
    }

    /// Stops removing the name when this handle drops, yet leaves it to the signal cleanup
    /// ([`crate::signals`]) until [`unlink`] removes it: for a blob whose receiver is in this
    /// process, and dies with it.
    pub(crate) fn disown_to_this_process(&mut self) {
        self.set_owner(false);
    }

    /// Makes this handle remove the name when it drops.
    pub fn adopt(&mut self) {
        if !self.owner {
            crate::signals::track(&self.name);
        }
        self.set_owner(true);
    }

    fn set_owner(&mut self, owner: bool) {
        self.owner = owner;
        self.map.set_owner(owner);
    }

    /// Whether dropping this handle removes the name.
    pub fn is_owner(&self) -> bool {
        self.owner
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
        unsafe { &*(self.map.as_ptr() as *const SegmentHeader) }
    }

    /// Pointer to the body (just after the header). Valid for [`body_len`](Self::body_len) bytes
    /// while `self` lives.
    pub fn body_ptr(&self) -> *mut u8 {
        // SAFETY: the mapping is at least SEGMENT_HEADER_SIZE bytes long.
        unsafe { self.map.as_ptr().add(SEGMENT_HEADER_SIZE) }
    }

    /// The body length as created (not the page-rounded mapping length), as checked against
    /// the mapping when opened.
    pub fn body_len(&self) -> usize {
        self.body_len
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        if self.sealed.is_some() || self.anonymous {
            // The record goes with its last holder ([`crate::rendezvous::Hold`]); anonymous
            // memory has no name to remove.
            return;
        }
        if self.owner {
            // On Unix the owner unlinks the name itself (the mapping only unmaps), so the name
            // leaves the signal handler's table only once it is gone.
            #[cfg(unix)]
            {
                let _ = unlink(&self.name);
                self.set_owner(false);
            }
            crate::signals::untrack(&self.name);
        }
    }
}

/// The length of a segment with a body of `body_size` bytes: header included, and mappable on
/// this platform (at most `isize::MAX` bytes, else [`Error::TooLarge`]).
fn total_len(body_size: u64) -> Result<u64> {
    body_size
        .checked_add(SEGMENT_HEADER_SIZE as u64)
        .filter(|&t| t <= isize::MAX as u64 && usize::try_from(t).is_ok())
        .ok_or(Error::TooLarge {
            requested: body_size,
            limit: (isize::MAX as u64).saturating_sub(SEGMENT_HEADER_SIZE as u64),
        })
}

fn header_of(map: &Mapping) -> &SegmentHeader {
    debug_assert!(map.len() >= SEGMENT_HEADER_SIZE);
    // SAFETY: callers pass mappings at least SEGMENT_HEADER_SIZE bytes long (checked or made
    // so), page-aligned, outliving the borrow; the header is all atomics, valid for any bits.
    unsafe { &*(map.as_ptr() as *const SegmentHeader) }
}

/// Creates the named segment `name` of `total` bytes exclusively, reserves its pages and writes
/// its header (not yet ready); the name is removed again if a step fails.
fn make_named(name: &str, kind: SegmentKind, body_size: u64, total: u64) -> Result<Mapping> {
    let map = Mapping::create(name, total as usize)?;
    crate::signals::track(name);
    crate::registry::add(name);
    let made = (|| {
        // The header's bytes first and the header written, so that it names its creator during
        // the long reservation of the rest: whoever finds the creator dead meanwhile can tell
        // that the segment is its ([`crate::blob::remove_if_made_by`]).
        let header_end = SEGMENT_HEADER_SIZE as u64;
        reserve_pages(&map, 0..header_end, total)?;
        write_header(&map, kind, body_size);
        reserve_pages(&map, header_end..total, total)
    })();
    if let Err(e) = made {
        let _ = unlink(name);
        return Err(e);
    }
    Ok(map)
}

/// Writes a fresh segment's header, all but the ready flag.
fn write_header(map: &Mapping, kind: SegmentKind, body_size: u64) {
    let me = ProcessIdentity::current();
    let h = header_of(map);
    h.magic.store(MAGIC, Ordering::Relaxed);
    h.layout_version
        .store(crate::LAYOUT_VERSION, Ordering::Relaxed);
    h.kind.store(kind as u32, Ordering::Relaxed);
    h.body_size.store(body_size, Ordering::Relaxed);
    h.creator_pid.store(me.pid, Ordering::Relaxed);
    h.creator_start.store(me.start, Ordering::Relaxed);
    h.creator_pid_ns
        .store(crate::process::pid_namespace(), Ordering::Relaxed);
}

/// Checks the header of segment `name` in `map` against `kind`, waiting up to `ready_timeout`
/// for its ready flag; returns the body size, which fits the mapping.
fn validate(
    map: &Mapping,
    name: &str,
    kind: SegmentKind,
    ready_timeout: Duration,
) -> Result<usize> {
    let bad = |reason| Error::BadSegment {
        name: name.to_owned(),
        reason,
    };
    if map.len() < SEGMENT_HEADER_SIZE {
        return Err(bad(BadSegmentReason::TooSmall));
    }
    let h = header_of(map);
    let deadline = Instant::now() + ready_timeout;
    while h.ready.load(Ordering::Acquire) != 1 {
        if Instant::now() >= deadline {
            return Err(bad(BadSegmentReason::NotReady));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if h.magic.load(Ordering::Relaxed) != MAGIC {
        return Err(bad(BadSegmentReason::BadMagic));
    }
    if h.layout_version.load(Ordering::Relaxed) != crate::LAYOUT_VERSION {
        return Err(bad(BadSegmentReason::IncompatibleVersion));
    }
    if SegmentKind::from_u32(h.kind.load(Ordering::Relaxed)) != Some(kind) {
        return Err(bad(BadSegmentReason::WrongKind));
    }
    let body = h.body_size();
    if body > (map.len() - SEGMENT_HEADER_SIZE) as u64 {
        return Err(bad(BadSegmentReason::TooSmall));
    }
    Ok(body as usize)
}

/// Reserves bytes `range` of a fresh segment of `total` bytes, so that a full `/dev/shm` is an
/// error now, not a SIGBUS on first write. Works on the descriptor that created the segment,
/// never on a reopen by name (which another process could have swapped meanwhile).
fn reserve_pages(map: &Mapping, range: std::ops::Range<u64>, total: u64) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        if range.is_empty() {
            return Ok(()); // posix_fallocate refuses a length of 0
        }
        let (offset, len) = (
            range.start as libc::off_t,
            (range.end - range.start) as libc::off_t,
        );
        // SAFETY: the mapping's descriptor is open while `map` lives; posix_fallocate only
        // extends the storage of the file it names.
        let rc = unsafe { libc::posix_fallocate(map.fd(), offset, len) };
        match rc {
            0 => Ok(()),
            libc::ENOSPC => {
                // The pages already reserved (the header's, whole pages on tmpfs) are given
                // back when the failed segment is removed.
                // SAFETY: sysconf has no preconditions.
                let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
                Err(Error::no_space(total, range.start.next_multiple_of(page)))
            }
            code => Err(Error::Os {
                op: "posix_fallocate",
                code,
            }),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (map, range, total);
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
