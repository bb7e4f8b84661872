//! Blob segments (the segments of messages too large for a queue's data area) and their reuse.
//!
//! A blob costs more to make than to fill: reserving its pages, faulting them in on both sides
//! and freeing them take several times as long as the copy. So a producer keeps the blobs it
//! sent ([`KeptBlobs`]) and the consumer keeps its mappings of them ([`BlobCache`]): the next
//! message of about the same size goes into a blob that both sides have mapped already. The
//! measurements behind this and its limits: `docs/decisions/2026-11-21-blob-reuse.md`.
//!
//! A state word in the blob's segment header says who may touch it. Its phase:
//! - [`SENT`]: the producer is filling it, or it is queued, or the consumer holds its message.
//! - [`RELEASED`]: the consumer dropped the message; its producer may take it back (CAS from
//!   exactly `RELEASED` to `SENT`) and write the next message into it.
//!
//! and two flags, each set once and for good:
//! - [`PRODUCER_GONE`]: the producer will not reuse it (it closed, or kept a newer one instead).
//!   The consumer keeps its mapping while the blob is `SENT`, since a queued record may still
//!   name it, and unmaps it once released.
//! - [`CONSUMER_GONE`]: the consumer unmapped it (it closed, or found the producer dead); the
//!   producer must not reuse it, since no consumer could find it again.
//! - [`PICKED_UP`]: the consumer has mapped it (what a producer holding a sealed blob for a
//!   consumer not yet registered waits for).
//!
//! Names work as for a blob used once: the producer names a fresh blob in its registry entry
//! until the record describing it is queued; the consumer unlinks the name as soon as it has
//! mapped it. A reused blob has no name left to leak, and its memory goes with the last mapping.
//! The descriptor of a reused blob carries the old name again, and the consumer finds its mapping
//! by that name (names carry 64 random bits, so two blobs practically never share one).

use crate::error::{BadSegmentReason, Error};
use crate::process::{pid_namespace, ProcessIdentity};
use crate::segment::{Segment, SegmentKind, MAGIC};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use crate::blob_state::{CONSUMER_GONE, PHASE, PICKED_UP, PRODUCER_GONE, RELEASED, SENT};

/// A producer keeps at most this many blobs. A stream runs with as many blobs as the queue has
/// records in flight, plus those the consumer holds and the one being filled: a producer that
/// kept fewer would find them all still in flight and make fresh ones, which costs several times
/// the copy (`docs/decisions/2026-12-08-blob-keep.md`). A receiver taking values with `get()`
/// holds a value's blob until the garbage collector has collected it, often 10 to 30 values of
/// 10 MB later.
pub const MAX_KEPT: usize = 32;

/// The largest reuse: a blob is taken for a message of at least half its size, so that small
/// messages do not pin a large blob.
const MAX_WASTE_FACTOR: u64 = 2;

fn state_word(seg: &Segment) -> &AtomicU64 {
    seg.header().kind_word()
}

/// The blob's state word: a phase ([`SENT`] or [`RELEASED`]; anything else is corrupt) and
/// flags.
pub fn state(seg: &Segment) -> u64 {
    state_word(seg).load(Ordering::Acquire)
}

/// Whether `seg` holds a message filled for the consumer (phase [`SENT`]).
pub fn is_sent(seg: &Segment) -> bool {
    state(seg) & PHASE == SENT
}

/// Sets the state of a fresh blob before its record is queued: [`SENT`], and given up by its
/// producer already unless it keeps the blob for reuse.
pub fn init(seg: &Segment, kept: bool) {
    let flags = if kept { 0 } else { PRODUCER_GONE };
    state_word(seg).store(SENT | flags, Ordering::Relaxed);
}

/// The message in `seg` was dropped (or its loan aborted): phase [`RELEASED`], flags kept.
/// Release ordering: our reads of the message happen before the producer's next writes, which
/// follow its Acquire CAS in [`KeptBlobs::reuse`].
pub fn release(seg: &Segment) {
    let _ = state_word(seg).fetch_update(Ordering::Release, Ordering::Relaxed, |st| {
        (st & PHASE == SENT).then_some(st & !PHASE | RELEASED)
    });
}

/// The consumer has mapped `seg` ([`PICKED_UP`]).
pub fn mark_picked_up(seg: &Segment) {
    state_word(seg).fetch_or(PICKED_UP, Ordering::AcqRel);
}

/// Whether the consumer no longer needs `seg`'s producer to hold it: it mapped it, released it
/// or gave it up.
#[cfg(target_os = "linux")]
pub fn needs_no_holder(seg: &Segment) -> bool {
    !crate::blob_state::needs_holder(state(seg))
}

/// Sets `flag` ([`PRODUCER_GONE`] or [`CONSUMER_GONE`]) on `seg`, for good.
fn give_up(seg: &Segment, flag: u64) {
    state_word(seg).fetch_or(flag, Ordering::AcqRel);
}

/// Removes the name of blob segment `name` if it verifiably is a blob that `maker` made: a
/// generated name, a segment of ours ([`crate::mapping`]) whose header has our magic, layout
/// version, kind blob and `maker` as its creator. Anything else is left alone, since a record
/// or entry in shared memory that names it may be corrupt or forged. Needs no ready flag (a
/// blob whose producer died while filling it has none). Returns whether it removed the name.
pub fn remove_if_made_by(name: &str, maker: Option<ProcessIdentity>) -> bool {
    remove_verified(name, maker, false)
}

/// Removes the blob that the dead producer `maker` named in its entry as being made: like
/// [`remove_if_made_by`], and also if the segment's header was never written (a generated name
/// of ours that is shorter than a header, or whose header is all zero): `maker` died between
/// creating the segment and writing its header, and nobody else can name it.
pub fn remove_abandoned(name: &str, maker: ProcessIdentity) -> bool {
    remove_verified(name, Some(maker), true)
}

fn remove_verified(name: &str, maker: Option<ProcessIdentity>, unwritten_too: bool) -> bool {
    let Some(maker) = maker else {
        return false;
    };
    if crate::name::generated_bits(name).is_none() {
        return false;
    }
    let verified = match Segment::peek_header(name) {
        Ok(h) => {
            (h.magic == MAGIC
                && h.layout_version == crate::LAYOUT_VERSION
                && h.kind == SegmentKind::Blob as u32
                && h.creator == maker)
                || (unwritten_too && h.is_unwritten())
        }
        Err(Error::BadSegment {
            reason: BadSegmentReason::TooSmall,
            ..
        }) => unwritten_too,
        Err(_) => false,
    };
    verified && crate::segment::unlink(name).is_ok()
}

/// The environment variable that sets [`process_keep_budget`] (bytes; 0 turns reuse off).
pub const KEEP_BUDGET_ENV: &str = "SHMPIPE_BLOB_KEEP_BYTES";

/// How many bytes of blobs the producers of one process keep in all: the
/// [`KEEP_BUDGET_ENV`] variable if it holds a number; else an eighth of the shared-memory
/// filesystem, at most 1 GiB, on Linux (where `/dev/shm` is often small: 64 MiB in a default
/// Docker container, and there nothing is kept), and 1 GiB elsewhere. Read once.
pub fn process_keep_budget() -> u64 {
    static BUDGET: OnceLock<u64> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        if let Some(bytes) = keep_budget_from_env() {
            return bytes;
        }
        #[cfg(target_os = "linux")]
        {
            let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
            // SAFETY: the path is a NUL-terminated C string and `st` is a valid out pointer
            // that statvfs fills completely when it returns 0.
            if unsafe { libc::statvfs(c"/dev/shm".as_ptr(), st.as_mut_ptr()) } == 0 {
                // SAFETY: statvfs returned 0, so it initialised `st`.
                let st = unsafe { st.assume_init() };
                // The fields are narrower on some 32-bit targets.
                #[allow(clippy::unnecessary_cast)]
                let bytes = (st.f_blocks as u64).saturating_mul(st.f_frsize as u64);
                return (bytes / 8).min(KEEP_CAP);
            }
            0
        }
        #[cfg(not(target_os = "linux"))]
        {
            KEEP_CAP
        }
    })
}

/// [`process_keep_budget`] for blobs in sealed memory ([`crate::Backing::Memfd`]), which
/// `/dev/shm`'s size does not bound: the [`KEEP_BUDGET_ENV`] variable if it holds a number;
/// else an eighth of the memory this process may use (its cgroup's limit, or the machine's),
/// at most [`SEALED_KEEP_CAP`]. Read once.
pub fn sealed_keep_budget() -> u64 {
    static BUDGET: OnceLock<u64> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        keep_budget_from_env().unwrap_or_else(|| {
            crate::memory_limit::memory_size()
                .map_or(KEEP_CAP, |bytes| (bytes / 8).min(SEALED_KEEP_CAP))
        })
    })
}

/// The most [`process_keep_budget`] is by default, and [`sealed_keep_budget`] where the memory
/// size is unknown.
const KEEP_CAP: u64 = 1 << 30;

/// The most [`sealed_keep_budget`] is by default: room for a stream of 1 GiB values to reuse
/// two or three blobs (one the receiver holds, one being filled) instead of making a fresh one
/// for every value, which runs 10 to 20 times slower than the copy.
pub const SEALED_KEEP_CAP: u64 = 4 << 30;

/// The budget [`KEEP_BUDGET_ENV`] sets, if it holds a number.
fn keep_budget_from_env() -> Option<u64> {
    std::env::var(KEEP_BUDGET_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// The keep budget of blobs of `backing`.
fn keep_budget(backing: crate::Backing) -> u64 {
    match backing {
        crate::Backing::Memfd => sealed_keep_budget(),
        _ => process_keep_budget(),
    }
}

/// Bytes of blobs kept now by all the producers of this process.
static KEPT_IN_PROCESS: AtomicU64 = AtomicU64::new(0);

/// Bytes of blobs kept now by all the producers of this process (see [`process_keep_budget`]).
pub fn kept_in_process() -> u64 {
    KEPT_IN_PROCESS.load(Ordering::Relaxed)
}

/// A blob a producer keeps, and the consumer it was sent to.
struct Kept {
    seg: Arc<Segment>,
    /// The consumer generation at commit: another consumer never mapped it.
    consumer: u32,
}

/// The blobs a producer keeps for reuse, oldest first, within its own limit and the process's
/// budget for their backing ([`process_keep_budget`], [`sealed_keep_budget`]). Dropping it gives
/// them all up.
pub struct KeptBlobs {
    blobs: Vec<Kept>,
    limit: u64,
    /// The process's budget for blobs of this producer's backing.
    budget: u64,
}

impl KeptBlobs {
    /// Keeps nothing yet, of blobs in `backing`; its own limit is the process's budget.
    pub fn new(backing: crate::Backing) -> Self {
        let budget = keep_budget(backing);
        Self {
            blobs: Vec::new(),
            limit: budget,
            budget,
        }
    }

    /// Sets how many bytes of blobs are kept; 0 turns reuse off. Gives up what is over it.
    pub fn set_limit(&mut self, bytes: u64) {
        self.limit = bytes;
        self.make_room(0, 0);
    }

    /// The bytes of blobs kept now (those a consumer holds included).
    pub fn kept_bytes(&self) -> u64 {
        self.blobs.iter().map(|k| k.seg.body_len() as u64).sum()
    }

    /// Whether a fresh blob of `len` bytes may be kept once sent.
    pub fn would_keep(&self, len: u64) -> bool {
        len <= self.limit.min(self.budget)
    }

    /// Takes back a blob that consumer `consumer` released and that has room for `len` bytes
    /// (and not more than [`MAX_WASTE_FACTOR`] times that): the smallest such one, now [`SENT`].
    pub fn reuse(&mut self, len: u64, consumer: u32) -> Option<Arc<Segment>> {
        self.reuse_within(len, consumer, MAX_WASTE_FACTOR)
    }

    /// Like [`reuse`](Self::reuse), however large the blob (when no fresh one can be made).
    pub fn reuse_any(&mut self, len: u64, consumer: u32) -> Option<Arc<Segment>> {
        self.reuse_within(len, consumer, u64::MAX)
    }

    /// Gives up the blobs the consumer has released (shared memory is short).
    pub fn give_up_idle(&mut self) {
        self.forget_where(|k| state(&k.seg) & PHASE == RELEASED);
    }

    fn reuse_within(&mut self, len: u64, consumer: u32, factor: u64) -> Option<Arc<Segment>> {
        // Forget what the consumer gave up, or what a consumer no longer attached mapped.
        self.forget_where(|k| k.consumer != consumer || state(&k.seg) & CONSUMER_GONE != 0);
        let fits = |k: &&Kept| {
            let cap = k.seg.body_len() as u64;
            cap >= len && cap / factor <= len && state(&k.seg) == RELEASED
        };
        let best = self
            .blobs
            .iter()
            .filter(fits)
            .min_by_key(|k| k.seg.body_len())?;
        // Acquire: the consumer's reads of the last message happen before our writes.
        state_word(&best.seg)
            .compare_exchange(RELEASED, SENT, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| best.seg.clone())
    }

    /// Keeps a fresh blob that was just sent (its state [`SENT`]), giving up others as needed to
    /// stay within [`MAX_KEPT`], this producer's limit and the process's budget. If the budget
    /// is still short (other producers of the process keep it), gives the new one up instead.
    pub fn keep(&mut self, seg: Segment, consumer: u32) {
        let cap = seg.body_len() as u64;
        if cap > self.limit {
            // The limit was lowered while the blob was being filled.
            give_up(&seg, PRODUCER_GONE);
            return;
        }
        self.make_room(cap, 1);
        let budget = self.budget;
        loop {
            let before = KEPT_IN_PROCESS.fetch_add(cap, Ordering::Relaxed);
            if before + cap <= budget {
                break;
            }
            KEPT_IN_PROCESS.fetch_sub(cap, Ordering::Relaxed);
            if self.blobs.is_empty() {
                give_up(&seg, PRODUCER_GONE);
                return;
            }
            self.forget(self.victim());
        }
        self.blobs.push(Kept {
            seg: Arc::new(seg),
            consumer,
        });
    }

    /// Gives up blobs until `slots` more blobs of `incoming` bytes in all fit this producer's
    /// own limits.
    fn make_room(&mut self, incoming: u64, slots: usize) {
        while !self.blobs.is_empty()
            && (self.blobs.len() + slots > MAX_KEPT || self.kept_bytes() + incoming > self.limit)
        {
            self.forget(self.victim());
        }
    }

    /// The blob to give up first: the oldest idle (released) one, else the oldest.
    fn victim(&self) -> usize {
        self.blobs
            .iter()
            .position(|k| state(&k.seg) & PHASE == RELEASED)
            .unwrap_or(0)
    }

    /// Gives up blob `i` and takes it off the books.
    fn forget(&mut self, i: usize) {
        let k = self.blobs.remove(i);
        give_up(&k.seg, PRODUCER_GONE);
        KEPT_IN_PROCESS.fetch_sub(k.seg.body_len() as u64, Ordering::Relaxed);
    }

    /// Gives up every blob for which `gone` holds, keeping the others in their order.
    fn forget_where(&mut self, mut gone: impl FnMut(&Kept) -> bool) {
        let mut i = 0;
        while i < self.blobs.len() {
            if gone(&self.blobs[i]) {
                self.forget(i);
            } else {
                i += 1;
            }
        }
    }

    /// Gives up every kept blob (the producer closes).
    pub fn clear(&mut self) {
        self.forget_where(|_| true);
    }
}

impl Drop for KeptBlobs {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The consumer's mappings of blobs their producers keep, by name. Dropping it gives them all up.
#[derive(Default)]
pub struct BlobCache {
    blobs: HashMap<String, Arc<Segment>>,
}

impl BlobCache {
    /// The mapping of blob `name` if this consumer mapped it before.
    pub fn get(&self, name: &str) -> Option<Arc<Segment>> {
        self.blobs.get(name).cloned()
    }

    /// Keeps the mapping of a blob just opened if its producer keeps it too; returns it shared.
    pub fn insert(&mut self, seg: Segment) -> Arc<Segment> {
        let seg = Arc::new(seg);
        if state(&seg) == SENT {
            self.blobs.insert(seg.name().to_owned(), seg.clone());
        }
        seg
    }

    /// Keeps the mapping of a blob that a queued record names, until its message is taken: one
    /// its producer does not keep (a sealed blob it held for a consumer not yet registered).
    #[cfg(target_os = "linux")]
    pub fn hold(&mut self, seg: Segment) {
        self.blobs.insert(seg.name().to_owned(), Arc::new(seg));
    }

    /// Number of mappings kept.
    pub fn len(&self) -> usize {
        self.blobs.len()
    }

    /// Unmaps the released blobs that their producer gave up. A blob still `SENT` stays: a
    /// queued record may name it, or a message in it is held.
    pub fn sweep(&mut self) {
        self.blobs.retain(|_, seg| {
            let st = state(seg);
            st & PHASE != RELEASED || st & PRODUCER_GONE == 0
        });
    }

    /// Unmaps the blobs whose producer died, which it can no longer reuse: released ones, and
    /// sent ones that no queued record names (`queued` lists the names that records do, or
    /// `None` if it could not read them all; it is called at most once). A few system calls per
    /// blob: for the consumer's slow path. A message still held keeps its own mapping.
    pub fn sweep_dead(&mut self, queued: impl FnOnce() -> Option<HashSet<String>>) {
        let ours = pid_namespace();
        let mut queued = Some(queued);
        let mut names: Option<Option<HashSet<String>>> = None;
        self.blobs.retain(|name, seg| {
            let h = seg.header();
            let creator: ProcessIdentity = h.creator();
            if h.creator_pid_namespace() != ours || creator.is_alive() {
                return true;
            }
            let st = state(seg);
            if st & PHASE == SENT {
                let names = names.get_or_insert_with(|| queued.take().and_then(|f| f()));
                if names.as_ref().map_or(true, |n| n.contains(name)) {
                    return true; // its message may still be delivered
                }
            }
            give_up(seg, CONSUMER_GONE);
            false
        });
    }

    /// Gives up every mapping (the consumer closes): producers stop reusing them.
    pub fn clear(&mut self) {
        for (_, seg) in self.blobs.drain() {
            give_up(&seg, CONSUMER_GONE);
        }
    }
}

impl Drop for BlobCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn exists(name: &str) -> bool {
        std::path::Path::new("/dev/shm").join(name).exists()
    }

    #[test]
    fn only_the_named_producers_blob_is_removed() {
        let me = ProcessIdentity::current();
        let other = ProcessIdentity {
            pid: me.pid,
            start: me.start.wrapping_add(1),
        };
        let blob = Segment::create(SegmentKind::Blob, 64).unwrap();
        assert!(!remove_if_made_by(blob.name(), Some(other)));
        assert!(!remove_if_made_by(blob.name(), None));
        assert!(
            !remove_abandoned(blob.name(), other),
            "written: judged by creator"
        );
        assert!(exists(blob.name()));
        assert!(remove_if_made_by(blob.name(), Some(me)));
        assert!(!exists(blob.name()));

        let queue = Segment::create(SegmentKind::Queue, 64).unwrap();
        assert!(!remove_if_made_by(queue.name(), Some(me)));
        assert!(!remove_abandoned(queue.name(), me));
        assert!(exists(queue.name()));

        // A header never written: only as what a dead producer's entry names.
        let unwritten = Segment::create(SegmentKind::Blob, 64).unwrap();
        unwritten.header().forge(|f| {
            f.magic = 0;
            f.layout_version = 0;
            f.kind = 0;
            f.body_size = 0;
            f.creator = ProcessIdentity { pid: 0, start: 0 };
            f.creator_pid_ns = 0;
            f.ready = false;
        });
        assert!(!remove_if_made_by(unwritten.name(), Some(me)));
        assert!(exists(unwritten.name()));
        assert!(remove_abandoned(unwritten.name(), other));
        assert!(!exists(unwritten.name()));
    }
}
