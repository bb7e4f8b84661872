//! Large values sent on a sealed pipe before any receiver registered: their memory is sealed too
//! (not a named segment in `/dev/shm`), and lives in their sender until a receiver maps it.
//! - A receiver that registers later gets the value intact, and nobody can resize its memory.
//! - A sender that closes first hands the value over, so the receiver still gets it.
//! - A sender SIGKILLed first takes the value with it: nothing stays in `/dev/shm`, and the
//!   receiver is told, for that value alone (the stream goes on).

#![cfg(target_os = "linux")]

mod common;

use common::peer::{shm_exists, Peer};
use shmpipe_core::{Backing, BadSegmentReason, Error, Queue, QueueOptions, WaitOptions};
use shmpipe_test_peer::pattern;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// A ring of 1 MiB: messages over 512 KiB travel in memory of their own.
const RING: QueueOptions = QueueOptions {
    capacity: 8,
    bytes: 1 << 20,
    max_producers: 4,
};

const VALUE: u64 = 4 << 20;

fn wait() -> WaitOptions {
    WaitOptions::timeout(Duration::from_secs(20))
}

/// The descriptor in process `pid` of the sealed memory of blob `name`, if it holds one.
fn held_memfd(pid: u32, name: &str) -> Option<std::path::PathBuf> {
    let target = format!("/memfd:shmpipe:{name} (deleted)");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| std::fs::read_link(p).is_ok_and(|l| l.as_os_str() == target.as_str()))
}

/// `produce-huge` in another process: returns it and the name of its blob, once sent.
fn send_huge(q: &Queue, id: &str) -> (Peer, String) {
    let mut peer = Peer::run(&["produce-huge", q.name(), id, &VALUE.to_string()]);
    let said = peer.line();
    let name = said
        .strip_prefix("writing ")
        .unwrap_or_else(|| panic!("{said}"))
        .to_owned();
    assert_eq!(peer.line(), "sent");
    (peer, name)
}

#[test]
fn a_value_sent_before_any_receiver_is_sealed_held_by_its_sender_and_received_later() {
    let q = Queue::create_in(&RING, Backing::Memfd).unwrap();
    let (mut peer, name) = send_huge(&q, "1");
    assert!(!shm_exists(&name), "no named segment in /dev/shm");
    let held = held_memfd(peer.pid(), &name).expect("the sender holds the value's memory");

    // Nobody can resize it, so no mapping of it can lose its pages.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&held)
        .unwrap();
    for len in [0, VALUE / 2, 2 * VALUE] {
        // SAFETY: ftruncate on a descriptor we own; it is expected to fail.
        let rc = unsafe { libc::ftruncate(file.as_raw_fd(), len as libc::off_t) };
        let errno = std::io::Error::last_os_error().raw_os_error();
        assert_eq!((rc, errno), (-1, Some(libc::EPERM)), "ftruncate to {len}");
    }
    drop(file);

    let mut consumer = q.consumer().unwrap();
    let m = consumer.recv(&wait()).unwrap();
    assert_eq!(m.len() as u64, pattern::HEADER as u64 + VALUE);
    assert_eq!(pattern::check(m.as_slice()), Ok((1, 0)));
    drop(m);
    // Acked, the sender exits.
    assert!(peer
        .exit_within(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
}

#[test]
fn a_sender_that_closes_before_any_receiver_hands_its_value_over() {
    let q = Queue::create_in(&RING, Backing::Memfd).unwrap();
    let mut peer = Peer::run(&["send-and-exit", q.name(), "2", &VALUE.to_string()]);
    assert_eq!(peer.line(), "closed");
    peer.wait_success();
    let mut consumer = q.consumer().unwrap();
    let m = consumer.recv(&wait()).unwrap();
    assert_eq!(pattern::check(m.as_slice()), Ok((2, 0)));
}

#[test]
fn a_sender_killed_before_any_receiver_leaves_nothing_and_the_receiver_is_told() {
    let q = Queue::create_in(&RING, Backing::Memfd).unwrap();
    let (mut peer, name) = send_huge(&q, "3");
    peer.kill();
    assert!(!shm_exists(&name), "nothing in /dev/shm");

    let mut consumer = q.consumer().unwrap();
    match consumer.recv(&wait()) {
        Err(Error::BadSegment {
            reason: BadSegmentReason::SenderDied,
            ..
        }) => {}
        Err(e) => panic!("the lost value is reported as such, not {e:?}"),
        Ok(_) => panic!("the value died with its sender"),
    }
    // The stream goes on.
    let mut producer = q.producer().unwrap();
    producer.send(b"next", &wait()).unwrap();
    assert_eq!(consumer.recv(&wait()).unwrap().as_slice(), b"next");
}

#[test]
fn a_receiver_maps_the_held_values_as_it_registers_so_they_outlive_their_sender() {
    let q = Queue::create_in(&RING, Backing::Memfd).unwrap();
    let (mut peer, _name) = send_huge(&q, "4");
    let mut consumer = q.consumer().unwrap();
    peer.kill(); // after the registration, before any recv
    let m = consumer.recv(&wait()).unwrap();
    assert_eq!(pattern::check(m.as_slice()), Ok((4, 0)));
}

#[test]
fn a_sender_ended_by_sigterm_before_any_receiver_hands_its_value_over_from_the_handler() {
    let q = Queue::create_in(&RING, Backing::Memfd).unwrap();
    let mut peer = Peer::spawn(
        &["produce-huge", q.name(), "5", &VALUE.to_string()],
        &[("SHMPIPE_PEER_SIGNALS", "1")],
    );
    assert!(peer.line().starts_with("signals "));
    let name = peer.line().strip_prefix("writing ").unwrap().to_owned();
    let _cleanup = common::peer::RemoveOnDrop(name.clone());
    assert_eq!(peer.line(), "sent");
    assert!(!shm_exists(&name));
    // Blocked in its wait for acks, as a Node sender in synchronous code would be: only the
    // native handler runs.
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(Duration::from_secs(10)), Some(libc::SIGTERM));
    assert!(shm_exists(&name), "handed over to a named segment");
    let mut consumer = q.consumer().unwrap();
    let m = consumer.recv(&wait()).unwrap();
    assert_eq!(pattern::check(m.as_slice()), Ok((5, 0)));
    assert!(!shm_exists(&name), "mapped: its name is gone");
}
