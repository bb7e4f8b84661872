/**
 * A child of the finalizer-lag probe: a loop that takes `n` Buffers of `size` bytes from the
 * probe's pure Node-API addon (`addon.c`) and drops each one, as a receiver dropping values does.
 *
 *     node --import=tsx napi-case.ts <addon.node> <kind> <loop> <size> <n> <capMB>
 *
 * - kind: `external` (napi_create_external_buffer, finalizer frees), `external-adjust` (the same,
 *   with napi_adjust_external_memory as crates/node does), `arraybuffer-adjust`
 *   (napi_create_external_arraybuffer, adjusted), `copy` (napi_create_buffer: Node's allocator);
 * - loop: `sync` (no await), `microtask` (`await` of an already resolved promise each value, as
 *   `await receiver.get()` is when a value is ready), `immediate` (`await` of a `setImmediate`
 *   each value), `immediate16` (one every 16 values), `bounded` (one whenever the external
 *   Buffers handed out and not yet finalized hold more than 256 MB: what a receiver that counts
 *   its outstanding bytes can do; every loop counts its `setImmediate`s in `turns`);
 * - stops early, with `capped: true`, once RSS passes `capMB`.
 *
 * Prints one JSON line: `{ samples, capped, ms, turns }` (samples every n/10 values and at the
 * end, then one more after a `setImmediate`). With the addon built with `NAPI_EXPERIMENTAL`, the
 * external kinds have basic finalizers (see `addon.c`).
 *
 * @module
 */

import { createRequire } from 'node:module'
import { GcCounter, sample, type Sample } from './sample.js'

interface Addon {
  external(len: number, adjust: boolean): Buffer
  externalArrayBuffer(len: number, adjust: boolean): ArrayBuffer
  copy(len: number): Buffer
  stats(): [number, number, number]
}

const [addonPath, kind, loop, sizeArg, nArg, capArg] = process.argv.slice(2)
const addon = createRequire(import.meta.url)(addonPath!) as Addon
const size = Number(sizeArg)
const n = Number(nArg)
const capMB = Number(capArg)

const make: () => ArrayBufferLike | Buffer = {
  external: () => addon.external(size, false),
  'external-adjust': () => addon.external(size, true),
  'arraybuffer-adjust': () => addon.externalArrayBuffer(size, true),
  copy: () => addon.copy(size),
}[kind!]!
if (make === undefined) throw new Error(`unknown kind ${kind}`)

const immediate = () => new Promise<void>((resolve) => setImmediate(resolve))
const every = loop === 'immediate' ? 1 : loop === 'immediate16' ? 16 : 0
/** The `bounded` loop's limit on bytes handed out and not finalized. */
const BOUND_BYTES = 256e6
if (!['sync', 'microtask', 'immediate', 'immediate16', 'bounded'].includes(loop!)) {
  throw new Error(`unknown loop ${loop}`)
}

const gcs = new GcCounter()
const samples: Sample[] = []
const take = () => {
  const [made, finalized] = addon.stats()
  const s = sample(gcs, made, kind === 'copy' ? NaN : finalized)
  samples.push(s)
  return s
}
const step = Math.max(1, Math.floor(n / 10))
let capped = false
let sink = 0
let turns = 0
const t0 = performance.now()
for (let i = 1; i <= n; i++) {
  const v = make()
  sink += v.byteLength
  if (loop === 'microtask') await Promise.resolve(v)
  else if (
    (every > 0 && i % every === 0) ||
    (loop === 'bounded' && addon.stats()[2] > BOUND_BYTES)
  ) {
    turns++
    await immediate()
  }
  if (i % step === 0 || i === n) {
    if (take().rssMB > capMB) {
      capped = true
      break
    }
  }
}
const ms = performance.now() - t0
await immediate()
take()
process.stdout.write(JSON.stringify({ samples, capped, ms, turns, sink }) + '\n')
