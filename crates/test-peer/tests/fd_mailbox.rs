//! The descriptor mailbox across processes (`shmpipe_core::fd_mailbox`): a blob's memory sent
//! by a producer that then exits reaches the consumer intact; memory in flight is freed when the
//! consumer is killed; and another user can neither hand the consumer a descriptor nor receive
//! one. The peers are `shmpipe-mailbox-peer` processes.

#![cfg(target_os = "linux")]

mod common;
use common::memory::shmem_kib;

use common::peer::Peer;
use common::skip::{cannot_run, is_root};
use shmpipe_core::fd_mailbox::{Mailbox, MailboxSender, SendError};
use shmpipe_test_peer::memfd;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

const MAILBOX_PEER: &str = env!("CARGO_BIN_EXE_shmpipe-mailbox-peer");

/// How far `Shmem:` may stay above its baseline once everything is freed, in KiB. Other programs
/// of this machine (other test runs) make and free shared memory meanwhile; 16 MiB is 1/16 of
/// what the test puts in flight.
const SHMEM_TOLERANCE_KIB: u64 = 16 << 10;

/// Held by every test of this file: the `Shmem:` test must not count another's memory.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A fresh abstract address for one test.
fn address(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("shmpipe-test-mailbox-{}-{tag}-{nanos}", std::process::id())
}

/// Runs `shmpipe-mailbox-peer ARGS` to its end (as uid and gid `as_uid` if given); asserts it
/// exited 0 and returns its stdout.
fn run_peer(args: &[&str], as_uid: Option<u32>) -> String {
    let mut cmd = Command::new(MAILBOX_PEER);
    cmd.args(args);
    if let Some(uid) = as_uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_blob_reaches_the_receiver_after_its_sender_exited() {
    let _serial = serial();
    let addr = address("exited");
    let mut mailbox = Mailbox::bind(addr.as_bytes()).unwrap();
    // The sender process makes 64 MiB, sends it and exits (awaited) before anything is taken.
    let out = run_peer(&["send", &addr, "17", "64"], None);
    assert_eq!(out, "sent\n");
    let t = Instant::now();
    let blob = mailbox
        .take(17)
        .unwrap()
        .expect("the blob outlived its sender");
    let took = t.elapsed();
    let len = std::fs::File::from(blob.try_clone().unwrap())
        .metadata()
        .unwrap()
        .len();
    assert_eq!(len, 64 << 20);
    assert_eq!(memfd::check(blob.as_fd()), Ok((1, 17)));
    println!("fd_mailbox: take of a 64 MiB blob from an exited sender: {took:?}");
}

#[test]
fn memory_in_flight_is_freed_when_the_receiver_is_killed() {
    let _serial = serial();
    let addr = address("killed");
    let baseline = shmem_kib();
    let mut receiver = Peer::run_program(MAILBOX_PEER, &["hold", &addr]);
    assert_eq!(receiver.line(), "bound");
    // 256 MiB from a sender that exits: afterwards the receiver's socket is its only holder.
    assert_eq!(run_peer(&["send", &addr, "1", "256"], None), "sent\n");
    let in_flight = shmem_kib();
    assert!(
        in_flight >= baseline + (256 << 10) - SHMEM_TOLERANCE_KIB,
        "Shmem {in_flight} KiB with 256 MiB in flight, baseline {baseline} KiB"
    );

    receiver.signal(libc::SIGKILL);
    assert_eq!(
        receiver.killed_by(Duration::from_secs(10)),
        Some(libc::SIGKILL)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = shmem_kib();
    while now > baseline + SHMEM_TOLERANCE_KIB && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = shmem_kib();
    }
    assert!(
        now <= baseline + SHMEM_TOLERANCE_KIB,
        "Shmem {now} KiB 10 s after the receiver's death, baseline {baseline} KiB, \
         {in_flight} KiB while in flight"
    );
    println!(
        "fd_mailbox: Shmem baseline {baseline} KiB, in flight {in_flight} KiB, after kill {now} KiB"
    );
}

#[test]
fn another_user_can_neither_hand_over_nor_receive_a_descriptor() {
    let _serial = serial();
    if !is_root() {
        return cannot_run("needs root, to run a process as another user (nobody)");
    }
    const NOBODY: u32 = 65534;
    let addr = address("foreign");
    let mut mailbox = Mailbox::bind(addr.as_bytes()).unwrap();

    // Another user's message is queued by the kernel (anyone may connect to an abstract
    // address), but the mailbox closes that connection unread.
    assert_eq!(
        run_peer(&["send-unchecked", &addr, "7"], Some(NOBODY)),
        "sent\n"
    );
    assert!(
        mailbox.take(7).unwrap().is_none(),
        "another user's descriptor was taken"
    );
    assert_eq!(mailbox.connections(), 0);
    assert_eq!(mailbox.stashed(), 0);
    // The same message from our own uid is taken: the refusal is the uid's.
    assert_eq!(run_peer(&["send-unchecked", &addr, "8"], None), "sent\n");
    let ours = mailbox.take(8).unwrap().expect("our own uid's descriptor");
    assert_eq!(memfd::check(ours.as_fd()), Ok((1, 8)));

    // A sender of another user does not hand its memory to our listener either.
    assert_eq!(
        run_peer(&["send", &addr, "9", "1"], Some(NOBODY)),
        "error foreign-listener uid 0\n"
    );
    assert!(mailbox.take(9).unwrap().is_none());

    // And our sender refuses another user's listener.
    let other = address("squatted");
    let mut squatter = Peer::start({
        let mut c = Command::new(MAILBOX_PEER);
        c.args(["hold", &other]).uid(NOBODY).gid(NOBODY);
        c
    });
    assert_eq!(squatter.line(), "bound");
    let blob = memfd::filled("mailbox-test-secret", 4096, 1, 3);
    let r = MailboxSender::new().send(other.as_bytes(), 3, blob.as_fd(), None, &|| true);
    assert!(
        matches!(r, Err(SendError::ForeignListener { uid: NOBODY })),
        "{r:?}"
    );
}

#[test]
fn descriptors_in_flight_past_the_users_limit_make_the_sender_wait() {
    let _serial = serial();
    if !is_root() {
        return cannot_run("needs root, to run a process as another user (nobody)");
    }
    // Root is not limited: its queue fills (EAGAIN) first.
    let root = run_peer(&["fill", &address("fill-root")], None);
    let root_queued: u64 = root
        .strip_prefix("queued ")
        .and_then(|r| r.lines().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{root}"));
    assert!(root.ends_with("\ntimeout\n"), "{root}");
    assert!(root_queued > 64, "{root}");
    // Another user may have at most RLIMIT_NOFILE descriptors in flight (the kernel's
    // ETOOMANYREFS): past them a send waits as for a full queue, it does not fail.
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=64:64",
        MAILBOX_PEER,
        "fill",
        &address("fill-nobody"),
    ])
    .uid(65534)
    .gid(65534);
    let out = cmd.output().unwrap();
    let nobody = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{}: {nobody}", out.status);
    assert!(nobody.ends_with("\ntimeout\n"), "{nobody}");
    let nobody_queued: u64 = nobody
        .strip_prefix("queued ")
        .and_then(|r| r.lines().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{nobody}"));
    // 65 (the kernel refuses once more than the limit are in flight), fewer if other processes
    // of that user have descriptors in flight.
    assert!(
        (1..=65).contains(&nobody_queued),
        "{nobody_queued} queued under a limit of 64 (root: {root_queued})"
    );
    println!(
        "fd_mailbox: queued before a wait: {root_queued} as root, {nobody_queued} as a user with \
         RLIMIT_NOFILE 64"
    );
}
