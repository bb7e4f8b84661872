//! Cleanup when SIGINT, SIGTERM or SIGABRT ends a process (`install_signal_cleanup`), in real
//! child processes (`shmpipe-peer`) with real shared memory: what is removed (owned queues, blobs
//! being written, blobs sent to a consumer in the same process, registered named segments), what
//! is kept for a live receiver, how the handler chains to one installed before it, that the
//! process still dies of the signal, and how a signal left to another handler interrupts a
//! synchronous wait.

#![cfg(target_os = "linux")]

mod common;

use common::peer::{shm_exists, Peer, RemoveOnDrop, PEER};
use shmpipe_core::{Queue, QueueOptions, WaitOptions};
use shmpipe_test_peer::pattern;
use std::process::Command;
use std::time::Duration;

const SIGNALS_ON: (&str, &str) = ("SHMPIPE_PEER_SIGNALS", "1");
/// The named backing, whose names the handler removes: a sealed pipe's memory is freed by the
/// kernel however its holders die, and its record is swept (`sealed_memory.rs`).
const NAMED: (&str, &str) = ("SHMPIPE_BACKING", "shm");
const SOON: Duration = Duration::from_secs(5);
const INSTALLED: &str = "signals [Installed, Installed, Installed]";

#[test]
fn sigint_and_sigterm_remove_the_queue_an_owner_holds_and_it_still_dies_of_the_signal() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut peer = Peer::spawn(&["own-queue"], &[SIGNALS_ON, NAMED]);
        assert_eq!(peer.line(), INSTALLED);
        let name = peer.line();
        let _cleanup = RemoveOnDrop(name.clone());
        assert!(shm_exists(&name));
        peer.signal(sig);
        assert_eq!(peer.killed_by(SOON), Some(sig), "killed by signal {sig}");
        assert!(!shm_exists(&name), "signal {sig}: {name} left in /dev/shm");
    }
}

#[test]
fn without_the_handler_a_signalled_owner_leaves_its_queue_behind() {
    // The control case: what the handler is for (and proof the other tests can fail).
    let mut peer = Peer::spawn(&["own-queue"], &[NAMED]);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
    assert!(shm_exists(&name));
}

#[test]
fn a_blob_being_written_is_removed_and_a_committed_one_kept_for_its_live_receiver() {
    // The named backing: its blobs are named segments, which the handler must remove (a sealed
    // blob's memory goes with its process, or lives on in its receiver's mailbox).
    let q = Queue::create_in(
        &QueueOptions {
            capacity: 4,
            bytes: 4096, // so 100 kB messages travel as blobs
            max_producers: 4,
        },
        shmpipe_core::Backing::Shm,
    )
    .unwrap();
    let mut consumer = q.consumer().unwrap();
    let bytes = "100000";

    let mut writer = Peer::spawn(
        &["produce-huge", q.name(), "1", bytes, "stall"],
        &[SIGNALS_ON, NAMED],
    );
    assert_eq!(writer.line(), INSTALLED);
    let writing = writer.line();
    let writing = writing.strip_prefix("writing ").unwrap().to_owned();
    let _cleanup1 = RemoveOnDrop(writing.clone());
    assert_eq!(writer.line(), "stalled");
    assert!(shm_exists(&writing));

    let mut sender = Peer::spawn(
        &["produce-huge", q.name(), "2", bytes],
        &[SIGNALS_ON, NAMED],
    );
    assert_eq!(sender.line(), INSTALLED);
    let committed = sender.line();
    let committed = committed.strip_prefix("writing ").unwrap().to_owned();
    let _cleanup2 = RemoveOnDrop(committed.clone());
    assert_eq!(sender.line(), "sent"); // now it waits for the ack

    writer.signal(libc::SIGTERM);
    sender.signal(libc::SIGTERM);
    assert_eq!(writer.killed_by(SOON), Some(libc::SIGTERM));
    assert_eq!(sender.killed_by(SOON), Some(libc::SIGTERM));
    assert!(!shm_exists(&writing), "the unfinished blob was removed");
    assert!(
        shm_exists(&committed),
        "the committed blob was left for its receiver"
    );

    // The receiver passes over the dead writer's record and gets the committed message intact.
    let m = consumer
        .recv(&WaitOptions::timeout(Duration::from_secs(10)))
        .unwrap();
    assert!(m.is_blob());
    assert_eq!(pattern::check(m.as_slice()).unwrap(), (2, 0));
    assert!(!shm_exists(&committed), "received: the receiver removed it");
}

#[test]
fn a_previous_handler_that_keeps_the_process_alive_keeps_its_segments() {
    let mut peer = Peer::spawn(
        &["own-queue"],
        &[SIGNALS_ON, NAMED, ("SHMPIPE_PEER_PREV", "swallow")],
    );
    assert_eq!(peer.line(), INSTALLED);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    peer.signal(libc::SIGINT);
    peer.signal(libc::SIGTERM);
    assert!(
        peer.exit_within(Duration::from_millis(300)).is_none(),
        "still running"
    );
    assert!(shm_exists(&name), "a process that lives on keeps its queue");
}

#[test]
fn a_previous_one_shot_handler_that_re_raises_runs_and_the_queue_is_removed() {
    // What Node installs by default: SA_RESETHAND, restore the terminal, raise again.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut peer = Peer::spawn(
            &["own-queue"],
            &[SIGNALS_ON, NAMED, ("SHMPIPE_PEER_PREV", "node-like")],
        );
        assert_eq!(peer.line(), INSTALLED);
        let name = peer.line();
        let _cleanup = RemoveOnDrop(name.clone());
        peer.signal(sig);
        assert_eq!(peer.killed_by(SOON), Some(sig));
        assert!(!shm_exists(&name), "signal {sig}: {name} left in /dev/shm");
    }
}

#[test]
fn a_second_delivery_while_a_one_shot_handler_runs_still_removes_the_queue_first() {
    // A pool worker's parent-death signal comes once for every thread of its dying parent: the
    // second lands on another thread while Node's one-shot handler still runs on the first.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut peer = Peer::spawn(
            &["own-queue"],
            &[SIGNALS_ON, NAMED, ("SHMPIPE_PEER_PREV", "node-like-slow")],
        );
        assert_eq!(peer.line(), INSTALLED);
        let name = peer.line();
        let _cleanup = RemoveOnDrop(name.clone());
        peer.signal(sig);
        std::thread::sleep(Duration::from_millis(100)); // the first is in the slow handler
        peer.signal(sig);
        assert_eq!(peer.killed_by(SOON), Some(sig));
        assert!(!shm_exists(&name), "signal {sig}: {name} left in /dev/shm");
    }
}

#[test]
fn signals_handled_on_several_threads_at_once_remove_every_queue_before_the_process_dies() {
    // One thread removes while the others wait for it: none of them may let the process die of
    // the signal while names are still in the table.
    for round in 0..3 {
        let mut peer = Peer::spawn(&["own-queues", "1000"], &[SIGNALS_ON, NAMED]);
        assert_eq!(peer.line(), INSTALLED);
        let line = peer.line();
        let names: Vec<String> = line.split(' ').map(str::to_owned).collect();
        let _cleanup: Vec<RemoveOnDrop> = names.iter().cloned().map(RemoveOnDrop).collect();
        assert_eq!(names.len(), 1000);
        // Removing 1000 names takes milliseconds: later deliveries land on other threads.
        for _ in 0..10 {
            peer.signal(libc::SIGTERM);
            std::thread::sleep(Duration::from_micros(500));
        }
        assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
        let left: Vec<&String> = names.iter().filter(|n| shm_exists(n)).collect();
        assert!(
            left.is_empty(),
            "round {round}: {} of 1000 left, such as {:?}",
            left.len(),
            &left[..left.len().min(3)]
        );
    }
}

#[test]
fn an_ignored_signal_stays_ignored() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' INT; exec \"$0\" own-queue", PEER])
        .env(SIGNALS_ON.0, SIGNALS_ON.1)
        .env(NAMED.0, NAMED.1);
    let mut peer = Peer::start(cmd);
    assert_eq!(peer.line(), "signals [LeftIgnored, Installed, Installed]");
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    peer.signal(libc::SIGINT);
    assert!(
        peer.exit_within(Duration::from_millis(300)).is_none(),
        "SIGINT ignored"
    );
    assert!(shm_exists(&name));
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
    assert!(!shm_exists(&name));
}

#[test]
fn installing_twice_is_harmless() {
    // In this process: the second call sees its own handler and does not chain to itself.
    let first = shmpipe_core::install_signal_cleanup().unwrap();
    let second = shmpipe_core::install_signal_cleanup().unwrap();
    assert!(first.iter().all(|s| matches!(
        s,
        shmpipe_core::SignalSetup::Installed | shmpipe_core::SignalSetup::AlreadyInstalled
    )));
    assert_eq!(second, [shmpipe_core::SignalSetup::AlreadyInstalled; 3]);
}

#[test]
fn sigabrt_removes_the_queue_an_owner_holds_and_it_still_dies_of_it() {
    // abort(), and V8's out-of-memory end: no handler of Node's, so ours meets the default.
    let mut peer = Peer::spawn(&["own-queue"], &[SIGNALS_ON, NAMED]);
    assert_eq!(peer.line(), INSTALLED);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    assert!(shm_exists(&name));
    peer.signal(libc::SIGABRT);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGABRT));
    assert!(!shm_exists(&name), "{name} left in /dev/shm");
}

#[test]
fn a_blob_sent_to_a_consumer_in_the_same_process_is_removed_with_it() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGABRT] {
        let mut peer = Peer::spawn(&["self-send", "100000"], &[SIGNALS_ON, NAMED]);
        assert_eq!(peer.line(), INSTALLED);
        let blob = peer.line();
        assert!(blob.starts_with("shmpipe_"), "a blob, not {blob}");
        let _cleanup = RemoveOnDrop(blob.clone());
        assert!(shm_exists(&blob));
        peer.signal(sig);
        assert_eq!(peer.killed_by(SOON), Some(sig));
        assert!(!shm_exists(&blob), "signal {sig}: unreceived {blob} left");
    }
}

#[test]
fn a_registered_named_segment_is_removed_unless_it_was_made_anew() {
    let name = format!("shmpipe_t_named_{}", std::process::id());
    let _cleanup = RemoveOnDrop(name.clone());
    let mut peer = Peer::spawn(&["own-named", &name], &[SIGNALS_ON, NAMED]);
    assert_eq!(peer.line(), INSTALLED);
    assert_eq!(peer.line(), "registered true");
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
    assert!(!shm_exists(&name), "the registered segment was left");

    // Removed and made again by someone else after it was registered: not the same file.
    let mut peer = Peer::spawn(&["own-named", &name], &[SIGNALS_ON, NAMED]);
    assert_eq!(peer.line(), INSTALLED);
    assert_eq!(peer.line(), "registered true");
    let path = std::path::Path::new("/dev/shm").join(&name);
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"someone else's").unwrap();
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
    assert_eq!(std::fs::read(&path).unwrap(), b"someone else's");
}

#[test]
fn a_sealed_array_registered_for_removal_loses_its_name_on_a_signal_and_holders_keep_it() {
    use shmpipe_core::{Backing, SharedArray, ARRAY_NAME_PREFIX};
    let name = format!("sig{:08x}", rand::random::<u32>());
    let segment = format!("{ARRAY_NAME_PREFIX}{name}");
    let mut peer = Peer::spawn(&["own-sealed-array", &name], &[SIGNALS_ON]);
    assert_eq!(peer.line(), INSTALLED);
    assert_eq!(peer.line(), "registered true");
    let held = SharedArray::open(&name).unwrap();
    assert_eq!(held.backing(), Backing::Memfd);
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
    assert!(
        !shm_exists(&segment),
        "the registered array's name was left"
    );
    // SAFETY: element 0 of the 8-byte array; its only writer has exited.
    assert_eq!(
        unsafe { held.as_ptr().read() },
        7,
        "a holder keeps the memory"
    );
    drop(held);
    assert!(!shm_exists(&segment));
}

#[test]
fn a_signal_left_to_another_handler_interrupts_an_interruptible_wait() {
    // `swallow` stands for libuv's handler, which leaves the signal to a JavaScript listener.
    let env = [SIGNALS_ON, ("SHMPIPE_PEER_PREV", "swallow")];
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut peer = Peer::spawn(&["interruptible-recv", "on"], &env);
        assert_eq!(peer.line(), INSTALLED);
        let name = peer.line();
        let _cleanup = RemoveOnDrop(name);
        std::thread::sleep(Duration::from_millis(200)); // asleep in the wait by now
        let start = std::time::Instant::now();
        peer.signal(sig);
        let status = peer.exit_within(Duration::from_secs(2));
        assert!(
            status.is_some_and(|s| s.success()),
            "signal {sig}: the wait was not interrupted within 2 s ({status:?})"
        );
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(
            peer.line(),
            format!("returned Err(Interrupted) Some({sig})")
        );
    }
    // Off (no JavaScript listener of ours to run): the wait goes on.
    let mut peer = Peer::spawn(&["interruptible-recv", "off"], &env);
    assert_eq!(peer.line(), INSTALLED);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name);
    std::thread::sleep(Duration::from_millis(200));
    peer.signal(libc::SIGINT);
    assert!(
        peer.exit_within(Duration::from_millis(500)).is_none(),
        "an uninterruptible wait returned"
    );
}
