/**
 * Roles for `get-memory.test.ts`: a receiver that takes large values from a sender in another
 * process, dropping them (or keeping every `keepEvery`-th), and reports the peak of its RSS plus
 * the shared memory it maps.
 *
 *     node --import=tsx get-memory-child.ts receive <mode> <ringBytes> <size> <count> <workMs> <keepEvery> <capMB>
 *     node --import=tsx get-memory-child.ts send <name> <size> <count>
 *
 * mode: `get` (`await receiver.get()` of each value), `iterator` (`for await`), `nowait`
 * (`getNowait()` in a synchronous loop that sleeps without turning the event loop while the pipe
 * is empty). After each value the receiver busy-waits `workMs`, so the sender is ahead and
 * values are ready when asked for: `get()` never has to wait. It stops early once its memory
 * passes `capMB`. Reports one JSON line: `{ peakMB, taken, kept, bad, capped }`.
 *
 * Value `k` is `size` bytes of one fixed pattern with `k` in its first four bytes, so a value
 * showing another message's bytes is caught.
 */

import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair, Sender } from '../../index.js'
import { fillPattern } from './values.js'

/** The pattern every value carries after its first four bytes. */
function pattern(size: number): Uint8Array {
  const bytes = new Uint8Array(size)
  fillPattern(bytes, 7)
  return bytes
}

/** MB of memory this process holds: RSS without shared pages, plus every memfd segment mapped. */
function memoryMB(): number {
  const status = readFileSync('/proc/self/status', 'utf8')
  const kB = (field: string): number =>
    Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1])
  let shared = 0
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) .*memfd:shmpipe/.exec(line)
    if (m !== null) shared += parseInt(m[2]!, 16) - parseInt(m[1]!, 16)
  }
  return (kB('RssAnon') * 1024 + kB('RssFile') * 1024 + shared) / 1e6
}

function busyWait(ms: number): void {
  const end = performance.now() + ms
  while (performance.now() < end);
}

async function receive(
  mode: string,
  ringBytes: number,
  size: number,
  count: number,
  workMs: number,
  keepEvery: number,
  capMB: number,
): Promise<void> {
  const expected = pattern(size)
  const [ownSender, receiver] = createSharedMemoryPair({ bytes: ringBytes, capacity: 16 })
  const script = fileURLToPath(import.meta.url)
  const sender = spawn(
    process.execPath,
    ['--import=tsx', script, 'send', receiver.name, String(size), String(count)],
    {
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  )
  const senderExited = new Promise((resolve) => sender.once('exit', resolve))
  const kept: [number, Uint8Array][] = []
  let peakMB = 0
  let taken = 0
  let bad = 0
  let capped = false
  const sleeper = new Int32Array(new SharedArrayBuffer(4))
  const check = (k: number, v: Uint8Array): boolean =>
    v.byteLength === size &&
    new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true) === k &&
    Buffer.compare(v.subarray(4), expected.subarray(4)) === 0
  const takeOne = async (k: number, value: unknown): Promise<boolean> => {
    if (k === 0) ownSender.close()
    const v = value as Uint8Array
    if (k % keepEvery === 0) kept.push([k, v])
    else if (new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true) !== k) bad++
    taken++
    busyWait(workMs)
    peakMB = Math.max(peakMB, memoryMB())
    if (peakMB > capMB) capped = true
    return !capped
  }
  if (mode === 'get') {
    for (let k = 0; k < count; k++)
      if (!(await takeOne(k, await receiver.get({ timeout: 30_000 })))) break
  } else if (mode === 'iterator') {
    let k = 0
    for await (const value of receiver) if (!(await takeOne(k++, value))) break
  } else if (mode === 'nowait') {
    // Never turns the event loop: sleeps on an Atomics.wait while the pipe is empty.
    const give = { up: performance.now() + 60_000 }
    for (let k = 0; k < count && performance.now() < give.up;) {
      const value = receiver.getNowait()
      if (value === undefined) {
        Atomics.wait(sleeper, 0, 0, 1)
        continue
      }
      const v = value as Uint8Array
      if (k === 0) ownSender.close()
      if (k % keepEvery === 0) kept.push([k, v])
      else if (new DataView(v.buffer, v.byteOffset, 4).getUint32(0, true) !== k) bad++
      taken++
      k++
      busyWait(workMs)
      peakMB = Math.max(peakMB, memoryMB())
      if (peakMB > capMB) {
        capped = true
        break
      }
    }
  } else throw new Error(`unknown mode ${mode}`)
  for (const [k, v] of kept) if (!check(k, v)) bad++
  sender.kill()
  await senderExited
  receiver.close()
  process.stdout.write(
    `${JSON.stringify({ peakMB: Math.round(peakMB), taken, kept: kept.length, bad, capped })}\n`,
  )
}

async function send(name: string, size: number, count: number): Promise<void> {
  const sender = Sender.attach(name)
  const value = pattern(size)
  const words = new DataView(value.buffer)
  for (let k = 0; k < count; k++) {
    words.setUint32(0, k, true)
    await sender.put(value)
  }
  await sender.waitForAllAck()
  sender.close()
}

const [role, ...args] = process.argv.slice(2)
if (role === 'receive') {
  const [mode, ...nums] = args
  const [ring, size, count, workMs, keepEvery, capMB] = nums.map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  await receive(mode!, ring, size, count, workMs, keepEvery, capMB)
} else if (role === 'send') {
  await send(args[0]!, Number(args[1]), Number(args[2]))
} else throw new Error(`unknown role ${role}`)
