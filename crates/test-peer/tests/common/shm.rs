//! What is in `/dev/shm`, read without opening segments (a segment whose creator died before
//! publishing it cannot be opened, but it still has to be found).

use std::collections::BTreeSet;
use std::path::Path;

/// Names of our segments in `/dev/shm`.
pub fn our_segments() -> BTreeSet<String> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return BTreeSet::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with("shmpipe_"))
        .collect()
}

/// The creator pid in a segment's header, read from the file, or `None` while no header has
/// been written.
pub fn creator_pid_on_disk(name: &str) -> Option<u32> {
    let bytes = std::fs::read(Path::new("/dev/shm").join(name)).ok()?;
    let header = bytes.get(..32)?;
    (header[..8] == shmpipe_core::MAGIC.to_le_bytes())
        .then(|| u32::from_le_bytes(header[24..28].try_into().unwrap()))
}

/// Removes the segments `pid` created, as `shmpipe clean` does once their creator is dead;
/// returns how many there were.
pub fn remove_created_by(pid: u32) -> usize {
    our_segments()
        .into_iter()
        .filter(|name| creator_pid_on_disk(name) == Some(pid))
        .filter(|name| std::fs::remove_file(Path::new("/dev/shm").join(name)).is_ok())
        .count()
}
