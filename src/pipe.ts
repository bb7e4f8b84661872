/**
 * Sender and Receiver: the ends of a shared-memory pipe, and `createSharedMemoryPair`.
 *
 * Values are encoded by the codec straight into the queue's shared memory (small values through
 * a reused scratch buffer, large ones written in place), and decoded on the other side from a
 * copy that the receiving program owns (inline messages) or from the message's own segment,
 * mapped without a copy (messages too large for the ring).
 *
 * Order: each end runs its asynchronous calls one after another, so values arrive in the order
 * `put` was called. Async waits happen on a native waiter thread, never on the event loop nor on
 * libuv's thread pool.
 *
 * @module
 */

import { decode, encode, MAX_VIEW_HEADER, writeEncoded, type Encoded } from './codec.js'
import { decodePrefix } from './codec/decode.js'
import { gatheredParts, viewParts } from './codec/encode.js'
import {
  ERR_SHMPIPE_BUSY,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_NOT_FOUND,
  ERR_SHMPIPE_TIMEOUT,
  ShmpipeError,
} from './errors.js'
import {
  call,
  callAsync,
  native,
  type NativeConsumer,
  type NativeConsumerHandle,
  type NativeMessage,
  type NativeProducer,
  type NativeProducerHandle,
  type NativeQueue,
} from './native.js'
import { registerOpenEnd, unregisterOpenEnd } from './lifecycle.js'
import {
  checkChoice,
  checkOptions,
  checkString,
  checkWaitOptions,
  checkWholeNumber,
} from './options.js'

/**
 * Sizes of a pipe, chosen when it is created. Each is a whole number in its range; another value,
 * or an option of another name, is `ERR_SHMPIPE_INVALID_ARGUMENT`.
 */
export interface PipeOptions {
  /** Most values in flight (sent and not yet received), 1 to 8388607. Default 1024. */
  capacity?: number
  /**
   * Bytes of shared memory for values stored inline, rounded up to a power of two (default
   * 16 MiB, so that a couple of pipes and large values fit in a Docker container's 64 MB
   * `/dev/shm`). Values up to about half of it are stored inline; larger ones travel in a segment
   * of their own, so there is no size limit but memory.
   */
  bytes?: number
  /** Most senders attached at once, 1 to 4096. Default 64. */
  maxSenders?: number
  /**
   * Where the pipe's memory lives. `'memfd'` (the default on Linux): sealed anonymous memory that
   * the kernel frees when the last process holding it exits, however it exits, that nobody can
   * truncate, and that `/dev/shm`'s size does not limit; it is found by name through `/proc`, so
   * every process of the pipe must see the others there (the same PID namespace). `'shm'` (the
   * default elsewhere): a named segment in `/dev/shm`, for processes that share only `/dev/shm`
   * (containers started with `--ipc=host`, say). The `SHMPIPE_BACKING` environment variable sets
   * the default.
   */
  backing?: Backing
}

/** Where a pipe's memory lives: see {@link PipeOptions.backing}. */
export type Backing = 'shm' | 'memfd'

const BACKINGS: readonly Backing[] = ['shm', 'memfd']

/**
 * @internal The backing option `value` of `where` checked, or the default for pipes when it is
 * `undefined` (`SHMPIPE_BACKING`, else `'memfd'` on Linux and `'shm'` elsewhere).
 */
export function pipeBacking(value: unknown, where: string): Backing {
  return (
    checkChoice(value, where, 'backing', BACKINGS) ??
    (call(() => native.defaultPipeBacking()) as Backing)
  )
}

/** Options of a call that may wait. */
export interface WaitOptions {
  /**
   * Milliseconds to wait at most; then the call fails with `ERR_SHMPIPE_TIMEOUT`. `Infinity`, or
   * anything above 2³¹−1 (about 24.8 days, the longest Node.js timer), means no timeout.
   */
  timeout?: number
  /** Aborts the wait; the call then rejects with the signal's reason. */
  signal?: AbortSignal
}

const DEFAULT_CAPACITY = 1024
const DEFAULT_BYTES = 16 * 1024 * 1024
const DEFAULT_MAX_SENDERS = 64
/** The ranges of the pipe's sizes (as in the native core, `crates/core/src/queue/layout.rs`). */
const MAX_CAPACITY = 2 ** 23 - 1
const MAX_SENDERS = 4096

/** Encodings at least this long are written in place into shared memory, not copied. */
const IN_PLACE_THRESHOLD = 64 * 1024

/**
 * Binary parts at least this long are copied into a reservation by the addon, which streams a
 * large copy past the cache where that is faster (`crates/core/src/copy.rs`; the measurements:
 * `docs/decisions/2026-11-21-streaming-copies.md`); shorter ones by `set`, cheaper than a call
 * into the addon.
 */
const NATIVE_COPY_BYTES = 64 * 1024
/**
 * Waits that involve messages at least this long do not spin before they sleep (the waiter
 * thread otherwise polls the queue for a while first, which catches the next small message
 * without a sleep and a wake-up). Such a message takes longer to copy than the spin lasts, and
 * the spinning thread slows the other side's copy: on this project's VM a thread busy on the
 * other vCPU, even one only polling, halves the speed of a memcpy (11 → 6 GB/s).
 */
const NO_SPIN_BYTES = 64 * 1024

/**
 * Inline messages up to this long are received by copying them into {@link recvScratch} and
 * decoding from there (one native call, no Buffer made by the addon); longer ones come as a
 * Buffer of their own, which the decoder's views may then share.
 */
const RECV_SCRATCH_BYTES = 4096

/** Where small messages are received (reused: decoding copies everything out of it at once). */
const recvScratch = new Uint8Array(RECV_SCRATCH_BYTES)

const ZERO_COPY = { zeroCopy: true } as const

/** Marks "no value" where `undefined` is a value. */
const NONE: unique symbol = Symbol('none')

/** Resolves with `value` after one turn of the event loop (a `setImmediate`). */
function afterTurn<T>(value: T): Promise<T> {
  return new Promise((resolve) => setImmediate(resolve, value))
}

/** A native queue handle shared by the ends made from it; closed with the last of them. */
class QueueRef {
  #refs = 0
  constructor(readonly queue: NativeQueue) {}
  acquire(): this {
    this.#refs++
    return this
  }
  release(): void {
    if (--this.#refs === 0) this.queue.close()
  }
}

let scratch = new Uint8Array(0)

/** Where the header of a lone binary value is written before it is sent with its bytes. */
const viewHead = new Uint8Array(MAX_VIEW_HEADER)

/** A reusable buffer of at least `len` bytes (its own ArrayBuffer, so offset 0 is aligned). */
function scratchBuffer(len: number): Uint8Array {
  if (scratch.byteLength < len) {
    scratch = new Uint8Array(Math.max(len, 2 * scratch.byteLength, 4096))
  }
  return scratch.subarray(0, len)
}

/** Milliseconds left until `deadline` (undefined: no deadline). */
function remaining(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : Math.max(0, deadline - performance.now())
}

/** Awaits a native wait, cancelling it when `signal` aborts (then rejecting with its reason). */
async function nativeWait(
  start: () => Promise<void>,
  cancel: () => void,
  signal: AbortSignal | undefined,
  closed: () => ShmpipeError | undefined,
): Promise<void> {
  signal?.throwIfAborted()
  const onAbort = (): void => cancel()
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    await callAsync(call(start))
  } catch (err) {
    // A wait interrupted by this end's close() reports the close, not the interruption.
    const closedError = closed()
    if (closedError !== undefined) throw closedError
    if (signal?.aborted) throw signal.reason
    throw err
  } finally {
    signal?.removeEventListener('abort', onAbort)
  }
}

/**
 * Runs async calls of one end one after another, so they keep their order. A call waiting for its
 * turn still honours its own deadline and abort signal: it rejects as soon as either fires, and
 * is skipped when its turn comes.
 */
class Sequencer {
  #tail: Promise<void> = Promise.resolve()
  #pending = 0

  /** Calls in flight. */
  get pending(): number {
    return this.#pending
  }

  run<T>(
    task: () => Promise<T>,
    deadline: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<T> {
    this.#pending++
    let settled = false
    let timer: ReturnType<typeof setTimeout> | undefined
    let rejectEarly: (err: unknown) => void = () => {}
    const onAbort = (): void => rejectEarly(signal!.reason)
    const stopWatching = (): void => {
      if (timer !== undefined) clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
    }
    const result = new Promise<T>((resolve, reject) => {
      rejectEarly = (err) => {
        if (settled) return
        settled = true
        stopWatching()
        reject(err)
      }
      this.#tail = this.#tail.then(async () => {
        if (settled) {
          this.#pending-- // gave up while waiting in line
          return
        }
        stopWatching()
        // The count drops before the caller resumes, so a sync call made right after an
        // awaited call does not see it as still pending.
        try {
          const value = await task()
          settled = true
          this.#pending--
          resolve(value)
        } catch (err) {
          settled = true
          this.#pending--
          reject(err)
        }
      })
    })
    if (deadline !== undefined) {
      timer = setTimeout(
        () => rejectEarly(new ShmpipeError(ERR_SHMPIPE_TIMEOUT, 'timed out')),
        Math.max(0, deadline - performance.now()),
      )
    }
    signal?.addEventListener('abort', onAbort, { once: true })
    return result
  }
}

/** Opens the pipe `name` for `where` (`Sender.attach`…), saying "pipe" where the core says segment. */
function openPipe(name: unknown, where: string): QueueRef {
  const checked = checkString(name, where, 'name')
  try {
    return new QueueRef(call(() => native.NativeQueue.open(checked)))
  } catch (err) {
    if (err instanceof ShmpipeError && err.code === ERR_SHMPIPE_NOT_FOUND) {
      throw new ShmpipeError(err.code, `${where}: no pipe named ${JSON.stringify(checked)} exists`, { cause: err }) // prettier-ignore
    }
    throw err
  }
}

function busy(what: string): ShmpipeError {
  return new ShmpipeError(
    ERR_SHMPIPE_BUSY,
    `${what} cannot run while asynchronous calls on this end are pending`,
  )
}

function closedEnd(what: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_CLOSED, `this ${what} is closed`)
}

/** Anything an end registers with the pipe: a native sender or receiver. */
interface NativeEnd {
  close(): void
}

/**
 * What both ends share: the queue handle, registration with the pipe (at once, or on first use so
 * that an unused end never counts as an end that came and went), the closed state, and the order
 * of async calls.
 */
class EndState<N extends NativeEnd> {
  readonly seq = new Sequencer()
  #native: N | null = null
  #closed = false

  constructor(
    readonly queue: QueueRef,
    readonly kind: 'sender' | 'receiver',
    private readonly register: (queue: NativeQueue) => N,
    eager: boolean,
  ) {
    queue.acquire()
    if (eager) {
      try {
        this.native
      } catch (err) {
        queue.release()
        throw err
      }
    }
  }

  /** The registered native end (registering it on first use). */
  get native(): N {
    this.#native ??= call(() => this.register(this.queue.queue))
    return this.#native
  }

  /** The native end if it has registered. */
  get registered(): N | null {
    return this.#native
  }

  get closed(): boolean {
    return this.#closed
  }

  /** The error for using this end after `close()`, if it is closed. */
  closedError(): ShmpipeError | undefined {
    return this.#closed ? closedEnd(this.kind) : undefined
  }

  check(): void {
    const err = this.closedError()
    if (err !== undefined) throw err
  }

  /** Closes the end; returns false if it was already closed. */
  close(): boolean {
    if (this.#closed) return false
    this.#closed = true
    this.#native?.close()
    this.queue.release()
    return true
  }
}

/**
 * The sending end of a pipe. Many senders, in any processes, may feed one receiver; each
 * sender's values arrive in the order it sent them.
 */
export class Sender implements Disposable {
  /**
   * The pipe's name: pass it to another process, which calls `Sender.attach(name)` or
   * `Receiver.attach(name)`.
   */
  readonly name: string
  /** Where the pipe's memory lives ({@link PipeOptions.backing}). */
  readonly backing: Backing
  #end: EndState<NativeProducer>
  #handle: NativeProducerHandle | null = null

  /**
   * Not for users (its parameter types are not exported): use {@link createSharedMemoryPair} or
   * {@link Sender.attach}. An `eager` end registers with the pipe at once; otherwise on first
   * use, so that an end that is never used (handed over to another process by name) never counts
   * as a sender that came and went.
   */
  constructor(queue: QueueRef, eager: boolean) {
    this.name = queue.queue.name
    this.backing = queue.queue.backing as Backing
    this.#end = new EndState(queue, 'sender', (q) => q.producer(), eager)
    registerOpenEnd(this)
  }

  /**
   * Attaches a new sender to the pipe named `name` (created by any process). Throws
   * `ERR_SHMPIPE_CLOSED` if nothing it sent would be received: the pipe's receiver was closed, or
   * the pipe's stream has ended (see {@link Receiver}).
   */
  static attach(name: string): Sender {
    return new Sender(openPipe(name, 'Sender.attach'), true)
  }

  get #producer(): NativeProducer {
    return this.#end.native
  }

  /** The sender's handle for the addon's fast functions. */
  get #fast(): NativeProducerHandle {
    this.#handle ??= call(() => this.#producer.handle())
    return this.#handle
  }

  /** Writes `enc` into the queue if it fits now. */
  #trySend(enc: Encoded): boolean {
    const len = enc.byteLength
    const parts = viewParts(enc, viewHead)
    if (parts !== null) {
      // A lone Buffer or typed array: the addon copies header and bytes straight into place.
      const handle = this.#fast
      return call(() => native.producerTrySendParts(handle, viewHead, parts.headLength, parts.body))
    }
    if (len < IN_PLACE_THRESHOLD) {
      const buf = scratchBuffer(len)
      enc.writeTo(buf)
      const handle = this.#fast
      return call(() => native.producerTrySend(handle, buf))
    }
    const gathered = gatheredParts(enc)
    if (gathered !== null) {
      // Binary parts and the bytes around them: the addon copies each straight into place.
      const { bytes, at, parts } = gathered
      const handle = this.#fast
      return call(() => native.producerTrySendGathered(handle, bytes, bytes.byteLength, at, parts))
    }
    const producer = this.#producer
    const target = call(() => producer.tryReserve(len))
    if (target === null) return false
    try {
      writeEncoded(enc, new Uint8Array(target), (view, at, bytes) => {
        if (bytes.byteLength >= NATIVE_COPY_BYTES) call(() => producer.writeReserved(at, bytes))
        else view.set(bytes, at)
      })
    } catch (err) {
      producer.abort(target)
      throw err
    }
    call(() => producer.commit(target))
    return true
  }

  /**
   * Sends `value`; resolves once it is in the queue, waiting while the queue is full.
   *
   * The value is validated and measured at once (an unsupported value rejects with
   * `ERR_SHMPIPE_UNSUPPORTED_TYPE` and nothing is sent); it is read when it is written into the
   * queue, so do not change it before the promise resolves.
   */
  put(value: unknown, options: WaitOptions = {}): Promise<void> {
    try {
      const { timeout, signal } = checkWaitOptions(options, 'put', true)
      this.#end.check()
      signal?.throwIfAborted()
      const enc = encode(value)
      if (this.#end.seq.pending === 0 && this.#trySend(enc)) return Promise.resolve()
      const deadline = timeout === undefined ? undefined : performance.now() + timeout
      return this.#end.seq.run(() => this.#putWaiting(enc, deadline, signal), deadline, signal)
    } catch (err) {
      return Promise.reject(err)
    }
  }

  async #putWaiting(
    enc: Encoded,
    deadline: number | undefined,
    signal: AbortSignal | undefined,
  ): Promise<void> {
    for (;;) {
      this.#end.check()
      signal?.throwIfAborted()
      if (this.#trySend(enc)) return
      await nativeWait(
        () =>
          this.#producer.waitSpace(
            enc.byteLength,
            remaining(deadline),
            enc.byteLength >= NO_SPIN_BYTES ? 0 : undefined,
          ),
        () => this.#producer.cancelWait(),
        signal,
        () => this.#end.closedError(),
      )
    }
  }

  /**
   * Sends `value`, blocking the thread while the queue is full (at most `timeout` ms).
   * Throws `ERR_SHMPIPE_BUSY` while asynchronous `put`s of this sender are pending.
   */
  putSync(value: unknown, options: { timeout?: number } = {}): void {
    const { timeout } = checkWaitOptions(options, 'putSync', false)
    this.#end.check()
    if (this.#end.seq.pending > 0) throw busy('putSync')
    const enc = encode(value)
    if (this.#trySend(enc)) return
    // Waiting: encode into a buffer of its own (the scratch buffer may be reused meanwhile).
    const buf = new Uint8Array(enc.byteLength)
    enc.writeTo(buf)
    call(() => this.#producer.sendSync(buf, timeout))
  }

  /** Sends `value` if the queue has room now; returns whether it was sent. */
  tryPut(value: unknown): boolean {
    this.#end.check()
    const enc = encode(value)
    if (this.#end.seq.pending > 0) return false
    return this.#trySend(enc)
  }

  /**
   * Whether a value would be accepted now: `value`'s encoded size if given, else the smallest
   * value.
   */
  hasSpace(value?: unknown): boolean {
    if (this.#end.closed || this.#end.seq.pending > 0) return false
    const len = arguments.length === 0 ? 1 : encode(value).byteLength
    return call(() => this.#producer.hasSpace(len))
  }

  /** Values this sender has put into the queue. */
  get sent(): number {
    const p = this.#end.registered
    return this.#end.closed || p === null ? 0 : call(() => p.sent)
  }

  /** Values of this sender the receiver has taken. */
  get acked(): number {
    const p = this.#end.registered
    return this.#end.closed || p === null ? 0 : call(() => p.acked)
  }

  /** Resolves once the receiver has taken every value this sender put (pending puts first). */
  waitForAllAck(options: WaitOptions = {}): Promise<void> {
    try {
      const { timeout, signal } = checkWaitOptions(options, 'waitForAllAck', true)
      this.#end.check()
      const deadline = timeout === undefined ? undefined : performance.now() + timeout
      return this.#end.seq.run(
        () => {
          this.#end.check()
          return nativeWait(
            () => this.#producer.waitForAllAck(remaining(deadline)),
            () => this.#producer.cancelWait(),
            signal,
            () => this.#end.closedError(),
          )
        },
        deadline,
        signal,
      )
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /** Closes the sender. Pending calls reject with `ERR_SHMPIPE_CLOSED`; the receiver's
   * iteration ends once every sender has closed. */
  close(): void {
    if (this.#end.close()) unregisterOpenEnd(this)
  }

  /** Same as {@link Sender.close}. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/** Bytes of the message behind the last {@link ReceivedMessage} made. */
let lastReceivedLength = 0

/** A value received without a copy: its binary parts are views into shared memory. */
export class ReceivedMessage implements Disposable {
  /**
   * The value. Its typed arrays and Buffers are valid until {@link ReceivedMessage.release}; their
   * `ArrayBuffer` must not be moved (`transfer()`) while the message is in use (see `release`).
   */
  readonly value: unknown
  #message: NativeMessage | null
  #buffer: ArrayBuffer

  /** Not for users (its parameter type is not exported): made by {@link Receiver.receive}. */
  constructor(message: NativeMessage) {
    this.#message = message
    this.#buffer = call(() => message.buffer())
    lastReceivedLength = this.#buffer.byteLength
    this.value = decode(new Uint8Array(this.#buffer), { zeroCopy: true })
  }

  /**
   * Gives the shared memory back. Every view inside `value` becomes empty (length 0): a released
   * view never shows another message's bytes. If the value's `ArrayBuffer` was moved away
   * (`ArrayBuffer.prototype.transfer()`), the moved buffer keeps the message instead, and its
   * memory in the pipe is given back only when that buffer is garbage-collected: until then the
   * pipe has that much less room.
   */
  release(): void {
    const message = this.#message
    if (message === null) return
    this.#message = null
    call(() => message.release(this.#buffer))
  }

  /** Same as {@link ReceivedMessage.release}. */
  [Symbol.dispose](): void {
    this.release()
  }
}

/**
 * The receiving end of a pipe. A pipe has one receiver at a time.
 *
 * The end of the stream: the stream ends when the receiver, finding the pipe empty (in any
 * `get`, `getSync`, `getNowait`, `receive` or the iteration), sees that every sender that
 * attached has closed. From then on every one of those calls fails with `ERR_SHMPIPE_CLOSED` at
 * once, and `Sender.attach` refuses new senders with `ERR_SHMPIPE_CLOSED` (a sender that attached
 * before the receiver looked is read first). A sender that died is not an end: the receiver's
 * waits reject with `ERR_SHMPIPE_PEER_GONE` (within about 100 ms) while no sender is alive, and a
 * new sender may still attach.
 */
export class Receiver implements Disposable, AsyncIterable<unknown> {
  /** The pipe's name. */
  readonly name: string
  /** Where the pipe's memory lives ({@link PipeOptions.backing}). */
  readonly backing: Backing
  #end: EndState<NativeConsumer>
  #handle: NativeConsumerHandle | null = null
  #syncHandle: NativeConsumerHandle | null = null
  /** Bytes of the last message taken (how long the next wait may spin depends on it). */
  #lastLength = 0
  /** Whether the value just taken must wait for a turn of the event loop ({@link #handOut}). */
  #turnDue = false

  /**
   * Not for users (its parameter types are not exported): use {@link createSharedMemoryPair} or
   * {@link Receiver.attach}. An `eager` end registers at once; otherwise on first use, so that
   * an unused receiver can be closed and the role taken by another process (`Receiver.attach`).
   * A receiver that was used and closed ends the pipe's receiving side for good.
   */
  constructor(queue: QueueRef, eager: boolean) {
    this.name = queue.queue.name
    this.backing = queue.queue.backing as Backing
    this.#end = new EndState(queue, 'receiver', (q) => q.consumer(), eager)
    registerOpenEnd(this)
  }

  /**
   * Attaches as the receiver of the pipe named `name`. Throws `ERR_SHMPIPE_RECEIVER_TAKEN` while
   * another receiver is attached, and `ERR_SHMPIPE_CLOSED` once a receiver of the pipe was used
   * and closed: a pipe takes no other receiver after that (only one whose process died is
   * replaced).
   */
  static attach(name: string): Receiver {
    return new Receiver(openPipe(name, 'Receiver.attach'), true)
  }

  get #consumer(): NativeConsumer {
    return this.#end.native
  }

  /** The receiver's handle for the addon's fast functions. */
  get #fast(): NativeConsumerHandle {
    this.#handle ??= call(() => this.#consumer.handle(false))
    return this.#handle
  }

  /** The same for callers that cannot turn the event loop ({@link Receiver.#tryTake}). */
  get #fastSync(): NativeConsumerHandle {
    this.#syncHandle ??= call(() => this.#consumer.handle(true))
    return this.#syncHandle
  }

  /**
   * The next value if one is ready, else {@link NONE}. `sync`: the caller cannot turn the event
   * loop, so past the bound of external bytes not yet finalized a large value is copied into a
   * Buffer Node allocates. Otherwise {@link Receiver.#turnDue} says whether the caller must turn
   * the loop before handing the value out.
   */
  #tryTake(sync: boolean): unknown {
    const handle = sync ? this.#fastSync : this.#fast
    const got = call(() => native.consumerTryRecvInto(handle, recvScratch))
    if (got === null) return NONE
    // A small message was copied into the scratch buffer: decoding copies it out.
    if (typeof got === 'number') {
      this.#lastLength = got
      return decodePrefix(recvScratch, got)
    }
    this.#lastLength = got.byteLength
    if (!sync) this.#turnDue = native.externalOverBound()
    // The buffer is ours alone (a copy, or the message's own segment, which its sender writes
    // again only after this buffer is collected): views into it are safe.
    return decode(got, ZERO_COPY)
  }

  /**
   * `value`, resolved after a turn of the event loop if the last take left more external bytes
   * unfinalized than their bound: their finalizers run only at such a turn, and a receiver whose
   * values are always ready would otherwise never give the memory back.
   */
  #handOut<T>(value: T): T | Promise<T> {
    if (!this.#turnDue) return value
    this.#turnDue = false
    return afterTurn(value)
  }

  /** Waits for a message and takes it with `take`. */
  #waitFor<T>(take: () => T | typeof NONE, options: WaitOptions, where: string): Promise<T> {
    try {
      const { timeout, signal } = checkWaitOptions(options, where, true)
      this.#end.check()
      signal?.throwIfAborted()
      if (this.#end.seq.pending === 0) {
        const v = take()
        // A turn of the loop due goes through the sequencer, so later calls resolve after it.
        if (v !== NONE)
          return this.#turnDue
            ? this.#end.seq.run(async () => this.#handOut(v), undefined, undefined)
            : Promise.resolve(v)
      }
      const deadline = timeout === undefined ? undefined : performance.now() + timeout
      return this.#end.seq.run(
        async () => {
          for (;;) {
            this.#end.check()
            signal?.throwIfAborted()
            const v = take()
            if (v !== NONE) return this.#handOut(v)
            await nativeWait(
              () =>
                this.#consumer.waitReady(
                  remaining(deadline),
                  this.#lastLength >= NO_SPIN_BYTES ? 0 : undefined,
                ),
              () => this.#consumer.cancelWait(),
              signal,
              () => this.#end.closedError(),
            )
          }
        },
        deadline,
        signal,
      )
    } catch (err) {
      return Promise.reject(err)
    }
  }

  /**
   * The next value, waiting while the pipe is empty. Rejects with `ERR_SHMPIPE_CLOSED` once the
   * stream has ended (the pipe is drained and every sender has closed: at once, every time after
   * that), `ERR_SHMPIPE_PEER_GONE` if a sender died instead.
   */
  get(options: WaitOptions = {}): Promise<unknown> {
    return this.#waitFor(() => this.#tryTake(false), options, 'get')
  }

  /** The next value, blocking the thread while the pipe is empty (at most `timeout` ms). */
  getSync(options: { timeout?: number } = {}): unknown {
    const { timeout } = checkWaitOptions(options, 'getSync', false)
    this.#end.check()
    if (this.#end.seq.pending > 0) throw busy('getSync')
    return decode(
      call(() => this.#consumer.recvSync(timeout)),
      { zeroCopy: true },
    )
  }

  /**
   * The next value if one is ready now, else `undefined` (also while a `get` is pending). Throws
   * `ERR_SHMPIPE_CLOSED` once the stream has ended, like `get`.
   */
  getNowait(): unknown {
    this.#end.check()
    if (this.#end.seq.pending > 0) return undefined
    const v = this.#tryTake(true)
    return v === NONE ? undefined : v
  }

  /** The next value without copying: call `release()` (or `using`) when done with it. */
  receive(options: WaitOptions = {}): Promise<ReceivedMessage> {
    return this.#waitFor(
      () => {
        const m = call(() => this.#consumer.tryRecvView())
        if (m === null) return NONE
        const msg = new ReceivedMessage(m)
        this.#lastLength = lastReceivedLength
        return msg
      },
      options,
      'receive',
    )
  }

  /** Yields values until every sender has closed and the pipe is drained. */
  async *[Symbol.asyncIterator](): AsyncGenerator<unknown, void, undefined> {
    for (;;) {
      try {
        yield await this.get()
      } catch (err) {
        if (err instanceof ShmpipeError && err.code === ERR_SHMPIPE_CLOSED && !this.#end.closed) {
          return
        }
        throw err
      }
    }
  }

  /**
   * Closes the receiver. If it was used, waiting senders then fail with `ERR_SHMPIPE_CLOSED`, and
   * the pipe takes no other receiver and no new sender. A receiver of a pair that was never used
   * only hands its role on: senders keep waiting for a receiver to attach.
   */
  close(): void {
    // Unused: the role goes to whoever attaches, and so do the values sent meanwhile.
    if (!this.#end.closed && this.#end.registered === null)
      this.#end.queue.queue.holdReceiverRole(false)
    if (this.#end.close()) unregisterOpenEnd(this)
  }

  /** Same as {@link Receiver.close}. */
  [Symbol.dispose](): void {
    this.close()
  }
}

/**
 * Creates a pipe and returns its two ends. This process owns the pipe's shared memory: it is
 * removed when both ends are closed, or when the process exits normally.
 *
 * As with a pipe's write end after a fork, the returned sender holds the stream open until it is
 * closed: close it once the other senders have attached (for example after their first values),
 * and the receiver's iteration ends when they have all closed. The returned receiver registers on
 * first use, so a process that does not receive can close it and let another process take the
 * role (`Receiver.attach`).
 */
export function createSharedMemoryPair(options: PipeOptions = {}): [Sender, Receiver] {
  const where = 'createSharedMemoryPair'
  const o = checkOptions(options, where, ['capacity', 'bytes', 'maxSenders', 'backing'])
  const capacity = checkWholeNumber(o.capacity, `${where}: capacity`, 1, MAX_CAPACITY, DEFAULT_CAPACITY) // prettier-ignore
  const bytes = checkWholeNumber(o.bytes, `${where}: bytes`, 1, Number.MAX_SAFE_INTEGER, DEFAULT_BYTES) // prettier-ignore
  const maxSenders = checkWholeNumber(o.maxSenders, `${where}: maxSenders`, 1, MAX_SENDERS, DEFAULT_MAX_SENDERS) // prettier-ignore
  const backing = checkChoice(o.backing, where, 'backing', BACKINGS)
  const ref = new QueueRef(call(() => native.NativeQueue.create(capacity, bytes, maxSenders, backing))) // prettier-ignore
  ref.acquire() // held until both ends exist, so a failure below cannot close it early
  try {
    const sender = new Sender(ref, true)
    try {
      const receiver = new Receiver(ref, false)
      // Until it registers or is closed, the receiver role is this process's: a signal that ends
      // it removes the large values it sent and nobody received.
      ref.queue.holdReceiverRole(true)
      return [sender, receiver]
    } catch (err) {
      sender.close()
      throw err
    }
  } finally {
    ref.release()
  }
}
