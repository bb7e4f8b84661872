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
    /// A message's memory is gone: its sender held it (sealed memory sent before any receiver
    /// registered) and died before a receiver mapped it.
    SenderDied,
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
            Self::SenderDied => {
                "the message's sender died before any receiver registered to take its memory"
            }
        })
    }
}

/// The limit that stopped a reservation of shared memory ([`Error::NoSpace`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpaceLimit {
    /// The shared-memory filesystem (`/dev/shm` on Linux, a tmpfs of fixed size) is full.
    SharedMemoryFilesystem,
    /// A cgroup's memory limit, this process's own or an ancestor's, would be exceeded.
    Cgroup {
        /// The file that sets the limit (`/sys/fs/cgroup/…/memory.max`, or
        /// `…/memory.limit_in_bytes` where the memory controller is on cgroup v1).
        file: String,
        /// The limit in bytes.
        max: u64,
        /// The bytes the cgroup used when the reservation was checked.
        current: u64,
    },
    /// The machine's memory would be exceeded.
    Machine {
        /// Bytes available when the reservation was checked (`MemAvailable` plus `SwapFree` of
        /// `/proc/meminfo`).
        available: u64,
    },
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
    /// Shared memory could not be reserved: `limit` leaves less room than the segment needs
    /// (the shared-memory filesystem, `/dev/shm` on Linux: made with `Error::no_space`; a
    /// cgroup's memory limit or the machine's available memory: found before reserving).
    NoSpace {
        /// Bytes the segment needed.
        needed: u64,
        /// Bytes free under `limit` when the reservation failed, if known (for the
        /// shared-memory filesystem, `statvfs` of `/dev/shm` on Linux).
        free: Option<u64>,
        /// The limit that has no room for the segment.
        limit: SpaceLimit,
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
    /// The queue's consumer was closed: the queue takes no other consumer (only the role of a
    /// consumer whose process died is taken over), nor new producers, since nothing sent would be
    /// received.
    ConsumerClosed,
    /// The stream has ended: the consumer found every producer closed and every message read.
    /// The queue takes no new producer after that.
    StreamEnded,
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
    /// The name stands for sealed memory ([`crate::Backing::Memfd`]) that this process cannot
    /// reach: its holders are alive, but not visible in this process's `/proc` (another PID
    /// namespace) or not open to it (`denied`: another user, a non-dumpable process).
    Unreachable {
        /// The segment's name.
        name: String,
        /// Whether the kernel refused access (rather than showing no holder at all).
        denied: bool,
    },
    /// Every holder slot of a sealed segment's record is taken by a live process.
    TooManyHolders {
        /// The segment's name.
        name: String,
        /// The record's slot count.
        max: u32,
    },
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
            Self::NoSpace {
                needed,
                free: _,
                limit: SpaceLimit::Cgroup { file, max, current },
            } => write!(
                f,
                "not enough memory for {needed} bytes ({:.1} MiB) of shared memory: the cgroup \
                 limit {file} is {max} bytes ({:.1} MiB), {current} in use ({:.1} MiB); a \
                 container's memory limit (`docker run --memory`, a Kubernetes memory limit) \
                 sets it",
                mib(*needed),
                mib(*max),
                mib(*current)
            ),
            Self::NoSpace {
                needed,
                free: _,
                limit: SpaceLimit::Machine { available },
            } => write!(
                f,
                "not enough memory for {needed} bytes ({:.1} MiB) of shared memory: the machine \
                 has {available} bytes ({:.1} MiB) available (MemAvailable + SwapFree in \
                 /proc/meminfo)",
                mib(*needed),
                mib(*available)
            ),
            Self::NoSpace { needed, free, .. } => {
                write!(
                    f,
                    "not enough shared memory: {needed} bytes needed ({:.1} MiB)",
                    mib(*needed)
                )?;
                if let Some(free) = free {
                    write!(
                        f,
                        ", {free} bytes free in {} ({:.1} MiB)",
                        crate::shm_space::SHM_DIR,
                        mib(*free)
                    )?;
                }
                if cfg!(target_os = "linux") {
                    f.write_str(
                        "; /dev/shm is a tmpfs whose size limits all shared memory: 64 MB in a \
                         Docker container unless `docker run --shm-size=1g` (for example) raises it",
                    )?;
                }
                Ok(())
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
            Self::ConsumerClosed => f.write_str(
                "the pipe's receiver was closed, and a pipe takes no other receiver after that \
                 (only one whose process died is replaced): nothing sent to it would be received",
            ),
            Self::StreamEnded => f.write_str(
                "the pipe's stream has ended (every sender closed and the receiver took every \
                 value), and a pipe takes no new sender after its end",
            ),
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
            Self::Unreachable { name, denied } => {
                let why = if *denied {
                    "the kernel refused to open it through /proc (the holders run as another \
                     user, or are not dumpable)"
                } else {
                    "none of its holders is visible in this process's /proc (they run in another \
                     PID namespace, or /proc is mounted with hidepid)"
                };
                write!(
                    f,
                    "cannot attach '{name}': it lives in sealed memory (backing 'memfd') and {why}. \
                     Processes that share only /dev/shm (docker --ipc=host, say) need the named \
                     backing: create it with backing: 'shm', or set SHMPIPE_BACKING=shm"
                )
            }
            Self::TooManyHolders { name, max } => write!(
                f,
                "all {max} holder slots of '{name}' are taken by live processes"
            ),
            Self::Unsupported { op } => write!(f, "{op} is not supported on this platform"),
        }
    }
}

/// `bytes` in MiB, for messages.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

impl std::error::Error for Error {}

/// The core's result type.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error for a segment of `needed` bytes that shared memory has no room for, with the
    /// free space of the shared-memory filesystem as of now plus `held`, the bytes the failed
    /// segment had already reserved (its removal gives them back).
    pub(crate) fn no_space(needed: u64, held: u64) -> Self {
        Self::NoSpace {
            needed,
            free: crate::shm_space::shm_space().map(|s| s.free.saturating_add(held)),
            limit: SpaceLimit::SharedMemoryFilesystem,
        }
    }

    /// The last OS error, attributed to `op`.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn last_os(op: &'static str) -> Self {
        Self::Os {
            op,
            code: std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        }
    }
}
