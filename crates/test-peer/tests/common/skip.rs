//! What a test does when this machine cannot run it (not root, a tool missing): it fails, unless
//! `SHMPIPE_TEST_ALLOW_SKIP=1` is set. `cargo test` shows nothing a passing test prints, so a
//! test that only printed why it did not run would pass unseen; CI runs as root, where every
//! such test must run.

/// The environment variable that lets a test that cannot run here pass after saying why.
pub const ALLOW_SKIP: &str = "SHMPIPE_TEST_ALLOW_SKIP";

/// Call where the test cannot run, with the reason; the caller returns right after. Panics
/// (failing the test) unless `SHMPIPE_TEST_ALLOW_SKIP=1`, in which case it prints the reason.
pub fn cannot_run(reason: &str) {
    if std::env::var_os(ALLOW_SKIP).is_some_and(|v| v == "1") {
        eprintln!("SKIPPED ({ALLOW_SKIP}=1): {reason}");
    } else {
        panic!(
            "this test cannot run here: {reason}. CI runs it (as root, on Linux); set \
             {ALLOW_SKIP}=1 to let it pass here without running"
        );
    }
}

/// Whether this process runs as root (effective uid 0).
#[cfg(unix)]
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
