//! The inventory (`list_segments`, `clean`) against real child processes (`shmpipe-peer`) that
//! live, die by SIGKILL, or run in a PID namespace of their own.
//!
//! Other test runs may share this machine's `/dev/shm`, so outside a namespace of its own every
//! clean here is limited to the test's own names; the unrestricted `clean_dead` runs inside a
//! fresh PID namespace, where everything created outside it reads as "another namespace".

#![cfg(target_os = "linux")]

mod common;

use common::peer::{shm_exists, Peer, RemoveOnDrop, PEER};
use common::skip::cannot_run;
use shmpipe_core::inventory::Liveness;
use shmpipe_core::{
    clean, clean_dead, list_segments, CleanOptions, SegmentInfo, SegmentKind, Status,
};
use std::collections::HashSet;
use std::process::Command;
use std::time::Duration;

fn info(name: &str) -> SegmentInfo {
    list_segments()
        .unwrap()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
}

fn only(names: &[&str]) -> CleanOptions {
    CleanOptions {
        only: Some(names.iter().map(|&n| n.to_owned()).collect()),
        ..CleanOptions::default()
    }
}

fn names(infos: &[SegmentInfo]) -> HashSet<&str> {
    infos.iter().map(|i| i.name.as_str()).collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[test]
fn a_live_owners_queue_is_never_cleaned_a_killed_ones_is() {
    let mut peer = Peer::spawn(&["own-queue"], &[]);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    let live = info(&name);
    assert_eq!(live.status, Status::OwnerAlive);
    assert_eq!(live.owner, Liveness::Alive);
    assert_eq!(live.kind, Some(SegmentKind::Queue));
    assert_eq!(live.creator.map(|c| c.pid), Some(peer.pid()));
    assert_eq!(live.held_by, Some(vec![peer.pid()]));
    for _ in 0..3 {
        let report = clean(&only(&[&name])).unwrap();
        assert!(report.removed.is_empty() && report.failed.is_empty());
        assert!(shm_exists(&name), "a live owner's queue was removed");
    }
    peer.kill(); // SIGKILL: no cleanup of its own
    assert!(shm_exists(&name), "SIGKILL leaves the queue behind");
    let dead = info(&name);
    assert_eq!(
        (dead.status, dead.owner),
        (Status::OwnerDead, Liveness::Dead)
    );
    assert_eq!(dead.creator, live.creator);
    let report = clean(&only(&[&name])).unwrap();
    assert_eq!(names(&report.removed), HashSet::from([name.as_str()]));
    assert!(!shm_exists(&name));
}

/// `unshare … CMD` running CMD as pid 1 of a new PID namespace (with its own /proc), killed with
/// the `unshare` process. Where this machine does not allow it, the test fails, or with
/// `SHMPIPE_TEST_ALLOW_SKIP=1` gets `None` (see `common/skip.rs`).
fn in_new_pid_namespace(program: &str, args: &[&str]) -> Option<Command> {
    if !is_root() {
        cannot_run("creating a PID namespace needs root");
        return None;
    }
    let probe = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        cannot_run("`unshare --pid --fork --mount-proc` is not available here");
        return None;
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--mount-proc", "--kill-child", program])
        .args(args);
    Some(cmd)
}

#[test]
fn a_creator_in_another_pid_namespace_is_never_judged() {
    let Some(cmd) = in_new_pid_namespace(PEER, &["own-queue"]) else {
        return;
    };
    let mut peer = Peer::start(cmd);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    // Pid 1 is alive here too (our init), with another start time: judged by pid and start time
    // alone, the creator would read as dead and its live queue would be removed.
    let i = info(&name);
    assert_eq!(i.creator.map(|c| c.pid), Some(1));
    assert_eq!(
        (i.status, i.owner),
        (Status::OtherPidNamespace, Liveness::Unknown)
    );
    assert!(clean(&only(&[&name])).unwrap().removed.is_empty());
    assert!(shm_exists(&name));
    peer.kill(); // and with it the peer (--kill-child)
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        info(&name).status,
        Status::OtherPidNamespace,
        "still not ours to judge"
    );
}

const INNER: &str = "SHMPIPE_TEST_IN_OWN_PID_NAMESPACE";

/// Runs the rest of the calling test inside a fresh PID namespace: returns `true` there, and
/// `false` in the outer run (after running the inner one and checking it passed).
fn rerun_in_own_pid_namespace(test: &str) -> bool {
    if std::env::var_os(INNER).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let Some(mut cmd) = in_new_pid_namespace(
        exe.to_str().unwrap(),
        &["--exact", test, "--nocapture", "--test-threads=1"],
    ) else {
        return false;
    };
    let out = cmd.env(INNER, "1").output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "inner run failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run:\n{text}"
    );
    false
}

#[test]
fn in_its_own_pid_namespace_clean_dead_removes_exactly_what_dead_owners_left() {
    if !rerun_in_own_pid_namespace(
        "in_its_own_pid_namespace_clean_dead_removes_exactly_what_dead_owners_left",
    ) {
        return;
    }
    assert_eq!(std::process::id(), 1, "pid 1 of a new namespace");
    let mut owner = Peer::spawn(&["own-queue"], &[]);
    let queue = owner.line();
    let mut sender = Peer::spawn(&["produce-huge", &queue, "5", "100000"], &[]);
    let committed = sender.line().strip_prefix("writing ").unwrap().to_owned();
    assert_eq!(sender.line(), "sent");
    let mut writer = Peer::spawn(&["produce-huge", &queue, "6", "100000", "stall"], &[]);
    let unfinished = writer.line().strip_prefix("writing ").unwrap().to_owned();
    assert_eq!(writer.line(), "stalled");
    let _cleanup = [&queue, &committed, &unfinished].map(|n| RemoveOnDrop(n.to_string()));
    let ours: HashSet<&str> = HashSet::from([queue.as_str(), &committed, &unfinished]);
    sender.kill();
    writer.kill();

    let status = |name: &str| info(name).status;
    assert_eq!(status(&queue), Status::OwnerAlive);
    assert_eq!(status(&unfinished), Status::AbandonedBlob);
    // The queue's owner is alive and could become its receiver.
    assert_eq!(status(&committed), Status::MaybeInUse);
    for other in list_segments().unwrap() {
        if !ours.contains(other.name.as_str()) && other.kind.is_some() {
            assert_eq!(other.status, Status::OtherPidNamespace, "{other:?}");
        }
    }

    let report = clean_dead().unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(names(&report.removed), HashSet::from([unfinished.as_str()]));
    assert!(shm_exists(&queue) && shm_exists(&committed) && !shm_exists(&unfinished));

    owner.kill();
    assert_eq!(status(&queue), Status::OwnerDead);
    // Nobody holds a queue any more: nobody can ever receive the blob.
    assert_eq!(status(&committed), Status::UndeliverableBlob);
    let report = clean_dead().unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(
        names(&report.removed),
        HashSet::from([queue.as_str(), committed.as_str()])
    );
    assert!(!shm_exists(&queue) && !shm_exists(&committed));
    assert!(report.kept.iter().all(|k| !k.status.removable()));
}
