/**
 * What a pool and its workers say to each other. The pool sends a {@link TaskMessage} per task on
 * the task pipe; the worker answers on the result pipe with one {@link ReplyMessage} first
 * (`ready`, or `load-error` if the module does not load), then one per task (`ok` with the value,
 * or `error`). A thrown value crosses as an {@link ErrorInfo} ({@link describeError} in the
 * worker) and is rebuilt in the pool ({@link reviveError}, {@link replyError}), so that a task's
 * error keeps its name, message, stack, code and causes.
 *
 * A worker is started with {@link WORKER_ENV} set in its environment, and its entry sets
 * {@link WORKER_MARK}: a process with the first and not the second is a worker running something
 * else than the worker entry.
 *
 * @module
 */

import { ERROR_CTORS } from '../codec.js'
import {
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_NO_SPACE,
  ERR_SHMPIPE_TASK_FAILED,
  ERR_SHMPIPE_TOO_LARGE,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ShmpipeError,
} from '../errors.js'

/** A task, from the pool to a worker. */
export interface TaskMessage {
  /** The export to call. */
  name: string
  /** Its arguments. */
  args: unknown[]
}

/** What a worker can tell of a thrown value. */
export interface ErrorInfo {
  /** `err.name` (`'Error'`, `'TypeError'`, a subclass's name…), absent for a non-Error throw. */
  name?: string
  /** `err.message`, or `String(value)` for a non-Error throw. */
  message: string
  /** `err.stack` as the worker saw it. */
  stack?: string
  /** `err.code`, if a string or a number. */
  code?: string | number
  /** `err.cause`, described the same way. */
  cause?: ErrorInfo
  /** The thrown value itself, for a non-Error throw that the codec can carry. */
  value?: unknown
}

/** A worker's reply: the first is `ready` or `load-error`, then one per task. */
export type ReplyMessage =
  | { t: 'ready'; pid: number }
  | { t: 'load-error'; error: ErrorInfo }
  | { t: 'ok'; value: unknown }
  | {
      t: 'error'
      kind: 'threw' | 'no-export' | 'unsupported-result' | 'result-no-space'
      error: ErrorInfo
    }

/** Describes a thrown value so that it can cross (causes to a few levels). */
export function describeError(err: unknown, depth = 0): ErrorInfo {
  if (err instanceof Error) {
    const info: ErrorInfo = { name: err.name, message: err.message }
    if (typeof err.stack === 'string') info.stack = err.stack
    const code = (err as { code?: unknown }).code
    if (typeof code === 'string' || typeof code === 'number') info.code = code
    if (err.cause !== undefined && depth < 8) info.cause = describeError(err.cause, depth + 1)
    return info
  }
  let message: string
  try {
    message = String(err)
  } catch {
    message = Object.prototype.toString.call(err)
  }
  return { message, value: err }
}

/** Set in the workers' environment. */
export const WORKER_ENV = 'SHMPIPE_POOL_WORKER'
/** Set on `globalThis` by the worker entry once it runs (shared by every copy of this module). */
export const WORKER_MARK = Symbol.for('shmpipe.poolWorker')

/** Rebuilds a worker's error in this process (or returns the thrown non-Error value). */
export function reviveError(info: ErrorInfo): unknown {
  if (info.name === undefined) return 'value' in info ? info.value : info.message
  const options = info.cause === undefined ? undefined : { cause: reviveError(info.cause) }
  const Ctor = ERROR_CTORS.find((c) => c.name === info.name) ?? Error
  const err = new Ctor(info.message, options) as Error & { code?: string | number }
  if (err.name !== info.name) {
    Object.defineProperty(err, 'name', {
      value: info.name,
      writable: true,
      enumerable: false,
      configurable: true,
    })
  }
  if (info.stack !== undefined) err.stack = info.stack
  if (info.code !== undefined) err.code = info.code
  return err
}

/** Whether `err` is a validation error of the codec: nothing was sent. */
export function isEncodingError(err: unknown): err is ShmpipeError {
  return (
    err instanceof ShmpipeError &&
    (err.code === ERR_SHMPIPE_UNSUPPORTED_TYPE || err.code === ERR_SHMPIPE_TOO_LARGE)
  )
}

/** The codec names paths from the task envelope (`value.args[0]`): name them from `args`. */
export function fromArgs(err: ShmpipeError): ShmpipeError {
  const before = err.message
  const after = before.replace(/\bvalue\.args\b/, 'args')
  if (after !== before) {
    err.message = after
    if (err.stack !== undefined) err.stack = err.stack.replace(before, after)
  }
  return err
}

/**
 * The error a task's `error` reply rejects it with: `taskName` is the task's export, `pid` its
 * worker's.
 */
export function replyError(
  reply: Extract<ReplyMessage, { t: 'error' }>,
  taskName: string,
  pid: number,
): ShmpipeError {
  const info = reply.error
  if (reply.kind === 'no-export')
    return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, info.message)
  if (reply.kind === 'result-no-space')
    return new ShmpipeError(
      ERR_SHMPIPE_NO_SPACE,
      `task '${taskName}' returned a value that shared memory has no room for: ${info.message}`,
    )
  if (reply.kind === 'unsupported-result')
    return new ShmpipeError(
      ERR_SHMPIPE_UNSUPPORTED_TYPE,
      `task '${taskName}' returned a value that cannot be sent back: ${info.message}`,
    )
  const what = info.name === undefined ? `threw ${info.message}` : `${info.name}: ${info.message}`
  return new ShmpipeError(
    ERR_SHMPIPE_TASK_FAILED,
    `task '${taskName}' failed in worker ${pid}: ${what}`,
    { cause: reviveError(info) },
  )
}
