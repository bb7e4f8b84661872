/**
 * The error type of shmpipe and its error codes.
 *
 * Every error shmpipe throws on purpose is a {@link ShmpipeError}. Like Node's own errors, it
 * carries a stable machine-readable `code` (one of the `ERR_SHMPIPE_*` constants below) and a
 * human-readable message that says what was wrong; match on `err.code`, never on the message.
 *
 * @module
 */

/** A wait (for space, for a message, for acknowledgements) ran out of time. */
export const ERR_SHMPIPE_TIMEOUT = 'ERR_SHMPIPE_TIMEOUT'

/**
 * The pipe was closed, by this side or cleanly by the other side: its stream has ended (every
 * sender closed and every value was taken), or its receiver was closed.
 */
export const ERR_SHMPIPE_CLOSED = 'ERR_SHMPIPE_CLOSED'

/** The process at the other end of the pipe died without closing it. */
export const ERR_SHMPIPE_PEER_GONE = 'ERR_SHMPIPE_PEER_GONE'

/**
 * A value cannot be encoded: a function, a symbol, a class instance, a `WeakMap`, a `Promise`,
 * a `SharedArrayBuffer`, a detached `ArrayBuffer`… The message names the path to the value,
 * e.g. `value.a[3].fn`.
 */
export const ERR_SHMPIPE_UNSUPPORTED_TYPE = 'ERR_SHMPIPE_UNSUPPORTED_TYPE'

/**
 * The system has no room for the shared memory asked for (`/dev/shm` is full: 64 MB in a Docker
 * container unless `docker run --shm-size` raises it). The message gives the bytes needed and free.
 */
export const ERR_SHMPIPE_NO_SPACE = 'ERR_SHMPIPE_NO_SPACE'

/**
 * Bytes read from shared memory are not valid: a segment with a bad header, or an encoded value
 * that is truncated, corrupt or written in an unknown format version.
 */
export const ERR_SHMPIPE_BAD_SEGMENT = 'ERR_SHMPIPE_BAD_SEGMENT'

/**
 * A segment found under the name to attach (a pipe, a shared array, or a message's own segment)
 * is not this user's: another uid owns it, or its mode lets group or others in. shmpipe attaches
 * only segments owned by its effective uid with mode 0600, and reads nothing of any other. The
 * message names the owner uid and the mode.
 */
export const ERR_SHMPIPE_PERMISSION = 'ERR_SHMPIPE_PERMISSION'

/** An argument has the wrong type or an out-of-range value. */
export const ERR_SHMPIPE_INVALID_ARGUMENT = 'ERR_SHMPIPE_INVALID_ARGUMENT'

/** Something exceeds a limit: a message too large, or a value nested too deeply to encode. */
export const ERR_SHMPIPE_TOO_LARGE = 'ERR_SHMPIPE_TOO_LARGE'

/** A name given to `attach` does not exist (never created, or already removed). */
export const ERR_SHMPIPE_NOT_FOUND = 'ERR_SHMPIPE_NOT_FOUND'

/** A segment of that name already exists (creation is exclusive). */
export const ERR_SHMPIPE_EXISTS = 'ERR_SHMPIPE_EXISTS'

/** The pipe already has a live receiver (one receiver per pipe). */
export const ERR_SHMPIPE_RECEIVER_TAKEN = 'ERR_SHMPIPE_RECEIVER_TAKEN'

/** Every sender slot of the pipe is in use (`maxSenders`). */
export const ERR_SHMPIPE_TOO_MANY_SENDERS = 'ERR_SHMPIPE_TOO_MANY_SENDERS'

/**
 * A synchronous call was made while asynchronous calls on the same end are still pending
 * (it would overtake them and break the order of messages), or a shared array's lock was asked
 * for through a handle that already holds it or is waiting for it (the lock is not reentrant).
 */
export const ERR_SHMPIPE_BUSY = 'ERR_SHMPIPE_BUSY'

/** A wait was interrupted (by `close()`, or internally for an `AbortSignal`). */
export const ERR_SHMPIPE_ABORTED = 'ERR_SHMPIPE_ABORTED'

/** An operating-system call failed. */
export const ERR_SHMPIPE_OS = 'ERR_SHMPIPE_OS'

/**
 * No prebuilt native addon exists for this platform; the message names `process.platform`,
 * `process.arch` and (on Linux) the C library. Thrown when shmpipe is first imported.
 */
export const ERR_SHMPIPE_UNSUPPORTED_PLATFORM = 'ERR_SHMPIPE_UNSUPPORTED_PLATFORM'

/**
 * The native addon for this platform is not installed or does not load: the message names the
 * platform and the package that fits it (`shmpipe-<platform>`, an optional dependency that was
 * omitted, say), or asks for `npm run build` in a clone of the repository. Thrown when shmpipe
 * is first imported.
 */
export const ERR_SHMPIPE_ADDON_NOT_FOUND = 'ERR_SHMPIPE_ADDON_NOT_FOUND'

/** `unlock()` through a shared array handle that does not hold the lock. */
export const ERR_SHMPIPE_LOCK_NOT_HELD = 'ERR_SHMPIPE_LOCK_NOT_HELD'

/**
 * The operation is not available on this platform or runtime (e.g. `SharedArray.list()` where
 * the OS cannot enumerate shared memory, or a runtime without external ArrayBuffers).
 */
export const ERR_SHMPIPE_UNSUPPORTED = 'ERR_SHMPIPE_UNSUPPORTED'

/**
 * A task run by a `ProcessPool` threw (or its promise rejected) in the worker. The message
 * names the task and the worker's pid and repeats the worker's error message; `err.cause` is
 * that error, rebuilt in this process with the worker's `name`, `message`, `stack` and `code`
 * (or the thrown value itself, if it was not an Error).
 */
export const ERR_SHMPIPE_TASK_FAILED = 'ERR_SHMPIPE_TASK_FAILED'

/**
 * The `ProcessPool` worker running a task died (killed by a signal, crashed, or exited) before
 * the task's result came back. The message names the worker's pid and its exit code or signal.
 * The pool replaces the worker; other tasks go on.
 */
export const ERR_SHMPIPE_WORKER_DIED = 'ERR_SHMPIPE_WORKER_DIED'

/**
 * A `ProcessPool`'s workers could not start: the task module failed to load (`err.cause` is the
 * worker's error), or workers kept exiting before they were ready. The pool then rejects every
 * task with this error.
 */
export const ERR_SHMPIPE_WORKER_START_FAILED = 'ERR_SHMPIPE_WORKER_START_FAILED'

/** The `code` of a {@link ShmpipeError}: one of the `ERR_SHMPIPE_*` constants. */
export type ShmpipeErrorCode =
  | typeof ERR_SHMPIPE_TIMEOUT
  | typeof ERR_SHMPIPE_CLOSED
  | typeof ERR_SHMPIPE_PEER_GONE
  | typeof ERR_SHMPIPE_UNSUPPORTED_TYPE
  | typeof ERR_SHMPIPE_NO_SPACE
  | typeof ERR_SHMPIPE_BAD_SEGMENT
  | typeof ERR_SHMPIPE_PERMISSION
  | typeof ERR_SHMPIPE_INVALID_ARGUMENT
  | typeof ERR_SHMPIPE_TOO_LARGE
  | typeof ERR_SHMPIPE_NOT_FOUND
  | typeof ERR_SHMPIPE_EXISTS
  | typeof ERR_SHMPIPE_RECEIVER_TAKEN
  | typeof ERR_SHMPIPE_TOO_MANY_SENDERS
  | typeof ERR_SHMPIPE_BUSY
  | typeof ERR_SHMPIPE_ABORTED
  | typeof ERR_SHMPIPE_OS
  | typeof ERR_SHMPIPE_UNSUPPORTED_PLATFORM
  | typeof ERR_SHMPIPE_ADDON_NOT_FOUND
  | typeof ERR_SHMPIPE_LOCK_NOT_HELD
  | typeof ERR_SHMPIPE_UNSUPPORTED
  | typeof ERR_SHMPIPE_TASK_FAILED
  | typeof ERR_SHMPIPE_WORKER_DIED
  | typeof ERR_SHMPIPE_WORKER_START_FAILED

/**
 * An error raised by shmpipe.
 *
 * `err.name` is `'ShmpipeError'`, `err.code` one of the `ERR_SHMPIPE_*` constants, and
 * `err.message` says what went wrong. When the error was caused by another one (e.g. a native
 * failure), that error is `err.cause`.
 *
 * @example
 * ```ts
 * try {
 *   encode(() => 1)
 * } catch (err) {
 *   if (err instanceof ShmpipeError && err.code === ERR_SHMPIPE_UNSUPPORTED_TYPE) {
 *     // …
 *   }
 * }
 * ```
 */
export class ShmpipeError extends Error {
  /** Stable identifier of the kind of failure: one of the `ERR_SHMPIPE_*` constants. */
  readonly code: ShmpipeErrorCode

  /**
   * @param code One of the `ERR_SHMPIPE_*` constants.
   * @param message What went wrong, naming the offending value or operation.
   * @param options `cause`: the underlying error, if any.
   */
  constructor(code: ShmpipeErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.code = code
  }
}

// On the prototype (as for Node's built-in errors), so `name` is not an own enumerable property
// of every instance, but `err.name` and the first line of `err.stack` read `ShmpipeError`.
Object.defineProperty(ShmpipeError.prototype, 'name', {
  value: 'ShmpipeError',
  writable: true,
  enumerable: false,
  configurable: true,
})
