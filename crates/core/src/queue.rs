//! A queue segment: creation, validation on open, and registration of producers and the consumer.

use crate::consumer::Consumer;
use crate::error::{BadSegmentReason, Error, Result};
use crate::event::{CancelToken, EventWord};
use crate::layout::{
    consumer_generation, consumer_state, entry, kind, pack_consumer, pos_distance, stamp, state,
    Cursor, EntryWord, Geometry, ProducerEntry, QueueHeader, RecordHeader, GENERATION_MASK,
    MAX_CAPACITY, MAX_DATA_UNITS, MAX_PRODUCERS, MEMBERSHIP_ENDED, MIN_DATA_BYTES, PENDING_VALID,
    POS_MASK, PRODUCER_ENTRY_SIZE, UNIT,
};
use crate::process::ProcessIdentity;
use crate::producer::Producer;
use crate::segment::{Segment, SegmentKind};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long `open` waits for a segment whose creator has not yet published it.
const OPEN_READY_TIMEOUT: Duration = Duration::from_secs(2);

/// Sizes chosen when a queue is created.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    /// Most messages in flight (sent and not yet released), 1 to 8,388,607.
    pub capacity: u32,
    /// Bytes of the inline data area, rounded up to a power of two (at least 4 KiB). Messages up
    /// to half of it are stored inline; larger ones travel in a segment of their own.
    pub bytes: u64,
    /// Producer slots (distinct live `Producer` handles at once), 1 to 4096. With 1, the queue
    /// is single-producer and claims space without a locked instruction; a slot whose process
    /// died is not reused, so such a queue takes no new producer after a producer crash.
    pub max_producers: u32,
}

/// The defaults of the Node package's `createSharedMemoryPair`: 1024 messages, a 16 MiB ring and
/// 64 producers. The ring is small enough for a couple of queues and a large message in a Docker
/// container's 64 MB `/dev/shm`, and large enough for messages up to 8 MiB to stay inline.
impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            capacity: 1024,
            bytes: 16 << 20,
            max_producers: 64,
        }
    }
}

/// State shared by every handle of one queue in one process: the mapping and the validated,
/// process-local copy of the configuration (never re-read from shared memory).
///
/// Aligned to 128 bytes so that the `Arc` reference counts (touched for every received message)
/// do not share a cache line with the configuration the producers read for every message.
#[repr(C, align(128))]
pub(crate) struct QueueShared {
    pub segment: Segment,
    pub capacity: u64,
    pub max_producers: u32,
    pub data_units: u64,
    pub mask: u64,
    pub key: u64,
    /// Records of this process's consumer released out of order and not yet passed by the head;
    /// while zero, releasing needs no scan for RELEASED records. (It can go negative when the
    /// head passes records a previous consumer released; any non-zero value means "scan".)
    pub out_of_order: std::sync::atomic::AtomicIsize,
    /// [`crate::Message`] handles of this process's consumer not yet dropped; while zero, the
    /// consumer is the only thread releasing records.
    pub held: std::sync::atomic::AtomicUsize,
    /// This process holds the receiver role while no consumer has registered (see
    /// [`Queue::hold_receiver_role`]).
    pub receiver_held_here: std::sync::atomic::AtomicBool,
    header: *const QueueHeader,
    producers: *const ProducerEntry,
    data: *mut u8,
}

// SAFETY: the raw pointers point into `segment`'s mapping, which lives as long as `self`; all
// shared state behind them is atomics, and payload bytes are only accessed under the record
// protocol (a producer owns a record from claim to commit, the consumer from commit to release).
unsafe impl Send for QueueShared {}
// SAFETY: as above.
unsafe impl Sync for QueueShared {}

impl QueueShared {
    /// The control block.
    #[inline]
    pub fn header(&self) -> &QueueHeader {
        // SAFETY: `header` points at the body start, validated to hold a QueueHeader (all atomics).
        unsafe { &*self.header }
    }

    /// Producer entry `index`, which must be below `max_producers`.
    #[inline]
    pub fn producer_entry(&self, index: u32) -> &ProducerEntry {
        assert!(index < self.max_producers);
        // SAFETY: validated on open: `max_producers` entries fit before the data area.
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
        // SAFETY: the offset is below `data_units`, and the data area holds `data_units` units.
        unsafe { &*(self.data.add((self.offset(pos) * UNIT) as usize) as *const RecordHeader) }
    }

    /// Pointer to the payload of the record at `pos`.
    #[inline]
    pub fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: as in `record`; the payload starts one unit in and the record's units were
        // checked to fit before the end of the ring by whoever calls this.
        unsafe { self.data.add(((self.offset(pos) + 1) * UNIT) as usize) }
    }

    /// The stamp for `pos` in `st`.
    #[inline]
    pub fn stamp(&self, pos: u64, st: u64) -> u64 {
        stamp(self.key, pos, st)
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
        let tail = crate::layout::Cursor(self.header().tail.load(Ordering::Acquire)).pos();
        let mut pos = from;
        while pos != tail {
            let rec = self.record(pos);
            let Some(st) = stamp_state(self, pos, rec.stamp.load(Ordering::Acquire)) else {
                return false; // claimed but no header yet: its size is unknown
            };
            let Ok(units) = self.checked_units(pos, rec) else {
                return false;
            };
            if st == state::COMMITTED && rec.kind.load(Ordering::Relaxed) == kind::BLOB {
                let len = rec.len.load(Ordering::Relaxed);
                if let Some(name) = crate::consumer::blob_name_at(self, pos, len) {
                    let maker = crate::consumer::record_maker(
                        self,
                        rec.producer.load(Ordering::Relaxed),
                        rec.generation.load(Ordering::Relaxed),
                    );
                    f(&name, maker);
                }
            }
            pos = (pos + units) & crate::layout::POS_MASK;
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

    /// Both event words, for cancel tokens to kick.
    pub fn events(&self) -> Vec<*const EventWord> {
        let h = self.header();
        vec![
            &*h.data_event as *const EventWord,
            &*h.space_event as *const EventWord,
        ]
    }
}

impl Drop for QueueShared {
    fn drop(&mut self) {
        // The creator's last handle: with no live consumer (none ever registered, it closed, or
        // its process died), nobody will map the blobs still queued, so remove them with the
        // queue. A live consumer elsewhere keeps receiving (its mapping outlives the name).
        let c = &self.header().consumer;
        let live_consumer = consumer_state(c.state.load(Ordering::Acquire)) == entry::ACTIVE
            && ProcessIdentity {
                pid: c.pid.load(Ordering::Relaxed),
                start: c.start.load(Ordering::Relaxed),
            }
            .is_alive();
        if self.segment.is_owner() && !live_consumer {
            let head = crate::layout::Cursor(self.header().head.load(Ordering::Acquire));
            self.remove_undelivered_blobs(head.pos());
        }
    }
}

/// A handle on a queue segment. Producers and the consumer are registered through it.
///
/// The creator's handles own the segment: the name is removed when the last of them (this
/// `Queue` and every `Producer`/`Consumer` made from it) is dropped.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<QueueShared>,
}

fn invalid(name: &'static str, expected: &'static str) -> Error {
    Error::InvalidArgument { name, expected }
}

impl Queue {
    /// Creates a queue under a fresh random name.
    pub fn create(opts: &QueueOptions) -> Result<Self> {
        if opts.capacity == 0 || opts.capacity > MAX_CAPACITY {
            return Err(invalid("capacity", "1 to 8388607 messages"));
        }
        if opts.max_producers == 0 || opts.max_producers > MAX_PRODUCERS {
            return Err(invalid("maxSenders", "1 to 4096 senders"));
        }
        let data_bytes = opts
            .bytes
            .max(MIN_DATA_BYTES)
            .checked_next_power_of_two()
            .filter(|b| b / UNIT <= MAX_DATA_UNITS)
            .ok_or(Error::TooLarge {
                requested: opts.bytes,
                limit: MAX_DATA_UNITS * UNIT,
            })?;
        let geometry = Geometry::new(opts.max_producers, data_bytes / UNIT);
        let segment = Segment::create(SegmentKind::Queue, geometry.body_size)?;
        let key = rand::random::<u64>() | (1 << 63);
        // SAFETY: the body is at least `geometry.body_size` bytes, zero-filled by the OS, and
        // aligned to a page; QueueHeader is all atomics and fits before `producers_offset`.
        let header = unsafe { &*(segment.body_ptr() as *const QueueHeader) };
        let c = &header.config;
        c.capacity.store(opts.capacity, Ordering::Relaxed);
        c.max_producers.store(opts.max_producers, Ordering::Relaxed);
        c.data_units.store(geometry.data_units, Ordering::Relaxed);
        c.producers_offset
            .store(geometry.producers_offset, Ordering::Relaxed);
        c.data_offset.store(geometry.data_offset, Ordering::Relaxed);
        c.stamp_key.store(key, Ordering::Relaxed);
        segment.publish_ready();
        Self::from_segment(segment)
    }

    /// Opens the queue named `name`, validating its layout.
    pub fn open(name: &str) -> Result<Self> {
        let segment = Segment::open(name, SegmentKind::Queue, OPEN_READY_TIMEOUT)?;
        Self::from_segment(segment)
    }

    fn from_segment(segment: Segment) -> Result<Self> {
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
        // SAFETY: the body holds at least a QueueHeader (checked above); it is all atomics.
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
        // SAFETY: offsets were checked against the body length just above.
        let (producers, data) = unsafe {
            (
                body.add(geometry.producers_offset as usize) as *const ProducerEntry,
                body.add(geometry.data_offset as usize),
            )
        };
        Ok(Self {
            shared: Arc::new(QueueShared {
                header: header as *const QueueHeader,
                producers,
                data,
                segment,
                capacity: capacity as u64,
                max_producers,
                data_units,
                mask: data_units - 1,
                key,
                out_of_order: std::sync::atomic::AtomicIsize::new(0),
                held: std::sync::atomic::AtomicUsize::new(0),
                receiver_held_here: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// Says whether this process holds the receiver role although no consumer has registered
    /// yet (the unused receiver of a pair). While it does, a large message sent before the
    /// receiver registers is this process's to remove if a signal ends it: no other process can
    /// be its receiver. Off, such a message is handed over to the receiver yet to come, as one
    /// sent to a registered receiver of another process is.
    pub fn hold_receiver_role(&self, held: bool) {
        self.shared
            .receiver_held_here
            .store(held, Ordering::Release);
    }

    /// The name to pass to other processes so they can [`open`](Self::open) this queue.
    pub fn name(&self) -> &str {
        self.shared.segment.name()
    }

    /// Most messages in flight.
    pub fn capacity(&self) -> u32 {
        self.shared.capacity as u32
    }

    /// Size of the inline data area in bytes.
    pub fn data_bytes(&self) -> u64 {
        self.shared.data_bytes()
    }

    /// Largest message stored inline; larger ones get a segment of their own.
    pub fn max_inline(&self) -> u64 {
        self.shared.max_inline()
    }

    /// Messages sent and not yet released, as of now.
    pub fn len(&self) -> u64 {
        let h = self.shared.header();
        let head = crate::layout::Cursor(h.head.load(Ordering::Acquire));
        let tail = crate::layout::Cursor(h.tail.load(Ordering::Acquire));
        tail.msgs_since(head)
    }

    /// Whether no message is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A token whose `cancel` interrupts waits on this queue's handles that were given it.
    pub fn cancel_token(&self) -> CancelToken {
        CancelToken::new(self.shared.events(), self.shared.clone())
    }

    /// Registers a producer in this process. Takes a free slot, one whose producer closed and
    /// whose messages were all consumed, or one whose producer died once nothing it was claiming
    /// is still ahead of the consumer (so crashed producers do not use slots up).
    ///
    /// Refused, since nothing it sent would be received, once the consumer has closed
    /// ([`Error::ConsumerClosed`]) or the stream has ended ([`Error::StreamEnded`]: the consumer
    /// found every producer closed and every message read; see [`Consumer`]).
    pub fn producer(&self) -> Result<Producer> {
        let me = ProcessIdentity::current();
        let s = &self.shared;
        let h = s.header();
        if consumer_state(h.consumer.state.load(Ordering::Acquire)) == entry::CLOSED {
            return Err(Error::ConsumerClosed);
        }
        if h.membership.load(Ordering::Acquire) & MEMBERSHIP_ENDED != 0 {
            return Err(Error::StreamEnded);
        }
        for index in 0..s.max_producers {
            let e = s.producer_entry(index);
            let seen = e.identity.load();
            if !self.slot_reusable(e, seen) {
                continue;
            }
            let generation = seen.generation.wrapping_add(1) & GENERATION_MASK;
            let registering = EntryWord {
                state: entry::REGISTERING,
                generation,
                pid: me.pid,
            };
            if !e.identity.replace(seen, registering) {
                continue;
            }
            if let Some(name) = e.claims.blob_name() {
                // A previous owner died while making a blob it never queued.
                let previous = ProcessIdentity {
                    pid: seen.pid,
                    start: e.identity.start.load(Ordering::Relaxed),
                };
                crate::blob::remove_abandoned(&name, previous);
                e.claims.clear_blob_name();
            }
            e.identity.start.store(me.start, Ordering::Relaxed);
            e.claims.pending_pos.store(0, Ordering::Relaxed);
            e.claims.committed.store(0, Ordering::Relaxed);
            e.claims.claimed_end.store(0, Ordering::Relaxed);
            e.consumed.reset();
            e.identity.word.store(
                EntryWord {
                    state: entry::ACTIVE,
                    ..registering
                }
                .pack(),
                Ordering::Release,
            );
            if !bump_membership(h, true) {
                // The consumer found the stream ended since the check above: give the slot
                // back (closed, with nothing sent, so reusable) and refuse.
                e.identity.word.store(
                    EntryWord {
                        state: entry::CLOSED,
                        ..registering
                    }
                    .pack(),
                    Ordering::Release,
                );
                return Err(Error::StreamEnded);
            }
            h.data_event.notify();
            return Ok(Producer::new(s.clone(), index, generation));
        }
        Err(Error::TooManyProducers {
            max: s.max_producers,
        })
    }

    /// Whether the producer slot `e`, seen as `word`, may be taken by a new registration.
    fn slot_reusable(&self, e: &ProducerEntry, word: EntryWord) -> bool {
        match word.state {
            entry::FREE => true,
            entry::CLOSED => e.consumed.total() == e.claims.committed.load(Ordering::Acquire),
            entry::DEAD => !self.claim_outstanding(e),
            entry::ACTIVE | entry::REGISTERING => {
                !e.identity.process_alive(word) && !self.claim_outstanding(e)
            }
            _ => false,
        }
    }

    /// Whether a record of `e`'s producer may still be ahead of the head: its published claim
    /// (the consumer needs it to recover that space if the claimer died before writing a record
    /// header), or the end of its latest claim. Until the head has passed them, a new producer
    /// in the slot could be credited with the old one's releases.
    fn claim_outstanding(&self, e: &ProducerEntry) -> bool {
        let h = self.shared.header();
        let head = Cursor(h.head.load(Ordering::Acquire)).pos();
        let tail = Cursor(h.tail.load(Ordering::Acquire)).pos();
        let ahead = pos_distance(head, tail);
        let pending = e.claims.pending_pos.load(Ordering::Acquire);
        let end = e.claims.claimed_end.load(Ordering::Acquire) & POS_MASK;
        (pending & PENDING_VALID != 0 && pos_distance(head, pending & POS_MASK) < ahead)
            || (1..=ahead).contains(&pos_distance(head, end))
    }

    /// Registers the consumer in this process. A queue has one consumer. The role can be taken
    /// over from a consumer whose process died (the messages it held unreleased are delivered
    /// again), but not from one that closed ([`Error::ConsumerClosed`]): closing the consumer
    /// closes the queue for receiving, for good.
    pub fn consumer(&self) -> Result<Consumer> {
        let me = ProcessIdentity::current();
        let s = &self.shared;
        let c = &s.header().consumer;
        let packed = c.state.load(Ordering::Acquire);
        let st = consumer_state(packed);
        let holder = ProcessIdentity {
            pid: c.pid.load(Ordering::Relaxed),
            start: c.start.load(Ordering::Relaxed),
        };
        match st {
            entry::CLOSED => return Err(Error::ConsumerClosed),
            entry::REGISTERING => return Err(Error::ConsumerTaken),
            entry::ACTIVE if holder.is_alive() => return Err(Error::ConsumerTaken),
            _ => {}
        }
        let generation = consumer_generation(packed).wrapping_add(1);
        if c.state
            .compare_exchange(
                packed,
                pack_consumer(entry::REGISTERING, generation),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return Err(Error::ConsumerTaken);
        }
        c.pid.store(me.pid, Ordering::Relaxed);
        c.start.store(me.start, Ordering::Relaxed);
        c.state
            .store(pack_consumer(entry::ACTIVE, generation), Ordering::Release);
        if st != entry::FREE {
            // Taking over from a dead consumer: records it released out of order may sit ahead
            // of the head, uncounted here; always scan for them from now on.
            s.out_of_order.store(isize::MAX / 2, Ordering::SeqCst);
        }
        s.header().space_event.wake();
        Ok(Consumer::new(s.clone()))
    }
}

/// Counts a producer registering (`joining`) or leaving in [`QueueHeader::membership`], keeping
/// its [`MEMBERSHIP_ENDED`] bit. A registration fails, changing nothing, once the stream has
/// ended; returns whether the count changed.
pub(crate) fn bump_membership(h: &QueueHeader, joining: bool) -> bool {
    let word = &h.membership;
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

/// Whether `stamp_value` is some valid stamp of position `pos`.
pub(crate) fn stamp_state(s: &QueueShared, pos: u64, stamp_value: u64) -> Option<u64> {
    let st = (stamp_value ^ s.key) & 0b111;
    (stamp_value == s.stamp(pos, st) && (state::WRITING..=state::RELEASED).contains(&st))
        .then_some(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed claim attempt must not stay published: the consumer trusts published claims
    /// when it recovers the space of a producer that died mid-claim. (A stress check: the race
    /// needs a CAS lost to another producer followed by a full ring, which two cores seldom
    /// produce; the fix was found by review.)
    #[test]
    fn failed_claims_leave_no_pending_claim_behind() {
        let q = Queue::create(&QueueOptions {
            capacity: 4,
            bytes: 4096,
            max_producers: 4,
        })
        .unwrap();
        let mut c = q.consumer().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let drainer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                // The stream ends once every producer has closed.
                while !stop.load(Ordering::Relaxed) {
                    match c.try_recv() {
                        Err(crate::Error::Closed) => break,
                        received => drop(received.unwrap()),
                    }
                }
                c
            })
        };
        // All three register before any sends: one that finished and closed before the next
        // registered would end the stream.
        let producers: Vec<_> = (0..3).map(|_| q.producer().unwrap()).collect();
        let threads: Vec<_> = producers
            .into_iter()
            .map(|mut p| {
                let shared = q.shared.clone();
                std::thread::spawn(move || {
                    let mut stale = 0;
                    for _ in 0..50_000 {
                        if !p.try_send(&[1; 40]).unwrap() {
                            let e = shared.producer_entry(p.index());
                            stale += (e.claims.pending_pos.load(Ordering::Acquire) != 0) as u32;
                        }
                    }
                    stale
                })
            })
            .collect();
        let stale: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        stop.store(true, Ordering::Relaxed);
        drop(drainer.join().unwrap());
        assert_eq!(stale, 0, "failed claim attempts left published");
    }
}
