/**
 * Values for the pipe tests: a catalogue of every supported type, a seeded generator of random
 * nested values, a structural comparison that also checks types and the shape of references, and
 * a byte pattern for large buffers. Used by the test process and by the child processes.
 */

import { types } from 'node:util'
import v8 from 'node:v8'

/** What `v8.deserialize(v8.serialize(value))` gives: the reference the pipe is compared with. */
export function v8RoundTrip<T>(value: T): T {
  return v8.deserialize(v8.serialize(value)) as T
}

/** Every TypedArray constructor. */
export const TYPED_ARRAYS = [
  Int8Array,
  Uint8Array,
  Uint8ClampedArray,
  Int16Array,
  Uint16Array,
  Int32Array,
  Uint32Array,
  Float32Array,
  Float64Array,
  BigInt64Array,
  BigUint64Array,
] as const

const ERRORS = [Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError]

/** Bytes 0…n-1 of a simple deterministic sequence. */
function someBytes(n: number, seed = 1): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed * 17 + (i >> 8)) & 0xff
  return b
}

/** A typed array of `C` with `n` elements of varied values, at `offset` elements into a larger buffer. */
function typedArray(
  C: (typeof TYPED_ARRAYS)[number],
  n: number,
  offset = 0,
): ArrayBufferView & { length: number } {
  const bytes = someBytes((offset + n + 2) * C.BYTES_PER_ELEMENT, n + offset)
  return new C(bytes.buffer as ArrayBuffer, offset * C.BYTES_PER_ELEMENT, n)
}

/** Named values covering every supported type and the edge cases of each. */
export function catalogue(): [string, unknown][] {
  const cases: [string, unknown][] = []
  const add = (name: string, value: unknown): void => void cases.push([name, value])

  // Numbers.
  for (const n of [
    0,
    -0,
    1,
    -1,
    127,
    128,
    -128,
    -129,
    255,
    256,
    32767,
    -32769,
    2 ** 31 - 1,
    -(2 ** 31),
    2 ** 31,
    2 ** 32,
    2 ** 53 - 1,
    -(2 ** 53),
    0.5,
    -1.25,
    0.1,
    Math.PI,
    Number.MIN_VALUE,
    -Number.MIN_VALUE,
    Number.MAX_VALUE,
    Number.EPSILON,
    NaN,
    Infinity,
    -Infinity,
  ])
    // prettier-ignore
    add(`number ${Object.is(n, -0) ? '-0' : String(n)}`, n)
  // BigInts, small and large, both signs.
  for (const n of [0n, 1n, -1n, 127n, -128n, 2n ** 53n + 1n]) add(`bigint ${n}`, n)
  add('bigint 2^63-1', 2n ** 63n - 1n)
  add('bigint -(2^63)', -(2n ** 63n))
  add('bigint 2^63', 2n ** 63n)
  add('bigint -(2^63)-1', -(2n ** 63n) - 1n)
  add('bigint 2^64', 2n ** 64n)
  add('bigint 2^200+12345', 2n ** 200n + 12345n)
  add('bigint -(2^1000)+1', -(2n ** 1000n) + 1n)
  add('true', true)
  add('false', false)
  add('null', null)
  add('undefined', undefined)
  // Strings.
  add('empty string', '')
  add('ASCII string', 'hello, world')
  add('63-byte string', 'x'.repeat(63))
  add('64-byte string', 'y'.repeat(64))
  add('Latin-1 string', 'café naïve façade')
  add('Unicode string', 'Grüße, Здравствуйте, 日本語, עברית, العربية')
  add('emoji string', '😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈')
  add('NUL and controls', '\u0000\u0001\t\n\r\u007f')
  add('lone surrogates', 'a\ud800b\udc00c')
  add('long ASCII string', 'abcdefghij'.repeat(20_000))
  add('long emoji string', '😀é日'.repeat(10_000))
  // Dates.
  add('Date epoch', new Date(0))
  add('Date now-ish', new Date(1_700_000_000_123))
  add('Date before 1970', new Date(-1))
  add('Date max', new Date(8.64e15))
  add('invalid Date', new Date(NaN))
  // RegExps.
  add('RegExp', /a+b/)
  add('RegExp with flags', /^x.*?y$/dgimsy)
  add('RegExp unicode', /\p{L}+😀/u)
  add('RegExp with slash and named group', new RegExp('(?<n>a)/b'))
  // Errors.
  for (const C of ERRORS) add(C.name, new C(`a ${C.name} message`))
  add('Error without message', new Error())
  add('Error with cause', new Error('outer', { cause: new TypeError('inner') }))
  add('Error with a primitive cause', new RangeError('r', { cause: 42 }))
  const renamed = new Error('renamed')
  renamed.name = 'CustomError'
  add('Error with another name', renamed)
  const noStack = new Error('no stack')
  noStack.stack = undefined
  add('Error without stack', noStack)
  // Plain objects.
  add('empty object', {})
  add('object', { a: 1, b: 'two', c: [3], d: { e: null, f: undefined } })
  add('object with integer-like keys', { 2: 'two', 1: 'one', b: 'b', a: 'a', '-1': 'minus', '01': 'zero one' }) // prettier-ignore
  add('object with odd keys', { '': 0, 'with space': 1, '😀': 2, 'a.b': 3, constructor: 4 })
  add('object with own __proto__ key', JSON.parse('{"__proto__": {"x": 1}, "y": 2}'))
  add('null-prototype object', Object.assign(Object.create(null) as object, { k: 'v' }))
  add('deeply nested object', JSON.parse(`${'{"a":'.repeat(200)}1${'}'.repeat(200)}`))
  // Arrays.
  add('empty array', [])
  add('array', [1, 'two', 3n, null, undefined, true])
  add('array with holes', [1, , 3, , , 6]) // eslint-disable-line no-sparse-arrays
  add('array of holes only', new Array(5))
  const sparse: unknown[] = []
  sparse[1_000_000] = 'far'
  sparse[3] = 'near'
  add('sparse array', sparse)
  const extra = [1, 2] as unknown[] & { extra?: string }
  extra.extra = 'property'
  add('array with an extra property', extra)
  // Maps and Sets.
  add('empty Map', new Map())
  add('Map', new Map<unknown, unknown>([['a', 1], [2, 'b'], [null, [1]], [{ k: 1 }, new Set([1])], [NaN, -0]])) // prettier-ignore
  add('empty Set', new Set())
  add('Set', new Set<unknown>([1, '1', 1n, null, undefined, { o: 1 }, [2], -0]))
  // Boxed primitives.
  add('Number object', new Number(-0))
  add('String object', new String('boxed 😀'))
  add('Boolean object', new Boolean(false))
  add('BigInt object', Object(12345678901234567890n) as object)
  // Binary.
  add('empty ArrayBuffer', new ArrayBuffer(0))
  add('ArrayBuffer', someBytes(37).buffer)
  const resizable = new (
    ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer
  )(5, { maxByteLength: 64 })
  new Uint8Array(resizable).set([1, 2, 3, 4, 5])
  add('resizable ArrayBuffer', resizable)
  add('DataView', new DataView(someBytes(40).buffer, 3, 21))
  add('empty DataView', new DataView(new ArrayBuffer(8), 8))
  for (const C of TYPED_ARRAYS) {
    add(`${C.name}`, typedArray(C, 13))
    add(`${C.name} at an offset`, typedArray(C, 5, 3))
    add(`empty ${C.name}`, new C(0))
  }
  add('Float64Array with NaN and -0', new Float64Array([NaN, -0, Infinity, -Infinity, 1e-310]))
  add('BigInt64Array extremes', new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n, -1n]))
  add('BigUint64Array extremes', new BigUint64Array([0n, 2n ** 64n - 1n, 2n ** 63n]))
  add('Buffer', Buffer.from('a Buffer 😀'))
  add('empty Buffer', Buffer.alloc(0))
  add('Buffer from the pool (non-zero offset)', Buffer.from('pooled'))
  add('large Uint8Array (written in place)', someBytes(200_000, 7))
  add('large Buffer', Buffer.from(someBytes(100_000, 9)))

  // References.
  const shared = { shared: true }
  add('shared references', { a: shared, b: shared, list: [shared, shared], map: new Map([[shared, shared]]) }) // prettier-ignore
  const sharedView = new Uint16Array([1, 2, 3])
  add('shared typed array', [sharedView, { again: sharedView }])
  const cyclic: Record<string, unknown> = { name: 'cyclic' }
  cyclic.self = cyclic
  cyclic.list = [cyclic, { parent: cyclic }]
  add('circular object', cyclic)
  const cyclicArray: unknown[] = [1]
  cyclicArray.push(cyclicArray, [cyclicArray])
  add('circular array', cyclicArray)
  const cyclicMap = new Map<unknown, unknown>()
  cyclicMap.set('me', cyclicMap).set(cyclicMap, 'as key')
  add('circular Map', cyclicMap)
  const cyclicSet = new Set<unknown>()
  cyclicSet.add(cyclicSet).add({ set: cyclicSet })
  add('circular Set', cyclicSet)
  const errorInCycle = new Error('in a cycle')
  const holder = { error: errorInCycle, self: null as unknown }
  holder.self = holder
  add('Error inside a cycle', holder)

  // Everything at once, in one value.
  add(
    'all of the above in one array',
    cases.map(([, v]) => v),
  )
  return cases
}

// ---------------------------------------------------------------------------------------------
// Random values

/** A small, fast, seeded PRNG (mulberry32). */
export class Random {
  #state: number
  constructor(seed: number) {
    this.#state = seed >>> 0
  }
  /** A float in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0)
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  /** An integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n)
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }
  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n)
    for (let i = 0; i < n; i++) b[i] = this.int(256)
    return b
  }
}

const STRINGS = ['', 'a', 'key', 'x y', '😀', 'é', '日本', '\ud800', '0', '01', '__proto__', 'constructor'] // prettier-ignore

/** Random nested values of every supported type, with shared references and cycles. */
export class ValueGenerator {
  readonly rnd: Random
  /** Objects made so far in the current value (for shared references). */
  pool: object[] = []
  /** Containers being filled (for cycles). */
  ancestors: object[] = []
  /** How many values of each kind were made. */
  readonly made = new Map<string, number>()

  constructor(seed: number) {
    this.rnd = new Random(seed)
  }

  /** A fresh top-level value. */
  value(depth = 4): unknown {
    this.pool = []
    this.ancestors = []
    return this.#value(depth)
  }

  #count(kind: string): void {
    this.made.set(kind, (this.made.get(kind) ?? 0) + 1)
  }

  #string(): string {
    const r = this.rnd
    switch (r.int(5)) {
      case 0:
        return r.pick(STRINGS)
      case 1:
        return 'ascii-'.repeat(r.int(20))
      case 2:
        return String.fromCodePoint(...Array.from({ length: r.int(12) }, () => r.int(0x11000)))
      case 3:
        return '😀é'.repeat(r.int(40))
      default:
        return String(r.int(1e6))
    }
  }

  #number(): number {
    const r = this.rnd
    return r.pick([
      () => r.int(128),
      () => r.int(2 ** 16) - 2 ** 15,
      () => r.int(2 ** 32) - 2 ** 31,
      () => (r.next() - 0.5) * 10 ** r.int(300),
      () => r.pick([NaN, -0, Infinity, -Infinity, Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53]),
    ])()
  }

  #bigint(): bigint {
    const r = this.rnd
    const n = BigInt(r.int(2 ** 30)) << BigInt(r.int(130))
    return r.next() < 0.5 ? -n : n
  }

  #primitive(): unknown {
    const r = this.rnd
    switch (r.int(8)) {
      case 0:
        return this.#number()
      case 1:
        return this.#bigint()
      case 2:
        return r.next() < 0.5
      case 3:
        return null
      case 4:
        return undefined
      default:
        return this.#string()
    }
  }

  #byteLength(): number {
    const r = this.rnd
    const x = r.next()
    return x < 0.1 ? 0 : x < 0.98 ? r.int(300) : 2048 + r.int(70_000)
  }

  #fill<T extends object>(container: T, add: () => void, n: number): T {
    this.pool.push(container)
    this.ancestors.push(container)
    for (let i = 0; i < n; i++) add()
    this.ancestors.pop()
    return container
  }

  #value(depth: number): unknown {
    const r = this.rnd
    if (depth <= 0 || r.next() < 0.35) {
      this.#count('primitive')
      return this.#primitive()
    }
    if (this.pool.length > 0 && r.next() < 0.05) {
      this.#count('shared reference')
      return r.pick(this.pool)
    }
    if (this.ancestors.length > 0 && r.next() < 0.03) {
      this.#count('cycle')
      return r.pick(this.ancestors)
    }
    depth--
    switch (r.int(14)) {
      case 0:
      case 1: {
        this.#count('object')
        const o: Record<string, unknown> =
          r.next() < 0.05 ? (Object.create(null) as Record<string, unknown>) : {}
        // defineProperty: a key `__proto__` is an own property, as JSON.parse makes it.
        const set = (key: string, value: unknown): void =>
          void Object.defineProperty(o, key, { value, writable: true, enumerable: true, configurable: true }) // prettier-ignore
        return this.#fill(o, () => set(this.#string(), this.#value(depth)), r.int(6))
      }
      case 2:
      case 3: {
        const a: unknown[] = []
        this.#fill(a, () => a.push(this.#value(depth)), r.int(7))
        if (r.next() < 0.2) {
          this.#count('array with holes')
          for (let i = r.int(3); i > 0; i--) delete a[r.int(a.length + 1)]
          a.length += r.int(3)
        } else if (r.next() < 0.1) {
          this.#count('sparse array')
          a[500 + r.int(1e6)] = this.#primitive()
        } else this.#count('array')
        return a
      }
      case 4: {
        this.#count('Map')
        const m = new Map<unknown, unknown>()
        return this.#fill(m, () => m.set(this.#value(depth), this.#value(depth)), r.int(4))
      }
      case 5: {
        this.#count('Set')
        const s = new Set<unknown>()
        return this.#fill(s, () => s.add(this.#value(depth)), r.int(4))
      }
      case 6: {
        this.#count('Date')
        return this.#remember(
          new Date(r.next() < 0.1 ? NaN : r.int(2 ** 31) * 1000 - 2 ** 40 + r.int(1000)),
        )
      }
      case 7: {
        this.#count('RegExp')
        const flags = [...'dgimsuy'].filter(() => r.next() < 0.3).join('')
        return this.#remember(new RegExp(r.pick(['a+b', '^x$', '[a-z]*', '\\d{2,}', '(?<n>q)', '/', '']), flags)) // prettier-ignore
      }
      case 8: {
        const C = r.pick(ERRORS)
        this.#count(C.name)
        // The cause is made before the error: v8 cannot decode an error inside its own cause.
        const options = r.next() < 0.3 ? { cause: this.#value(depth) } : undefined
        return this.#remember(new C(r.next() < 0.2 ? undefined : this.#string(), options))
      }
      case 9: {
        this.#count('boxed primitive')
        return this.#remember(
          r.pick([
            () => new Number(this.#number()),
            () => new String(this.#string()),
            () => new Boolean(r.next() < 0.5),
            () => Object(this.#bigint()) as object,
          ])(),
        )
      }
      case 10: {
        this.#count('ArrayBuffer')
        return this.#remember(r.bytes(this.#byteLength()).buffer)
      }
      case 11: {
        const C = r.pick([Buffer, DataView])
        this.#count(C.name)
        const n = this.#byteLength()
        const offset = r.int(16)
        const backing = r.bytes(offset + n + r.int(16))
        return this.#remember(
          C === Buffer
            ? Buffer.from(backing.buffer, offset, n)
            : new DataView(backing.buffer, offset, n),
        )
      }
      default: {
        const C = r.pick(TYPED_ARRAYS)
        this.#count(C.name)
        const size = C.BYTES_PER_ELEMENT
        const n = Math.floor(this.#byteLength() / size)
        const offset = r.int(4)
        const backing = r.bytes((offset + n + r.int(3)) * size)
        return this.#remember(new C(backing.buffer as ArrayBuffer, offset * size, n))
      }
    }
  }

  #remember<T extends object>(o: T): T {
    this.pool.push(o)
    return o
  }
}

// ---------------------------------------------------------------------------------------------
// Comparison

function describeType(v: unknown): string {
  if (v === null) return 'null'
  if (typeof v !== 'object') return typeof v
  const proto = Object.getPrototypeOf(v) as { constructor?: { name?: string } } | null
  return proto === null ? 'null-prototype object' : (proto.constructor?.name ?? 'object')
}

/** A primitive as it would be written in code (-0 and bigints included). */
function show(v: unknown): string {
  if (Object.is(v, -0)) return '-0'
  if (typeof v === 'bigint') return `${v}n`
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 40)}…` : v)
  return String(v)
}

function bytesOf(v: ArrayBufferView | ArrayBuffer): Uint8Array {
  return ArrayBuffer.isView(v)
    ? new Uint8Array(v.buffer, v.byteOffset, v.byteLength)
    : new Uint8Array(v)
}

/**
 * The first difference between `actual` and `expected` (null if none), as `path: what`.
 *
 * Stricter than `util.isDeepStrictEqual` in what matters here: the same prototype at every node
 * (a Buffer must come back a Buffer), `Object.is` for numbers, the same own keys in the same order
 * (holes stay holes), the error's name, message, stack and cause, and the same reference shape:
 * an object met twice in `expected` is one and the same object in `actual`, and distinct ones
 * stay distinct.
 */
export function difference(actual: unknown, expected: unknown): string | null {
  const seen = new Map<object, object>() // expected object → actual object
  const seenActual = new Set<object>()

  function diff(a: unknown, e: unknown, path: string): string | null {
    if (typeof a !== typeof e || (a === null) !== (e === null))
      return `${path}: got ${describeType(a)}, expected ${describeType(e)}`
    if (typeof e !== 'object' || e === null) {
      return Object.is(a, e) ? null : `${path}: got ${show(a)}, expected ${show(e)}`
    }
    const ao = a as object
    const known = seen.get(e)
    if (known !== undefined)
      return known === ao ? null : `${path}: should be the same object as met before`
    if (seenActual.has(ao)) return `${path}: two different objects came back as one`
    seen.set(e, ao)
    seenActual.add(ao)
    if (Object.getPrototypeOf(ao) !== Object.getPrototypeOf(e))
      return `${path}: got ${describeType(a)}, expected ${describeType(e)}`

    if (types.isArrayBuffer(e) || ArrayBuffer.isView(e)) {
      const av = ao as ArrayBuffer | ArrayBufferView
      if (ArrayBuffer.isView(e) && 'length' in e) {
        const al = (av as unknown as { length: number }).length
        if (al !== (e as unknown as { length: number }).length)
          return `${path}: length ${al}, expected ${(e as unknown as { length: number }).length}`
      }
      const ab = bytesOf(av)
      const eb = bytesOf(e)
      if (ab.byteLength !== eb.byteLength)
        return `${path}: byteLength ${ab.byteLength}, expected ${eb.byteLength}`
      for (let i = 0; i < eb.length; i++)
        if (ab[i] !== eb[i]) return `${path}: byte ${i} is ${ab[i]}, expected ${eb[i]}`
      if (types.isArrayBuffer(e)) {
        // A receiver caps a resizable buffer's maxByteLength at its length (the codec's
        // `maxResizableBytes` option, 0 by default).
        const r = (x: object): unknown => (x as { resizable?: boolean }).resizable
        const m = (x: object): unknown => (x as { maxByteLength?: number }).maxByteLength
        if (r(ao) !== r(e)) return `${path}: resizable differs`
        if (m(ao) !== ab.byteLength)
          return `${path}: maxByteLength ${m(ao) as number}, expected ${ab.byteLength}`
      }
      return null
    }
    if (types.isDate(e))
      return Object.is((ao as Date).getTime(), e.getTime())
        ? null
        : `${path}: Date ${(ao as Date).getTime()}, expected ${e.getTime()}`
    if (types.isRegExp(e)) {
      const ar = ao as RegExp
      return ar.source === e.source && ar.flags === e.flags
        ? null
        : `${path}: ${String(ar)}, expected ${String(e)}`
    }
    if (types.isBoxedPrimitive(e)) {
      const av = (ao as { valueOf(): unknown }).valueOf()
      const ev = (e as { valueOf(): unknown }).valueOf()
      return Object.is(av, ev) ? null : `${path}: boxed ${String(av)}, expected ${String(ev)}`
    }
    if (types.isNativeError(e) || e instanceof Error) {
      const ae = ao as Error
      const ee = e as Error
      for (const k of ['name', 'message', 'stack'] as const) {
        if (ae[k] !== ee[k]) return `${path}.${k}: ${String(ae[k])}, expected ${String(ee[k])}`
        if (Object.hasOwn(ae, k) !== Object.hasOwn(ee, k)) return `${path}.${k}: own-ness differs`
      }
      if (Object.hasOwn(ee, 'cause') !== Object.hasOwn(ae, 'cause'))
        return `${path}.cause: presence differs`
      if (Object.hasOwn(ee, 'cause')) {
        const d = diff(ae.cause, ee.cause, `${path}.cause`)
        if (d !== null) return d
      }
    }
    if (types.isMap(e)) {
      const am = ao as Map<unknown, unknown>
      if (am.size !== e.size) return `${path}: Map size ${am.size}, expected ${e.size}`
      const ae = [...am]
      let i = 0
      for (const [k, v] of e) {
        const [ak, av] = ae[i]!
        const d = diff(ak, k, `${path}.<key #${i}>`) ?? diff(av, v, `${path}.<value #${i}>`)
        if (d !== null) return d
        i++
      }
    }
    if (types.isSet(e)) {
      const as = ao as Set<unknown>
      if (as.size !== e.size) return `${path}: Set size ${as.size}, expected ${e.size}`
      const ae = [...as]
      let i = 0
      for (const v of e) {
        const d = diff(ae[i], v, `${path}.<element #${i}>`)
        if (d !== null) return d
        i++
      }
    }
    if (Array.isArray(e) && (ao as unknown[]).length !== e.length)
      return `${path}: array length ${(ao as unknown[]).length}, expected ${e.length}`
    // Own enumerable string keys, in order (holes are missing keys), for every kind of object.
    const ak = Object.keys(ao)
    const ek = Object.keys(e)
    if (ak.length !== ek.length || ak.some((k, i) => k !== ek[i]))
      return `${path}: keys [${ak.slice(0, 10).join()}…], expected [${ek.slice(0, 10).join()}…]`
    for (const k of ek) {
      const d = diff(
        (ao as Record<string, unknown>)[k],
        (e as Record<string, unknown>)[k],
        `${path}[${JSON.stringify(k)}]`,
      )
      if (d !== null) return d
    }
    return null
  }

  return diff(actual, expected, 'value')
}

// ---------------------------------------------------------------------------------------------
// MPSC

/** The value a producer of the MPSC test sends as its `seq`-th message. */
export function mpscValue(producer: number, seq: number): unknown {
  return {
    producer,
    seq,
    payload: {
      text: `p${producer}-s${seq}-${'😀'.repeat(seq % 7)}`,
      bytes: new Uint8Array(seq % 97).fill((producer * 31 + seq) & 0xff),
    },
  }
}

/** The `k`-th value of binary views sent for the zero-copy tests. */
export function viewsValue(k: number): {
  k: number
  u8: Uint8Array
  f64: Float64Array
  buf: Buffer
  nested: [BigInt64Array]
} {
  const u8 = new Uint8Array(2048 + k)
  fillPattern(u8, k)
  return {
    k,
    u8,
    f64: new Float64Array([k, k + 0.5, -k]),
    buf: Buffer.from(`message ${k}`),
    nested: [new BigInt64Array([BigInt(k), -1n])],
  }
}

// ---------------------------------------------------------------------------------------------
// Byte pattern for large buffers

/** The 32-bit word at word index `i` of the pattern: distinct for every position and seed. */
function word(i: number, seed: number): number {
  return (Math.imul(i, 0x9e3779b1) ^ Math.imul(i >>> 16, 0x85ebca6b) ^ seed) >>> 0
}

/** The pattern's byte at `index`. */
export function patternByte(index: number, seed: number): number {
  return (word(Math.floor(index / 4), seed) >>> ((index % 4) * 8)) & 0xff
}

function words(bytes: Uint8Array): Uint32Array | null {
  return bytes.byteOffset % 4 === 0
    ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2)
    : null
}

/** Fills `bytes` with the pattern (little-endian words, as on every platform tested). */
export function fillPattern(bytes: Uint8Array, seed: number): void {
  const w = words(bytes)
  let start = 0
  if (w !== null) {
    for (let i = 0; i < w.length; i++) w[i] = word(i, seed)
    start = w.length * 4
  }
  for (let i = start; i < bytes.length; i++) bytes[i] = patternByte(i, seed)
}

/** The first index where `bytes` differs from the pattern, or -1. */
export function checkPattern(bytes: Uint8Array, seed: number): number {
  const w = words(bytes)
  let start = 0
  if (w !== null) {
    for (let i = 0; i < w.length; i++) {
      if (w[i] !== word(i, seed)) {
        for (let j = i * 4; ; j++) if (bytes[j] !== patternByte(j, seed)) return j
      }
    }
    start = w.length * 4
  }
  for (let i = start; i < bytes.length; i++) if (bytes[i] !== patternByte(i, seed)) return i
  return -1
}
