//! Pipes between PID namespaces that share `/dev/shm` (containers run with `--ipc=host`), on the
//! named backing, which is the one that reaches across (`sealed_memory.rs` shows the sealed one
//! cannot). A pid means nothing across namespaces, so these check that peers are judged by their
//! presence marks there:
//! - a round trip in either direction ends cleanly, with no false `PeerGone`, even while each
//!   side waits on the other (a small ring keeps the producer waiting for space);
//! - a peer killed in the other namespace is `PeerGone` on this side, promptly, never a hang.

#![cfg(target_os = "linux")]

mod common;

use common::peer::{Peer, PEER};
use common::pid_namespace::in_new_pid_namespace;
use shmpipe_core::{Backing, Error, Queue, QueueOptions, WaitOptions};
use shmpipe_test_peer::pattern;
use std::time::{Duration, Instant};

/// A ring small enough that 200 messages of up to 100 KB keep the producer waiting for space;
/// those over half the ring (32 KiB) travel as blobs, whose maker the receiver checks.
const SMALL: QueueOptions = QueueOptions {
    capacity: 8,
    bytes: 64 << 10,
    max_producers: 2,
};

const MESSAGES: u64 = 200;

/// How many times each round trip runs: the false `PeerGone` these guard against came in about
/// half the runs.
const ROUNDS: usize = 5;

/// How long a dead peer may take to be noticed (waits re-check their peer in bounded slices).
const NOTICE_WITHIN: Duration = Duration::from_secs(10);

fn in_other_namespace(args: &[&str]) -> Option<Peer> {
    in_new_pid_namespace(PEER, args).map(Peer::start)
}

fn named_queue() -> Queue {
    Queue::create_in(&SMALL, Backing::Shm).unwrap()
}

#[test]
fn a_producer_in_another_pid_namespace_streams_to_the_end() {
    for round in 0..ROUNDS {
        let q = named_queue();
        let mut consumer = q.consumer().unwrap();
        let seed = (round + 1).to_string();
        let count = MESSAGES.to_string();
        let Some(mut peer) =
            in_other_namespace(&["produce", q.name(), "7", &count, "16", "100000", &seed])
        else {
            return;
        };
        let wait = WaitOptions::timeout(NOTICE_WITHIN);
        for seq in 0..MESSAGES {
            let m = consumer
                .recv(&wait)
                .unwrap_or_else(|e| panic!("round {round}, message {seq}: {e:?}"));
            assert_eq!(pattern::check(m.as_slice()), Ok((7, seq)));
        }
        assert_eq!(peer.line(), "acked", "round {round}");
        assert!(peer.exit_within(NOTICE_WITHIN).is_some_and(|s| s.success()));
        match consumer.recv(&wait) {
            Err(Error::Closed) => {}
            Err(e) => panic!("round {round}: the stream ends cleanly, not with {e:?}"),
            Ok(_) => panic!("round {round}: one message too many"),
        }
    }
}

#[test]
fn a_consumer_in_another_pid_namespace_receives_everything() {
    for round in 0..ROUNDS {
        let q = named_queue();
        let count = MESSAGES.to_string();
        let Some(mut peer) = in_other_namespace(&["consume", q.name(), &count]) else {
            return;
        };
        let mut producer = q.producer().unwrap();
        let wait = WaitOptions::timeout(NOTICE_WITHIN);
        let mut rng = pattern::Rng::new(round as u64 + 1);
        for seq in 0..MESSAGES {
            let len = pattern::HEADER + (rng.next_u64() % 100_000) as usize;
            let mut loan = producer
                .reserve(len as u64, &wait)
                .unwrap_or_else(|e| panic!("round {round}, message {seq}: {e:?}"));
            pattern::write(3, seq, loan.as_mut_slice());
            loan.commit().unwrap();
        }
        producer
            .wait_for_all_ack(&wait)
            .unwrap_or_else(|e| panic!("round {round}: acks: {e:?}"));
        assert_eq!(peer.line(), format!("ok {MESSAGES}"), "round {round}");
    }
}

#[test]
fn a_producer_killed_in_another_pid_namespace_is_peer_gone() {
    let q = named_queue();
    let mut consumer = q.consumer().unwrap();
    let Some(mut peer) =
        in_other_namespace(&["produce-until-killed", q.name(), "5", "16", "2000", "9"])
    else {
        return;
    };
    assert_eq!(peer.line(), "ready");
    let wait = WaitOptions::timeout(NOTICE_WITHIN);
    for _ in 0..50 {
        let m = consumer.recv(&wait).unwrap();
        assert!(pattern::check(m.as_slice()).is_ok());
    }
    // SIGKILL to `unshare`, whose `--kill-child` SIGKILLs the producer.
    peer.kill();
    let killed = Instant::now();
    let end = loop {
        match consumer.recv(&wait) {
            Ok(m) => assert!(pattern::check(m.as_slice()).is_ok()),
            Err(e) => break e,
        }
    };
    assert!(matches!(end, Error::PeerGone), "{end:?}");
    eprintln!("killed producer noticed in {:?}", killed.elapsed());
    assert!(killed.elapsed() < NOTICE_WITHIN);
}

#[test]
fn a_consumer_killed_in_another_pid_namespace_is_peer_gone() {
    let q = named_queue();
    let Some(mut peer) = in_other_namespace(&["consume-hold", q.name()]) else {
        return;
    };
    assert_eq!(peer.line(), "ready");
    let mut producer = q.producer().unwrap();
    while producer.try_send(b"fills the ring").unwrap() {}
    // Full: this send waits for space, judging the consumer as it waits.
    let waiting = std::thread::spawn(move || {
        let began = Instant::now();
        let got = producer.send(b"one more", &WaitOptions::timeout(Duration::from_secs(30)));
        (got, began.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "a live consumer is waited for");
    peer.kill();
    let killed = Instant::now();
    let (got, _) = waiting.join().unwrap();
    assert!(matches!(got, Err(Error::PeerGone)), "{got:?}");
    eprintln!("killed consumer noticed in {:?}", killed.elapsed());
    assert!(killed.elapsed() < NOTICE_WITHIN);
}
