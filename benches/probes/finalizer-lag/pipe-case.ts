/**
 * A child of the finalizer-lag probe: a real receiver taking `n` values of `size` bytes from a
 * sender in another process (`pipe-sender.ts`) with `await receiver.get()`, and dropping each.
 *
 *     node --import=tsx pipe-case.ts <ringBytes> <size> <n> <loop> <capMB> <workMs>
 *
 * The ring's size picks the path a value takes out of `get()` (see `crates/node/src/consumer.rs`):
 * a value over half the ring travels in a blob and is handed out as a view onto it (an external
 * Buffer whose finalizer releases the blob); one stored in the ring is copied, from 32 MiB into
 * recycled memory (an external Buffer whose finalizer gives it back), below that into a Buffer
 * from Node's allocator (no finalizer).
 *
 * After each value the receiver works for `workMs` (a busy wait): with work, the sender is ahead
 * and every value is ready when asked for; without, the receiver often finds the pipe empty and
 * waits. `get()` resolves at once (a microtask) with a value that is ready and goes through the
 * event loop only when it waits; each sample counts those waits (`waits`).
 *
 * loop: `get` (only `await receiver.get()`), `immediate` (plus an `await` of a `setImmediate`
 * after each value), `immediate16` (after every 16th). Stops early, with `capped: true`, once
 * RSS plus the shared memory it maps passes `capMB`.
 *
 * Prints one JSON line: `{ samples, capped, ms }`; each sample also has `waits`, `turns` (waits
 * plus `setImmediate`s: turns of the event loop), `blobMaps` (the pipe's memfd segments the
 * process maps: the ring and each blob it has not let go of) and `shmMappedMB` (their size).
 *
 * @module
 */

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair } from '../../../index.js'
import { GcCounter, sample, type Sample } from './sample.js'

const [ringArg, sizeArg, nArg, loop, capArg, workArg] = process.argv.slice(2)
const workMs = Number(workArg ?? 0)
const size = Number(sizeArg)
const n = Number(nArg)
const capMB = Number(capArg)
const every = loop === 'immediate' ? 1 : loop === 'immediate16' ? 16 : 0
if (!['get', 'immediate', 'immediate16'].includes(loop!)) throw new Error(`unknown loop ${loop}`)

/** The pipe's memfd segments this process maps: how many, and their total size in MB. */
function segments(): { blobMaps: number; shmMappedMB: number } {
  const names = new Set<string>()
  let bytes = 0
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) .*(memfd:shmpipe:\S+)/.exec(line)
    if (m === null) continue
    names.add(m[3]!)
    bytes += parseInt(m[2]!, 16) - parseInt(m[1]!, 16)
  }
  return { blobMaps: names.size, shmMappedMB: Math.round(bytes / 1e6) }
}

const [ownSender, receiver] = createSharedMemoryPair({ bytes: Number(ringArg) })
const senderScript = fileURLToPath(new URL('pipe-sender.ts', import.meta.url))
const sender = spawn(
  process.execPath,
  ['--import=tsx', senderScript, receiver.name, String(size), String(n)],
  { stdio: ['ignore', 'ignore', 'inherit'] },
)
const senderExited = new Promise((resolve) => sender.once('exit', resolve))
const gcs = new GcCounter()
const samples: (Sample & { waits: number; turns: number; blobMaps: number; shmMappedMB: number })[] = [] // prettier-ignore
const take = () => {
  const s = { ...sample(gcs, made, NaN), waits, turns: waits + immediates, ...segments() }
  samples.push(s)
  return s
}
const immediate = () => new Promise<void>((resolve) => setImmediate(resolve))
const step = Math.max(1, Math.floor(n / 10))
let made = 0
let waits = 0
let immediates = 0
let capped = false
let sink = 0
const t0 = performance.now()
for (let i = 1; i <= n; i++) {
  // What `await receiver.get()` does, with the waits counted: `get()` takes a ready value the
  // same way (`getNowait()`) and returns it in a resolved promise.
  let v = receiver.getNowait() as Buffer | undefined
  if (v === undefined) {
    waits++
    v = (await receiver.get()) as Buffer
  } else {
    await v
  }
  made++
  if (v.length !== size) throw new Error(`value ${i}: ${v.length} bytes, not ${size}`)
  sink += v[0]! + v[size - 1]!
  for (const end = performance.now() + workMs; performance.now() < end;);
  if (every > 0 && i % every === 0) {
    immediates++
    await immediate()
  }
  if (i % step === 0 || i === n) {
    const s = take()
    if (s.rssMB + s.shmMappedMB > capMB) {
      capped = true
      break
    }
  }
}
const ms = performance.now() - t0
await immediate()
take()
if (capped) sender.kill()
receiver.close()
ownSender.close()
await senderExited
process.stdout.write(JSON.stringify({ samples, capped, ms, sink }) + '\n')
