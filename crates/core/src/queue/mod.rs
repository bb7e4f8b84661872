//! The queue: a handle on one queue segment, through which producers and the consumer register.
//!
//! The module is a stack, each layer using only the ones below it:
//!
//! - this file: [`Queue`] creates or opens the segment and registers producers and the consumer;
//! - [`producer`] and [`consumer`]: the two sides of the record protocol (claim, write, commit;
//!   take, read, release), which never use each other;
//! - [`ring`]: the mapping every handle of the queue shares, and the record rules both sides
//!   follow;
//! - [`layout`]: the bytes in shared memory and the arithmetic on positions.

pub(crate) mod consumer;
mod layout;
pub(crate) mod producer;
mod ring;

use crate::backing::Backing;
use crate::error::{Error, Result};
use crate::event::CancelToken;
use crate::presence::Taken;
use crate::process::ProcessIdentity;
use crate::segment::{Segment, SegmentKind};
use consumer::Consumer;
use layout::{
    consumer_generation, consumer_state, entry, pack_consumer, pos_distance, Cursor, EntryWord,
    ProducerEntry, GENERATION_MASK, MAX_CAPACITY, MAX_DATA_UNITS, MAX_PRODUCERS, MEMBERSHIP_ENDED,
    MIN_DATA_BYTES, PENDING_VALID, POS_MASK, UNIT,
};
use producer::Producer;
use ring::Ring;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long `open` waits for a segment whose creator has not yet published it.
const OPEN_READY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many times producer registration looks over the slots again when it found one whose
/// state says free but whose presence mark its last owner had not yet dropped.
const PASSES_OVER_HELD_MARKS: u32 = 3;

/// What one attempt at a producer slot came to.
enum Registration {
    Done(Box<Producer>),
    /// In use, or taken by someone else meanwhile.
    Taken,
    /// Free by its state, but its last owner still holds its presence mark.
    HeldElsewhere,
}

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

/// A handle on a queue segment. Producers and the consumer are registered through it.
///
/// The creator's handles own the segment: the name is removed when the last of them (this
/// `Queue` and every `Producer`/`Consumer` made from it) is dropped.
#[derive(Clone)]
pub struct Queue {
    shared: Arc<Ring>,
}

fn invalid(name: &'static str, expected: &'static str) -> Error {
    Error::InvalidArgument { name, expected }
}

impl Queue {
    /// Creates a queue under a fresh random name, in the default backing for pipes
    /// ([`Backing::for_pipes`]: sealed memory on Linux unless `SHMPIPE_BACKING=shm`).
    pub fn create(opts: &QueueOptions) -> Result<Self> {
        Self::create_in(opts, Backing::for_pipes()?)
    }

    /// Creates a queue under a fresh random name, its ring in `backing`.
    pub fn create_in(opts: &QueueOptions, backing: Backing) -> Result<Self> {
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
        let ring = Ring::create(
            opts.capacity,
            opts.max_producers,
            data_bytes / UNIT,
            backing,
        )?;
        Ok(Self {
            shared: Arc::new(ring),
        })
    }

    /// Opens the queue named `name`, validating its layout.
    pub fn open(name: &str) -> Result<Self> {
        let segment = Segment::open(name, SegmentKind::Queue, OPEN_READY_TIMEOUT)?;
        Ok(Self {
            shared: Arc::new(Ring::from_segment(segment)?),
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

    /// Where the ring's memory lives.
    pub fn backing(&self) -> Backing {
        self.shared.segment.backing()
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
        let head = Cursor(h.head.load(Ordering::Acquire));
        let tail = Cursor(h.tail.load(Ordering::Acquire));
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
        // A slot whose state says free while its mark is still held is being let go (its
        // owner stores its final state before dropping the mark): look again, briefly, before
        // calling the queue full.
        for pass in 0..PASSES_OVER_HELD_MARKS {
            if pass > 0 {
                std::thread::yield_now();
            }
            let mut held_elsewhere = false;
            for index in 0..s.max_producers {
                match self.register_producer(index, &me)? {
                    Registration::Done(producer) => return Ok(*producer),
                    Registration::HeldElsewhere => held_elsewhere = true,
                    Registration::Taken => {}
                }
            }
            if !held_elsewhere {
                break;
            }
        }
        Err(Error::TooManyProducers {
            max: s.max_producers,
        })
    }

    /// Tries to register a producer in slot `index`.
    fn register_producer(&self, index: u32, me: &ProcessIdentity) -> Result<Registration> {
        let s = &self.shared;
        let h = s.header();
        let e = s.producer_entry(index);
        let seen = e.identity.load();
        if !self.slot_reusable(index, e, seen) {
            return Ok(Registration::Taken);
        }
        // The mark first: while a live process holds it, the slot is not free, and once we
        // hold it, it proves us alive to every peer, from any PID namespace.
        let mark = match s.take_mark(Ring::producer_mark(index)) {
            Taken::Mark(mark) => Some(mark),
            Taken::HeldElsewhere => return Ok(Registration::HeldElsewhere),
            Taken::Unavailable => None,
        };
        let generation = seen.generation.wrapping_add(1) & GENERATION_MASK;
        let registering = EntryWord {
            state: entry::REGISTERING,
            generation,
            pid: me.pid,
        };
        if !e.identity.replace(seen, registering) {
            return Ok(Registration::Taken);
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
        e.identity
            .pid_ns
            .store(crate::process::own_pid_namespace(), Ordering::Relaxed);
        e.identity
            .marked
            .store(u32::from(mark.is_some()), Ordering::Relaxed);
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
        if !s.count_membership(true) {
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
        let producer = Producer::new(s.clone(), index, generation, mark);
        Ok(Registration::Done(Box::new(producer)))
    }

    /// Whether the producer slot `index` (entry `e`), seen as `word`, may be taken by a new
    /// registration.
    fn slot_reusable(&self, index: u32, e: &ProducerEntry, word: EntryWord) -> bool {
        match word.state {
            entry::FREE => true,
            entry::CLOSED => e.consumed.total() == e.claims.committed.load(Ordering::Acquire),
            entry::DEAD => !self.claim_outstanding(e),
            entry::ACTIVE | entry::REGISTERING => {
                !self.shared.producer_alive(index, word) && !self.claim_outstanding(e)
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
        match st {
            entry::CLOSED => return Err(Error::ConsumerClosed),
            entry::REGISTERING => return Err(Error::ConsumerTaken),
            entry::ACTIVE if s.consumer_alive(packed) => return Err(Error::ConsumerTaken),
            _ => {}
        }
        // The mark first, as for producers: a live consumer's mark cannot be taken.
        let mark = match s.take_mark(Ring::CONSUMER_MARK) {
            Taken::Mark(mark) => Some(mark),
            Taken::HeldElsewhere => return Err(Error::ConsumerTaken),
            Taken::Unavailable => None,
        };
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
        c.pid_ns
            .store(crate::process::own_pid_namespace(), Ordering::Relaxed);
        c.marked.store(u32::from(mark.is_some()), Ordering::Relaxed);
        // The mailbox for sealed blobs listens before producers can see us active. Without one
        // (its address taken), producers fall back to named blobs.
        #[cfg(target_os = "linux")]
        let mailbox = s
            .sealed_blobs()
            .then(|| crate::fd_mailbox::Mailbox::bind(&s.mailbox_address(generation)).ok())
            .flatten();
        c.state
            .store(pack_consumer(entry::ACTIVE, generation), Ordering::Release);
        if st != entry::FREE {
            // Taking over from a dead consumer: records it released out of order may sit ahead
            // of the head, uncounted here; always scan for them from now on.
            s.out_of_order.store(isize::MAX / 2, Ordering::SeqCst);
        }
        s.header().space_event.wake();
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut consumer = Consumer::new(s.clone(), mark);
        #[cfg(target_os = "linux")]
        {
            consumer.set_mailbox(mailbox);
            consumer.pick_up_held_blobs();
        }
        Ok(consumer)
    }
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
