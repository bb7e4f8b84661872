/**
 * One worker process of a pool, as the pool sees it: the child process, this process's ends of
 * its two pipes, and its state (`starting` until it reports `ready`, then `idle` or `busy`, and
 * `dead` once it has exited).
 *
 * The pool creates both pipes and owns them; the worker attaches as the task pipe's receiver and
 * as a sender of the result pipe. Until it has attached, the pool holds a sender of the result
 * pipe of its own, so that the stream is not ended by nobody having joined yet. The child is
 * started with no IPC channel and this process's stdout and stderr, and unref'd: an idle pool
 * does not keep the process alive.
 *
 * @module
 */

import { spawn, type ChildProcess } from 'node:child_process'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair, type Backing, type Receiver, type Sender } from '../pipe.js'
import type { ErrorInfo } from './protocol.js'
import type { Task } from './task.js'

/** Values in flight per pipe: one task or result, and room for the handshake. */
const PIPE_CAPACITY = 4
/** How long a stopped worker may take to exit before it is killed. */
const STOP_TIMEOUT_MS = 5000

/** How a worker is started; the same for every worker of a pool. */
export interface WorkerConfig {
  /** Node options of the worker. */
  execArgv: string[]
  /** Its environment. */
  env: NodeJS.ProcessEnv
  /** The task module, as a `file:` URL. */
  module: string
  /** Where its two pipes keep their memory. */
  backing: Backing
  /** Bytes of each of its two pipes. */
  pipeBytes: number
  /** Whether its tasks get arguments of their own (else views into the task pipe). */
  copyArguments: boolean
}

/**
 * The worker's entry script, beside this module with the same extension: `pool-worker.ts` when
 * running from the TypeScript sources, `pool-worker.cjs` beside the bundle once built.
 */
export function workerEntry(): string {
  const here = fileURLToPath(import.meta.url)
  return fileURLToPath(new URL(`./pool-worker${extname(here)}`, import.meta.url))
}

/** How a process ended, in words: `killed by SIGKILL`, `exited with code 3`. */
export function ending(code: number | null, signal: NodeJS.Signals | null): string {
  return signal !== null ? `was killed by ${signal}` : `exited with code ${code}`
}

type WorkerState = 'starting' | 'idle' | 'busy' | 'dead'

/** One worker process and this process's ends of its two pipes. */
export class PoolWorker {
  state: WorkerState = 'starting'
  task: Task<PoolWorker> | null = null
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

  /**
   * Creates the two pipes and starts a worker process with `entry` (see {@link workerEntry}).
   * `onEnd` is called once, when the process has ended (or failed to start). Throws what
   * creating a pipe or spawning threw, with nothing left behind.
   */
  static start(
    config: WorkerConfig,
    entry: string,
    onEnd: (w: PoolWorker, code: number | null, signal: NodeJS.Signals | null) => void,
  ): PoolWorker {
    const [tasks, unused] = createSharedMemoryPair({
      capacity: PIPE_CAPACITY,
      bytes: config.pipeBytes,
      maxSenders: 1,
      backing: config.backing,
    })
    unused.close() // the worker attaches as the task pipe's receiver
    let results: Receiver
    let ownResultSender: Sender
    try {
      ;[ownResultSender, results] = createSharedMemoryPair({
        capacity: PIPE_CAPACITY,
        bytes: config.pipeBytes,
        maxSenders: 2,
        backing: config.backing,
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
          ...config.execArgv,
          entry,
          config.module,
          tasks.name,
          results.name,
          config.copyArguments ? 'copy' : 'views',
          String(process.pid),
        ],
        { stdio: ['ignore', 'inherit', 'inherit'], env: config.env, windowsHide: true },
      )
    } catch (err) {
      tasks.close()
      results.close()
      ownResultSender.close()
      throw err
    }
    child.unref() // an idle pool does not keep the process alive; a pending result does
    const w = new PoolWorker(child, tasks, results, ownResultSender)
    let ended = false
    const end = (code: number | null, signal: NodeJS.Signals | null): void => {
      if (ended) return
      ended = true
      onEnd(w, code, signal)
    }
    child.on('exit', end)
    // Failed to start (no such executable, no resources): no 'exit' follows.
    child.on('error', () => {
      if (child.pid === undefined) end(null, null)
    })
    return w
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

  /** Stops the worker: closing its task pipe ends it; one that does not end in time is killed. */
  async stop(): Promise<void> {
    this.stopping = true
    this.child.ref() // keeps the process alive until the worker has exited
    if (this.state === 'starting') {
      // Still loading the module: it would find its pipes gone. Nothing of it is needed.
      this.kill('SIGTERM')
    } else {
      this.tasks.close()
    }
    const timer = setTimeout(() => this.kill('SIGKILL'), STOP_TIMEOUT_MS)
    await this.exited
    clearTimeout(timer)
  }
}
