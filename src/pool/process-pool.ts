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
 * This module schedules; the rest of the pool is in the modules beside it: `options` (the
 * options and their checks), `worker-process` (starting and stopping one worker), `protocol`
 * (the messages, and errors crossing them), `task` (one submitted task), `map` (`map`'s loop),
 * `pool-worker` (the worker process's entry).
 *
 * @module
 */

import { availableParallelism } from 'node:os'

import { encode } from '../codec.js'
import {
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_PEER_GONE,
  ERR_SHMPIPE_TASK_FAILED,
  ERR_SHMPIPE_WORKER_DIED,
  ERR_SHMPIPE_WORKER_START_FAILED,
  ShmpipeError,
} from '../errors.js'
import { registerOpenEnd, unregisterOpenEnd, type Closable } from '../lifecycle.js'
import { checkOptions, checkSignal } from '../options.js'
import { pipeBacking } from '../pipe.js'
import { mapConcurrently } from './map.js'
import {
  defaultPipeBytes,
  describe,
  moduleUrl,
  POOL_OPTIONS,
  positiveInteger,
  workerExecArgv,
  type MapOptions,
  type ProcessPoolOptions,
  type RunOptions,
  type TaskArgs,
  type TaskModule,
  type TaskName,
  type TaskResult,
} from './options.js'
import {
  fromArgs,
  isEncodingError,
  replyError,
  reviveError,
  WORKER_ENV,
  WORKER_MARK,
  type ErrorInfo,
  type ReplyMessage,
  type TaskMessage,
} from './protocol.js'
import { Task } from './task.js'
import { ending, PoolWorker, workerEntry, type WorkerConfig } from './worker-process.js'

/** Workers exiting before they are ready, in a row, before the pool gives up. */
const MAX_START_FAILURES = 3
/** How long after its result pipe broke a worker's exit is waited for. */
const EXIT_GRACE_MS = 2000

function sleep(ms: number): Promise<false> {
  return new Promise((resolve) => setTimeout(() => resolve(false), ms))
}

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
  readonly #config: WorkerConfig
  readonly #entry = workerEntry()
  readonly #workers = new Set<PoolWorker>()
  /** Idle workers, the most recently idle last (tasks go to it: its rings and caches are warm). */
  #idle: PoolWorker[] = []
  #queue: Task<PoolWorker>[] = []
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
    const backing = pipeBacking(options.backing, 'new ProcessPool()')
    const pipeBytes = positiveInteger(
      options.pipeBytes,
      'options.pipeBytes',
      defaultPipeBytes(this.size, backing),
    )
    if (options.execArgv !== undefined && !Array.isArray(options.execArgv))
      throw new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, 'options.execArgv must be an array')
    this.#config = {
      execArgv: options.execArgv ?? workerExecArgv(),
      env: { ...(options.env ?? process.env), [WORKER_ENV]: '1' },
      module: this.module,
      backing,
      pipeBytes,
      copyArguments: options.copyArguments === true,
    }
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
    let task: Task<PoolWorker>
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
      task = new Task<PoolWorker>(name, args, options.signal)
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
    return mapConcurrently(items, concurrency, (item) =>
      this.run(name, [item] as TaskArgs<M, K>, { signal }),
    )
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
    await Promise.all([...this.#workers].map((w) => w.stop()))
    unregisterOpenEnd(this.#atExit)
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
    const w = PoolWorker.start(this.#config, this.#entry, (w, code, signal) =>
      this.#onExit(w, code, signal),
    )
    this.#workers.add(w)
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
      if (!w.stopping) void w.stop()
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
  #runOn(w: PoolWorker, task: Task<PoolWorker>): void {
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

  async #awaitReply(w: PoolWorker, task: Task<PoolWorker>, sent: Promise<void>): Promise<void> {
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
      task.reject(replyError(reply, task.name, w.pid))
    } else {
      task.reject(
        new ShmpipeError(ERR_SHMPIPE_TASK_FAILED, `unexpected reply '${String(reply.t)}'`),
      )
      w.kill('SIGKILL')
      return
    }
    this.#becomeIdle(w)
  }

  /** An aborted task: dropped if queued, its worker killed if running. */
  #abort(task: Task<PoolWorker>): void {
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
