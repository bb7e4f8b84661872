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
//! record with no live holder is removed by the next [`sweep`] (a queue creation runs one, at
//! most once per [`SWEEP_INTERVAL`] in a process) or `shmpipe clean` ([`remove_if_abandoned`]).
//! Both judge a record only in its creator's PID namespace: a holder's pid means nothing in
//! another.
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
use crate::segment::{HeaderFields, SegmentHeader, SegmentKind, MAGIC, SEGMENT_HEADER_SIZE};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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

/// The most of a record that is read or mapped when judging it from outside ([`read_record`],
/// [`remove_if_unheld_by_name`]): a record of the most holders a queue has room for is about
/// 66 KiB; a longer file's tail is not looked at, so that a hostile one cannot make a reader map
/// or scan more.
pub(crate) const MAX_RECORD_LEN: usize = 256 << 10;

/// What a record says about the memory it names, read from a copy of its bytes
/// ([`read_record`]), without joining it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordInfo {
    /// The kind of segment in the memory (a [`SegmentKind`] value, unchecked; 0 until filled).
    pub target_kind: u32,
    /// The memory's length, header included (0 until filled).
    pub target_len: u64,
    /// The pids of its live holders (pid and start time), sorted, each once.
    pub holders: Vec<u32>,
}

/// Reads the record whose first bytes (header included, up to [`MAX_RECORD_LEN`]) are
/// `bytes`: `None` if they are too short for a record's body. Every field is bounds-checked
/// against `bytes`, so a record claiming any number of slots, or holding any words, reads as
/// what fits; a holder is live only if its pid runs with the start time its slot records.
pub(crate) fn read_record(bytes: &[u8]) -> Option<RecordInfo> {
    use std::mem::offset_of;
    let body = bytes.get(SEGMENT_HEADER_SIZE..SEGMENT_HEADER_SIZE + BODY_SIZE)?;
    let mut holders: Vec<u32> = slot_words(bytes)?
        .filter(|&(word, start)| holder_alive(word, start))
        .map(|(word, _)| unpack(word).0)
        .collect();
    holders.sort_unstable();
    holders.dedup();
    Some(RecordInfo {
        target_kind: u32_at(body, offset_of!(RecordBody, target_kind)),
        target_len: u64_at(body, offset_of!(RecordBody, target_len)),
        holders,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The `(word, start)` of every slot of the record whose first bytes are `bytes` (up to
/// [`MAX_RECORD_LEN`]), as many as it claims and as fit; `None` if they are too short for a body.
fn slot_words(bytes: &[u8]) -> Option<impl Iterator<Item = (u64, u64)> + '_> {
    use std::mem::offset_of;
    let bytes = &bytes[..bytes.len().min(MAX_RECORD_LEN)];
    let body = bytes.get(SEGMENT_HEADER_SIZE..SEGMENT_HEADER_SIZE + BODY_SIZE)?;
    let room = (bytes.len() - SEGMENT_HEADER_SIZE - BODY_SIZE) / SLOT_SIZE;
    let count = (u32_at(body, offset_of!(RecordBody, slot_count)) as usize).min(room);
    let slots = &bytes[SEGMENT_HEADER_SIZE + BODY_SIZE..][..count * SLOT_SIZE];
    Some(slots.chunks_exact(SLOT_SIZE).map(|s| {
        (
            u64_at(s, offset_of!(Slot, word)),
            u64_at(s, offset_of!(Slot, start)),
        )
    }))
}

/// The first `len` bytes of `file` (a record `len` bytes long), at most [`MAX_RECORD_LEN`].
pub(crate) fn read_prefix(file: &std::fs::File, len: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; len.min(MAX_RECORD_LEN)];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    bytes.truncate(filled);
    Some(bytes)
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
    holder_alive(word, slot.start.load(Ordering::SeqCst))
}

/// Whether a slot's `word` and `start` name a live process (see [`slot_alive`]).
fn holder_alive(word: u64, start: u64) -> bool {
    if word == 0 {
        return false;
    }
    let (pid, fd) = unpack(word);
    if pid == 0 {
        return false;
    }
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
/// still stands for this very record. Returns whether it removed it.
fn remove_if_unheld(name: &str, record: &Mapping) -> bool {
    let Ok(view) = Record::new(record) else {
        return false;
    };
    if !mark_removing(&view) || !crate::mapping::names_same_file(name, record) {
        return false;
    }
    crate::segment::unlink(name).is_ok()
}

/// Marks the record [`REMOVING`] if no live process holds it, and checks again after the mark
/// (an enterer takes its slot before it checks the mark). Returns whether it is marked and
/// still unheld. A record already marked by a leaver (one still removing it, or one killed
/// before it could) stays marked.
fn mark_removing(view: &Record<'_>) -> bool {
    if view.any_alive() {
        return false;
    }
    let state = &view.body().state;
    let before = state.load(Ordering::SeqCst);
    if before == REMOVING {
        return !view.any_alive();
    }
    if state
        .compare_exchange(before, REMOVING, Ordering::SeqCst, Ordering::SeqCst)
        .is_err()
    {
        return false;
    }
    if view.any_alive() {
        let _ = state.compare_exchange(REMOVING, before, Ordering::SeqCst, Ordering::SeqCst);
        return false;
    }
    true
}

/// Where records live (glibc and musl put POSIX shared memory there).
const SHM_DIR: &str = "/dev/shm";

/// Removes the record named `name` if nothing holds the memory it stands for: ready with no
/// live holder, or never made ready by a creator that is dead. Returns whether it removed it
/// (`false` also for a name that is not a record, or a record made in another PID namespace,
/// whose pids mean nothing here). The record is judged as mapped (at most [`MAX_RECORD_LEN`]),
/// never joined, and its name unlinked only while it still stands for the record judged.
/// Whose record it is, is the caller's rule: root can open every user's.
pub(crate) fn remove_if_abandoned(name: &str) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    crate::name::validate_name(name)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(std::path::Path::new(SHM_DIR).join(name));
    let file = match file {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NotFound {
                name: name.to_owned(),
            })
        }
        Err(e) => {
            return Err(Error::Os {
                op: "open a rendezvous record",
                code: e.raw_os_error().unwrap_or(0),
            })
        }
    };
    let Ok(meta) = file.metadata() else {
        return Ok(false);
    };
    let len = usize::try_from(meta.len()).unwrap_or(usize::MAX);
    if !meta.file_type().is_file() || len < SEGMENT_HEADER_SIZE + BODY_SIZE {
        return Ok(false);
    }
    let map = Mapping::from_fd(OwnedFd::from(file), len.min(MAX_RECORD_LEN))?;
    // SAFETY: the mapping is at least a header and a body long (checked above), page-aligned
    // and outlives `header`; the header is all atomics, valid for any bit pattern.
    let header = unsafe { &*(map.as_ptr() as *const SegmentHeader) }.fields();
    let is_record = header.magic == MAGIC
        && header.layout_version == crate::LAYOUT_VERSION
        && header.kind == SegmentKind::SealedRecord as u32
        && header.creator_pid_ns == crate::process::pid_namespace();
    if !is_record || (!header.ready && header.creator.is_alive()) {
        return Ok(false);
    }
    Ok(remove_if_unheld(name, &map))
}

/// How often a process sweeps at most ([`sweep`]).
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Removes the records that killed processes left: this user's, made in this PID namespace, that
/// nothing holds ([`remove_if_abandoned`]). At most once per [`SWEEP_INTERVAL`] in a process
/// (queue creation calls it); returns how many it removed.
pub(crate) fn sweep() -> usize {
    static LAST: Mutex<Option<Instant>> = Mutex::new(None);
    {
        let Ok(mut last) = LAST.lock() else {
            return 0;
        };
        let now = Instant::now();
        if last.is_some_and(|at| now.duration_since(at) < SWEEP_INTERVAL) {
            return 0;
        }
        *last = Some(now);
    }
    sweep_now()
}

/// [`sweep`], now. Looks only at names of the generated shape whose file is small enough for a
/// record and ours, reads them, and maps (to remove) only those that read as unheld; a process
/// holding many pipes is looked up once.
fn sweep_now() -> usize {
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
    let Ok(dir) = std::fs::read_dir(SHM_DIR) else {
        return 0;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    let our_ns = crate::process::pid_namespace();
    let mut seen: HashMap<(u32, u64, bool), bool> = HashMap::new();
    let mut removed = 0;
    for item in dir.flatten() {
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        if crate::name::generated_bits(&name).is_none() {
            continue;
        }
        let Ok(meta) = item.metadata() else {
            continue;
        };
        let len = meta.len();
        if !meta.file_type().is_file()
            || meta.uid() != euid
            || len < (SEGMENT_HEADER_SIZE + BODY_SIZE) as u64
            || len > MAX_RECORD_LEN as u64
        {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(item.path())
        else {
            continue;
        };
        let mut header = [0u8; SEGMENT_HEADER_SIZE];
        if file.read_exact_at(&mut header, 0).is_err() {
            continue;
        }
        let h = HeaderFields::decode(&header);
        if h.magic != MAGIC
            || h.kind != SegmentKind::SealedRecord as u32
            || h.creator_pid_ns != our_ns
        {
            continue;
        }
        let Some(bytes) = read_prefix(&file, len) else {
            continue;
        };
        let mut alive = |(word, start): (u64, u64)| {
            let (pid, fd) = unpack(word);
            *seen
                .entry((pid, start, fd == WRITING))
                .or_insert_with(|| holder_alive(word, start))
        };
        let held = slot_words(&bytes).is_some_and(|mut slots| slots.any(&mut alive));
        if !held && remove_if_abandoned(&name).unwrap_or(false) {
            removed += 1;
        }
    }
    removed
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::Segment;

    #[test]
    fn a_record_is_removed_only_while_its_name_still_stands_for_it() {
        let body = record_body_size(1);
        let mut judged = Segment::create(SegmentKind::SealedRecord, body).unwrap();
        judged.publish_ready();
        judged.disown();
        let name = judged.name().to_owned();
        let exists = || std::path::Path::new(SHM_DIR).join(&name).exists();
        let judged_map = Mapping::open(&name, SEGMENT_HEADER_SIZE).unwrap();
        // Removed and made again under the same name, after it was judged unheld.
        crate::segment::unlink(&name).unwrap();
        let mut again = Segment::create_named(&name, SegmentKind::SealedRecord, body).unwrap();
        again.publish_ready();
        again.disown();
        assert!(!remove_if_unheld(&name, &judged_map));
        assert!(exists(), "removed a newer record of the same name");
        let again_map = Mapping::open(&name, SEGMENT_HEADER_SIZE).unwrap();
        assert!(remove_if_unheld(&name, &again_map));
        assert!(!exists());
    }

    #[test]
    fn a_record_is_read_only_as_far_as_its_bytes_go() {
        let me = ProcessIdentity::current();
        let mut bytes = vec![0u8; SEGMENT_HEADER_SIZE + BODY_SIZE + 3 * SLOT_SIZE + 5];
        let body = SEGMENT_HEADER_SIZE;
        bytes[body..body + 4].copy_from_slice(&1u32.to_ne_bytes());
        bytes[body + 32..body + 36].copy_from_slice(&u32::MAX.to_ne_bytes());
        let slot = |i: usize| SEGMENT_HEADER_SIZE + BODY_SIZE + i * SLOT_SIZE;
        // A garbage word, a live holder, the same holder again, and a truncated fourth slot.
        bytes[slot(0)..slot(1)].fill(0xa5);
        for i in [1, 2] {
            bytes[slot(i)..slot(i) + 8].copy_from_slice(&pack(me.pid, 3).to_ne_bytes());
            bytes[slot(i) + 8..slot(i) + 16].copy_from_slice(&me.start.to_ne_bytes());
        }
        let info = read_record(&bytes).unwrap();
        assert_eq!((info.target_kind, info.holders), (1, vec![me.pid]));
        assert_eq!(read_record(&bytes[..slot(2)]).unwrap().holders, [me.pid]);
        assert!(read_record(&bytes[..slot(1)]).unwrap().holders.is_empty());
        assert_eq!(
            read_record(&bytes[..slot(0)]).unwrap().holders,
            Vec::<u32>::new()
        );
        assert_eq!(
            read_record(&bytes[..slot(0) - 1]),
            None,
            "shorter than a body"
        );
    }
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
