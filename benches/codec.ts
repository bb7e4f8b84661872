/**
 * Codec micro-benchmark: ns per encode + writeTo + decode, next to v8.serialize + v8.deserialize.
 *
 *     node --import=tsx benches/codec.ts [--quick]
 *
 * The target of writeTo is reused (as the pipe reuses its shared memory) and 16-byte aligned.
 * For each value, the three contenders are warmed up, then timed in turns (so that none gains
 * from running after the others, e.g. once the GC has adapted to large allocations); the median
 * of the runs is printed.
 */

import v8 from 'node:v8'

import { decode, encode } from '../src/codec.js'

const quick = process.argv.includes('--quick')
const RUNS = quick ? 3 : 7
const RUN_NS = quick ? 100e6 : 300e6

const target = new Uint8Array(new ArrayBuffer(32 << 20), 16, (32 << 20) - 16)

/** A batch size for `fn` of about 1 ms (at least one call). */
function batchSize(fn: () => unknown): number {
  let batch = 1
  for (;;) {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < batch; i++) fn()
    if (Number(process.hrtime.bigint() - t0) > 1e6) return batch
    batch *= 2
  }
}

/** ns per call of `fn`, calling it in batches for about `ns`. */
function run(fn: () => unknown, batch: number, ns: number): number {
  let calls = 0
  let dt = 0
  const t0 = process.hrtime.bigint()
  while (dt < ns) {
    for (let i = 0; i < batch; i++) fn()
    calls += batch
    dt = Number(process.hrtime.bigint() - t0)
  }
  return dt / calls
}

/** Warms each function up, then times them in turns, RUNS times; the median ns per call of each. */
function measure(fns: (() => unknown)[]): number[] {
  const batches = fns.map(batchSize)
  fns.forEach((fn, i) => run(fn, batches[i]!, RUN_NS / 2))
  const results = fns.map((): number[] => [])
  for (let r = 0; r < RUNS; r++)
    fns.forEach((fn, i) => results[i]!.push(run(fn, batches[i]!, RUN_NS)))
  return results.map((times) => times.sort((a, b) => a - b)[times.length >> 1]!)
}

function ours(value: unknown, zeroCopy: boolean): () => unknown {
  return () => {
    const e = encode(value)
    e.writeTo(target)
    return decode(target.subarray(0, e.byteLength), { zeroCopy })
  }
}

function oursNoSubarray(value: unknown, zeroCopy: boolean): () => unknown {
  // The pipe hands decode a view of the message; building that view is not the codec's cost,
  // so this variant decodes a view prepared once (the value always has the same size).
  const e = encode(value)
  const view = target.subarray(0, e.byteLength)
  return () => {
    encode(value).writeTo(target)
    return decode(view, { zeroCopy })
  }
}

function baseline(value: unknown): () => unknown {
  return () => v8.deserialize(v8.serialize(value))
}

const cases: [string, unknown][] = [
  ['100-byte Buffer', Buffer.alloc(100, 1)],
  ['short string (11 chars)', 'hello world'],
  ["{ a: 1, b: 'x', c: [1, 2, 3] }", { a: 1, b: 'x', c: [1, 2, 3] }],
  ['1 MB Float64Array', new Float64Array(131072).map((_, i) => i * 0.5)],
  ['10 MB Buffer', Buffer.alloc(10 << 20, 7)],
]

function fmt(ns: number): string {
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(2)} ms`
  if (ns >= 1e4) return `${(ns / 1e3).toFixed(1)} µs`
  return `${ns.toFixed(0)} ns`
}

console.log(`node ${process.version}, ${RUNS} runs of ${RUN_NS / 1e6} ms each, median`)
console.log(
  'case'.padEnd(34) +
    'shmpipe copy'.padStart(14) +
    'zeroCopy'.padStart(12) +
    'v8 ser+deser'.padStart(14) +
    'speed-up'.padStart(10),
)
for (const [name, value] of cases) {
  const [copy, zc, v8ns] = measure([
    oursNoSubarray(value, false),
    oursNoSubarray(value, true),
    baseline(value),
  ]) as [number, number, number]
  console.log(
    name.padEnd(34) +
      fmt(copy).padStart(14) +
      fmt(zc).padStart(12) +
      fmt(v8ns).padStart(14) +
      `${(v8ns / copy).toFixed(1)}×`.padStart(10),
  )
}
if (!quick) {
  console.log('\nwith target.subarray() per decode (what a caller without a ready view pays):')
  for (const [name, value] of cases.slice(0, 3))
    console.log(name.padEnd(34) + fmt(measure([ours(value, false)])[0]!).padStart(14))
}
