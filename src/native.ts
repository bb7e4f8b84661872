/**
 * Loads the native addon through the loader that `napi build` generates, and describes the part
 * of it this package uses.
 *
 * The loader (`binding.cjs` at the package root) is CommonJS and picks the addon for the running
 * platform: a local build `shmpipe.<platform>.node`, else the installed package
 * `shmpipe-<platform>`. `addon.cjs` wraps it so that a failure names the platform
 * (`ERR_SHMPIPE_UNSUPPORTED_PLATFORM`, `ERR_SHMPIPE_ADDON_NOT_FOUND`). This package is an ES
 * module package, so the loader is pulled in with a `require` made by `createRequire`; the
 * `.cjs` extension keeps it CommonJS whatever the package's `type` is. (The published CommonJS
 * build, `dist/index.cjs`, sits one directory below the root too, so the relative path holds.)
 *
 * Native failures arrive as errors whose message starts with an `ERR_SHMPIPE_*` code;
 * {@link translateError} turns them into {@link ShmpipeError}s.
 *
 * @module
 */

import { createRequire } from 'node:module'
import { constants } from 'node:os'
import { isMainThread } from 'node:worker_threads'
import {
  ERR_SHMPIPE_ABORTED,
  ERR_SHMPIPE_ADDON_NOT_FOUND,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_OS,
  ERR_SHMPIPE_UNSUPPORTED_PLATFORM,
  ShmpipeError,
  type ShmpipeErrorCode,
} from './errors.js'

/** A queue segment handle (`crates/node/src/queue.rs`). */
export interface NativeQueue {
  readonly name: string
  readonly capacity: number
  readonly dataBytes: number
  readonly maxInline: number
  readonly length: number
  producer(): NativeProducer
  consumer(): NativeConsumer
  /** Whether this process holds the receiver role before a receiver registers. */
  holdReceiverRole(held: boolean): void
  close(): void
}

/** An opaque handle on a sender or receiver, for the fast free functions of the addon. */
export interface NativeHandle {
  readonly __nativeHandle: unique symbol
}

/** A registered sender (`crates/node/src/producer.rs`). */
export interface NativeProducer {
  handle(): NativeHandle
  trySend(data: Uint8Array): boolean
  sendSync(data: Uint8Array, timeoutMs?: number | null): void
  waitSpace(len: number, timeoutMs?: number | null, spin?: number | null): Promise<void>
  waitForAllAck(timeoutMs?: number | null): Promise<void>
  waitForAllAckSync(timeoutMs?: number | null): void
  cancelWait(): void
  hasSpace(len: number): boolean
  readonly sent: number
  readonly acked: number
  tryReserve(len: number): ArrayBuffer | null
  /** Copies `source` into the open reservation from byte `offset` (large copies streamed). */
  writeReserved(offset: number, source: Uint8Array): void
  commit(buffer: ArrayBuffer): void
  abort(buffer: ArrayBuffer): void
  close(): void
}

/** The receiver (`crates/node/src/consumer.rs`). */
export interface NativeConsumer {
  handle(): NativeHandle
  tryRecv(): Buffer | null
  recvSync(timeoutMs?: number | null): Buffer
  tryRecvView(): NativeMessage | null
  waitReady(timeoutMs?: number | null, spin?: number | null): Promise<void>
  cancelWait(): void
  close(): void
}

/** A message received without copying. */
export interface NativeMessage {
  buffer(): ArrayBuffer
  release(buffer?: ArrayBuffer | null): void
}

/** A segment as the inventory reports it (`crates/node/src/cleanup.rs`). */
export interface NativeSegmentRecord {
  name: string
  kind?: string
  size: number
  ownerPid?: number
  owner: string
  status: string
  detail: string
  removable: boolean
  layoutVersion?: number
  ready?: boolean
  uid?: number
  heldBy?: number[]
  createdAt?: number
  mayBeUsedBy: { pid: number; command?: string }[]
}

/** What `cleanSegments` did (`crates/node/src/cleanup.rs`). */
export interface NativeCleanResult {
  removed: NativeSegmentRecord[]
  kept: NativeSegmentRecord[]
  failed: { segment: NativeSegmentRecord; error: string }[]
}

/** How a shared array's lock was obtained (`crates/node/src/array.rs`). */
export interface NativeLockInfo {
  recovered: boolean
  previousOwnerPid?: number | null
}

/** A shared array handle (`crates/node/src/array.rs`). */
export interface NativeArray {
  readonly name: string
  readonly segmentName: string
  readonly dtype: string
  readonly shape: number[]
  readonly length: number
  readonly byteLength: number
  readonly nonce: string
  readonly holdsLock: boolean
  readonly lockHolderPid: number
  buffer(): ArrayBuffer
  lockSync(timeoutMs?: number | null): NativeLockInfo
  tryLock(): NativeLockInfo | null
  lockAsync(timeoutMs?: number | null): Promise<NativeLockInfo>
  cancelLock(): void
  unlock(): void
  close(buffer?: ArrayBuffer | null): void
}

/** The functions and classes the native addon exports, as this package relies on them. */
export interface NativeBinding {
  /** Version of the shared-memory layout implemented by the Rust core. */
  layoutVersion(): number
  /** Version of the native addon crate. */
  coreVersion(): string
  NativeQueue: {
    create(capacity: number, bytes: number, maxSenders: number): NativeQueue
    open(name: string): NativeQueue
  }
  /** The shmpipe segments on this machine. */
  listSegments(options?: { allUsers?: boolean } | null): NativeSegmentRecord[]
  /** Removes the segments whose owner is dead, and what the options ask for besides. */
  cleanSegments(
    options?: {
      names?: string[]
      forceInvalid?: boolean
      dryRun?: boolean
      allUsers?: boolean
      arrays?: boolean
      force?: boolean
    } | null,
  ): NativeCleanResult
  /** Installs the signal cleanup; one outcome per signal (SIGINT, SIGTERM, SIGABRT). */
  installSignalCleanup(): string[]
  /** Has the signal cleanup remove the shared array `name` too; false where it cannot. */
  removeArrayOnSignal(name: string): boolean
  /** Undoes {@link NativeBinding.removeArrayOnSignal}; whether `name` was registered. */
  keepArrayOnSignal(name: string): boolean
  /**
   * Whether SIGINT/SIGTERM left to a JavaScript listener interrupt synchronous waits, which then
   * throw `ERR_SHMPIPE_ABORTED`.
   */
  interruptSyncWaitsOnSignal(on: boolean): void
  /** The signal number that interrupted synchronous waits (0 if none); clears it. */
  takeInterruptingSignal(): number
  /**
   * Ends this process (SIGTERM, then SIGKILL) once `parentPid` is no longer its parent; false if
   * it is not its parent already. A pool worker's tie to its pool (`crates/node/src/parent.rs`).
   */
  watchParent(parentPid: number): boolean
  NativeArray: {
    create(name: string, dtype: string, shape: number[]): NativeArray
    open(name: string): NativeArray
    remove(name: string): void
    removeIfSame(name: string, nonce: string): boolean
    list(): string[]
  }
  /** `NativeProducer.trySend` as a free function on the sender's handle (cheaper to call). */
  producerTrySend(handle: NativeHandle, data: Uint8Array): boolean
  /** Sends `head[0 … headLen)` then `body` as one message if there is room now. */
  producerTrySendParts(
    handle: NativeHandle,
    head: Uint8Array,
    headLen: number,
    body: Uint8Array,
  ): boolean
  /**
   * Takes the next message: an inline one that fits into `scratch` is copied there (its length is
   * returned), any other comes back as a Buffer; null when none is ready.
   */
  consumerTryRecvInto(handle: NativeHandle, scratch: Uint8Array): number | Buffer | null
}

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

const CODE = /^(ERR_SHMPIPE_[A-Z_]+): ([\s\S]*)$/

/** The `code` napi-rs gives an argument it could not convert (`StringExpected`…). */
const NAPI_ARGUMENT = /^(InvalidArg|[A-Za-z]+Expected)$/

/** The other `code`s napi-rs gives its errors, a caught Rust panic's among them. */
const NAPI_FAILURE = /^(GenericFailure|PendingException|Cancelled|Closing|WouldDeadlock|Unknown)$/

/**
 * The error to throw for `err`, caught from a native call: a {@link ShmpipeError} with the code
 * the native layer gave; for an error of napi-rs itself (an argument it could not convert, a
 * Rust panic caught at the boundary), `ERR_SHMPIPE_INVALID_ARGUMENT` or `ERR_SHMPIPE_OS` with
 * that error as the cause; else `err` itself.
 */
export function translateError(err: unknown): unknown {
  if (err instanceof ShmpipeError || !(err instanceof Error)) return err
  const match = CODE.exec(err.message)
  if (match !== null) return new ShmpipeError(match[1] as ShmpipeErrorCode, match[2]!)
  const code = (err as { code?: unknown }).code
  if (typeof code !== 'string') return err
  if (NAPI_ARGUMENT.test(code)) {
    return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, `an argument has the wrong type: ${err.message}`, { cause: err }) // prettier-ignore
  }
  if (NAPI_FAILURE.test(code)) {
    return new ShmpipeError(ERR_SHMPIPE_OS, `the native addon failed: ${err.message}`, { cause: err }) // prettier-ignore
  }
  return err
}

let onSignalInterrupt: ((signal: NodeJS.Signals) => void) | null = null

/**
 * Sets what runs when a synchronous call was interrupted by a signal that a JavaScript listener
 * is to handle (`signal-cleanup.ts`): it may end the process.
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
