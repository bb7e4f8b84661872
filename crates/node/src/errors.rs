//! Maps the core's errors onto JavaScript errors with a stable `code` (`ERR_SHMPIPE_*`); the
//! TypeScript layer turns them into `ShmpipeError`s.

use napi::{Error, Status};
use shmpipe_core::Error as CoreError;

/// The `code` a core error surfaces with in JavaScript.
pub fn code_of(err: &CoreError) -> &'static str {
    match err {
        CoreError::Timeout => "ERR_SHMPIPE_TIMEOUT",
        CoreError::Closed | CoreError::ConsumerClosed | CoreError::StreamEnded => {
            "ERR_SHMPIPE_CLOSED"
        }
        CoreError::PeerGone => "ERR_SHMPIPE_PEER_GONE",
        CoreError::Interrupted => "ERR_SHMPIPE_ABORTED",
        CoreError::NoSpace { .. } => "ERR_SHMPIPE_NO_SPACE",
        CoreError::BadSegment { .. } => "ERR_SHMPIPE_BAD_SEGMENT",
        CoreError::Permission { .. } => "ERR_SHMPIPE_PERMISSION",
        CoreError::TooLarge { .. } => "ERR_SHMPIPE_TOO_LARGE",
        CoreError::InvalidArgument { .. } => "ERR_SHMPIPE_INVALID_ARGUMENT",
        CoreError::AlreadyExists { .. } => "ERR_SHMPIPE_EXISTS",
        CoreError::NotFound { .. } => "ERR_SHMPIPE_NOT_FOUND",
        CoreError::ConsumerTaken => "ERR_SHMPIPE_RECEIVER_TAKEN",
        CoreError::TooManyProducers { .. } => "ERR_SHMPIPE_TOO_MANY_SENDERS",
        CoreError::LockNotHeld => "ERR_SHMPIPE_LOCK_NOT_HELD",
        CoreError::AlreadyLocked => "ERR_SHMPIPE_BUSY",
        CoreError::Unsupported { .. } => "ERR_SHMPIPE_UNSUPPORTED",
        _ => "ERR_SHMPIPE_OS",
    }
}

/// A napi error whose message is `CODE: description`; the TypeScript layer splits it.
pub fn to_napi(err: CoreError) -> Error {
    Error::new(Status::GenericFailure, format!("{}: {err}", code_of(&err)))
}

/// The error for a handle used after `close()`.
pub fn closed() -> Error {
    Error::new(
        Status::GenericFailure,
        "ERR_SHMPIPE_CLOSED: this handle is closed".to_owned(),
    )
}

/// An argument error with the given description.
pub fn invalid(what: &str) -> Error {
    Error::new(
        Status::InvalidArg,
        format!("ERR_SHMPIPE_INVALID_ARGUMENT: {what}"),
    )
}

/// Converts the core's result.
pub trait IntoNapi<T> {
    /// The same result with a napi error.
    fn napi(self) -> napi::Result<T>;
}

impl<T> IntoNapi<T> for shmpipe_core::Result<T> {
    fn napi(self) -> napi::Result<T> {
        self.map_err(to_napi)
    }
}
