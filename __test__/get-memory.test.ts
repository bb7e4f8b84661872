/**
 * The memory of a receiver that takes large values with `get()`, `getNowait()` or the iteration
 * and drops them, with the sender in another process ahead of it (so values are always ready and
 * `get()` never has to wait): it stays bounded, and values kept meanwhile stay intact.
 *
 * Each case runs `helpers/get-memory-child.ts` in a fresh process, which reports the peak of its
 * RSS plus the shared memory it maps (see there). The bounds, in MB (10⁶ B), leave room for a
 * loaded machine above what the rule allows (`docs/decisions/2026-12-07-get-memory.md`): about
 * 80 MB of Node and tsx, the ring, the 64 MiB of external bytes past which `get()` turns the event
 * loop, about 40 MB that V8 lets pile up between two full collections, the value in hand, and,
 * for recycled copies, the two buffers the pool keeps. Without the turn (or the synchronous
 * takes' copies) each of them grows past its bound.
 */

import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { checkNoSegmentLeaks, spawnNode } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const script = fileURLToPath(new URL('./helpers/get-memory-child.ts', import.meta.url))
const MB = 1e6
const DEFAULT_RING = 16 << 20

interface Outcome {
  peakMB: number
  taken: number
  kept: number
  bad: number
  capped: boolean
}

/** Runs one receiver (see `get-memory-child.ts`) and checks its outcome against `boundMB`. */
async function receiver(
  t: ExecutionContext,
  c: {
    mode: 'get' | 'iterator' | 'nowait'
    ring: number
    size: number
    count: number
    workMs: number
    keepEvery?: number
    boundMB: number
    nodeOptions?: string[]
  },
): Promise<Outcome> {
  const keepEvery = c.keepEvery ?? c.count + 1
  const args = [c.mode, c.ring, c.size, c.count, c.workMs, keepEvery, c.boundMB].map(String)
  const child = spawnNode(t, [...(c.nodeOptions ?? []), '--import=tsx', script, 'receive', ...args])
  const outcome = (await child.next(90_000)) as Outcome
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.log(`${c.mode}, ${c.count} values of ${c.size / MB} MB: peak ${outcome.peakMB} MB`)
  t.false(outcome.capped, `passed ${c.boundMB} MB after ${outcome.taken} values`)
  t.true(outcome.peakMB <= c.boundMB, `peak ${outcome.peakMB} MB`)
  t.is(outcome.taken, c.count)
  t.is(outcome.bad, 0, 'values showing another message’s bytes')
  t.is(outcome.kept, Math.ceil(c.count / keepEvery))
  return outcome
}

test('get(): a receiver slower than its sender gives blob views back (default ring, 10 MB values)', async (t) => {
  await receiver(t, { mode: 'get', ring: DEFAULT_RING, size: 10 * MB, count: 300, workMs: 15, boundMB: 400 }) // prettier-ignore
})

test('iteration, --max-old-space-size=512: the same bound', async (t) => {
  await receiver(t, {
    mode: 'iterator',
    ring: DEFAULT_RING,
    size: 10 * MB,
    count: 300,
    workMs: 15,
    boundMB: 400,
    nodeOptions: ['--max-old-space-size=512'],
  })
})

test('get(): copies into recycled memory come back (128 MiB ring, 40 MB values)', async (t) => {
  await receiver(t, { mode: 'get', ring: 128 << 20, size: 40 * MB, count: 60, workMs: 3, boundMB: 800 }) // prettier-ignore
})

test('getNowait(): past the bound, values are copies that need no turn of the event loop', async (t) => {
  await receiver(t, { mode: 'nowait', ring: DEFAULT_RING, size: 10 * MB, count: 300, workMs: 15, boundMB: 500 }) // prettier-ignore
})

test('get(): a receiver that keeps every 10th value gets each one intact', async (t) => {
  // 20 values of 10 MB kept: 200 MB more than a receiver that drops them all.
  await receiver(t, { mode: 'get', ring: DEFAULT_RING, size: 10 * MB, count: 200, workMs: 3, keepEvery: 10, boundMB: 700 }) // prettier-ignore
})
