//! Finding this machine's shmpipe segments and reading their headers without mapping them for
//! use (per platform).
//!
//! - Linux: the entries of `/dev/shm` named like ours, read with `pread` (a file there that is
//!   not a regular file is skipped; a FIFO cannot block us: opened non-blocking).
//! - macOS: POSIX shared memory cannot be listed, so the names come from the per-user registry
//!   ([`crate::registry`]); each is opened read-only and its header copied out of a read-only
//!   mapping of its first page. Entries whose segment is gone are dropped from the registry.
//! - Elsewhere (Windows): nothing is listed; see the README.

// Windows constructs none of these.
#![cfg_attr(
    not(any(target_os = "linux", target_os = "macos")),
    allow(dead_code, unused_imports)
)]

use crate::error::Result;
use crate::segment::{HeaderFields, SEGMENT_HEADER_SIZE};
use std::time::SystemTime;

/// One segment as found on the system.
pub(super) struct Entry {
    /// Its name (no OS prefix).
    pub name: String,
    /// Bytes it occupies (its size as a file or object).
    pub size: u64,
    /// The user owning it, where the platform says.
    pub uid: Option<u32>,
    /// Its inode, to match it with the processes holding it (Linux).
    pub inode: Option<u64>,
    /// When it was created: birth time where recorded, else last modification (Linux).
    pub created: Option<SystemTime>,
    /// Its first bytes.
    pub header: HeaderRead,
    /// For the record of a sealed memory (Linux), what it says; `None` for any other segment,
    /// or a record too short for its body.
    pub record: Option<RecordRead>,
}

/// What the record of a sealed memory says (Linux; read by `rendezvous::read_record`, without
/// joining it).
pub(super) struct RecordRead {
    /// The kind of segment in the memory (unchecked; 0 until the record is filled).
    pub target_kind: u32,
    /// The memory's length, header included (0 until the record is filled).
    pub target_len: u64,
    /// The pids of its live holders, sorted, each once.
    pub holders: Vec<u32>,
}

/// What reading a segment's header gave.
pub(super) enum HeaderRead {
    /// The full header, decoded.
    Fields(HeaderFields),
    /// The segment is shorter than a header (not sized yet, or not ours).
    TooSmall,
    /// The segment could not be opened or read (another user's, typically).
    Unreadable,
}

/// The segments whose name passes `wanted`.
pub(super) fn entries(wanted: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
    imp::entries(wanted)
}

#[cfg(target_os = "linux")]
mod imp {
    use super::{Entry, HeaderFields, HeaderRead, RecordRead, SystemTime, SEGMENT_HEADER_SIZE};
    use crate::error::{Error, Result};
    use crate::segment::{SegmentKind, MAGIC};
    use std::io::ErrorKind;
    use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};

    /// Where glibc and musl keep POSIX shared memory.
    pub const SHM_DIR: &str = "/dev/shm";

    pub fn entries(wanted: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
        let dir = match std::fs::read_dir(SHM_DIR) {
            Ok(dir) => dir,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(Error::Os {
                    op: "read /dev/shm",
                    code: e.raw_os_error().unwrap_or(0),
                })
            }
        };
        let mut out = Vec::new();
        for item in dir.flatten() {
            let Ok(name) = item.file_name().into_string() else {
                continue;
            };
            if !wanted(&name) {
                continue;
            }
            if let Some(entry) = read_entry(name) {
                out.push(entry);
            }
        }
        Ok(out)
    }

    /// The entry for `/dev/shm/<name>`, or `None` if it vanished or is not a regular file.
    fn read_entry(name: String) -> Option<Entry> {
        let path = std::path::Path::new(SHM_DIR).join(&name);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.file_type().is_file() {
            return None;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
            .open(&path);
        let file = match file {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(_) => {
                return Some(Entry {
                    name,
                    size: meta.len(),
                    uid: Some(meta.uid()),
                    inode: Some(meta.ino()),
                    created: created(&meta),
                    header: HeaderRead::Unreadable,
                    record: None,
                })
            }
        };
        // The metadata of what we opened (the name may have been replaced meanwhile).
        let meta = file.metadata().unwrap_or(meta);
        let mut bytes = [0u8; SEGMENT_HEADER_SIZE];
        let header = match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => HeaderRead::Fields(HeaderFields::decode(&bytes)),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => HeaderRead::TooSmall,
            Err(_) => HeaderRead::Unreadable,
        };
        let record = match &header {
            HeaderRead::Fields(h)
                if h.magic == MAGIC && h.kind == SegmentKind::SealedRecord as u32 =>
            {
                read_record(&file, meta.len())
            }
            _ => None,
        };
        Some(Entry {
            name,
            size: meta.len(),
            uid: Some(meta.uid()),
            inode: Some(meta.ino()),
            created: created(&meta),
            header,
            record,
        })
    }

    /// What the record `file`, `len` bytes long, says.
    fn read_record(file: &std::fs::File, len: u64) -> Option<RecordRead> {
        let bytes = crate::record::read_prefix(file, len)?;
        let info = crate::record::read_record(&bytes)?;
        Some(RecordRead {
            target_kind: info.target_kind,
            target_len: info.target_len,
            holders: info.holders,
        })
    }

    /// The birth time where the file system records it (tmpfs does, with `statx`), else the
    /// last modification: a segment is sized right after its creation, and writes through a
    /// mapping do not change it.
    fn created(meta: &std::fs::Metadata) -> Option<SystemTime> {
        meta.created().or_else(|_| meta.modified()).ok()
    }
}

#[cfg(target_os = "macos")]
mod imp {
    use super::{Entry, HeaderFields, HeaderRead, SEGMENT_HEADER_SIZE};
    use crate::error::{Error, Result};

    pub fn entries(wanted: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
        let names = crate::registry::names().map_err(|e| Error::Os {
            op: "read the segment registry",
            code: e.raw_os_error().unwrap_or(0),
        })?;
        Ok(names
            .into_iter()
            .filter(|n| wanted(n))
            .filter_map(read_entry)
            .collect())
    }

    fn read_entry(name: String) -> Option<Entry> {
        let id = std::ffi::CString::new(crate::name::os_id(&name)).ok()?;
        // SAFETY: `id` is a valid C string; the descriptor is closed below.
        let fd = unsafe { libc::shm_open(id.as_ptr(), libc::O_RDONLY) };
        if fd < 0 {
            let code = std::io::Error::last_os_error().raw_os_error();
            if code == Some(libc::ENOENT) {
                crate::registry::remove(&name); // stale: the segment is gone
                return None;
            }
            return Some(Entry {
                name,
                size: 0,
                uid: None,
                inode: None,
                created: None,
                header: HeaderRead::Unreadable,
                record: None,
            });
        }
        // SAFETY: `stat` is plain data, valid when zeroed.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is a valid out-parameter and `fd` an open descriptor.
        let stat_ok = unsafe { libc::fstat(fd, &mut st) } == 0;
        let size = if stat_ok { st.st_size.max(0) as u64 } else { 0 };
        let header = if !stat_ok {
            HeaderRead::Unreadable
        } else if size < SEGMENT_HEADER_SIZE as u64 {
            HeaderRead::TooSmall
        } else {
            copy_header(fd)
        };
        // SAFETY: `fd` is open and closed exactly once.
        unsafe { libc::close(fd) };
        Some(Entry {
            name,
            size,
            uid: stat_ok.then_some(st.st_uid),
            inode: None,
            created: None,
            header,
            record: None,
        })
    }

    fn copy_header(fd: libc::c_int) -> HeaderRead {
        // SAFETY: a read-only shared mapping of the first SEGMENT_HEADER_SIZE bytes of a segment
        // at least that long (checked by the caller); it is unmapped below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SEGMENT_HEADER_SIZE,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return HeaderRead::Unreadable;
        }
        let mut bytes = [0u8; SEGMENT_HEADER_SIZE];
        // SAFETY: the mapping is SEGMENT_HEADER_SIZE readable bytes; a volatile byte copy does
        // not assume the bytes are stable while the creator may still write them.
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = unsafe { std::ptr::read_volatile((ptr as *const u8).add(i)) };
        }
        // SAFETY: unmaps exactly the mapping made above.
        unsafe { libc::munmap(ptr, SEGMENT_HEADER_SIZE) };
        HeaderRead::Fields(HeaderFields::decode(&bytes))
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod imp {
    use super::Entry;
    use crate::error::Result;

    pub fn entries(_wanted: &dyn Fn(&str) -> bool) -> Result<Vec<Entry>> {
        Ok(Vec::new())
    }
}
