/**
 * Codec tests of corrupt input, in this process: truncations, 100,000 seeded mutations
 * (`SHMPIPE_FUZZ_CASES` sets how many), huge claimed lengths: each decodes to a value or throws a
 * ShmpipeError, in time and memory in proportion to the input, nothing else.
 */

import { types } from 'node:util'

import test, { type ExecutionContext } from 'ava'

import { decode, FORMAT_VERSION } from '../src/codec.js'
import { ERR_SHMPIPE_BAD_SEGMENT, ShmpipeError } from '../src/errors.js'
import { encodeToBytes, expectCode, prng, roundTrip, target } from './helpers/codec.js'
import { Generator } from './helpers/codec-generator.js'
import { virtualBytes } from './helpers/memory.js'

// ---------------------------------------------------------------------------------------------
// Corrupt input

/**
 * The resizable ArrayBuffers inside a decoded value whose `maxByteLength` exceeds their length
 * (none may, by default), as `byteLength/maxByteLength` strings.
 */
function growableBuffers(value: unknown, found: string[] = [], seen = new Set<object>()): string[] {
  if (typeof value !== 'object' || value === null || seen.has(value)) return found
  seen.add(value)
  if (types.isArrayBuffer(value)) {
    const ab = value as ArrayBuffer & { maxByteLength: number }
    if (ab.maxByteLength > ab.byteLength) found.push(`${ab.byteLength}/${ab.maxByteLength}`)
  } else if (ArrayBuffer.isView(value)) {
    growableBuffers(value.buffer, found, seen)
  } else if (types.isMap(value)) {
    for (const [k, v] of value) growableBuffers(v, growableBuffers(k, found, seen), seen)
  } else if (types.isSet(value)) {
    for (const v of value) growableBuffers(v, found, seen)
  } else {
    for (const key of Reflect.ownKeys(value)) {
      const d = Object.getOwnPropertyDescriptor(value, key)
      if (d !== undefined && 'value' in d) growableBuffers(d.value, found, seen)
    }
  }
  return found
}

/**
 * Decodes corrupt bytes: a value or a ShmpipeError BAD_SEGMENT; anything else fails, and so
 * does a resizable ArrayBuffer that may grow past the length it came with.
 */
function decodeCorrupt(t: ExecutionContext, bytes: Uint8Array, label: string): 'value' | 'error' {
  try {
    const value = decode(bytes, { zeroCopy: bytes.length % 2 === 0 })
    const growable = growableBuffers(value)
    if (growable.length > 0) t.fail(`${label}: resizable ArrayBuffers ${growable.join(', ')}`)
    return 'value'
  } catch (err) {
    if (!(err instanceof ShmpipeError) || err.code !== ERR_SHMPIPE_BAD_SEGMENT) {
      t.fail(`${label}: threw ${String(err)}`)
    }
    return 'error'
  }
}

function sampleEncodings(seed: number, count: number): Uint8Array[] {
  const gen = new Generator(seed)
  const samples: Uint8Array[] = []
  while (samples.length < count) {
    gen.pool = []
    gen.ancestors = []
    const bytes = encodeToBytes(gen.value(3))
    if (bytes.length < 5000) samples.push(bytes)
  }
  return samples
}

test('corrupt input: every truncation of valid encodings is refused', (t) => {
  let checked = 0
  for (const bytes of sampleEncodings(0xc0ffee, 300)) {
    for (let n = 0; n < bytes.length; n++) {
      const truncated = target(n)
      truncated.set(bytes.subarray(0, n))
      const err = t.throws(() => decode(truncated), { instanceOf: ShmpipeError })
      if (err?.code !== ERR_SHMPIPE_BAD_SEGMENT)
        t.fail(`truncation to ${n} of ${bytes.length}: ${err?.code}`)
      checked++
    }
  }
  t.true(checked > 10000, `${checked} truncations`)
})

/** Mutation cases of the decoder fuzz (issue 4 asks for at least 100,000 in CI). */
const FUZZ_CASES = Number(process.env.SHMPIPE_FUZZ_CASES ?? 100_000)

/** Resizable ArrayBuffers whose `maxByteLength` claims far more than they hold. */
function resizableSamples(): Uint8Array[] {
  const Resizable = ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer
  const samples = [
    encodeToBytes(new Resizable(5, { maxByteLength: 64 })),
    encodeToBytes({ a: new Resizable(100, { maxByteLength: 2 ** 32 }), b: [1, 'x'] }),
    encodeToBytes([
      new Resizable(0, { maxByteLength: 2 ** 31 }),
      new Resizable(8, { maxByteLength: 2 ** 30 }),
    ]),
  ]
  // Forged: 16 bytes claiming a maxByteLength of 2^42 (more than Node 20 lets anyone make).
  const forged = target(32)
  forged.set([FORMAT_VERSION, 0x1d, 1, 16, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01])
  samples.push(forged)
  return samples
}

test('corrupt input: 100,000 seeded mutations give a value or a ShmpipeError, nothing else', (t) => {
  const random = prng(0xbadf00d)
  // Mostly random nested values; one sample in 10 a resizable ArrayBuffer with a large claim.
  const samples = sampleEncodings(0xfeed, 180)
  const resizable = resizableSamples()
  for (let i = 0; i < 20; i++) samples.splice(i * 10, 0, resizable[i % resizable.length]!)
  const outcomes = { value: 0, error: 0 }
  const virtualBefore = virtualBytes()
  const peakBefore = process.resourceUsage().maxRSS * 1024
  const started = performance.now()
  for (let i = 0; i < FUZZ_CASES; i++) {
    const bytes = new Uint8Array(samples[i % samples.length]!)
    const flips = 1 + Math.floor(random() * 3)
    for (let f = 0; f < flips; f++) {
      const at = Math.floor(random() * bytes.length)
      bytes[at] =
        random() < 0.5 ? bytes[at]! ^ (1 << Math.floor(random() * 8)) : Math.floor(random() * 256)
    }
    outcomes[decodeCorrupt(t, bytes, `case ${i}`)]++
  }
  // Random garbage after a valid version byte, of every length up to 64.
  for (let i = 0; i < 3000; i++) {
    const bytes = new Uint8Array(1 + (i % 64)).map(() => Math.floor(random() * 256))
    bytes[0] = FORMAT_VERSION
    outcomes[decodeCorrupt(t, bytes, `garbage ${i}`)]++
  }
  const ms = performance.now() - started
  const peakGrowth = process.resourceUsage().maxRSS * 1024 - peakBefore
  const virtualAfter = virtualBytes()
  t.log(`${FUZZ_CASES + 3000} cases in ${ms.toFixed(0)} ms, peak RSS +${peakGrowth >> 20} MiB`)
  t.true(outcomes.error > 1000 && outcomes.value > 100, JSON.stringify(outcomes))
  // Inputs under 5,000 bytes: whatever they claim, decoding them must not take memory or time
  // beyond that (about 10 s and 200 MiB of garbage on an idle machine; one claimed length
  // allocated for real is 100 ms and gigabytes, and a 4 GiB maxByteLength kept reserves 4 GiB of
  // address space whether or not it is ever used).
  t.true(ms < FUZZ_CASES * 2, `${ms} ms`)
  t.true(peakGrowth < 2 ** 29, `peak RSS grew ${peakGrowth} bytes`)
  if (virtualBefore !== null && virtualAfter !== null)
    t.true(
      virtualAfter - virtualBefore < 2 ** 31,
      `${virtualAfter - virtualBefore} bytes of address space`,
    )
})

test('corrupt input: mutations of large encodings cost time and memory in proportion to them', (t) => {
  // A 4 MiB bigint, a 1 MiB string, 2 MiB of binary and a resizable ArrayBuffer, mutated in
  // their headers and at random. Each input is 7 MiB: decoding one must stay in proportion.
  const random = prng(0x1a2e)
  const Resizable = ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer
  const big = (1n << BigInt(4 * 2 ** 23 - 1)) | 0x123456789n
  const value = [
    big,
    'é'.repeat(2 ** 19),
    new Float64Array(2 ** 18).fill(1.5),
    new Resizable(4096, { maxByteLength: 2 ** 32 }),
  ]
  const bytes = encodeToBytes(value)
  const peakBefore = process.resourceUsage().maxRSS * 1024
  const started = performance.now()
  const out = decode(bytes) as typeof value
  t.is(out[0], big)
  t.is((out[3] as ArrayBuffer & { maxByteLength: number }).maxByteLength, 4096)
  const outcomes = { value: 0, error: 0 }
  const CASES = 60
  for (let i = 0; i < CASES; i++) {
    const corrupt = target(bytes.length)
    corrupt.set(bytes)
    for (let f = 0; f < 1 + (i % 3); f++) {
      // Half the flips in the first 64 bytes (tags and lengths), half anywhere.
      const at = Math.floor(random() * (i % 2 === 0 ? 64 : bytes.length))
      corrupt[at] = Math.floor(random() * 256)
    }
    outcomes[decodeCorrupt(t, corrupt, `large case ${i}`)]++
  }
  const ms = performance.now() - started
  const peakGrowth = process.resourceUsage().maxRSS * 1024 - peakBefore
  t.log(`${CASES} cases of ${bytes.length} bytes in ${ms.toFixed(0)} ms, peak RSS +${peakGrowth >> 20} MiB`, outcomes) // prettier-ignore
  // About 100 ms a case and 100 MiB in all on an idle machine. Appending the bigint's digits
  // to a string one byte at a time took 1.7 s and 400 MiB for each case.
  t.true(ms < CASES * 500, `${ms} ms`)
  t.true(peakGrowth < 32 * bytes.length, `peak RSS grew ${peakGrowth} bytes`)
})

test('corrupt input: huge lengths and counts are refused without allocating them', (t) => {
  // Take real encodings and replace a length with the largest varints.
  const samples = [
    ['x'.repeat(100)],
    { k: 'v' },
    [new Float64Array(4)],
    new Map([[1, 2]]),
    new Set([1]),
    10n ** 30n,
    new ArrayBuffer(3),
  ]
  const outcomes = { value: 0, error: 0 }
  for (const value of samples) {
    const bytes = encodeToBytes(value)
    for (let at = 1; at < bytes.length; at++) {
      for (const big of [
        [0xff, 0xff, 0xff, 0xff, 0x0f],
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
        [0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
      ]) {
        const corrupt = new Uint8Array([
          ...bytes.subarray(0, at),
          ...big,
          ...bytes.subarray(at + 1),
        ])
        outcomes[decodeCorrupt(t, corrupt, `${String(value)} at ${at}`)]++
      }
    }
  }
  // Most replaced bytes are lengths or counts, which the input cannot back.
  t.true(outcomes.error > outcomes.value, JSON.stringify(outcomes))
})

test('corrupt input: a claimed length is checked against the input before anything is allocated', (t) => {
  // A real array header with its length replaced by 30,000,000: allocating such an array takes
  // V8 over 100 ms (a 240 MB backing store), checking the claim against the 16 bytes at hand
  // takes microseconds. The bound leaves a margin of two orders of magnitude.
  const header = encodeToBytes([1, 2]).subarray(0, 2) // version, array tag
  const claim = [0x80, 0x87, 0xa7, 0x0e] // varint 30,000,000
  const bytes = new Uint8Array([...header, ...claim, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
  const start = process.hrtime.bigint()
  for (let i = 0; i < 100; i++) expectCode(t, () => decode(bytes), ERR_SHMPIPE_BAD_SEGMENT)
  const ms = Number(process.hrtime.bigint() - start) / 1e6
  t.true(ms < 2000, `${ms} ms`)
})

test('property keys decode exactly, however many look alike', (t) => {
  // More distinct short keys than the decoder's key cache has slots, many of the same length
  // and differing in one character only: a cache hit must never return a different key.
  const keys: string[] = []
  for (let i = 0; i < 20000; i++)
    keys.push(`k${i.toString(36)}`, `key_${i % 100}${String.fromCharCode(33 + (i % 94))}`)
  for (const key of keys) {
    const out = roundTrip({ [key]: 1, [key + '!']: 2 }) as Record<string, number>
    if (Object.keys(out).join() !== `${key},${key}!`) {
      t.fail(`${key}: got ${Object.keys(out).join()}`)
      return
    }
  }
  t.pass()
})
