//! Seeded mutation fuzzing of everything a receiver decodes from shared memory: the queue's
//! control block, the producer entries, the record headers and blob descriptors. Each case
//! restores a queue holding a mix of inline and blob messages, overwrites a few random bytes,
//! opens it afresh and drains it, through one of the receive paths in turn. Opening and
//! receiving must return values or errors: no panic, no out-of-bounds access (the test process
//! would die), no endless loop, no wait past its timeout. A second test does the same while
//! another process writes random bytes into the queue as it is being read. A third races a
//! producer process with a forger that writes validly stamped records with forged lengths, unit
//! counts, kinds, stamps and blob descriptors (`common/race_forge.rs`): every message received
//! must be an intact pattern message that was meant to be received, and every forgery refused
//! with a typed error.
//!
//! `SHMPIPE_FUZZ_CASES` overrides the number of cases (default 100,000). Seeds that once found a
//! bug are replayed first, as regression cases.

mod common;

#[path = "common/race_forge.rs"]
mod race_forge;

use common::peer::Peer;
use common::shm::remove_created_by;
use shmpipe_core::{Consumer, Error, Queue, QueueOptions, Segment, SegmentKind, WaitOptions};
use shmpipe_test_peer::pattern;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Seeds of cases that found bugs, replayed before the random ones.
const REGRESSIONS: &[u64] = &[];

/// Ring size of the fuzzed queue: small, so that cases are cheap and records are dense.
const RING: u64 = 16 << 10;

/// How many outcomes (keyed `"PATH: WHAT"`) end with `what`.
fn count_ending(outcomes: &BTreeMap<String, u64>, what: &str) -> u64 {
    outcomes
        .iter()
        .filter(|(k, _)| k.ends_with(what))
        .map(|(_, n)| n)
        .sum()
}

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

    let mut outcomes = BTreeMap::<String, u64>::new();
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
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
        let path = Path::ALL[(seed % Path::ALL.len() as u64) as usize];
        let case_started = Instant::now();
        let outcome = drain(q.name(), path);
        slowest = slowest.max(case_started.elapsed());
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!(
        "{} cases in {:?} (slowest {slowest:?}): {outcomes:?}",
        REGRESSIONS.len() as u64 + cases,
        started.elapsed()
    );
    assert!(
        outcomes.len() > 1,
        "mutations changed nothing: {outcomes:?}"
    );
    // Each drain waits with a zero timeout: a few hundred microseconds, whatever the damage.
    assert!(slowest < Duration::from_secs(2), "a drain took {slowest:?}");
}

/// What the pattern check found in a received message: its (producer, seq), or what is wrong
/// with its bytes.
type Checked = Result<(u32, u64), String>;

/// One of the ways a consumer receives.
#[derive(Clone, Copy, Debug)]
enum Path {
    /// `try_recv`, the message held (the caller releases held ones out of order).
    TryRecv,
    /// `try_recv_with`: read in place, released at once.
    TryRecvWith,
    /// `recv` with a timeout.
    Recv,
    /// `recv_with` with a timeout: read in place.
    RecvWith,
    /// `recv_timeout`.
    RecvTimeout,
    /// `wait_ready` with a timeout, then `try_recv`.
    WaitReady,
}

impl Path {
    const ALL: [Path; 6] = [
        Path::TryRecv,
        Path::TryRecvWith,
        Path::Recv,
        Path::RecvWith,
        Path::RecvTimeout,
        Path::WaitReady,
    ];

    /// Receives one message through this path, waiting at most `timeout` where the path waits;
    /// `Ok(None)` when there is none. Every byte of what it got is read (an out-of-bounds view
    /// would fault), and checked against the pattern: `Some(true)` if intact.
    fn receive(
        self,
        c: &mut Consumer,
        timeout: Duration,
        held: &mut Vec<shmpipe_core::Message>,
    ) -> Result<Option<bool>, Error> {
        Ok(self
            .receive_checked(c, timeout, held)?
            .map(|checked| checked.is_ok()))
    }

    /// Like [`receive`](Self::receive), returning what the pattern check found: the message's
    /// (producer, seq) or what is wrong with its bytes.
    fn receive_checked(
        self,
        c: &mut Consumer,
        timeout: Duration,
        held: &mut Vec<shmpipe_core::Message>,
    ) -> Result<Option<Checked>, Error> {
        let wait = WaitOptions::timeout(timeout);
        let read = |bytes: &[u8]| {
            let sum: u64 = bytes.iter().map(|&b| b as u64).sum();
            std::hint::black_box(sum);
            pattern::check(bytes)
        };
        let none_on_timeout = |r: Result<_, Error>| match r {
            Err(Error::Timeout) => Ok(None),
            other => other.map(Some),
        };
        match self {
            Path::TryRecv => Ok(c.try_recv()?.map(|m| {
                let checked = read(m.as_slice());
                held.push(m);
                checked
            })),
            Path::TryRecvWith => c.try_recv_with(read),
            Path::Recv => none_on_timeout(c.recv(&wait).map(|m| read(m.as_slice()))),
            Path::RecvWith => none_on_timeout(c.recv_with(&wait, read)),
            Path::RecvTimeout => {
                none_on_timeout(c.recv_timeout(timeout).map(|m| read(m.as_slice())))
            }
            Path::WaitReady => match c.wait_ready(&wait) {
                Ok(()) => Ok(c.try_recv()?.map(|m| read(m.as_slice()))),
                Err(Error::Timeout) => Ok(None),
                Err(e) => Err(e),
            },
        }
    }
}

/// Opens the queue by name and receives through `path` until it reports nothing more; returns
/// how it ended.
fn drain(name: &str, path: Path) -> String {
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
        match path.receive(&mut c, Duration::ZERO, &mut held) {
            Ok(Some(_)) => release_some(&mut held),
            Ok(None) => return format!("drained after {}", n.min(9)),
            Err(e) => return format!("recv #{}: {}", n.min(9), kind(&e)),
        }
    }
    drop(held);
    "more than 64 messages".to_owned()
}

/// Keeps at most two messages held, releasing the oldest: with the newest moved into its place,
/// messages are released out of order.
fn release_some(held: &mut Vec<shmpipe_core::Message>) {
    if held.len() > 2 {
        held.swap_remove(0);
    }
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

#[test]
fn receivers_survive_a_concurrent_writer_on_every_receive_path() {
    // A producer process streams messages (inline and blobs) into a small ring while another
    // process writes random bytes, in odd rounds over the whole queue (control block, entries,
    // records), in even ones over the records only (the queue keeps working, with damaged
    // records passing through it), and this one receives through each path in turn. Every
    // receive must end in a message (intact or damaged), nothing, or an error, within its
    // timeout.
    const TIMEOUT: Duration = Duration::from_millis(20);
    // A wait may overrun its timeout by one health check and scheduling noise, never by more.
    const SLACK: Duration = Duration::from_millis(500);
    let mut outcomes = BTreeMap::<String, u64>::new();
    let mut slowest = Duration::ZERO;
    let mut leftovers = 0;
    for round in 0..Path::ALL.len() as u64 {
        let q = Queue::create(&QueueOptions {
            capacity: 32,
            bytes: 64 << 10, // the producer's 40 KB messages exceed half of it: blobs too
            max_producers: 4,
        })
        .unwrap();
        let mut c = q.consumer().unwrap();
        // Small messages when the records are attacked (many record headers in the ring), up
        // to 40 KB (inline and blobs) otherwise.
        let max_bytes = if round % 2 == 0 { "300" } else { "40000" };
        let mut producer = Peer::run(&["stream-for", q.name(), "900", max_bytes]);
        let producer_pid = producer.pid();
        // Where the writer starts: the data area (the ring, at the end of the body) or 0.
        let from = if round % 2 == 0 {
            let raw = Segment::open(q.name(), SegmentKind::Queue, Duration::from_secs(1)).unwrap();
            raw.body_len() as u64 - q.data_bytes()
        } else {
            0
        };
        let seed = (round + 77).to_string();
        let mut writer = Peer::run(&["corrupt", q.name(), &seed, "700", &from.to_string()]);
        let until = Instant::now() + Duration::from_millis(1000);
        let mut held = Vec::new();
        let mut n = 0usize;
        while Instant::now() < until {
            // Each round starts on a different path, and every path is used in every round.
            let path = Path::ALL[(round as usize + n) % Path::ALL.len()];
            n += 1;
            let started = Instant::now();
            let got = path.receive(&mut c, TIMEOUT, &mut held);
            let took = started.elapsed();
            slowest = slowest.max(took);
            assert!(took < TIMEOUT + SLACK, "{path:?} took {took:?}");
            let what = match got {
                Ok(Some(true)) => "intact message",
                Ok(Some(false)) => "damaged message",
                Ok(None) => "nothing",
                Err(Error::Timeout) => "timeout",
                Err(Error::BadSegment { .. }) => "bad segment",
                Err(Error::PeerGone) => "peer gone",
                Err(Error::Closed) => "closed",
                Err(e) => {
                    panic!("{path:?}: unexpected error from a queue being written over: {e:?}")
                }
            };
            *outcomes.entry(format!("{path:?}: {what}")).or_default() += 1;
            release_some(&mut held);
        }
        drop(held);
        let wrote = writer.line();
        assert!(wrote.starts_with("wrote "), "{wrote}");
        let done = producer.line();
        assert!(done.starts_with("done "), "{done}");
        writer.wait_success();
        producer.wait_success();
        drop(c);
        drop(q);
        // Blobs whose records the damage destroyed can be found by nobody but the dead-creator
        // cleanup; do its job for this test's producer.
        leftovers += remove_created_by(producer_pid);
    }
    eprintln!(
        "outcomes: {outcomes:?}; slowest receive {slowest:?}; {leftovers} orphaned blobs removed"
    );
    for path in Path::ALL {
        let used: u64 = outcomes
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{path:?}: ")))
            .map(|(_, n)| n)
            .sum();
        assert!(used > 0, "{path:?} was never used: {outcomes:?}");
    }
    let count = |what: &str| count_ending(&outcomes, what);
    assert!(count(": intact message") > 0, "nothing moved: {outcomes:?}");
    assert!(
        count(": bad segment") + count(": damaged message") > 0,
        "the damage never showed: {outcomes:?}"
    );
}

#[test]
fn receivers_refuse_stamped_forgeries_racing_a_producer_on_every_receive_path() {
    // A producer process streams pattern messages (inline, and blobs in odd rounds) while a
    // forger thread, registered as a second producer with its own mapping of the queue, claims
    // records between them and forges their headers and descriptors (see `race_forge.rs`). This
    // thread receives through each path in turn and reads every byte it is given. Allowed: an
    // intact message of the real producer or of the forger's well-formed records, in order;
    // nothing; a typed error. Anything else (bytes that fail the pattern check, a message the
    // forger marked as never to be received, a panic, a fault) fails the test.
    const TIMEOUT: Duration = Duration::from_millis(20);
    const SLACK: Duration = Duration::from_millis(500);
    const ROUND: Duration = Duration::from_millis(1500);
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let mut outcomes = BTreeMap::<String, u64>::new();
    let mut forged = race_forge::Forged::new();
    let mut slowest = Duration::ZERO;
    for round in 0..2u64 {
        let q = Queue::create(&QueueOptions {
            capacity: 64,
            bytes: 64 << 10,
            max_producers: 4,
        })
        .unwrap();
        let mut c = q.consumer().unwrap();
        let max_bytes = if round % 2 == 0 { "2000" } else { "40000" };
        let millis = ROUND.as_millis().to_string();
        let mut producer = Peer::run(&["stream-for", q.name(), &millis, max_bytes]);
        let producer_pid = producer.pid();
        let stop = AtomicBool::new(false);
        let refusals = AtomicU64::new(0);
        let (round_forged, blob_names) = std::thread::scope(|scope| {
            let forger = scope.spawn(|| race_forge::run(q.name(), round + 1913, &stop, &refusals));
            // Stops the forger however this thread leaves the scope (a failed check panics), so
            // that the scope's join does not wait for ever.
            let _stop = race_forge::StopOnDrop(&stop);
            let until = Instant::now() + ROUND;
            let mut held = Vec::new();
            // The last sequence number received from each pattern producer.
            let mut last = BTreeMap::<u32, u64>::new();
            let mut n = 0usize;
            while Instant::now() < until {
                let path = Path::ALL[n % Path::ALL.len()];
                n += 1;
                let started = Instant::now();
                let got = path.receive_checked(&mut c, TIMEOUT, &mut held);
                let took = started.elapsed();
                slowest = slowest.max(took);
                assert!(took < TIMEOUT + SLACK, "{path:?} took {took:?}");
                let what = match got {
                    Ok(Some(Ok((producer, seq)))) => {
                        assert!(
                            producer == 1 || producer == race_forge::HONEST,
                            "{path:?} handed out a forged record that had to be refused \
                             (producer {producer}, seq {seq})"
                        );
                        let before = last.insert(producer, seq);
                        assert!(
                            !matches!(before, Some(b) if b >= seq),
                            "{path:?}: producer {producer}'s message {seq} after {before:?}"
                        );
                        if producer == 1 {
                            "real message"
                        } else {
                            "forger's well-formed message"
                        }
                    }
                    Ok(Some(Err(wrong))) => {
                        panic!("{path:?} handed out bytes no producer wrote as a message: {wrong}")
                    }
                    Ok(None) => "nothing",
                    Err(Error::BadSegment { .. }) => {
                        refusals.fetch_add(1, Ordering::Release);
                        "refused: bad segment"
                    }
                    Err(Error::PeerGone) => "peer gone",
                    Err(Error::Closed) => "closed",
                    Err(e) => panic!("{path:?}: unexpected error from a forged record: {e:?}"),
                };
                *outcomes.entry(format!("{path:?}: {what}")).or_default() += 1;
                // Held messages are released out of order, and all of them now and then: a
                // message held for long would hold the ring's head, and the queue would stall.
                release_some(&mut held);
                if n % 5 == 0 {
                    held.clear();
                }
            }
            drop(held);
            stop.store(true, Ordering::Relaxed);
            forger.join().unwrap()
        });
        for (k, v) in round_forged {
            *forged.entry(k).or_default() += v;
        }
        let done = producer.line();
        assert!(done.starts_with("done "), "{done}");
        producer.wait_success();
        let queue_name = q.name().to_owned();
        drop(c);
        drop(q);
        // Nothing left behind: the queue, the real producer's blobs, the forger's blobs.
        let orphans = remove_created_by(producer_pid);
        assert_eq!(orphans, 0, "the real producer's blobs were left behind");
        assert!(!common::peer::shm_exists(&queue_name), "{queue_name} left");
        for name in blob_names {
            assert!(
                !common::peer::shm_exists(&name),
                "forged blob {name} left behind"
            );
        }
    }
    eprintln!("forged: {forged:?}\noutcomes: {outcomes:?}; slowest receive {slowest:?}");
    let count = |what: &str| count_ending(&outcomes, what);
    assert!(count(": real message") > 100, "{outcomes:?}");
    assert!(count(": forger's well-formed message") > 20, "{outcomes:?}");
    assert!(count(": refused: bad segment") > 100, "{outcomes:?}");
    for path in Path::ALL {
        let refused = outcomes
            .get(&format!("{path:?}: refused: bad segment"))
            .copied()
            .unwrap_or(0);
        assert!(refused > 0, "{path:?} never met a forgery: {outcomes:?}");
    }
    // Every kind of forgery in `race_forge.rs` was made.
    let kinds = forged.keys().filter(|k| **k != "skipped").count();
    assert_eq!(kinds, 14, "some forgeries were never made: {forged:?}");
}
