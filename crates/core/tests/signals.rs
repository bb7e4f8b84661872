//! Cleanup when SIGINT or SIGTERM ends a process (`install_signal_cleanup`), in real child
//! processes (`shmpipe-peer`) with real shared memory: what is removed, what is kept for a live
//! receiver, how the handler chains to one installed before it, and that the process still dies
//! of the signal.

#![cfg(target_os = "linux")]

mod common;

use common::pattern;
use common::peer::{shm_exists, Peer, RemoveOnDrop, PEER};
use shmpipe_core::{Queue, QueueOptions, WaitOptions};
use std::process::Command;
use std::time::Duration;

const SIGNALS_ON: (&str, &str) = ("SHMPIPE_PEER_SIGNALS", "1");
const SOON: Duration = Duration::from_secs(5);
const INSTALLED: &str = "signals [Installed, Installed]";

#[test]
fn sigint_and_sigterm_remove_the_queue_an_owner_holds_and_it_still_dies_of_the_signal() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        let mut peer = Peer::spawn(&["own-queue"], &[SIGNALS_ON]);
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
    let mut peer = Peer::spawn(&["own-queue"], &[]);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    peer.signal(libc::SIGTERM);
    assert_eq!(peer.killed_by(SOON), Some(libc::SIGTERM));
    assert!(shm_exists(&name));
}

#[test]
fn a_blob_being_written_is_removed_and_a_committed_one_kept_for_its_live_receiver() {
    let q = Queue::create(&QueueOptions {
        capacity: 4,
        bytes: 4096, // so 100 kB messages travel as blobs
        max_producers: 4,
    })
    .unwrap();
    let mut consumer = q.consumer().unwrap();
    let bytes = "100000";

    let mut writer = Peer::spawn(
        &["produce-huge", q.name(), "1", bytes, "stall"],
        &[SIGNALS_ON],
    );
    assert_eq!(writer.line(), INSTALLED);
    let writing = writer.line();
    let writing = writing.strip_prefix("writing ").unwrap().to_owned();
    let _cleanup1 = RemoveOnDrop(writing.clone());
    assert_eq!(writer.line(), "stalled");
    assert!(shm_exists(&writing));

    let mut sender = Peer::spawn(&["produce-huge", q.name(), "2", bytes], &[SIGNALS_ON]);
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
        &[SIGNALS_ON, ("SHMPIPE_PEER_PREV", "swallow")],
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
            &[SIGNALS_ON, ("SHMPIPE_PEER_PREV", "node-like")],
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
fn an_ignored_signal_stays_ignored() {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "trap '' INT; exec \"$0\" own-queue", PEER])
        .env(SIGNALS_ON.0, SIGNALS_ON.1);
    let mut peer = Peer::start(cmd);
    assert_eq!(peer.line(), "signals [LeftIgnored, Installed]");
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
    assert_eq!(second, [shmpipe_core::SignalSetup::AlreadyInstalled; 2]);
}
