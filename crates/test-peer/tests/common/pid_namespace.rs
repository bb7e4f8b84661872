//! Tests that run processes, or themselves, in a PID namespace of their own.

use super::skip::{cannot_run, is_root};
use std::process::Command;

/// `unshare … CMD` running CMD as pid 1 of a new PID namespace (with its own /proc), killed with
/// the `unshare` process. Where this machine does not allow it, the test fails, or with
/// `SHMPIPE_TEST_ALLOW_SKIP=1` gets `None` (see `common/skip.rs`).
pub fn in_new_pid_namespace(program: &str, args: &[&str]) -> Option<Command> {
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

/// Set in the inner run of [`rerun_in_own_pid_namespace`].
pub const INNER: &str = "SHMPIPE_TEST_IN_OWN_PID_NAMESPACE";

/// Runs the rest of the calling test inside a fresh PID namespace: returns `true` there, and
/// `false` in the outer run (after running the inner one and checking it passed).
pub fn rerun_in_own_pid_namespace(test: &str) -> bool {
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
    eprintln!("{text}");
    false
}
