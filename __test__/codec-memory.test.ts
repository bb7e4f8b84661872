/**
 * Decoding costs memory in proportion to the message, in a receiver whose heap is small: a
 * child process with `--max-old-space-size=256` receives through a real pipe a 32 MiB bigint and
 * resizable ArrayBuffers whose `maxByteLength` claims far more than they hold, and reports what
 * each cost (see helpers/codec-memory-child.ts).
 */

import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { createSharedMemoryPair, type Receiver, type Sender } from '../index.js'
import { checkNoSegmentLeaks, spawnNode, type Child } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const MiB = 2 ** 20
const childScript = fileURLToPath(new URL('./helpers/codec-memory-child.ts', import.meta.url))

interface Measured {
  ms: number
  peakRssGrowth: number
  virtualGrowth: number | null
  value: unknown
}

function pair(t: ExecutionContext): [Sender, Receiver] {
  const [sender, receiver] = createSharedMemoryPair()
  t.teardown(() => {
    sender.close()
    receiver.close()
  })
  return [sender, receiver]
}

/** A receiver child with a 256 MiB heap on the pipe of `sender` (the pair's receiver unused). */
async function smallHeapReceiver(t: ExecutionContext, sender: Sender): Promise<Child> {
  const child = spawnNode(t, ['--max-old-space-size=256', '--import=tsx', childScript, sender.name])
  t.is(await child.next(60_000), 'ready')
  return child
}

test('a receiver with a 256 MiB heap decodes a 32 MiB bigint in time and memory in proportion to it', async (t) => {
  t.timeout(120_000)
  const [sender, receiver] = pair(t)
  receiver.close() // never used: the child takes the role
  const bytes = 32 * MiB
  // Bits 0…2^28-1 set sparsely: the top bit, a pattern at both ends.
  const value =
    (1n << BigInt(bytes * 8 - 1)) |
    (0x0123456789abcdefn << BigInt(bytes * 8 - 72)) |
    0xfedcba9876543210n
  const child = await smallHeapReceiver(t, sender)
  await sender.put(value)
  const got = (await child.next(90_000)) as Measured
  t.log(
    `received in ${got.ms.toFixed(0)} ms, peak RSS +${(got.peakRssGrowth / MiB).toFixed(0)} MiB`,
  )
  t.deepEqual(got.value, {
    bigint: true,
    bits: bytes * 8,
    low64: 'fedcba9876543210',
    high64: (value >> BigInt(bytes * 8 - 64)).toString(16),
  })
  // The message, its hex digits (two bytes a byte, outside the heap and as one string) and the
  // bigint: about 6× the message at most. Appending a byte at a time to a string made a rope of
  // 32 Mi pieces (over 1 GiB) and then ran out of heap.
  t.true(got.peakRssGrowth < 10 * bytes, `peak RSS grew ${got.peakRssGrowth} bytes`)
  // About 0.5 s on an idle machine; the margin is for a loaded one.
  t.true(got.ms < 15_000, `${got.ms} ms`)
  sender.close()
  t.is((await child.exited).code, 0, child.stderr())
})

test('a receiver caps the maxByteLength of resizable ArrayBuffers at their length', async (t) => {
  t.timeout(120_000)
  const [sender, receiver] = pair(t)
  receiver.close() // never used: the child takes the role
  // The largest maxByteLength this Node lets the sender make (4 GiB on Node 20).
  let max = 2 ** 42
  for (; ; max /= 2) {
    try {
      new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer)(0, {
        maxByteLength: max,
      })
      break
    } catch {}
  }
  const buffers = Array.from(
    { length: 64 },
    () =>
      new (ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer)(8192, {
        maxByteLength: max,
      }),
  )
  const child = await smallHeapReceiver(t, sender)
  await sender.put(buffers)
  const got = (await child.next(60_000)) as Measured
  t.log(`64 × 8 KiB with maxByteLength ${max}: received in ${got.ms.toFixed(0)} ms`)
  t.deepEqual(
    got.value,
    buffers.map(() => ({ byteLength: 8192, resizable: true, maxByteLength: 8192 })),
  )
  // Each buffer reserved `max` bytes of address space before the cap (256 GiB in all on Node
  // 20); now the 512 KiB message costs about that much.
  if (got.virtualGrowth !== null)
    t.true(got.virtualGrowth < 256 * MiB, `virtual memory grew ${got.virtualGrowth} bytes`)
  t.true(got.peakRssGrowth < 64 * MiB, `peak RSS grew ${got.peakRssGrowth} bytes`)
  t.true(got.ms < 10_000, `${got.ms} ms`)
  sender.close()
  // A message no encoder writes: 8 KiB claiming a maxByteLength of 4 TiB.
  const { forged } = (await child.next(30_000)) as { forged: Measured }
  t.deepEqual(forged.value, [{ byteLength: 8192, resizable: true, maxByteLength: 8192 }])
  if (forged.virtualGrowth !== null)
    t.true(forged.virtualGrowth < 64 * MiB, `virtual memory grew ${forged.virtualGrowth} bytes`)
  t.is((await child.exited).code, 0, child.stderr())
})
