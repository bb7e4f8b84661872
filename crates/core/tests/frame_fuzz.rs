//! Seeded mutation fuzzing of everything a receiver decodes from shared memory: the queue's
//! control block, the producer entries, the record headers and blob descriptors. Each case
//! restores a queue holding a mix of inline and blob messages, overwrites a few random bytes,
//! opens it afresh and drains it. Opening and receiving must return values or errors: no panic,
//! no out-of-bounds access (the test process would die), no endless loop.
//!
//! `SHMPIPE_FUZZ_CASES` overrides the number of cases (default 100,000). Seeds that once found a
//! bug are replayed first, as regression cases.

mod common;

use common::pattern;
use shmpipe_core::{Error, Queue, QueueOptions, Segment, SegmentKind, WaitOptions};
use std::time::{Duration, Instant};

/// Seeds of cases that found bugs, replayed before the random ones.
const REGRESSIONS: &[u64] = &[];

/// Ring size of the fuzzed queue: small, so that cases are cheap and records are dense.
const RING: u64 = 16 << 10;

#[test]
fn receivers_survive_100k_mutated_queues() {
    let cases: u64 = std::env::var("SHMPIPE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let q = Queue::create(&QueueOptions {
        capacity: 16,
        bytes: RING,
        max_producers: 4,
    })
    .unwrap();
    // Inline messages of several sizes, then a blob (more than half the ring), then a claim
    // left WRITING as if its producer stalled: every record shape a decoder meets. The blob's
    // name is removed by the first case that receives it; later cases meet a descriptor naming
    // a missing segment, one more shape.
    let mut p1 = q.producer().unwrap();
    let mut p2 = q.producer().unwrap();
    let forever = WaitOptions::forever();
    let mut buf = vec![0u8; 12_000];
    for (i, len) in [100usize, 0, 3000, 31, 700].into_iter().enumerate() {
        let len = len + pattern::HEADER;
        pattern::write(1, i as u64, &mut buf[..len]);
        p1.send(&buf[..len], &forever).unwrap();
    }
    pattern::write(2, 0, &mut buf[..12_000]);
    p2.send(&buf[..12_000], &forever).unwrap();
    std::mem::forget(p2.reserve(64, &forever).unwrap());
    let raw = Segment::open(q.name(), SegmentKind::Queue, Duration::from_secs(1)).unwrap();
    let (body, len) = (raw.body_ptr(), raw.body_len());
    // SAFETY: the body is `len` bytes, mapped while `raw` lives; nothing else runs now.
    let pristine = unsafe { std::slice::from_raw_parts(body, len) }.to_vec();

    let mut outcomes = std::collections::BTreeMap::<String, u64>::new();
    let started = Instant::now();
    let seeds = REGRESSIONS.iter().copied().chain(0..cases);
    for seed in seeds {
        // SAFETY: as above; every handle of the previous case has been dropped.
        unsafe { std::ptr::copy_nonoverlapping(pristine.as_ptr(), body, len) };
        let mut rng = pattern::Rng::new(seed ^ 0xF022);
        for _ in 0..1 + rng.next_u64() % 4 {
            // Mostly the first 4 KiB (control block, entries, first records), sometimes anywhere.
            let span = if rng.next_u64() % 4 == 0 {
                len
            } else {
                len.min(4096)
            };
            let at = (rng.next_u64() as usize) % span;
            let value = rng.next_u64();
            let n = (1 + rng.next_u64() % 8) as usize;
            for i in 0..n.min(len - at) {
                // SAFETY: `at + i < len`; no other handle reads the segment during the write.
                unsafe { body.add(at + i).write((value >> (i * 8)) as u8) };
            }
        }
        let outcome = drain(q.name());
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!(
        "{} cases in {:?}: {outcomes:?}",
        REGRESSIONS.len() as u64 + cases,
        started.elapsed()
    );
    assert!(
        outcomes.len() > 1,
        "mutations changed nothing: {outcomes:?}"
    );
}

/// Opens the queue by name and receives until it reports nothing more; returns how it ended.
fn drain(name: &str) -> String {
    let q = match Queue::open(name) {
        Ok(q) => q,
        Err(e) => return format!("open: {}", kind(&e)),
    };
    let mut c = match q.consumer() {
        Ok(c) => c,
        Err(e) => return format!("consumer: {}", kind(&e)),
    };
    let mut held = Vec::new();
    for n in 0..64 {
        match c.try_recv() {
            Ok(Some(m)) => {
                // Read every byte: an out-of-bounds view would fault here.
                let sum: u64 = m.as_slice().iter().map(|&b| b as u64).sum();
                std::hint::black_box(sum);
                if n % 2 == 0 {
                    held.push(m); // released later, out of order
                }
            }
            Ok(None) => return format!("drained after {}", n.min(9)),
            Err(e) => return format!("recv #{}: {}", n.min(9), kind(&e)),
        }
    }
    drop(held);
    "more than 64 messages".to_owned()
}

fn kind(e: &Error) -> &'static str {
    match e {
        Error::BadSegment { .. } => "bad segment",
        Error::ConsumerTaken => "consumer taken",
        Error::Closed => "closed",
        Error::PeerGone => "peer gone",
        Error::NotFound { .. } => "not found",
        other => panic!("unexpected error from a mutated queue: {other:?}"),
    }
}
