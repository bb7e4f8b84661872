//! The addon's errors: a JavaScript `Error` whose `code` property is an `ERR_SHMPIPE_*` code
//! ([`ErrorCode`]) and whose message says what went wrong. napi-rs gives a thrown or rejected
//! error its status string as `code`, so the status of this addon's errors is a [`Code`]. The
//! TypeScript layer (`src/native.ts`) turns them into `ShmpipeError`s with that code.

use napi::bindgen_prelude::{Env, JsError, Status};
use napi_derive::napi;
use shmpipe_core::Error as CoreError;

/// Declares [`ErrorCode`] and its `code` strings from one table.
macro_rules! error_codes {
    ($($(#[doc = $doc:tt])* $variant:ident = $code:tt,)*) => {
        /// The `code` of an error raised by the native addon (`ShmpipeErrorCode` in
        /// `src/errors.ts` lists every code, these and the TypeScript layer's own).
        #[napi(string_enum)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum ErrorCode {
            $($(#[doc = $doc])* #[napi(value = $code)] $variant,)*
        }

        impl AsRef<str> for ErrorCode {
            fn as_ref(&self) -> &str {
                match self {
                    $(Self::$variant => $code,)*
                }
            }
        }
    };
}

error_codes! {
    /// A wait ran out of time.
    Timeout = "ERR_SHMPIPE_TIMEOUT",
    /// The pipe or handle is closed, or the stream ended.
    Closed = "ERR_SHMPIPE_CLOSED",
    /// The process at the other end died without closing.
    PeerGone = "ERR_SHMPIPE_PEER_GONE",
    /// A wait was interrupted (`cancelWait`, `close`, a signal).
    Aborted = "ERR_SHMPIPE_ABORTED",
    /// No room for the shared memory asked for.
    NoSpace = "ERR_SHMPIPE_NO_SPACE",
    /// A segment's bytes are not valid.
    BadSegment = "ERR_SHMPIPE_BAD_SEGMENT",
    /// A segment is not this user's, or its mode lets others in.
    Permission = "ERR_SHMPIPE_PERMISSION",
    /// Something exceeds a limit.
    TooLarge = "ERR_SHMPIPE_TOO_LARGE",
    /// An argument has the wrong value.
    InvalidArgument = "ERR_SHMPIPE_INVALID_ARGUMENT",
    /// A segment of that name already exists.
    Exists = "ERR_SHMPIPE_EXISTS",
    /// No segment of that name exists.
    NotFound = "ERR_SHMPIPE_NOT_FOUND",
    /// The pipe already has a live receiver.
    ReceiverTaken = "ERR_SHMPIPE_RECEIVER_TAKEN",
    /// Every sender slot is in use.
    TooManySenders = "ERR_SHMPIPE_TOO_MANY_SENDERS",
    /// `unlock` through a handle that does not hold the lock.
    LockNotHeld = "ERR_SHMPIPE_LOCK_NOT_HELD",
    /// An asynchronous wait holds the handle, or the lock is not reentrant.
    Busy = "ERR_SHMPIPE_BUSY",
    /// Not available on this platform or runtime.
    Unsupported = "ERR_SHMPIPE_UNSUPPORTED",
    /// An operating-system call failed.
    Os = "ERR_SHMPIPE_OS",
}

impl ErrorCode {
    /// The code a core error surfaces with in JavaScript.
    pub fn of(err: &CoreError) -> Self {
        match err {
            CoreError::Timeout => Self::Timeout,
            CoreError::Closed | CoreError::ConsumerClosed | CoreError::StreamEnded => Self::Closed,
            CoreError::PeerGone => Self::PeerGone,
            CoreError::Interrupted => Self::Aborted,
            CoreError::NoSpace { .. } => Self::NoSpace,
            CoreError::BadSegment { .. } => Self::BadSegment,
            CoreError::Permission { .. } => Self::Permission,
            CoreError::TooLarge { .. } => Self::TooLarge,
            CoreError::InvalidArgument { .. } => Self::InvalidArgument,
            CoreError::AlreadyExists { .. } => Self::Exists,
            CoreError::NotFound { .. } => Self::NotFound,
            CoreError::ConsumerTaken => Self::ReceiverTaken,
            CoreError::TooManyProducers { .. } => Self::TooManySenders,
            CoreError::LockNotHeld => Self::LockNotHeld,
            CoreError::AlreadyLocked => Self::Busy,
            CoreError::Unsupported { .. } | CoreError::Unreachable { .. } => Self::Unsupported,
            CoreError::TooManyHolders { .. } => Self::TooLarge,
            _ => Self::Os,
        }
    }
}

/// The status of this addon's errors, which napi-rs puts on the JavaScript error as `code`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// An error of shmpipe's.
    Shmpipe(ErrorCode),
    /// A failure napi-rs reported (creating a buffer, detaching one…), with napi-rs's own
    /// status as its code, as the errors napi-rs raises itself before this addon's code runs
    /// (an argument it could not convert, a panic caught at the boundary): the TypeScript layer
    /// maps those codes.
    Napi(Status),
}

impl AsRef<str> for Code {
    fn as_ref(&self) -> &str {
        match self {
            Self::Shmpipe(code) => code.as_ref(),
            Self::Napi(status) => status.as_ref(),
        }
    }
}

/// An error of this addon.
pub type Error = napi::Error<Code>;

/// A result of this addon (the `Result` every export returns).
pub type Result<T> = std::result::Result<T, Error>;

/// An error with `code` and message `reason`.
pub fn error(code: ErrorCode, reason: impl Into<String>) -> Error {
    Error::new(Code::Shmpipe(code), reason.into())
}

/// The error for a handle used after `close()`.
pub fn closed() -> Error {
    error(ErrorCode::Closed, "this handle is closed")
}

/// An argument error with the given description.
pub fn invalid(what: &str) -> Error {
    error(ErrorCode::InvalidArgument, what)
}

/// The error for a poisoned lock (a panic on another thread).
pub fn poisoned() -> Error {
    error(ErrorCode::Os, "internal lock poisoned")
}

/// A core error as this addon's: its code and its description.
pub fn from_core(err: CoreError) -> Error {
    error(ErrorCode::of(&err), err.to_string())
}

/// A failure napi-rs reported, keeping its status as the code.
pub fn from_napi(err: napi::Error) -> Error {
    Error::new(Code::Napi(err.status), err.reason)
}

/// `err` as a napi-rs error that rejects a deferred promise with the JavaScript error `err`
/// makes (its `code` included): a deferred promise takes only napi-rs's own error type, whose
/// status would otherwise become the code. Call it on the JavaScript thread.
pub fn for_deferred(env: Env, err: Error) -> napi::Error {
    napi::Error::from_unknown_without_coercion(JsError::from(err).into_unknown(env))
}

/// Converts a core or napi-rs result into this addon's.
pub trait IntoNapi<T> {
    /// The same result with this addon's error.
    fn napi(self) -> Result<T>;
}

impl<T> IntoNapi<T> for shmpipe_core::Result<T> {
    fn napi(self) -> Result<T> {
        self.map_err(from_core)
    }
}

impl<T> IntoNapi<T> for napi::Result<T> {
    fn napi(self) -> Result<T> {
        self.map_err(from_napi)
    }
}
