//! A hostile or corrupted queue segment.
//!
//! - Random bytes: another process writes them over the control block, the producer entries
//!   and the data while a real producer process sends and this process receives. The receiver
//!   must only ever return messages, errors or timeouts: no crash, no out-of-bounds access (the
//!   test process would die), and no wait past its timeout.
//! - Forged records: validly stamped (with the key from the queue's config) committed blob
//!   records whose descriptors name segments that are not their producer's blob: the pipe's own
//!   segment, another pipe, a shared array, a blob of another process, another user's file, and
//!   blobs whose ready flag is 0. Receiving one is a typed error at once (no wait for a ready
//!   flag), the record is consumed, and the segment it names is still there afterwards; so it
//!   is after a receiver closes with such records queued.

mod common;
#[cfg(target_os = "linux")]
#[path = "common/foreign.rs"]
#[allow(dead_code)]
mod foreign;
#[path = "common/forge.rs"]
mod forge;

use common::shm::remove_created_by;
use shmpipe_core::{Error, Queue, QueueOptions, Segment, SegmentKind, SharedArray, WaitOptions};
use shmpipe_test_peer::pattern;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn peer(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_shmpipe-peer"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn shmpipe-peer")
}

fn last_line(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("peer exits");
    assert!(out.status.success(), "peer failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn a_receiver_survives_random_writes_over_its_queue() {
    const TIMEOUT: Duration = Duration::from_millis(30);
    // A wait may overrun its timeout by one health check and scheduling noise, never by more.
    const SLACK: Duration = Duration::from_millis(500);
    let mut outcomes = std::collections::BTreeMap::<&str, u64>::new();
    let mut worst = Duration::ZERO;
    let mut leftovers = 0;
    for round in 0..4u64 {
        let q = Queue::create(&QueueOptions {
            capacity: 32,
            bytes: 64 << 10, // 40 KB messages exceed half of it: blobs are corrupted too
            max_producers: 4,
        })
        .unwrap();
        let mut c = q.consumer().unwrap();
        let producer = peer(&["stream-for", q.name(), "1500"]);
        let producer_pid = producer.id();
        let corrupter = peer(&["corrupt", q.name(), &round.to_string(), "1200"]);
        let until = Instant::now() + Duration::from_millis(1800);
        while Instant::now() < until {
            let started = Instant::now();
            let got = c.recv(&WaitOptions::timeout(TIMEOUT));
            worst = worst.max(started.elapsed());
            assert!(
                started.elapsed() < TIMEOUT + SLACK,
                "recv took {:?}",
                started.elapsed()
            );
            let kind = match got {
                Ok(m) => match pattern::check(m.as_slice()) {
                    Ok(_) => "intact message",
                    Err(_) => "damaged message",
                },
                Err(Error::Timeout) => "timeout",
                Err(Error::BadSegment { .. }) => "bad segment",
                Err(Error::PeerGone) => "peer gone",
                Err(Error::Closed) => "closed",
                Err(e) => panic!("unexpected error from a corrupted queue: {e:?}"),
            };
            *outcomes.entry(kind).or_default() += 1;
        }
        let wrote = last_line(corrupter);
        assert!(wrote.starts_with("wrote "), "{wrote}");
        let done = last_line(producer);
        assert!(done.starts_with("done "), "{done}");
        drop(c);
        drop(q);
        // Blobs whose records the damage destroyed can be found by nobody but the dead-creator
        // cleanup; do its job for this test's producer (and count it).
        leftovers += remove_created_by(producer_pid);
    }
    eprintln!(
        "outcomes over 4 rounds: {outcomes:?}; slowest recv {worst:?}; \
         {leftovers} orphaned blobs removed"
    );
    assert!(
        outcomes.get("intact message").copied().unwrap_or(0) > 0,
        "the test moved messages before the damage: {outcomes:?}"
    );
    let noticed = ["bad segment", "damaged message"]
        .iter()
        .map(|k| outcomes.get(k).copied().unwrap_or(0))
        .sum::<u64>();
    assert!(noticed > 0, "the damage showed: {outcomes:?}");
}

/// What a non-blocking receive may take for a bad record: far below the 1 s a wait for a ready
/// flag took, wide enough for a loaded machine.
const NO_WAIT: Duration = Duration::from_millis(250);

fn forge_queue() -> Queue {
    Queue::create(&FORGE_OPTIONS).unwrap()
}

const FORGE_OPTIONS: QueueOptions = QueueOptions {
    capacity: 64,
    bytes: 64 << 10,
    max_producers: 4,
};

fn shm_exists(name: &str) -> bool {
    std::path::Path::new("/dev/shm").join(name).exists()
}

/// Forges a blob record of producer slot 0 (this process) naming `victim`, then sends a real
/// message; receiving must refuse the record at once with an error `expected` accepts, and the
/// real message must come next. Returns the error.
fn refuse_forged(
    q: &Queue,
    p: &mut shmpipe_core::Producer,
    c: &mut shmpipe_core::Consumer,
    victim: &str,
    expected: impl Fn(&Error) -> bool,
) -> Error {
    let forger = forge::Forger::open(q.name());
    forger.blob_record(0, forger.generation(0), victim, 4096);
    let marker = format!("after {victim}");
    p.send(marker.as_bytes(), &WaitOptions::forever()).unwrap();
    let started = Instant::now();
    let got = c.try_recv();
    let took = started.elapsed();
    let err = match got {
        Ok(Some(m)) => panic!("a forged record naming {victim} gave {} bytes", m.len()),
        Ok(None) => panic!("a forged record naming {victim} was not seen"),
        Err(e) => e,
    };
    assert!(expected(&err), "record naming {victim}: {err:?}");
    assert!(took < NO_WAIT, "record naming {victim} took {took:?}");
    let next = c.try_recv().unwrap().expect("the record was consumed");
    assert_eq!(next.as_slice(), marker.as_bytes());
    err
}

#[cfg(target_os = "linux")]
#[test]
fn forged_blob_records_are_refused_at_once_and_their_victims_survive() {
    use common::peer::{Peer, RemoveOnDrop};
    let q = forge_queue();
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let bad = |e: &Error| matches!(e, Error::BadSegment { .. });

    // The pipe's own segment, and another pipe.
    refuse_forged(&q, &mut p, &mut c, q.name(), bad);
    assert!(shm_exists(q.name()));
    let other = forge_queue();
    refuse_forged(&q, &mut p, &mut c, other.name(), bad);
    assert!(shm_exists(other.name()));

    // A shared array.
    let array = format!("hv{:x}", std::process::id());
    let a = SharedArray::create(&array, shmpipe_core::Dtype::Uint8, &[64]).unwrap();
    let array_seg = format!("{}{array}", shmpipe_core::ARRAY_NAME_PREFIX);
    refuse_forged(&q, &mut p, &mut c, &array_seg, bad);
    assert!(shm_exists(&array_seg));
    drop(a);
    SharedArray::remove(&array).unwrap();

    // A ready, sent blob of another process (of this user): not this record's producer's.
    let mut squatter = Peer::run_program(foreign::FOREIGN, &["squat", "blob", "600"]);
    let theirs = foreign::squatted_name(&mut squatter);
    let _cleanup = RemoveOnDrop(theirs.clone());
    refuse_forged(&q, &mut p, &mut c, &theirs, bad);
    assert!(shm_exists(&theirs));

    // A blob whose ready flag is 0, being written by a producer of another queue (another
    // process): no wait for the flag, and not removed (not this record's producer's). Named:
    // a queue with no consumer on the sealed backing keeps such a blob out of /dev/shm.
    let elsewhere = Queue::create_in(&FORGE_OPTIONS, shmpipe_core::Backing::Shm).unwrap();
    let mut stalled = Peer::run(&["produce-huge", elsewhere.name(), "7", "100000", "stall"]);
    let line = stalled.line();
    let unready = line.strip_prefix("writing ").expect(&line).to_owned();
    assert_eq!(stalled.line(), "stalled");
    let _cleanup_unready = RemoveOnDrop(unready.clone());
    let err = refuse_forged(&q, &mut p, &mut c, &unready, bad);
    assert!(
        matches!(
            err,
            Error::BadSegment {
                reason: shmpipe_core::BadSegmentReason::NotReady,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(shm_exists(&unready));

    // A blob whose ready flag is 0 made by this record's producer (this process): refused at
    // once as well; it verifiably is that producer's blob, which nobody will map now, so the
    // receiver removes its name.
    let own = Segment::create(SegmentKind::Blob, 4096).unwrap();
    refuse_forged(&q, &mut p, &mut c, own.name(), bad);
    assert!(
        !shm_exists(own.name()),
        "the producer's own unready blob is removed"
    );
}

#[cfg(target_os = "linux")]
#[test]
fn another_users_file_named_by_a_forged_record_is_refused_and_kept() {
    use common::peer::RemoveOnDrop;
    if !foreign::root_available("another_users_file_named_by_a_forged_record_is_refused_and_kept") {
        return;
    }
    let q = forge_queue();
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let mut squatter = foreign::as_nobody(&["squat", "blob", "666"]);
    let theirs = foreign::squatted_name(&mut squatter);
    let _cleanup = RemoveOnDrop(theirs.clone());
    refuse_forged(&q, &mut p, &mut c, &theirs, |e| {
        matches!(
            e,
            Error::Permission {
                owner: foreign::NOBODY,
                ..
            }
        )
    });
    assert!(shm_exists(&theirs));
}

#[cfg(target_os = "linux")]
#[test]
fn a_closing_receiver_removes_no_segment_that_forged_records_name() {
    let q = forge_queue();
    let _p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let other = forge_queue();
    let array = format!("hc{:x}", std::process::id());
    let a = SharedArray::create(&array, shmpipe_core::Dtype::Uint8, &[64]).unwrap();
    let array_seg = format!("{}{array}", shmpipe_core::ARRAY_NAME_PREFIX);
    let forger = forge::Forger::open(q.name());
    for victim in [q.name(), other.name(), &array_seg] {
        forger.blob_record(0, forger.generation(0), victim, 4096);
    }
    // Closing removes the blobs still queued, since nobody will receive them: only blobs.
    drop(c);
    for victim in [q.name(), other.name(), &array_seg] {
        assert!(shm_exists(victim), "closing the receiver removed {victim}");
    }
    drop(a);
    SharedArray::remove(&array).unwrap();
}
