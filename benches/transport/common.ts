/**
 * What every part of the transport benchmark shares: the sizes, the plan of a cell (warm-up,
 * rounds, queue depth), the payload and how a consumer checks it, and the control messages.
 *
 * A cell is one transport at one message size: one producer and one consumer, each in a process
 * of its own (worker_threads: a thread of the consumer's process). The producer first streams a
 * warm-up; then, for each timed round, it waits for the consumer's "go" (so the round starts with
 * an empty pipe), takes a start time and streams the round's messages. The consumer takes an end
 * time once it has received and checked the round's last message. A round's time is therefore
 * "producer starts sending → consumer holds the last message", read from `CLOCK_MONOTONIC`
 * (`process.hrtime.bigint()`), which all processes of a Linux machine share.
 *
 * @module
 */

import { fileURLToPath } from 'node:url'
import v8 from 'node:v8'

/**
 * The transports compared, in table order. `memcpy` is the one-process baseline; `shmpipe` is
 * received with `get()` (a copy the program owns), `shmpipe_receive` with `receive()` (zero copy).
 */
export const TRANSPORTS = [
  'memcpy',
  'shmpipe',
  'shmpipe_receive',
  'child_process',
  'zeromq',
  'worker_threads',
] as const
/** One of {@link TRANSPORTS}. */
export type Transport = (typeof TRANSPORTS)[number]

/** The message sizes of seed 000's table (decimal units, as there). */
export const SIZES = [10, 100, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9] as const

/**
 * The sizes `--quick` runs, with a 1 MiB shmpipe ring ({@link QUICK_PIPE_BYTES}): a small message
 * stored inline, and one that travels in a segment of its own.
 */
export const QUICK_SIZES = [100, 3e6] as const
/** The shmpipe ring of `--quick`. */
export const QUICK_PIPE_BYTES = 1 << 20

/** `benches/transport/role.ts`, the script every benchmark child process runs. */
export const roleScript = fileURLToPath(new URL('./role.ts', import.meta.url))
/** The repository's root: children run there, so that `--import=tsx` resolves. */
export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Node options of every child process: `--import=tsx`, then those in the environment variable
 * `SHMPIPE_BENCH_NODE_ARGS` (space-separated; e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`).
 */
export function childExecArgv(): string[] {
  const extra = process.env.SHMPIPE_BENCH_NODE_ARGS?.split(' ').filter((a) => a !== '') ?? []
  return ['--import=tsx', ...extra]
}

/** `10 B`, `1 KB`, `100 MB`, `1 GB` (decimal, as in the seed's table). */
export function sizeLabel(size: number): string {
  const units: [number, string][] = [
    [1e9, 'GB'],
    [1e6, 'MB'],
    [1e3, 'KB'],
  ]
  for (const [unit, name] of units) if (size >= unit) return `${+(size / unit).toFixed(2)} ${name}`
  return `${size} B`
}

/** How shmpipe's consumer takes messages (see `shmpipe.ts`). */
export type ShmpipeReceive = 'get' | 'get-nowait' | 'iterator' | 'receive'

/** Whether `t` is one of the ways of using shmpipe. */
export function isShmpipe(t: Transport): boolean {
  return t === 'shmpipe' || t === 'shmpipe_receive'
}

/** Everything a child process needs to run its side of a cell. */
export interface CellConfig {
  transport: Transport
  size: number
  /** Messages streamed before the timed rounds. */
  warmup: number
  /** Timed rounds. */
  rounds: number
  /** Each round aims at about this long (its message count comes from the warm-up's pace). */
  roundNs: number
  /** Fewest and most messages in a round. */
  minN: number
  maxN: number
  /**
   * Most messages in flight: shmpipe's capacity, zeromq's high-water marks, the sends of
   * `child_process` awaiting their callback, the unacknowledged posts of `worker_threads`.
   */
  window: number
  /** Bytes of the shmpipe ring (values over half of it travel in a segment of their own). */
  pipeBytes: number
  /** shmpipe only: how the consumer takes messages (`shmpipe_receive`: always `receive`). */
  shmpipeReceive: ShmpipeReceive
  /**
   * Check every byte and the order of every message (a fresh payload per message, stamped with
   * its sequence number), instead of the length and two bytes of one reused payload.
   */
  verify: boolean
  /** What each message is ({@link ValueShape}); a Buffer if unset. */
  shape?: ValueShape
  /**
   * shmpipe only: the consumer creates its pipe with the library's default options (no
   * `capacity`, no `bytes`) and forks the producer itself, so values go from a child process to
   * its parent as in a new user's first program. Unset: the benchmark's ring (`pipeBytes`,
   * `window`), with the producer started by the driver.
   */
  newUser?: boolean
  /** memcpy only: which copy ({@link MemcpyKind}); `ring` if unset. */
  memcpy?: MemcpyKind
}

/**
 * What a message is: `buffer`, a Buffer of the size; `float64array`, a Float64Array of size / 8
 * elements; `object`, `{ id, data }` with `data` such a Float64Array (a frame as the seeds send
 * it). The typed-array shapes need a size that is a multiple of 8.
 */
export type ValueShape = 'buffer' | 'float64array' | 'object'
/** Every {@link ValueShape}, in table order. */
export const SHAPES: readonly ValueShape[] = ['buffer', 'float64array', 'object']

/**
 * The memcpy baselines (`Buffer.copy` in one process):
 * - `ring`: one source into destinations spanning the shmpipe ring (`pipeBytes`);
 * - `cold`: source and destination both rotate over {@link COLD_SPAN} (or one message, if larger),
 *   so neither is in the cache: the cost of moving the bytes through memory once;
 * - `hot`: the same source into the same destination every time (in the cache up to its size).
 */
export type MemcpyKind = 'ring' | 'cold' | 'hot'
/** The span the `cold` memcpy's source and destination each rotate over: 512 MiB. */
export const COLD_SPAN = 512 * 1024 * 1024

/**
 * The benchmark's shmpipe ring: 64 MiB, the ring of the published figures (the library's default is
 * 16 MiB; `--pipe-bytes` sets another).
 */
export const PIPE_BYTES = 64 * 1024 * 1024

/** Values a shmpipe cell sends before its timed rounds when they travel in blobs. */
export const BLOB_POOL_WARMUP = 40

/** The plan of a cell: warm-up, rounds and queue depth scaled by the message size. */
export function planCell(
  transport: Transport,
  size: number,
  opts: { quick: boolean; shmpipeReceive: ShmpipeReceive; pipeBytes?: number },
): CellConfig {
  // In flight: about 256 MB worth (at least 2, at most 1024 messages), like the seed's
  // capacities of 1000 (small), 100 (100 MB) and 10 (1 GB), scaled for 24 GiB of memory.
  const window = Math.min(1024, Math.max(2, Math.floor(256e6 / size)))
  // The default ring, or one that holds two messages if they are larger: every message is then
  // stored inline (a larger one would travel in a segment of its own, a blob).
  const pipeBytes =
    opts.pipeBytes ?? Math.max(PIPE_BYTES, 2 ** Math.ceil(Math.log2(2 * size + 4096)))
  // shmpipe's warm-up laps the ring once, so that the timed rounds write into memory that the
  // processes have already mapped (the steady state of a long stream). A record is a 32-byte
  // header and the encoding (the value and a header of at most 16 bytes), in whole 64-byte lines.
  const record = Math.ceil((size + 48) / 64) * 64
  const lap = isShmpipe(transport) ? Math.ceil(pipeBytes / record) + 1 : 0
  // A value over half the ring travels in a blob, and the sender makes fresh blobs until it
  // keeps as many as the stream has in use at once (up to 32, MAX_KEPT in crates/core/src/blob.rs;
  // fewer for the largest values, which the keep budget limits): the warm-up sends that many.
  const blobs = isShmpipe(transport) && size > pipeBytes / 2 ? BLOB_POOL_WARMUP : 0
  const shmpipeReceive = transport === 'shmpipe_receive' ? 'receive' : opts.shmpipeReceive
  if (opts.quick) {
    return {
      transport,
      size,
      warmup: 2,
      rounds: 1,
      roundNs: 0,
      minN: 3,
      maxN: 3,
      window,
      pipeBytes: QUICK_PIPE_BYTES,
      shmpipeReceive,
      verify: true,
    }
  }
  return {
    transport,
    size,
    warmup: Math.max(lap, blobs, 1, Math.min(20_000, Math.floor(100e6 / size))),
    rounds: 3,
    roundNs: 250e6,
    minN: size >= 1e9 ? 2 : 3,
    maxN: 2_000_000,
    window,
    pipeBytes,
    shmpipeReceive,
    verify: false,
  }
}

/** Byte of the reused payload (`verify: false`). */
export const FILL = 0xa5

/** The byte at `i` of message `seq` when verifying. */
function stamp(seq: number, i: number): number {
  return (seq * 7 + i * 13) & 0xff
}

/**
 * A payload of `size` bytes that is not in Node's Buffer pool (so `worker_threads` clones only
 * these bytes): filled with {@link FILL}, or stamped with `seq` when verifying.
 */
export function makePayload(size: number, verify: boolean, seq: number): Buffer {
  if (!verify) return Buffer.alloc(size, FILL)
  const b = Buffer.allocUnsafeSlow(size)
  for (let i = 0; i < size; i++) b[i] = stamp(seq, i)
  return b
}

/** Element of the reused Float64Array payload (`verify: false`). */
export const FILL_F64 = 1.5

/** A Float64Array of `size / 8` elements: {@link FILL_F64}, or stamped with `seq`. */
function makeFloats(size: number, verify: boolean, seq: number): Float64Array {
  if (size % 8 !== 0) throw new Error(`a Float64Array payload needs a multiple of 8 bytes, not ${size}`) // prettier-ignore
  const a = new Float64Array(size / 8)
  if (!verify) return a.fill(FILL_F64)
  for (let i = 0; i < a.length; i++) a[i] = stamp(seq, i)
  return a
}

function checkFloats(m: unknown, size: number, verify: boolean, seq: number): boolean {
  if (!(m instanceof Float64Array) || m.length * 8 !== size) return false
  const n = m.length
  if (!verify) return m[0] === FILL_F64 && m[n - 1] === FILL_F64
  for (let i = 0; i < n; i++) if (m[i] !== stamp(seq, i)) return false
  return true
}

/** Message `seq` of the cell: of `cfg.shape`, `cfg.size` bytes of data ({@link makePayload}). */
export function makeValue(cfg: CellConfig, seq: number): unknown {
  const { size, verify } = cfg
  switch (cfg.shape ?? 'buffer') {
    case 'buffer':
      return makePayload(size, verify, seq)
    case 'float64array':
      return makeFloats(size, verify, seq)
    case 'object':
      return { id: verify ? seq : 0, data: makeFloats(size, verify, seq) }
  }
}

/** Whether `m` is message `seq` of the cell, checked as {@link checkMessage} does for Buffers. */
export function checkValue(m: unknown, cfg: CellConfig, seq: number): boolean {
  const { size, verify } = cfg
  switch (cfg.shape ?? 'buffer') {
    case 'buffer':
      return checkMessage(m, size, verify, seq)
    case 'float64array':
      return checkFloats(m, size, verify, seq)
    case 'object': {
      if (typeof m !== 'object' || m === null) return false
      const { id, data } = m as { id?: unknown; data?: unknown }
      return id === (verify ? seq : 0) && checkFloats(data, size, verify, seq)
    }
  }
}

/**
 * How a byte transport (zeromq) carries a message of `cfg.shape`: a Buffer as its bytes, any
 * other shape as `v8.serialize` writes it (what a user of such a transport has to do).
 */
export function toBytes(cfg: CellConfig, value: unknown): Buffer {
  return (cfg.shape ?? 'buffer') === 'buffer' ? (value as Buffer) : v8.serialize(value)
}

/** The value of a message {@link toBytes} made. */
export function fromBytes(cfg: CellConfig, bytes: Buffer): unknown {
  return (cfg.shape ?? 'buffer') === 'buffer' ? bytes : v8.deserialize(bytes)
}

/** Whether `m` is a payload rather than a control message (which is an object with a `type`). */
export function isPayload(m: unknown): boolean {
  return !(
    typeof m === 'object' &&
    m !== null &&
    typeof (m as { type?: unknown }).type === 'string'
  )
}

/**
 * Whether `m` is message `seq` of `size` bytes. Every transport's consumer calls this on every
 * message it receives, so that no transport can skip touching the data: without `verify`, the
 * length and the first and last bytes; with it, every byte.
 */
export function checkMessage(m: unknown, size: number, verify: boolean, seq: number): boolean {
  if (!(m instanceof Uint8Array) || m.length !== size) return false
  if (!verify) return m[0] === FILL && m[size - 1] === FILL
  for (let i = 0; i < size; i++) if (m[i] !== stamp(seq, i)) return false
  return true
}

/** Now, in ns, on the clock every process of the machine shares (CLOCK_MONOTONIC). */
export function now(): bigint {
  return process.hrtime.bigint()
}

/** The message count of a timed round, given the warm-up's pace (ns per message, if known). */
export function roundCount(cfg: CellConfig, nsPerMessage: number | undefined): number {
  if (nsPerMessage === undefined || !(nsPerMessage > 0)) return cfg.minN
  return Math.max(cfg.minN, Math.min(cfg.maxN, Math.round(cfg.roundNs / nsPerMessage)))
}

// ---------------------------------------------------------------------------------------------
// Control messages (JSON over the IPC channel of `fork`, or over the transport's own channel for
// child_process and worker_threads). Times are decimal strings of ns (bigints do not go in JSON).

/** Consumer → driver: set up; `endpoint` is what the producer attaches to. */
export interface ReadyMessage {
  type: 'ready'
  endpoint: string
}
/** Consumer → driver → producer (or consumer → producer): stream a round of `n` messages. */
export interface GoMessage {
  type: 'go'
  n: number
}
/** Producer → driver (or → consumer): the start time of each timed round. */
export interface StartsMessage {
  type: 'starts'
  starts: string[]
}
/** Consumer → driver: what it received, and the end time of each timed round. */
export interface ResultMessage {
  type: 'result'
  /** Messages of each timed round. */
  counts: number[]
  /** End time of each timed round. */
  ends: string[]
  /** Start time of each timed round, when the consumer relays them (child_process, workers). */
  starts?: string[]
  /** Messages received, warm-up included, and how many of them failed the check. */
  delivered: number
  bad: number
}
/** memcpy child → driver: ns for each round of `counts[i]` copies. */
export interface MemcpyResultMessage {
  type: 'memcpy'
  counts: number[]
  ns: number[]
  /** Copies made, warm-up included, and how many of the checked ones were wrong. */
  delivered: number
  bad: number
}
/** Consumer → producer (worker_threads): messages received so far (the producer's window). */
export interface AckMessage {
  type: 'ack'
  delivered: number
}
/** A child that failed. */
export interface ErrorMessage {
  type: 'error'
  message: string
}

/** Any control message. */
export type ControlMessage =
  | ReadyMessage
  | GoMessage
  | StartsMessage
  | ResultMessage
  | MemcpyResultMessage
  | AckMessage
  | ErrorMessage

/** Whether `m` is a control message of `type`. */
export function isControl<T extends ControlMessage['type']>(
  m: unknown,
  type: T,
): m is Extract<ControlMessage, { type: T }> {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === type
}
