//! The bytes of a sealed memory's record ([`crate::rendezvous`]): its layout, and the readers
//! that judge a record from a copy of its bytes or from a signal handler, without mapping it.
//!
//! After the segment header: a [`RecordBody`] (what memory the record stands for) and
//! `slot_count` [`Slot`]s, one per holding process (`word` = pid << 32 | its descriptor's
//! number, 0 when free; `start` = the process's start time).

use crate::header::{SegmentKind, MAGIC, SEGMENT_HEADER_SIZE};
use crate::process::ProcessIdentity;

/// The kernel's flag of a process being torn down (`include/linux/sched.h`).
const PF_EXITING: u32 = 0x4;
use std::sync::atomic::{AtomicU32, AtomicU64};

/// Record state: holders may enter.
pub(crate) const OPEN: u32 = 0;
/// Record state: a leaver found no live holder and is about to remove the record.
pub(crate) const REMOVING: u32 = 1;
/// A slot's descriptor half while its holder is still writing the slot.
pub(crate) const WRITING: u32 = u32::MAX;

/// The record's fixed part, after the segment header.
#[repr(C)]
pub(crate) struct RecordBody {
    pub(crate) target_kind: AtomicU32,
    pub(crate) state: AtomicU32,
    pub(crate) target_len: AtomicU64,
    pub(crate) dev: AtomicU64,
    pub(crate) ino: AtomicU64,
    pub(crate) slot_count: AtomicU32,
    _pad: AtomicU32,
    _reserved: [AtomicU64; 3],
}

/// One holder: `word` is `pid << 32 | fd` (0: free; fd [`WRITING`]: being written).
#[repr(C)]
pub(crate) struct Slot {
    pub(crate) word: AtomicU64,
    pub(crate) start: AtomicU64,
}

pub(crate) const BODY_SIZE: usize = std::mem::size_of::<RecordBody>();
pub(crate) const SLOT_SIZE: usize = std::mem::size_of::<Slot>();
const _: () = assert!(BODY_SIZE == 64 && SLOT_SIZE == 16);

/// The body size of a record with at least `holders` slots, filling its last page.
pub(crate) fn record_body_size(holders: u32) -> u64 {
    let page = 4096u64;
    let min = (SEGMENT_HEADER_SIZE + BODY_SIZE) as u64 + u64::from(holders) * SLOT_SIZE as u64;
    min.next_multiple_of(page) - SEGMENT_HEADER_SIZE as u64
}

pub(crate) fn pack(pid: u32, fd: u32) -> u64 {
    u64::from(pid) << 32 | u64::from(fd)
}

pub(crate) fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// The most of a record that is read or mapped when judging it from outside ([`read_record`],
/// [`remove_if_unheld_by_name`]): a record of the most holders a queue has room for is about
/// 66 KiB; a longer file's tail is not looked at, so that a hostile one cannot make a reader map
/// or scan more.
pub(crate) const MAX_RECORD_LEN: usize = 256 << 10;

/// What a record says about the memory it names, read from a copy of its bytes
/// ([`read_record`]), without joining it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RecordInfo {
    /// The kind of segment in the memory (a [`SegmentKind`] value, unchecked; 0 until filled).
    pub target_kind: u32,
    /// The memory's length, header included (0 until filled).
    pub target_len: u64,
    /// The pids of its live holders (pid and start time), sorted, each once.
    pub holders: Vec<u32>,
}

/// Reads the record whose first bytes (header included, up to [`MAX_RECORD_LEN`]) are
/// `bytes`: `None` if they are too short for a record's body. Every field is bounds-checked
/// against `bytes`, so a record claiming any number of slots, or holding any words, reads as
/// what fits; a holder is live only if its pid runs with the start time its slot records.
pub(crate) fn read_record(bytes: &[u8]) -> Option<RecordInfo> {
    use std::mem::offset_of;
    let body = bytes.get(SEGMENT_HEADER_SIZE..SEGMENT_HEADER_SIZE + BODY_SIZE)?;
    let mut holders: Vec<u32> = slot_words(bytes)?
        .filter(|&(word, start)| holder_alive(word, start))
        .map(|(word, _)| unpack(word).0)
        .collect();
    holders.sort_unstable();
    holders.dedup();
    Some(RecordInfo {
        target_kind: u32_at(body, offset_of!(RecordBody, target_kind)),
        target_len: u64_at(body, offset_of!(RecordBody, target_len)),
        holders,
    })
}

pub(crate) fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap())
}

pub(crate) fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The `(word, start)` of every slot of the record whose first bytes are `bytes` (up to
/// [`MAX_RECORD_LEN`]), as many as it claims and as fit; `None` if they are too short for a body.
pub(crate) fn slot_words(bytes: &[u8]) -> Option<impl Iterator<Item = (u64, u64)> + '_> {
    use std::mem::offset_of;
    let bytes = &bytes[..bytes.len().min(MAX_RECORD_LEN)];
    let body = bytes.get(SEGMENT_HEADER_SIZE..SEGMENT_HEADER_SIZE + BODY_SIZE)?;
    let room = (bytes.len() - SEGMENT_HEADER_SIZE - BODY_SIZE) / SLOT_SIZE;
    let count = (u32_at(body, offset_of!(RecordBody, slot_count)) as usize).min(room);
    let slots = &bytes[SEGMENT_HEADER_SIZE + BODY_SIZE..][..count * SLOT_SIZE];
    Some(slots.chunks_exact(SLOT_SIZE).map(|s| {
        (
            u64_at(s, offset_of!(Slot, word)),
            u64_at(s, offset_of!(Slot, start)),
        )
    }))
}

/// The first `len` bytes of `file` (a record `len` bytes long), at most [`MAX_RECORD_LEN`].
pub(crate) fn read_prefix(file: &std::fs::File, len: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    let mut bytes = vec![0u8; len.min(MAX_RECORD_LEN)];
    let mut filled = 0;
    while filled < bytes.len() {
        match file.read_at(&mut bytes[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    bytes.truncate(filled);
    Some(bytes)
}

/// Whether a slot's `word` and `start` name a live process (a slot still being written counts as alive if its pid runs at all).
pub(crate) fn holder_alive(word: u64, start: u64) -> bool {
    if word == 0 {
        return false;
    }
    let (pid, fd) = unpack(word);
    if pid == 0 {
        return false;
    }
    if fd == WRITING || start == 0 {
        return crate::process::start_time(pid).is_some();
    }
    ProcessIdentity { pid, start }.is_staying()
}

/// Removes the record at `path` (`/dev/shm/<name>`, NUL-terminated) unless a live process other
/// than this one holds a slot in it: what a signal handler does for the records of this dying
/// process: it clears its own slots first (`pwrite`), then looks for other holders.
/// Async-signal-safe: stack buffers, `open`, `pread`, `pwrite`, `read`, `getpid`, `unlink` and
/// `close` only. A holder counts as live if its pid runs and is neither a zombie nor exiting
/// ([`runs_in_handler`]; the start time is not compared): a recycled pid keeps the record, for
/// the sweep to remove.
pub(crate) fn remove_if_unheld_in_handler(path: *const libc::c_char) {
    // SAFETY: `path` is a NUL-terminated string on the caller's stack.
    let fd = unsafe { libc::open(path, libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW) };
    if fd < 0 {
        return;
    }
    let mut buf = [0u8; 4096];
    let read_at = |buf: &mut [u8], at: usize| -> usize {
        // SAFETY: `fd` is open, `buf` is a writable stack buffer of the given length.
        let n = unsafe { libc::pread(fd, buf.as_mut_ptr().cast(), buf.len(), at as libc::off_t) };
        usize::try_from(n).unwrap_or(0)
    };
    let fixed = SEGMENT_HEADER_SIZE + BODY_SIZE;
    let mut held = true;
    if read_at(&mut buf[..fixed], 0) == fixed {
        let u64_at = |b: &[u8], at: usize| u64::from_ne_bytes(b[at..at + 8].try_into().unwrap());
        let u32_at = |b: &[u8], at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let is_record = u64_at(&buf, 0) == MAGIC
            && u32_at(&buf, crate::header::KIND_OFFSET) == SegmentKind::SealedRecord as u32;
        let slots = u32_at(
            &buf,
            SEGMENT_HEADER_SIZE + std::mem::offset_of!(RecordBody, slot_count),
        ) as usize;
        if is_record {
            // SAFETY: getpid has no preconditions and is async-signal-safe.
            let me = unsafe { libc::getpid() } as u32;
            let end = fixed.saturating_add(slots.saturating_mul(SLOT_SIZE));
            // First leave (clear our own slots), then look for other holders: a holder leaving
            // at the same time then sees at least one of the two gone.
            let mut at = fixed;
            while at < end {
                let want = (end - at).min(buf.len());
                let n = read_at(&mut buf[..want], at);
                if n < SLOT_SIZE {
                    break;
                }
                for (i, slot) in buf[..n - n % SLOT_SIZE].chunks_exact(SLOT_SIZE).enumerate() {
                    if unpack(u64_at(slot, 0)).0 == me {
                        let zero = [0u8; 8];
                        let offset = (at + i * SLOT_SIZE) as libc::off_t;
                        // SAFETY: `fd` is open for writing; `zero` is an 8-byte stack buffer;
                        // pwrite is async-signal-safe. Only our own slot's word is written.
                        unsafe { libc::pwrite(fd, zero.as_ptr().cast(), 8, offset) };
                    }
                }
                at += n - n % SLOT_SIZE;
            }
            held = false;
            let mut at = fixed;
            'chunks: while at < end && !held {
                let want = (end - at).min(buf.len());
                let n = read_at(&mut buf[..want], at);
                if n < SLOT_SIZE {
                    break;
                }
                for slot in buf[..n - n % SLOT_SIZE].chunks_exact(SLOT_SIZE) {
                    let (pid, _) = unpack(u64_at(slot, 0));
                    if pid != 0 && pid != me && runs_in_handler(pid) {
                        held = true;
                        break 'chunks;
                    }
                }
                at += n - n % SLOT_SIZE;
            }
        }
    }
    // SAFETY: `fd` is the descriptor opened above; close is async-signal-safe.
    unsafe { libc::close(fd) };
    if !held {
        // SAFETY: `path` is NUL-terminated; unlink is async-signal-safe.
        unsafe { libc::unlink(path) };
    }
}

/// Whether process `pid` exists and is neither a zombie nor being torn down, from
/// `/proc/<pid>/stat`, without allocating (for [`remove_if_unheld_in_handler`]).
fn runs_in_handler(pid: u32) -> bool {
    let mut path = *b"/proc/\0\0\0\0\0\0\0\0\0\0/stat\0";
    let mut digits = [0u8; 10];
    let (mut n, mut rest) = (0, pid);
    loop {
        digits[n] = b'0' + (rest % 10) as u8;
        n += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut at = 6;
    for i in (0..n).rev() {
        path[at] = digits[i];
        at += 1;
    }
    path[at..at + 6].copy_from_slice(b"/stat\0");
    // SAFETY: `path` is NUL-terminated (written just above) and lives on our stack.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    let mut buf = [0u8; 512];
    // SAFETY: `fd` is open and `buf` a writable stack buffer of its length.
    let len = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: `fd` was opened above; close is async-signal-safe.
    unsafe { libc::close(fd) };
    let text = &buf[..usize::try_from(len).unwrap_or(0)];
    // The fields follow the last ')' (the command name may hold any bytes): the state, then
    // ppid, pgrp, session, tty, tpgid and the flags. A zombie, a dead task, or one the kernel is
    // tearing down (`PF_EXITING`) is gone.
    let Some(close) = text.iter().rposition(|&b| b == b')') else {
        return false;
    };
    let mut fields = text[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let state = fields.next().and_then(|f| f.first().copied());
    let flags = fields.nth(5).and_then(|f| {
        f.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit()
                .then(|| n.wrapping_mul(10).wrapping_add(u32::from(d - b'0')))
        })
    });
    match (state, flags) {
        (Some(b'Z' | b'X') | None, _) | (_, None) => false,
        (_, Some(flags)) => flags & PF_EXITING == 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_process_stays_and_a_zombie_does_not() {
        let me = ProcessIdentity::current();
        assert!(runs_in_handler(me.pid));
        assert!(me.is_staying());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let zombie = ProcessIdentity {
            pid: child.id(),
            start: crate::process::start_time(child.id()).unwrap_or(0),
        };
        let stat = format!("/proc/{}/stat", zombie.pid);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains(") Z ")) {
            assert!(
                std::time::Instant::now() < deadline,
                "the child never exited"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!runs_in_handler(zombie.pid), "a zombie holds nothing");
        assert!(!zombie.is_staying());
        child.wait().unwrap();
        assert!(
            !runs_in_handler(zombie.pid),
            "a reaped process holds nothing"
        );
    }
}
