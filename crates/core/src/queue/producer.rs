//! The sending side: claim space with one CAS, write in place, commit.

use super::layout::{
    consumer_generation, consumer_state, entry, kind, pack_consumer, state, BlobDescriptor, Cursor,
    EntryWord, ProducerEntry, BLOB_DESCRIPTOR_SIZE, MSG_MASK, PENDING_VALID, POS_BITS, POS_MASK,
    UNIT,
};
use super::ring::Ring;
use crate::blob::{self, KeptBlobs};
use crate::copy::copy_to_shared;
use crate::error::{Error, Result};
use crate::event::{wait_until, WaitOptions};
use crate::presence::PresenceMark;
use crate::process::ProcessIdentity;
use crate::segment::{Segment, SegmentKind};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

/// Refresh the cached head before the tail can have run this far past it, so that modular
/// distances to the cached head are never ambiguous.
const HEAD_CACHE_MSGS: u64 = MSG_MASK >> 2;
const HEAD_CACHE_UNITS: u64 = POS_MASK >> 2;

/// A registered producer. Many may exist, in any processes; each keeps its own order.
///
/// Dropping it closes it: once every producer is closed and the queue drained, the consumer sees
/// [`Error::Closed`].
///
/// Aligned to 128 bytes: the fields it updates per message never share a cache line (or an
/// adjacent-line prefetch pair) with a [`Consumer`](crate::Consumer) stored next to it.
#[repr(align(128))]
pub struct Producer {
    shared: Arc<Ring>,
    index: u32,
    generation: u32,
    /// The head as last read, and the tail at that moment.
    head_cache: Cursor,
    head_cache_tail: Cursor,
    committed: u64,
    /// The position just past this producer's latest claim.
    latest_end: u64,
    /// Blobs sent before, kept for the next large messages.
    kept: KeptBlobs,
    /// The connection to the consumer's mailbox, for sealed blobs.
    #[cfg(target_os = "linux")]
    mailbox: crate::fd_mailbox::MailboxSender,
    /// This registration's presence mark ([`crate::presence`]), dropped after its final state is
    /// stored; `None` where marks are unavailable.
    mark: Option<PresenceMark>,
    /// Sealed blobs sent before any consumer registered. Their memory lives only in this
    /// process's descriptors until a consumer maps them (it finds them through
    /// `/proc/<pid>/fd`), so they are held until then; closing hands the rest over
    /// ([`Producer::hand_over_held`]).
    held: Vec<Segment>,
    closed: bool,
}

/// Where a claimed record's payload goes.
enum Target {
    Inline,
    /// A blob made for this message, and the consumer generation it is sent to (read before
    /// the commit: a consumer registered later never mapped it). Boxed: a `Segment` is large,
    /// and claims are moved on every message's hot path.
    Fresh(Box<Segment>, u32),
    /// A kept blob taken back for this message (see [`crate::blob`]).
    Reused(Arc<Segment>),
}

impl Target {
    fn blob(&self) -> Option<&Segment> {
        match self {
            Target::Inline => None,
            Target::Fresh(seg, _) => Some(seg),
            Target::Reused(seg) => Some(seg),
        }
    }
}

/// Space reserved in the queue: write the message into [`as_mut_slice`](Self::as_mut_slice), then
/// [`commit`](Self::commit). Dropping it uncommitted aborts: the consumer never sees it.
pub struct Loan<'a> {
    producer: &'a mut Producer,
    claimed: Claimed,
    done: bool,
}

/// Like [`Loan`], but not tied to a borrow of its producer, for bindings that hold a reservation
/// between calls. Commit it with [`Producer::commit_raw`]; dropping it uncommitted aborts it.
/// Commit or drop it before closing its producer: the consumer passes over an unfinished record
/// of a closed producer as abandoned.
pub struct RawLoan {
    shared: Arc<Ring>,
    owner: (u32, u32),
    claimed: Claimed,
    done: bool,
}

/// A claimed record and where its payload goes.
struct Claimed {
    pos: u64,
    /// The position just past the record.
    end: u64,
    ptr: *mut u8,
    len: usize,
    target: Target,
    /// A fresh sealed blob for a queue with no consumer registered: it stays in this producer
    /// (no mailbox to pass it to) until a consumer maps it.
    held: bool,
}

// SAFETY: the claimed record (and blob segment) belongs to this loan alone until it is committed
// or aborted; the mapping is kept alive by the `Arc`.
unsafe impl Send for RawLoan {}

/// How long a closing producer waits for room in a full consumer mailbox when it hands over a
/// held sealed blob, before it makes a named copy instead.
#[cfg(target_os = "linux")]
const HAND_OVER_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

impl Producer {
    pub(crate) fn new(
        shared: Arc<Ring>,
        index: u32,
        generation: u32,
        mark: Option<PresenceMark>,
    ) -> Self {
        let head_cache = Cursor(shared.header().head.load(Ordering::Acquire));
        let head_cache_tail = Cursor(shared.header().tail.load(Ordering::Acquire));
        let backing = shared.segment.backing();
        Self {
            shared,
            index,
            generation,
            head_cache,
            head_cache_tail,
            committed: 0,
            latest_end: u64::MAX,
            kept: KeptBlobs::new(backing),
            #[cfg(target_os = "linux")]
            mailbox: crate::fd_mailbox::MailboxSender::new(),
            mark,
            held: Vec::new(),
            closed: false,
        }
    }

    fn entry(&self) -> &ProducerEntry {
        self.shared.producer_entry(self.index)
    }

    /// Units of the ring record for a payload of `len` bytes, and whether it travels as a blob.
    /// Records are whole cache lines (an even number of units), so that a producer writing one
    /// record never shares a line with the consumer reading the one before.
    fn plan(&self, len: u64) -> (u64, bool) {
        let (units, blob) = if len <= self.shared.max_inline() {
            (1 + len.div_ceil(UNIT), false)
        } else {
            (1 + BLOB_DESCRIPTOR_SIZE.div_ceil(UNIT), true)
        };
        (units.next_multiple_of(2), blob)
    }

    fn check_consumer(&self) -> Result<()> {
        match consumer_state(self.shared.header().consumer.state.load(Ordering::Acquire)) {
            entry::CLOSED => Err(Error::Closed),
            entry::DEAD => Err(Error::PeerGone),
            _ => Ok(()),
        }
    }

    fn fits(&self, tail: Cursor, head: Cursor, total: u64) -> bool {
        tail.msgs_since(head) < self.shared.capacity
            && tail.units_since(head) + total <= self.shared.data_units
    }

    /// Tries once to claim `units` (plus any padding to the ring's end). On success returns the
    /// record's position with a WRITING header in place.
    fn try_claim(
        &mut self,
        units: u64,
        len: u64,
        record_kind: u32,
        desc: Option<&BlobDescriptor>,
    ) -> Result<Option<u64>> {
        if self.closed {
            return Err(Error::Closed);
        }
        self.check_consumer()?;
        let s = &*self.shared;
        let h = s.header();
        let e = s.producer_entry(self.index);
        let mut tail = Cursor(h.tail.load(Ordering::Acquire));
        loop {
            let pos = tail.pos();
            let contiguous = s.contiguous(pos);
            let total = if units <= contiguous {
                units
            } else {
                contiguous + units
            };
            let stale = tail.msgs_since(self.head_cache_tail) > HEAD_CACHE_MSGS
                || tail.units_since(self.head_cache_tail) > HEAD_CACHE_UNITS;
            if stale || !self.fits(tail, self.head_cache, total) {
                self.head_cache = Cursor(h.head.load(Ordering::Acquire));
                // Re-read the tail after the head: with a tail older than the head, the modular
                // distance between them would read as a full ring.
                let fresh = Cursor(h.tail.load(Ordering::Acquire));
                self.head_cache_tail = fresh;
                if fresh != tail {
                    tail = fresh;
                    continue;
                }
                if !self.fits(tail, self.head_cache, total) {
                    // Never leave a claim attempt published: the consumer trusts it.
                    e.claims.pending_pos.store(0, Ordering::Release);
                    return Ok(None);
                }
            }
            e.claims.pending_units.store(total, Ordering::Relaxed);
            e.claims
                .pending_pos
                .store(pos | PENDING_VALID, Ordering::Relaxed);
            let next = tail.advance(total, 1).0;
            let claimed = if s.max_producers == 1 {
                // One producer slot: no other producer can move the tail, so a plain store
                // claims (no locked instruction on the hot path). The pending claim was
                // published first, as for the CAS, in case this process dies here.
                h.tail.store(next, Ordering::Release);
                Ok(tail.0)
            } else {
                h.tail
                    .compare_exchange_weak(tail.0, next, Ordering::AcqRel, Ordering::Relaxed)
            };
            match claimed {
                Ok(_) => {
                    e.claims
                        .claimed_end
                        .store(Cursor(next).pos(), Ordering::Release);
                    let mut rec_pos = pos;
                    if total != units {
                        self.shared.write_header(
                            pos,
                            contiguous,
                            0,
                            kind::PAD,
                            (self.index, self.generation),
                            state::COMMITTED,
                        );
                        rec_pos = (pos + contiguous) & POS_MASK;
                    }
                    if let Some(desc) = desc {
                        // Before the WRITING stamp: a consumer passing over this record after
                        // our death reads the descriptor to remove the blob.
                        // SAFETY: the record has room for the descriptor (its units were
                        // planned from the process-local ring size and checked to fit before
                        // the ring's end above), so the write stays inside the ring whatever a
                        // peer wrote into shared memory; the record is ours until committed (a
                        // peer breaking the protocol can only race on the bytes' values), and
                        // write_unaligned needs no alignment.
                        unsafe {
                            (s.payload(rec_pos) as *mut BlobDescriptor).write_unaligned(*desc)
                        };
                    }
                    self.shared.write_header(
                        rec_pos,
                        units,
                        len,
                        record_kind,
                        (self.index, self.generation),
                        state::WRITING,
                    );
                    e.claims.pending_pos.store(0, Ordering::Release);
                    return Ok(Some(rec_pos));
                }
                Err(actual) => tail = Cursor(actual),
            }
        }
    }

    /// Reserves room for a message of `len` bytes, waiting while the queue is full.
    pub fn reserve(&mut self, len: u64, wait: &WaitOptions) -> Result<Loan<'_>> {
        let claimed = self
            .reserve_inner(len, Some(wait))?
            .expect("a waiting reserve returns a loan or an error");
        Ok(self.loan(claimed))
    }

    /// Reserves room for a message of `len` bytes if the queue has it now.
    pub fn try_reserve(&mut self, len: u64) -> Result<Option<Loan<'_>>> {
        Ok(self.reserve_inner(len, None)?.map(|c| self.loan(c)))
    }

    fn loan(&mut self, claimed: Claimed) -> Loan<'_> {
        Loan {
            producer: self,
            claimed,
            done: false,
        }
    }

    /// Like [`try_reserve`](Self::try_reserve), returning a loan not tied to a borrow.
    pub fn try_reserve_raw(&mut self, len: u64) -> Result<Option<RawLoan>> {
        Ok(self.reserve_inner(len, None)?.map(|claimed| RawLoan {
            shared: self.shared.clone(),
            owner: (self.index, self.generation),
            claimed,
            done: false,
        }))
    }

    /// Publishes a [`RawLoan`] made by this producer.
    pub fn commit_raw(&mut self, mut loan: RawLoan) -> Result<()> {
        if loan.owner != (self.index, self.generation) || !Arc::ptr_eq(&loan.shared, &self.shared) {
            return Err(Error::InvalidArgument {
                name: "loan",
                expected: "a reservation made by this sender",
            });
        }
        loan.done = true;
        self.commit_claimed(&mut loan.claimed);
        Ok(())
    }

    /// Waits until a message of `len` bytes would be accepted (it may still be taken by another
    /// producer first). Lets a waiter thread wait while another thread sends.
    pub fn wait_space(&self, len: u64, wait: &WaitOptions) -> Result<()> {
        if self.closed {
            return Err(Error::Closed);
        }
        let shared = &self.shared;
        wait_until(
            &shared.header().space_event,
            wait,
            || {
                self.check_consumer()?;
                Ok(self.has_space(len).then_some(()))
            },
            || consumer_health(shared),
        )
    }

    fn commit_claimed(&mut self, c: &mut Claimed) {
        if let Target::Fresh(seg, _) = &mut c.target {
            seg.publish_ready();
            if consumer_is_this_process(&self.shared) {
                // The consumer removes it once it has mapped it. Until then a signal that ends
                // this process (and the consumer with it) must remove it.
                seg.disown_to_this_process();
            } else {
                seg.disown(); // the consumer removes it once it has mapped it
            }
        }
        self.shared.set_state(c.pos, state::COMMITTED);
        self.shared.publish(c.end, c.end == self.latest_end);
        if let Some(seg) = c.target.blob() {
            // A consumer that closes removes the blobs it finds committed; one that closed just
            // before our commit may have missed ours, so remove it here (removal is idempotent).
            fence(Ordering::SeqCst);
            let consumer = self.shared.header().consumer.state.load(Ordering::SeqCst);
            if consumer_state(consumer) == entry::CLOSED {
                let _ = crate::segment::unlink(seg.name());
            }
            if let Target::Fresh(seg, generation) = std::mem::replace(&mut c.target, Target::Inline)
            {
                if c.held {
                    #[cfg(target_os = "linux")]
                    {
                        use std::os::fd::AsRawFd;
                        crate::signals::track_held(
                            seg.name(),
                            seg.fd().as_raw_fd(),
                            self.shared.segment.name(),
                        );
                    }
                    self.held.push(*seg);
                } else if blob::state(&seg) & blob::PRODUCER_GONE == 0 {
                    self.kept.keep(*seg, generation);
                }
            }
        }
        self.count_commit();
    }

    /// Counts a commit whose record is published, and wakes the consumer if it sleeps.
    #[inline(always)]
    fn count_commit(&mut self) {
        self.committed += 1;
        self.entry()
            .claims
            .committed
            .store(self.committed, Ordering::Release);
        self.shared.header().data_event.notify();
    }

    /// The common send, small enough to inline, with nothing but integers in flight: an inline
    /// message that fits at the tail, before the ring's end, by the cached head. Returns false,
    /// having written nothing, when any of that does not hold (or the consumer is gone, or a
    /// concurrent producer moved the tail first): the general path then handles it, with the
    /// errors and waits. Kept apart from `try_claim` because moving that path's results (enums
    /// with partial-width fields) through the stack right after the record's stores made the
    /// CPU wait for those stores to reach the cache, a line the consumer holds.
    #[inline(always)]
    fn try_send_fast(&mut self, bytes: &[u8]) -> bool {
        let s = &*self.shared;
        let len = bytes.len() as u64;
        if self.closed || len > s.max_inline() {
            return false;
        }
        let h = s.header();
        if matches!(
            consumer_state(h.consumer.state.load(Ordering::Acquire)),
            entry::CLOSED | entry::DEAD
        ) {
            return false;
        }
        let units = (1 + len.div_ceil(UNIT)).next_multiple_of(2);
        let tail = Cursor(h.tail.load(Ordering::Acquire));
        let pos = tail.pos();
        let fresh_cache = tail.msgs_since(self.head_cache_tail) <= HEAD_CACHE_MSGS
            && tail.units_since(self.head_cache_tail) <= HEAD_CACHE_UNITS;
        if units > s.contiguous(pos) || !fresh_cache || !self.fits(tail, self.head_cache, units) {
            return false;
        }
        let claims = &s.producer_entry(self.index).claims;
        // The same claim protocol as `try_claim`, without padding.
        claims.pending_units.store(units, Ordering::Relaxed);
        claims
            .pending_pos
            .store(pos | PENDING_VALID, Ordering::Relaxed);
        let next = tail.advance(units, 1);
        if s.max_producers == 1 {
            h.tail.store(next.0, Ordering::Release);
        } else if h
            .tail
            .compare_exchange(tail.0, next.0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            claims.pending_pos.store(0, Ordering::Release);
            return false;
        }
        let end = next.pos();
        claims.claimed_end.store(end, Ordering::Release);
        self.shared.write_header(
            pos,
            units,
            len,
            kind::INLINE,
            (self.index, self.generation),
            state::WRITING,
        );
        claims.pending_pos.store(0, Ordering::Release);
        self.latest_end = end;
        // SAFETY: the record at `pos` has `units - 1` units of payload room before the ring's
        // end (checked against `contiguous`, from the process-local ring size), at least `len`,
        // so the slice lies inside the mapping. The record is ours (claimed, WRITING) until the
        // stamp below commits it; a peer breaking the protocol can only change the bytes' values
        // (any bytes are a valid `[u8]`), never the slice's bounds.
        let payload = unsafe { std::slice::from_raw_parts_mut(s.payload(pos), bytes.len()) };
        copy_to_shared(payload, bytes, s.data_bytes());
        s.set_state(pos, state::COMMITTED);
        s.publish(end, true);
        self.count_commit();
        true
    }

    fn reserve_inner(&mut self, len: u64, wait: Option<&WaitOptions>) -> Result<Option<Claimed>> {
        let (units, is_blob) = self.plan(len);
        // A blob's segment is made first: a full /dev/shm fails here, before the queue changes.
        let target = if is_blob {
            if usize::try_from(len).is_err() {
                return Err(Error::TooLarge {
                    requested: len,
                    limit: usize::MAX as u64,
                });
            }
            self.blob_target(len)?
        } else {
            Target::Inline
        };
        let fresh = matches!(target, Target::Fresh(..));
        let (record_len, record_kind) = if is_blob {
            (BLOB_DESCRIPTOR_SIZE, kind::BLOB)
        } else {
            (len, kind::INLINE)
        };
        let desc = target.blob().map(|seg| {
            let mut desc = BlobDescriptor {
                len,
                name_len: seg.name().len() as u64,
                name: [0; 32],
            };
            desc.name[..seg.name().len()].copy_from_slice(seg.name().as_bytes());
            desc
        });
        let claimed = match (
            self.try_claim(units, record_len, record_kind, desc.as_ref()),
            wait,
        ) {
            (Ok(None), Some(opts)) => {
                let shared = self.shared.clone();
                let me = &mut *self;
                wait_until(
                    &shared.header().space_event,
                    opts,
                    || me.try_claim(units, record_len, record_kind, desc.as_ref()),
                    || consumer_health(&shared),
                )
                .map(Some)
            }
            (first_try, _) => first_try,
        };
        let pos = match claimed {
            Ok(Some(pos)) => pos,
            failed => {
                // Remove an unqueued fresh blob before forgetting its name; a reused one is
                // free for the next message again.
                if let Target::Reused(seg) = &target {
                    blob::release(seg);
                }
                drop(target);
                if fresh {
                    self.entry().claims.clear_blob_name();
                }
                return failed.map(|_| None);
            }
        };
        if fresh {
            // The record's descriptor names the blob now.
            self.entry().claims.clear_blob_name();
        }
        let ptr = match target.blob() {
            None => self.shared.payload(pos),
            Some(seg) => seg.body_ptr(),
        };
        let end = (pos + units) & POS_MASK;
        self.latest_end = end;
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut claimed = Claimed {
            pos,
            end,
            ptr,
            len: len as usize,
            target,
            held: false,
        };
        #[cfg(target_os = "linux")]
        self.pass_sealed_blob(&mut claimed, wait)?;
        Ok(Some(claimed))
    }

    /// The blob for a message of `len` bytes: a kept one the consumer released, else a fresh one.
    fn blob_target(&mut self, len: u64) -> Result<Target> {
        let consumer = self.shared.header().consumer.state.load(Ordering::Acquire);
        let generation = consumer_generation(consumer);
        if let Some(seg) = self.kept.reuse(len, generation) {
            return Ok(Target::Reused(seg));
        }
        // A sealed queue: sealed memory, passed to the consumer's mailbox once the record is
        // claimed, or held here until a consumer registers and maps it (not kept for reuse then:
        // no consumer generation would find it again). The named backing: a named segment.
        #[cfg(target_os = "linux")]
        if self.shared.sealed_blobs() {
            self.let_go_of_picked_up();
            let keep = consumer_state(consumer) == entry::ACTIVE && self.kept.would_keep(len);
            return match Segment::create_anonymous(SegmentKind::Blob, len) {
                Ok(seg) => {
                    blob::init(&seg, keep);
                    Ok(Target::Fresh(Box::new(seg), generation))
                }
                Err(e) => self.short_of_memory(e, len, generation),
            };
        }
        // Named in our entry first: if we die before the blob is in a record, whoever finds us
        // dead removes it.
        let name = crate::name::random_name();
        let claims = &self.entry().claims;
        claims.set_blob_name(&name);
        match Segment::create_named(&name, SegmentKind::Blob, len) {
            Ok(seg) => {
                blob::init(&seg, self.kept.would_keep(len));
                Ok(Target::Fresh(Box::new(seg), generation))
            }
            Err(e) => {
                claims.clear_blob_name();
                self.short_of_memory(e, len, generation)
            }
        }
    }

    /// After failing to make a blob of `len` bytes with `e`: if shared memory is short, a larger
    /// idle blob will do after all, and the idle ones are given up so that the consumer frees
    /// them. Else fails with `e`.
    fn short_of_memory(&mut self, e: Error, len: u64, generation: u32) -> Result<Target> {
        if matches!(e, Error::NoSpace { .. }) {
            if let Some(seg) = self.kept.reuse_any(len, generation) {
                return Ok(Target::Reused(seg));
            }
            self.kept.give_up_idle();
        }
        Err(e)
    }

    /// Passes a fresh sealed blob to the consumer's mailbox, for the record just claimed at
    /// `pos`; if the mailbox cannot take it (no listener there, a full one past the deadline),
    /// swaps it for a named blob of the same name. Fails, the record aborted, only if neither
    /// works or the consumer is gone.
    #[cfg(target_os = "linux")]
    fn pass_sealed_blob(
        &mut self,
        claimed: &mut Claimed,
        wait: Option<&WaitOptions>,
    ) -> Result<()> {
        use crate::fd_mailbox::SendError;
        let Target::Fresh(seg, _) = &claimed.target else {
            return Ok(());
        };
        if seg.backing() != crate::Backing::Memfd {
            return Ok(());
        }
        let consumer = self.shared.header().consumer.state.load(Ordering::Acquire);
        if consumer_state(consumer) != entry::ACTIVE {
            claimed.held = true;
            return Ok(());
        }
        // The consumer registered after the blob was made: the address is the current one's.
        let generation = &consumer_generation(consumer);
        let token = crate::name::generated_bits(seg.name()).expect("a generated name");
        // A full mailbox (hundreds of unread blobs) is waited for as the put would wait for
        // space: up to its timeout, not at all for a try, and no longer than the consumer lives.
        let now = std::time::Instant::now();
        let deadline = match wait {
            None => Some(now),
            Some(w) => w.timeout.and_then(|t| now.checked_add(t)),
        };
        let shared = self.shared.clone();
        let alive = || {
            let packed = shared.header().consumer.state.load(Ordering::Acquire);
            consumer_state(packed) == entry::ACTIVE && shared.consumer_alive(packed)
        };
        let address = self.shared.mailbox_address(*generation);
        let failed = match self
            .mailbox
            .send(&address, token, seg.fd(), deadline, &alive)
        {
            Ok(()) => return Ok(()),
            Err(SendError::PeerGone) => Error::PeerGone,
            Err(_) => {
                let (name, len, generation) =
                    (seg.name().to_owned(), seg.body_len() as u64, *generation);
                match Segment::create_named(&name, SegmentKind::Blob, len) {
                    Ok(named) => {
                        blob::init(&named, self.kept.would_keep(len));
                        claimed.ptr = named.body_ptr();
                        claimed.target = Target::Fresh(Box::new(named), generation);
                        return Ok(());
                    }
                    Err(e) => e,
                }
            }
        };
        claimed.abort(&self.shared);
        claimed.target = Target::Inline;
        Err(failed)
    }

    /// Closes the held sealed blobs that a consumer has mapped (or no longer needs).
    #[cfg(target_os = "linux")]
    fn let_go_of_picked_up(&mut self) {
        self.held.retain(|seg| {
            let done = blob::needs_no_holder(seg);
            if done {
                crate::signals::untrack_held(seg.name());
            }
            !done
        });
    }

    /// Hands the held sealed blobs that no consumer has mapped yet to someone who outlives this
    /// producer: the registered consumer's mailbox, or else, while a consumer may still come, a
    /// named segment of the same name and bytes, which the consumer opens by name. What neither
    /// can take (no room in `/dev/shm`) is lost, and its record reads as a bad segment; after the
    /// consumer closed, nobody will read it.
    #[cfg(target_os = "linux")]
    fn hand_over_held(&mut self) {
        self.let_go_of_picked_up();
        for seg in std::mem::take(&mut self.held) {
            crate::signals::untrack_held(seg.name());
            let consumer = self.shared.header().consumer.state.load(Ordering::Acquire);
            if blob::needs_no_holder(&seg) || consumer_state(consumer) == entry::CLOSED {
                continue;
            }
            if consumer_state(consumer) == entry::ACTIVE {
                let token = crate::name::generated_bits(seg.name()).expect("a generated name");
                let shared = self.shared.clone();
                let alive = || shared.consumer_alive(consumer);
                let address = self.shared.mailbox_address(consumer_generation(consumer));
                let soon = std::time::Instant::now().checked_add(HAND_OVER_WAIT);
                if self
                    .mailbox
                    .send(&address, token, seg.fd(), soon, &alive)
                    .is_ok()
                {
                    continue;
                }
            }
            let len = seg.body_len();
            if let Ok(mut named) = Segment::create_named(seg.name(), SegmentKind::Blob, len as u64)
            {
                // SAFETY: both bodies are `len` bytes, mapped for as long as `seg` and `named`
                // live; `named` is fresh and ours alone, and `seg` is ours, sealed (its size is
                // fixed), and read only: its consumer, if any, only reads it.
                unsafe { std::ptr::copy_nonoverlapping(seg.body_ptr(), named.body_ptr(), len) };
                blob::init(&named, false);
                named.publish_ready();
                named.disown();
            }
        }
    }

    /// Sets how many bytes of sent blobs this producer keeps for reuse (see the `blob` module);
    /// 0 turns reuse off. Whatever this says, the producers of a process keep at most their
    /// backing's budget in all, which is also the default:
    /// [`process_keep_budget`](crate::tuning::process_keep_budget) for named blobs (an eighth of
    /// `/dev/shm`, at most 1 GiB, on Linux; 1 GiB elsewhere),
    /// [`sealed_keep_budget`](crate::tuning::sealed_keep_budget) for sealed ones.
    pub fn set_blob_keep_limit(&mut self, bytes: u64) {
        self.kept.set_limit(bytes);
    }

    /// The bytes of sent blobs this producer keeps for reuse now.
    pub fn kept_blob_bytes(&self) -> u64 {
        self.kept.kept_bytes()
    }

    /// Sends a copy of `bytes`, waiting while the queue is full.
    pub fn send(&mut self, bytes: &[u8], wait: &WaitOptions) -> Result<()> {
        if self.try_send_fast(bytes) {
            return Ok(());
        }
        let mut loan = self.reserve(bytes.len() as u64, wait)?;
        loan.copy_from(0, bytes);
        loan.commit()
    }

    /// Sends a copy of `bytes` if there is room now; returns whether it was sent.
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<bool> {
        if self.try_send_fast(bytes) {
            return Ok(true);
        }
        match self.try_reserve(bytes.len() as u64)? {
            Some(mut loan) => {
                loan.copy_from(0, bytes);
                loan.commit()?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Whether a message of `len` bytes would be accepted now.
    pub fn has_space(&self, len: u64) -> bool {
        let (units, _) = self.plan(len);
        let h = self.shared.header();
        let tail = Cursor(h.tail.load(Ordering::Acquire));
        let head = Cursor(h.head.load(Ordering::Acquire));
        let contiguous = self.shared.contiguous(tail.pos());
        let total = if units <= contiguous {
            units
        } else {
            contiguous + units
        };
        self.check_consumer().is_ok() && self.fits(tail, head, total)
    }

    /// Messages this producer has committed.
    pub fn sent(&self) -> u64 {
        self.committed
    }

    /// Messages of this producer the consumer has released.
    pub fn acked(&self) -> u64 {
        self.entry().consumed.total()
    }

    /// Waits until the consumer has released every message this producer sent.
    pub fn wait_for_all_ack(&self, wait: &WaitOptions) -> Result<()> {
        let shared = &self.shared;
        wait_until(
            &shared.header().space_event,
            wait,
            || {
                if self.acked() >= self.committed {
                    return Ok(Some(()));
                }
                // A consumer that closed (or was found dead) will ack nothing more.
                self.check_consumer().map(|()| None)
            },
            || consumer_health(shared),
        )
    }

    /// Closes the producer; the consumer counts it as gone once its messages are read.
    pub fn close(mut self) {
        self.close_inner();
    }

    fn close_inner(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.kept.clear();
        #[cfg(target_os = "linux")]
        self.hand_over_held();
        let h = self.shared.header();
        let identity = &self.entry().identity;
        let word = identity.load();
        // Only our own registration is closed: the word names our generation and pid.
        if word.state == entry::ACTIVE && word.generation == self.generation {
            identity.replace(
                word,
                EntryWord {
                    state: entry::CLOSED,
                    ..word
                },
            );
        }
        self.shared.count_membership(false);
        self.mark = None;
        h.data_event.wake();
    }

    /// This producer's slot index in the queue (stable while it is registered).
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        self.close_inner();
    }
}

/// The producer side's view of the consumer: an error once it closed or died.
/// Whether the queue's consumer is this process: registered here, or not registered yet while
/// this process holds the role ([`crate::Queue::hold_receiver_role`]).
fn consumer_is_this_process(shared: &Ring) -> bool {
    let c = &shared.header().consumer;
    match consumer_state(c.state.load(Ordering::Acquire)) {
        entry::ACTIVE => {
            let consumer = shared.consumer_process();
            consumer.pid == std::process::id() && consumer.start == ProcessIdentity::current().start
        }
        entry::FREE => shared.receiver_held_here.load(Ordering::Acquire),
        _ => false,
    }
}

pub(crate) fn consumer_health<T>(shared: &Ring) -> Result<Option<T>> {
    let c = &shared.header().consumer;
    let packed = c.state.load(Ordering::Acquire);
    match consumer_state(packed) {
        entry::CLOSED => Err(Error::Closed),
        entry::DEAD => Err(Error::PeerGone),
        entry::ACTIVE => {
            if shared.consumer_alive(packed) {
                return Ok(None);
            }
            // The CAS fails if a new consumer registered meanwhile (the generation changed):
            // then this observation is stale, and the next check looks again.
            let dead = pack_consumer(entry::DEAD, consumer_generation(packed));
            if c.state
                .compare_exchange(packed, dead, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return Ok(None);
            }
            // The dead consumer will never map the blobs still queued: remove them.
            let head = Cursor(shared.header().head.load(Ordering::Acquire));
            shared.remove_undelivered_blobs(head.pos());
            Err(Error::PeerGone)
        }
        _ => Ok(None),
    }
}

impl Claimed {
    /// The memory that messages like this one cycle through: the ring's data area for an inline
    /// record; for a blob, twice its size (the next message goes into another).
    fn footprint(&self, shared: &Ring) -> u64 {
        match self.target {
            Target::Inline => shared.data_bytes(),
            Target::Fresh(..) | Target::Reused(_) => 2 * self.len as u64,
        }
    }

    /// Copies `bytes` into the reserved bytes from `offset` (see [`copy_to_shared`]).
    fn copy_from(&mut self, shared: &Ring, offset: usize, bytes: &[u8]) {
        let footprint = self.footprint(shared);
        let end = offset
            .checked_add(bytes.len())
            .filter(|&end| end <= self.len)
            .unwrap_or_else(|| {
                panic!(
                    "copy_from: {} bytes at offset {offset} do not fit a loan of {} bytes",
                    bytes.len(),
                    self.len
                )
            });
        copy_to_shared(&mut self.as_mut_slice()[offset..end], bytes, footprint);
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` points at `len` bytes inside a mapping this claim keeps alive: the ring
        // record's payload (checked to fit before the ring's end when claimed) or the blob
        // segment's body (created, or picked for reuse, at least `len` long). The claim owns
        // them until commit or abort: the ring record is in WRITING state (the consumer does not
        // read it) or the blob is not yet named in any record. A peer breaking the protocol can
        // only change the bytes' values (any bytes are a valid `[u8]`), never the bounds.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn blob_name(&self) -> Option<&str> {
        self.target.blob().map(Segment::name)
    }

    /// Marks the record to be passed over. A fresh blob segment is removed as the claim drops; a
    /// reused one is free for the next message again.
    fn abort(&self, shared: &Ring) {
        if let Target::Reused(seg) = &self.target {
            blob::release(seg);
        }
        shared.set_state(self.pos, state::SKIP);
        // Not necessarily the latest claim, nor on the producer's thread (a dropped RawLoan).
        shared.publish(self.end, false);
        shared.header().data_event.notify();
    }
}

impl Loan<'_> {
    /// The reserved bytes, to be filled before commit. Their prior content is unspecified.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.claimed.as_mut_slice()
    }

    /// Copies `bytes` into the reserved bytes from `offset`, streaming a large copy past the cache
    /// where that is faster ([`copy_to_shared`]): the way to fill a loan from a buffer.
    ///
    /// # Panics
    /// If `offset + bytes.len()` exceeds the reserved length.
    pub fn copy_from(&mut self, offset: usize, bytes: &[u8]) {
        self.claimed.copy_from(&self.producer.shared, offset, bytes);
    }

    /// The reserved length.
    pub fn len(&self) -> usize {
        self.claimed.len
    }

    /// Whether the reserved length is zero.
    pub fn is_empty(&self) -> bool {
        self.claimed.len == 0
    }

    /// Whether the message travels in a segment of its own.
    pub fn is_blob(&self) -> bool {
        self.blob_name().is_some()
    }

    /// The name of the message's own segment, if it travels as a blob.
    pub fn blob_name(&self) -> Option<&str> {
        self.claimed.blob_name()
    }

    /// Publishes the message to the consumer.
    pub fn commit(mut self) -> Result<()> {
        self.done = true;
        self.producer.commit_claimed(&mut self.claimed);
        Ok(())
    }
}

impl Drop for Loan<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.claimed.abort(&self.producer.shared);
        }
    }
}

impl RawLoan {
    /// The reserved bytes, to be filled before commit. Their prior content is unspecified.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.claimed.as_mut_slice()
    }

    /// Copies `bytes` into the reserved bytes from `offset`, like [`Loan::copy_from`].
    ///
    /// # Panics
    /// If `offset + bytes.len()` exceeds the reserved length.
    pub fn copy_from(&mut self, offset: usize, bytes: &[u8]) {
        self.claimed.copy_from(&self.shared, offset, bytes);
    }

    /// Pointer to the reserved bytes, valid until the loan is committed or dropped.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.claimed.ptr
    }

    /// The reserved length.
    pub fn len(&self) -> usize {
        self.claimed.len
    }

    /// Whether the reserved length is zero.
    pub fn is_empty(&self) -> bool {
        self.claimed.len == 0
    }

    /// The name of the message's own segment, if it travels as a blob.
    pub fn blob_name(&self) -> Option<&str> {
        self.claimed.blob_name()
    }
}

impl Drop for RawLoan {
    fn drop(&mut self) {
        if !self.done {
            self.claimed.abort(&self.shared);
        }
    }
}

const _: () = assert!(POS_BITS == 40);
