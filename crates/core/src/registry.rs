//! A per-user directory of segment names, for macOS, where POSIX shared memory cannot be
//! enumerated (Linux lists `/dev/shm`).
//!
//! `$TMPDIR/shmpipe/` (per user on macOS, mode 0700) holds one empty file per segment name: made
//! when a segment is created, removed when any process of the user unlinks the name. Best effort:
//! a process killed by SIGKILL, or an unlink by another user, leaves a stale entry, which the
//! inventory drops when it finds the name gone. The signal handler does not touch it (file
//! removal needs the directory's path, which it cannot build without allocating); the inventory
//! then drops those entries too.
//!
//! On every other platform these functions do nothing.

#[cfg(target_os = "macos")]
mod imp {
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        std::env::temp_dir().join("shmpipe")
    }

    pub fn add(name: &str) {
        use std::os::unix::fs::DirBuilderExt;
        let dir = dir();
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
        let _ = std::fs::File::create(dir.join(name));
    }

    pub fn remove(name: &str) {
        let _ = std::fs::remove_file(dir().join(name));
    }

    pub fn names() -> std::io::Result<Vec<String>> {
        match std::fs::read_dir(dir()) {
            Ok(entries) => Ok(entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(not(target_os = "macos"))]
mod imp {
    pub fn add(_name: &str) {}

    pub fn remove(_name: &str) {}

    #[allow(dead_code)]
    pub fn names() -> std::io::Result<Vec<String>> {
        Ok(Vec::new())
    }
}

/// Records that a segment named `name` now exists (macOS only).
pub(crate) fn add(name: &str) {
    imp::add(name)
}

/// Records that the name `name` was removed (macOS only).
pub(crate) fn remove(name: &str) {
    imp::remove(name)
}

/// The names recorded (macOS; empty elsewhere).
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
pub(crate) fn names() -> std::io::Result<Vec<String>> {
    imp::names()
}
