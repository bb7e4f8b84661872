//! Reuse of blob segments (messages larger than the data area): a producer writes the next large
//! message into a blob the consumer released, never into one whose message is still held or
//! queued, and every side unmaps what the other gave up or left behind by dying.

mod common;

#[cfg(unix)]
use common::peer::Peer;
use shmpipe_core::{Consumer, Error, Message, Producer, Queue, QueueOptions, WaitOptions};
use shmpipe_test_peer::pattern;
use std::collections::BTreeSet;
use std::time::Duration;

fn small_queue(capacity: u32) -> Queue {
    Queue::create(&QueueOptions {
        capacity,
        bytes: 4096,
        max_producers: 4,
    })
    .unwrap()
}

fn within(d: Duration) -> WaitOptions {
    WaitOptions::timeout(d)
}

/// `len` bytes that differ for every `n`.
fn filled(n: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ n).collect()
}

/// Sends `filled(n, len)`, takes it at once and checks its bytes; returns it, still held.
fn round_trip(p: &mut Producer, c: &mut Consumer, n: u8, len: usize) -> Message {
    p.send(&filled(n, len), &WaitOptions::forever()).unwrap();
    let m = c.try_recv().unwrap().expect("the message just sent");
    assert_eq!(m.as_slice(), &filled(n, len)[..], "message {n}");
    m
}

#[test]
fn a_released_blob_is_reused_and_a_held_one_never_written() {
    let q = small_queue(4);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let forever = WaitOptions::forever();
    p.send(&filled(0, 100_000), &forever).unwrap();
    let first = c.try_recv().unwrap().unwrap();
    let first_name = first.blob_name().unwrap().to_owned();
    // The first message is held: the second must get a blob of its own.
    p.send(&filled(1, 100_000), &forever).unwrap();
    let second = c.try_recv().unwrap().unwrap();
    let second_name = second.blob_name().unwrap().to_owned();
    assert_ne!(first_name, second_name, "a held message's blob was reused");
    assert_eq!(
        first.as_slice(),
        &filled(0, 100_000)[..],
        "held bytes changed"
    );
    assert_eq!(second.as_slice(), &filled(1, 100_000)[..]);
    drop(first);
    drop(second);
    assert_eq!(p.kept_blob_bytes(), 200_000);
    assert_eq!(c.kept_blob_mappings(), 2);
    // Released now: the next messages of about that size reuse them, whatever the order.
    for n in 2..20u8 {
        let len = 100_000 - usize::from(n) * 1000;
        let m = round_trip(&mut p, &mut c, n, len);
        let name = m.blob_name().unwrap();
        assert!(
            name == first_name || name == second_name,
            "message {n} went into a fresh blob"
        );
    }
    // No segment is left in /dev/shm: both names went when the consumer first mapped them.
    let shm = |n: &str| std::path::Path::new("/dev/shm").join(n).exists();
    assert!(cfg!(not(target_os = "linux")) || !shm(&first_name) && !shm(&second_name));
}

#[test]
fn a_much_smaller_message_gets_a_blob_of_its_own_size() {
    let q = small_queue(4);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let mut send_and_name = |n: u8, len: usize| {
        let m = round_trip(&mut p, &mut c, n, len);
        m.blob_name().unwrap().to_owned()
    };
    let big = send_and_name(0, 400_000);
    let small = send_and_name(1, 150_000);
    assert_ne!(big, small, "150 KB pinned a 400 KB blob");
    assert_eq!(
        send_and_name(2, 200_000),
        big,
        "half the size or more reuses"
    );
    assert_eq!(send_and_name(3, 150_000), small);
}

#[test]
fn aborted_loans_leave_a_reused_blob_free_for_the_next_message() {
    let q = small_queue(4);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    p.send(&filled(0, 50_000), &WaitOptions::forever()).unwrap();
    let name = c
        .try_recv()
        .unwrap()
        .unwrap()
        .blob_name()
        .unwrap()
        .to_owned();
    {
        let mut loan = p.try_reserve(50_000).unwrap().unwrap();
        assert_eq!(loan.blob_name(), Some(name.as_str()));
        loan.as_mut_slice().fill(0xEE); // dropped: aborted
    }
    let raw = p.try_reserve_raw(50_000).unwrap().unwrap();
    assert_eq!(raw.blob_name(), Some(name.as_str()));
    drop(raw);
    let m = round_trip(&mut p, &mut c, 1, 50_000);
    assert_eq!(m.blob_name(), Some(name.as_str()));
    assert!(c.try_recv().unwrap().is_none(), "an aborted loan arrived");
}

#[test]
fn a_raw_loan_held_while_its_blob_is_given_up_still_delivers() {
    // Room for the loan and the messages queued behind it.
    let q = Queue::create(&QueueOptions {
        capacity: shmpipe_core::tuning::MAX_KEPT_BLOBS as u32 + 4,
        bytes: 64 << 10,
        max_producers: 4,
    })
    .unwrap();
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let forever = WaitOptions::forever();
    drop(round_trip(&mut p, &mut c, 0, 40_000));
    // The raw loan takes the released blob back and is held...
    let mut raw = p.try_reserve_raw(40_000).unwrap().unwrap();
    let loaned = raw.blob_name().unwrap().to_owned();
    raw.as_mut_slice().copy_from_slice(&filled(100, 40_000));
    // ...while more messages than the producer keeps blobs are queued behind it: the producer
    // gives the loaned blob (its oldest) up to make room.
    let extra = shmpipe_core::tuning::MAX_KEPT_BLOBS as u8 + 2;
    let mut names = Vec::new();
    for n in 1..=extra {
        let mut loan = p.reserve(40_000, &forever).unwrap();
        names.push(loan.blob_name().unwrap().to_owned());
        loan.as_mut_slice().copy_from_slice(&filled(n, 40_000));
        loan.commit().unwrap();
    }
    assert!(!names.contains(&loaned), "the loaned blob was reused");
    assert!(
        c.try_recv().unwrap().is_none(),
        "a message overtook the unfinished loan"
    );
    p.commit_raw(raw).unwrap();
    let m = c.try_recv().unwrap().unwrap();
    assert_eq!(m.blob_name(), Some(loaned.as_str()));
    assert_eq!(
        m.as_slice(),
        &filled(100, 40_000)[..],
        "the loaned bytes changed"
    );
    drop(m);
    for n in 1..=extra {
        let m = c.try_recv().unwrap().unwrap();
        assert_eq!(m.as_slice(), &filled(n, 40_000)[..], "message {n}");
    }
    // Given up by its producer and released: the consumer unmaps it at its next sweep.
    drop(round_trip(&mut p, &mut c, 200, 40_000));
    assert!(c.kept_blob_mappings() <= shmpipe_core::tuning::MAX_KEPT_BLOBS);
}

#[test]
fn a_keep_limit_of_zero_makes_every_blob_fresh() {
    let q = small_queue(4);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    p.set_blob_keep_limit(0);
    let mut names = BTreeSet::new();
    for n in 0..5u8 {
        let m = round_trip(&mut p, &mut c, n, 20_000);
        names.insert(m.blob_name().unwrap().to_owned());
    }
    assert_eq!(names.len(), 5);
    assert_eq!(p.kept_blob_bytes(), 0);
    assert_eq!(c.kept_blob_mappings(), 0);
}

/// A consumer process releases two blobs and dies; the consumer that takes over never mapped
/// them (and their names are gone), so the producer must not send into them.
#[cfg(unix)]
#[test]
fn a_consumer_taking_over_from_a_dead_one_gets_fresh_blobs() {
    let q = small_queue(4);
    let mut p = q.producer().unwrap();
    let forever = WaitOptions::forever();
    let mut send = |seq: u64| {
        let mut loan = p
            .reserve((pattern::HEADER + 20_000) as u64, &forever)
            .unwrap();
        let name = loan.blob_name().unwrap().to_owned();
        pattern::write(1, seq, loan.as_mut_slice());
        loan.commit().unwrap();
        name
    };
    let sent: BTreeSet<String> = (0..3).map(&mut send).collect();
    let mut dead = Peer::run(&["consume-out-of-order", q.name()]);
    assert_eq!(dead.line(), "holding"); // holds the first, released the other two
    dead.kill();
    let mut c = q.consumer().unwrap();
    let name = send(3);
    assert!(
        !sent.contains(&name),
        "sent into a blob the new consumer cannot map"
    );
    let m = c.recv(&within(Duration::from_secs(5))).unwrap();
    assert_eq!(pattern::check(m.as_slice()), Ok((1, 3)));
}

#[test]
fn a_closed_producer_s_blobs_are_unmapped_once_their_messages_are_dropped() {
    let q = small_queue(4);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    p.send(&filled(0, 30_000), &WaitOptions::forever()).unwrap();
    p.send(&filled(1, 30_000), &WaitOptions::forever()).unwrap();
    let held = c.try_recv().unwrap().unwrap();
    drop(p);
    // The queued message still arrives (by name: the consumer had not mapped that blob yet), and
    // the held one stays readable.
    let queued = c.try_recv().unwrap().unwrap();
    assert_eq!(queued.as_slice(), &filled(1, 30_000)[..]);
    assert_eq!(held.as_slice(), &filled(0, 30_000)[..]);
    drop(held);
    drop(queued);
    let end = c.recv(&within(Duration::from_secs(5))).err();
    assert!(matches!(end, Some(Error::Closed)), "{end:?}");
    assert_eq!(
        c.kept_blob_mappings(),
        0,
        "mappings kept for a closed producer"
    );
}

#[test]
fn a_producer_reuses_blobs_the_consumer_released_in_any_order() {
    let q = small_queue(6);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let mut names = BTreeSet::new();
    let mut held = Vec::new();
    for n in 0..200u8 {
        let m = round_trip(&mut p, &mut c, n, 10_000);
        names.insert(m.blob_name().unwrap().to_owned());
        held.push((n, m));
        if held.len() == 3 {
            // Release the middle one first.
            let (n1, m1) = held.remove(1);
            assert_eq!(m1.as_slice(), &filled(n1, 10_000)[..], "message {n1}");
            drop(m1);
            let (n0, m0) = held.remove(0);
            assert_eq!(m0.as_slice(), &filled(n0, 10_000)[..], "message {n0}");
        }
    }
    assert!(names.len() <= 4, "{} blobs for 200 messages", names.len());
}

/// `SHMPIPE_BLOB_KEEP_BYTES` sets a process's budget: 0 in a producer process turns its reuse off.
#[cfg(unix)]
#[test]
fn the_keep_budget_comes_from_the_environment() {
    let distinct_blobs = |env: &[(&str, &str)]| {
        let q = small_queue(4);
        let mut c = q.consumer().unwrap();
        let mut producer = Peer::spawn(
            &["produce", q.name(), "1", "20", "50000", "50000", "3"],
            env,
        );
        let mut names = BTreeSet::new();
        for seq in 0..20 {
            let m = c.recv(&within(Duration::from_secs(10))).unwrap();
            assert_eq!(pattern::check(m.as_slice()), Ok((1, seq)));
            names.insert(m.blob_name().unwrap().to_owned());
        }
        assert_eq!(producer.line(), "acked");
        producer.wait_success();
        names.len()
    };
    assert_eq!(
        distinct_blobs(&[(shmpipe_core::tuning::KEEP_BUDGET_ENV, "0")]),
        20
    );
    // Reused: a queue of 4 has at most 4 blobs queued, one held and one being filled.
    assert!(distinct_blobs(&[]) <= 8);
}

/// A producer process streams large messages of one size and is killed: the consumer received
/// them intact through a handful of reused blobs, and unmaps them all once it finds the producer
/// dead; nothing is left in `/dev/shm`.
#[cfg(unix)]
#[test]
fn a_killed_producer_s_reused_blobs_are_unmapped_by_the_consumer() {
    let q = small_queue(4);
    let mut c = q.consumer().unwrap();
    let size = "100000";
    let mut producer = Peer::run(&["produce-until-killed", q.name(), "1", size, size, "7"]);
    assert_eq!(producer.line(), "ready");
    let mut names = BTreeSet::new();
    let mut next = 0u64;
    for _ in 0..300 {
        let m = c.recv(&within(Duration::from_secs(10))).unwrap();
        assert_eq!(pattern::check(m.as_slice()), Ok((1, next)));
        next += 1;
        names.insert(m.blob_name().unwrap().to_owned());
    }
    // A queue of 4 has at most 4 blobs queued, one held and one being filled.
    assert!(names.len() <= 8, "{} blobs for 300 messages", names.len());
    producer.kill();
    loop {
        match c.recv(&within(Duration::from_secs(10))) {
            Ok(m) => {
                assert_eq!(pattern::check(m.as_slice()), Ok((1, next)));
                next += 1;
            }
            Err(Error::PeerGone | Error::Closed) => break,
            Err(e) => panic!("after the kill: {e:?}"),
        }
    }
    assert_eq!(
        c.kept_blob_mappings(),
        0,
        "mappings kept for a dead producer"
    );
    let left = common::shm::our_segments()
        .into_iter()
        .filter(|n| common::shm::creator_pid_on_disk(n) == Some(producer.pid()))
        .collect::<Vec<_>>();
    assert!(left.is_empty(), "left behind: {left:?}");
}
