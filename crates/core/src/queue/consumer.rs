//! The receiving side: read committed records in place, release them in any order, and pass
//! over what dead or aborting producers left behind.

use super::layout::{
    consumer_generation, entry, kind, pack_consumer, pos_distance, state, Cursor, EntryWord,
    MEMBERSHIP_ENDED, PENDING_VALID, POS_MASK, UNIT,
};
use super::ring::{descriptor_name, Ring};
use crate::blob::{self, BlobCache};
use crate::error::{BadSegmentReason, Error, Result};
use crate::event::{wait_until, WaitOptions};
use crate::presence::PresenceMark;
use crate::process::ProcessIdentity;
use crate::segment::{Segment, SegmentKind};
use std::collections::HashSet;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The queue's single consumer.
///
/// Dropping it closes it: waiting producers then see [`Error::Closed`], and the queue takes no
/// new producer or consumer ([`Error::ConsumerClosed`]).
///
/// **The end of the stream.** The stream ends when the consumer, finding nothing to read, sees
/// that at least one producer registered, that every producer that registered has closed (none
/// died), and that every message was read. Any receiving call finds it: waiting or not
/// ([`try_recv`](Self::try_recv) too). The end is recorded in the queue and is final: from then
/// on every receiving call fails with [`Error::Closed`] at once, and
/// [`Queue::producer`](crate::Queue::producer) refuses new producers with [`Error::StreamEnded`]
/// (registration and the end are decided on one word, so a producer either registers first and
/// is read, or is refused). A producer that died is not an end: waits report
/// [`Error::PeerGone`] (at their next health check) while no producer is live, and a new
/// producer may still register.
///
/// Aligned to 128 bytes: the fields it updates per message never share a cache line (or an
/// adjacent-line prefetch pair) with a [`Producer`](crate::Producer) stored next to it.
#[repr(align(128))]
pub struct Consumer {
    shared: Arc<Ring>,
    /// Next position to read (records before it were delivered or passed over).
    read_pos: u64,
    /// [`QueueHeader::published`](super::layout::QueueHeader::published) as last read
    /// (single-producer queues).
    published: u64,
    /// Membership counter as of the last health check.
    seen_membership: u32,
    /// Membership counter as of the last scan of the producers for the end of the stream.
    scanned_membership: Option<u32>,
    /// Whether that scan found producers registered and all of them closed: the stream ends
    /// once the queue is drained, unless the membership changes first.
    all_closed: bool,
    /// Mappings of blobs that their producers keep for reuse.
    blobs: BlobCache,
    /// Where producers pass sealed blobs (a sealed queue's consumer; `None` otherwise).
    mailbox: Option<Mailbox>,
    /// This registration's presence mark ([`crate::presence`]), dropped after its final state is
    /// stored; `None` where marks are unavailable.
    mark: Option<PresenceMark>,
    closed: bool,
}

/// A received message, read in place. Its bytes stay valid and unchanged until it is dropped,
/// which releases its space to the producers. Messages may be dropped in any order.
pub struct Message {
    body: Body,
}

enum Body {
    /// In the ring: keeps the queue mapped until released.
    Inline {
        shared: Arc<Ring>,
        pos: u64,
        ptr: *const u8,
        len: usize,
        producer: u32,
        generation: u32,
    },
    /// In a segment of its own, already unlinked: independent of the queue. Shared with the
    /// consumer's [`BlobCache`] when the producer keeps the blob for reuse. The length is the one
    /// checked at receipt, never re-read from the shared descriptor.
    Blob(Arc<Segment>, usize),
}

// SAFETY: an inline message's bytes are owned by the message until it is dropped (the record is
// COMMITTED and only its release lets producers reuse it), and its bounds are process-local
// copies; releasing is atomic and may happen on any thread of the consumer's process.
unsafe impl Send for Message {}
// SAFETY: `&Message` only allows reading the bytes, which no peer following the protocol writes
// while it lives (one breaking it can only change their values, never their bounds).
unsafe impl Sync for Message {}

impl Message {
    /// The message's bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.body {
            // SAFETY: `ptr`/`len` were checked, when the record was taken, to lie in its
            // payload before the ring's end, and are process-local copies; the `Arc<Ring>` keeps
            // the mapping alive, and the bytes are ours until drop (see the `Send` impl). A peer
            // writing them anyway can only change their values (any bytes are a valid `[u8]`).
            Body::Inline { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
            // SAFETY: `len` was checked at receipt against the segment's body length (a
            // process-local value, checked against the mapping on open), which stays mapped
            // while `seg` lives; its producer filled it before committing the record. A peer
            // writing it anyway can only change the bytes' values.
            Body::Blob(seg, len) => unsafe { std::slice::from_raw_parts(seg.body_ptr(), *len) },
        }
    }

    /// The message's length in bytes.
    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    /// Whether the message is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the message travelled in a segment of its own.
    pub fn is_blob(&self) -> bool {
        matches!(self.body, Body::Blob(..))
    }

    /// The name of the segment of its own that the message travelled in, if any. A producer
    /// reuses such segments once released, so later messages may carry the same name.
    pub fn blob_name(&self) -> Option<&str> {
        match &self.body {
            Body::Blob(seg, _) => Some(seg.name()),
            Body::Inline { .. } => None,
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        if let Body::Inline {
            shared,
            pos,
            producer,
            generation,
            ..
        } = &self.body
        {
            release(shared, *pos, Some((*producer, *generation)));
            // After the release: a consumer that sees no handle held sees its effects too.
            shared.held.fetch_sub(1, Ordering::Release);
        } else if let Body::Blob(seg, _) = &self.body {
            // Its producer may write the next message into it now.
            blob::release(seg);
        }
    }
}

/// Releases the record at `pos`, credits its producer, and frees what can be freed.
///
/// In-order releases (the record is at the head) just move the head with a CAS, without writing
/// the record's line; out-of-order ones mark the record RELEASED for the head to pass later.
/// Stamps are keyed by position, so a stale RELEASED stamp never matches a later lap.
fn release(shared: &Ring, pos: u64, producer: Option<(u32, u32)>) {
    if let Some((index, generation)) = producer {
        if index < shared.max_producers {
            let e = shared.producer_entry(index);
            if e.identity.load().generation == generation {
                e.consumed.by_handle.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
    let h = shared.header();
    let head = Cursor(h.head.load(Ordering::Acquire));
    if head.pos() == pos {
        if let Some(next) = passed(shared, head) {
            // SeqCst: also orders our head store before the RELEASED checks in `advance_head`
            // against other threads marking records (they fence after marking).
            if h.head
                .compare_exchange(head.0, next.0, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
            {
                if shared.out_of_order.load(Ordering::SeqCst) != 0 {
                    advance_head(shared);
                } else {
                    // The CAS was SeqCst: it orders the head move before the sleeper check.
                    h.space_event.notify_after_fence();
                }
                return;
            }
        }
    }
    shared.out_of_order.fetch_add(1, Ordering::SeqCst);
    shared.set_state(pos, state::RELEASED);
    advance_head(shared);
}

/// Releases a record the consumer read in place, crediting its producer. While no message
/// handle of this process is held, the consumer is the only thread that releases, so with the
/// record at the head (the usual case) plain stores do: no locked instruction, which would wait
/// for this core's pending stores to reach the producers' cores.
#[inline(always)]
fn release_in_place(shared: &Ring, r: &InlineRecord) {
    let alone = shared.held.load(Ordering::Acquire) == 0
        && shared.out_of_order.load(Ordering::Relaxed) == 0;
    if !alone {
        return release(shared, r.pos, Some((r.producer, r.generation)));
    }
    if r.producer < shared.max_producers {
        let e = shared.producer_entry(r.producer);
        if e.identity.load().generation == r.generation {
            let counter = &e.consumed.in_place;
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(1),
                Ordering::Release,
            );
        }
    }
    let h = shared.header();
    let head = Cursor(h.head.load(Ordering::Relaxed));
    match passed(shared, head) {
        Some(next) if head.pos() == r.pos => {
            h.head.store(next.0, Ordering::Release);
            h.space_event.notify();
        }
        // Not at the head (a previous consumer left records behind), or corrupt: the general
        // path copes.
        _ => release(shared, r.pos, None),
    }
}

/// The head moved past the record at `head`, or `None` if that record is corrupt.
fn passed(shared: &Ring, head: Cursor) -> Option<Cursor> {
    let rec = shared.record(head.pos());
    let units = shared.checked_units(head.pos(), rec).ok()?;
    let is_message = rec.kind.load(Ordering::Relaxed) != kind::PAD;
    Some(head.advance(units, is_message as u64))
}

/// Moves the head past every RELEASED record at its front. Safe from any thread of the
/// consumer's process: the head only moves by CAS, so each record is passed exactly once.
fn advance_head(shared: &Ring) {
    let h = shared.header();
    loop {
        // Pairs with other releasing threads: either we see their RELEASED stamp at our head,
        // or they see the head we moved and move it on themselves.
        fence(Ordering::SeqCst);
        let head = Cursor(h.head.load(Ordering::Acquire));
        let pos = head.pos();
        if shared.record(pos).stamp.load(Ordering::Acquire) != shared.stamp(pos, state::RELEASED) {
            break;
        }
        let Some(next) = passed(shared, head) else {
            break; // corrupt: left for the consumer's read path to report
        };
        if h.head
            .compare_exchange(head.0, next.0, Ordering::SeqCst, Ordering::Relaxed)
            .is_ok()
        {
            shared.out_of_order.fetch_sub(1, Ordering::SeqCst);
        }
    }
    // The last iteration's fence follows our last head move: no second fence is needed.
    h.space_event.notify_after_fence();
}

/// What the consumer found at its read position.
enum Found {
    /// A message in the ring, taken (the read position moved past it) and not yet released.
    Inline(InlineRecord),
    /// A message in a segment of its own, taken and already released from the ring.
    Blob(Message),
    /// A message is ready at the read position (not taken).
    Ready,
    /// Nothing ready.
    Nothing,
}

/// A taken inline record, before it becomes a [`Message`] or is read in place.
struct InlineRecord {
    pos: u64,
    ptr: *const u8,
    len: usize,
    producer: u32,
    generation: u32,
}

impl Consumer {
    pub(crate) fn new(shared: Arc<Ring>, mark: Option<PresenceMark>) -> Self {
        let read_pos = Cursor(shared.header().head.load(Ordering::Acquire)).pos();
        let published = shared.header().published.load(Ordering::Acquire);
        Self {
            shared,
            read_pos,
            published,
            seen_membership: u32::MAX,
            scanned_membership: None,
            all_closed: false,
            blobs: BlobCache::default(),
            mailbox: None,
            mark,
            closed: false,
        }
    }

    /// Sets the mailbox through which producers pass this consumer sealed blobs.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn set_mailbox(&mut self, mailbox: Option<Mailbox>) {
        self.mailbox = mailbox;
    }

    /// Maps, at registration, the sealed blobs that queued records name and that their
    /// producers still hold (sent before any consumer registered): from then on they live as
    /// long as this consumer, whatever becomes of their producers.
    #[cfg(target_os = "linux")]
    pub(crate) fn pick_up_held_blobs(&mut self) {
        let s = self.shared.clone();
        if !s.sealed_blobs() {
            return;
        }
        let cache = &mut self.blobs;
        s.for_each_queued_blob(self.read_pos, |name, maker| {
            if cache.get(name).is_some() {
                return;
            }
            if let Some(seg) = open_held_blob(&s, name, maker) {
                if blob::is_sent(&seg) && maker == Some(seg.header().creator()) {
                    blob::mark_picked_up(&seg);
                    cache.hold(seg);
                }
            }
        });
    }

    /// Takes the next message if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Result<Option<Message>> {
        if self.closed {
            return Err(Error::Closed);
        }
        match self.poll()? {
            Found::Inline(r) => Ok(Some(self.handle(r))),
            Found::Blob(m) => Ok(Some(m)),
            _ => self.end_of_stream().map(|()| None),
        }
    }

    /// Takes the next message if one is ready and hands its bytes to `read`, releasing it when
    /// `read` returns; returns what `read` returned. For messages used at once this is cheaper
    /// than [`try_recv`](Self::try_recv): no handle is made, and in the common case (no
    /// [`Message`] of this consumer still held) releasing takes no locked instruction.
    pub fn try_recv_with<R>(&mut self, read: impl FnOnce(&[u8]) -> R) -> Result<Option<R>> {
        if self.closed {
            return Err(Error::Closed);
        }
        if let Some(r) = self.take_fast() {
            return Ok(Some(self.read_in_place(r, read)));
        }
        match self.poll()? {
            Found::Inline(r) => Ok(Some(self.read_in_place(r, read))),
            Found::Blob(m) => Ok(Some(read(m.as_slice()))),
            _ => self.end_of_stream().map(|()| None),
        }
    }

    /// Like [`try_recv_with`](Self::try_recv_with), waiting while the queue is empty; ends with
    /// the same errors as [`recv`](Self::recv).
    pub fn recv_with<R>(&mut self, wait: &WaitOptions, read: impl FnOnce(&[u8]) -> R) -> Result<R> {
        if !self.closed {
            if let Some(r) = self.take_fast() {
                return Ok(self.read_in_place(r, read));
            }
        }
        match self.wait_inner(wait, true)? {
            Found::Inline(r) => Ok(self.read_in_place(r, read)),
            Found::Blob(m) => Ok(read(m.as_slice())),
            _ => unreachable!("a taking wait ends with a message or an error"),
        }
    }

    /// The common take, small enough to inline: the next record is a committed inline message
    /// with a sane size. Returns `None`, having changed nothing, otherwise (nothing ready,
    /// padding, a blob, a skipped or corrupt record): `poll` then handles it.
    #[inline(always)]
    fn take_fast(&mut self) -> Option<InlineRecord> {
        if self.caught_up() {
            return None;
        }
        let s = &*self.shared;
        let pos = self.read_pos;
        let rec = s.record(pos);
        if rec.stamp.load(Ordering::Acquire) != s.stamp(pos, state::COMMITTED)
            || rec.kind.load(Ordering::Relaxed) != kind::INLINE
        {
            return None;
        }
        let units = rec.units.load(Ordering::Relaxed) as u64;
        let len = rec.len.load(Ordering::Relaxed);
        if units == 0 || units > s.contiguous(pos) || len > (units - 1) * UNIT {
            return None;
        }
        self.read_pos = (pos + units) & POS_MASK;
        Some(InlineRecord {
            pos,
            ptr: s.payload(pos),
            len: len as usize,
            producer: rec.producer.load(Ordering::Relaxed),
            generation: rec.generation.load(Ordering::Relaxed),
        })
    }

    /// Wraps a taken record in a handle that releases it when dropped, from any thread.
    fn handle(&self, r: InlineRecord) -> Message {
        self.shared.held.fetch_add(1, Ordering::Relaxed);
        Message {
            body: Body::Inline {
                shared: self.shared.clone(),
                pos: r.pos,
                ptr: r.ptr,
                len: r.len,
                producer: r.producer,
                generation: r.generation,
            },
        }
    }

    /// Passes a taken record's bytes to `read`, then releases the record.
    #[inline(always)]
    fn read_in_place<R>(&mut self, r: InlineRecord, read: impl FnOnce(&[u8]) -> R) -> R {
        /// Releases the record however `read` ends, so that a panic in it does not leave the
        /// record taken for ever (the head could never pass it).
        struct ReleaseOnDrop<'a>(&'a Ring, &'a InlineRecord);
        impl Drop for ReleaseOnDrop<'_> {
            fn drop(&mut self) {
                release_in_place(self.0, self.1);
            }
        }
        let _release = ReleaseOnDrop(&self.shared, &r);
        // SAFETY: `r.ptr`/`r.len` were checked, when the record was taken, to lie in its payload
        // before the ring's end, and the shared `Ring` keeps the mapping alive. The record is
        // COMMITTED and taken by us: no peer following the protocol writes it until it is
        // released, when `_release` drops after `read` has returned (and the borrow with it);
        // one breaking it can only change the bytes' values (any bytes are a valid `[u8]`).
        read(unsafe { std::slice::from_raw_parts(r.ptr, r.len) })
    }

    /// Takes the next message, waiting while the queue is empty.
    ///
    /// Fails with [`Error::Closed`] once the queue is drained and every producer has closed, or
    /// [`Error::PeerGone`] if one of them died instead.
    pub fn recv(&mut self, wait: &WaitOptions) -> Result<Message> {
        match self.wait_inner(wait, true)? {
            Found::Inline(r) => Ok(self.handle(r)),
            Found::Blob(m) => Ok(m),
            _ => unreachable!("a taking wait ends with a message or an error"),
        }
    }

    /// Waits until a message is ready, without taking it: the next [`try_recv`](Self::try_recv)
    /// returns it. Ends with the same errors as [`recv`](Self::recv). Lets a waiter thread wait
    /// while another thread receives.
    pub fn wait_ready(&mut self, wait: &WaitOptions) -> Result<()> {
        self.wait_inner(wait, false).map(|_| ())
    }

    fn wait_inner(&mut self, wait: &WaitOptions, take: bool) -> Result<Found> {
        if self.closed {
            return Err(Error::Closed);
        }
        match self.poll_inner(take)? {
            Found::Nothing => self.end_of_stream()?,
            found => return Ok(found),
        }
        let shared = self.shared.clone();
        let me = std::cell::RefCell::new(self);
        wait_until(
            &shared.header().data_event,
            wait,
            || {
                let mut me = me.borrow_mut();
                match me.poll_inner(take)? {
                    Found::Nothing => me.end_of_stream()?,
                    found => return Ok(Some(found)),
                }
                // A producer joined or left: check at once rather than at the next slice.
                let membership = shared.header().membership.load(Ordering::Acquire);
                if membership != me.seen_membership {
                    return me.health(take);
                }
                Ok(None)
            },
            || me.borrow_mut().health(take),
        )
    }

    /// Takes the next message if it arrives within `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message> {
        self.recv(&WaitOptions::timeout(timeout))
    }

    /// Reads what is at the read position, passing over padding and skipped records.
    fn poll(&mut self) -> Result<Found> {
        self.poll_inner(true)
    }

    /// Like `poll`; with `take` false it stops at a ready message without taking it.
    fn poll_inner(&mut self, take: bool) -> Result<Found> {
        if self.caught_up() {
            return Ok(Found::Nothing);
        }
        self.poll_records(take)
    }

    /// Whether a single-producer queue's producer has finished nothing past the read position:
    /// then there is nothing to read, and the only line read was the one the producer writes per
    /// message, not the record it may be writing now. Always false for other queues.
    #[inline(always)]
    fn caught_up(&mut self) -> bool {
        let s = &*self.shared;
        if !s.uses_published() || self.read_pos != self.published {
            return false;
        }
        self.published = s.header().published.load(Ordering::Acquire);
        self.read_pos == self.published
    }

    /// Reads the records from the read position on, whatever `published` says: after
    /// [`unblock`](Self::unblock) has passed over a dead producer's record, which was never
    /// published.
    fn poll_records(&mut self, take: bool) -> Result<Found> {
        let s = &*self.shared;
        loop {
            let pos = self.read_pos;
            let rec = s.record(pos);
            let stamp_value = rec.stamp.load(Ordering::Acquire);
            let st = match s.stamp_state(pos, stamp_value) {
                Some(st) if st != state::WRITING => st,
                _ => return Ok(Found::Nothing),
            };
            let units = s.checked_units(pos, rec)?;
            let record_kind = rec.kind.load(Ordering::Relaxed);
            let next = (pos + units) & POS_MASK;
            if st == state::RELEASED {
                // Released out of order by a consumer that died: pass it, and let the head
                // catch up over it.
                self.read_pos = next;
                advance_head(s);
                continue;
            }
            if st == state::SKIP || record_kind == kind::PAD {
                if record_kind == kind::BLOB {
                    // An aborted blob may have been passed to us already: close it.
                    forget_passed_blob(
                        s,
                        self.mailbox.as_mut(),
                        pos,
                        rec.len.load(Ordering::Relaxed),
                    );
                }
                self.read_pos = next;
                release(s, pos, None);
                continue;
            }
            let len = rec.len.load(Ordering::Relaxed);
            if len > (units - 1) * UNIT {
                return Err(s.corrupt());
            }
            if !take {
                return Ok(Found::Ready);
            }
            let producer = (
                rec.producer.load(Ordering::Relaxed),
                rec.generation.load(Ordering::Relaxed),
            );
            self.read_pos = next;
            return match record_kind {
                kind::INLINE => Ok(Found::Inline(InlineRecord {
                    pos,
                    ptr: s.payload(pos),
                    len: len as usize,
                    producer: producer.0,
                    generation: producer.1,
                })),
                kind::BLOB => {
                    let mailbox = self.mailbox.as_mut();
                    let opened = open_blob(s, &mut self.blobs, mailbox, pos, len, producer);
                    release(s, pos, Some(producer));
                    opened.map(|(seg, blob_len)| {
                        Found::Blob(Message {
                            body: Body::Blob(seg, blob_len),
                        })
                    })
                }
                _ => {
                    release(s, pos, None);
                    Err(s.corrupt())
                }
            };
        }
    }

    /// Called when nothing is ready at the read position: fails with [`Error::Closed`] if the
    /// stream has ended (see [`Consumer`]), recording the end in the queue the first time. One
    /// load unless producers registered or left since the last look.
    fn end_of_stream(&mut self) -> Result<()> {
        let s = &*self.shared;
        let h = s.header();
        let membership = h.membership.load(Ordering::Acquire);
        if membership & MEMBERSHIP_ENDED != 0 {
            // Every producer gave its blobs up when it closed: unmap those released since.
            self.blobs.sweep();
            return Err(Error::Closed);
        }
        if self.scanned_membership != Some(membership) {
            // Read after the count: every registration or close it counts is seen.
            let scan = scan_producers(s);
            self.scanned_membership = Some(membership);
            self.all_closed = scan.ever && scan.live == 0 && scan.dead == 0;
        }
        if !self.all_closed || !self.drained() {
            return Ok(());
        }
        // With the count unchanged since the scan, no producer registered since, so none can
        // send. A registration racing with this CAS either moved the count first (the CAS fails:
        // look again next time) or finds the end and is refused.
        let ended = h
            .membership
            .compare_exchange(
                membership,
                membership | MEMBERSHIP_ENDED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        if !ended {
            return Ok(());
        }
        // Another thread of this process may be waiting for this consumer: let it see the end.
        h.data_event.wake();
        self.blobs.sweep();
        Err(Error::Closed)
    }

    /// Whether every record claimed so far was read (or passed over).
    fn drained(&self) -> bool {
        Cursor(self.shared.header().tail.load(Ordering::Acquire)).pos() == self.read_pos
    }

    /// The slow check run while waiting: finds dead producers, passes over what they left at the
    /// read position, and reports the end of the stream once no producer is left.
    fn health(&mut self, take: bool) -> Result<Option<Found>> {
        let shared = self.shared.clone();
        let s = &*shared;
        self.seen_membership = s.header().membership.load(Ordering::Acquire);
        let read_pos = self.read_pos;
        self.blobs.sweep();
        self.blobs.sweep_dead(|| {
            let mut names = HashSet::new();
            s.for_each_queued_blob(read_pos, |name, _| {
                names.insert(name.to_owned());
            })
            .then_some(names)
        });
        let scan = scan_producers(s);
        self.scanned_membership = Some(self.seen_membership);
        self.all_closed = scan.ever && scan.live == 0 && scan.dead == 0;
        while self.unblock()? {
            match self.poll_records(take)? {
                Found::Nothing => {}
                found => return Ok(Some(found)),
            }
        }
        self.end_of_stream()?;
        if scan.ever && scan.live == 0 && scan.dead > 0 && self.drained() {
            return Err(Error::PeerGone);
        }
        Ok(None)
    }

    /// If the record at the read position belongs to a producer that died before committing it,
    /// marks it to be passed over. Returns whether it did.
    fn unblock(&self) -> Result<bool> {
        let s = &*self.shared;
        let pos = self.read_pos;
        let rec = s.record(pos);
        let stamp_value = rec.stamp.load(Ordering::Acquire);
        match s.stamp_state(pos, stamp_value) {
            Some(state::WRITING) => {
                let index = rec.producer.load(Ordering::Relaxed);
                if index >= s.max_producers {
                    return Err(s.corrupt());
                }
                let e = s.producer_entry(index);
                let word = e.identity.load();
                let owner_alive = word.state == entry::ACTIVE
                    && word.generation == rec.generation.load(Ordering::Relaxed)
                    && s.producer_alive(index, word);
                if owner_alive {
                    return Ok(false);
                }
                if rec.kind.load(Ordering::Relaxed) == kind::BLOB {
                    // The dead producer's half-written blob would leak: remove it.
                    let len = rec.len.load(Ordering::Relaxed);
                    if let Some(name) = s.blob_name_at(pos, len) {
                        let maker = s.record_maker(index, rec.generation.load(Ordering::Relaxed));
                        blob::remove_if_made_by(&name, maker);
                    }
                }
                let _ = rec.stamp.compare_exchange(
                    stamp_value,
                    s.stamp(pos, state::SKIP),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
                Ok(true)
            }
            Some(_) => Ok(false),
            None => self.unblock_unwritten_claim(pos),
        }
    }

    /// The record at `pos` has no header yet. If the space was claimed by a producer that died
    /// before writing one, writes a header that passes over its whole claim.
    fn unblock_unwritten_claim(&self, pos: u64) -> Result<bool> {
        let s = &*self.shared;
        let tail = Cursor(s.header().tail.load(Ordering::Acquire));
        if tail.pos() == pos {
            return Ok(false); // nothing claimed
        }
        // Dead producers whose published claim covers `pos`: (index, units left from pos,
        // whether the claim starts exactly at pos).
        let mut orphans = Vec::new();
        for index in 0..s.max_producers {
            let e = s.producer_entry(index);
            let pending = e.claims.pending_pos.load(Ordering::Acquire);
            if pending & PENDING_VALID == 0 {
                continue;
            }
            let (start, units) = (
                pending & POS_MASK,
                e.claims.pending_units.load(Ordering::Acquire),
            );
            if pos_distance(start, pos) >= units {
                continue;
            }
            let word = e.identity.load();
            let alive = matches!(word.state, entry::ACTIVE | entry::REGISTERING)
                && s.producer_alive(index, word);
            if alive {
                return Ok(false); // a live producer may own it: it will write the header
            }
            orphans.push((
                index,
                pos_distance(pos, (start + units) & POS_MASK),
                start == pos,
            ));
        }
        // Prefer a claim starting exactly here; with several candidates and none exact, the
        // owner is ambiguous (two producers died mid-claim at once): do not guess.
        let orphan = match orphans.iter().find(|o| o.2) {
            Some(&exact) => Some(exact),
            None if orphans.len() == 1 => Some(orphans[0]),
            None => None,
        }
        .map(|(index, remaining, _)| (index, remaining));
        let Some((index, mut remaining)) = orphan else {
            return Ok(false);
        };
        if remaining == 0 || remaining >= s.data_units {
            return Err(s.corrupt());
        }
        // A header written meanwhile means a live owner after all.
        if s.stamp_state(pos, s.record(pos).stamp.load(Ordering::Acquire))
            .is_some()
        {
            return Ok(true);
        }
        let mut at = pos;
        let contiguous = s.contiguous(at);
        if remaining > contiguous {
            s.write_header(at, contiguous, 0, kind::PAD, (index, 0), state::COMMITTED);
            at = (at + contiguous) & POS_MASK;
            remaining -= contiguous;
        }
        s.write_header(at, remaining, 0, kind::INLINE, (index, 0), state::SKIP);
        Ok(true)
    }

    /// How many blob mappings this consumer keeps for their producers to reuse.
    pub fn kept_blob_mappings(&self) -> usize {
        self.blobs.len()
    }

    /// Closes the consumer: producers waiting for space see [`Error::Closed`].
    pub fn close(mut self) {
        self.close_inner();
    }

    fn close_inner(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        let c = &self.shared.header().consumer;
        let generation = consumer_generation(c.state.load(Ordering::Acquire));
        c.state
            .store(pack_consumer(entry::CLOSED, generation), Ordering::SeqCst);
        fence(Ordering::SeqCst);
        self.shared.remove_undelivered_blobs(self.read_pos);
        self.mark = None;
        self.blobs.clear();
        self.shared.header().space_event.wake();
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.close_inner();
    }
}

/// What a look at every producer slot found.
struct ProducerScan {
    /// Registered producers whose process is alive.
    live: u32,
    /// Producers whose process died without closing (marked DEAD now or before).
    dead: u32,
    /// Whether any producer ever registered (a slot is active, closed or dead).
    ever: bool,
}

/// Looks at every producer slot. A producer found dead is marked DEAD, once per registration,
/// and the blob it was making and had not queued is removed.
fn scan_producers(s: &Ring) -> ProducerScan {
    let mut scan = ProducerScan {
        live: 0,
        dead: 0,
        ever: false,
    };
    for index in 0..s.max_producers {
        let e = s.producer_entry(index);
        let word = e.identity.load();
        match word.state {
            entry::ACTIVE => {
                scan.ever = true;
                if s.producer_alive(index, word) {
                    scan.live += 1;
                } else {
                    // Fails harmlessly if the slot changed hands meanwhile; succeeds once
                    // per dead registration.
                    let marked = e.identity.replace(
                        word,
                        EntryWord {
                            state: entry::DEAD,
                            ..word
                        },
                    );
                    if marked {
                        // A blob it was making and had not queued would leak. The name
                        // read now is this registration's: a new one needs the DEAD word.
                        if let Some(name) = e.claims.blob_name() {
                            let maker = ProcessIdentity {
                                pid: word.pid,
                                start: e.identity.start.load(Ordering::Relaxed),
                            };
                            blob::remove_abandoned(&name, maker);
                        }
                    }
                    scan.dead += 1;
                }
            }
            entry::DEAD => {
                scan.ever = true;
                scan.dead += 1;
            }
            entry::CLOSED => scan.ever = true,
            _ => {}
        }
    }
    scan
}

/// Maps the blob described by the committed record at `pos` of producer registration
/// `producer`: from `cache` if its producer reused a blob this consumer mapped before, else from
/// `mailbox` if its producer passed it there (a sealed blob), else by name. Never waits: a committed record's blob was published ready before the record, so one
/// that is not ready (or not a blob its producer made, or too short) makes the record bad. A
/// name is removed as soon as it is mapped (on Unix the mapping outlives the name), so a crash
/// of this process leaks nothing; a name the record gives is removed only if it verifiably is
/// that producer's blob ([`blob::remove_if_made_by`]).
fn open_blob(
    s: &Ring,
    cache: &mut BlobCache,
    mailbox: Option<&mut Mailbox>,
    pos: u64,
    len: u64,
    producer: (u32, u32),
) -> Result<(Arc<Segment>, usize)> {
    let desc = s.read_descriptor(pos, len)?;
    let name = descriptor_name(&desc).ok_or_else(|| s.corrupt())?;
    let blob_len = usize::try_from(desc.len).map_err(|_| s.corrupt())?;
    let maker = s.record_maker(producer.0, producer.1);
    // Made by the record's producer and filled for us: phase SENT (its producer may have given
    // it up since).
    let usable = |seg: &Segment| {
        blob_len <= seg.body_len() && blob::is_sent(seg) && maker == Some(seg.header().creator())
    };
    let seg = if let Some(seg) = cache.get(name) {
        if !usable(&seg) {
            return Err(s.corrupt());
        }
        seg
    } else if let Some(seg) = mailbox.and_then(|m| take_passed(m, name)) {
        // A sealed blob, passed to us over the mailbox: it has no name to remove.
        let seg = seg?;
        if !usable(&seg) {
            return Err(s.corrupt());
        }
        cache.insert(seg)
    } else if let Some(seg) = open_held_blob(s, name, maker) {
        // A sealed blob sent before we registered: its producer still holds it.
        if !usable(&seg) {
            return Err(s.corrupt());
        }
        blob::mark_picked_up(&seg);
        cache.insert(seg)
    } else {
        let mut seg = match Segment::open(name, SegmentKind::Blob, Duration::ZERO) {
            Ok(seg) if usable(&seg) => seg,
            // Another user's segment, or one open to others: not ours to judge or remove.
            Err(e @ Error::Permission { .. }) => return Err(e),
            failed => {
                // Nobody else will ever map a blob of this record: do not leave its name
                // behind, if it is one.
                blob::remove_if_made_by(name, maker);
                return Err(match failed {
                    Err(e @ Error::BadSegment { .. }) => e,
                    // A sealed queue's blob that no one holds: its maker held it and died.
                    Err(Error::NotFound { .. })
                        if s.sealed_blobs() && !maker.is_some_and(|m| m.is_alive()) =>
                    {
                        Error::BadSegment {
                            name: name.to_owned(),
                            reason: BadSegmentReason::SenderDied,
                        }
                    }
                    _ => s.corrupt(),
                });
            }
        };
        if cfg!(unix) {
            let _ = crate::segment::unlink(name);
        } else {
            seg.adopt();
        }
        cache.insert(seg)
    };
    // After the lookup: what it unmaps is never the blob just received (we hold it).
    cache.sweep();
    Ok((seg, blob_len))
}

/// The sealed blob `name` of a sealed queue, held by its maker (a producer that sent it before
/// any consumer registered): opened through `/proc/<maker>/fd`. `None` if the queue is not
/// sealed or the maker holds no such memory (it handed it over, or is gone).
#[cfg(target_os = "linux")]
fn open_held_blob(s: &Ring, name: &str, maker: Option<ProcessIdentity>) -> Option<Segment> {
    if !s.sealed_blobs() {
        return None;
    }
    let maker = maker?;
    let label = crate::segment::memfd_label(name);
    let (fd, _) = crate::memfd::open_by_name(maker.pid, &label)?;
    Segment::from_sealed_fd(name, fd, SegmentKind::Blob).ok()
}

#[cfg(not(target_os = "linux"))]
fn open_held_blob(_s: &Ring, _name: &str, _maker: Option<ProcessIdentity>) -> Option<Segment> {
    None
}

/// Closes the sealed blob that an aborted blob record at `pos` (payload `len`) names, if its
/// producer passed it to `mailbox` before aborting.
fn forget_passed_blob(s: &Ring, mailbox: Option<&mut Mailbox>, pos: u64, len: u64) {
    let Some(mailbox) = mailbox else {
        return;
    };
    if let Ok(desc) = s.read_descriptor(pos, len) {
        if let Some(name) = descriptor_name(&desc) {
            drop(take_passed(mailbox, name));
        }
    }
}

/// Where sealed blobs arrive: a [`crate::fd_mailbox::Mailbox`] on Linux; none elsewhere.
#[cfg(target_os = "linux")]
pub(crate) type Mailbox = crate::fd_mailbox::Mailbox;
/// Where sealed blobs arrive: nowhere off Linux (no value of this type exists).
#[cfg(not(target_os = "linux"))]
pub(crate) enum Mailbox {}

/// The sealed blob identified by `name` if its producer passed it to `mailbox`: `None` if it
/// did not (a named blob), else the mapping or why it is not a valid blob of ours.
#[cfg(target_os = "linux")]
fn take_passed(mailbox: &mut Mailbox, name: &str) -> Option<Result<Segment>> {
    let token = crate::name::generated_bits(name)?;
    match mailbox.take(token) {
        Ok(Some(fd)) => Some(Segment::from_sealed_fd(name, fd, SegmentKind::Blob)),
        Ok(None) | Err(_) => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn take_passed(mailbox: &mut Mailbox, _name: &str) -> Option<Result<Segment>> {
    match *mailbox {}
}
