/**
 * The pool part of the backing benchmark: seed 001's task (`x + 1` on a Float64Array of 2e7
 * elements, 160 MB, as `benches/pool.ts`) through a `ProcessPool` of one worker whose pipes are
 * of one backing.
 *
 * {@link poolOn} makes the pool with its `backing` option, and then checks the backing in the
 * worker's `/proc/<pid>/maps` (sealed memory shows as `memfd:`, a named segment as
 * `/dev/shm/`).
 *
 * @module
 */

import { readFileSync } from 'node:fs'

import { ProcessPool, type Backing } from '../../index.js'
import * as tasks from '../pool-tasks.js'
import { checkBacking } from './measure.js'

const tasksModule = new URL('../pool-tasks.ts', import.meta.url)
/** Elements of seed 001's array. */
export const N = 2e7

/** A pool of one worker running `pool-tasks.ts`, its pipes of `backing` and `pipeBytes`. */
export async function poolOn(
  backing: Backing,
  pipeBytes: number | undefined,
): Promise<ProcessPool<typeof tasks>> {
  const pool = new ProcessPool<typeof tasks>({
    module: tasksModule,
    workers: 1,
    pipeBytes,
    backing,
  })
  await pool.ready()
  const maps = readFileSync(`/proc/${pool.pids[0]}/maps`, 'utf8')
  const seen = maps.includes('memfd:') ? 'memfd' : maps.includes('/dev/shm/') ? 'shm' : 'none'
  checkBacking('pool worker', seen, backing)
  return pool
}

/** ms of one task through `pool`, submit to result; throws if the result is wrong. */
export async function poolTask(pool: ProcessPool<typeof tasks>, x: Float64Array): Promise<number> {
  const t0 = performance.now()
  const y = await pool.submit('addOne', x)
  const ms = performance.now() - t0
  if (!(y instanceof Float64Array) || y.length !== N || y[0] !== 2 || y[N - 1] !== 2)
    throw new Error('pool: wrong result')
  return ms
}
