//! Another user's processes for the tests: `shmpipe-foreign-peer` run as `nobody` (uid and gid
//! 65534) through `setpriv`. The tests that need this need root; without root or `setpriv` they
//! fail, unless `SHMPIPE_TEST_ALLOW_SKIP=1` says to skip them (see `skip.rs`).

use crate::common::peer::Peer;
use std::process::Command;

/// The peer binary for these roles.
pub const FOREIGN: &str = env!("CARGO_BIN_EXE_shmpipe-foreign-peer");

/// The uid the other user's processes run as.
pub const NOBODY: u32 = 65534;

/// Whether the test can run as root with `setpriv`; panics (fails the test) when it cannot,
/// unless skipping was asked for.
pub fn root_available(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let setpriv = Command::new("setpriv").arg("--version").output().is_ok();
    if root && setpriv {
        return true;
    }
    let why = if root {
        "setpriv (util-linux) is not installed"
    } else {
        "it must run as root, to play another user (nobody)"
    };
    crate::common::skip::cannot_run(&format!("{test}: {why}"));
    false
}

/// `shmpipe-foreign-peer ARGS` run as `nobody`.
pub fn as_nobody(args: &[&str]) -> Peer {
    let mut cmd = Command::new("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", FOREIGN])
        .args(args);
    Peer::start(cmd)
}

/// `shmpipe-foreign-peer ARGS` run as this user.
pub fn as_me(args: &[&str]) -> Peer {
    Peer::run_program(FOREIGN, args)
}

/// The name a `squat` role printed.
pub fn squatted_name(peer: &mut Peer) -> String {
    let line = peer.line();
    line.strip_prefix("name ")
        .unwrap_or_else(|| panic!("squatter said {line:?}"))
        .to_owned()
}

/// The owner uid and permission bits of `/dev/shm/name`.
pub fn owner_and_mode(name: &str) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(std::path::Path::new("/dev/shm").join(name)).unwrap();
    (m.uid(), m.mode() & 0o7777)
}
