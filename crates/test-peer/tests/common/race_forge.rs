//! A hostile producer that races a real one: registered in the queue like any producer, it
//! claims space with the real protocol, then writes validly stamped records (the key is in the
//! queue's config) whose lengths, unit counts, kinds, stamps and blob descriptors are forged.
//!
//! Every record it writes is one of two sorts, so that a receiver's outcome can be judged:
//! - well formed: a `pattern` message of producer [`HONEST`], to be received intact (a racing
//!   rewrite of its length is undone before any other record could reuse its space);
//! - malformed: its bytes are a `pattern` message of producer [`REFUSE`], which no receiver may
//!   ever hand out. A malformed record that stops the receiver at its position (a bad length or
//!   unit count) is turned into a SKIP record once the receiver has refused it a few times, with
//!   a stamp CAS that only succeeds while the record is still this forger's.
//!
//! The record layout is `crates/core/src/queue/layout.rs`'s: stamp, len (u64), units, kind, producer, generation
//! (u32); the queue config's stamp key is at body offset 32.

use shmpipe_core::{Queue, RawLoan, Segment, SegmentKind};
use shmpipe_test_peer::pattern;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Pattern producer id of the forger's well-formed records.
pub const HONEST: u32 = 2;
/// Pattern producer id of bytes that no receiver may hand out.
pub const REFUSE: u32 = 3;

/// A fresh name of the shape shmpipe generates (its prefix and 16 lowercase hex digits), as any
/// producer can make one.
fn generated_name() -> String {
    format!(
        "{}{:016x}",
        shmpipe_core::NAME_PREFIX,
        rand::random::<u64>()
    )
}

use crate::common::queue_layout::{
    COMMITTED, DESCRIPTOR, KIND_BLOB, POS_MASK, PRODUCERS_OFFSET, PRODUCER_ENTRY_SIZE, SKIP,
    STAMP_KEY, UNIT, WRITING,
};
/// Header offset of a segment's kind word (a blob's phase: 1 is SENT).
const KIND_WORD: usize = 48;
const SENT: u64 = 1;
/// How many forged blob segments are kept mapped (and named) at once.
const KEEP_BLOBS: usize = 64;

/// The header of a record claimed through a [`RawLoan`]: one unit before its payload.
struct Record(*mut u8);

impl Record {
    fn of(loan: &mut RawLoan) -> Self {
        // SAFETY: an inline loan's payload starts one unit after its record's header, inside
        // the queue's data area.
        Record(unsafe { loan.as_mut_ptr().sub(UNIT as usize) })
    }

    fn field<T>(&self, offset: usize) -> &T {
        // SAFETY: the header is one 32-byte-aligned unit of the ring, mapped while the forger's
        // queue handle lives (longer than any `Record`); its fields are atomics, valid for any
        // bits, and `offset` is one of the layout's field offsets.
        unsafe { &*(self.0.add(offset) as *const T) }
    }
    fn stamp(&self) -> &AtomicU64 {
        self.field(0)
    }
    fn len(&self) -> &AtomicU64 {
        self.field(8)
    }
    fn units(&self) -> &AtomicU32 {
        self.field(16)
    }
    fn kind(&self) -> &AtomicU32 {
        self.field(20)
    }
    fn producer(&self) -> &AtomicU32 {
        self.field(24)
    }
    fn generation(&self) -> &AtomicU32 {
        self.field(28)
    }
}

/// Sets its flag when dropped: stops [`run`] however the receiving thread ends.
pub struct StopOnDrop<'a>(pub &'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the forger did, by kind of forgery.
pub type Forged = BTreeMap<&'static str, u64>;

/// The forger's state while it runs.
struct Forger<'a> {
    q: &'a Queue,
    raw: Segment,
    key: u64,
    data_units: u64,
    rng: pattern::Rng,
    honest_seq: u64,
    refuse_seq: u64,
    /// Blob segments it made, kept named until later records had a chance to name them.
    blobs: Vec<Segment>,
    /// Every blob name it made (for the test's leak check).
    blob_names: Vec<String>,
    refusals: &'a AtomicU64,
    stop: &'a AtomicBool,
    forged: Forged,
}

/// Registers a producer in queue `name` and forges records until `stop` is set. `refusals`
/// counts the receiver's `BadSegment` errors (the receiver bumps it): a malformed record that
/// holds the receiver up is passed over once it has been refused a few more times. Returns what
/// it forged and the names of every blob segment it made.
pub fn run(
    name: &str,
    seed: u64,
    stop: &AtomicBool,
    refusals: &AtomicU64,
) -> (Forged, Vec<String>) {
    let q = Queue::open(name).unwrap();
    let mut p = q.producer().unwrap();
    let raw = Segment::open(name, SegmentKind::Queue, Duration::from_secs(1)).unwrap();
    // SAFETY: the config lies at the start of the body, mapped while `raw` lives.
    let key = unsafe { &*(raw.body_ptr().add(STAMP_KEY as usize) as *const AtomicU64) }
        .load(Ordering::Acquire);
    let mut f = Forger {
        data_units: q.data_bytes() / UNIT,
        q: &q,
        raw,
        key,
        rng: pattern::Rng::new(seed),
        honest_seq: 0,
        refuse_seq: 0,
        blobs: Vec::new(),
        blob_names: Vec::new(),
        refusals,
        stop,
        forged: Forged::new(),
    };
    while !stop.load(Ordering::Relaxed) {
        let step = f.rng.next_u64() % 16;
        // Inline records of 24..600 bytes; blob records need a descriptor's room (96 bytes).
        let len = if step >= 10 {
            DESCRIPTOR as usize * 2
        } else {
            pattern::HEADER + (f.rng.next_u64() % 576) as usize
        };
        let loan = match p.try_reserve_raw(len as u64) {
            Ok(Some(loan)) => loan,
            Ok(None) => {
                std::thread::sleep(Duration::from_micros(100));
                continue;
            }
            Err(_) => break, // the receiver closed
        };
        let what = match step {
            0..=2 => f.honest(&mut p, loan),
            3..=4 => f.bad_len(&mut p, loan),
            5..=6 => f.bad_units(&mut p, loan),
            7 => f.bad_kind(&mut p, loan),
            8 => f.bad_stamp(loan),
            9 => f.racing_len(&mut p, loan),
            _ => f.bad_blob(&mut p, loan),
        };
        *f.forged.entry(what).or_default() += 1;
        // Leave the real producer room to race with.
        std::thread::sleep(Duration::from_micros(50 + f.rng.next_u64() % 200));
    }
    drop(p);
    let Forger {
        forged,
        blobs,
        blob_names,
        ..
    } = f;
    drop(blobs); // owned: dropping removes the names the receiver did not remove
    (forged, blob_names)
}

impl Forger<'_> {
    fn stamp(&self, pos: u64, st: u64) -> u64 {
        self.key ^ (((pos & POS_MASK) << 3) | st)
    }

    /// The position of a claimed (WRITING) record, from its stamp.
    fn pos_of(&self, rec: &Record) -> u64 {
        let v = rec.stamp().load(Ordering::Acquire) ^ self.key;
        assert_eq!(v & 7, WRITING, "a fresh claim is WRITING");
        (v >> 3) & POS_MASK
    }

    fn contiguous(&self, pos: u64) -> u64 {
        self.data_units - (pos & (self.data_units - 1))
    }

    fn refused_bytes(&mut self, loan: &mut RawLoan) {
        self.refuse_seq += 1;
        let len = loan.len();
        // SAFETY: the loan's `len` bytes are ours until it is committed or dropped.
        let bytes = unsafe { std::slice::from_raw_parts_mut(loan.as_mut_ptr(), len) };
        pattern::write(REFUSE, self.refuse_seq, bytes);
    }

    /// Commits a record whose header was rewritten: the producer's commit stamps it COMMITTED
    /// (publishing the forged fields with it) and wakes the receiver. The stamp is stored once
    /// only: a second store could undo the receiver's RELEASED mark.
    fn commit(&self, p: &mut shmpipe_core::Producer, loan: RawLoan) {
        p.commit_raw(loan).unwrap();
    }

    /// Waits until the receiver refused `more` more times (each receive path once, say), at
    /// most 100 ms.
    fn await_refusals(&self, more: u64) {
        let target = self.refusals.load(Ordering::Acquire) + more;
        let deadline = Instant::now() + Duration::from_millis(100);
        while self.refusals.load(Ordering::Acquire) < target
            && Instant::now() < deadline
            && !self.stop.load(Ordering::Relaxed)
        {
            std::thread::sleep(Duration::from_micros(50));
        }
    }

    /// Turns a committed record that the receiver refuses into a SKIP record, if it still is
    /// this forgery (the stamp names its position: a later record in that place has another).
    fn skip(&self, hdr: *mut u8, pos: u64) {
        let rec = Record(hdr);
        let _ = rec.stamp().compare_exchange(
            self.stamp(pos, COMMITTED),
            self.stamp(pos, SKIP),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }

    /// A well-formed message.
    fn honest(&mut self, p: &mut shmpipe_core::Producer, mut loan: RawLoan) -> &'static str {
        self.honest_seq += 1;
        let len = loan.len();
        // SAFETY: as in `refused_bytes`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(loan.as_mut_ptr(), len) };
        pattern::write(HONEST, self.honest_seq, bytes);
        p.commit_raw(loan).unwrap();
        "honest"
    }

    /// A length past the record's room: just past it, a little, past the ring, or huge.
    fn bad_len(&mut self, p: &mut shmpipe_core::Producer, mut loan: RawLoan) -> &'static str {
        self.refused_bytes(&mut loan);
        let rec = Record::of(&mut loan);
        let pos = self.pos_of(&rec);
        let room = (rec.units().load(Ordering::Relaxed) as u64 - 1) * UNIT;
        let ring = self.data_units * UNIT;
        let len = match self.rng.next_u64() % 6 {
            0 => room + 1,
            1 => room + 1 + self.rng.next_u64() % 64,
            2 => room + UNIT * self.contiguous(pos),
            3 => ring + self.rng.next_u64() % ring,
            4 => 1 << (40 + self.rng.next_u64() % 23),
            _ => u64::MAX - self.rng.next_u64() % 4096,
        };
        rec.len().store(len, Ordering::Relaxed);
        let hdr = rec.0;
        self.commit(p, loan);
        self.await_refusals(6);
        self.skip(hdr, pos);
        "length past the record"
    }

    /// A unit count of 0 or past the ring's end, with a length that is too long for the real
    /// room, so that the record stays malformed while the count is put back.
    fn bad_units(&mut self, p: &mut shmpipe_core::Producer, mut loan: RawLoan) -> &'static str {
        self.refused_bytes(&mut loan);
        let rec = Record::of(&mut loan);
        let pos = self.pos_of(&rec);
        let units = rec.units().load(Ordering::Relaxed);
        let contiguous = self.contiguous(pos);
        let bad = match self.rng.next_u64() % 5 {
            0 => 0,
            1 => contiguous + 1,
            2 => contiguous + 1 + self.rng.next_u64() % 1000,
            3 => self.data_units + 1 + self.rng.next_u64() % self.data_units,
            _ => u32::MAX as u64,
        };
        let room = (units as u64 - 1) * UNIT;
        let len = room + 1 + self.rng.next_u64() % (UNIT * 8);
        rec.len().store(len, Ordering::Relaxed);
        rec.units().store(bad as u32, Ordering::Relaxed);
        let hdr = rec.0;
        self.commit(p, loan);
        self.await_refusals(6);
        // The real count back (the length still refuses it), then SKIP, which needs a sane count.
        let rec = Record(hdr);
        if rec.stamp().load(Ordering::Acquire) == self.stamp(pos, COMMITTED) {
            let _ = rec.units().compare_exchange(
                bad as u32,
                units,
                Ordering::SeqCst,
                Ordering::Relaxed,
            );
        }
        self.skip(hdr, pos);
        "unit count past the ring"
    }

    /// A kind that is neither inline, blob nor padding.
    fn bad_kind(&mut self, p: &mut shmpipe_core::Producer, mut loan: RawLoan) -> &'static str {
        self.refused_bytes(&mut loan);
        let rec = Record::of(&mut loan);
        self.pos_of(&rec); // checks that the claim is a fresh one
        let kind = match self.rng.next_u64() % 3 {
            0 => 0,
            1 => 4 + (self.rng.next_u64() % 100) as u32,
            _ => self.rng.next_u64() as u32 | 0x8000_0000,
        };
        rec.kind().store(kind, Ordering::Relaxed);
        self.commit(p, loan);
        "unknown kind"
    }

    /// A stamp of another position or an unknown state, left a moment, then the claim aborted.
    fn bad_stamp(&mut self, mut loan: RawLoan) -> &'static str {
        self.refused_bytes(&mut loan);
        let rec = Record::of(&mut loan);
        let pos = self.pos_of(&rec);
        let r = self.rng.next_u64();
        let stamp = match r % 3 {
            0 => self.stamp(pos + 1 + (r >> 8) % 64, COMMITTED),
            1 => self.stamp(pos + self.data_units, COMMITTED),
            _ => self.stamp(pos, 5 + (r >> 8) % 3),
        };
        rec.stamp().store(stamp, Ordering::Release);
        std::thread::sleep(Duration::from_micros(200 + self.rng.next_u64() % 2000));
        drop(loan); // aborts: a SKIP stamp of its own position
        "stamp of another position or state"
    }

    /// A well-formed message whose length is made huge for a moment after its commit, and put
    /// back (each by CAS on the exact values, while the stamp is still this record's).
    fn racing_len(&mut self, p: &mut shmpipe_core::Producer, mut loan: RawLoan) -> &'static str {
        self.honest_seq += 1;
        let len = loan.len();
        // SAFETY: as in `refused_bytes`.
        let bytes = unsafe { std::slice::from_raw_parts_mut(loan.as_mut_ptr(), len) };
        pattern::write(HONEST, self.honest_seq, bytes);
        let rec = Record::of(&mut loan);
        let pos = self.pos_of(&rec);
        let hdr = rec.0;
        p.commit_raw(loan).unwrap();
        let rec = Record(hdr);
        let bad = u64::MAX - (self.rng.next_u64() % 4096);
        if rec.stamp().load(Ordering::Acquire) == self.stamp(pos, COMMITTED)
            && rec
                .len()
                .compare_exchange(len as u64, bad, Ordering::SeqCst, Ordering::Relaxed)
                .is_ok()
        {
            for _ in 0..self.rng.next_u64() % 2000 {
                std::hint::spin_loop();
            }
            let _ =
                rec.len()
                    .compare_exchange(bad, len as u64, Ordering::SeqCst, Ordering::Relaxed);
        }
        "length rewritten after the commit"
    }

    /// Makes a blob segment named `name` holding a refused pattern of `len` bytes, filled and
    /// SENT as a real producer's would be (this process is its creator).
    fn make_blob(&mut self, name: &str, len: usize) -> bool {
        let Ok(seg) = Segment::create_named(name, SegmentKind::Blob, len as u64) else {
            return false;
        };
        self.refuse_seq += 1;
        // SAFETY: the body is `len` bytes, ours alone until published.
        let body = unsafe { std::slice::from_raw_parts_mut(seg.body_ptr(), len) };
        pattern::write(REFUSE, self.refuse_seq, body);
        // SAFETY: the segment header precedes the body; its kind word is an aligned atomic.
        let kind_word = unsafe {
            &*(seg
                .body_ptr()
                .sub(shmpipe_core::SEGMENT_HEADER_SIZE)
                .add(KIND_WORD) as *const AtomicU64)
        };
        kind_word.store(SENT, Ordering::Relaxed);
        seg.publish_ready();
        self.blob_names.push(name.to_owned());
        self.blobs.push(seg);
        if self.blobs.len() > KEEP_BLOBS {
            self.blobs.remove(0);
        }
        true
    }

    /// The generation of the registration in producer slot `index`.
    fn generation(&self, index: u32) -> u32 {
        // SAFETY: the config and the producer entries lie inside the body, mapped while `raw`
        // lives; `index` is below max_producers (the caller's).
        let word = unsafe {
            let body = self.raw.body_ptr();
            let entries = (*(body.add(PRODUCERS_OFFSET as usize) as *const AtomicU64))
                .load(Ordering::Acquire);
            (*(body.add((entries + index as u64 * PRODUCER_ENTRY_SIZE) as usize)
                as *const AtomicU64))
                .load(Ordering::Acquire)
        };
        ((word >> 8) as u32) & ((1 << 24) - 1)
    }

    /// A blob record whose descriptor lies: a name of bad length or shape, a segment that is
    /// not a blob, a blob whose length is past its body, or one another producer did not make.
    fn bad_blob(&mut self, p: &mut shmpipe_core::Producer, mut loan: RawLoan) -> &'static str {
        let rec = Record::of(&mut loan);
        self.pos_of(&rec); // checks that the claim is a fresh one
        let len = 1000 + (self.rng.next_u64() % 8000) as usize;
        let mut name_len = None;
        let mut record_len = DESCRIPTOR;
        let mut owner = (
            rec.producer().load(Ordering::Relaxed),
            rec.generation().load(Ordering::Relaxed),
        );
        let (what, name, desc_len) = match self.rng.next_u64() % 8 {
            0 => {
                // A name length past the 32 bytes of the name field.
                let n = match self.rng.next_u64() % 3 {
                    0 => 33 + self.rng.next_u64() % 64,
                    1 => 1 << (32 + self.rng.next_u64() % 31),
                    _ => u64::MAX,
                };
                name_len = Some(n);
                ("name length past its field", generated_name(), len as u64)
            }
            1 => {
                let bad = [
                    "",
                    "a/b",
                    "../../etc/passwd",
                    "shmpipe_0123456789abcdef\0",
                    "é",
                ];
                let i = (self.rng.next_u64() % bad.len() as u64) as usize;
                ("name of the wrong shape", bad[i].to_owned(), len as u64)
            }
            2 => {
                // A real, usable blob of this producer under a name shmpipe never generates.
                // "FZ" and upper case: never a generated name; random: never a leftover's.
                let name = format!("shmpipe_FZ{:014X}", rand::random::<u64>() >> 8);
                if !self.make_blob(&name, len) {
                    return "skipped";
                }
                ("blob under a name not generated", name, len as u64)
            }
            3 => ("the queue itself", self.q.name().to_owned(), len as u64),
            4 => ("a missing segment", generated_name(), len as u64),
            5 => {
                // This producer's blob, with a length past its body.
                let name = generated_name();
                if !self.make_blob(&name, len) {
                    return "skipped";
                }
                let over = match self.rng.next_u64() % 4 {
                    0 => len as u64 + 1,
                    1 => len as u64 + 1 + self.rng.next_u64() % 8192,
                    2 => len as u64 + (1 << 20),
                    _ => u64::MAX - self.rng.next_u64() % 4096,
                };
                ("blob length past its body", name, over)
            }
            6 => {
                // This producer's blob, named by a record of another producer slot.
                let name = generated_name();
                if !self.make_blob(&name, len) {
                    return "skipped";
                }
                let other = (owner.0 + 1 + (self.rng.next_u64() % 3) as u32) % 4;
                owner = (other, self.generation(other));
                ("blob of another producer", name, len as u64)
            }
            _ => {
                // A descriptor of a wrong size (still inside the record).
                record_len = [0, 1, DESCRIPTOR - 1, DESCRIPTOR + 1, 2 * DESCRIPTOR]
                    [(self.rng.next_u64() % 5) as usize];
                let name = generated_name();
                if !self.make_blob(&name, len) {
                    return "skipped";
                }
                ("descriptor of the wrong size", name, len as u64)
            }
        };
        let mut desc = [0u8; DESCRIPTOR as usize];
        let bytes = name.as_bytes();
        let n = bytes.len().min(32);
        desc[..8].copy_from_slice(&desc_len.to_le_bytes());
        desc[8..16].copy_from_slice(&name_len.unwrap_or(n as u64).to_le_bytes());
        desc[16..16 + n].copy_from_slice(&bytes[..n]);
        // SAFETY: the loan has room for 96 bytes (asked for), ours until committed.
        unsafe { std::ptr::copy_nonoverlapping(desc.as_ptr(), loan.as_mut_ptr(), desc.len()) };
        let rec = Record::of(&mut loan);
        rec.len().store(record_len, Ordering::Relaxed);
        rec.kind().store(KIND_BLOB, Ordering::Relaxed);
        rec.producer().store(owner.0, Ordering::Relaxed);
        rec.generation().store(owner.1, Ordering::Relaxed);
        self.commit(p, loan);
        what
    }
}
