//! What the README says about truncation, checked with real processes:
//! - another user can neither open nor truncate our segments (mode 0600);
//! - in the named backing (`shm`), a process of the same user can, and then every process that
//!   has the segment mapped dies of SIGBUS when it next touches the lost pages (the sealed
//!   backing, the default for pipes on Linux, refuses it: `sealed_memory.rs`).

#![cfg(target_os = "linux")]

mod common;
#[path = "common/foreign.rs"]
#[allow(dead_code)]
mod foreign;

use common::peer::{Peer, RemoveOnDrop};
use foreign::{as_me, as_nobody, root_available};
use shmpipe_core::{Backing, Queue, QueueOptions, WaitOptions};
use std::time::Duration;

/// The named backing, the one a same-user truncation can hurt.
const NAMED: (&str, &str) = ("SHMPIPE_BACKING", "shm");

fn file_len(name: &str) -> u64 {
    std::fs::metadata(std::path::Path::new("/dev/shm").join(name))
        .unwrap()
        .len()
}

#[test]
fn another_user_can_neither_open_nor_truncate_our_segment() {
    if !root_available("another_user_can_neither_open_nor_truncate_our_segment") {
        return;
    }
    let q = Queue::create_in(
        &QueueOptions {
            capacity: 4,
            bytes: 4096,
            max_producers: 2,
        },
        Backing::Shm,
    )
    .unwrap();
    let before = file_len(q.name());
    let mut probe = as_nobody(&["truncate", q.name()]);
    assert_eq!(probe.line(), "uid 65534", "the probe must run as nobody");
    assert_eq!(probe.line(), "truncate error PermissionDenied");
    probe.wait_success();
    assert_eq!(file_len(q.name()), before);
    // Still whole and working.
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    p.send(b"intact", &WaitOptions::forever()).unwrap();
    let m = c
        .recv(&WaitOptions::timeout(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(m.as_slice(), b"intact");

    // The control: the same probe as this user truncates (so the refusal above is the mode's
    // doing). A queue of a child's, since this process must not touch a truncated mapping.
    let mut owner = Peer::spawn(&["own-queue"], &[NAMED]);
    let name = owner.line();
    let _cleanup = RemoveOnDrop(name.clone());
    let mut probe = as_me(&["truncate", &name]);
    probe.line();
    assert_eq!(probe.line(), "truncate ok");
    assert_eq!(file_len(&name), 0);
}

#[test]
fn a_same_user_truncation_kills_every_mapped_process_with_sigbus() {
    // The queue belongs to a child: the test process maps nothing that is truncated.
    let mut owner = Peer::spawn(&["own-queue"], &[NAMED]);
    let name = owner.line();
    let _cleanup = RemoveOnDrop(name.clone());
    let mut readers: Vec<Peer> = (0..2).map(|_| as_me(&["map", &name])).collect();
    for r in &mut readers {
        assert_eq!(r.line(), "mapped");
    }
    std::fs::OpenOptions::new()
        .write(true)
        .open(std::path::Path::new("/dev/shm").join(&name))
        .unwrap()
        .set_len(0)
        .unwrap();
    for r in &mut readers {
        assert_eq!(
            r.killed_by(Duration::from_secs(20)),
            Some(libc::SIGBUS),
            "a mapped reader of a truncated segment"
        );
    }
}
