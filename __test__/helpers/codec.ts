/**
 * Helpers of the codec tests: encoding into a slot-like target, round trips (ours and v8's), a
 * strict structural comparison, a seeded PRNG, and an assertion of a ShmpipeError's code.
 */

import v8 from 'node:v8'
import { types } from 'node:util'

import type { ExecutionContext } from 'ava'

import { decode, encode } from '../../src/codec.js'
import { ShmpipeError, type ShmpipeErrorCode } from '../../src/errors.js'

/** n bytes at `offset` (16 by default, as the pipe's slots) inside a larger ArrayBuffer. */
export function target(n: number, offset = 16): Uint8Array {
  return new Uint8Array(new ArrayBuffer(offset + n + 16), offset, n)
}

export function encodeToBytes(value: unknown, offset = 16): Uint8Array {
  const e = encode(value)
  const bytes = target(e.byteLength, offset)
  e.writeTo(bytes)
  return bytes
}

export function roundTrip(
  value: unknown,
  options?: { zeroCopy?: boolean; offset?: number; maxResizableBytes?: number },
): unknown {
  return decode(encodeToBytes(value, options?.offset), {
    zeroCopy: options?.zeroCopy,
    maxResizableBytes: options?.maxResizableBytes,
  })
}

export function v8RoundTrip(value: unknown): unknown {
  return v8.deserialize(v8.serialize(value))
}

export function describeValue(v: unknown): string {
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)
  if (typeof v === 'object' && v !== null) return `[${Object.prototype.toString.call(v)}]`
  return Object.is(v, -0) ? '-0' : String(v)
}

export function protoName(o: object): string {
  const proto = Object.getPrototypeOf(o) as { constructor?: { name?: string } } | null
  return proto === null ? 'null' : (proto.constructor?.name ?? '?')
}

export function bytesOf(v: ArrayBufferView | ArrayBuffer): Buffer {
  return ArrayBuffer.isView(v)
    ? Buffer.from(v.buffer, v.byteOffset, v.byteLength)
    : Buffer.from(v as ArrayBuffer)
}

/**
 * The first difference between two values, or null. Stricter than isDeepStrictEqual: same
 * prototypes, `Object.is` for primitives (NaN, -0) and dates, holes, property order and
 * descriptors, raw bytes of binary values, Buffer-ness, and the same shape of references
 * (a one-to-one mapping between the objects of both sides: shared stays shared, cycles stay).
 */
export function difference(
  a: unknown,
  b: unknown,
  path = 'value',
  aToB = new Map<object, object>(),
  bToA = new Map<object, object>(),
): string | null {
  if (typeof a !== typeof b) return `${path}: typeof ${typeof a} vs ${typeof b}`
  if (typeof a !== 'object' || a === null || b === null) {
    return Object.is(a, b) ? null : `${path}: ${describeValue(a)} vs ${describeValue(b)}`
  }
  const x = a
  const y = b as object
  const mappedX = aToB.get(x)
  const mappedY = bToA.get(y)
  if (mappedX !== undefined || mappedY !== undefined) {
    return mappedX === y && mappedY === x ? null : `${path}: references are shaped differently`
  }
  aToB.set(x, y)
  bToA.set(y, x)
  if (Object.getPrototypeOf(x) !== Object.getPrototypeOf(y))
    return `${path}: prototype ${protoName(x)} vs ${protoName(y)}`
  if (Buffer.isBuffer(x) !== Buffer.isBuffer(y)) return `${path}: Buffer-ness differs`

  if (ArrayBuffer.isView(x)) {
    const yv = y as ArrayBufferView
    if (x.byteLength !== yv.byteLength)
      return `${path}: byteLength ${x.byteLength} vs ${yv.byteLength}`
    if (!bytesOf(x).equals(bytesOf(yv))) return `${path}: bytes differ`
    return null
  }
  if (types.isArrayBuffer(x)) {
    const xa = x as ArrayBuffer & { resizable?: boolean; maxByteLength?: number }
    const ya = y as typeof xa
    if (xa.byteLength !== ya.byteLength) return `${path}: byteLength differs`
    if (xa.resizable !== ya.resizable || xa.maxByteLength !== ya.maxByteLength)
      return `${path}: resizability differs`
    return bytesOf(xa).equals(bytesOf(ya)) ? null : `${path}: bytes differ`
  }
  if (types.isDate(x)) {
    return Object.is(x.getTime(), (y as Date).getTime()) ? null : `${path}: dates differ`
  }
  if (types.isRegExp(x)) {
    const yr = y as RegExp
    if (x.source !== yr.source || x.flags !== yr.flags || x.lastIndex !== yr.lastIndex)
      return `${path}: RegExp ${String(x)} vs ${String(yr)}`
    return null
  }
  if (types.isBoxedPrimitive(x)) {
    const xv: unknown = (x as { valueOf(): unknown }).valueOf()
    const yv: unknown = (y as { valueOf(): unknown }).valueOf()
    return Object.is(xv, yv) ? null : `${path}: boxed ${describeValue(xv)} vs ${describeValue(yv)}`
  }
  if (types.isMap(x)) {
    const xe = [...x]
    const ye = [...(y as Map<unknown, unknown>)]
    if (xe.length !== ye.length) return `${path}: Map sizes ${xe.length} vs ${ye.length}`
    for (let i = 0; i < xe.length; i++) {
      const d =
        difference(xe[i]![0], ye[i]![0], `${path}.<key ${i}>`, aToB, bToA) ??
        difference(xe[i]![1], ye[i]![1], `${path}.<value ${i}>`, aToB, bToA)
      if (d) return d
    }
    return null
  }
  if (types.isSet(x)) {
    const xe = [...x]
    const ye = [...(y as Set<unknown>)]
    if (xe.length !== ye.length) return `${path}: Set sizes ${xe.length} vs ${ye.length}`
    for (let i = 0; i < xe.length; i++) {
      const d = difference(xe[i], ye[i], `${path}.<element ${i}>`, aToB, bToA)
      if (d) return d
    }
    return null
  }
  // Plain objects, arrays, errors: every own property, in order, with its descriptor.
  if (types.isNativeError(x) !== types.isNativeError(y)) return `${path}: error-ness differs`
  const xk = Reflect.ownKeys(x)
  const yk = Reflect.ownKeys(y)
  if (xk.length !== yk.length || xk.some((k, i) => k !== yk[i]))
    return `${path}: own keys [${xk.map(String).join()}] vs [${yk.map(String).join()}]`
  for (const k of xk) {
    const dx = Object.getOwnPropertyDescriptor(x, k)!
    const dy = Object.getOwnPropertyDescriptor(y, k)!
    const sub = `${path}[${JSON.stringify(String(k))}]`
    if (
      dx.enumerable !== dy.enumerable ||
      dx.writable !== dy.writable ||
      dx.configurable !== dy.configurable ||
      dx.get !== dy.get ||
      dx.set !== dy.set
    )
      return `${sub}: descriptors differ`
    // An accessor (the `stack` of Errors from Node 22 on): the same getter on both sides, so
    // compare what it gives.
    const d =
      dx.get === undefined
        ? difference(dx.value, dy.value, sub, aToB, bToA)
        : difference(Reflect.get(x, k), Reflect.get(y, k), sub, aToB, bToA)
    if (d) return d
  }
  return null
}

/** Asserts that our round trip of `value` gives what v8's gives, in both decode modes. */
/**
 * Checks that `value` decodes as `v8.deserialize(v8.serialize(value))` does, copied and with
 * `zeroCopy`. Like v8, the decoder is told to keep any `maxByteLength` of resizable ArrayBuffers
 * (`maxResizableBytes: Infinity`; by default it caps them).
 */
export function matchesV8(t: ExecutionContext, value: unknown, label = ''): unknown {
  const expected = v8RoundTrip(value)
  const copied = roundTrip(value, { maxResizableBytes: Infinity })
  t.is(difference(copied, expected), null, `copy ${label}`)
  t.is(
    difference(
      roundTrip(value, { zeroCopy: true, maxResizableBytes: Infinity }),
      expected,
      'value',
    ),
    null,
    `zeroCopy ${label}`,
  )
  return copied
}

/** Seeded PRNG (mulberry32): the random tests are the same on every run. */
export function prng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
}

export function expectCode(
  t: ExecutionContext,
  fn: () => unknown,
  code: ShmpipeErrorCode,
  message?: RegExp | string,
): ShmpipeError {
  const err = t.throws(fn, { instanceOf: ShmpipeError })!
  t.is(err.code, code, err.message)
  t.is(err.name, 'ShmpipeError')
  if (message instanceof RegExp) t.regex(err.message, message)
  else if (message !== undefined) t.true(err.message.includes(message), err.message)
  return err
}
