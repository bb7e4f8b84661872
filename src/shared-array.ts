/**
 * SharedArray: a named N-dimensional array of numbers in shared memory, seen in place by every
 * process that attaches to it, with a cross-process lock for its writers.
 *
 * `array.data` is a TypedArray over the shared memory itself (an external ArrayBuffer): a write
 * in one process is read by the others without any copy or message. JavaScript's `Atomics`
 * cannot be used on it (it is not a SharedArrayBuffer), so writers that must not interleave take
 * the array's lock: `lock()`/`unlock()` (blocking the thread) or `await withLock(fn)` (waiting on
 * a native thread, never on the event loop). A lock whose holder dies is taken over by the next
 * locker, which is told (`recovered: true`): the data may then be half-updated.
 *
 * @module
 */

import { constants as bufferConstants } from 'node:buffer'

import {
  ERR_SHMPIPE_BUSY,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_EXISTS,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_NOT_FOUND,
  ERR_SHMPIPE_TIMEOUT,
  ERR_SHMPIPE_TOO_LARGE,
  ShmpipeError,
} from './errors.js'
import { call, callAsync, native, type NativeArray, type NativeLockInfo } from './native.js'
import { checkChoice, checkOptions, checkWaitOptions } from './options.js'
import type { Backing } from './pipe.js'

/** The TypedArray of each dtype. */
export interface DTypeArrays {
  int8: Int8Array<ArrayBuffer>
  uint8: Uint8Array<ArrayBuffer>
  uint8clamped: Uint8ClampedArray<ArrayBuffer>
  int16: Int16Array<ArrayBuffer>
  uint16: Uint16Array<ArrayBuffer>
  int32: Int32Array<ArrayBuffer>
  uint32: Uint32Array<ArrayBuffer>
  float32: Float32Array<ArrayBuffer>
  float64: Float64Array<ArrayBuffer>
  bigint64: BigInt64Array<ArrayBuffer>
  biguint64: BigUint64Array<ArrayBuffer>
}

/** The TypedArray constructor of each dtype. */
export interface DTypeConstructors {
  int8: Int8ArrayConstructor
  uint8: Uint8ArrayConstructor
  uint8clamped: Uint8ClampedArrayConstructor
  int16: Int16ArrayConstructor
  uint16: Uint16ArrayConstructor
  int32: Int32ArrayConstructor
  uint32: Uint32ArrayConstructor
  float32: Float32ArrayConstructor
  float64: Float64ArrayConstructor
  bigint64: BigInt64ArrayConstructor
  biguint64: BigUint64ArrayConstructor
}

/** An element type: `'float64'`, `'int32'`, `'biguint64'`… (one per TypedArray type). */
export type DType = keyof DTypeArrays

/** The `data` of a shared array: any TypedArray. */
export type SharedTypedArray = DTypeArrays[DType]

/** A TypedArray constructor a shared array can be made of (`Float64Array`, `Int32Array`…). */
export type SharedTypedArrayConstructor = DTypeConstructors[DType]

/** The TypedArray type for a dtype given by name or by constructor. */
export type ArrayOf<T extends DType | SharedTypedArrayConstructor> = T extends DType
  ? DTypeArrays[T]
  : { [K in DType]: T extends DTypeConstructors[K] ? DTypeArrays[K] : never }[DType]

/** A shape: the length of a 1-d array, or the dimensions (row-major: the last varies fastest). */
export type Shape = number | readonly number[]

/** How the lock was obtained. */
export interface LockInfo {
  /**
   * The previous holder went away without unlocking: its process died, or its handle was closed
   * (or garbage-collected, or its worker ended) while holding the lock. Like a robust mutex's
   * `EOWNERDEAD`: the data it was writing may be half-updated. Reported to one holder only.
   */
  readonly recovered: boolean
  /** The pid of that previous holder, when `recovered`; otherwise null. */
  readonly previousOwnerPid: number | null
}

/** Options of the blocking `lock()`. */
export interface LockOptions {
  /**
   * Milliseconds to wait at most; then `ERR_SHMPIPE_TIMEOUT`. Default: as long as it takes, as
   * with `Infinity` or anything above 2³¹−1 (about 24.8 days, the longest Node.js timer).
   */
  timeout?: number
}

/** Options of `withLock()`. */
export interface WithLockOptions extends LockOptions {
  /** Aborts the wait for the lock; the call then rejects with the signal's reason. */
  signal?: AbortSignal
}

/** Options of `SharedArray.create()`. */
export interface SharedArrayOptions {
  /**
   * Where the array's memory lives. `'shm'` (the default): a named segment in `/dev/shm` that
   * stays until `SharedArray.delete(name)`, so an array outlives the program that wrote it.
   * `'memfd'` (Linux only, else `ERR_SHMPIPE_UNSUPPORTED`): sealed memory that lives while some
   * process holds it (any process of the same user can attach it by name meanwhile) and is freed,
   * name included, when the last holder closes or exits, however it exits; at most 1024 processes
   * hold it at once. The `SHMPIPE_BACKING` environment variable does not change this default: it
   * is for pipes.
   */
  backing?: Backing
}

const BACKINGS: readonly Backing[] = ['shm', 'memfd']

const CONSTRUCTORS: DTypeConstructors = {
  int8: Int8Array,
  uint8: Uint8Array,
  uint8clamped: Uint8ClampedArray,
  int16: Int16Array,
  uint16: Uint16Array,
  int32: Int32Array,
  uint32: Uint32Array,
  float32: Float32Array,
  float64: Float64Array,
  bigint64: BigInt64Array,
  biguint64: BigUint64Array,
}

const DTYPES = Object.keys(CONSTRUCTORS) as DType[]
const DTYPE_OF_CONSTRUCTOR = new Map<unknown, DType>(DTYPES.map((d) => [CONSTRUCTORS[d], d]))

/** Most dimensions (as in the native core). */
const MAX_NDIM = 32

/** Longest array name (the OS name `shmpipe_a_<name>` must fit macOS's 30 characters). */
const MAX_NAME_LENGTH = 20
const NAME = /^[A-Za-z0-9_.-]+$/

/** An `ERR_SHMPIPE_INVALID_ARGUMENT` error. */
function invalid(message: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, message)
}

/** `name`, if it is a valid array name (the native core checks it again). */
function checkName(name: unknown): string {
  if (typeof name !== 'string' || name.length > MAX_NAME_LENGTH || !NAME.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name) : String(name)
    throw invalid(`name must be 1 to ${MAX_NAME_LENGTH} characters of [A-Za-z0-9_.-], got ${shown}`)
  }
  return name
}

/** The dtype given as a name or a TypedArray constructor. */
function dtypeOf(type: unknown): DType {
  const dtype =
    typeof type === 'string' ? DTYPES.find((d) => d === type) : DTYPE_OF_CONSTRUCTOR.get(type)
  if (dtype === undefined) {
    const shown =
      typeof type === 'function' ? type.name || 'an anonymous function' : JSON.stringify(type)
    throw invalid(
      `dtype must be a TypedArray constructor (Float64Array, Int32Array…) or one of ${DTYPES.join(', ')}; got ${shown}`,
    )
  }
  return dtype
}

/** The dimensions of `shape`, if they are valid and fit a TypedArray of `dtype`. */
function checkShape(shape: unknown, dtype: DType): number[] {
  let dims: unknown[]
  if (typeof shape === 'number') dims = [shape]
  else if (Array.isArray(shape)) dims = [...(shape as unknown[])]
  else {
    throw invalid(
      `shape must be a length (number) or an array of dimensions, got ${typeof shape === 'object' ? String(shape) : typeof shape}`,
    )
  }
  if (dims.length === 0 || dims.length > MAX_NDIM) {
    throw invalid(`shape must have 1 to ${MAX_NDIM} dimensions, got ${dims.length}`)
  }
  let length = 1
  dims.forEach((d, i) => {
    if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) {
      const where = typeof shape === 'number' ? 'length' : `shape[${i}]`
      throw invalid(`${where} must be a whole number of at least 1, got ${String(d)}`)
    }
    length *= d
  })
  const limit = bufferConstants.MAX_LENGTH
  if (!(length <= limit)) {
    throw new ShmpipeError(
      ERR_SHMPIPE_TOO_LARGE,
      `shape [${dims.join(', ')}] has ${length} elements of ${dtype}; a TypedArray in this Node.js holds at most ${limit}`,
    )
  }
  return dims as number[]
}

/** The public form of the native lock result. */
function lockInfo(info: NativeLockInfo): LockInfo {
  return { recovered: info.recovered, previousOwnerPid: info.previousOwnerPid ?? null }
}

/** Milliseconds left until `deadline` (undefined: no deadline). */
function remaining(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : Math.max(0, deadline - performance.now())
}

/** Resolves when `turn` does; rejects on the deadline or the signal first. */
function waitTurn(
  turn: Promise<void>,
  deadline: number | undefined,
  signal: AbortSignal | undefined,
): Promise<void> {
  if (deadline === undefined && signal === undefined) return turn
  return new Promise((resolve, reject) => {
    let timer: ReturnType<typeof setTimeout> | undefined
    const onAbort = (): void => finish(() => reject(signal!.reason))
    const finish = (then: () => void): void => {
      if (timer !== undefined) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      then()
    }
    if (deadline !== undefined) {
      timer = setTimeout(
        () => finish(() => reject(new ShmpipeError(ERR_SHMPIPE_TIMEOUT, 'timed out'))),
        remaining(deadline),
      )
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    void turn.then(() => finish(resolve))
  })
}

/**
 * Runs a native call about the array `name`, saying "shared array" where the native message names
 * the segment (`shmpipe_a_<name>`) for the codes a caller meets by name: EXISTS, NOT_FOUND.
 */
function byName<T>(name: string, fn: () => T): T {
  try {
    return call(fn)
  } catch (err) {
    if (err instanceof ShmpipeError) {
      const shown = JSON.stringify(name)
      if (err.code === ERR_SHMPIPE_EXISTS) {
        // Arrays outlive their creator: a crashed run's array is the usual cause.
        const segment = `shmpipe_a_${name}`
        const hint = `it outlives the process that created it, until deleted: \`npx shmpipe ls\` shows ${segment} with its creator and age; \`npx shmpipe clean ${segment}\` (or SharedArray.delete(${shown})) removes it` // prettier-ignore
        throw new ShmpipeError(err.code, `a shared array named ${shown} already exists (${hint})`, { cause: err }) // prettier-ignore
      }
      if (err.code === ERR_SHMPIPE_NOT_FOUND) {
        throw new ShmpipeError(err.code, `no shared array named ${shown} exists`, { cause: err })
      }
    }
    throw err
  }
}

/** Creation nonces of arrays, for the manager (which removes only the array it created). */
const nonces = new WeakMap<SharedArray, { name: string; nonce: string }>()

/**
 * @internal The name and creation nonce of `array`, so that a later removal can tell it from
 * another array created under the same name meanwhile.
 */
export function arrayIdentity(array: SharedArray): { name: string; nonce: string } {
  return nonces.get(array)!
}

/**
 * @internal Removes the array `name` if it is still the one with `nonce`; returns whether it did.
 */
export function removeIfSame(name: string, nonce: string): boolean {
  return call(() => native.NativeArray.removeIfSame(name, nonce))
}

/**
 * A named array of numbers in shared memory.
 *
 * ```ts
 * const a = SharedArray.create('frame', Float64Array, [480, 640]) // zero-filled
 * a.data[0] = 1 // seen by every process that attached 'frame'
 * // elsewhere: const b = SharedArray.attach('frame') → b.dtype 'float64', b.shape [480, 640]
 * await a.withLock(() => { a.data[1] += 1 }) // writers exclude each other across processes
 * a.close(); SharedArray.delete('frame')
 * ```
 *
 * An array lives until `SharedArray.delete(name)` (or the end of the
 * {@link SharedMemoryManager} that created it): closing handles, the creator's included, only
 * unmaps it. Names are 1 to 20 characters of `[A-Za-z0-9_.-]`; the memory is the file
 * `/dev/shm/shmpipe_a_<name>` on Linux. An array created with `{ backing: 'memfd' }` instead
 * lives while some process holds it ({@link SharedArrayOptions.backing}).
 */
export class SharedArray<T extends SharedTypedArray = SharedTypedArray> implements Disposable {
  /** The array's name. */
  readonly name: string
  /** The element type. */
  readonly dtype: DType
  /** The dimensions (row-major: the last index varies fastest; `data` is flat). */
  readonly shape: readonly number[]
  /**
   * The elements, in place in shared memory (flat, row-major). After `close()` it is empty
   * (length 0): a closed handle never reads memory that may have been freed.
   */
  readonly data: T
  /** Where the memory lives ({@link SharedArrayOptions.backing}). */
  readonly backing: Backing
  #native: NativeArray | null
  #buffer: ArrayBuffer
  /** Settles when the last `withLock` queued on this handle is done with the lock. */
  #tail: Promise<void> = Promise.resolve()
  #queued = 0

  private constructor(handle: NativeArray) {
    this.#native = handle
    this.name = handle.name
    this.dtype = dtypeOf(handle.dtype)
    this.shape = Object.freeze(handle.shape)
    this.backing = handle.backing as Backing
    checkShape(this.shape, this.dtype)
    this.#buffer = call(() => handle.buffer())
    this.data = new CONSTRUCTORS[this.dtype](this.#buffer) as T
    nonces.set(this, { name: this.name, nonce: handle.nonce })
  }

  /**
   * Creates the array `name` of the given element type (a TypedArray constructor such as
   * `Float64Array`, or its dtype name such as `'float64'`) and shape, filled with zeros.
   *
   * Throws `ERR_SHMPIPE_EXISTS` if the name is taken, `ERR_SHMPIPE_INVALID_ARGUMENT` for a bad
   * name, dtype, shape or option, `ERR_SHMPIPE_TOO_LARGE` if the size overflows,
   * `ERR_SHMPIPE_NO_SPACE` if the system cannot reserve the memory. `options.backing` chooses
   * where the memory lives ({@link SharedArrayOptions.backing}; default `'shm'`).
   */
  static create<C extends DType | SharedTypedArrayConstructor>(
    name: string,
    type: C,
    shape: Shape,
    options?: SharedArrayOptions,
  ): SharedArray<ArrayOf<C>> {
    checkName(name)
    const dtype = dtypeOf(type)
    const dims = checkShape(shape, dtype)
    const o = checkOptions(options, 'SharedArray.create', ['backing'])
    const backing = checkChoice(o.backing, 'SharedArray.create', 'backing', BACKINGS)
    const handle = byName(name, () => native.NativeArray.create(name, dtype, dims, backing))
    try {
      return new SharedArray<ArrayOf<C>>(handle)
    } catch (err) {
      // Nothing may be left behind by a create that failed.
      const nonce = handle.nonce
      handle.close()
      removeIfSame(name, nonce)
      throw err
    }
  }

  /**
   * Attaches to the array `name` (created by any process); its dtype and shape come from the
   * segment. With `type`, also checks that the array holds that type
   * (`ERR_SHMPIPE_INVALID_ARGUMENT` otherwise), and types `data` accordingly.
   *
   * Throws `ERR_SHMPIPE_NOT_FOUND` if there is no such array, `ERR_SHMPIPE_BAD_SEGMENT` if the
   * segment is not a shared array of this version.
   */
  static attach(name: string): SharedArray
  static attach<C extends DType | SharedTypedArrayConstructor>(
    name: string,
    type: C,
  ): SharedArray<ArrayOf<C>>
  static attach(name: string, type?: DType | SharedTypedArrayConstructor): SharedArray {
    checkName(name)
    const expected = type === undefined ? undefined : dtypeOf(type)
    const handle = byName(name, () => native.NativeArray.open(name))
    try {
      if (expected !== undefined && handle.dtype !== expected) {
        throw invalid(`shared array ${JSON.stringify(name)} holds ${handle.dtype}, not ${expected}`)
      }
      return new SharedArray(handle)
    } catch (err) {
      handle.close()
      throw err
    }
  }

  /**
   * Removes the array `name`: no process can attach to it any more, and its memory is freed
   * once every handle on it is closed (open handles keep working). Throws `ERR_SHMPIPE_NOT_FOUND`
   * if it does not exist. A `'memfd'` array needs no delete: its name goes with its last holder.
   */
  static delete(name: string): void {
    checkName(name)
    byName(name, () => native.NativeArray.remove(name))
  }

  /**
   * The names of the shared arrays that exist now, sorted. Linux only: other systems cannot
   * enumerate shared memory (`ERR_SHMPIPE_UNSUPPORTED`).
   */
  static list(): string[] {
    return call(() => native.NativeArray.list())
  }

  /** Number of elements (the product of the shape); 0 once closed. */
  get length(): number {
    return this.data.length
  }

  /** Size of the data in bytes; 0 once closed. */
  get byteLength(): number {
    return this.data.byteLength
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#native === null
  }

  /** Whether this handle holds the lock. */
  get locked(): boolean {
    return this.#native?.holdsLock ?? false
  }

  #closedError(): ShmpipeError {
    return new ShmpipeError(ERR_SHMPIPE_CLOSED, `shared array ${JSON.stringify(this.name)} is closed`) // prettier-ignore
  }

  #handle(): NativeArray {
    if (this.#native === null) throw this.#closedError()
    return this.#native
  }

  /**
   * Takes the lock, blocking the thread while another handle (in any process) holds it, at most
   * `timeout` ms (`ERR_SHMPIPE_TIMEOUT`). A holder whose process died is taken over, within
   * about 100 ms of its death; the result then says `recovered: true`.
   *
   * The lock is not reentrant: locking again through the same handle, or while a `withLock` of
   * this handle is pending, throws `ERR_SHMPIPE_BUSY`.
   */
  lock(options: LockOptions = {}): LockInfo {
    const { timeout } = checkWaitOptions(options, 'lock', false)
    const handle = this.#handle()
    if (this.#queued > 0) {
      throw new ShmpipeError(ERR_SHMPIPE_BUSY, 'lock() cannot run while withLock calls on this handle are pending') // prettier-ignore
    }
    return lockInfo(call(() => handle.lockSync(timeout)))
  }

  /**
   * Takes the lock if it is free (or its holder died) without waiting; null otherwise, and while
   * a `withLock` of this handle is pending.
   */
  tryLock(): LockInfo | null {
    const handle = this.#handle()
    if (this.#queued > 0) return null
    const info = call(() => handle.tryLock())
    return info === null ? null : lockInfo(info)
  }

  /** Releases the lock; throws `ERR_SHMPIPE_LOCK_NOT_HELD` if this handle does not hold it. */
  unlock(): void {
    const handle = this.#handle()
    call(() => handle.unlock())
  }

  /**
   * Takes the lock without blocking the event loop (the wait happens on a native thread), runs
   * `fn` with it held, and releases it when `fn`'s result settles, whether it resolves or throws.
   * Resolves with `fn`'s result. `fn` is told how the lock was obtained (`info.recovered`).
   *
   * `timeout` (ms) and `signal` bound the wait for the lock, not `fn`. Calls on one handle run one
   * after another, in call order, so a `withLock` of the same handle called from inside `fn` and
   * awaited there waits for itself: the lock is not reentrant.
   */
  withLock<R>(
    fn: (info: LockInfo) => R | PromiseLike<R>,
    options: WithLockOptions = {},
  ): Promise<Awaited<R>> {
    let deadline: number | undefined
    let signal: AbortSignal | undefined
    try {
      const checked = checkWaitOptions(options, 'withLock', true)
      signal = checked.signal
      this.#handle()
      if (typeof fn !== 'function') throw invalid('withLock needs a function')
      signal?.throwIfAborted()
      deadline = checked.timeout === undefined ? undefined : performance.now() + checked.timeout
    } catch (err) {
      return Promise.reject(err)
    }
    const turn = this.#tail
    let done!: () => void
    this.#tail = new Promise<void>((resolve) => (done = resolve))
    this.#queued++
    let myTurn = false
    return (async (): Promise<Awaited<R>> => {
      try {
        await waitTurn(turn, deadline, signal)
        myTurn = true
        const info = await this.#acquire(deadline, signal)
        try {
          return await fn(info)
        } finally {
          if (this.#native?.holdsLock) call(() => this.#native!.unlock())
        }
      } finally {
        this.#queued--
        // A call that gave up while waiting in line still passes the turn on only after the call
        // before it is done.
        if (myTurn) done()
        else void turn.then(done)
      }
    })()
  }

  /** Takes the lock for `withLock`: at once if it is free, else on the native waiter thread. */
  async #acquire(deadline: number | undefined, signal: AbortSignal | undefined): Promise<LockInfo> {
    const handle = this.#handle()
    signal?.throwIfAborted()
    const now = call(() => handle.tryLock())
    if (now !== null) return lockInfo(now)
    const onAbort = (): void => handle.cancelLock()
    signal?.addEventListener('abort', onAbort, { once: true })
    try {
      const info = await callAsync(call(() => handle.lockAsync(remaining(deadline))))
      if (signal?.aborted) {
        // Taken just as the abort came: the caller asked to give up before `fn` ran.
        call(() => handle.unlock())
        throw signal.reason
      }
      return lockInfo(info)
    } catch (err) {
      if (this.#native === null) throw this.#closedError() // closed while waiting
      if (signal?.aborted) throw signal.reason
      throw err
    } finally {
      signal?.removeEventListener('abort', onAbort)
    }
  }

  /**
   * Closes this handle: `data` becomes empty (length 0), a pending `withLock` rejects with
   * `ERR_SHMPIPE_CLOSED`, and the lock is released if this handle holds it (the next holder is
   * told `recovered: true`, since whatever was being written under it was cut short). The array
   * itself stays until `SharedArray.delete(name)`.
   */
  close(): void {
    const handle = this.#native
    if (handle === null) return
    this.#native = null
    call(() => handle.close(this.#buffer))
  }

  /** Same as {@link SharedArray.close}. */
  [Symbol.dispose](): void {
    this.close()
  }
}
