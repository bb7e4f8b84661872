//! Our side of segment permissions: we attach only segments of our own user with no group or
//! other permission bits. A pipe, an array or a message's own segment (blob) that another user
//! (`nobody`, a real process entered with `setpriv`) created under the expected name, even with
//! mode 0666, is refused with `Error::Permission` before anything of it is read, and left where
//! it is; so is a segment of ours that group or others may open. The check is made on the
//! descriptor that is mapped: a name swapped between our segment and another user's while we
//! open it never gives us the other user's memory.
//!
//! (`permissions.rs` tests the other side: another user cannot open ours.)

#![cfg(target_os = "linux")]

mod common;
#[path = "common/foreign.rs"]
#[allow(dead_code)]
mod foreign;
#[path = "common/forge.rs"]
mod forge;

use common::peer::{shm_exists, RemoveOnDrop};
use foreign::{as_nobody, owner_and_mode, root_available, squatted_name, NOBODY};
use shmpipe_core::{
    Dtype, Error, Queue, QueueOptions, Segment, SegmentKind, SharedArray, ARRAY_NAME_PREFIX,
};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn small_queue() -> Queue {
    Queue::create(&QueueOptions {
        capacity: 8,
        bytes: 16 << 10,
        max_producers: 4,
    })
    .unwrap()
}

fn chmod(name: &str, mode: u32) {
    let path = std::path::Path::new("/dev/shm").join(name);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asserts that `got` is a refusal of segment `name` owned by `owner` with `mode`, and that its
/// message says whose segment it is and what the rule is.
fn assert_refused<T>(got: Result<T, Error>, name: &str, owner: u32, mode: u32) {
    let err = match got {
        Ok(_) => panic!("segment {name} (uid {owner}, mode {mode:o}) was attached"),
        Err(e) => e,
    };
    match &err {
        Error::Permission {
            name: n,
            owner: o,
            mode: m,
            ..
        } => {
            assert_eq!((n.as_str(), *o, m & 0o7777), (name, owner, mode), "{err:?}");
        }
        other => panic!("expected a permission error for {name}, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains(&format!("uid {owner}")), "{text}");
    assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
    assert!(text.contains("0600"), "{text}");
}

#[test]
fn a_pipe_squatted_by_another_user_is_refused() {
    if !root_available("a_pipe_squatted_by_another_user_is_refused") {
        return;
    }
    let mut squatter = as_nobody(&["squat", "queue", "666"]);
    let name = squatted_name(&mut squatter);
    let _cleanup = RemoveOnDrop(name.clone());
    assert_eq!(owner_and_mode(&name), (NOBODY, 0o666));
    // Both ends attach through `Queue::open` (the Node `Sender.attach`/`Receiver.attach`).
    assert_refused(Queue::open(&name), &name, NOBODY, 0o666);
    assert_refused(
        Segment::open(&name, SegmentKind::Queue, Duration::ZERO),
        &name,
        NOBODY,
        0o666,
    );
    assert!(shm_exists(&name), "the refusal left the segment alone");
}

#[test]
fn an_array_squatted_by_another_user_is_refused() {
    if !root_available("an_array_squatted_by_another_user_is_refused") {
        return;
    }
    let array = format!("sq{:x}", rand::random::<u64>() & 0xffff_ffff);
    let mut squatter = as_nobody(&["squat", "array", &array, "666"]);
    let seg = squatted_name(&mut squatter);
    let _cleanup = RemoveOnDrop(seg.clone());
    assert_eq!(seg, format!("{ARRAY_NAME_PREFIX}{array}"));
    assert_eq!(owner_and_mode(&seg), (NOBODY, 0o666));
    assert_refused(SharedArray::open(&array), &seg, NOBODY, 0o666);
    assert!(shm_exists(&seg));
}

#[test]
fn a_blob_of_another_user_named_by_a_record_is_refused() {
    if !root_available("a_blob_of_another_user_named_by_a_record_is_refused") {
        return;
    }
    let q = small_queue();
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    let forger = forge::Forger::open(q.name());
    for mode in ["666", "600"] {
        let mut squatter = as_nobody(&["squat", "blob", mode]);
        let blob = squatted_name(&mut squatter);
        let _cleanup = RemoveOnDrop(blob.clone());
        let mode = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(owner_and_mode(&blob), (NOBODY, mode));
        forger.blob_record(0, forger.generation(0), &blob, 4096);
        p.send(b"after", &shmpipe_core::WaitOptions::forever())
            .unwrap();
        let started = Instant::now();
        assert_refused(
            c.try_recv().map(|m| m.map(|m| m.len())),
            &blob,
            NOBODY,
            mode,
        );
        assert!(started.elapsed() < Duration::from_millis(250));
        // The bad record was consumed: the next message comes next.
        let next = c.try_recv().unwrap().expect("the message after the record");
        assert_eq!(next.as_slice(), b"after");
        assert!(shm_exists(&blob), "another user's segment was removed");
    }
}

#[test]
fn a_segment_of_ours_open_to_group_or_others_is_refused() {
    // Needs no other user: the segment is ours, only its mode is wrong.
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let q = small_queue();
    for mode in [0o640, 0o604, 0o660, 0o606, 0o610, 0o601] {
        chmod(q.name(), mode);
        assert_refused(Queue::open(q.name()), q.name(), me, mode);
    }
    chmod(q.name(), 0o600);
    Queue::open(q.name()).expect("mode 0600 is ours");

    let array = format!("gm{:x}", rand::random::<u64>() & 0xffff_ffff);
    let a = SharedArray::create(&array, Dtype::Uint8, &[16]).unwrap();
    let seg = format!("{ARRAY_NAME_PREFIX}{array}");
    chmod(&seg, 0o644);
    assert_refused(SharedArray::open(&array), &seg, me, 0o644);
    drop(a);
    SharedArray::remove(&array).unwrap();
}

#[test]
fn the_ownership_check_is_made_on_the_mapped_descriptor() {
    if !root_available("the_ownership_check_is_made_on_the_mapped_descriptor") {
        return;
    }
    // Two segments, ours and another user's, trade names atomically (renameat2 with
    // RENAME_EXCHANGE) as fast as a thread can while this thread opens one of the names. A check
    // by name followed by a map of a second open could pass on ours and map theirs; a check of
    // the mapped descriptor cannot. Every open must give our queue or a refusal of theirs.
    let ours = small_queue();
    let mut squatter = as_nobody(&["squat", "queue", "666"]);
    let theirs = squatted_name(&mut squatter);
    let _cleanup = RemoveOnDrop(theirs.clone());
    let _cleanup_ours = RemoveOnDrop(ours.name().to_owned());
    let path = |n: &str| std::ffi::CString::new(format!("/dev/shm/{n}")).unwrap();
    let (a, b) = (path(ours.name()), path(&theirs));
    let stop = std::sync::atomic::AtomicBool::new(false);
    let me = std::process::id();
    let (mut mine, mut refused) = (0u32, 0u32);
    let mut swaps = 0u64;
    /// Stops the swapper however the opening loop ends (a failed assertion included), so that
    /// the scope can join it.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let swapper = s.spawn(|| {
            let mut swaps = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if !exchange(&a, &b) {
                    break; // reported below: `swaps` stays short
                }
                swaps += 1;
            }
            swaps
        });
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline || mine == 0 || refused == 0 {
            assert!(
                Instant::now() < deadline + Duration::from_secs(20),
                "the swaps never showed both segments: {mine} ours, {refused} refused"
            );
            match Segment::open(ours.name(), SegmentKind::Queue, Duration::ZERO) {
                Ok(seg) => {
                    assert_eq!(
                        seg.header().creator().pid,
                        me,
                        "another user's segment was mapped after the check passed"
                    );
                    mine += 1;
                }
                Err(Error::Permission { owner, .. }) => {
                    assert_eq!(owner, NOBODY);
                    refused += 1;
                }
                Err(e) => panic!("unexpected error while names swap: {e:?}"),
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swaps = swapper.join().unwrap();
    });
    eprintln!("{mine} opens of ours, {refused} refusals of theirs, {swaps} swaps");
    // Put the names back where they belong, so that each owner removes its own.
    if owner_and_mode(ours.name()).0 != 0 {
        assert!(exchange(&a, &b), "names put back");
    }
    assert_eq!(owner_and_mode(ours.name()).0, 0);
}

/// Swaps the files at paths `a` and `b` atomically (`renameat2` with `RENAME_EXCHANGE`);
/// whether it worked.
fn exchange(a: &std::ffi::CStr, b: &std::ffi::CStr) -> bool {
    // SAFETY: both paths are valid C strings for the call; renameat2 only renames.
    unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}
