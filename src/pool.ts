/**
 * ProcessPool: a pool of worker processes that run the named exports of a module, with
 * arguments and results moved through shared memory (after npshmex, seed 001).
 *
 * Each worker is a `node` process started with this process's `execArgv` (so that a program run
 * under `tsx` gets workers that load TypeScript too). The pool creates and owns two shmpipe pipes
 * per worker: tasks go out on one, results come back on the other. Everything a task carries
 * travels through them, encoded by the codec with typed arrays and Buffers stored raw: a large
 * array is copied once into shared memory by the sender and read from there by the receiver.
 * The child process has no IPC channel; its stdio is this process's. A worker ends soon after
 * this process is gone, however it ended (SIGKILL included), even in the middle of a synchronous
 * task (`watchParent` in `pool-worker.ts`; on Unix).
 *
 * A worker runs one task at a time. A task goes to an idle worker (the one that became idle last,
 * whose pipes' memory and caches are warm), or waits in a queue. A worker that dies fails its
 * task with `ERR_SHMPIPE_WORKER_DIED` and is replaced.
 *
 * @module
 */

import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, statfsSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { extname, resolve as resolvePath } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { encode, ERROR_CTORS } from './codec.js'
import {
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_PEER_GONE,
  ERR_SHMPIPE_TASK_FAILED,
  ERR_SHMPIPE_TOO_LARGE,
  ERR_SHMPIPE_NO_SPACE,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ERR_SHMPIPE_WORKER_DIED,
  ERR_SHMPIPE_WORKER_START_FAILED,
  ShmpipeError,
} from './errors.js'
import { registerOpenEnd, unregisterOpenEnd, type Closable } from './lifecycle.js'
import { checkOptions, checkSignal } from './options.js'
import { createSharedMemoryPair, type Receiver, type Sender } from './pipe.js'
import type { ErrorInfo, ReplyMessage, TaskMessage } from './pool-worker.js'

// ---------------------------------------------------------------------------------------------
// Types

/** A function a pool can run: any function (its arguments and result must be encodable). */
export type TaskFunction = (...args: any[]) => unknown

/**
 * The shape of a task module, for typing a pool: `ProcessPool<typeof import('./tasks.js')>`
 * checks export names, arguments and result types. The default allows any name.
 */
export type TaskModule = Record<string, TaskFunction>

/** The names of `M`'s exports that are functions. */
export type TaskName<M> = Extract<
  { [K in keyof M]: M[K] extends TaskFunction ? K : never }[keyof M],
  string
>

/** The argument list of export `K` of `M`. */
export type TaskArgs<M, K extends keyof M> = M[K] extends (...args: infer A) => unknown ? A : never

/** What a task of export `K` of `M` resolves to (its return value, awaited). */
export type TaskResult<M, K extends keyof M> = M[K] extends (...args: never[]) => infer R
  ? Awaited<R>
  : never

/** Options of `new ProcessPool()`. */
export interface ProcessPoolOptions {
  /**
   * The module whose named exports are the tasks: an absolute path, a path relative to the
   * current working directory (resolved when the pool is created), or a `file:` URL (a `URL` or
   * a string). Each worker imports it once, with `import()`, so it may be an ES module or a
   * CommonJS one (then `module.exports.name`). The file must exist when the pool is created.
   */
  module: string | URL
  /** Number of worker processes. Default `os.availableParallelism()`. */
  workers?: number
  /**
   * Node options of the workers. Default: this process's `process.execArgv`, so that a program
   * run with `--import=tsx` (or `tsx`) has workers that can load TypeScript, without the options
   * that would make a worker run other code (`-e`, `-p`, `--test`, `--watch`…) or open an
   * inspector port (`--inspect…`).
   */
  execArgv?: string[]
  /** Environment of the workers. Default `process.env`. */
  env?: NodeJS.ProcessEnv
  /**
   * Bytes of each of the two pipes per worker (rounded up to a power of two), taken from
   * `/dev/shm` when the worker starts. Default 8 MiB, or less where `/dev/shm` is small (64 MB
   * in a Docker container): halved, down to 1 MiB, until the pool's pipes take at most a
   * quarter of `/dev/shm`, leaving the rest to large values. A task (its arguments) or a result up to half
   * of this is copied through the pipe's ring; a larger one travels in a shared-memory segment
   * of its own, which the sending side keeps and reuses for the next large message of about its
   * size once the other side is done with it (see the README's "Large messages"). Either way,
   * once a worker has run a few tasks the memory is mapped in both processes and a copy runs at
   * memory speed, so the default suits large arrays too.
   */
  pipeBytes?: number
  /**
   * Give tasks arguments of their own. By default (`false`) a task's typed arrays, `DataView`s
   * and `Buffer`s are views into the shared memory they arrived in, valid until the task
   * settles (its promise, if it returns one): no copy is made, and after the task they are
   * detached (length 0), never showing other data. A task that keeps an argument beyond that
   * must copy it (`x.slice()`), or the pool be made with `copyArguments: true`, which gives
   * every task's arguments memory of their own (a copy out of the ring; an argument that
   * travelled in a segment of its own keeps that segment, mapped in the worker only).
   */
  copyArguments?: boolean
}

/** The option names of `new ProcessPool()` (any other is an error). */
const POOL_OPTIONS = ['module', 'workers', 'execArgv', 'env', 'pipeBytes', 'copyArguments'] as const

/** Options of {@link ProcessPool.run}. */
export interface RunOptions {
  /**
   * Aborts the task. A queued task is dropped; a running one is stopped by killing its worker
   * (which the pool replaces). Either way the promise rejects with the signal's reason.
   */
  signal?: AbortSignal
}

/** Options of {@link ProcessPool.map}. */
export interface MapOptions {
  /** Most tasks of this call running or queued at once. Default: the pool's worker count. */
  concurrency?: number
  /** Aborts the call: queued tasks are dropped and running ones stopped (see {@link RunOptions}). */
  signal?: AbortSignal
}

// ---------------------------------------------------------------------------------------------
// Internals

const DEFAULT_PIPE_BYTES = 8 * 1024 * 1024
/** The smallest pipe the default gives on a small `/dev/shm`. */
const MIN_DEFAULT_PIPE_BYTES = 1024 * 1024

/**
 * The default bytes of each pipe of a pool of `workers`: {@link DEFAULT_PIPE_BYTES}, halved down
 * to {@link MIN_DEFAULT_PIPE_BYTES} until the pool's two pipes per worker take at most a quarter
 * of `/dev/shm` (where there is one: Linux).
 */
function defaultPipeBytes(workers: number): number {
  let shmBytes: number
  try {
    const fs = statfsSync('/dev/shm')
    shmBytes = fs.blocks * fs.bsize
  } catch {
    return DEFAULT_PIPE_BYTES
  }
  let bytes = DEFAULT_PIPE_BYTES
  while (bytes > MIN_DEFAULT_PIPE_BYTES && 2 * workers * bytes > shmBytes / 4) bytes /= 2
  return bytes
}
/** Values in flight per pipe: one task or result, and room for the handshake. */
const PIPE_CAPACITY = 4
/** Workers exiting before they are ready, in a row, before the pool gives up. */
const MAX_START_FAILURES = 3
/** Set in the workers' environment. */
const WORKER_ENV = 'SHMPIPE_POOL_WORKER'
/** Set on `globalThis` by the worker entry once it runs (shared by every copy of this module). */
const WORKER_MARK = Symbol.for('shmpipe.poolWorker')
/** How long a stopped worker may take to exit before it is killed. */
const STOP_TIMEOUT_MS = 5000
/** How long after its result pipe broke a worker's exit is waited for. */
const EXIT_GRACE_MS = 2000

function sleep(ms: number): Promise<false> {
  return new Promise((resolve) => setTimeout(() => resolve(false), ms))
}

/**
 * The worker's entry script, beside this module with the same extension: `pool-worker.ts` when
 * running from the TypeScript sources, `pool-worker.js` once compiled.
 */
function workerEntry(): string {
  const here = fileURLToPath(import.meta.url)
  return fileURLToPath(new URL(`./pool-worker${extname(here)}`, import.meta.url))
}

/** `module` as a `file:` URL string (relative paths against the current directory). */
function moduleUrl(module: unknown): string {
  let url: URL
  if (module instanceof URL) url = module
  else if (typeof module === 'string' && /^[a-z][a-z\d+.-]+:/i.test(module)) url = new URL(module)
  else if (typeof module === 'string' && module !== '') url = pathToFileURL(resolvePath(module))
  else
    throw new ShmpipeError(
      ERR_SHMPIPE_INVALID_ARGUMENT,
      `options.module must be a path or a file: URL, got ${describe(module)}`,
    )
  if (url.protocol !== 'file:')
    throw new ShmpipeError(
      ERR_SHMPIPE_INVALID_ARGUMENT,
      `options.module must be a file: URL, got ${url.href}`,
    )
  if (!existsSync(url))
    throw new ShmpipeError(
      ERR_SHMPIPE_INVALID_ARGUMENT,
      `options.module does not exist: ${fileURLToPath(url)}`,
    )
  return url.href
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value)
}

function positiveInteger(value: unknown, what: string, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1)
    throw new ShmpipeError(
      ERR_SHMPIPE_INVALID_ARGUMENT,
      `${what} must be a whole number of at least 1, got ${describe(value)}`,
    )
  return value
}

/** Options that take the next argument as their value. */
const WITH_VALUE = new Set(['-e', '--eval', '-p', '--print', '-pe', '-ep', '--inspect-port', '--debug-port', '--watch-path', '--input-type']) // prettier-ignore

/**
 * Options that make `node` run something else than the script it is given (code from `-e`, a
 * REPL, a syntax check, the test runner, a restart on change…), or that take a port each (the
 * inspector): the workers must not inherit them. Without this, a program run as `node -e` would
 * have workers that run the same code again, pools of their own included.
 */
const NOT_INHERITED =
  /^(-e|--eval|-p|--print|-pe|-ep|-c|--check|-i|--interactive|--test|--test-.*|--watch|--watch-path|--watch-preserve-output|--run|--input-type|--prof-process|-v|--version|-h|--help|--v8-options|--completion-bash|--inspect|--inspect-brk|--inspect-wait|--inspect-port|--debug|--debug-brk|--debug-port)(=.*)?$/

/** Node options for the workers: this process's, without those in {@link NOT_INHERITED}. */
export function workerExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  const out: string[] = []
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i]!
    if (NOT_INHERITED.test(a)) {
      if (WITH_VALUE.has(a)) i++ // `-e code`, `--inspect-port 9229`: skip the value too
      continue
    }
    out.push(a)
  }
  return out
}

/** Rebuilds a worker's error in this process (or returns the thrown non-Error value). */
function reviveError(info: ErrorInfo): unknown {
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

/** How a process ended, in words: `killed by SIGKILL`, `exited with code 3`. */
function ending(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `was killed by ${signal}` : `exited with code ${code}`
}

/** Whether `err` is a validation error of the codec: nothing was sent. */
function isEncodingError(err: unknown): err is ShmpipeError {
  return (
    err instanceof ShmpipeError &&
    (err.code === ERR_SHMPIPE_UNSUPPORTED_TYPE || err.code === ERR_SHMPIPE_TOO_LARGE)
  )
}

/** The codec names paths from the task envelope (`value.args[0]`): name them from `args`. */
function fromArgs(err: ShmpipeError): ShmpipeError {
  const before = err.message
  const after = before.replace(/\bvalue\.args\b/, 'args')
  if (after !== before) {
    err.message = after
    if (err.stack !== undefined) err.stack = err.stack.replace(before, after)
  }
  return err
}

/** A submitted task. */
class Task {
  settled = false
  worker: PoolWorker | null = null
  readonly promise: Promise<unknown>
  resolve!: (value: unknown) => void
  reject!: (err: unknown) => void
  #onAbort: (() => void) | null = null

  constructor(
    readonly name: string,
    readonly args: unknown[],
    readonly signal: AbortSignal | undefined,
  ) {
    this.promise = new Promise((resolve, reject) => {
      this.resolve = (value) => {
        if (this.#settle()) resolve(value)
      }
      this.reject = (err) => {
        if (this.#settle()) reject(err)
      }
    })
  }

  /** Calls `onAbort` when the signal aborts (until the task settles). */
  watch(onAbort: () => void): void {
    if (this.signal === undefined) return
    this.#onAbort = onAbort
    this.signal.addEventListener('abort', onAbort, { once: true })
  }

  #settle(): boolean {
    if (this.settled) return false
    this.settled = true
    if (this.#onAbort !== null) this.signal!.removeEventListener('abort', this.#onAbort)
    return true
  }
}

type WorkerState = 'starting' | 'idle' | 'busy' | 'dead'

/** One worker process and this process's ends of its two pipes. */
class PoolWorker {
  state: WorkerState = 'starting'
  task: Task | null = null
  /** Killed or stopped by the pool (its end is not a failure). */
  stopping = false
  /** What the worker reported instead of `ready`. */
  loadError: ErrorInfo | null = null
  readonly exited: Promise<void>
  #onExit!: () => void

  constructor(
    readonly child: ChildProcess,
    readonly tasks: Sender,
    readonly results: Receiver,
    /** This process's own sender of the result pipe, held until the worker has attached. */
    public ownResultSender: Sender | null,
  ) {
    this.exited = new Promise((resolve) => (this.#onExit = resolve))
  }

  get pid(): number {
    return this.child.pid ?? -1
  }

  /** Called once, when the process has ended. */
  ended(): void {
    this.state = 'dead'
    this.tasks.close()
    this.results.close()
    this.ownResultSender?.close()
    this.ownResultSender = null
    this.#onExit()
  }

  kill(signal: NodeJS.Signals): void {
    this.stopping = true
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.ref() // whoever waits for the end must not see the event loop run dry first
      this.child.kill(signal)
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ProcessPool

/**
 * A pool of worker processes running the named exports of one module, with arguments and results
 * moved through shared memory.
 *
 * ```ts
 * // tasks.ts
 * export function addOne(x: Float64Array): Float64Array {
 *   return x.map((v) => v + 1)
 * }
 *
 * // main.ts
 * await using pool = new ProcessPool<typeof import('./tasks.js')>({ module: './tasks.ts' })
 * const y = await pool.submit('addOne', new Float64Array(20_000_000).fill(1)) // y[0] === 2
 * const ys = await pool.map('addOne', arrays, { concurrency: 4 })
 * ```
 *
 * - Tasks are the module's exported functions, called with the arguments given to `submit`; an
 *   async function's promise is awaited. Arguments and results are any values the codec takes
 *   (what `v8.serialize` takes, except class instances): typed arrays, `Buffer`s, `DataView`s and
 *   `ArrayBuffer`s travel raw through shared memory, never through a pipe or an IPC channel.
 * - Results belong to the caller: their typed arrays and Buffers are in memory of this process's
 *   own (a copy out of the ring, or the segment a large result travelled in, which its worker
 *   writes again only once the result is collected here), so nothing changes them later. They are views into the
 *   result's buffer: `byteOffset` may not be 0, and the arrays of one result share it.
 * - Arguments are read when the task is sent to a worker (at once if one is idle, else when one
 *   becomes idle): do not change them until the task's promise settles. Values that cannot be
 *   encoded reject with `ERR_SHMPIPE_UNSUPPORTED_TYPE` (naming the path, e.g. `args[1].fn`)
 *   before anything is sent.
 * - A task that throws rejects with `ERR_SHMPIPE_TASK_FAILED`, whose `cause` is the worker's
 *   error (message, stack, code). A worker that dies (a crash, a signal, `process.exit`) rejects
 *   its task with `ERR_SHMPIPE_WORKER_DIED` naming the exit code or signal, and is replaced; the
 *   other tasks go on. A module that fails to load rejects every task with
 *   `ERR_SHMPIPE_WORKER_START_FAILED`.
 * - The pool's shared memory belongs to this process: `close()` removes it, and so do a normal
 *   exit and SIGINT/SIGTERM (as for any pipe). At exit, the workers are sent SIGTERM.
 * - An idle pool does not keep the process alive; a pending task does.
 *
 * @typeParam M The task module's type (`typeof import('./tasks.js')`), to type-check task names,
 *   arguments and results. By default any name is accepted and results are `unknown`.
 */
export class ProcessPool<M extends object = TaskModule> implements AsyncDisposable {
  /** Number of worker processes the pool keeps running. */
  readonly size: number
  /** The task module, as a `file:` URL. */
  readonly module: string
  readonly #execArgv: string[]
  readonly #env: NodeJS.ProcessEnv
  readonly #pipeBytes: number
  readonly #copyArguments: boolean
  readonly #entry = workerEntry()
  readonly #workers = new Set<PoolWorker>()
  /** Idle workers, the most recently idle last (tasks go to it: its rings and caches are warm). */
  #idle: PoolWorker[] = []
  #queue: Task[] = []
  #startFailures = 0
  /** Set once the workers cannot start: every task then fails with it. */
  #broken: ShmpipeError | null = null
  #accepting = true
  /** After close() has drained the tasks, or terminate(): no worker is replaced any more. */
  #stopping = false
  #closing: Promise<void> | null = null
  #drained: (() => void) | null = null
  #readyWaiters: { resolve: () => void; reject: (err: unknown) => void }[] = []
  readonly #atExit: Closable = { close: () => this.#killAll('SIGTERM') }

  /**
   * Starts the workers (they load the module in the background; tasks submitted meanwhile wait).
   *
   * Throws `ERR_SHMPIPE_INVALID_ARGUMENT` for a bad option (a module path that does not exist, a
   * worker count that is not a whole number ≥ 1), `ERR_SHMPIPE_NO_SPACE` if `/dev/shm` has no
   * room for the pipes.
   */
  constructor(options: ProcessPoolOptions) {
    if (
      process.env[WORKER_ENV] === '1' &&
      (globalThis as Record<symbol, unknown>)[WORKER_MARK] !== true
    ) {
      // Started as a pool worker, yet running other code: an option inherited from the parent
      // (not one filtered by workerExecArgv) ran the parent's program again. Starting workers
      // here would do the same, without end.
      throw new ShmpipeError(
        ERR_SHMPIPE_INVALID_ARGUMENT,
        `this process was started as a pool worker but runs other code (node ${process.execArgv.join(' ')}): no pool is started here; pass options.execArgv`,
      )
    }
    if (typeof options !== 'object' || options === null)
      throw new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, 'options must be an object')
    checkOptions(options, 'new ProcessPool()', POOL_OPTIONS)
    this.module = moduleUrl(options.module)
    this.size = positiveInteger(options.workers, 'options.workers', availableParallelism())
    this.#pipeBytes = positiveInteger(
      options.pipeBytes,
      'options.pipeBytes',
      defaultPipeBytes(this.size),
    )
    if (options.execArgv !== undefined && !Array.isArray(options.execArgv))
      throw new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, 'options.execArgv must be an array')
    this.#execArgv = options.execArgv ?? workerExecArgv()
    this.#env = { ...(options.env ?? process.env), [WORKER_ENV]: '1' }
    this.#copyArguments = options.copyArguments === true
    registerOpenEnd(this.#atExit)
    try {
      for (let i = 0; i < this.size; i++) this.#spawn()
    } catch (err) {
      this.#stopping = true
      this.#killAll('SIGKILL')
      unregisterOpenEnd(this.#atExit)
      throw err
    }
  }

  /** Pids of the worker processes now running (starting, idle or busy). */
  get pids(): number[] {
    return [...this.#workers].map((w) => w.pid)
  }

  /**
   * Resolves once no worker is starting any more: every worker has loaded the module and takes
   * tasks (or has ended). Rejects with `ERR_SHMPIPE_WORKER_START_FAILED` if the workers cannot
   * start. Tasks need not wait for it (they queue until a worker is ready); it is for measuring
   * without the start-up, or for failing early on a module that does not load.
   */
  ready(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#readyWaiters.push({ resolve, reject })
      this.#checkReady()
    })
  }

  /** Tasks waiting for an idle worker. */
  get queued(): number {
    return this.#queue.length
  }

  /** Tasks running in a worker. */
  get running(): number {
    let n = 0
    for (const w of this.#workers) if (w.state === 'busy') n++
    return n
  }

  /**
   * Runs the export `name` of the pool's module with `args` in a worker; resolves with what it
   * returns (awaited if it is a promise). Same as `run(name, args)`.
   *
   * Rejects with `ERR_SHMPIPE_UNSUPPORTED_TYPE` if an argument cannot be encoded (nothing is
   * sent), `ERR_SHMPIPE_TASK_FAILED` if the task throws, `ERR_SHMPIPE_INVALID_ARGUMENT` if the
   * module has no such function, `ERR_SHMPIPE_WORKER_DIED` if its worker dies,
   * `ERR_SHMPIPE_CLOSED` once `close()` or `terminate()` was called.
   */
  submit<K extends TaskName<M>>(name: K, ...args: TaskArgs<M, K>): Promise<TaskResult<M, K>> {
    return this.run(name, args)
  }

  /** Like {@link ProcessPool.submit}, with the arguments as an array and options (`signal`). */
  run<K extends TaskName<M>>(
    name: K,
    args: TaskArgs<M, K>,
    options: RunOptions = {},
  ): Promise<TaskResult<M, K>> {
    let task: Task
    try {
      if (!this.#accepting)
        throw new ShmpipeError(ERR_SHMPIPE_CLOSED, 'the pool is closed: no new tasks')
      if (typeof name !== 'string')
        throw new ShmpipeError(
          ERR_SHMPIPE_INVALID_ARGUMENT,
          `the task name must be a string, got ${describe(name)}`,
        )
      if (!Array.isArray(args))
        throw new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, 'args must be an array')
      if (typeof options !== 'object' || options === null)
        throw new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, 'options must be an object')
      checkOptions(options, 'run', ['signal'])
      checkSignal(options.signal, 'run')?.throwIfAborted()
      if (this.#broken !== null) throw this.#brokenError()
      task = new Task(name, args, options.signal)
      const worker = this.#idle.pop()
      if (worker !== undefined) {
        this.#runOn(worker, task)
      } else {
        // Queued: check now that the arguments can be sent (an error later would surprise).
        try {
          encode({ name, args } satisfies TaskMessage)
        } catch (err) {
          throw isEncodingError(err) ? fromArgs(err) : err
        }
        this.#queue.push(task)
      }
    } catch (err) {
      return Promise.reject(err)
    }
    task.watch(() => this.#abort(task))
    return task.promise as Promise<TaskResult<M, K>>
  }

  /**
   * Runs export `name` once per item of `items` (each item is the task's one argument); resolves
   * with the results in the order of `items`. At most `concurrency` of these tasks run or wait at
   * once, and items are taken from `items` (which may be an async iterable) only as tasks start.
   * The first failure rejects the call; no further items are taken then, and tasks already
   * running finish (their results are dropped).
   */
  async map<K extends TaskName<M>>(
    name: K,
    items: Iterable<TaskArgs<M, K>[0]> | AsyncIterable<TaskArgs<M, K>[0]>,
    options: MapOptions = {},
  ): Promise<TaskResult<M, K>[]> {
    checkOptions(options, 'map', ['concurrency', 'signal'])
    const concurrency = positiveInteger(options.concurrency, 'options.concurrency', this.size)
    const signal = checkSignal(options.signal, 'map')
    signal?.throwIfAborted()
    let iterator: Iterator<unknown> | AsyncIterator<unknown>
    if (
      items != null &&
      typeof (items as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function'
    )
      iterator = (items as AsyncIterable<unknown>)[Symbol.asyncIterator]()
    else if (items != null && typeof (items as Iterable<unknown>)[Symbol.iterator] === 'function')
      iterator = (items as Iterable<unknown>)[Symbol.iterator]()
    else
      throw new ShmpipeError(
        ERR_SHMPIPE_INVALID_ARGUMENT,
        'items must be an iterable or an async iterable',
      )
    const results: TaskResult<M, K>[] = []
    let next = 0
    let stop = false
    let done = false
    const lane = async (): Promise<void> => {
      while (!stop && !done) {
        const step = await iterator.next()
        if (step.done) {
          done = true
          return
        }
        if (stop) return
        const index = next++
        try {
          results[index] = await this.run(name, [step.value] as TaskArgs<M, K>, { signal })
        } catch (err) {
          stop = true
          throw err
        }
      }
    }
    try {
      await Promise.all(Array.from({ length: concurrency }, lane))
    } catch (err) {
      if (!done) await iterator.return?.()
      throw err
    }
    return results
  }

  /**
   * Stops taking tasks, waits for the tasks already submitted (running and queued) to settle,
   * then stops the workers and removes the pool's shared memory. Resolves when every worker has
   * exited. Calling it again returns the same promise.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown()
    return this.#closing
  }

  /**
   * Kills the workers (SIGKILL) at once: running and queued tasks reject with
   * `ERR_SHMPIPE_CLOSED`. Resolves when every worker has exited and the pool's shared memory is
   * removed.
   */
  async terminate(): Promise<void> {
    this.#accepting = false
    this.#stopping = true
    const err = new ShmpipeError(ERR_SHMPIPE_CLOSED, 'the pool was terminated')
    for (const task of this.#queue.splice(0)) task.reject(err)
    for (const w of this.#workers) w.task?.reject(err)
    this.#killAll('SIGKILL')
    await Promise.all([...this.#workers].map((w) => w.exited))
    this.#checkDrained()
    await this.close()
  }

  /** Same as {@link ProcessPool.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close()
  }

  // -------------------------------------------------------------------------------------------

  async #shutdown(): Promise<void> {
    this.#accepting = false
    if (this.#queue.length > 0 || this.running > 0) {
      await new Promise<void>((resolve) => (this.#drained = resolve))
    }
    this.#stopping = true
    await Promise.all([...this.#workers].map((w) => this.#stop(w)))
    unregisterOpenEnd(this.#atExit)
  }

  /** Stops a worker: closing its task pipe ends it; one that does not end in time is killed. */
  async #stop(w: PoolWorker): Promise<void> {
    w.stopping = true
    w.child.ref() // keeps the process alive until the worker has exited
    if (w.state === 'starting') {
      // Still loading the module: it would find its pipes gone. Nothing of it is needed.
      w.kill('SIGTERM')
    } else {
      w.tasks.close()
    }
    const timer = setTimeout(() => w.kill('SIGKILL'), STOP_TIMEOUT_MS)
    await w.exited
    clearTimeout(timer)
  }

  #killAll(signal: NodeJS.Signals): void {
    for (const w of this.#workers) w.kill(signal)
  }

  #brokenError(): ShmpipeError {
    const b = this.#broken!
    return new ShmpipeError(ERR_SHMPIPE_WORKER_START_FAILED, b.message, { cause: b.cause })
  }

  /** Starts a worker and waits for its `ready`. */
  #spawn(): void {
    const [tasks, unused] = createSharedMemoryPair({
      capacity: PIPE_CAPACITY,
      bytes: this.#pipeBytes,
      maxSenders: 1,
    })
    unused.close() // the worker attaches as the task pipe's receiver
    let results: Receiver
    let ownResultSender: Sender
    try {
      ;[ownResultSender, results] = createSharedMemoryPair({
        capacity: PIPE_CAPACITY,
        bytes: this.#pipeBytes,
        maxSenders: 2,
      })
    } catch (err) {
      tasks.close()
      throw err
    }
    let child: ChildProcess
    try {
      child = spawn(
        process.execPath,
        [
          ...this.#execArgv,
          this.#entry,
          this.module,
          tasks.name,
          results.name,
          this.#copyArguments ? 'copy' : 'views',
          String(process.pid),
        ],
        { stdio: ['ignore', 'inherit', 'inherit'], env: this.#env, windowsHide: true },
      )
    } catch (err) {
      tasks.close()
      results.close()
      ownResultSender.close()
      throw err
    }
    child.unref() // an idle pool does not keep the process alive; a pending result does
    const w = new PoolWorker(child, tasks, results, ownResultSender)
    this.#workers.add(w)
    let ended = false
    const onEnd = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (ended) return
      ended = true
      this.#onExit(w, code, signal)
    }
    child.on('exit', onEnd)
    // Failed to start (no such executable, no resources): no 'exit' follows.
    child.on('error', () => {
      if (child.pid === undefined) onEnd(null, null)
    })
    void this.#awaitReady(w)
  }

  async #awaitReady(w: PoolWorker): Promise<void> {
    let reply: ReplyMessage
    try {
      reply = (await w.results.get()) as ReplyMessage
    } catch {
      // The worker ended before it was ready: #onExit decides. Until its exit is seen, the
      // process must stay alive for it (the worker was unref'd), or those waiting for it would
      // be left unsettled.
      w.child.ref()
      return
    }
    if (reply.t === 'load-error') {
      // It exits next. The pool is broken now, not at that exit: nothing but the exit event
      // would keep this process alive until then.
      w.loadError = reply.error
      this.#breakOnLoadError(w.loadError)
      return
    }
    if (reply.t !== 'ready' || w.state !== 'starting') {
      w.kill('SIGKILL')
      return
    }
    // The worker's sender is attached: the stream no longer needs ours.
    w.ownResultSender?.close()
    w.ownResultSender = null
    this.#startFailures = 0
    this.#becomeIdle(w)
  }

  #becomeIdle(w: PoolWorker): void {
    w.state = 'idle'
    w.task = null
    if (w.stopping || this.#stopping) {
      // Being killed (its exit is near), or the pool is stopping: no more tasks for it.
      if (!w.stopping) void this.#stop(w)
      this.#checkReady()
      this.#checkDrained()
      return
    }
    this.#idle.push(w)
    this.#dispatch()
  }

  /** Gives queued tasks to idle workers. */
  #dispatch(): void {
    while (this.#queue.length > 0 && this.#idle.length > 0) {
      const task = this.#queue.shift()!
      if (task.settled) continue
      this.#runOn(this.#idle.pop()!, task)
    }
    this.#checkReady()
    this.#checkDrained()
  }

  #checkReady(): void {
    if (this.#readyWaiters.length === 0) return
    if (this.#broken !== null) {
      for (const w of this.#readyWaiters.splice(0)) w.reject(this.#brokenError())
    } else if (![...this.#workers].some((w) => w.state === 'starting')) {
      for (const w of this.#readyWaiters.splice(0)) w.resolve()
    }
  }

  #checkDrained(): void {
    if (this.#drained !== null && this.#queue.length === 0 && this.running === 0) {
      const drained = this.#drained
      this.#drained = null
      drained()
    }
  }

  /** Sends `task` to the idle worker `w` and waits for its reply. */
  #runOn(w: PoolWorker, task: Task): void {
    w.state = 'busy'
    w.task = task
    task.worker = w
    let sent: Promise<void>
    try {
      sent = w.tasks.put({ name: task.name, args: task.args } satisfies TaskMessage)
    } catch (err) {
      sent = Promise.reject(err)
    }
    void this.#awaitReply(w, task, sent)
  }

  async #awaitReply(w: PoolWorker, task: Task, sent: Promise<void>): Promise<void> {
    let reply: ReplyMessage
    try {
      await sent
    } catch (err) {
      if (w.state === 'dead') return // #onExit has failed the task
      if (isEncodingError(err)) {
        // Nothing was sent: the worker is still idle.
        task.reject(fromArgs(err))
        this.#becomeIdle(w)
        return
      }
      task.reject(err)
      w.kill('SIGKILL') // its task pipe is unusable: replace it
      return
    }
    try {
      reply = (await w.results.get()) as ReplyMessage
    } catch (err) {
      if (w.state === 'dead') return // #onExit has failed the task
      if (
        err instanceof ShmpipeError &&
        (err.code === ERR_SHMPIPE_PEER_GONE || err.code === ERR_SHMPIPE_CLOSED)
      ) {
        // The worker's end of the result pipe is gone: it died, and its exit (which #onExit
        // reports, with the signal or code) comes next. Only if it does not:
        const exited = await Promise.race([w.exited.then(() => true), sleep(EXIT_GRACE_MS)])
        if (exited === true) return
      }
      task.reject(err)
      w.kill('SIGKILL')
      return
    }
    if (reply.t === 'ok') {
      task.resolve(reply.value)
    } else if (reply.t === 'error') {
      task.reject(this.#taskError(w, task, reply))
    } else {
      task.reject(
        new ShmpipeError(ERR_SHMPIPE_TASK_FAILED, `unexpected reply '${String(reply.t)}'`),
      )
      w.kill('SIGKILL')
      return
    }
    this.#becomeIdle(w)
  }

  #taskError(
    w: PoolWorker,
    task: Task,
    reply: Extract<ReplyMessage, { t: 'error' }>,
  ): ShmpipeError {
    const info = reply.error
    if (reply.kind === 'no-export')
      return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, info.message)
    if (reply.kind === 'result-no-space')
      return new ShmpipeError(
        ERR_SHMPIPE_NO_SPACE,
        `task '${task.name}' returned a value that shared memory has no room for: ${info.message}`,
      )
    if (reply.kind === 'unsupported-result')
      return new ShmpipeError(
        ERR_SHMPIPE_UNSUPPORTED_TYPE,
        `task '${task.name}' returned a value that cannot be sent back: ${info.message}`,
      )
    const what = info.name === undefined ? `threw ${info.message}` : `${info.name}: ${info.message}`
    return new ShmpipeError(
      ERR_SHMPIPE_TASK_FAILED,
      `task '${task.name}' failed in worker ${w.pid}: ${what}`,
      { cause: reviveError(info) },
    )
  }

  /** An aborted task: dropped if queued, its worker killed if running. */
  #abort(task: Task): void {
    if (task.settled) return
    task.reject(task.signal!.reason)
    const w = task.worker
    if (w === null) {
      const i = this.#queue.indexOf(task)
      if (i >= 0) this.#queue.splice(i, 1)
      this.#checkDrained()
    } else if (w.task === task && w.state === 'busy') {
      w.kill('SIGKILL')
    }
  }

  /**
   * A worker reported that the module does not load: every waiting and later task, and every
   * `ready()`, rejects with that error.
   */
  #breakOnLoadError(info: ErrorInfo): void {
    if (this.#stopping || this.#broken !== null) return
    this.#broken = new ShmpipeError(
      ERR_SHMPIPE_WORKER_START_FAILED,
      `the pool's workers cannot load ${this.module}: ${info.message}`,
      { cause: reviveError(info) },
    )
    for (const t of this.#queue.splice(0)) t.reject(this.#brokenError())
    this.#checkReady()
  }

  /** A worker process ended: fail its task, replace it if the pool still needs it. */
  #onExit(w: PoolWorker, code: number | null, signal: NodeJS.Signals | null): void {
    const was = w.state
    const task = w.task
    w.ended()
    this.#workers.delete(w)
    const i = this.#idle.indexOf(w)
    if (i >= 0) this.#idle.splice(i, 1)
    if (was === 'busy') {
      task?.reject(
        new ShmpipeError(
          ERR_SHMPIPE_WORKER_DIED,
          `worker ${w.pid} running task '${task.name}' ${ending(code, signal)}`,
        ),
      )
    }
    if (!this.#stopping && this.#broken === null) {
      if (w.loadError !== null) {
        this.#breakOnLoadError(w.loadError)
      } else if (was === 'starting' && !w.stopping) {
        if (++this.#startFailures >= MAX_START_FAILURES) {
          this.#broken = new ShmpipeError(
            ERR_SHMPIPE_WORKER_START_FAILED,
            `${MAX_START_FAILURES} pool workers in a row ended before they were ready; the last ` +
              `(pid ${w.pid}) ${ending(code, signal)} (its stderr may tell why)`,
          )
        }
      }
      if (this.#broken === null) {
        try {
          this.#spawn()
        } catch (err) {
          this.#broken = new ShmpipeError(
            ERR_SHMPIPE_WORKER_START_FAILED,
            `could not start a pool worker: ${err instanceof Error ? err.message : String(err)}`,
            { cause: err },
          )
        }
      }
    }
    if (this.#broken !== null) {
      for (const t of this.#queue.splice(0)) t.reject(this.#brokenError())
    }
    this.#dispatch()
  }
}
