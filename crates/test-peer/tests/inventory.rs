//! The inventory (`list_segments`, `clean`) against real child processes (`shmpipe-peer`) that
//! live, die by SIGKILL, or run in a PID namespace of their own.
//!
//! Other test runs may share this machine's `/dev/shm`, so outside a namespace of its own every
//! clean here is limited to the test's own names; the unrestricted `clean_dead` runs inside a
//! fresh PID namespace, where everything created outside it reads as "another namespace". So do
//! the tests that need a sealed pipe's record to stay after every holder is killed: any other
//! process of this user creating a pipe in this namespace sweeps such records away.

#![cfg(target_os = "linux")]

mod common;

use common::peer::{shm_exists, Peer, RemoveOnDrop, PEER};
use common::pid_namespace::{in_new_pid_namespace, rerun_in_own_pid_namespace, INNER};
use common::skip::cannot_run;
use shmpipe_core::inventory::Liveness;
use shmpipe_core::{
    clean, clean_dead, list_segments, Backing, CleanOptions, Queue, QueueOptions, SegmentInfo,
    SegmentKind, Status,
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

/// In both backings (sealed: what the record stands for, judged by its holders; named: the ring
/// itself, judged by its creator).
#[test]
fn in_its_own_pid_namespace_a_live_owners_queue_is_never_cleaned_a_killed_ones_is() {
    if !rerun_in_own_pid_namespace(
        "in_its_own_pid_namespace_a_live_owners_queue_is_never_cleaned_a_killed_ones_is",
    ) {
        return;
    }
    for backing in [Backing::Memfd, Backing::Shm] {
        let mut peer = Peer::spawn(&["own-queue"], &[("SHMPIPE_BACKING", backing.as_str())]);
        let name = peer.line();
        let _cleanup = RemoveOnDrop(name.clone());
        let live = info(&name);
        assert_eq!(live.status, Status::OwnerAlive, "{backing:?}");
        assert_eq!(live.owner, Liveness::Alive);
        assert_eq!(
            (live.kind, live.backing),
            (Some(SegmentKind::Queue), backing)
        );
        assert!(live.size > 64 << 10, "the ring's size: {}", live.size);
        assert_eq!(live.creator.map(|c| c.pid), Some(peer.pid()));
        assert_eq!(live.held_by, Some(vec![peer.pid()]));
        for _ in 0..3 {
            let report = clean(&only(&[&name])).unwrap();
            assert!(report.removed.is_empty() && report.failed.is_empty());
            assert!(shm_exists(&name), "a live owner's queue was removed");
        }
        peer.kill(); // SIGKILL: no cleanup of its own
        assert!(
            shm_exists(&name),
            "SIGKILL leaves the queue (or its record) behind"
        );
        let dead = info(&name);
        assert_eq!(
            (dead.status, dead.owner),
            (Status::OwnerDead, Liveness::Dead),
            "{backing:?}"
        );
        assert_eq!(dead.creator, live.creator);
        assert_eq!(dead.held_by, Some(vec![]));
        let report = clean(&only(&[&name])).unwrap();
        assert_eq!(names(&report.removed), HashSet::from([name.as_str()]));
        assert!(!shm_exists(&name));
    }
}

/// A sealed pipe whose creator was SIGKILLed is alive while another process holds it.
#[test]
fn a_sealed_pipe_whose_creator_was_killed_is_alive_while_another_process_holds_it() {
    let sealed = [("SHMPIPE_BACKING", "memfd")];
    let mut owner = Peer::spawn(&["own-queue"], &sealed);
    let name = owner.line();
    let _cleanup = RemoveOnDrop(name.clone());
    let mut holder = Peer::spawn(&["consume-hold", &name], &sealed);
    assert_eq!(holder.line(), "ready");
    let creator = owner.pid();
    owner.kill();
    let shown = info(&name);
    assert_eq!(
        (shown.status, shown.owner, shown.backing),
        (Status::OwnerAlive, Liveness::Dead, Backing::Memfd)
    );
    assert_eq!(shown.kind, Some(SegmentKind::Queue));
    assert_eq!(shown.creator.map(|c| c.pid), Some(creator));
    assert_eq!(shown.held_by, Some(vec![holder.pid()]));
    assert!(shown.size > 64 << 10, "the ring's size: {}", shown.size);
    for _ in 0..3 {
        let report = clean(&only(&[&name])).unwrap();
        assert!(report.removed.is_empty() && report.failed.is_empty());
        assert!(shm_exists(&name), "a held sealed pipe's record was removed");
    }
    // Still reachable by its name through the holder.
    let mut producer = Peer::spawn(&["register", &name, "producer"], &sealed);
    assert_eq!(producer.line(), "registered");
    assert_eq!(producer.line(), "sent");
    holder.kill();
}

#[test]
fn in_its_own_pid_namespace_a_sealed_pipe_nobody_holds_is_removed_by_clean_and_the_next_create() {
    if !rerun_in_own_pid_namespace(
        "in_its_own_pid_namespace_a_sealed_pipe_nobody_holds_is_removed_by_clean_and_the_next_create",
    ) {
        return;
    }
    let sealed = [("SHMPIPE_BACKING", "memfd")];
    // A sealed pipe, attached by a second process; then the creator SIGKILLed, and with `both`
    // the second process too.
    let pipe = |both: bool| {
        let mut owner = Peer::spawn(&["own-queue"], &sealed);
        let name = owner.line();
        let mut holder = Peer::spawn(&["consume-hold", &name], &sealed);
        assert_eq!(holder.line(), "ready");
        let mut pids = vec![owner.pid(), holder.pid()];
        pids.sort_unstable();
        assert_eq!(info(&name).held_by, Some(pids));
        owner.kill();
        if both {
            holder.kill();
        }
        (name, holder)
    };
    let (abandoned, _) = pipe(true);
    let _cleanup = RemoveOnDrop(abandoned.clone());
    assert!(shm_exists(&abandoned), "SIGKILL leaves the record");
    let left = info(&abandoned);
    assert_eq!(
        (left.status, left.backing, left.held_by),
        (Status::OwnerDead, Backing::Memfd, Some(vec![]))
    );
    let report = clean(&only(&[&abandoned])).unwrap();
    assert_eq!(names(&report.removed), HashSet::from([abandoned.as_str()]));
    assert!(!shm_exists(&abandoned));

    // (The held one first: creating a pipe sweeps.)
    let (held, _holder) = pipe(false);
    let _cleanup_held = RemoveOnDrop(held.clone());
    let (abandoned, _) = pipe(true);
    let _cleanup = RemoveOnDrop(abandoned.clone());
    assert!(shm_exists(&abandoned) && shm_exists(&held));
    // A new process: its first pipe sweeps.
    let mut creator = Peer::spawn(&["own-queue"], &sealed);
    let fresh = creator.line();
    let _cleanup_fresh = RemoveOnDrop(fresh.clone());
    assert!(
        !shm_exists(&abandoned),
        "the next create removes a record nobody holds"
    );
    assert!(shm_exists(&held), "the sweep removed a held pipe's record");
    assert_eq!(info(&held).status, Status::OwnerAlive);
    assert_eq!(info(&fresh).status, Status::OwnerAlive);
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

#[test]
fn in_its_own_pid_namespace_clean_dead_removes_exactly_what_dead_owners_left() {
    if !rerun_in_own_pid_namespace(
        "in_its_own_pid_namespace_clean_dead_removes_exactly_what_dead_owners_left",
    ) {
        return;
    }
    assert_eq!(std::process::id(), 1, "pid 1 of a new namespace");
    // Named: a sealed queue with no receiver keeps its senders' blobs out of /dev/shm.
    let mut owner = Peer::spawn(&["own-queue"], &[("SHMPIPE_BACKING", "shm")]);
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

/// Whether this process is root with `setpriv` at hand; if not, see [`cannot_run`].
fn root_with_setpriv() -> bool {
    let missing = if !is_root() {
        Some("needs root, to run a process as another user (nobody)")
    } else if Command::new("setpriv").arg("--version").output().is_err() {
        Some("needs setpriv (util-linux)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) => {
            cannot_run(why);
            false
        }
    }
}

/// A fresh shared array name (and its segment's name) no other test or run uses.
fn array_names() -> (String, String) {
    let name = format!("inv{:016x}", rand::random::<u64>());
    let segment = format!("{}{name}", shmpipe_core::ARRAY_NAME_PREFIX);
    (name, segment)
}

fn uid_of(name: &str) -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/dev/shm/{name}")).unwrap().uid()
}

#[test]
fn as_root_another_users_dead_segment_is_kept_and_shown_unless_all_users() {
    if !root_with_setpriv() {
        return;
    }
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        PEER,
        "own-queue",
    ]);
    let mut peer = Peer::start(cmd);
    let name = peer.line();
    let _cleanup = RemoveOnDrop(name.clone());
    assert_eq!(uid_of(&name), 65534, "created by nobody");
    let pid = peer.pid();
    peer.kill(); // SIGKILL: its queue stays, its owner dead
    assert!(shm_exists(&name));

    let shown = info(&name);
    assert_eq!(shown.status, Status::OtherUser(65534), "{shown:?}");
    assert_eq!(shown.status.code(), "other-user");
    assert_eq!(shown.detail(), "other user (uid 65534)");
    assert_eq!((shown.uid, shown.owner), (Some(65534), Liveness::Dead));
    assert_eq!(shown.creator.map(|c| c.pid), Some(pid));
    for opts in [
        only(&[&name]),
        CleanOptions {
            force: true,
            force_invalid: true,
            arrays: true,
            ..only(&[&name])
        },
    ] {
        let report = clean(&opts).unwrap();
        assert!(report.removed.is_empty(), "{opts:?}: {:?}", report.removed);
        assert_eq!(names(&report.kept), HashSet::from([name.as_str()]));
        assert_eq!(report.kept[0].status, Status::OtherUser(65534));
        assert!(shm_exists(&name), "{opts:?} removed another user's segment");
    }

    let judged = shmpipe_core::list_segments_with(&shmpipe_core::ListOptions { all_users: true })
        .unwrap()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap();
    assert_eq!(judged.status, Status::OwnerDead);
    let report = clean(&CleanOptions {
        all_users: true,
        ..only(&[&name])
    })
    .unwrap();
    assert_eq!(names(&report.removed), HashSet::from([name.as_str()]));
    assert!(!shm_exists(&name));
}

#[test]
fn an_array_left_by_a_killed_process_is_listed_with_owner_and_age_and_removed_when_named() {
    let (array, segment) = array_names();
    let _cleanup = RemoveOnDrop(segment.clone());
    let before = std::time::SystemTime::now() - Duration::from_secs(2);
    let mut peer = Peer::run(&["own-array", &array]);
    assert_eq!(peer.line(), "created");
    let pid = peer.pid();
    peer.kill();
    std::thread::sleep(Duration::from_millis(300)); // an age to see

    let left = info(&segment);
    assert_eq!(left.kind, Some(SegmentKind::Array));
    assert_eq!(left.status, Status::Array, "{left:?}");
    assert_eq!(
        (left.owner, left.held_by.clone()),
        (Liveness::Dead, Some(vec![]))
    );
    assert_eq!(left.creator.map(|c| c.pid), Some(pid));
    let created = left.created.expect("a creation time");
    assert!(created >= before, "created {created:?}, before {before:?}");
    let age = created.elapsed().expect("created in the past");
    assert!(
        age >= Duration::from_millis(300) && age < Duration::from_secs(60),
        "{age:?}"
    );
    assert!(!left.removable_with(&CleanOptions::default()));

    // Unrestricted, but a dry run (other runs share /dev/shm): plain clean keeps it.
    let plain = clean(&CleanOptions {
        dry_run: true,
        ..CleanOptions::default()
    })
    .unwrap();
    let kept = plain.kept.iter().find(|i| i.name == segment);
    assert_eq!(
        kept.map(|i| i.status),
        Some(Status::Array),
        "plain clean keeps it"
    );
    assert!(!names(&plain.removed).contains(segment.as_str()));
    let arrays = clean(&CleanOptions {
        dry_run: true,
        arrays: true,
        ..CleanOptions::default()
    })
    .unwrap();
    assert!(
        names(&arrays.removed).contains(segment.as_str()),
        "--arrays removes it"
    );
    assert!(shm_exists(&segment));

    let report = clean(&only(&[&segment])).unwrap();
    assert_eq!(names(&report.removed), HashSet::from([segment.as_str()]));
    assert!(!shm_exists(&segment), "named: removed");
}

#[test]
fn an_array_open_in_a_live_process_names_it_and_goes_only_with_force() {
    let (array, segment) = array_names();
    let _cleanup = RemoveOnDrop(segment.clone());
    let mut peer = Peer::run(&["own-array", &array]);
    assert_eq!(peer.line(), "created");
    let holder = shmpipe_core::ProcessRef {
        pid: peer.pid(),
        command: Some("shmpipe-peer".into()),
    };

    let open = info(&segment);
    assert_eq!(
        (open.status, open.owner),
        (Status::ArrayInUse, Liveness::Alive)
    );
    assert_eq!(open.may_be_used_by, std::slice::from_ref(&holder));
    assert_eq!(
        open.detail(),
        format!("shared array, open in pid {} (shmpipe-peer)", peer.pid())
    );
    for opts in [
        only(&[&segment]),
        CleanOptions {
            arrays: true,
            ..only(&[&segment])
        },
    ] {
        let report = clean(&opts).unwrap();
        assert!(report.removed.is_empty(), "{opts:?}");
        assert_eq!(report.kept[0].may_be_used_by, std::slice::from_ref(&holder));
        assert!(shm_exists(&segment));
    }
    let report = clean(&CleanOptions {
        force: true,
        ..only(&[&segment])
    })
    .unwrap();
    assert_eq!(names(&report.removed), HashSet::from([segment.as_str()]));
    assert!(!shm_exists(&segment));
    peer.kill();
}

#[test]
fn a_blob_kept_as_maybe_in_use_names_the_live_receiver_and_force_removes_it() {
    // Named: a sealed queue with no receiver keeps its senders' blobs out of /dev/shm.
    let mut owner = Peer::spawn(&["own-queue"], &[("SHMPIPE_BACKING", "shm")]);
    let queue = owner.line();
    let _queue_cleanup = RemoveOnDrop(queue.clone());
    let mut sender = Peer::run(&["produce-huge", &queue, "5", "100000"]);
    let blob = sender.line().strip_prefix("writing ").unwrap().to_owned();
    let _blob_cleanup = RemoveOnDrop(blob.clone());
    assert_eq!(sender.line(), "sent");
    sender.kill(); // a committed blob whose sender is dead, for the queue's receiver to take

    let kept = info(&blob);
    assert_eq!(kept.status, Status::MaybeInUse);
    // The queue's owner holds a queue: it may become the receiver. (Other processes on this
    // machine may hold queues too, and be named with it.)
    let receiver = shmpipe_core::ProcessRef {
        pid: owner.pid(),
        command: Some("shmpipe-peer".into()),
    };
    assert!(kept.may_be_used_by.contains(&receiver), "{kept:?}");
    let detail = kept.detail();
    assert!(
        detail.starts_with("owner dead, maybe in use: a receiver may be alive (")
            && detail.contains(&receiver.to_string()),
        "{detail}"
    );
    let report = clean(&only(&[&blob])).unwrap();
    assert!(report.removed.is_empty());
    assert!(report.kept[0].may_be_used_by.contains(&receiver));
    assert!(shm_exists(&blob));

    let report = clean(&CleanOptions {
        force: true,
        ..only(&[&blob])
    })
    .unwrap();
    assert_eq!(names(&report.removed), HashSet::from([blob.as_str()]));
    assert!(!shm_exists(&blob));
    assert!(
        shm_exists(&queue),
        "force removes only what it was asked to"
    );
}

#[test]
fn in_its_own_pid_namespace_plain_clean_keeps_a_dead_processs_array_and_arrays_removes_it() {
    let test =
        "in_its_own_pid_namespace_plain_clean_keeps_a_dead_processs_array_and_arrays_removes_it";
    if std::env::var_os(INNER).is_none() && !is_root() {
        cannot_run("needs root for a PID namespace");
        return;
    }
    if !rerun_in_own_pid_namespace(test) {
        return;
    }
    let (array, segment) = array_names();
    let _cleanup = RemoveOnDrop(segment.clone());
    let mut peer = Peer::run(&["own-array", &array]);
    assert_eq!(peer.line(), "created");
    peer.kill();
    assert_eq!(info(&segment).status, Status::Array);

    // Unrestricted: everything made outside this namespace is not ours to judge.
    let report = clean_dead().unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert!(!names(&report.removed).contains(segment.as_str()));
    assert!(shm_exists(&segment), "plain clean keeps an array");
    let report = clean(&CleanOptions {
        arrays: true,
        ..CleanOptions::default()
    })
    .unwrap();
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(names(&report.removed), HashSet::from([segment.as_str()]));
    assert!(!shm_exists(&segment));
}

/// A process in another mount namespace that maps its own tmpfs's `/dev/shm/shmpipe_*` file is
/// not a holder of ours, even where that file's inode number is our segment's (tmpfs numbers
/// inodes per mount, from 2 up, so the two collide easily).
#[test]
#[cfg(target_os = "linux")]
fn a_mapping_in_another_mount_namespace_with_our_inode_number_is_not_a_holder() {
    use std::os::unix::fs::MetadataExt;
    if !is_root() {
        cannot_run("needs root for a private mount namespace (unshare -m)");
        return;
    }
    let q = Queue::create(&QueueOptions {
        capacity: 4,
        bytes: 4096,
        max_producers: 1,
    })
    .unwrap();
    let inode = std::fs::metadata(format!("/dev/shm/{}", q.name()))
        .unwrap()
        .ino();
    let script =
        format!("mount -t tmpfs -o size=16m tmpfs /dev/shm && exec {PEER} map-inode {inode}");
    let mut cmd = Command::new("unshare");
    cmd.args(["-m", "sh", "-c", &script]);
    let mut peer = Peer::start(cmd);
    assert_eq!(peer.line(), "mapped");
    let shown = info(q.name());
    assert_eq!(
        shown.held_by,
        Some(vec![std::process::id()]),
        "only this process holds {} (inode {inode}); the peer {} maps another tmpfs's",
        q.name(),
        peer.pid()
    );
    peer.kill();
}
