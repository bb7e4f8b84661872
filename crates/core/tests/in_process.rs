//! Queue semantics within one process (threads): the cases that need no second process.
//! Cross-process behaviour is tested in `processes.rs`.

use shmpipe_core::tuning::HEALTH_SLICE;
use shmpipe_core::{Error, Queue, QueueOptions, WaitOptions};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn queue_of(capacity: u32, bytes: u64, max_producers: u32) -> Queue {
    Queue::create(&QueueOptions {
        capacity,
        bytes,
        max_producers,
    })
    .unwrap()
}

fn small_queue(capacity: u32, bytes: u64) -> Queue {
    queue_of(capacity, bytes, 8)
}

/// A queue in the named backing, whose blobs are named segments in `/dev/shm`.
fn small_named_queue(capacity: u32, bytes: u64) -> Queue {
    let opts = QueueOptions {
        capacity,
        bytes,
        max_producers: 8,
    };
    Queue::create_in(&opts, shmpipe_core::Backing::Shm).unwrap()
}

// Wake-up latency. A blocked wait sleeps in bounded slices: the first at most 20 ms
// (`FIRST_SLEEP` in event.rs), then until `HEALTH_SLICE` (100 ms) after the wait began, then
// every `HEALTH_SLICE`. A wake-up that is lost is therefore made up for at the end of the
// slice, and a test that only checks the outcome passes all the same, slowly. These tests check
// that the waiter returns well inside the slice.

/// How soon after the event a woken waiter must have returned (thread scheduling on a loaded
/// machine included). The events below come at least 40 ms before the end of a sleep slice.
const PROMPT: Duration = Duration::from_millis(15);

/// When the event comes, after the wait began: away from the ends of the sleep slices (20 ms,
/// 100 ms, 200 ms…), where even a lost wake-up would be made up for at once.
const EVENT_OFFSETS: [Duration; 5] = [
    Duration::from_millis(40),
    Duration::from_millis(50),
    Duration::from_millis(60),
    Duration::from_millis(150),
    Duration::from_millis(160),
];

const ROUND_TRIPS: u32 = 1_000;
/// A quarter of 100 ms × 1,000 / 20: what 1,000 blocking round trips may take at most.
const ROUND_TRIPS_LIMIT: Duration = Duration::from_millis(1_250);

/// Waits that never spin: they go to sleep at once, so only a wake-up ends them early.
fn no_spin() -> WaitOptions {
    WaitOptions::forever().with_spin(0)
}

trait WithTimeout {
    fn with_timeout(self, timeout: Duration) -> Self;
}

impl WithTimeout for WaitOptions {
    fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// Runs `wait` on a thread, then `event` on this one `offset` after the wait began; returns how
/// long after the event the wait returned.
fn wake_latency(
    offset: Duration,
    wait: impl FnOnce() + Send + 'static,
    event: impl FnOnce(),
) -> Duration {
    let (began, begun) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        began.send(Instant::now()).unwrap();
        wait();
        Instant::now()
    });
    let start = begun.recv().unwrap();
    std::thread::sleep((start + offset).saturating_duration_since(Instant::now()));
    let at = Instant::now();
    event();
    let returned = waiter.join().unwrap();
    returned.saturating_duration_since(at)
}

/// Measures `trial(offset)` (a [`wake_latency`]) at every [`EVENT_OFFSETS`] and asserts that
/// the median is [`PROMPT`]: a lost wake-up costs at least 40 ms at each of them.
fn assert_prompt(what: &str, mut trial: impl FnMut(Duration) -> Duration) {
    assert!(
        HEALTH_SLICE == Duration::from_millis(100),
        "offsets assume a 100 ms slice"
    );
    let mut latencies: Vec<Duration> = EVENT_OFFSETS.iter().map(|&at| trial(at)).collect();
    latencies.sort();
    let median = latencies[latencies.len() / 2];
    assert!(
        median < PROMPT,
        "{what}: returned {latencies:?} after the event (median over {PROMPT:?}): wake-ups are lost"
    );
}

#[test]
fn messages_round_trip_in_order_through_wraparound() {
    let q = small_queue(16, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    // 4 KiB ring, messages up to 700 bytes: the ring wraps hundreds of times.
    for i in 0..5_000u32 {
        let len = (i as usize * 37) % 700;
        let msg: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
        p.send(&msg, &WaitOptions::timeout(Duration::from_secs(1)))
            .unwrap();
        let got = c.try_recv().unwrap().expect("message ready");
        assert_eq!(got.as_slice(), &msg[..], "message {i}");
    }
    assert!(c.try_recv().unwrap().is_none());
}

#[test]
fn capacity_in_messages_and_bytes_is_enforced() {
    let q = small_queue(3, 4096);
    let mut p = q.producer().unwrap();
    let _c = q.consumer().unwrap();
    assert!(p.try_send(b"a").unwrap());
    assert!(p.try_send(b"b").unwrap());
    assert!(p.has_space(1));
    assert!(p.try_send(b"c").unwrap());
    assert!(!p.has_space(1));
    assert!(!p.try_send(b"d").unwrap(), "capacity of 3 messages");
    let q2 = small_queue(100, 4096);
    let mut p2 = q2.producer().unwrap();
    let _c2 = q2.consumer().unwrap();
    let big = vec![7u8; 1900];
    assert!(p2.try_send(&big).unwrap());
    assert!(p2.try_send(&big).unwrap());
    assert!(!p2.try_send(&big).unwrap(), "4 KiB of data area is full");
}

#[test]
fn messages_may_be_released_out_of_order() {
    let q = small_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    for i in 0..4u8 {
        assert!(p.try_send(&[i; 100]).unwrap());
    }
    let msgs: Vec<_> = (0..4).map(|_| c.try_recv().unwrap().unwrap()).collect();
    assert!(!p.try_send(b"x").unwrap());
    let mut msgs = msgs.into_iter();
    let first = msgs.next().unwrap();
    let rest: Vec<_> = msgs.collect();
    drop(rest); // released, but the head cannot pass the first one yet
    assert!(!p.try_send(b"x").unwrap());
    assert_eq!(first.as_slice(), &[0u8; 100][..]);
    drop(first);
    for _ in 0..4 {
        assert!(p.try_send(b"x").unwrap());
    }
}

#[test]
fn large_messages_travel_in_their_own_segment() {
    let q = small_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    p.send(&big, &WaitOptions::forever()).unwrap();
    let m = c.try_recv().unwrap().unwrap();
    assert!(m.is_blob());
    assert_eq!(m.as_slice(), &big[..]);
}

#[test]
fn aborted_loans_are_never_seen() {
    let q = small_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    {
        let mut loan = p.try_reserve(10).unwrap().unwrap();
        loan.as_mut_slice().fill(1);
    }
    {
        let mut loan = p.try_reserve(100_000).unwrap().unwrap();
        assert!(loan.is_blob());
        loan.as_mut_slice().fill(1);
    }
    p.send(b"kept", &WaitOptions::forever()).unwrap();
    assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"kept");
    assert!(c.try_recv().unwrap().is_none());
}

#[test]
fn receive_times_out_and_send_times_out() {
    let q = small_queue(1, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let start = Instant::now();
    let err = c.recv_timeout(Duration::from_millis(150)).err().unwrap();
    let took = start.elapsed();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(200),
        "{took:?}"
    );
    p.send(b"1", &WaitOptions::forever()).unwrap();
    let start = Instant::now();
    let err = p
        .send(b"2", &WaitOptions::timeout(Duration::from_millis(120)))
        .unwrap_err();
    let took = start.elapsed();
    assert!(matches!(err, Error::Timeout), "{err:?}");
    assert!(
        took >= Duration::from_millis(120) && took < Duration::from_millis(170),
        "{took:?}"
    );
}

#[test]
fn a_wait_is_interrupted_by_its_cancel_token() {
    let q = small_queue(1, 4096);
    let _p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let token = q.cancel_token();
    let canceller = token.clone();
    let err = Arc::new(Mutex::new(None));
    let seen = err.clone();
    // There is no timeout: only the cancel ends the wait. It comes halfway through a sleep
    // slice, so the waiter must have been woken by it, not have noticed it at the slice's end.
    let latency = wake_latency(
        Duration::from_millis(150),
        move || {
            let mut c = c;
            *seen.lock().unwrap() = c.recv(&no_spin().with_cancel(token)).err();
        },
        move || canceller.cancel(),
    );
    let err = err.lock().unwrap().take();
    assert!(matches!(err, Some(Error::Interrupted)), "{err:?}");
    assert!(latency < PROMPT, "interrupted {latency:?} after the cancel");
}

#[test]
fn a_cancel_wakes_a_blocked_receive_well_inside_the_sleep_slice() {
    assert_prompt("a cancelled receive", |offset| {
        let q = small_queue(1, 4096);
        let _p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        let token = q.cancel_token();
        let canceller = token.clone();
        wake_latency(
            offset,
            move || {
                let mut c = c;
                let err = c.recv(&no_spin().with_cancel(token)).err();
                assert!(matches!(err, Some(Error::Interrupted)), "{err:?}");
            },
            move || canceller.cancel(),
        )
    });
}

#[test]
fn a_cancel_wakes_a_blocked_send_well_inside_the_sleep_slice() {
    assert_prompt("a cancelled send", |offset| {
        let q = small_queue(1, 4096);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(b"fills the queue", &no_spin()).unwrap();
        let token = q.cancel_token();
        let canceller = token.clone();
        let latency = wake_latency(
            offset,
            move || {
                let err = p.send(b"no room", &no_spin().with_cancel(token)).err();
                assert!(matches!(err, Some(Error::Interrupted)), "{err:?}");
            },
            move || canceller.cancel(),
        );
        drop(c);
        latency
    });
}

#[test]
fn closing_either_side_is_seen_by_the_other() {
    let q = small_queue(1, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    p.send(b"last", &WaitOptions::forever()).unwrap();
    p.close();
    assert_eq!(c.recv(&WaitOptions::forever()).unwrap().as_slice(), b"last");
    let start = Instant::now();
    assert!(matches!(
        c.recv(&WaitOptions::forever()),
        Err(Error::Closed)
    ));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "close noticed late"
    );

    // The stream has ended: a late producer is refused.
    assert!(matches!(q.producer(), Err(Error::StreamEnded)));

    let q = small_queue(1, 4096);
    let mut p2 = q.producer().unwrap();
    let c = q.consumer().unwrap();
    drop(c);
    assert!(matches!(
        p2.send(b"x", &WaitOptions::forever()),
        Err(Error::Closed)
    ));
}

#[test]
fn closing_the_last_producer_wakes_a_blocked_receive_well_inside_the_sleep_slice() {
    assert_prompt("a receive when the last producer closes", |offset| {
        let q = small_queue(1, 4096);
        let p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        wake_latency(
            offset,
            move || {
                let mut c = c;
                let err = c.recv(&no_spin()).err();
                assert!(matches!(err, Some(Error::Closed)), "{err:?}");
            },
            move || p.close(),
        )
    });
}

#[test]
fn closing_the_consumer_wakes_a_blocked_send_well_inside_the_sleep_slice() {
    assert_prompt("a send when the consumer closes", |offset| {
        let q = small_queue(1, 4096);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(b"fills the queue", &no_spin()).unwrap();
        wake_latency(
            offset,
            move || {
                let err = p.send(b"no room", &no_spin()).err();
                assert!(matches!(err, Some(Error::Closed)), "{err:?}");
            },
            move || c.close(),
        )
    });
}

#[test]
fn closing_the_consumer_wakes_an_ack_wait_well_inside_the_sleep_slice() {
    assert_prompt("an ack wait when the consumer closes", |offset| {
        let q = small_queue(4, 4096);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        p.send(b"never read", &no_spin()).unwrap();
        wake_latency(
            offset,
            move || {
                let err = p.wait_for_all_ack(&no_spin()).err();
                assert!(matches!(err, Some(Error::Closed)), "{err:?}");
            },
            move || drop(c),
        )
    });
}

#[test]
fn a_send_wakes_a_blocked_receive_well_inside_the_sleep_slice() {
    assert_prompt("a receive woken by a send", |offset| {
        let q = small_queue(1, 4096);
        let mut p = q.producer().unwrap();
        let c = q.consumer().unwrap();
        wake_latency(
            offset,
            move || {
                let mut c = c;
                assert_eq!(c.recv(&no_spin()).unwrap().as_slice(), b"wake");
            },
            move || p.send(b"wake", &no_spin()).unwrap(),
        )
    });
}

#[test]
fn a_release_wakes_a_blocked_send_well_inside_the_sleep_slice() {
    assert_prompt("a send woken by a release", |offset| {
        let q = small_queue(1, 4096);
        let mut p = q.producer().unwrap();
        let mut c = q.consumer().unwrap();
        p.send(b"fills the queue", &no_spin()).unwrap();
        let latency = wake_latency(
            offset,
            move || p.send(b"next", &no_spin()).unwrap(),
            || drop(c.try_recv().unwrap().unwrap()),
        );
        assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"next");
        latency
    });
}

#[test]
fn a_release_wakes_an_ack_wait_well_inside_the_sleep_slice() {
    assert_prompt("an ack wait woken by a release", |offset| {
        let q = small_queue(4, 4096);
        let mut p = q.producer().unwrap();
        let mut c = q.consumer().unwrap();
        p.send(b"to be acked", &no_spin()).unwrap();
        let m = c.try_recv().unwrap().unwrap();
        wake_latency(
            offset,
            move || p.wait_for_all_ack(&no_spin()).unwrap(),
            move || drop(m),
        )
    });
}

#[test]
fn blocking_round_trips_between_threads_are_not_paced_by_the_sleep_slice() {
    // Two queues, one each way; both sides block (no spin) for every message. A lost wake-up
    // leaves a side asleep until its first sleep slice ends (20 ms, `FIRST_SLEEP` in event.rs):
    // 1,000 round trips would take 40 s. Woken, they take well under 100 ms.
    let (there, back) = (small_queue(4, 4096), small_queue(4, 4096));
    let mut to_echo = there.producer().unwrap();
    let mut from_echo = back.consumer().unwrap();
    let mut echo_in = there.consumer().unwrap();
    let mut echo_out = back.producer().unwrap();
    let echo = std::thread::spawn(move || loop {
        match echo_in.recv(&no_spin()) {
            Ok(m) => echo_out.send(m.as_slice(), &no_spin()).unwrap(),
            Err(Error::Closed) => break,
            Err(e) => panic!("echo: {e}"),
        }
    });
    let start = Instant::now();
    for i in 0..ROUND_TRIPS {
        to_echo.send(&i.to_le_bytes(), &no_spin()).unwrap();
        let m = from_echo
            .recv(&no_spin().with_timeout(ROUND_TRIPS_LIMIT))
            .unwrap();
        assert_eq!(m.as_slice(), i.to_le_bytes());
        let took = start.elapsed();
        assert!(
            took < ROUND_TRIPS_LIMIT,
            "{} blocking round trips took {took:?}: wake-ups are lost",
            i + 1
        );
    }
    eprintln!(
        "{ROUND_TRIPS} blocking round trips in {:?}",
        start.elapsed()
    );
    to_echo.close();
    echo.join().unwrap();
}

#[test]
fn acks_count_released_messages() {
    let q = small_queue(8, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    for _ in 0..5 {
        p.send(b"m", &WaitOptions::forever()).unwrap();
    }
    assert_eq!(p.sent(), 5);
    assert_eq!(p.acked(), 0);
    let consumer = std::thread::spawn(move || {
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(10));
            drop(c.recv(&WaitOptions::forever()).unwrap());
        }
        c
    });
    p.wait_for_all_ack(&WaitOptions::timeout(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(p.acked(), 5);
    drop(consumer.join().unwrap());
}

#[test]
fn many_producer_threads_keep_their_own_order() {
    let q = small_queue(64, 1 << 16);
    let mut c = q.consumer().unwrap();
    let threads: Vec<_> = (0..4u32)
        .map(|t| {
            let mut p = q.producer().unwrap();
            std::thread::spawn(move || {
                for i in 0..20_000u32 {
                    let mut m = t.to_le_bytes().to_vec();
                    m.extend_from_slice(&i.to_le_bytes());
                    m.resize(8 + (i % 300) as usize, t as u8);
                    p.send(&m, &WaitOptions::forever()).unwrap();
                }
            })
        })
        .collect();
    let mut next = [0u32; 4];
    for _ in 0..80_000 {
        let m = c
            .recv(&WaitOptions::timeout(Duration::from_secs(10)))
            .unwrap();
        let b = m.as_slice();
        let t = u32::from_le_bytes(b[..4].try_into().unwrap()) as usize;
        let i = u32::from_le_bytes(b[4..8].try_into().unwrap());
        assert_eq!(i, next[t], "producer {t} out of order");
        assert_eq!(b.len(), 8 + (i % 300) as usize);
        next[t] += 1;
    }
    for t in threads {
        t.join().unwrap();
    }
    assert!(matches!(
        c.recv(&WaitOptions::forever()),
        Err(Error::Closed)
    ));
}

#[test]
fn bad_options_are_rejected() {
    for opts in [
        QueueOptions {
            capacity: 0,
            ..QueueOptions::default()
        },
        QueueOptions {
            max_producers: 0,
            ..QueueOptions::default()
        },
    ] {
        assert!(matches!(
            Queue::create(&opts),
            Err(Error::InvalidArgument { .. })
        ));
    }
    assert!(matches!(
        Queue::create(&QueueOptions {
            bytes: u64::MAX,
            ..QueueOptions::default()
        }),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        Queue::open("shmpipe_0000000000000000"),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn only_one_consumer_at_a_time() {
    let q = small_queue(1, 4096);
    let c = q.consumer().unwrap();
    assert!(matches!(q.consumer(), Err(Error::ConsumerTaken)));
    drop(c);
    // Closing the receiver closes the queue for receiving: no second consumer.
    assert!(matches!(q.consumer(), Err(Error::ConsumerClosed)));
}

#[test]
fn raw_loans_commit_abort_and_belong_to_their_producer() {
    let q = small_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let mut other = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let mut loan = p.try_reserve_raw(5).unwrap().unwrap();
    loan.as_mut_slice().copy_from_slice(b"hello");
    let mut aborted = p.try_reserve_raw(3).unwrap().unwrap();
    aborted.as_mut_slice().copy_from_slice(b"bad");
    assert!(matches!(
        other.commit_raw(loan),
        Err(Error::InvalidArgument { name: "loan", .. })
    ));
    // The rejected loan was dropped, so it aborted: nothing is visible yet.
    drop(aborted);
    assert!(c.try_recv().unwrap().is_none());
    let mut loan = p.try_reserve_raw(5).unwrap().unwrap();
    loan.as_mut_slice().copy_from_slice(b"again");
    p.commit_raw(loan).unwrap();
    assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"again");
    assert_eq!(p.sent(), 1);
}

#[test]
fn waiting_for_readiness_takes_nothing() {
    let q = small_queue(2, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    assert!(matches!(
        c.wait_ready(&WaitOptions::timeout(Duration::from_millis(30))),
        Err(Error::Timeout)
    ));
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        p.send(b"one", &WaitOptions::forever()).unwrap();
        p.send(b"two", &WaitOptions::forever()).unwrap();
        // Full now: wait_space returns once the consumer frees a slot.
        let start = Instant::now();
        p.wait_space(3, &WaitOptions::timeout(Duration::from_secs(5)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(40));
        p
    });
    c.wait_ready(&WaitOptions::timeout(Duration::from_secs(5)))
        .unwrap();
    c.wait_ready(&WaitOptions::forever()).unwrap(); // still ready: nothing was taken
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"one");
    let p = sender.join().unwrap();
    assert!(p.has_space(3));
    assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"two");
}

#[test]
fn undelivered_blobs_are_removed_when_the_consumer_closes() {
    let q = small_named_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let mut names = Vec::new();
    for _ in 0..2 {
        let mut loan = p.reserve(3000, &WaitOptions::forever()).unwrap();
        names.push(loan.blob_name().unwrap().to_owned());
        loan.as_mut_slice().fill(9);
        loan.commit().unwrap();
    }
    let shm = |n: &str| std::path::Path::new("/dev/shm").join(n).exists();
    assert!(names.iter().all(|n| shm(n)));
    drop(c);
    assert!(names.iter().all(|n| !shm(n)), "blob segments left behind");
    // A blob reserved before the consumer closed and committed after is removed by its producer.
    let q = small_named_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    let loan = p.reserve(3000, &WaitOptions::forever()).unwrap();
    let name = loan.blob_name().unwrap().to_owned();
    drop(c);
    loan.commit().unwrap();
    assert!(
        !shm(&name),
        "a blob committed after the close was left behind"
    );
}

#[test]
fn a_single_producer_queue_takes_one_producer_at_a_time() {
    let q = Queue::create(&QueueOptions {
        capacity: 8,
        bytes: 4096,
        max_producers: 1,
    })
    .unwrap();
    let mut c = q.consumer().unwrap();
    let mut p = q.producer().unwrap();
    assert!(matches!(
        q.producer(),
        Err(Error::TooManyProducers { max: 1 })
    ));
    p.send(b"first", &WaitOptions::forever()).unwrap();
    drop(p);
    assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"first");
    // Its messages consumed, the closed slot is reused.
    let mut p = q.producer().unwrap();
    p.send(b"second", &WaitOptions::forever()).unwrap();
    assert_eq!(c.try_recv().unwrap().unwrap().as_slice(), b"second");
}

#[test]
fn an_ack_wait_ends_with_closed_when_the_consumer_closes() {
    let q = small_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let c = q.consumer().unwrap();
    p.send(b"never read", &WaitOptions::forever()).unwrap();
    let closer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        drop(c);
    });
    let err = p
        .wait_for_all_ack(&WaitOptions::timeout(Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(err, Error::Closed), "{err:?}");
    closer.join().unwrap();
}

#[test]
fn reading_in_place_mixes_with_held_messages_and_counts_acks() {
    let q = small_queue(8, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let wait = WaitOptions::timeout(Duration::from_secs(1));
    let mut next = 0u32;
    let mut sent = 0u32;
    // Many laps of a 4 KiB ring, with handles held across in-place reads and dropped late and
    // out of order: every release path, and the switch between them.
    for round in 0..2_000u32 {
        while p
            .try_send(&sent.to_le_bytes().repeat(1 + sent as usize % 40))
            .unwrap()
        {
            sent += 1;
        }
        let mut held = Vec::new();
        for k in 0..3 {
            let check = |bytes: &[u8], expected: u32| {
                assert_eq!(&bytes[..4], expected.to_le_bytes(), "message {expected}");
            };
            if (round + k) % 3 == 0 {
                let m = c.try_recv().unwrap().expect("ready");
                check(m.as_slice(), next);
                held.push(m);
            } else {
                c.try_recv_with(|bytes| check(bytes, next))
                    .unwrap()
                    .expect("ready");
            }
            next += 1;
        }
        if round % 2 == 0 {
            held.reverse();
        }
        drop(held);
    }
    while c
        .recv_with(&WaitOptions::timeout(Duration::ZERO), |_| ())
        .is_ok()
    {
        next += 1;
    }
    assert_eq!(next, sent, "every message taken once");
    assert_eq!(p.acked(), p.sent(), "every release credited");
    p.wait_for_all_ack(&wait).unwrap();
    // All space is back: the ring takes a full load again.
    for i in 0..8 {
        assert!(p.try_send(&[1; 100]).unwrap(), "message {i} fits");
    }
}

#[test]
fn in_place_reads_while_another_thread_drops_handles_never_lose_space() {
    let q = small_queue(4, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let (to_dropper, dropped) = std::sync::mpsc::channel::<shmpipe_core::Message>();
    let dropper = std::thread::spawn(move || {
        for m in dropped {
            if m.len() % 2 == 0 {
                std::thread::yield_now();
            }
            drop(m);
        }
    });
    let n = 50_000u32;
    let producer = std::thread::spawn(move || {
        let wait = WaitOptions::timeout(Duration::from_secs(10));
        for i in 0..n {
            p.send(&vec![i as u8; 1 + i as usize % 300], &wait)
                .unwrap_or_else(|e| panic!("message {i}: {e}"));
        }
        p.wait_for_all_ack(&wait).unwrap();
        p
    });
    let wait = WaitOptions::timeout(Duration::from_secs(10));
    for i in 0..n {
        if i % 5 == 0 {
            to_dropper.send(c.recv(&wait).unwrap()).unwrap();
        } else {
            let len = c.recv_with(&wait, |bytes| bytes.len()).unwrap();
            assert_eq!(len, 1 + i as usize % 300);
        }
    }
    drop(to_dropper);
    dropper.join().unwrap();
    let p = producer
        .join()
        .expect("no space was lost: the producer finished");
    assert_eq!(p.acked(), n as u64);
}

#[test]
fn a_panic_while_reading_in_place_still_releases_the_message() {
    let q = small_queue(2, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    assert!(p.try_send(b"one").unwrap());
    assert!(p.try_send(b"two").unwrap());
    assert!(!p.try_send(b"full").unwrap());
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        c.try_recv_with(|_| panic!("reader failed")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(p.acked(), 1, "the message was released despite the panic");
    assert!(p.try_send(b"three").unwrap(), "its space is back");
    assert_eq!(c.try_recv_with(|b| b.to_vec()).unwrap().unwrap(), b"two");
    assert_eq!(c.try_recv_with(|b| b.to_vec()).unwrap().unwrap(), b"three");
}

fn single_producer_queue(capacity: u32, bytes: u64) -> Queue {
    queue_of(capacity, bytes, 1)
}

/// In a single-producer queue the consumer waits on the `published` cursor rather than on the
/// records. A record finished out of order (a raw loan dropped on another thread, racing with
/// the commit of a later one) must never hide the later message behind it.
#[test]
fn single_producer_records_finished_out_of_order_never_hide_a_message() {
    let q = single_producer_queue(64, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let (to_dropper, loans) = std::sync::mpsc::channel::<shmpipe_core::RawLoan>();
    let (dropped_tx, dropped) = std::sync::mpsc::channel::<()>();
    let dropper = std::thread::spawn(move || {
        for loan in loans {
            drop(loan); // aborts it
            dropped_tx.send(()).unwrap();
        }
    });
    let wait = WaitOptions::timeout(Duration::from_secs(5));
    for i in 0..20_000u32 {
        let early = p.try_reserve_raw(8).unwrap().unwrap();
        let mut late = p.try_reserve_raw(4).unwrap().unwrap();
        late.as_mut_slice().copy_from_slice(&i.to_le_bytes());
        to_dropper.send(early).unwrap();
        p.commit_raw(late).unwrap(); // races with the abort of `early`
        let got = c
            .recv_with(&wait, |b| u32::from_le_bytes(b.try_into().unwrap()))
            .unwrap_or_else(|e| panic!("message {i} not seen: {e:?}"));
        assert_eq!(got, i);
        dropped.recv().unwrap();
    }
    drop(to_dropper);
    dropper.join().unwrap();
    assert!(c.try_recv().unwrap().is_none());
}

/// Message number `n` as `len` bytes: its number first, then a filler derived from it.
fn numbered(n: u64, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..len).map(|i| (n as usize + i * 7) as u8).collect();
    let head = n.to_le_bytes();
    let k = len.min(8);
    bytes[..k].copy_from_slice(&head[..k]);
    bytes
}

/// Every way to send and receive, mixed at random on a single-producer queue (whose fast paths
/// and `published` cursor differ from the multi-producer ones): copies and loans, aborts, raw
/// loans, blobs, padding at the ring's end, reads in place and held handles released out of
/// order. Every committed message arrives once, in order, intact; nothing else arrives.
#[test]
fn single_producer_random_mix_of_every_path_delivers_exactly_the_committed_messages() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let q = single_producer_queue(24, 8192);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let mut expected = std::collections::VecDeque::new();
    let mut held = Vec::new();
    let mut next = 0u64;
    let mut received = 0u64;
    let check = |expected: &mut std::collections::VecDeque<(u64, usize)>, bytes: &[u8]| {
        let (n, len) = expected
            .pop_front()
            .expect("a message that was never committed");
        assert_eq!(bytes, &numbered(n, len)[..], "message {n}");
    };
    for _ in 0..60_000 {
        // Mostly small messages; now and then one near the inline limit (4032 bytes here) or
        // past it (a blob).
        let len = match rng.gen_range(0..100) {
            0 => rng.gen_range(4000..6000),
            1..=5 => rng.gen_range(500..2000),
            _ => rng.gen_range(0..200),
        };
        match rng.gen_range(0..12) {
            0..=3 => {
                if p.try_send(&numbered(next, len)).unwrap() {
                    expected.push_back((next, len));
                    next += 1;
                }
            }
            4 => {
                if let Some(mut loan) = p.try_reserve(len as u64).unwrap() {
                    loan.as_mut_slice().fill(0xEE); // dropped: aborted, never seen
                }
            }
            5 => {
                if let Some(mut loan) = p.try_reserve_raw(len as u64).unwrap() {
                    loan.as_mut_slice().copy_from_slice(&numbered(next, len));
                    p.commit_raw(loan).unwrap();
                    expected.push_back((next, len));
                    next += 1;
                }
            }
            6..=8 => {
                if let Some(()) = c.try_recv_with(|b| check(&mut expected, b)).unwrap() {
                    received += 1;
                }
            }
            9 => {
                if let Some(m) = c.try_recv().unwrap() {
                    check(&mut expected, m.as_slice());
                    received += 1;
                    held.push(m);
                }
            }
            _ => {
                if !held.is_empty() {
                    drop(held.swap_remove(rng.gen_range(0..held.len())));
                }
            }
        }
    }
    held.clear();
    while let Some(()) = c.try_recv_with(|b| check(&mut expected, b)).unwrap() {
        received += 1;
    }
    assert!(
        expected.is_empty(),
        "{} committed messages never arrived",
        expected.len()
    );
    assert_eq!(received, next);
    assert!(
        next > 10_000,
        "the mix sent too little to mean much: {next}"
    );
    assert_eq!(p.acked(), next);
}

/// An aborted record that is the producer's latest must still be passed over (its message slot
/// freed) by a consumer waiting on the `published` cursor.
#[test]
fn single_producer_an_aborted_last_record_frees_its_slot() {
    let q = single_producer_queue(1, 4096);
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    for round in 0..3 {
        drop(p.try_reserve(10).unwrap().expect("room for one"));
        let raw = p.try_reserve_raw(10).unwrap();
        assert!(
            raw.is_none(),
            "round {round}: the aborted record holds the one slot"
        );
        assert!(c.try_recv().unwrap().is_none());
        // The consumer passed over the aborted record: its slot is free again.
        assert!(p.try_send(b"after").unwrap(), "round {round}");
        assert_eq!(c.try_recv_with(|b| b.to_vec()).unwrap().unwrap(), b"after");
    }
}

/// In a sealed queue a large message travels in sealed memory passed to the registered
/// consumer (nothing of it in `/dev/shm`); before a consumer registers, in a named segment that
/// the consumer to come can open.
#[test]
#[cfg(target_os = "linux")]
fn a_sealed_queues_blobs_are_sealed_before_and_after_a_consumer_registers() {
    let q = small_queue(4, 4096);
    assert_eq!(q.backing(), shmpipe_core::Backing::Memfd);
    let in_shm = |n: &str| std::path::Path::new("/dev/shm").join(n).exists();
    let mut p = q.producer().unwrap();
    let mut early = p.reserve(100_000, &WaitOptions::forever()).unwrap();
    let early_name = early.blob_name().unwrap().to_owned();
    early.as_mut_slice().fill(0xEE);
    early.commit().unwrap();
    assert!(
        !in_shm(&early_name),
        "no consumer yet: sealed, held by its producer"
    );
    let mut c = q.consumer().unwrap();
    let wait = WaitOptions::timeout(Duration::from_secs(5));
    let m = c.recv(&wait).unwrap();
    assert!(m.is_blob() && m.len() == 100_000 && m.as_slice().iter().all(|&b| b == 0xEE));
    drop(m);
    for round in 0..4u8 {
        let mut loan = p
            .reserve(100_000 + u64::from(round), &WaitOptions::forever())
            .unwrap();
        let name = loan.blob_name().unwrap().to_owned();
        assert!(
            !in_shm(&name),
            "round {round}: a sealed blob has no name in /dev/shm"
        );
        loan.as_mut_slice().fill(round);
        loan.commit().unwrap();
        let m = c.recv(&wait).unwrap();
        assert!(m.is_blob() && m.len() == 100_000 + usize::from(round));
        assert!(
            m.as_slice().iter().all(|&b| b == round),
            "round {round}: intact"
        );
    }
}
