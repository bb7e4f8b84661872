//! The ring: one queue's mapping as every handle of this process shares it, and the rules for
//! reading and writing its records.
//!
//! This is the bottom of the queue: the queue handle, the producers and the consumer all reach
//! shared memory through a [`Ring`], and it knows nothing of them. It owns the only raw pointers
//! into the segment, derived once from a layout validated here ([`Ring::create`],
//! [`Ring::from_segment`]), and the rules every side shares:
//!
//! - a record's header is written by [`Ring::write_header`] alone, its state then moved on by
//!   [`Ring::set_state`], and its stamp read by [`Ring::stamp_state`];
//! - the consumer's process is read by [`Ring::consumer_process`], a record's producer by
//!   [`Ring::record_maker`]; whether a registered process lives is judged by
//!   [`Ring::consumer_alive`] and [`Ring::producer_alive`] alone;
//! - a blob record's descriptor is read by [`Ring::read_descriptor`];
//! - the membership word changes by [`Ring::count_membership`], the single-producer `published`
//!   cursor by [`Ring::publish`].
//!
//! Every value read from shared memory is checked before it is used as a size or an offset: a
//! hostile or crashed peer can write any bits there.

use super::layout::{
    consumer_state, entry, kind, pos_distance, stamp, state, BlobDescriptor, Cursor, EntryWord,
    Geometry, ProducerEntry, QueueHeader, RecordHeader, BLOB_DESCRIPTOR_SIZE, MAX_CAPACITY,
    MAX_DATA_UNITS, MAX_PRODUCERS, MEMBERSHIP_ENDED, MIN_DATA_BYTES, POS_MASK, PRODUCER_ENTRY_SIZE,
    UNIT,
};
use crate::backing::Backing;
use crate::error::{BadSegmentReason, Error, Result};
use crate::event::EventWord;
use crate::name::{generated_bits, validate_name};
use crate::process::ProcessIdentity;
use crate::segment::{Segment, SegmentKind};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};

/// State shared by every handle of one queue in one process: the mapping and the validated,
/// process-local copy of the configuration (never re-read from shared memory).
///
/// Aligned to 128 bytes so that the `Arc` reference counts (touched for every received message)
/// do not share a cache line with the configuration the producers read for every message.
#[repr(C, align(128))]
pub(crate) struct Ring {
    pub segment: Segment,
    pub capacity: u64,
    pub max_producers: u32,
    pub data_units: u64,
    pub mask: u64,
    pub key: u64,
    /// Records of this process's consumer released out of order and not yet passed by the head;
    /// while zero, releasing needs no scan for RELEASED records. (It can go negative when the
    /// head passes records a previous consumer released; any non-zero value means "scan".)
    pub out_of_order: AtomicIsize,
    /// [`crate::Message`] handles of this process's consumer not yet dropped; while zero, the
    /// consumer is the only thread releasing records.
    pub held: AtomicUsize,
    /// This process holds the receiver role while no consumer has registered (see
    /// [`crate::Queue::hold_receiver_role`]).
    pub receiver_held_here: AtomicBool,
    header: *const QueueHeader,
    producers: *const ProducerEntry,
    data: *mut u8,
}

// SAFETY: the raw pointers point into `segment`'s mapping, which lives as long as `self`; all
// shared state behind them is atomics, and payload bytes are only accessed under the record
// protocol (a producer owns a record from claim to commit, the consumer from commit to release).
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// Creates a queue segment under a fresh random name, with the given sizes (already checked
    /// against the layout's limits by the caller), and maps it. In sealed memory, first sweeps
    /// the records that killed pipes left ([`crate::rendezvous::sweep`], throttled).
    pub fn create(
        capacity: u32,
        max_producers: u32,
        data_units: u64,
        backing: Backing,
    ) -> Result<Self> {
        let geometry = Geometry::new(max_producers, data_units);
        // What killed pipes left: their records (their memory went with their last holder).
        #[cfg(target_os = "linux")]
        if backing == Backing::Memfd {
            crate::rendezvous::sweep();
        }
        // Room in a sealed ring's record for every producer in a process of its own, the
        // consumer, the creator and a few more holders.
        let holders = max_producers.saturating_add(8);
        let segment = Segment::create_in(SegmentKind::Queue, geometry.body_size, backing, holders)?;
        let key = rand::random::<u64>() | (1 << 63);
        // SAFETY: the body is at least `geometry.body_size` bytes and aligned to a page, and the
        // mapping lives as long as `segment`; QueueHeader is all atomics (any bits a peer writes
        // are a valid value) and fits before `producers_offset`.
        let header = unsafe { &*(segment.body_ptr() as *const QueueHeader) };
        let c = &header.config;
        c.capacity.store(capacity, Ordering::Relaxed);
        c.max_producers.store(max_producers, Ordering::Relaxed);
        c.data_units.store(geometry.data_units, Ordering::Relaxed);
        c.producers_offset
            .store(geometry.producers_offset, Ordering::Relaxed);
        c.data_offset.store(geometry.data_offset, Ordering::Relaxed);
        c.stamp_key.store(key, Ordering::Relaxed);
        segment.publish_ready();
        Self::from_segment(segment)
    }

    /// Maps a queue segment, validating its configuration: the sizes are within the layout's
    /// limits and the regions they imply fit in the segment. The validated copy is the only one
    /// used from then on, so a peer that rewrites the configuration later changes nothing here.
    pub fn from_segment(segment: Segment) -> Result<Self> {
        let corrupt = || Error::BadSegment {
            name: segment.name().to_owned(),
            reason: BadSegmentReason::Corrupt,
        };
        let body_len = segment.body_len() as u64;
        if body_len < std::mem::size_of::<QueueHeader>() as u64 {
            return Err(Error::BadSegment {
                name: segment.name().to_owned(),
                reason: BadSegmentReason::TooSmall,
            });
        }
        // SAFETY: the body holds at least a QueueHeader (checked above) and is page-aligned; the
        // header is all atomics, so any bits a peer wrote there are a valid value.
        let header = unsafe { &*(segment.body_ptr() as *const QueueHeader) };
        let c = &header.config;
        let capacity = c.capacity.load(Ordering::Relaxed);
        let max_producers = c.max_producers.load(Ordering::Relaxed);
        let data_units = c.data_units.load(Ordering::Relaxed);
        let key = c.stamp_key.load(Ordering::Relaxed);
        let ok_sizes = (1..=MAX_CAPACITY).contains(&capacity)
            && (1..=MAX_PRODUCERS).contains(&max_producers)
            && data_units.is_power_of_two()
            && (MIN_DATA_BYTES / UNIT..=MAX_DATA_UNITS).contains(&data_units)
            && key >> 63 == 1;
        if !ok_sizes {
            return Err(corrupt());
        }
        let geometry = Geometry::new(max_producers, data_units);
        if c.producers_offset.load(Ordering::Relaxed) != geometry.producers_offset
            || c.data_offset.load(Ordering::Relaxed) != geometry.data_offset
            || body_len < geometry.body_size
        {
            return Err(corrupt());
        }
        debug_assert_eq!(
            PRODUCER_ENTRY_SIZE as usize,
            std::mem::size_of::<ProducerEntry>()
        );
        let body = segment.body_ptr();
        // SAFETY: both offsets are below `geometry.body_size`, which is at most the body length
        // (checked just above), so the pointers stay inside the mapping.
        let (producers, data) = unsafe {
            (
                body.add(geometry.producers_offset as usize) as *const ProducerEntry,
                body.add(geometry.data_offset as usize),
            )
        };
        Ok(Self {
            header: header as *const QueueHeader,
            producers,
            data,
            segment,
            capacity: capacity as u64,
            max_producers,
            data_units,
            mask: data_units - 1,
            key,
            out_of_order: AtomicIsize::new(0),
            held: AtomicUsize::new(0),
            receiver_held_here: AtomicBool::new(false),
        })
    }

    /// The control block.
    #[inline]
    pub fn header(&self) -> &QueueHeader {
        // SAFETY: `header` points at the body start, validated to hold a QueueHeader (all
        // atomics, so any bits are valid), and the mapping lives as long as `self`.
        unsafe { &*self.header }
    }

    /// Producer entry `index`, which must be below `max_producers`.
    #[inline]
    pub fn producer_entry(&self, index: u32) -> &ProducerEntry {
        assert!(index < self.max_producers);
        // SAFETY: validated on open: `max_producers` entries (all atomics) fit before the data
        // area, and `index` is below it (asserted above).
        unsafe { &*self.producers.add(index as usize) }
    }

    /// Offset of `pos` in the ring, in units.
    #[inline]
    pub fn offset(&self, pos: u64) -> u64 {
        pos & self.mask
    }

    /// The record header at position `pos`.
    #[inline]
    pub fn record(&self, pos: u64) -> &RecordHeader {
        // SAFETY: the offset is masked below `data_units`, the data area holds `data_units`
        // units (validated on open), and a RecordHeader is one unit of atomics (any bits valid).
        unsafe { &*(self.data.add((self.offset(pos) * UNIT) as usize) as *const RecordHeader) }
    }

    /// Pointer to the payload of the record at `pos`. Whoever reads or writes through it checks
    /// first that the record's units fit before the end of the ring ([`Ring::checked_units`],
    /// [`Ring::contiguous`]).
    #[inline]
    pub fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: the offset is masked below `data_units`, so one unit past it is at most the
        // end of the data area (validated on open to lie inside the mapping).
        unsafe { self.data.add(((self.offset(pos) + 1) * UNIT) as usize) }
    }

    /// The stamp for `pos` in `st`.
    #[inline]
    pub fn stamp(&self, pos: u64, st: u64) -> u64 {
        stamp(self.key, pos, st)
    }

    /// The state of a record at `pos` whose stamp reads `stamp_value`, if that is a valid stamp
    /// of `pos` (stale bytes of an earlier lap or another queue never are).
    #[inline]
    pub fn stamp_state(&self, pos: u64, stamp_value: u64) -> Option<u64> {
        let st = (stamp_value ^ self.key) & 0b111;
        (stamp_value == self.stamp(pos, st) && (state::WRITING..=state::RELEASED).contains(&st))
            .then_some(st)
    }

    /// Writes the header of the record at `pos`, with `st`'s stamp last (Release): a reader that
    /// sees the stamp sees the rest. `producer` is the (slot index, generation) of the producer
    /// registration the record belongs to.
    #[inline(always)]
    pub fn write_header(
        &self,
        pos: u64,
        units: u64,
        len: u64,
        record_kind: u32,
        producer: (u32, u32),
        st: u64,
    ) {
        let rec = self.record(pos);
        rec.len.store(len, Ordering::Relaxed);
        rec.units.store(units as u32, Ordering::Relaxed);
        rec.kind.store(record_kind, Ordering::Relaxed);
        rec.producer.store(producer.0, Ordering::Relaxed);
        rec.generation.store(producer.1, Ordering::Relaxed);
        rec.stamp.store(self.stamp(pos, st), Ordering::Release);
    }

    /// Moves the record at `pos`, whose header is written, to state `st` (Release: a reader
    /// that sees the new stamp sees what was written before it).
    #[inline(always)]
    pub fn set_state(&self, pos: u64, st: u64) {
        self.record(pos)
            .stamp
            .store(self.stamp(pos, st), Ordering::Release);
    }

    /// Size of the inline data area (the ring) in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.data_units * UNIT
    }

    /// Largest payload stored inline (its record, rounded to whole lines, is half the ring).
    pub fn max_inline(&self) -> u64 {
        (self.data_units / 2 - 2) * UNIT
    }

    /// Units from `pos` to the end of the ring.
    #[inline]
    pub fn contiguous(&self, pos: u64) -> u64 {
        self.data_units - self.offset(pos)
    }

    /// The error for a corrupted segment.
    pub fn corrupt(&self) -> Error {
        Error::BadSegment {
            name: self.segment.name().to_owned(),
            reason: BadSegmentReason::Corrupt,
        }
    }

    /// A record's unit count, checked to fit between `pos` and the end of the ring.
    #[inline]
    pub fn checked_units(&self, pos: u64, rec: &RecordHeader) -> Result<u64> {
        let units = rec.units.load(Ordering::Relaxed) as u64;
        if units == 0 || units > self.contiguous(pos) {
            return Err(self.corrupt());
        }
        Ok(units)
    }

    /// The process registered as the consumer (meaningful while its state is ACTIVE).
    /// The abstract socket address of the mailbox through which producers pass sealed blobs to
    /// the consumer of `generation` ([`crate::fd_mailbox`]): unguessable to other users, since
    /// it carries the queue's stamp key, which only processes that map the queue can read.
    #[cfg(target_os = "linux")]
    pub fn mailbox_address(&self, generation: u32) -> Vec<u8> {
        let key = self.header().config.stamp_key.load(Ordering::Relaxed);
        format!("shmpipe/{}/{generation}/{key:016x}", self.segment.name()).into_bytes()
    }

    /// Whether large messages travel in sealed memory: the ring does ([`crate::Backing::Memfd`]).
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub fn sealed_blobs(&self) -> bool {
        self.segment.backing() == crate::Backing::Memfd
    }

    /// The presence-mark slot of the consumer ([`crate::presence`]).
    pub const CONSUMER_MARK: u32 = 0;

    /// The presence-mark slot of producer slot `index`.
    pub fn producer_mark(index: u32) -> u32 {
        1 + index
    }

    /// Takes presence-mark `slot` for a registration about to claim its entry.
    pub fn take_mark(&self, slot: u32) -> crate::presence::Taken {
        #[cfg(target_os = "linux")]
        {
            crate::presence::take(self.segment.fd(), slot)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = slot;
            crate::presence::Taken::Unavailable
        }
    }

    /// Whether the consumer registered as `packed` (its state word as read) is alive, as far as
    /// this process can tell ([`Ring::registrant_alive`]).
    pub fn consumer_alive(&self, packed: u64) -> bool {
        let c = &self.header().consumer;
        self.registrant_alive(
            Self::CONSUMER_MARK,
            self.consumer_process(),
            c.pid_ns.load(Ordering::Relaxed),
            c.marked.load(Ordering::Relaxed) == 1,
            || c.state.load(Ordering::Acquire) == packed,
        )
    }

    /// Whether the producer registered in slot `index` as `word` is alive, as far as this process
    /// can tell ([`Ring::registrant_alive`]). A slot still REGISTERING has no trustworthy start
    /// stamp yet, so only its pid is checked there (a recycled pid then reads as alive: the safe
    /// side).
    pub fn producer_alive(&self, index: u32, word: EntryWord) -> bool {
        let e = &self.producer_entry(index).identity;
        let start = if word.state == entry::REGISTERING {
            0
        } else {
            e.start.load(Ordering::Relaxed)
        };
        self.registrant_alive(
            Self::producer_mark(index),
            ProcessIdentity {
                pid: word.pid,
                start,
            },
            e.pid_ns.load(Ordering::Relaxed),
            e.marked.load(Ordering::Relaxed) == 1,
            || e.load() == word,
        )
    }

    /// The one liveness rule for a registration (`who`, of PID namespace `pid_ns`, `marked` if
    /// it took presence mark `slot`; `unchanged` says the registration is still the one seen):
    ///
    /// - a held mark means alive, in any namespace (the mark is taken before the entry is
    ///   claimed and dropped after its last state is stored);
    /// - in this PID namespace (or where either namespace is unknown), the pid and start time
    ///   decide, as they always did;
    /// - in another PID namespace the pid means nothing here. A registration that took a mark
    ///   and no longer holds it is dead, unless it changed meanwhile (it closed: its final state
    ///   is stored before the mark goes). One without a mark cannot be judged, and counts as
    ///   alive: a crash over there then goes unnoticed until a timeout, which is why marks are
    ///   taken wherever `/proc` allows.
    fn registrant_alive(
        &self,
        slot: u32,
        who: ProcessIdentity,
        pid_ns: u32,
        marked: bool,
        unchanged: impl Fn() -> bool,
    ) -> bool {
        #[cfg(target_os = "linux")]
        if crate::presence::is_held(self.segment.fd(), slot) == Some(true) {
            return true;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = slot;
        let ours = crate::process::own_pid_namespace();
        if pid_ns == 0 || ours == 0 || pid_ns == ours {
            return who.is_alive();
        }
        !marked || !unchanged()
    }

    pub fn consumer_process(&self) -> ProcessIdentity {
        let c = &self.header().consumer;
        ProcessIdentity {
            pid: c.pid.load(Ordering::Relaxed),
            start: c.start.load(Ordering::Relaxed),
        }
    }

    /// The process that made the records of producer registration (`index`, `generation`), if
    /// that registration still holds its slot (as it does while any record of it is unreleased).
    pub fn record_maker(&self, index: u32, generation: u32) -> Option<ProcessIdentity> {
        if index >= self.max_producers {
            return None;
        }
        let e = self.producer_entry(index);
        let word = e.identity.load();
        let registered = matches!(word.state, entry::ACTIVE | entry::CLOSED | entry::DEAD);
        (registered && word.generation == generation).then(|| ProcessIdentity {
            pid: word.pid,
            start: e.identity.start.load(Ordering::Relaxed),
        })
    }

    /// The descriptor of the blob record at `pos` whose header gives `len`, checked to lie in
    /// the record.
    pub fn read_descriptor(&self, pos: u64, len: u64) -> Result<BlobDescriptor> {
        let units = self.checked_units(pos, self.record(pos))?;
        if len != BLOB_DESCRIPTOR_SIZE || (units - 1) * UNIT < BLOB_DESCRIPTOR_SIZE {
            return Err(self.corrupt());
        }
        // SAFETY: the record's payload holds at least a descriptor (checked above), inside the
        // ring (`checked_units`); any bit pattern is a valid BlobDescriptor (integers and bytes),
        // and read_unaligned needs no alignment. A peer writing it meanwhile can only change
        // which bits are read, and the name is validated by `descriptor_name`.
        Ok(unsafe { (self.payload(pos) as *const BlobDescriptor).read_unaligned() })
    }

    /// The name of the blob segment described by the record at `pos`, if the descriptor is valid.
    pub fn blob_name_at(&self, pos: u64, len: u64) -> Option<String> {
        let desc = self.read_descriptor(pos, len).ok()?;
        descriptor_name(&desc).map(str::to_owned)
    }

    /// Removes the segments of blob messages committed from `from` on: called when the consumer
    /// is gone (closed, or found dead), since nobody will map them now. Removal is idempotent, so
    /// several processes may sweep at once; a producer that commits a blob after the consumer
    /// closed removes its own (see `Producer::commit`). Only names that verifiably are their
    /// record's producer's blobs are removed ([`crate::blob::remove_if_made_by`]).
    pub fn remove_undelivered_blobs(&self, from: u64) {
        let _ = self.for_each_queued_blob(from, |name, maker| {
            crate::blob::remove_if_made_by(name, maker);
        });
    }

    /// Calls `f` with the name of every blob that a committed record from `from` on describes,
    /// and the process that made the record (if its registration still holds the slot).
    /// Returns whether it read every record up to the tail (it stops at a record whose header is
    /// not written yet, or not valid).
    pub fn for_each_queued_blob(
        &self,
        from: u64,
        mut f: impl FnMut(&str, Option<ProcessIdentity>),
    ) -> bool {
        let tail = Cursor(self.header().tail.load(Ordering::Acquire)).pos();
        let mut pos = from;
        while pos != tail {
            let rec = self.record(pos);
            let Some(st) = self.stamp_state(pos, rec.stamp.load(Ordering::Acquire)) else {
                return false; // claimed but no header yet: its size is unknown
            };
            let Ok(units) = self.checked_units(pos, rec) else {
                return false;
            };
            if st == state::COMMITTED && rec.kind.load(Ordering::Relaxed) == kind::BLOB {
                let len = rec.len.load(Ordering::Relaxed);
                if let Some(name) = self.blob_name_at(pos, len) {
                    let maker = self.record_maker(
                        rec.producer.load(Ordering::Relaxed),
                        rec.generation.load(Ordering::Relaxed),
                    );
                    f(&name, maker);
                }
            }
            pos = (pos + units) & POS_MASK;
        }
        true
    }

    /// Whether the consumer may wait on [`QueueHeader::published`] (single-producer queues).
    #[inline]
    pub fn uses_published(&self) -> bool {
        self.max_producers == 1
    }

    /// Moves [`QueueHeader::published`] to `end`, the position just past a record the producer
    /// finished. With `latest` (the record is the producer's latest claim, and only its producer
    /// thread calls with `latest`), a plain store: every other finisher moves the cursor to an
    /// earlier end by CAS, only forward, so the cursor never moves back.
    #[inline]
    pub fn publish(&self, end: u64, latest: bool) {
        if !self.uses_published() {
            return;
        }
        let published = &self.header().published;
        if latest {
            published.store(end, Ordering::Release);
            return;
        }
        let mut current = published.load(Ordering::Relaxed);
        // Forward means less than half the position space ahead (a ring is far smaller).
        while (1..=POS_MASK / 2).contains(&pos_distance(current, end)) {
            match published.compare_exchange_weak(
                current,
                end,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts a producer registering (`joining`) or leaving in [`QueueHeader::membership`],
    /// keeping its [`MEMBERSHIP_ENDED`] bit. A registration fails, changing nothing, once the
    /// stream has ended; returns whether the count changed.
    pub fn count_membership(&self, joining: bool) -> bool {
        let word = &self.header().membership;
        let mut current = word.load(Ordering::Acquire);
        loop {
            if joining && current & MEMBERSHIP_ENDED != 0 {
                return false;
            }
            let next = (current & MEMBERSHIP_ENDED) | (current.wrapping_add(1) & !MEMBERSHIP_ENDED);
            match word.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => current = actual,
            }
        }
    }

    /// Both event words, for cancel tokens to kick.
    pub fn events(&self) -> Vec<*const EventWord> {
        let h = self.header();
        vec![
            &*h.data_event as *const EventWord,
            &*h.space_event as *const EventWord,
        ]
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // The creator's last handle: with no live consumer (none ever registered, it closed, or
        // its process died), nobody will map the blobs still queued, so remove them with the
        // queue. A live consumer elsewhere keeps receiving (its mapping outlives the name).
        let c = &self.header().consumer;
        let packed = c.state.load(Ordering::Acquire);
        let live_consumer = consumer_state(packed) == entry::ACTIVE && self.consumer_alive(packed);
        if self.segment.is_owner() && !live_consumer {
            let head = Cursor(self.header().head.load(Ordering::Acquire));
            self.remove_undelivered_blobs(head.pos());
        }
    }
}

/// The blob name a descriptor gives, if it is a valid name that this library generates.
pub(crate) fn descriptor_name(desc: &BlobDescriptor) -> Option<&str> {
    let n = usize::try_from(desc.name_len)
        .ok()
        .filter(|&n| n <= desc.name.len())?;
    let name = std::str::from_utf8(&desc.name[..n]).ok()?;
    (validate_name(name).is_ok() && generated_bits(name).is_some()).then_some(name)
}
