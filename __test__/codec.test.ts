/**
 * Tests of the value codec (`src/codec.ts`), in this process: ShmpipeError, and every supported
 * type coming back as from v8.deserialize. The other codec tests, by topic:
 * `codec-random.test.ts` (random values and large values against v8), `codec-api.test.ts`
 * (zeroCopy, unsupported values, the Encoded object, the format, nesting depth),
 * `codec-corrupt.test.ts` (corrupt input), `codec-memory.test.ts` (what decoding costs in a small
 * heap).
 */

import { isDeepStrictEqual, types } from 'node:util'
import vm from 'node:vm'

import test, { type ExecutionContext } from 'ava'

import { encode } from '../src/codec.js'
import {
  ERR_SHMPIPE_BAD_SEGMENT,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_NO_SPACE,
  ERR_SHMPIPE_PEER_GONE,
  ERR_SHMPIPE_TIMEOUT,
  ERR_SHMPIPE_TOO_LARGE,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ShmpipeError,
} from '../src/errors.js'
import { matchesV8, roundTrip, v8RoundTrip } from './helpers/codec.js'

// ---------------------------------------------------------------------------------------------
// ShmpipeError

test('ShmpipeError: a named Error with a readonly code', (t) => {
  const cause = new Error('inner')
  const err = new ShmpipeError(ERR_SHMPIPE_TIMEOUT, 'waited 5 ms for space', { cause })
  t.true(err instanceof Error)
  t.is(err.name, 'ShmpipeError')
  t.is(err.code, 'ERR_SHMPIPE_TIMEOUT')
  t.is(err.message, 'waited 5 ms for space')
  t.is(err.cause, cause)
  t.regex(err.stack ?? '', /^ShmpipeError: waited 5 ms for space\n/)
  t.false(Object.keys(err).includes('name'))
  t.is(String(err), 'ShmpipeError: waited 5 ms for space')
})

test('error codes are their own names', (t) => {
  const codes = {
    ERR_SHMPIPE_TIMEOUT,
    ERR_SHMPIPE_CLOSED,
    ERR_SHMPIPE_PEER_GONE,
    ERR_SHMPIPE_UNSUPPORTED_TYPE,
    ERR_SHMPIPE_NO_SPACE,
    ERR_SHMPIPE_BAD_SEGMENT,
    ERR_SHMPIPE_INVALID_ARGUMENT,
    ERR_SHMPIPE_TOO_LARGE,
  }
  for (const [name, value] of Object.entries(codes)) t.is(value, name)
})

// ---------------------------------------------------------------------------------------------
// Every supported type, with the same type coming out as from v8.deserialize

type Case = [name: string, make: () => unknown, check?: (t: ExecutionContext, out: any) => void]

function sparseWithExtras(): unknown[] {
  const a = [1, , 3] // eslint-disable-line no-sparse-arrays
  ;(a as unknown as Record<string, unknown>).extra = 'kept'
  return a
}

const cases: Case[] = [
  ['0', () => 0, (t, out) => t.true(Object.is(out, 0))],
  ['-0', () => -0, (t, out) => t.true(Object.is(out, -0))],
  ['NaN', () => NaN, (t, out) => t.true(Number.isNaN(out))],
  ['Infinity', () => Infinity, (t, out) => t.is(out, Infinity)],
  ['-Infinity', () => -Infinity, (t, out) => t.is(out, -Infinity)],
  ['small ints', () => [0, 1, 127, 128, -1, -128, -129, 32767, -32768, 32768]],
  ['int32 limits', () => [2 ** 31 - 1, -(2 ** 31), 2 ** 31, -(2 ** 31) - 1]],
  ['floats', () => [0.1, -1.5, Number.MIN_VALUE, Number.MAX_VALUE, Number.EPSILON]],
  ['safe integers', () => [Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, 2 ** 53, 2 ** 60]],
  ['bigint 0', () => 0n, (t, out) => t.is(out, 0n)],
  [
    'bigint 64-bit edges',
    () => [2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, -(2n ** 63n) - 1n, 2n ** 64n],
  ],
  ['bigint huge', () => 3n ** 1000n, (t, out) => t.is(out, 3n ** 1000n)],
  ['bigint huge negative', () => -(7n ** 500n), (t, out) => t.is(out, -(7n ** 500n))],
  ['true', () => true, (t, out) => t.is(out, true)],
  ['false', () => false, (t, out) => t.is(out, false)],
  ['null', () => null, (t, out) => t.is(out, null)],
  ['undefined', () => undefined, (t, out) => t.is(out, undefined)],
  ['empty string', () => '', (t, out) => t.is(out, '')],
  ['ASCII string', () => 'hello world', (t, out) => t.is(out, 'hello world')],
  ['ASCII string of 33…63 chars', () => 'x'.repeat(40), (t, out) => t.is(out, 'x'.repeat(40))],
  ['Latin-1 string', () => 'déjà vu ÿ', (t, out) => t.is(out, 'déjà vu ÿ')],
  ['BMP string', () => '中文 ∑ ☃', (t, out) => t.is(out, '中文 ∑ ☃')],
  ['astral string', () => '😀 𝄞', (t, out) => t.is(out, '😀 𝄞')],
  [
    'lone surrogates (kept, as by v8)',
    () => ['a\ud800b', '\udc00', 'x\ud83d', '\ude00\ud83d', 'é\ud800'],
    (t, out) => t.deepEqual(out, ['a\ud800b', '\udc00', 'x\ud83d', '\ude00\ud83d', 'é\ud800']),
  ],
  ['long ASCII string', () => 'abc'.repeat(30000), (t, out) => t.is(out, 'abc'.repeat(30000))],
  ['long UTF-8 string', () => 'é😀'.repeat(20000), (t, out) => t.is(out, 'é😀'.repeat(20000))],
  [
    'long string with a lone surrogate',
    () => 'a'.repeat(40000) + '\ud800',
    (t, out) => t.is(out, 'a'.repeat(40000) + '\ud800'),
  ],
  ['Date', () => new Date(1700000000123), (t, out) => t.true(out instanceof Date)],
  [
    'invalid Date',
    () => new Date(NaN),
    (t, out) => {
      t.true(out instanceof Date)
      t.true(Number.isNaN(out.getTime()))
    },
  ],
  ['Date limits', () => [new Date(8.64e15), new Date(-8.64e15)]],
  [
    'RegExp (lastIndex is not kept, as by v8)',
    () => Object.assign(/a[b-c]+\//gimsuy, { lastIndex: 3 }),
    (t, out) => {
      t.true(out instanceof RegExp)
      t.is(out.flags, 'gimsuy')
      t.is(out.lastIndex, 0)
    },
  ],
  ['RegExp flags d and v', () => [/x/d, new RegExp('[\\p{L}--[a-z]]', 'v')]],
  ['RegExp with a lone surrogate', () => new RegExp('\ud800')],
  [
    'Error',
    () => new Error('boom'),
    (t, out) => {
      t.true(out instanceof Error)
      t.true(types.isNativeError(out))
      t.is(out.message, 'boom')
      t.is(out.name, 'Error')
      t.deepEqual(Object.getOwnPropertyNames(out), ['stack', 'message'])
    },
  ],
  ...[EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError].map((C): Case => [
    C.name,
    () => new C('m'),
    (t, out) => {
      t.is(Object.getPrototypeOf(out), C.prototype)
      t.is(out.name, C.name)
    },
  ]),
  [
    'Error with cause',
    () => new TypeError('outer', { cause: new RangeError('inner', { cause: { code: 42 } }) }),
    (t, out) => {
      t.true(out.cause instanceof RangeError)
      t.deepEqual(out.cause.cause, { code: 42 })
      t.false(Object.getOwnPropertyDescriptor(out, 'cause')!.enumerable)
    },
  ],
  [
    'Error with cause undefined',
    () => new Error('x', { cause: undefined }),
    (t, out) => t.true(Object.hasOwn(out, 'cause')),
  ],
  ['Error without message', () => new Error(), (t, out) => t.false(Object.hasOwn(out, 'message'))],
  [
    'Error: extra properties dropped, custom name lost (as by v8)',
    () => Object.assign(new Error('x'), { name: 'Custom', code: 'E_X' }),
    (t, out) => {
      t.is(out.name, 'Error')
      t.is(out.code, undefined)
      t.regex(out.stack, /^Custom: x/)
    },
  ],
  [
    'Error named like a standard one becomes it (as by v8)',
    () => Object.assign(new Error('x'), { name: 'TypeError' }),
    (t, out) => t.true(out instanceof TypeError),
  ],
  ['Error with a non-string message', () => Object.assign(new Error(), { message: 5 })],
  [
    'Error with a message getter (not kept, as by v8)',
    () => Object.defineProperty(new Error('x'), 'message', { get: () => 'got' }),
  ],
  [
    'Error without a string stack',
    () => Object.assign(new Error('x'), { stack: 5 }),
    (t, out) => t.is(out.stack, undefined),
  ],
  ['AggregateError becomes Error (as by v8)', () => new AggregateError([1], 'agg')],
  [
    'Error subclass becomes its base (as by v8)',
    () => new (class MyError extends RangeError {})('x'),
    (t, out) => t.is(Object.getPrototypeOf(out), RangeError.prototype),
  ],
  [
    'plain object',
    () => ({ a: 1, b: 'x', c: [1, 2, 3], d: { e: null } }),
    (t, out) => t.is(Object.getPrototypeOf(out), Object.prototype),
  ],
  [
    'object keys: integer-like, odd, unicode, empty, __proto__',
    () =>
      JSON.parse(
        '{"b":1,"2":2,"a":3,"1":4,"-1":5,"4294967295":6,"4294967294":7,"":8,"key with space":9,"ключ":10,"__proto__":11,"x\\ud800":12}',
      ) as unknown,
    (t, out) => {
      t.is(Object.getPrototypeOf(out), Object.prototype)
      t.true(Object.hasOwn(out, '__proto__'))
    },
  ],
  [
    'null-prototype object comes back plain (as by v8)',
    () => Object.assign(Object.create(null) as object, { a: 1 }),
    (t, out) => t.is(Object.getPrototypeOf(out), Object.prototype),
  ],
  [
    'symbol keys and non-enumerable properties ignored (as by v8)',
    () =>
      Object.defineProperty({ [Symbol('s')]: 1, a: 2 }, 'hidden', { value: 3, enumerable: false }),
  ],
  ['getters are read (as by v8)', () => ({ get a() { return 'got' } }), (t, out) => t.deepEqual(out, { a: 'got' })], // prettier-ignore
  ['frozen object', () => Object.freeze({ a: 1 }), (t, out) => t.false(Object.isFrozen(out))],
  ['empty array', () => [], (t, out) => t.true(Array.isArray(out))],
  [
    'array with holes',
    () => [1, , 3, , ,], // eslint-disable-line no-sparse-arrays
    (t, out) => {
      t.is(out.length, 5)
      t.false(1 in out)
      t.true(2 in out)
      t.false(4 in out)
    },
  ],
  ['array of undefined (not holes)', () => [undefined, undefined], (t, out) => t.true(0 in out)],
  ['array with only holes', () => new Array(7), (t, out) => t.is(out.length, 7)],
  [
    'array with extra properties (kept, as by v8)',
    sparseWithExtras,
    (t, out) => {
      t.is(out.extra, 'kept')
      t.false(1 in out)
    },
  ],
  ['RegExp match array (index, input, groups kept, as by v8)', () => /(?<word>b+)/.exec('abbc')],
  [
    'very sparse array',
    () => {
      const a: unknown[] = []
      a[1e9] = 'far'
      a[5] = 'near'
      ;(a as unknown as Record<string, unknown>).foo = 'bar'
      return a
    },
    (t, out) => {
      t.is(out.length, 1e9 + 1)
      t.is(out[1e9], 'far')
      t.deepEqual(Object.keys(out), ['5', '1000000000', 'foo'])
    },
  ],
  ['array of length 2^32-1', () => Object.assign([], { length: 2 ** 32 - 1 })],
  [
    'array with a non-enumerable element (a hole for v8)',
    () => Object.defineProperty([1, 2, 3], 1, { value: 9, enumerable: false }),
    (t, out) => t.false(1 in out),
  ],
  [
    'array with a non-enumerable element and an extra property',
    () =>
      Object.assign(Object.defineProperty([1, 2], 0, { value: 9, enumerable: false }), { x: 1 }),
  ],
  [
    'Map',
    () =>
      new Map<unknown, unknown>([
        [1, 'a'],
        ['b', { c: 2 }],
        [{ k: 1 }, [3]],
        [NaN, -0],
      ]),
  ],
  ['Set', () => new Set<unknown>([1, 'a', { b: 2 }, NaN, -0, 0n])],
  ['ArrayBuffer', () => new Uint8Array([1, 2, 3, 250]).buffer, (t, out) => t.true(out instanceof ArrayBuffer)], // prettier-ignore
  ['empty ArrayBuffer', () => new ArrayBuffer(0)],
  ['large ArrayBuffer', () => new Uint8Array(100000).map((_, i) => i).buffer],
  [
    'resizable ArrayBuffer (kept resizable, as by v8)',
    () => new (ArrayBuffer as any)(5, { maxByteLength: 64 }) as ArrayBuffer,
    (t, out) => {
      t.true(out.resizable)
      t.is(out.byteLength, 5)
    },
  ],
  ...(
    [
      Int8Array,
      Uint8Array,
      Uint8ClampedArray,
      Int16Array,
      Uint16Array,
      Int32Array,
      Uint32Array,
      Float32Array,
      Float64Array,
    ] as const
  ).map((C): Case => [
    C.name,
    () => new C([0, 1, -1, 255, 256, 1.5, NaN, 65535, -32768]),
    (t, out) => {
      t.is(Object.getPrototypeOf(out), C.prototype)
      t.false(Buffer.isBuffer(out))
    },
  ]),
  ...([BigInt64Array, BigUint64Array] as const).map((C): Case => [
    C.name,
    () => new C([0n, 1n, -1n, 2n ** 63n - 1n]),
    (t, out) => t.is(Object.getPrototypeOf(out), C.prototype),
  ]),
  [
    'Float64Array with NaN payloads (raw bytes kept)',
    () =>
      new Float64Array(
        new Uint8Array([1, 0, 0, 0, 0, 0, 0xf8, 0x7f, 1, 2, 3, 4, 5, 6, 0xf0, 0xff]).buffer,
      ),
  ],
  [
    'Float32Array as a subrange of a larger buffer',
    () => new Float32Array(new Float32Array([1, 2, 3, 4, 5, 6]).buffer, 8, 3),
  ],
  [
    'DataView',
    () => new DataView(new Uint8Array([9, 8, 7, 6, 5, 4]).buffer, 1, 4),
    (t, out) => {
      t.true(out instanceof DataView)
      t.is(out.byteLength, 4)
      t.is(out.getUint8(0), 8)
    },
  ],
  [
    'Buffer (pooled)',
    () => Buffer.from('pooled buffer'),
    (t, out) => {
      t.true(Buffer.isBuffer(out))
      t.is(out.toString(), 'pooled buffer')
    },
  ],
  ['empty Buffer', () => Buffer.alloc(0), (t, out) => t.true(Buffer.isBuffer(out))],
  ['large Buffer', () => Buffer.alloc(3 << 20, 0xab), (t, out) => t.true(Buffer.isBuffer(out))],
  ['large Float64Array', () => new Float64Array(200000).map((_, i) => i / 3)],
  [
    'typed array subclass becomes its base (as by v8)',
    () => new (class Bytes extends Uint8Array {})(3),
    (t, out) => t.is(Object.getPrototypeOf(out), Uint8Array.prototype),
  ],
  [
    'typed array over a SharedArrayBuffer (bytes copied, as by v8)',
    () => new Int16Array(new SharedArrayBuffer(8)),
  ],
  [
    'extra properties of binary values, Maps, Dates dropped (as by v8)',
    () => [
      Object.assign(new Uint8Array(2), { x: 1 }),
      Object.assign(new Map(), { x: 1 }),
      Object.assign(new Date(0), { x: 1 }),
    ],
  ],
  [
    'boxed primitives',
    () => [
      new Number(1.5),
      new Number(-0),
      new Number(NaN),
      new String('s😀'),
      new Boolean(false),
      new Boolean(true),
      Object(12n),
      Object(-(2n ** 100n)),
    ],
    (t, out) => {
      t.is(typeof out[0], 'object')
      t.true(Object.is(out[1].valueOf(), -0))
      t.true(out[3] instanceof String)
      t.is(typeof out[6].valueOf(), 'bigint')
    },
  ],
  [
    'boxed String: extra properties dropped (as by v8)',
    () => Object.assign(new String('ab'), { x: 1 }),
  ],
  [
    'subclasses of Map, Set, Array, Date come back as the base type (as by v8)',
    () => [
      new (class M extends Map<unknown, unknown> {})([[1, 2]]),
      new (class S extends Set<unknown> {})([1]),
      class A extends Array {}.from([1, 2]),
      new (class D extends Date {})(0),
    ],
  ],
  [
    'objects of another realm',
    () =>
      vm.runInNewContext(
        '({ a: [1, { b: 2 }], m: new Map([[1, new Set([2])]]), d: new Date(5), e: new TypeError("t"), u: new Uint16Array([7]), r: /x/g, n: Object(1) })',
      ) as unknown,
  ],
  [
    'shared references stay shared',
    () => {
      const shared = { s: 1 }
      const buf = Buffer.from('shared')
      const arr = [shared]
      return {
        a: shared,
        b: [shared, arr],
        c: new Map([[shared, arr]]),
        d: new Set([arr]),
        e: buf,
        f: buf,
      }
    },
    (t, out) => {
      t.is(out.a, out.b[0])
      t.is(out.b[1][0], out.a)
      t.is(out.c.get(out.a), out.b[1])
      t.is(out.e, out.f)
    },
  ],
  [
    'cycles',
    () => {
      const o: Record<string, unknown> = { name: 'root' }
      const arr: unknown[] = [o]
      arr.push(arr)
      const m = new Map<unknown, unknown>()
      m.set(m, o)
      const s = new Set<unknown>()
      s.add(s)
      Object.assign(o, { self: o, arr, m, s })
      return o
    },
    (t, out) => {
      t.is(out.self, out)
      t.is(out.arr[0], out)
      t.is(out.arr[1], out.arr)
      t.is(out.m.get(out.m), out)
      t.true(out.s.has(out.s))
    },
  ],
  [
    'an Error and the object in its cause, referenced from outside (as by v8)',
    () => {
      const o: Record<string, unknown> = {}
      const e = new Error('x', { cause: o })
      o.e = e
      return o
    },
  ],
  [
    'a binary value and its ArrayBuffer are independent (as by v8)',
    () => {
      const ab = new Uint8Array([1, 2, 3, 4]).buffer
      return [ab, new Uint8Array(ab, 1, 2), new DataView(ab)]
    },
    (t, out) => t.not(out[1].buffer, out[0]),
  ],
  [
    'the same typed array twice is one object (as by v8)',
    () => {
      const f = new Float64Array([1, 2])
      return [f, f]
    },
    (t, out) => t.is(out[0], out[1]),
  ],
]

for (const [name, make, check] of cases) {
  test(`round trip like v8: ${name}`, (t) => {
    const value = make()
    const out = matchesV8(t, value)
    // isDeepStrictEqual as a second opinion (it finds two invalid Dates unequal: NaN !== NaN).
    const invalidDate = (v: unknown) => v instanceof Date && Number.isNaN(v.getTime())
    if (!invalidDate(value)) t.true(isDeepStrictEqual(out, v8RoundTrip(value)), 'isDeepStrictEqual')
    if (check) {
      check(t, out)
      check(t, roundTrip(value, { zeroCopy: true }))
    }
  })
}

test('an Error whose cause refers back to it (v8 decodes this from Node 22 on; shmpipe always)', (t) => {
  const e = new Error('loop')
  e.cause = { error: e }
  const self = new RangeError('self')
  self.cause = self
  // V8 11 (Node 20) throws "Unable to deserialize cloned data" here: it reads an Error's cause
  // before it registers the Error, so a reference back to it is unknown. V8 12 (Node 22) and
  // later register it first and give the cycle back; where it does, shmpipe must give the same.
  let v8Decodes = true
  try {
    v8RoundTrip(self)
  } catch {
    v8Decodes = false
  }
  if (v8Decodes) {
    matchesV8(t, e, 'loop through an object')
    matchesV8(t, self, 'self')
  } else {
    t.true(Number(process.versions.node.split('.')[0]) < 22, 'only older V8s fail here')
    t.throws(() => v8RoundTrip(e))
  }
  const out = roundTrip(e) as Error & { cause: { error: unknown } }
  t.true(out instanceof Error)
  t.is(out.cause.error, out)
  const out2 = roundTrip(self) as Error
  t.true(out2 instanceof RangeError)
  t.is(out2.cause, out2)
})

test('large graphs: thousands of objects with shared references, encoded one after another', (t) => {
  // Past the small-graph paths of the encoder (linear search) and of the decoder (reused table).
  for (const count of [15, 16, 17, 1023, 1024, 1025, 5000, 3]) {
    const objects = Array.from({ length: count }, (_, i) => ({ i }))
    const value = {
      objects,
      again: [objects[count - 1], objects[0], objects],
      map: new Map(objects.map((o) => [o, o.i])),
    }
    const out = matchesV8(t, value, `${count} objects`) as typeof value
    t.is(out.again[0], out.objects[count - 1])
    t.is(out.map.get(out.objects[0]!), 0)
  }
})

test('a view of part of a large ArrayBuffer encodes only the view', (t) => {
  const big = new ArrayBuffer(1 << 20)
  for (const view of [
    new Uint8Array(big, 100, 10),
    new Float64Array(big, 800, 2),
    Buffer.from(big, 5, 3),
    new DataView(big, 7, 9),
  ]) {
    const e = encode(view)
    t.true(e.byteLength < 32, `${e.byteLength} bytes`)
    t.is(encode({ v: view }).byteLength < 40, true)
    matchesV8(t, view)
  }
})
