//! The header every shmpipe segment starts with, and what a segment's body holds.
//!
//! A 128-byte [`SegmentHeader`] at offset 0 (so the body is aligned for line-padded structures):
//! magic number, layout version, kind, body size, creator (pid, start time, PID namespace) and
//! the ready flag the creator publishes last.

use crate::process::ProcessIdentity;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// `b"SHMPIPE\0"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMPIPE\0");

/// Size of [`SegmentHeader`] in bytes; the body starts at this offset.
pub const SEGMENT_HEADER_SIZE: usize = 128;

/// What a segment's body holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum SegmentKind {
    /// A message queue ([`crate::Queue`]).
    Queue = 1,
    /// One large message that did not fit a queue's data area.
    Blob = 2,
    /// A named shared array.
    Array = 3,
    /// The named record through which a sealed segment is found ([`crate::Backing::Memfd`]):
    /// it names the memory and lists the processes holding it.
    SealedRecord = 4,
}

impl SegmentKind {
    pub(crate) fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Queue),
            2 => Some(Self::Blob),
            3 => Some(Self::Array),
            4 => Some(Self::SealedRecord),
            _ => None,
        }
    }
}

/// The header every shmpipe segment starts with.
#[repr(C)]
pub struct SegmentHeader {
    pub(crate) magic: AtomicU64,
    pub(crate) layout_version: AtomicU32,
    pub(crate) kind: AtomicU32,
    /// The body size the creator asked for (Windows may round the mapping up).
    pub(crate) body_size: AtomicU64,
    pub(crate) creator_pid: AtomicU32,
    pub(crate) ready: AtomicU32,
    pub(crate) creator_start: AtomicU64,
    /// The creator's PID namespace ([`crate::process::pid_namespace`]; 0: not recorded). Added
    /// in a formerly reserved (zero) word, so older segments of the same layout read as "unknown".
    pub(crate) creator_pid_ns: AtomicU64,
    /// A word the body's kind may use: a blob's reuse state ([`crate::blob`]).
    pub(crate) kind_word: AtomicU64,
    _reserved: [AtomicU64; 9],
}

const _: () = assert!(std::mem::size_of::<SegmentHeader>() == SEGMENT_HEADER_SIZE);

/// Where the kind word lies in a header (for readers that cannot map it: a signal handler).
#[cfg(target_os = "linux")]
pub(crate) const KIND_OFFSET: usize = std::mem::offset_of!(SegmentHeader, kind);

/// Byte offset of [`SegmentHeader::kind_word`] (a blob's state) in a segment.
#[cfg(target_os = "linux")]
pub(crate) const KIND_WORD_OFFSET: usize = std::mem::offset_of!(SegmentHeader, kind_word);

impl SegmentHeader {
    /// The creator process recorded in the header.
    pub fn creator(&self) -> ProcessIdentity {
        ProcessIdentity {
            pid: self.creator_pid.load(Ordering::Relaxed),
            start: self.creator_start.load(Ordering::Relaxed),
        }
    }

    /// The body size the creator asked for.
    pub fn body_size(&self) -> u64 {
        self.body_size.load(Ordering::Relaxed)
    }

    /// The creator's PID namespace ([`crate::pid_namespace`]), 0 if not recorded.
    pub fn creator_pid_namespace(&self) -> u64 {
        self.creator_pid_ns.load(Ordering::Relaxed)
    }

    /// The header's fields as they read now (the ready flag with Acquire ordering).
    pub(crate) fn fields(&self) -> HeaderFields {
        HeaderFields {
            magic: self.magic.load(Ordering::Relaxed),
            layout_version: self.layout_version.load(Ordering::Relaxed),
            kind: self.kind.load(Ordering::Relaxed),
            body_size: self.body_size(),
            creator: self.creator(),
            creator_pid_ns: self.creator_pid_namespace(),
            ready: self.ready.load(Ordering::Acquire) == 1,
        }
    }

    /// The word the body's kind may use (a blob's reuse state); 0 in a new segment.
    pub(crate) fn kind_word(&self) -> &AtomicU64 {
        &self.kind_word
    }
}

#[cfg(all(test, target_os = "linux"))]
impl SegmentHeader {
    /// Rewrites the header through `change` (tests of code that judges headers).
    pub(crate) fn forge(&self, change: impl FnOnce(&mut HeaderFields)) {
        let mut f = self.fields();
        change(&mut f);
        self.magic.store(f.magic, Ordering::Relaxed);
        self.layout_version
            .store(f.layout_version, Ordering::Relaxed);
        self.kind.store(f.kind, Ordering::Relaxed);
        self.body_size.store(f.body_size, Ordering::Relaxed);
        self.creator_pid.store(f.creator.pid, Ordering::Relaxed);
        self.creator_start.store(f.creator.start, Ordering::Relaxed);
        self.creator_pid_ns
            .store(f.creator_pid_ns, Ordering::Relaxed);
        self.ready.store(f.ready as u32, Ordering::Release);
    }
}

/// The header's fields decoded from a copy of a segment's first bytes: how the inventory reads
/// segments it does not map. Any bit pattern decodes; judging it is the caller's job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeaderFields {
    pub magic: u64,
    pub layout_version: u32,
    pub kind: u32,
    pub body_size: u64,
    pub creator: ProcessIdentity,
    pub creator_pid_ns: u64,
    pub ready: bool,
}

// Windows lists no segments (see `inventory`), so nothing decodes headers there.
#[cfg_attr(not(any(target_os = "linux", target_os = "macos")), allow(dead_code))]
impl HeaderFields {
    /// Whether nothing was written yet: every field zero (a creator that died before writing
    /// its header).
    pub fn is_unwritten(&self) -> bool {
        self.magic == 0
            && self.layout_version == 0
            && self.kind == 0
            && self.body_size == 0
            && self.creator.pid == 0
            && self.creator.start == 0
            && self.creator_pid_ns == 0
            && !self.ready
    }

    /// Decodes `bytes` (native byte order, as the creator's atomics wrote them).
    pub fn decode(bytes: &[u8; SEGMENT_HEADER_SIZE]) -> Self {
        use std::mem::offset_of;
        let u64_at = |at: usize| u64::from_ne_bytes(bytes[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap());
        Self {
            magic: u64_at(offset_of!(SegmentHeader, magic)),
            layout_version: u32_at(offset_of!(SegmentHeader, layout_version)),
            kind: u32_at(offset_of!(SegmentHeader, kind)),
            body_size: u64_at(offset_of!(SegmentHeader, body_size)),
            creator: ProcessIdentity {
                pid: u32_at(offset_of!(SegmentHeader, creator_pid)),
                start: u64_at(offset_of!(SegmentHeader, creator_start)),
            },
            creator_pid_ns: u64_at(offset_of!(SegmentHeader, creator_pid_ns)),
            ready: u32_at(offset_of!(SegmentHeader, ready)) == 1,
        }
    }
}
