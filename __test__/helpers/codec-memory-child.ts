/**
 * A receiver for the codec's memory tests, meant to run with a small heap
 * (`node --max-old-space-size=256 --import=tsx codec-memory-child.ts <pipe name>`).
 *
 * It attaches to the pipe, says `ready`, then receives values with `getSync` until the pipe
 * closes. For each value it reports, as one JSON line, what receiving it cost (wall time, growth
 * of the peak resident set, growth of the virtual address space where `/proc` shows it) and a
 * summary of the value that lets the parent check it without sending it back. Last, it decodes
 * `forgedResizable()` (a message no encoder writes) and reports that too.
 */

import { decode, Receiver, ShmpipeError } from '../../index.js'
import { virtualBytes } from './memory.js'

/** Peak resident set size so far, in bytes. */
function peakRss(): number {
  return process.resourceUsage().maxRSS * 1024
}

/** Enough of `value` to check it: a bigint's size and edges, or each ArrayBuffer's lengths. */
function summary(value: unknown): unknown {
  if (typeof value === 'bigint') {
    const hex = value.toString(16) // one flat string, half the bigint's size in characters
    const bits = (hex.length - 1) * 4 + parseInt(hex[0]!, 16).toString(2).length
    return {
      bigint: true,
      bits,
      low64: BigInt.asUintN(64, value).toString(16),
      high64: (value >> BigInt(bits - 64)).toString(16),
    }
  }
  if (Array.isArray(value))
    return value.map((ab: ArrayBuffer & { resizable: boolean; maxByteLength: number }) => ({
      byteLength: ab.byteLength,
      resizable: ab.resizable,
      maxByteLength: ab.maxByteLength,
    }))
  return { other: String(value) }
}

/**
 * A forged message: an 8 KiB resizable ArrayBuffer claiming a `maxByteLength` of 4 TiB (more
 * than some Node versions allow, which is a refusal then, not a reservation).
 */
function forgedResizable(): Uint8Array {
  const n = 8192
  // Format version 1, T_ARRAY_BUFFER, flags 1 (resizable), varint 8192, varint 2^42, then
  // padding to byte 16 and the bytes.
  const header = [1, 0x1d, 1, 0x80, 0x40, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]
  const bytes = new Uint8Array(16 + n)
  bytes.set(header)
  return bytes
}

function measure(receive: () => unknown): Record<string, unknown> {
  const virtualBefore = virtualBytes()
  const peakBefore = peakRss()
  const started = performance.now()
  let value: unknown
  try {
    value = receive()
  } catch (err) {
    return { error: err instanceof ShmpipeError ? err.code : String(err) }
  }
  const ms = performance.now() - started
  const virtualAfter = virtualBytes()
  return {
    ms,
    peakRssGrowth: peakRss() - peakBefore,
    virtualGrowth:
      virtualBefore === null || virtualAfter === null ? null : virtualAfter - virtualBefore,
    value: summary(value),
    kept: (kept.push(value), kept.length),
  }
}

/** Every value received stays reachable, so that what it holds shows in the measurements. */
const kept: unknown[] = []

const report = (message: unknown): void => void process.stdout.write(`${JSON.stringify(message)}\n`)

const receiver = Receiver.attach(process.argv[2]!)
report('ready')
for (;;) {
  let done = false
  const result = measure(() => {
    try {
      return receiver.getSync({ timeout: 60_000 })
    } catch (err) {
      if (err instanceof ShmpipeError && err.code === 'ERR_SHMPIPE_CLOSED') done = true
      throw err
    }
  })
  if (done) break
  report(result)
}
receiver.close()
report({ forged: measure(() => [decode(forgedResizable())]) })
