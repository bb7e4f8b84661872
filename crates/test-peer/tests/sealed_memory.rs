//! What the sealed backing (the default for pipes on Linux) guarantees, checked with real
//! processes (`shmpipe-peer`, `shmpipe-foreign-peer`) and real memory:
//! - no peer can resize a pipe's memory, so none can kill its processes with SIGBUS (the named
//!   backing's case is `truncation.rs`);
//! - SIGKILL of every process of a pipe frees its memory (`Shmem:` in `/proc/meminfo` goes back
//!   to where it was), and leaves only a record of a few KiB, removed by the next create or by
//!   `clean`;
//! - a pipe's memory is not bound by the size of `/dev/shm`;
//! - a pipe stays reachable by its name after its creator exits, while others hold it;
//! - a process in another PID namespace cannot reach it and is told so at once, and the named
//!   backing is the way there.

#![cfg(target_os = "linux")]

mod common;
#[path = "common/foreign.rs"]
#[allow(dead_code)]
mod foreign;

use common::peer::{run_in_private_shm, shm_exists, Peer, RemoveOnDrop, PEER};
use common::pid_namespace::{in_new_pid_namespace, rerun_in_own_pid_namespace};
use common::skip::{cannot_run, is_root};
use shmpipe_core::{clean, Backing, CleanOptions, Queue, QueueOptions};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests that reserve hundreds of MiB take turns: the leak test measures the machine's
/// shared memory, which another test's ring would move.
static LARGE_MEMORY: Mutex<()> = Mutex::new(());

fn large_memory_turn() -> std::sync::MutexGuard<'static, ()> {
    LARGE_MEMORY.lock().unwrap_or_else(|e| e.into_inner())
}

const SEALED: (&str, &str) = ("SHMPIPE_BACKING", "memfd");
const NAMED: (&str, &str) = ("SHMPIPE_BACKING", "shm");
const MIB: u64 = 1 << 20;

/// Whether `peer` is still running (not exited, not killed).
fn running(peer: &mut Peer) -> bool {
    peer.exit_within(Duration::ZERO).is_none()
}

#[test]
fn no_peer_can_resize_a_sealed_pipe_and_it_goes_on_working() {
    let mut owner = Peer::spawn(&["own-queue"], &[SEALED]);
    let name = owner.line();
    let _cleanup = RemoveOnDrop(name.clone());
    let mut receiver = Peer::spawn(&["consume", &name, "1000000000"], &[SEALED]);
    let mut sender = Peer::spawn(
        &["produce-until-killed", &name, "1", "10", "20000", "5"],
        &[SEALED],
    );
    assert_eq!(sender.line(), "ready");
    std::thread::sleep(Duration::from_millis(100)); // messages flowing
    let len = 64 * 1024; // at least the ring
    for pid in [owner.pid(), sender.pid(), receiver.pid()] {
        // A process of the same user, as any could: finds the memory among the holder's
        // descriptors, opens it read-write, and tries to shrink and grow it.
        let mut probe = foreign::as_me(&["truncate-memfd", &pid.to_string(), &name]);
        let found = probe.line();
        let size: i64 = found
            .strip_prefix("found ")
            .unwrap_or_else(|| panic!("holder {pid}: {found:?}"))
            .parse()
            .unwrap();
        assert!(size > len, "the memory of a 64 KiB ring: {size} bytes");
        for new_len in [0, size - 4096, size + 4096] {
            assert_eq!(
                probe.line(),
                format!("ftruncate {new_len} EPERM"),
                "holder {pid}"
            );
        }
        assert_eq!(probe.line(), "seals shrink,grow,seal");
        assert_eq!(probe.line(), format!("size {size}"), "unchanged");
        probe.wait_success();
    }
    std::thread::sleep(Duration::from_millis(100)); // still flowing, nothing lost a page
    for (who, peer) in [
        ("owner", &mut owner),
        ("sender", &mut sender),
        ("receiver", &mut receiver),
    ] {
        assert!(
            running(peer),
            "the {who} died: {:?}",
            peer.exit_within(Duration::ZERO)
        );
    }
    // A round trip through the pipe: a new process sends, the receiver checks and acks it.
    let mut late = Peer::spawn(&["attach-send", &name, "2", "1000"], &[]);
    assert_eq!(late.line(), "opened memfd");
    assert_eq!(late.line(), "acked");
    late.wait_success();
    assert!(running(&mut receiver) && running(&mut sender) && running(&mut owner));
}

/// `Shmem:` of `/proc/meminfo`, in bytes.
fn shmem() -> u64 {
    common::memory::shmem_kib() * 1024
}

/// The ring of the leak test: a leak of it stands far above any noise.
const LEAK_RING: u64 = 256 * MIB;
/// How far `Shmem:` may stand above its baseline once every process is gone. Other processes of
/// the machine (other test binaries, the Node tests, other users) make and free shared memory
/// meanwhile, typically a few MiB at a time; 32 MiB is well above that and an eighth of the ring,
/// so a leaked ring (or even a leaked eighth of it) cannot hide under it.
const LEAK_TOLERANCE: u64 = 32 * MIB;
/// How long the kernel gets to free the memory after the processes are reaped (it frees it as
/// their descriptors and mappings close, before they are reaped; the wait absorbs others' noise).
const LEAK_WAIT: Duration = Duration::from_secs(10);
/// "A few KiB": the most a record may be.
const MAX_RECORD: u64 = 8 << 10;

/// Where the pipe's processes are when they are all killed.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// A registered sender and receiver, nothing sent.
    Idle,
    /// A sender streaming messages, a receiver taking and checking them.
    MidSend,
    /// A receiver holding a message (unreleased), a sender waiting for its ack.
    Holding,
    /// A registered receiver that never receives, and a large message ([`LEAK_BLOB`]) sent to
    /// it: sealed memory passed to its mailbox, not yet taken.
    BlobInFlight,
}

/// The large message of [`KillPoint::BlobInFlight`]: more than half the ring, so a blob.
const LEAK_BLOB: u64 = 192 * MIB;

/// Starts a pipe of a [`LEAK_RING`] ring in three processes (its creator, a sender and a
/// receiver) at `point`; returns its name and the processes.
fn pipe_at(point: KillPoint) -> (String, Vec<Peer>) {
    let mut owner = Peer::spawn(&["own-queue", &LEAK_RING.to_string()], &[SEALED]);
    let name = owner.line();
    let (receiver, sender) = match point {
        KillPoint::Idle => {
            let mut r = Peer::spawn(&["consume-hold", &name], &[SEALED]);
            assert_eq!(r.line(), "ready");
            let mut s = Peer::spawn(&["idle", &name], &[SEALED]);
            assert_eq!(s.line(), "ready");
            (r, s)
        }
        KillPoint::MidSend => {
            let r = Peer::spawn(&["consume", &name, "1000000000"], &[SEALED]);
            let mut s = Peer::spawn(
                &["produce-until-killed", &name, "1", "1000", "1000000", "9"],
                &[SEALED],
            );
            assert_eq!(s.line(), "ready");
            std::thread::sleep(Duration::from_millis(300));
            (r, s)
        }
        KillPoint::BlobInFlight => {
            let mut r = Peer::spawn(&["consume-hold", &name], &[SEALED]);
            assert_eq!(r.line(), "ready");
            let mut s = Peer::spawn(
                &["produce-huge", &name, "1", &LEAK_BLOB.to_string()],
                &[SEALED],
            );
            let writing = s.line();
            let blob = writing.strip_prefix("writing ").expect("a blob").to_owned();
            assert!(
                record_len(&blob).is_none(),
                "a sealed blob has no name in /dev/shm"
            );
            assert_eq!(s.line(), "sent");
            (r, s)
        }
        KillPoint::Holding => {
            let s = Peer::spawn(
                &["produce", &name, "1", "3", "100000", "200000", "3"],
                &[SEALED],
            );
            let mut r = Peer::spawn(&["consume-out-of-order", &name], &[SEALED]);
            assert_eq!(r.line(), "holding");
            (r, s)
        }
    };
    (name, vec![owner, sender, receiver])
}

/// The size of the record `name` in `/dev/shm`, if it is there.
fn record_len(name: &str) -> Option<u64> {
    std::fs::metadata(std::path::Path::new("/dev/shm").join(name))
        .ok()
        .map(|m| m.len())
}

/// Run in a PID namespace of its own, so that no other process's sweep (any pipe created by this
/// user in this namespace sweeps) removes the records before the test looks at them, and holding
/// [`LARGE_MEMORY`] so that no other test of this file moves `Shmem:` meanwhile.
#[test]
fn sigkill_of_every_process_of_a_sealed_pipe_frees_its_memory_and_leaves_a_small_record() {
    let _turn = large_memory_turn();
    if !rerun_in_own_pid_namespace(
        "sigkill_of_every_process_of_a_sealed_pipe_frees_its_memory_and_leaves_a_small_record",
    ) {
        return;
    }
    for point in [
        KillPoint::Idle,
        KillPoint::MidSend,
        KillPoint::Holding,
        KillPoint::BlobInFlight,
    ] {
        let baseline = shmem();
        let began = Instant::now();
        let (name, mut peers) = pipe_at(point);
        let _cleanup = RemoveOnDrop(name.clone());
        let held = shmem();
        let expected = match point {
            KillPoint::BlobInFlight => LEAK_RING + LEAK_BLOB,
            _ => LEAK_RING,
        };
        assert!(
            held + LEAK_TOLERANCE >= baseline + expected,
            "{point:?}: the ring (and blob) are counted in Shmem: {held} against a baseline of \
             {baseline}"
        );
        for peer in &mut peers {
            assert!(
                running(peer),
                "{point:?}: a process of the pipe exited early"
            );
            peer.kill(); // SIGKILL, and reaped
        }
        let killed = Instant::now();
        let mut now = shmem();
        while now > baseline + LEAK_TOLERANCE && killed.elapsed() < LEAK_WAIT {
            std::thread::sleep(Duration::from_millis(50));
            now = shmem();
        }
        eprintln!(
            "{point:?}: Shmem baseline {} KiB, held {:+} KiB, after SIGKILL {:+} KiB \
             (after {:?}; whole scenario {:?})",
            baseline >> 10,
            (held as i64 - baseline as i64) >> 10,
            (now as i64 - baseline as i64) >> 10,
            killed.elapsed(),
            began.elapsed()
        );
        assert!(
            now <= baseline + LEAK_TOLERANCE,
            "{point:?}: Shmem stays {} KiB above its baseline after every process was killed",
            (now - baseline) >> 10
        );
        // What stays: the record, a few KiB, until the next create or a clean.
        let left = record_len(&name).expect("SIGKILL leaves the record");
        assert!(left <= MAX_RECORD, "{point:?}: a record of {left} bytes");
        match point {
            KillPoint::MidSend => {
                // A fresh process: its first create sweeps.
                let mut creator = Peer::spawn(&["own-queue"], &[SEALED]);
                let fresh = creator.line();
                let _cleanup_fresh = RemoveOnDrop(fresh.clone());
                assert!(record_len(&name).is_none(), "the next create removes it");
                drop(creator);
                let report = clean(&only(&fresh)).unwrap();
                assert_eq!(report.removed.len(), 1, "{report:?}");
            }
            KillPoint::Idle | KillPoint::Holding | KillPoint::BlobInFlight => {
                let report = clean(&only(&name)).unwrap();
                assert_eq!(report.removed.len(), 1, "{report:?}");
                assert!(record_len(&name).is_none(), "clean removes it");
            }
        }
    }
}

fn only(name: &str) -> CleanOptions {
    CleanOptions {
        only: Some(vec![name.to_owned()]),
        ..CleanOptions::default()
    }
}

#[test]
fn a_256_mib_ring_works_between_two_processes_on_a_16_mb_dev_shm() {
    if !is_root() {
        return cannot_run("a private mount namespace (unshare -m) needs root");
    }
    let _turn = large_memory_turn();
    let began = Instant::now();
    let ring = (256 * MIB).to_string();
    let (min, max) = ((2 * MIB).to_string(), (6 * MIB).to_string());
    let out = run_in_private_shm("16m", &format!("sealed-pair {ring} 8 {min} {max}"));
    let lines: Vec<&str> = out.lines().collect();
    let record: u64 = lines[0]
        .strip_prefix("record ")
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    assert!(
        record <= MAX_RECORD,
        "the record takes {record} bytes of /dev/shm"
    );
    assert_eq!(lines[1..], ["received 8"], "{out}");
    eprintln!("256 MiB ring on a 16 MB /dev/shm: {:?}", began.elapsed());
}

#[test]
fn a_1_gib_message_travels_between_two_processes_on_a_16_mb_dev_shm() {
    if !is_root() {
        return cannot_run("a private mount namespace (unshare -m) needs root");
    }
    let _turn = large_memory_turn();
    let bytes = (1u64 << 30).to_string();
    let out = run_in_private_shm("16m", &format!("sealed-huge {bytes}"));
    assert_eq!(out.trim(), format!("received {bytes}"));
}

#[test]
fn on_a_16_mb_dev_shm_sealed_blobs_are_still_kept_for_reuse() {
    if !is_root() {
        return cannot_run("a private mount namespace (unshare -m) needs root");
    }
    // Named blobs may keep an eighth of /dev/shm (2 MiB here): a 4 MiB one is not kept. Sealed
    // ones are bounded by memory, which /dev/shm's size says nothing about.
    let kept = |backing: &str| -> u64 {
        let out = run_in_private_shm("16m", &format!("kept-blob-bytes {backing}"));
        out.trim()
            .strip_prefix("kept ")
            .unwrap_or_else(|| panic!("{out}"))
            .parse()
            .unwrap()
    };
    assert_eq!(kept("shm"), 0);
    assert!(kept("memfd") >= 4 * MIB, "the sealed blob is kept");
}

#[test]
fn a_sealed_pipe_is_attached_by_name_after_its_creator_exits_a_named_one_is_not() {
    // A creates, B attaches as receiver, A exits normally.
    let start = |backing: (&str, &str)| {
        let mut a = Peer::spawn(&["create-until-attached"], &[backing]);
        let name = a.line();
        let b = Peer::spawn(&["consume", &name, "1"], &[backing]);
        assert_eq!(a.line(), "attached");
        a.wait_success();
        (name, b)
    };

    let (name, mut b) = start(SEALED);
    let _cleanup = RemoveOnDrop(name.clone());
    assert!(shm_exists(&name), "B holds it: its name stays");
    // C, a process that never saw A, attaches by the name alone and sends; B receives it.
    let mut c = Peer::spawn(&["attach-send", &name, "2", "1000"], &[]);
    assert_eq!(c.line(), "opened memfd");
    assert_eq!(c.line(), "acked");
    c.wait_success();
    assert_eq!(b.line(), "ok 1");
    b.wait_success();
    assert!(!shm_exists(&name), "the last holder removed the name");

    // The named backing: the creator removes the name when it closes the pipe.
    let (name, _b) = start(NAMED);
    let _cleanup = RemoveOnDrop(name.clone());
    let mut c = Peer::spawn(&["attach-send", &name, "2", "1000"], &[]);
    let said = c.line();
    assert!(
        said.starts_with("open-error ") && said.contains(" NotFound {"),
        "{said}"
    );
}

/// The process of another PID namespace: attaches the queue `name` and sends it one message.
fn attach_from_another_pid_namespace(name: &str) -> Option<Peer> {
    let cmd = in_new_pid_namespace(PEER, &["attach-send", name, "2", "1000"])?;
    Some(Peer::start(cmd))
}

const SMALL: QueueOptions = QueueOptions {
    capacity: 4,
    bytes: 64 << 10,
    max_producers: 2,
};

#[test]
fn another_pid_namespace_cannot_reach_a_sealed_pipe_and_is_told_to_use_the_named_backing() {
    let sealed = Queue::create_in(&SMALL, Backing::Memfd).unwrap();
    let _consumer = sealed.consumer().unwrap();
    let Some(mut peer) = attach_from_another_pid_namespace(sealed.name()) else {
        return;
    };
    let began = Instant::now();
    let exit = peer.exit_within(Duration::from_secs(10));
    assert!(exit.is_some_and(|s| s.success()), "no hang: {exit:?}");
    let said = peer.line();
    let ms: u64 = said
        .strip_prefix("open-error ")
        .and_then(|s| s.split(" ms ").next()?.parse().ok())
        .unwrap_or_else(|| panic!("{said}"));
    eprintln!(
        "attach from another PID namespace refused in {ms} ms ({:?} in all)",
        began.elapsed()
    );
    assert!(ms < 1000, "refused at once, not after {ms} ms");
    assert!(said.contains(" Unreachable {"), "{said}");
    assert!(
        said.contains("backing: 'shm'") && said.contains("SHMPIPE_BACKING=shm"),
        "the message names the way out: {said}"
    );

    // The named backing reaches across.
    let named = Queue::create_in(&SMALL, Backing::Shm).unwrap();
    let _consumer = named.consumer().unwrap();
    let Some(mut peer) = attach_from_another_pid_namespace(named.name()) else {
        return;
    };
    assert_eq!(peer.line(), "opened shm");
}
