/**
 * The blob-keep probe (`docs/decisions/2026-12-08-blob-keep.md`): how fast `await get()` takes
 * large values from another process, and how many page faults the sender takes per value (a
 * fault means a fresh blob, or a fresh page of one).
 *
 *     npm run probe:blob-keep -- [--sizes=1e7,1e8,1e9] [--count=N] [--take=get|receive]
 *
 * For each size, a child `put()`s the same Buffer `count` times (by default 1,000 values of 10 MB,
 * 100 of 100 MB, 12 of 1 GB) into a pipe of the default options, and its parent takes each one
 * with `await get()` (or `receive()` and `release()`) and drops it. Prints one JSON line per
 * size: GB/s from the 6th value on (the first blobs are always fresh), the sender's page faults
 * and CPU time per value, and how often `tryPut()` found the pipe full.
 *
 * @module
 */

import { fork } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair, Sender } from '../../../index.js'

const WARM_UP = 5

/** Minor page faults of this process so far (`/proc/self/stat`, field 10). */
function minorFaults(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[7])
}

function option(name: string): string | undefined {
  const prefix = `--${name}=`
  return process.argv.find((a) => a.startsWith(prefix))?.slice(prefix.length)
}

interface SenderReport {
  faultsPerValue: number
  cpuMicrosPerValue: number
  fullPipe: number
}

async function sender(name: string, size: number, count: number): Promise<void> {
  const s = Sender.attach(name)
  const value = Buffer.alloc(size, 7)
  const faults = minorFaults()
  let fullPipe = 0
  for (let i = 0; i < count; i++) {
    if (!s.tryPut(value)) {
      fullPipe++
      await s.put(value)
    }
  }
  await s.waitForAllAck()
  const cpu = process.cpuUsage()
  const report: SenderReport = {
    faultsPerValue: Math.round((minorFaults() - faults) / count),
    cpuMicrosPerValue: Math.round((cpu.user + cpu.system) / count),
    fullPipe,
  }
  process.send!(report)
  s.close()
  process.disconnect()
}

async function receiver(size: number, count: number, take: string): Promise<void> {
  const [own, r] = createSharedMemoryPair()
  const child = fork(
    fileURLToPath(import.meta.url),
    ['--sender', r.name, String(size), String(count)],
    {
      execArgv: process.execArgv,
    },
  )
  const report = new Promise<SenderReport>((resolve) =>
    child.once('message', (m) => resolve(m as SenderReport)),
  )
  let start = 0n
  for (let i = 0; i < count; i++) {
    let bytes: number
    if (take === 'receive') {
      const m = await r.receive()
      bytes = (m.value as Buffer).byteLength
      m.release()
    } else {
      bytes = ((await r.get()) as Buffer).byteLength
    }
    if (bytes !== size) throw new Error(`value ${i}: ${bytes} bytes, not ${size}`)
    if (i === WARM_UP - 1) start = process.hrtime.bigint()
  }
  const seconds = Number(process.hrtime.bigint() - start) / 1e9
  const s = await report
  console.log(
    JSON.stringify({
      size,
      take,
      count,
      gbPerSecond: +((size * (count - WARM_UP)) / seconds / 1e9).toFixed(2),
      senderFaultsPerValue: s.faultsPerValue,
      senderCpuMicrosPerValue: s.cpuMicrosPerValue,
      fullPipe: s.fullPipe,
    }),
  )
  r.close()
  own.close()
}

if (process.argv[2] === '--sender') {
  await sender(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]))
} else {
  const sizes = (option('sizes') ?? '1e7,1e8,1e9').split(',').map(Number)
  const take = option('take') ?? 'get'
  for (const size of sizes) {
    const count = Number(option('count') ?? (size >= 1e9 ? 12 : size >= 1e8 ? 100 : 1000))
    await receiver(size, count, take)
  }
}
