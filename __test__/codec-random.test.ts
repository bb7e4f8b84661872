/**
 * Codec tests against v8, in this process: seeded random nested values, resizable ArrayBuffers
 * and bigints of every size, each round-tripping as through `v8.serialize`/`v8.deserialize`.
 */

import test from 'ava'

import { decode, encode } from '../src/codec.js'
import { ERR_SHMPIPE_INVALID_ARGUMENT } from '../src/errors.js'
import {
  difference,
  encodeToBytes,
  expectCode,
  prng,
  roundTrip,
  target,
  v8RoundTrip,
} from './helpers/codec.js'
import { Generator } from './helpers/codec-generator.js'

// ---------------------------------------------------------------------------------------------
// Random values against v8

test('random nested values round-trip like v8 (seeded)', (t) => {
  const gen = new Generator(0x5eed)
  const CASES = 5000
  let failures = 0
  for (let i = 0; i < CASES && failures < 5; i++) {
    gen.pool = []
    gen.ancestors = []
    const value = gen.value(4)
    const expected = v8RoundTrip(value)
    const e = encode(value)
    const bytes = target(e.byteLength, 16 * (i % 3))
    e.writeTo(bytes)
    // Deterministic: encoding again gives the same bytes.
    if (i % 10 === 0) t.deepEqual(encodeToBytes(value), bytes, `case ${i}: same bytes`)
    const out = decode(bytes, { zeroCopy: i % 2 === 0, maxResizableBytes: Infinity })
    const d = difference(out, expected)
    if (d !== null) {
      failures++
      t.fail(`case ${i}: ${d}`)
    }
  }
  t.is(failures, 0)
  // The generator did make every kind of value, shared references and cycles.
  const expectedKinds = ['shared reference', 'cycle', 'Object', 'null-prototype object', 'array', 'array with holes or extras', 'sparse array', 'Map', 'Set', 'Date', 'RegExp', 'Number', 'String', 'Boolean', 'BigInt', 'ArrayBuffer', 'resizable ArrayBuffer', 'Buffer', 'DataView', ...['Error', 'EvalError', 'RangeError', 'ReferenceError', 'SyntaxError', 'TypeError', 'URIError'], ...['Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array']] // prettier-ignore
  for (const kind of expectedKinds) {
    const n = gen.made.get(kind) ?? 0
    t.true(n >= 20, `${kind}: ${n}`)
  }
  t.log([...gen.made].map(([k, n]) => `${k} ${n}`).join(', '))
})

// ---------------------------------------------------------------------------------------------
// Resizable ArrayBuffers and large bigints

test('resizable ArrayBuffer: maxByteLength is capped at the length unless maxResizableBytes allows more', (t) => {
  const Resizable = ArrayBuffer as unknown as new (n: number, o: object) => ArrayBuffer
  const ab = new Resizable(5, { maxByteLength: 64 })
  new Uint8Array(ab).set([1, 2, 3, 4, 5])
  type Growable = ArrayBuffer & { resizable: boolean; maxByteLength: number; resize(n: number): void } // prettier-ignore
  const cases: [number | undefined, number][] = [
    [undefined, 5],
    [0, 5],
    [3, 5], // never below the length
    [32, 32],
    [64, 64],
    [1000, 64], // never above what was sent
    [Infinity, 64],
  ]
  for (const [maxResizableBytes, expected] of cases) {
    for (const zeroCopy of [false, true]) {
      const [out, again] = roundTrip([ab, ab], { zeroCopy, maxResizableBytes }) as Growable[]
      t.is(out, again, 'a shared buffer stays one object')
      t.true(out!.resizable)
      t.is(out!.maxByteLength, expected, `maxResizableBytes ${maxResizableBytes}`)
      t.deepEqual([...new Uint8Array(out!)], [1, 2, 3, 4, 5])
      out!.resize(2)
      t.throws(() => out!.resize(expected + 1), { instanceOf: RangeError })
    }
  }
  // Buffers that are not resizable are not touched.
  const fixed = roundTrip(new ArrayBuffer(7), { maxResizableBytes: 100 }) as Growable
  t.false(fixed.resizable)
  t.is(fixed.maxByteLength, 7)
  for (const bad of [-1, NaN, '5', null]) {
    expectCode(
      t,
      () => decode(encodeToBytes(ab), { maxResizableBytes: bad as number }),
      ERR_SHMPIPE_INVALID_ARGUMENT,
      'maxResizableBytes',
    )
  }
})

test('bigints of every size round-trip, on both sides of the decoder’s small/large paths', (t) => {
  const random = prng(0xb16)
  for (const bytes of [8, 9, 16, 63, 64, 65, 100, 1000, 4096, 65536, 1 << 20]) {
    // A random magnitude of exactly `bytes` bytes (top byte non-zero).
    const digits = Buffer.from(Array.from({ length: bytes }, () => Math.floor(random() * 256)))
    digits[0] = 1 + (digits[0]! % 255)
    const magnitude = BigInt(`0x${digits.toString('hex')}`)
    for (const v of [magnitude, -magnitude, magnitude - 1n, -(magnitude + 1n)]) {
      const out = roundTrip(v)
      if (out !== v) t.fail(`${bytes} bytes: ${String(v).slice(0, 40)}…`)
      t.is((roundTrip(Object(v)) as bigint).valueOf(), v)
    }
    // The encoding is the magnitude's bytes, least significant first.
    const enc = encodeToBytes(magnitude)
    const at = enc.length - bytes
    t.is(enc[at + bytes - 1], Number(magnitude >> BigInt(8 * (bytes - 1))))
    t.is(enc[at], Number(magnitude & 0xffn))
  }
})

test('a 16 MiB bigint encodes and decodes in time in proportion to it', (t) => {
  const bits = 16 * 2 ** 23
  const v = (1n << BigInt(bits - 1)) | (0xabcdefn << BigInt(bits / 2)) | 0x5a5an
  const started = performance.now()
  const bytes = encodeToBytes(-v)
  const encodeMs = performance.now() - started
  const out = decode(bytes)
  const ms = performance.now() - started
  t.is(out, -v)
  t.log(`encoded in ${encodeMs.toFixed(0)} ms, decoded in ${(ms - encodeMs).toFixed(0)} ms`)
  // About 0.3 s each on an idle machine; a byte at a time (parseInt of a two-digit substring
  // when encoding, a string appended to when decoding) took 1.5 s and 4 s.
  t.true(encodeMs < 3000, `encoding took ${encodeMs} ms`)
  t.true(ms - encodeMs < 3000, `decoding took ${ms - encodeMs} ms`)
})
