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
//! record with no live holder is removed by the next [`sweep`] (a queue or sealed array creation
//! runs one, at most once per [`SWEEP_INTERVAL`] in a process) or `shmpipe clean` ([`remove_if_abandoned`]).
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
use crate::header::{HeaderFields, SegmentHeader, SegmentKind, MAGIC, SEGMENT_HEADER_SIZE};
use crate::mapping::Mapping;
use crate::memfd::{self, FileId, OpenHeldError};
use crate::process::ProcessIdentity;
use crate::record::{
    holder_alive, pack, read_prefix, slot_words, unpack, RecordBody, Slot, BODY_SIZE,
    MAX_RECORD_LEN, OPEN, REMOVING, SLOT_SIZE, WRITING,
};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

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

impl Hold {
    /// Leaves: clears this process's slot, then removes the record if no live process holds it
    /// any more. Clearing before scanning (both sequentially consistent) makes two holders that
    /// leave at once see at least one of them gone, so one of them removes the record.
    /// Idempotent.
    fn leave(&self) {
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

impl Drop for Hold {
    fn drop(&mut self) {
        crate::signals::untrack_sealed(&self.name);
        if let Ok(mut holds) = holds().lock() {
            if holds.get(&self.name).is_some_and(|w| w.strong_count() == 0) {
                holds.remove(&self.name);
            }
        }
        self.leave();
    }
}

/// Leaves every sealed memory this process still holds, as its handles' drops would have: run
/// when the process exits normally (`exit`, the end of `main`, Node's exit), which drops
/// nothing. Without it, two processes that leave at about the same time can each see the other
/// still holding and both keep the record (only a later sweep would remove it).
extern "C" fn leave_all_at_exit() {
    let held: Vec<Arc<Hold>> = match holds().try_lock() {
        Ok(map) => map.values().filter_map(Weak::upgrade).collect(),
        Err(_) => return, // another thread holds the table: its drops leave by themselves
    };
    for hold in &held {
        hold.leave();
    }
}

/// Registers [`leave_all_at_exit`] once per process.
fn leave_at_exit() {
    static REGISTERED: std::sync::Once = std::sync::Once::new();
    REGISTERED.call_once(|| {
        // SAFETY: `leave_all_at_exit` is an `extern "C" fn()` that lives as long as the program
        // and never unwinds (it only locks without waiting, maps nothing new and makes syscalls).
        unsafe { libc::atexit(leave_all_at_exit) };
    });
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
    crate::mapping::unlink(name).is_ok()
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
/// (queue and sealed array creation call it); returns how many it removed.
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

/// [`sweep`], now. Looks only at names of the generated shape or a shared array's
/// ([`crate::name::is_array_segment_name`]) whose file is small enough for a
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
        if crate::name::generated_bits(&name).is_none()
            && !crate::name::is_array_segment_name(&name)
        {
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
    // Every slot that fits: the record was sized for at least `holders` of them.
    let room = (record.len() - SEGMENT_HEADER_SIZE - BODY_SIZE) / SLOT_SIZE;
    debug_assert!(room >= holders as usize);
    body.slot_count.store(room as u32, Ordering::Relaxed);
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
    leave_at_exit();
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
        // A record made in another PID namespace names holders this process cannot see, alive
        // or not: their memory is out of reach, not gone.
        // SAFETY: the mapping holds a header (checked by `Record::new`), page-aligned, mapped
        // while `record` lives; the header is all atomics, valid for any bit pattern.
        let header = unsafe { &*(record.as_ptr() as *const SegmentHeader) }.fields();
        let elsewhere = header.creator_pid_ns != crate::process::pid_namespace();
        return Err(if denied || elsewhere || view.any_alive() {
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
    leave_at_exit();
    Ok(hold)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{read_record, record_body_size};

    #[test]
    fn a_record_is_removed_only_while_its_name_still_stands_for_it() {
        // Records with no slot: unheld. Plain mappings stand in for them (only the slots count).
        let len = SEGMENT_HEADER_SIZE + record_body_size(1) as usize;
        let name = crate::name::random_name();
        drop(Mapping::create(&name, len).unwrap());
        let exists = || std::path::Path::new(SHM_DIR).join(&name).exists();
        let judged_map = Mapping::open(&name, SEGMENT_HEADER_SIZE).unwrap();
        // Removed and made again under the same name, after it was judged unheld.
        crate::mapping::unlink(&name).unwrap();
        drop(Mapping::create(&name, len).unwrap());
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
