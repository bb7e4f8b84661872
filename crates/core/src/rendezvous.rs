//! How a name finds sealed memory (Linux): a small named record listing the processes that hold
//! it.
//!
//! Sealed memory ([`crate::memfd`]) has no name. So that `attach(name)` keeps working from any
//! process of the same user, the name is a record in `/dev/shm` (a segment of kind
//! [`SegmentKind::SealedRecord`], one page for most pipes) that says which memory it stands for
//! (device, inode, length, kind) and lists its holders: one slot per process, with its pid,
//! start time and the number of its descriptor of the memory. An opener reads the record,
//! opens `/proc/<pid>/fd/<n>` of a live holder ([`memfd::open_held`], which checks that it is
//! the very memory the record names, ours and sealed), and enters itself in a slot. So the memory
//! stays reachable by name while any holder lives, the creator included or not.
//!
//! A process holds a name once ([`Hold`], shared by all its handles on it). When its last
//! handle drops it clears its slot, and if no live holder is left it removes the record. Every
//! page of the memory is the kernel's to free when the last descriptor and mapping close,
//! whoever closes last and however it ends. What a killed process cannot do is clear its slot
//! or remove the record: a slot whose process is dead (pid and start time) counts as free, and a
//! record with no live holder is removed by the next [`sweep`] (every queue creation runs one,
//! and `shmpipe clean`).
//!
//! Removal and entry race: a leaver marks the record [`REMOVING`] before its final scan, an
//! enterer takes its slot before checking the mark (both sequentially consistent), so either the
//! leaver sees the enterer and keeps the record, or the enterer sees the mark and retries.
//!
//! Limits: an opener must see a holder in `/proc` and be allowed to open its descriptors: the
//! same PID namespace (or one that can see the holder's), `/proc` not hiding it (`hidepid` hides
//! only other users' processes), and a dumpable holder. Where that fails the error says so, and
//! the named `/dev/shm` backing ([`crate::Backing::Shm`]) is the way.

use crate::error::{Error, Result};
use crate::mapping::Mapping;
use crate::memfd::{self, FileId, OpenHeldError};
use crate::process::ProcessIdentity;
use crate::segment::{SegmentKind, SEGMENT_HEADER_SIZE};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Record state: holders may enter.
const OPEN: u32 = 0;
/// Record state: a leaver found no live holder and is about to remove the record.
const REMOVING: u32 = 1;
/// A slot's descriptor half while its holder is still writing the slot.
const WRITING: u32 = u32::MAX;

/// The record's fixed part, after the segment header.
#[repr(C)]
struct RecordBody {
    target_kind: AtomicU32,
    state: AtomicU32,
    target_len: AtomicU64,
    dev: AtomicU64,
    ino: AtomicU64,
    slot_count: AtomicU32,
    _pad: AtomicU32,
    _reserved: [AtomicU64; 3],
}

/// One holder: `word` is `pid << 32 | fd` (0: free; fd [`WRITING`]: being written).
#[repr(C)]
struct Slot {
    word: AtomicU64,
    start: AtomicU64,
}

const BODY_SIZE: usize = std::mem::size_of::<RecordBody>();
const SLOT_SIZE: usize = std::mem::size_of::<Slot>();
const _: () = assert!(BODY_SIZE == 64 && SLOT_SIZE == 16);

/// The body size of a record with at least `holders` slots, filling its last page.
pub(crate) fn record_body_size(holders: u32) -> u64 {
    let page = 4096u64;
    let min = (SEGMENT_HEADER_SIZE + BODY_SIZE) as u64 + u64::from(holders) * SLOT_SIZE as u64;
    min.next_multiple_of(page) - SEGMENT_HEADER_SIZE as u64
}

fn pack(pid: u32, fd: u32) -> u64 {
    u64::from(pid) << 32 | u64::from(fd)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// What a record says about the memory it names, as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordInfo {
    /// The kind of segment in the memory (a [`SegmentKind`] value, unchecked).
    pub target_kind: u32,
    /// The memory's length, header included.
    pub target_len: u64,
    /// Live holders.
    pub holders: usize,
}

/// A view of a mapped record. Every read is bounds-checked against the mapping, since another
/// process of the same user may write anything into it.
struct Record<'a> {
    map: &'a Mapping,
}

impl<'a> Record<'a> {
    fn new(map: &'a Mapping) -> Result<Self> {
        if map.len() < SEGMENT_HEADER_SIZE + BODY_SIZE {
            return Err(Error::BadSegment {
                name: String::new(),
                reason: crate::error::BadSegmentReason::TooSmall,
            });
        }
        Ok(Self { map })
    }

    fn body(&self) -> &'a RecordBody {
        // SAFETY: the mapping holds a header and a body (checked in `new`), is page-aligned and
        // outlives 'a; the body is all atomics, valid for any bit pattern.
        unsafe { &*(self.map.as_ptr().add(SEGMENT_HEADER_SIZE) as *const RecordBody) }
    }

    /// The slots that fit the mapping, however many the record claims.
    fn slots(&self) -> &'a [Slot] {
        let room = (self.map.len() - SEGMENT_HEADER_SIZE - BODY_SIZE) / SLOT_SIZE;
        let count = (self.body().slot_count.load(Ordering::Relaxed) as usize).min(room);
        // SAFETY: `count` slots of 16 bytes fit the mapping after the body (bounded by `room`),
        // 8-aligned; slots are all atomics, valid for any bit pattern; the mapping outlives 'a.
        unsafe {
            std::slice::from_raw_parts(
                self.map.as_ptr().add(SEGMENT_HEADER_SIZE + BODY_SIZE) as *const Slot,
                count,
            )
        }
    }

    fn target(&self) -> FileId {
        FileId {
            dev: self.body().dev.load(Ordering::Relaxed),
            ino: self.body().ino.load(Ordering::Relaxed),
        }
    }

    fn info(&self) -> RecordInfo {
        RecordInfo {
            target_kind: self.body().target_kind.load(Ordering::Relaxed),
            target_len: self.body().target_len.load(Ordering::Relaxed),
            holders: self.slots().iter().filter(|s| slot_alive(s)).count(),
        }
    }

    /// Takes a slot for this process's descriptor `fd`, reusing one of a dead holder if none is
    /// free. Returns its index, or `None` if every slot is held by a live process.
    fn enter(&self, fd: u32) -> Option<usize> {
        let me = ProcessIdentity::current();
        for (index, slot) in self.slots().iter().enumerate() {
            let mut seen = slot.word.load(Ordering::SeqCst);
            if seen != 0 && !slot_alive(slot) {
                // A dead holder's slot: free it (unless someone else did, or took it, first).
                if slot
                    .word
                    .compare_exchange(seen, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    seen = 0;
                }
            }
            if seen != 0 {
                continue;
            }
            let writing = pack(me.pid, WRITING);
            if slot
                .word
                .compare_exchange(0, writing, Ordering::SeqCst, Ordering::SeqCst)
                .is_err()
            {
                continue;
            }
            slot.start.store(me.start, Ordering::SeqCst);
            slot.word.store(pack(me.pid, fd), Ordering::SeqCst);
            return Some(index);
        }
        None
    }

    fn any_alive(&self) -> bool {
        self.slots().iter().any(slot_alive)
    }
}

/// Whether a slot names a live process: its pid with the start time it recorded (a slot still
/// being written counts as alive if its pid runs at all).
fn slot_alive(slot: &Slot) -> bool {
    let word = slot.word.load(Ordering::SeqCst);
    if word == 0 {
        return false;
    }
    let (pid, fd) = unpack(word);
    let start = slot.start.load(Ordering::SeqCst);
    if fd == WRITING || start == 0 {
        return crate::process::start_time(pid).is_some();
    }
    ProcessIdentity { pid, start }.is_alive()
}

/// This process's hold on one named sealed memory: its descriptor, the record's mapping and its
/// slot there. Shared by every handle of this process on the name; dropping the last one leaves.
pub(crate) struct Hold {
    name: String,
    record: Mapping,
    fd: OwnedFd,
    id: FileId,
    len: u64,
    slot: usize,
}

// SAFETY: `Mapping` is only `!Send`/`!Sync` because it holds a raw pointer to the record's
// mapping, which is process-wide and valid until the hold drops; the record is read and written
// only through atomics.
unsafe impl Send for Hold {}
// SAFETY: as above.
unsafe impl Sync for Hold {}

impl Hold {
    /// The memory's descriptor (to map it).
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// The memory's length in bytes, header included.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        crate::signals::untrack_sealed(&self.name);
        if let Ok(mut holds) = holds().lock() {
            if holds.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
                holds.remove(&self.name);
            }
        }
        let Ok(record) = Record::new(&self.record) else {
            return;
        };
        if let Some(slot) = record.slots().get(self.slot) {
            let _ = slot.word.compare_exchange(
                pack(std::process::id(), self.fd.as_raw_fd() as u32),
                0,
                Ordering::SeqCst,
                Ordering::SeqCst,
            );
        }
        remove_if_unheld(&self.name, &self.record);
    }
}

/// Removes the record `name` (mapped as `record`) if no live process holds it and the name
/// still stands for this very record.
fn remove_if_unheld(name: &str, record: &Mapping) {
    let Ok(view) = Record::new(record) else {
        return;
    };
    let body = view.body();
    if view.any_alive()
        || body
            .state
            .compare_exchange(OPEN, REMOVING, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
    {
        return;
    }
    if view.any_alive() {
        body.state.store(OPEN, Ordering::SeqCst);
        return;
    }
    if crate::mapping::names_same_file(name, record) {
        let _ = crate::segment::unlink(name);
    }
}

fn holds() -> &'static Mutex<HashMap<String, Weak<Hold>>> {
    static HOLDS: std::sync::OnceLock<Mutex<HashMap<String, Weak<Hold>>>> =
        std::sync::OnceLock::new();
    HOLDS.get_or_init(Default::default)
}

/// Fills the fresh record `record` (named `name`, created exclusively by this process, its
/// header written but not yet ready) for the new sealed memory `fd`, entering this process as
/// its first holder. Publish the record's ready flag afterwards.
pub(crate) fn fill(
    name: &str,
    record: Mapping,
    fd: OwnedFd,
    kind: SegmentKind,
    holders: u32,
) -> Result<Arc<Hold>> {
    let (id, len) = memfd::identify(&fd)?;
    let view = Record::new(&record)?;
    let body = view.body();
    body.target_kind.store(kind as u32, Ordering::Relaxed);
    body.target_len.store(len, Ordering::Relaxed);
    body.dev.store(id.dev, Ordering::Relaxed);
    body.ino.store(id.ino, Ordering::Relaxed);
    let room = (record.len() - SEGMENT_HEADER_SIZE - BODY_SIZE) / SLOT_SIZE;
    body.slot_count
        .store(room.min(holders.max(1) as usize) as u32, Ordering::Relaxed);
    body.state.store(OPEN, Ordering::Relaxed);
    let slot = view
        .enter(fd.as_raw_fd() as u32)
        .expect("a fresh record has a free slot");
    let hold = Arc::new(Hold {
        name: name.to_owned(),
        record,
        fd,
        id,
        len,
        slot,
    });
    if let Ok(mut map) = holds().lock() {
        map.insert(name.to_owned(), Arc::downgrade(&hold));
    }
    crate::signals::track_sealed(name);
    Ok(hold)
}

/// Joins the sealed memory that the ready record `record` (named `name`) stands for: this
/// process's existing hold if it has one on that very memory, else a descriptor opened through a
/// live holder and a slot of our own.
pub(crate) fn join(name: &str, record: Mapping) -> Result<Arc<Hold>> {
    let view = Record::new(&record).map_err(|_| Error::BadSegment {
        name: name.to_owned(),
        reason: crate::error::BadSegmentReason::TooSmall,
    })?;
    let target = view.target();
    if let Some(hold) = holds()
        .lock()
        .ok()
        .and_then(|h| h.get(name).and_then(Weak::upgrade))
    {
        if hold.id == target {
            return Ok(hold);
        }
    }
    let me = std::process::id();
    let mut denied = false;
    let mut opened = None;
    for slot in view.slots() {
        let (pid, fd) = unpack(slot.word.load(Ordering::SeqCst));
        if pid == 0 || fd == WRITING || pid == me || !slot_alive(slot) {
            continue;
        }
        match memfd::open_held(pid, fd, target) {
            Ok(found) => {
                opened = Some(found);
                break;
            }
            Err(OpenHeldError::Denied) => denied = true,
            Err(OpenHeldError::Gone | OpenHeldError::NotIt) => {}
        }
    }
    let Some((fd, len)) = opened else {
        return Err(if denied || view.any_alive() {
            Error::Unreachable {
                name: name.to_owned(),
                denied,
            }
        } else {
            Error::NotFound {
                name: name.to_owned(),
            }
        });
    };
    let slot = view
        .enter(fd.as_raw_fd() as u32)
        .ok_or_else(|| Error::TooManyHolders {
            name: name.to_owned(),
            max: view.slots().len() as u32,
        })?;
    drop(view);
    let hold = Arc::new(Hold {
        name: name.to_owned(),
        record,
        fd,
        id: target,
        len,
        slot,
    });
    let removing = Record::new(&hold.record).map_or(true, |view| {
        view.body().state.load(Ordering::SeqCst) == REMOVING
    });
    if removing {
        // A leaver is removing the record: it either saw us (and keeps it) or is gone with it.
        // Either way, ask again by name.
        drop(hold);
        return Err(Error::NotFound {
            name: name.to_owned(),
        });
    }
    if let Ok(mut map) = holds().lock() {
        map.insert(name.to_owned(), Arc::downgrade(&hold));
    }
    crate::signals::track_sealed(name);
    Ok(hold)
}

/// What the record in `map` says, if it is one (its header already validated by the caller).
pub(crate) fn info(map: &Mapping) -> Option<RecordInfo> {
    Record::new(map).ok().map(|r| r.info())
}

/// Whether the record in `map` has no live holder.
pub(crate) fn is_unheld(map: &Mapping) -> bool {
    Record::new(map).is_ok_and(|r| !r.any_alive())
}

/// Removes the record at `path` (`/dev/shm/<name>`, NUL-terminated) unless a live process other
/// than this one holds a slot in it: what a signal handler does for the records of this dying
/// process. Async-signal-safe: stack buffers, `open`, `pread`, `read`, `getpid`, `unlink` and
/// `close` only. A holder counts as live if its pid runs and is not a zombie
/// ([`runs_in_handler`]; the start time is not compared): a recycled pid keeps the record, for
/// the sweep to remove.
pub(crate) fn remove_if_unheld_in_handler(path: *const libc::c_char) {
    // SAFETY: `path` is a NUL-terminated string on the caller's stack.
    let fd = unsafe { libc::open(path, libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    let read_at = |buf: &mut [u8], at: usize| -> usize {
        // SAFETY: `fd` is open, `buf` is a writable stack buffer of the given length.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), at as libc::off_t) };
        usize::try_from(n).unwrap_or(0)
    };
    let fixed = SEGMENT_HEADER_SIZE + BODY_SIZE;
    let mut held = true;
    if read_at(&mut buf[..fixed], 0) == fixed {
        let u64_at = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let is_record = u64_at(&buf, 0) == crate::segment::MAGIC
            && u32_at(&buf, crate::segment::KIND_OFFSET) == SegmentKind::SealedRecord as u32;
        let slots = u32_at(
            &buf,
            SEGMENT_HEADER_SIZE + std::mem::offset_of!(RecordBody, slot_count),
        ) as usize;
        if is_record {
            held = false;
            // SAFETY: getpid has no preconditions and is async-signal-safe.
            let me = unsafe { libc::getpid() } as u32;
            let end = fixed.saturating_add(slots.saturating_mul(SLOT_SIZE));
            let mut at = fixed;
            'chunks: while at < end && !held {
                let want = (end - at).min(buf.len());
                let n = read_at(&mut buf[..want], at);
                if n < SLOT_SIZE {
                    break;
                }
                for slot in buf[..n - n % SLOT_SIZE].chunks_exact(SLOT_SIZE) {
                    let (pid, _) = unpack(u64_at(slot, 0));
                    if pid != 0 && pid != me && runs_in_handler(pid) {
                        held = true;
                        break 'chunks;
                    }
                }
                at += n - n % SLOT_SIZE;
            }
        }
    }
    // SAFETY: `fd` is the descriptor opened above; close is async-signal-safe.
    unsafe { libc::close(fd) };
    if !held {
        // SAFETY: `path` is NUL-terminated; unlink is async-signal-safe.
        unsafe { libc::unlink(path) };
    }
}

/// Whether process `pid` exists and is not a zombie, from `/proc/<pid>/stat`, without
/// allocating (for [`remove_if_unheld_in_handler`]).
fn runs_in_handler(pid: u32) -> bool {
    let mut path = *b"/proc/\0\0\0\0\0\0\0\0\0\0/stat\0";
    let mut digits = [0u8; 10];
    let (mut n, mut rest) = (0, pid);
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut at = 6;
    for i in (0..n).rev() {
        path[at] = digits[i];
        at += 1;
    }
    path[at..at + 6].copy_from_slice(b"/stat\0");
    // SAFETY: `path` is NUL-terminated (written just above) and lives on our stack.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 512];
    // SAFETY: `fd` is open and `buf` a writable stack buffer of its length.
    let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` was opened above; close is async-signal-safe.
    unsafe { libc::close(fd) };
    let text = &buf[..usize::try_from(len).unwrap_or(0)];
    // The state follows the last ')' (the command name may hold any bytes) and a space.
    match text.iter().rposition(|&b| b == b')') {
        Some(close) => !matches!(text.get(close + 2), Some(b'Z' | b'X') | None),
        None => false,
    }
}
