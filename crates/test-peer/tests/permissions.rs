//! Segments are private to their user: created with mode 0600, so a process of another user can
//! neither open, read nor remove them. The other user is `nobody` (uid and gid 65534), entered
//! with `setpriv`; the test fails when not run as root or when `setpriv` is missing, unless
//! `SHMPIPE_TEST_ALLOW_SKIP=1` (see `common/skip.rs`).

#![cfg(target_os = "linux")]

mod common;

use common::peer::{shm_exists, PEER};
use common::skip::{cannot_run, is_root};
use shmpipe_core::{Queue, QueueOptions, WaitOptions};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

fn queue() -> Queue {
    Queue::create(&QueueOptions {
        capacity: 4,
        bytes: 4096,
        max_producers: 2,
    })
    .unwrap()
}

/// Runs `shmpipe-peer try-access NAME`, as `nobody` if `as_nobody`; returns its lines.
fn try_access(name: &str, as_nobody: bool) -> Vec<String> {
    let mut cmd = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", PEER]);
        c
    } else {
        Command::new(PEER)
    };
    let out = cmd.args(["try-access", name]).output().unwrap();
    assert!(
        out.status.success(),
        "{out:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn another_user_can_neither_open_read_nor_remove_a_segment() {
    if !is_root() {
        return cannot_run("needs root, to run a process as another user (nobody)");
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        return cannot_run("setpriv (util-linux) is not installed");
    }
    let q = queue();
    let mode = std::fs::metadata(format!("/dev/shm/{}", q.name()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");

    let lines = try_access(q.name(), true);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], "uid 65534", "the probe must run as nobody");
    // EACCES: the segment exists, and its mode keeps the other user out.
    assert!(
        lines[1].starts_with("open error Os") && lines[1].contains("code: 13"),
        "{lines:?}"
    );
    assert_eq!(lines[2], "read error PermissionDenied", "{lines:?}");
    // /dev/shm is sticky: only the owner (or root) may remove a name.
    assert!(lines[3].starts_with("remove error Os"), "{lines:?}");
    assert!(shm_exists(q.name()));

    // Still intact and working for its owner.
    let mut p = q.producer().unwrap();
    let mut c = q.consumer().unwrap();
    p.send(b"still mine", &WaitOptions::forever()).unwrap();
    let m = c
        .recv(&WaitOptions::timeout(Duration::from_secs(1)))
        .unwrap();
    assert_eq!(m.as_slice(), b"still mine");

    // The control: the same probe as this user gets through, so the refusals above are the
    // permissions' doing (it removes that queue's name, hence a queue of its own).
    let other = queue();
    let lines = try_access(other.name(), false);
    assert_eq!(
        &lines[1..],
        ["open ok", &lines[2], "remove ok"],
        "{lines:?}"
    );
    assert!(lines[2].starts_with("read ok"), "{lines:?}");
    assert!(!shm_exists(other.name()));
}
