/**
 * The task module of the process pool tests (`__test__/pool.test.ts`): each export is a task a
 * pool worker runs.
 */

import { writeFileSync } from 'node:fs'

/** Returns its arguments, as an array. */
export function echo(...args: unknown[]): unknown[] {
  return args
}

/** The worker's pid. */
export function pid(): number {
  return process.pid
}

/** A new array holding `x[i] + 1`. */
export function addOne(x: Float64Array): Float64Array {
  const y = new Float64Array(x.length)
  for (let i = 0; i < x.length; i++) y[i] = x[i]! + 1
  return y
}

/** A new Float64Array of `n` elements, all `value`. */
export function filled(n: number, value: number): Float64Array {
  return new Float64Array(n).fill(value)
}

/** Sets `x[0] = 99` and returns `x`. */
export function mutate(x: Float64Array): Float64Array {
  x[0] = 99
  return x
}

/**
 * Resolves with `{ pid, start, end }` (wall-clock ms) after `ms` milliseconds; writes the pid to
 * `pidFile` first, if given.
 */
export async function sleep(
  ms: number,
  pidFile?: string,
): Promise<{ pid: number; start: number; end: number }> {
  const start = Date.now()
  if (pidFile !== undefined) writeFileSync(pidFile, String(process.pid))
  await new Promise((resolve) => setTimeout(resolve, ms))
  return { pid: process.pid, start, end: Date.now() }
}

/** Resolves with `value * 2` after `ms` milliseconds. */
export async function double(value: number, ms = 0): Promise<number> {
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms))
  if (value < 0) throw new RangeError(`negative: ${value}`)
  return value * 2
}

/** Never settles (the worker stays busy until it is killed). */
export function hang(): Promise<never> {
  return new Promise(() => setInterval(() => {}, 1 << 30))
}

/** Throws a TypeError with a `code`. */
export function fail(message: string): never {
  const err = new TypeError(message) as TypeError & { code: string }
  err.code = 'E_TASK'
  throw err
}

/** Rejects (after a tick) with an Error that has a cause. */
export async function failLater(message: string): Promise<never> {
  await new Promise((resolve) => setImmediate(resolve))
  throw new Error(message, { cause: new RangeError('the cause') })
}

/** Throws `value` (not an Error). */
export function throwValue(value: unknown): never {
  throw value
}

/** Returns a value the codec cannot carry. */
export function unsupported(): unknown {
  return { ok: 1, fn: () => 1 }
}

/** Ends the worker's process with `code` (mid-task). */
export function exit(code: number): never {
  process.exit(code)
}

/** Not a function. */
export const notATask = 42

let kept: Float64Array | null = null

/** Keeps `x` past the task's end; returns its length now. */
export function keep(x: Float64Array): number {
  kept = x
  return x.length
}

/** The length of the array kept by the last `keep`, and its first element. */
export function kept0(): [number, number | undefined] {
  return [kept!.length, kept![0]]
}

/** Counts calls in this worker. */
let calls = 0
export function count(): number {
  return ++calls
}

/** Runs synchronously for `ms` milliseconds: no JavaScript of the worker runs meanwhile. */
export function spin(ms: number): number {
  const end = Date.now() + ms
  let n = 0
  while (Date.now() < end) n++
  return n
}
