/**
 * Loads the native addon through the loader that `napi build` generates, typed by the
 * declarations it generates.
 *
 * The loader (`binding.cjs` at the package root) is CommonJS and picks the addon for the running
 * platform: a local build `shmpipe.<platform>.node`, else the installed package
 * `shmpipe-<platform>`. `addon.cjs` wraps it so that a failure names the platform
 * (`ERR_SHMPIPE_UNSUPPORTED_PLATFORM`, `ERR_SHMPIPE_ADDON_NOT_FOUND`). This package is an ES
 * module package, so the loader is pulled in with a `require` made by `createRequire`; the
 * `.cjs` extension keeps it CommonJS whatever the package's `type` is. (The published CommonJS
 * build, `dist/index.cjs`, sits one directory below the root too, so the relative path holds.)
 *
 * The addon's types are the declarations `napi build` generates from the Rust exports
 * (`binding.d.cts`, committed), so a change of a Rust signature fails `tsc` where it matters.
 *
 * Native failures arrive as errors whose `code` is an `ERR_SHMPIPE_*` code (`ErrorCode` in
 * `crates/node/src/errors.rs`); {@link translateError} turns them into {@link ShmpipeError}s.
 *
 * @module
 */

import { createRequire } from 'node:module'
import { constants } from 'node:os'
import { isMainThread } from 'node:worker_threads'
import type * as Binding from '../binding.cjs'
import {
  ERR_SHMPIPE_ABORTED,
  ERR_SHMPIPE_ADDON_NOT_FOUND,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_OS,
  ERR_SHMPIPE_UNSUPPORTED_PLATFORM,
  ShmpipeError,
  type ShmpipeErrorCode,
} from './errors.js'

export type {
  LockInfo as NativeLockInfo,
  NativeArray,
  NativeConsumer,
  NativeMessage,
  NativeProducer,
  NativeQueue,
} from '../binding.cjs'

/** A sender's handle for the fast free functions (`producerTrySend`…). */
export type NativeProducerHandle = ReturnType<Binding.NativeProducer['handle']>

/** The receiver's handle for the fast free function `consumerTryRecvInto`. */
export type NativeConsumerHandle = ReturnType<Binding.NativeConsumer['handle']>

/** The native addon: what `binding.d.cts` declares. */
export type NativeBinding = typeof Binding

const require = createRequire(import.meta.url)

/** The codes `addon.cjs` gives its errors. */
const LOAD_CODES: ReadonlySet<string> = new Set([
  ERR_SHMPIPE_UNSUPPORTED_PLATFORM,
  ERR_SHMPIPE_ADDON_NOT_FOUND,
])

/** Loads the addon, as a {@link ShmpipeError} naming the platform if there is none. */
function loadNative(): NativeBinding {
  try {
    return require('../addon.cjs') as NativeBinding
  } catch (err) {
    const { code, message, cause } = err as { code?: unknown; message?: string; cause?: unknown }
    if (typeof code === 'string' && LOAD_CODES.has(code) && typeof message === 'string')
      throw new ShmpipeError(code as ShmpipeErrorCode, message, { cause })
    throw err
  }
}

/**
 * The loaded native addon. Throws at import time when there is none for this platform
 * (`ERR_SHMPIPE_UNSUPPORTED_PLATFORM`) or it is not installed or not built
 * (`ERR_SHMPIPE_ADDON_NOT_FOUND`).
 */
export const native: NativeBinding = loadNative()

/**
 * Whether `code` is one the addon gives its own errors (each starts so). `new ShmpipeError(code,
 * …)` in {@link translateError} compiles only while every one of them is a
 * {@link ShmpipeErrorCode}.
 */
function isNativeCode(code: string): code is Binding.ErrorCode {
  return code.startsWith('ERR_SHMPIPE_')
}

/**
 * The codes napi-rs gives an argument it could not convert (napi-rs's `Status`), raised before
 * the addon's own code runs.
 */
const NAPI_ARGUMENT: ReadonlySet<string> = new Set([
  'InvalidArg',
  'ObjectExpected',
  'StringExpected',
  'NameExpected',
  'FunctionExpected',
  'NumberExpected',
  'BooleanExpected',
  'ArrayExpected',
  'BigintExpected',
  'DateExpected',
  'ArrayBufferExpected',
  'DetachableArraybufferExpected',
])

/** The other codes napi-rs gives its errors, a caught Rust panic's among them. */
const NAPI_FAILURE: ReadonlySet<string> = new Set([
  'GenericFailure',
  'PendingException',
  'Cancelled',
  'Closing',
  'WouldDeadlock',
  'Unknown',
])

/**
 * The error to throw for `err`, caught from a native call: a {@link ShmpipeError} with the code
 * the native layer gave; for an error of napi-rs itself (an argument it could not convert, a
 * Rust panic caught at the boundary), `ERR_SHMPIPE_INVALID_ARGUMENT` or `ERR_SHMPIPE_OS` with
 * that error as the cause; else `err` itself.
 */
export function translateError(err: unknown): unknown {
  if (err instanceof ShmpipeError || !(err instanceof Error)) return err
  const code = (err as { code?: unknown }).code
  if (typeof code !== 'string') return err
  if (isNativeCode(code)) return new ShmpipeError(code, err.message)
  if (NAPI_ARGUMENT.has(code)) {
    return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, `an argument has the wrong type: ${err.message}`, { cause: err }) // prettier-ignore
  }
  if (NAPI_FAILURE.has(code)) {
    return new ShmpipeError(ERR_SHMPIPE_OS, `the native addon failed: ${err.message}`, { cause: err }) // prettier-ignore
  }
  return err
}

let onSignalInterrupt: ((signal: NodeJS.Signals) => void) | null = null

/**
 * Sets what runs when a synchronous call was interrupted by a signal that a JavaScript listener
 * is to handle (`lifecycle.ts`): it may end the process.
 */
export function setSignalInterruptHandler(handler: (signal: NodeJS.Signals) => void): void {
  onSignalInterrupt = handler
}

/** A wait that `ERR_SHMPIPE_ABORTED` ended: if a signal did it, says so and lets it act. */
function interruptedBySignal(err: ShmpipeError): void {
  if (!isMainThread) return // only the main thread's waits are interrupted by signals
  const number = native.takeInterruptingSignal()
  if (number === 0) return
  const signal = (Object.keys(constants.signals) as NodeJS.Signals[]).find(
    (name) => constants.signals[name] === number,
  )
  const by = ` by ${signal ?? `signal ${number}`}`
  if (err.stack !== undefined) err.stack = err.stack.replace(err.message, err.message + by)
  err.message += by
  if (signal !== undefined) onSignalInterrupt?.(signal)
}

/**
 * Runs `fn`, rethrowing native errors as {@link ShmpipeError}s. A synchronous wait interrupted
 * by SIGINT or SIGTERM first runs the signal's cleanup (which ends the process unless the
 * program has its own listener for the signal).
 */
export function call<T>(fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    const translated = translateError(err)
    if (translated instanceof ShmpipeError && translated.code === ERR_SHMPIPE_ABORTED)
      interruptedBySignal(translated)
    throw translated
  }
}

/** Awaits `promise`, rethrowing native errors as {@link ShmpipeError}s. */
export async function callAsync<T>(promise: Promise<T>): Promise<T> {
  try {
    return await promise
  } catch (err) {
    throw translateError(err)
  }
}
