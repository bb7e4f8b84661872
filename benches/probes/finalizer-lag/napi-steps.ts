/**
 * A child of the finalizer-lag probe (run with `--expose-gc`): one external Buffer of 10 MB from
 * the probe's addon, dropped, then collections and turns of the event loop one at a time, to see
 * which step runs its finalizer. Then the same for a Buffer from Node's allocator, whose memory
 * has no finalizer (`arrayBuffers` shows when V8 frees it).
 *
 *     node --expose-gc --import=tsx napi-steps.ts <addon.node>
 *
 * Prints one JSON line: `{ steps: [{ step, finalized, externalMB, arrayBuffersMB }] }`.
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

const steps: { step: string; finalized: number; externalMB: number; arrayBuffersMB: number }[] = []
const note = (step: string) => {
  const mu = process.memoryUsage()
  steps.push({
    step,
    finalized: addon.stats()[1],
    externalMB: Math.round(mu.external / 1e6),
    arrayBuffersMB: Math.round(mu.arrayBuffers / 1e6),
  })
}

let kept: Buffer | null = addon.external(SIZE, true)
note('external made')
kept = null
gc({ type: 'minor' })
note('scavenge')
await Promise.resolve()
note('microtask')
process.nextTick(() => {})
await new Promise<void>((resolve) => process.nextTick(resolve))
note('nextTick')
await immediate()
note('setImmediate')

kept = addon.external(SIZE, true)
note('external made')
kept = null
gc({ type: 'major' })
note('mark-compact')
await Promise.resolve()
note('microtask')
await immediate()
note('setImmediate')

kept = addon.copy(SIZE)
note('copy made')
kept = null
gc({ type: 'minor' })
note('scavenge')
gc({ type: 'major' })
note('mark-compact')
void kept
process.stdout.write(JSON.stringify({ steps }) + '\n')
