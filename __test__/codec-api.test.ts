/**
 * Codec tests of its entries' contract, in this process: `zeroCopy` views, values it refuses
 * (naming the path), the Encoded object (`writeTo`), the format's version byte and framing, and
 * the nesting depth bound.
 */

import v8 from 'node:v8'
import * as pathNamespace from 'node:path'

import test from 'ava'

import { decode, encode, FORMAT_VERSION, MAX_DEPTH, type Encoded } from '../src/codec.js'
import {
  ERR_SHMPIPE_BAD_SEGMENT,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_TOO_LARGE,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
} from '../src/errors.js'
import {
  bytesOf,
  difference,
  encodeToBytes,
  expectCode,
  matchesV8,
  roundTrip,
  target,
  v8RoundTrip,
} from './helpers/codec.js'

// ---------------------------------------------------------------------------------------------
// zeroCopy

const VIEW_TYPES = [Int8Array, Uint8Array, Uint8ClampedArray, Int16Array, Uint16Array, Int32Array, Uint32Array, Float32Array, Float64Array, BigInt64Array, BigUint64Array, DataView, Buffer] as const // prettier-ignore

function makeView(C: (typeof VIEW_TYPES)[number], bytes: number): ArrayBufferView {
  const data = new Uint8Array(bytes).map((_, i) => (i * 7 + 3) & 0xff)
  if (C === Buffer) return Buffer.from(data)
  return new (C as new (buffer: ArrayBuffer) => ArrayBufferView)(data.buffer)
}

test('zeroCopy: binary values are aligned views into the input', (t) => {
  for (const C of VIEW_TYPES) {
    for (const lead of ['', 'x', 'abc', 'seven!!', 'a longer lead-in string']) {
      for (const bytes of [0, 8, 64, 4096]) {
        const view = makeView(C, bytes)
        const input = encodeToBytes({ lead, view, again: [lead, makeView(C, 16)] })
        const out = decode(input, { zeroCopy: true }) as {
          view: ArrayBufferView
          again: [string, ArrayBufferView]
        }
        for (const v of [out.view, out.again[1]]) {
          t.is(Object.getPrototypeOf(v), C.prototype)
          t.is(v.buffer, input.buffer, `${C.name} shares the input's memory`)
          t.is((v.byteOffset - input.byteOffset) % 8, 0, `${C.name} 8-byte aligned in the encoding`)
          t.is(v.byteOffset % ((C as { BYTES_PER_ELEMENT?: number }).BYTES_PER_ELEMENT ?? 1), 0)
        }
        t.true(bytesOf(out.view).equals(bytesOf(view)))
        // It really is a view: writing into the input shows through.
        if (bytes > 0) {
          const at = out.view.byteOffset - input.byteOffset
          input[at] = input[at]! ^ 0xff
          t.is(bytesOf(out.view)[0], bytesOf(view)[0]! ^ 0xff)
        }
      }
    }
  }
})

test('zeroCopy: a top-level Buffer / typed array is a view into the input', (t) => {
  for (const C of VIEW_TYPES) {
    const view = makeView(C, 80)
    const input = encodeToBytes(view)
    const out = decode(input, { zeroCopy: true }) as ArrayBufferView
    t.is(out.buffer, input.buffer)
    t.is((out.byteOffset - input.byteOffset) % 8, 0)
    t.true(bytesOf(out).equals(bytesOf(view)))
  }
})

test('default decode copies: results own their memory', (t) => {
  for (const C of VIEW_TYPES) {
    for (const bytes of [0, 16, 64, 104, 8192]) {
      const view = makeView(C, bytes)
      const input = encodeToBytes([view, { nested: view }])
      const out = decode(input) as [ArrayBufferView, { nested: ArrayBufferView }]
      t.is(out[0], out[1].nested)
      t.not(out[0].buffer, input.buffer)
      if (C !== Buffer) {
        // Its own ArrayBuffer, of exactly its size (a Buffer may sit in Node's Buffer pool).
        t.is(out[0].byteOffset, 0)
        t.is(out[0].buffer.byteLength, bytes)
      }
      input.fill(0)
      t.true(bytesOf(out[0]).equals(bytesOf(view)), `${C.name} unaffected by the input changing`)
    }
  }
  const ab = new Uint8Array([1, 2, 3]).buffer
  const input = encodeToBytes(ab)
  const out = decode(input, { zeroCopy: true }) as ArrayBuffer
  t.not(out, input.buffer) // an ArrayBuffer cannot be a view: always a copy
  t.deepEqual(new Uint8Array(out), new Uint8Array([1, 2, 3]))
})

test('zeroCopy on a misaligned input copies what cannot be a view', (t) => {
  const value = {
    f: new Float64Array([1.5, -2]),
    u: new Uint8Array([1, 2, 3]),
    b: Buffer.from('hi'),
  }
  const aligned = encodeToBytes(value)
  const misaligned = target(aligned.byteLength, 3)
  misaligned.set(aligned)
  const out = decode(misaligned, { zeroCopy: true }) as typeof value
  t.is(difference(out, v8RoundTrip(value)), null)
  t.true(out.f.buffer !== misaligned.buffer) // a Float64Array cannot start at an odd address
  t.true(out.u.buffer === misaligned.buffer) // bytes can
  t.true(out.b.buffer === misaligned.buffer)
})

// ---------------------------------------------------------------------------------------------
// Unsupported values

function fn() {}
class Foo {
  x = 1
}

const unsupported: [name: string, make: () => unknown, path: string, what: RegExp][] = [
  ['a function', () => fn, 'value', /function fn/],
  ['an arrow function in an array', () => [1, () => 1], 'value[1]', /function/],
  ['a method deep inside', () => ({ a: [0, 1, 2, { fn() {} }] }), 'value.a[3].fn', /function fn/],
  [
    'a symbol under a key with a space',
    () => ({ 'key with space': Symbol('s') }),
    'value["key with space"]',
    /symbol Symbol\(s\)/,
  ],
  ['a key that is not an identifier', () => ({ '1a': fn, ok: 1 }), 'value["1a"]', /function/],
  // v8 accepts class instances but turns them into plain objects; shmpipe refuses them.
  ['a class instance', () => ({ x: new Foo() }), 'value.x', /instance of class Foo/],
  [
    'a class instance with a null-prototype base',
    () => [Object.create(Object.create(null) as object) as object],
    'value[0]',
    /non-plain prototype/,
  ],
  ['a WeakMap', () => new WeakMap(), 'value', /WeakMap/],
  ['a WeakSet', () => [new WeakSet()], 'value[0]', /WeakSet/],
  ['a Promise', () => ({ p: Promise.resolve() }), 'value.p', /Promise/],
  [
    'a SharedArrayBuffer',
    () => ({ sab: new SharedArrayBuffer(8) }),
    'value.sab',
    /SharedArrayBuffer/,
  ],
  ['a Symbol object', () => Object(Symbol('b')) as object, 'value', /Symbol object/],
  ['a Proxy', () => ({ p: new Proxy({}, {}) }), 'value.p', /Proxy/],
  ['a Proxy of an array', () => [new Proxy([], {})], 'value[0]', /Proxy/],
  ['an arguments object', () => (function (..._: unknown[]) { return { args: arguments } })(1, 2), 'value.args', /arguments object/], // prettier-ignore
  ['a module namespace object', () => ({ ns: pathNamespace }), 'value.ns', /module namespace/],
  ['globalThis', () => globalThis, 'value', /instance of class/],
  ['a Map value', () => new Map([['k', fn]]), 'value.get("k")', /function fn/],
  ['a Map value under a number key', () => new Map([[7, fn]]), 'value.get(7)', /function fn/],
  [
    'a Map value under an object key',
    () =>
      new Map<object, unknown>([
        [{}, 1],
        [{}, fn],
      ]),
    'value.<Map value #1>',
    /function/,
  ],
  ['a Map key', () => new Map([[fn, 1]]), 'value.<Map key #0>', /function fn/],
  ['a Set element', () => new Set([1, Symbol('x')]), 'value.<Set element #1>', /symbol/],
  ['an Error cause', () => new Error('x', { cause: fn }), 'value.cause', /function fn/],
  [
    'an Error message that is a symbol',
    () => Object.assign(new Error(), { message: Symbol('m') }),
    'value.message',
    /symbol/,
  ],
  ['an extra property of an array', () => Object.assign([1], { fn }), 'value.fn', /function/],
  [
    'a sparse array element',
    () => {
      const a: unknown[] = []
      a[100000] = fn
      return a
    },
    'value[100000]',
    /function/,
  ],
  [
    'a mix of everything',
    () => ({ a: { b: { c: [0, { d: new Map([['e', [new Set([fn])]]]) }] } } }),
    'value.a.b.c[1].d.get("e")[0].<Set element #0>',
    /function fn/,
  ],
  [
    'a detached ArrayBuffer',
    () => {
      const ab = new ArrayBuffer(8)
      structuredClone(ab, { transfer: [ab] })
      return { ab }
    },
    'value.ab',
    /detached ArrayBuffer/,
  ],
  [
    'a view of a detached ArrayBuffer',
    () => {
      const ab = new ArrayBuffer(8)
      const view = new Float64Array(ab)
      structuredClone(ab, { transfer: [ab] })
      return [view]
    },
    'value[0]',
    /Float64Array on a detached ArrayBuffer/,
  ],
  [
    'a top-level view of a detached ArrayBuffer',
    () => {
      const ab = new ArrayBuffer(8)
      const view = new Uint8Array(ab)
      structuredClone(ab, { transfer: [ab] })
      return view
    },
    'value',
    /detached/,
  ],
]

for (const [name, make, path, what] of unsupported) {
  test(`unsupported: ${name} (${path})`, (t) => {
    const value = make()
    if (!/class instance/.test(name))
      t.throws(() => v8.serialize(value), undefined, 'v8 rejects it too')
    let encoded: Encoded | undefined
    const err = expectCode(t, () => (encoded = encode(value)), ERR_SHMPIPE_UNSUPPORTED_TYPE)
    t.is(encoded, undefined)
    t.true(err.message.startsWith(`Cannot encode ${path}: `), err.message)
    t.regex(err.message, what)
    t.regex(err.message, /is not supported$/)
  })
}

test('encode throws before anything is written, and leaves pending encodings intact', (t) => {
  const pendingValue = { msg: 'pending', data: Buffer.alloc(5000, 1), list: [1, 2, 3] }
  const pending = encode(pendingValue)
  // Valid up to the function, with large binary data and a long string written before it.
  const bad = {
    big: Buffer.alloc(1 << 20, 2),
    text: 'y'.repeat(50000),
    nested: { deeper: [new Float64Array(1000), { fine: true, notFine: [1, 2, () => 'nope'] }] },
  }
  let encoded: Encoded | undefined
  expectCode(
    t,
    () => (encoded = encode(bad)),
    ERR_SHMPIPE_UNSUPPORTED_TYPE,
    'value.nested.deeper[1].notFine[2]',
  )
  t.is(encoded, undefined)
  // The encoding made before the failure still writes correctly.
  const bytes = target(pending.byteLength)
  pending.writeTo(bytes)
  t.is(difference(decode(bytes), v8RoundTrip(pendingValue)), null)
  // And the codec still works.
  t.deepEqual(roundTrip({ ok: [1, 'two'] }), { ok: [1, 'two'] })
})

test('exceptions from getters pass through encode unchanged', (t) => {
  const boom = new Error('getter failed')
  const err = t.throws(() =>
    encode({
      get a(): unknown {
        throw boom
      },
    }),
  )
  t.is(err, boom)
  t.deepEqual(roundTrip([1]), [1])
})

test('symbol-keyed properties are ignored, not rejected (as by v8)', (t) => {
  const out = matchesV8(t, { [Symbol('k')]: fn, a: 1 })
  t.deepEqual(out, { a: 1 })
})

// ---------------------------------------------------------------------------------------------
// The Encoded object

test('writeTo writes exactly byteLength bytes, any number of times', (t) => {
  const value = { a: 'text', b: Buffer.alloc(3000, 9), c: 'é'.repeat(20000), d: [1.5, -0] }
  const e = encode(value)
  const first = new Uint8Array(e.byteLength + 64).fill(0xaa)
  e.writeTo(first)
  t.true(
    first.subarray(e.byteLength).every((x) => x === 0xaa),
    'nothing written past byteLength',
  )
  t.is(first[0], FORMAT_VERSION)
  const second = target(e.byteLength)
  e.writeTo(second)
  t.deepEqual(second, first.subarray(0, e.byteLength))
  t.is(difference(decode(second), v8RoundTrip(value)), null)
})

test('several encodings pending at once, written in any order', (t) => {
  const values = [{ a: 1 }, 'two', [3, { four: Buffer.from('4') }], new Float64Array(5000), 5n]
  const encoded = values.map((v) => encode(v))
  for (let i = values.length - 1; i >= 0; i--) {
    const bytes = target(encoded[i]!.byteLength)
    encoded[i]!.writeTo(bytes)
    t.is(difference(decode(bytes), v8RoundTrip(values[i])), null)
  }
})

test('an encoding written, then overtaken by another, can still be written again', (t) => {
  const value = { a: [1, 2, 3], s: 'again' }
  const e = encode(value)
  const first = target(e.byteLength)
  e.writeTo(first)
  encode({ other: 'value that reuses the scratch memory' }).writeTo(target(100))
  const second = target(e.byteLength)
  e.writeTo(second)
  t.deepEqual(second, first)
})

test('writeTo refuses when the value changed size (and writes nothing)', (t) => {
  const value = { s: 'short' }
  const e = encode(value)
  e.writeTo(target(e.byteLength))
  encode('something else').writeTo(target(100))
  value.s = 'much longer than before'
  const bytes = target(e.byteLength).fill(0x55)
  expectCode(t, () => e.writeTo(bytes), ERR_SHMPIPE_INVALID_ARGUMENT, 'changed size')
  t.true(bytes.every((x) => x === 0x55))
})

test('writeTo refuses when a large binary value was detached since encode', (t) => {
  for (const make of [
    (ab: ArrayBuffer) => ({ data: new Uint8Array(ab) }),
    (ab: ArrayBuffer) => new Float64Array(ab),
  ]) {
    const ab = new ArrayBuffer(1 << 16)
    const e = encode(make(ab))
    structuredClone(ab, { transfer: [ab] })
    const bytes = target(e.byteLength).fill(0x55)
    expectCode(t, () => e.writeTo(bytes), ERR_SHMPIPE_INVALID_ARGUMENT, 'detached')
    t.true(bytes.every((x) => x === 0x55))
  }
})

test('writeTo checks its target', (t) => {
  for (const value of ['x', Buffer.alloc(100)]) {
    const e = encode(value)
    expectCode(
      t,
      () => e.writeTo(new Uint8Array(e.byteLength - 1)),
      ERR_SHMPIPE_INVALID_ARGUMENT,
      `needs ${e.byteLength}`,
    )
    expectCode(
      t,
      () => e.writeTo(new DataView(new ArrayBuffer(200)) as unknown as Uint8Array),
      ERR_SHMPIPE_INVALID_ARGUMENT,
    )
  }
})

test('encode can be called from a getter of a value being encoded', (t) => {
  const inner = { deep: [1, 2] }
  let nested: Uint8Array | undefined
  const value = {
    before: 'b',
    get trigger() {
      nested = encodeToBytes(inner)
      return 'triggered'
    },
    after: [3],
  }
  const out = roundTrip(value)
  t.deepEqual(out, { before: 'b', trigger: 'triggered', after: [3] })
  t.deepEqual(decode(nested!), inner)
})

test('a property deleted by an earlier getter is skipped (as by v8)', (t) => {
  const value: Record<string, unknown> = {
    get a() {
      delete value.b
      return 1
    },
    b: 2,
    c: 3,
  }
  t.deepEqual(roundTrip(value), { a: 1, c: 3 })
})

// ---------------------------------------------------------------------------------------------
// Format

test('format: version byte first, tiny encodings for small values', (t) => {
  t.is(encodeToBytes(1)[0], FORMAT_VERSION)
  t.is(encode(1).byteLength, 2)
  t.is(encode(true).byteLength, 2)
  t.is(encode('x').byteLength, 3)
  t.is(encode('').byteLength, 2)
  t.is(encode(1.5).byteLength, 10)
  t.is(encode(Buffer.alloc(10)).byteLength, 18) // 8-byte header: the payload is 8-byte aligned
  t.is(encode(Buffer.alloc(100)).byteLength, 108)
  t.true(encode({ a: 1, b: 'x', c: [1, 2, 3] }).byteLength <= 20)
})

test('decode rejects other format versions', (t) => {
  const bytes = encodeToBytes({ a: 1 })
  for (const version of [0, FORMAT_VERSION + 1, 255]) {
    bytes[0] = version
    expectCode(t, () => decode(bytes), ERR_SHMPIPE_BAD_SEGMENT, `unknown format version ${version}`)
  }
})

test('decode rejects trailing bytes, empty and non-Uint8Array input', (t) => {
  const bytes = encodeToBytes([1, 2])
  const longer = new Uint8Array(bytes.length + 1)
  longer.set(bytes)
  expectCode(t, () => decode(longer), ERR_SHMPIPE_BAD_SEGMENT, 'left over')
  expectCode(t, () => decode(new Uint8Array(0)), ERR_SHMPIPE_BAD_SEGMENT)
  expectCode(t, () => decode(new Uint8Array([FORMAT_VERSION])), ERR_SHMPIPE_BAD_SEGMENT)
  expectCode(t, () => decode('bytes' as unknown as Uint8Array), ERR_SHMPIPE_INVALID_ARGUMENT)
  expectCode(
    t,
    () => decode(new DataView(bytes.buffer) as unknown as Uint8Array),
    ERR_SHMPIPE_INVALID_ARGUMENT,
  )
})

test('decode accepts Buffers, and input at any offset', (t) => {
  const value = { a: [1, 'b', new Uint16Array([1, 2])] }
  const bytes = encodeToBytes(value)
  t.is(difference(decode(Buffer.from(bytes)), v8RoundTrip(value)), null)
  for (let offset = 0; offset < 9; offset++) {
    const shifted = target(bytes.length, offset)
    shifted.set(bytes)
    t.is(difference(decode(shifted, { zeroCopy: true }), v8RoundTrip(value)), null)
  }
})

// ---------------------------------------------------------------------------------------------
// Nesting depth

function nest(kind: number, depth: number): unknown {
  let v: unknown = 'leaf'
  for (let i = 0; i < depth; i++) {
    switch ((kind === 5 ? i : kind) % 5) {
      case 0:
        v = [v]
        break
      case 1:
        v = { a: v }
        break
      case 2:
        v = new Map([[1, v]])
        break
      case 3:
        v = new Set([v])
        break
      default:
        v = new Error('e', { cause: v })
    }
  }
  return v
}

test(`nesting: ${MAX_DEPTH} levels of every container round-trip, one more is refused`, (t) => {
  for (let kind = 0; kind <= 5; kind++) {
    const deep = nest(kind, MAX_DEPTH)
    t.is(difference(roundTrip(deep), v8RoundTrip(deep)), null)
    const err = expectCode(
      t,
      () => encode(nest(kind, MAX_DEPTH + 1)),
      ERR_SHMPIPE_TOO_LARGE,
      `nesting deeper than ${MAX_DEPTH} levels`,
    )
    t.true(err.message.length < 1000, 'the path is shortened')
  }
})

test('nesting: decode refuses input nested deeper than MAX_DEPTH', (t) => {
  // [[[…'leaf'…]]] encodes as: version, (array header) × depth, 'leaf', (array trailer) × depth.
  const one = encodeToBytes(['leaf'])
  const leaf = encodeToBytes('leaf').subarray(1)
  const headerLength = one.indexOf(leaf[0]!, 1) - 1
  const header = one.subarray(1, 1 + headerLength)
  const trailer = one.subarray(1 + headerLength + leaf.length)
  const build = (depth: number) => {
    const parts: Uint8Array[] = [Uint8Array.of(FORMAT_VERSION)]
    for (let i = 0; i < depth; i++) parts.push(header)
    parts.push(leaf)
    for (let i = 0; i < depth; i++) parts.push(trailer)
    return new Uint8Array(Buffer.concat(parts))
  }
  t.deepEqual(build(MAX_DEPTH), encodeToBytes(nest(0, MAX_DEPTH)))
  t.notThrows(() => decode(build(MAX_DEPTH)))
  expectCode(t, () => decode(build(MAX_DEPTH + 1)), ERR_SHMPIPE_BAD_SEGMENT, 'nesting deeper')
  expectCode(t, () => decode(build(100000)), ERR_SHMPIPE_BAD_SEGMENT, 'nesting deeper')
})
