//! The one error type of the core: every failure is a variant, never a string or a panic.

use std::fmt;

/// Why a segment was rejected when it was opened or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadSegmentReason {
    /// The segment is smaller than its own header says it must be.
    TooSmall,
    /// The magic number is not shmpipe's.
    BadMagic,
    /// The segment was written by an incompatible layout version.
    IncompatibleVersion,
    /// The segment holds another kind of structure (a queue opened as a blob, say).
    WrongKind,
    /// The creator never published the ready flag.
    NotReady,
    /// A size, offset or count inside the segment is out of bounds or inconsistent.
    Corrupt,
}

impl fmt::Display for BadSegmentReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooSmall => "segment is smaller than its header requires",
            Self::BadMagic => "magic number does not match",
            Self::IncompatibleVersion => "incompatible layout version",
            Self::WrongKind => "segment holds another kind of structure",
            Self::NotReady => "segment was never marked ready by its creator",
            Self::Corrupt => "segment contents are out of bounds or inconsistent",
        })
    }
}

/// Every failure the core reports.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A wait ran past its timeout: the queue stayed full (send) or empty (receive).
    Timeout,
    /// The other side closed cleanly (or this handle was closed).
    Closed,
    /// The other side died without closing: no live peer is left to complete the operation.
    PeerGone,
    /// The wait was interrupted through a [`crate::CancelToken`].
    Interrupted,
    /// Shared memory could not be reserved (for example `/dev/shm` is full).
    NoSpace {
        /// Bytes that were asked for.
        requested: u64,
    },
    /// The segment is not a valid shmpipe segment of the expected kind and version.
    BadSegment {
        /// The segment's name.
        name: String,
        /// What was wrong.
        reason: BadSegmentReason,
    },
    /// A segment found under the expected name is not ours: another user owns it, or its mode
    /// lets group or others in. Nothing of it was read.
    Permission {
        /// The segment's name.
        name: String,
        /// The uid that owns it.
        owner: u32,
        /// Its mode (file type and permission bits, as `fstat` reports them).
        mode: u32,
        /// Our effective uid, which must own every segment we attach.
        euid: u32,
    },
    /// A size does not fit this platform (for example more than `usize` bytes).
    TooLarge {
        /// The size that was asked for.
        requested: u64,
        /// The largest size this platform or structure allows.
        limit: u64,
    },
    /// An argument is out of its documented range.
    InvalidArgument {
        /// Which argument, as the JavaScript API names it (`maxSenders`, not `max_producers`).
        name: &'static str,
        /// What the argument must satisfy.
        expected: &'static str,
    },
    /// A segment of that name already exists (creation is exclusive).
    AlreadyExists {
        /// The segment's name.
        name: String,
    },
    /// No segment of that name exists.
    NotFound {
        /// The segment's name.
        name: String,
    },
    /// The queue already has a live consumer.
    ConsumerTaken,
    /// Every producer slot of the queue is in use.
    TooManyProducers {
        /// The queue's producer slot count.
        max: u32,
    },
    /// An operating-system call failed.
    Os {
        /// The operation that failed.
        op: &'static str,
        /// The OS error code.
        code: i32,
    },
    /// An unlock through a handle that does not hold the lock.
    LockNotHeld,
    /// A lock through a handle that already holds the lock or is waiting for it (the lock is not
    /// reentrant: waiting would deadlock).
    AlreadyLocked,
    /// The operation is not available on this platform.
    Unsupported {
        /// The operation.
        op: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Closed => f.write_str("the other side closed"),
            Self::PeerGone => f.write_str("the peer process died"),
            Self::Interrupted => f.write_str("the wait was interrupted"),
            Self::NoSpace { requested } => {
                write!(f, "no space in shared memory for {requested} bytes")
            }
            Self::BadSegment { name, reason } => write!(f, "bad segment '{name}': {reason}"),
            Self::Permission {
                name,
                owner,
                mode,
                euid,
            } => {
                let whose = if owner == euid {
                    format!("owned by this user (uid {owner}) but open to other users")
                } else {
                    format!("owned by uid {owner}, not by this process's uid {euid}")
                };
                write!(
                    f,
                    "refused to attach segment '{name}': it is {whose} (mode {:04o}); shmpipe \
                     attaches only segments of its own user with mode 0600, since another user \
                     could read or truncate it. Check that the name is right and that the \
                     creator runs as the same user; if the segment is not yours, remove it (as \
                     its owner or root) or ask who made it",
                    mode & 0o7777
                )
            }
            Self::TooLarge { requested, limit } => {
                write!(f, "size {requested} is larger than the limit {limit}")
            }
            Self::InvalidArgument { name, expected } => write!(f, "{name} must be {expected}"),
            Self::AlreadyExists { name } => write!(f, "segment '{name}' already exists"),
            Self::NotFound { name } => write!(f, "segment '{name}' does not exist"),
            Self::ConsumerTaken => f.write_str("the pipe already has a live receiver"),
            Self::TooManyProducers { max } => {
                write!(
                    f,
                    "all {max} sender slots of the pipe are in use (maxSenders)"
                )
            }
            Self::Os { op, code } => write!(f, "{op} failed with OS error {code}"),
            Self::LockNotHeld => f.write_str("this handle does not hold the lock"),
            Self::AlreadyLocked => {
                f.write_str("this handle already holds the lock or is waiting for it")
            }
            Self::Unsupported { op } => write!(f, "{op} is not supported on this platform"),
        }
    }
}

impl std::error::Error for Error {}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The last OS error, attributed to `op`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn last_os(op: &'static str) -> Self {
        Self::Os {
            op,
            code: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }
}
