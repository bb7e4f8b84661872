//! Where a segment's memory lives: a named file in the shared-memory filesystem, or sealed
//! anonymous memory found through a named record.

use crate::error::{Error, Result};

/// The environment variable that chooses the default [`Backing`] of pipes: `shm` or `memfd`.
pub const BACKING_ENV: &str = "SHMPIPE_BACKING";

/// Where a segment's memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// A named POSIX shared-memory object (`/dev/shm/<name>` on Linux): reachable by name from
    /// any process of the user that shares the filesystem (across PID namespaces too), counted
    /// against its size, and left behind if every process holding it is killed before one
    /// removes it.
    Shm,
    /// Linux: anonymous memory from `memfd_create`, every page reserved and sealed against
    /// resizing, found by name through a small record in `/dev/shm` that lists its holders
    ///. Freed by the kernel when its last holder exits, however it
    /// exits; limited by memory (the cgroup's and the machine's), not by `/dev/shm`; reachable
    /// only from processes that see a holder in their `/proc`.
    Memfd,
}

impl Backing {
    /// The backing's name, as the option and the environment variable spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Shm => "shm",
            Self::Memfd => "memfd",
        }
    }

    /// Parses `shm` or `memfd`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "shm" => Some(Self::Shm),
            "memfd" => Some(Self::Memfd),
            _ => None,
        }
    }

    /// The default for pipes: [`BACKING_ENV`] if set, else [`Backing::Memfd`] on Linux and
    /// [`Backing::Shm`] elsewhere. An unknown value, or `memfd` off Linux, is an error, so that
    /// a typo is not silently ignored.
    pub fn for_pipes() -> Result<Self> {
        match std::env::var(BACKING_ENV) {
            Ok(text) => Self::parse(text.trim())
                .ok_or(Error::InvalidArgument {
                    name: BACKING_ENV,
                    expected: "'shm' or 'memfd'",
                })?
                .check(),
            Err(_) if cfg!(target_os = "linux") => Ok(Self::Memfd),
            Err(_) => Ok(Self::Shm),
        }
    }

    /// This backing, if this platform has it.
    pub fn check(self) -> Result<Self> {
        if self == Self::Memfd && !cfg!(target_os = "linux") {
            return Err(Error::Unsupported {
                op: "backing 'memfd' (sealed memory; Linux only)",
            });
        }
        Ok(self)
    }
}
