/**
 * The options of a `ProcessPool` and the typing of its task module: the public types, and
 * the checks and defaults that turn what the caller gave into what the pool runs with. A bad
 * option is an `ERR_SHMPIPE_INVALID_ARGUMENT` naming it.
 *
 * @module
 */

import { existsSync, statfsSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import { ERR_SHMPIPE_INVALID_ARGUMENT, ShmpipeError } from '../errors.js'
import type { Backing, PipeOptions } from '../pipe.js'
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
   * Where the pool's pipes keep their memory, as {@link PipeOptions.backing} says: by default
   * sealed memory on Linux (`'memfd'`, unless `SHMPIPE_BACKING` says `'shm'`), `/dev/shm`
   * segments elsewhere.
   */
  backing?: Backing
  /**
   * Bytes of each of the two pipes per worker (rounded up to a power of two), taken when the
   * worker starts. Default 8 MiB. With the `'shm'` backing, less where `/dev/shm` is small (64 MB
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

/** @internal The option names of `new ProcessPool()` (any other is an error). */
export const POOL_OPTIONS = [
  'module',
  'workers',
  'execArgv',
  'env',
  'backing',
  'pipeBytes',
  'copyArguments',
] as const

/** Options of `ProcessPool.run`. */
export interface RunOptions {
  /**
   * Aborts the task. A queued task is dropped; a running one is stopped by killing its worker
   * (which the pool replaces). Either way the promise rejects with the signal's reason.
   */
  signal?: AbortSignal
}

/** Options of `ProcessPool.map`. */
export interface MapOptions {
  /** Most tasks of this call running or queued at once. Default: the pool's worker count. */
  concurrency?: number
  /** Aborts the call: queued tasks are dropped and running ones stopped (see {@link RunOptions}). */
  signal?: AbortSignal
}

const DEFAULT_PIPE_BYTES = 8 * 1024 * 1024
/** The smallest pipe the default gives on a small `/dev/shm`. */
const MIN_DEFAULT_PIPE_BYTES = 1024 * 1024

/**
 * @internal The default bytes of each pipe of a pool of `workers` whose pipes are in `backing`:
 * {@link DEFAULT_PIPE_BYTES}; in `/dev/shm` segments, halved down to {@link MIN_DEFAULT_PIPE_BYTES}
 * until the pool's two pipes per worker take at most a quarter of `/dev/shm` (where there is one:
 * Linux). Sealed memory is not bound by `/dev/shm`.
 */
export function defaultPipeBytes(workers: number, backing: Backing): number {
  if (backing === 'memfd') return DEFAULT_PIPE_BYTES
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

/** @internal `module` as a `file:` URL string (relative paths against the current directory). */
export function moduleUrl(module: unknown): string {
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

/** @internal How a value is shown in an error message. */
export function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value)
}

/** @internal `value`, checked to be a whole number ≥ 1 (`fallback` if undefined). */
export function positiveInteger(value: unknown, what: string, fallback: number): number {
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

/** @internal Node options for the workers: this process's, without those in {@link NOT_INHERITED}. */
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
