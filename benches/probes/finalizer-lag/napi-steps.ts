/**
 * A child of the finalizer-lag probe (run with `--expose-gc`): one external Buffer of 10 MB from
 * the probe's addon, dropped, then collections and turns of the event loop one at a time, to see
 * which step runs its finalizer. Then the same for a Buffer from Node's allocator, whose memory
 * has no finalizer (`arrayBuffers` shows when V8 frees it).
 *
 *     node --expose-gc --import=tsx napi-steps.ts <addon.node>
 *
 * Prints one JSON line: `{ steps: [{ step, kind, finalized, externalMB, arrayBuffersMB }] }`.
 *
 * @module
 */

import { createRequire } from 'node:module'

interface Addon {
  external(len: number, adjust: boolean): Buffer
  copy(len: number): Buffer
  stats(): [number, number, number]
}

const addon = createRequire(import.meta.url)(process.argv[2]!) as Addon
const gc = (globalThis as { gc?: (o?: { type: 'minor' | 'major' }) => void }).gc
if (gc === undefined) throw new Error('run with --expose-gc')
const immediate = () => new Promise<void>((resolve) => setImmediate(resolve))
const SIZE = 10e6

/** What a step did: made a Buffer, ran a collection, ran microtasks, or turned the event loop. */
type Kind = 'made' | 'gc' | 'microtasks' | 'turn'
const steps: {
  step: string
  kind: Kind
  finalized: number
  externalMB: number
  arrayBuffersMB: number
}[] = []
const note = (step: string, kind: Kind) => {
  const mu = process.memoryUsage()
  steps.push({
    step,
    kind,
    finalized: addon.stats()[1],
    externalMB: Math.round(mu.external / 1e6),
    arrayBuffersMB: Math.round(mu.arrayBuffers / 1e6),
  })
}
/** Runs microtasks only: a resolved promise's continuation, then a `process.nextTick`. */
const microtasks = async () => {
  await Promise.resolve()
  await new Promise<void>((resolve) => process.nextTick(resolve))
}

let kept: Buffer | null = addon.external(SIZE, true)
note('external made', 'made')
kept = null
gc({ type: 'minor' })
note('scavenge', 'gc')
await microtasks()
note('microtasks', 'microtasks')
await immediate()
note('setImmediate', 'turn')

kept = addon.external(SIZE, true)
note('external made', 'made')
kept = null
gc({ type: 'major' })
note('mark-compact', 'gc')
await microtasks()
note('microtasks', 'microtasks')
// Turns until both are finalized (the collection may leave the freeing of the memory to a
// background thread, which queues the finalizer when it is done): at most 10, then another
// mark-compact (a collection may still find the Buffer alive, rarely: seen once on Node 24), at
// most 5 times.
for (let round = 0; ; round++) {
  let turns = 0
  while (addon.stats()[1] < 2 && turns < 10) {
    await immediate()
    turns++
  }
  note(`setImmediate ×${turns}`, 'turn')
  if (addon.stats()[1] >= 2 || round === 5) break
  gc({ type: 'major' })
  note('mark-compact', 'gc')
}

kept = addon.copy(SIZE)
note('copy made', 'made')
kept = null
gc({ type: 'minor' })
note('scavenge', 'gc')
gc({ type: 'major' })
note('mark-compact', 'gc')
void kept
process.stdout.write(JSON.stringify({ steps }) + '\n')
