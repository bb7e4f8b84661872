/**
 * A seeded generator of random nested values of every type the codec supports, with shared
 * references and cycles, for the codec tests that compare with v8 and mutate encodings.
 */

import { types } from 'node:util'

import { prng } from './codec.js'
import { TYPED_ARRAYS } from './values.js'

/** Builds random nested values of every supported type, with shared references and cycles. */
export class Generator {
  readonly random: () => number
  /** Objects made so far: candidates for shared references. */
  pool: object[] = []
  /** Containers being filled: candidates for cycles. */
  ancestors: object[] = []
  /** How many of each kind of thing were made (to check the generator covers everything). */
  readonly made = new Map<string, number>()

  count(kind: string): void {
    this.made.set(kind, (this.made.get(kind) ?? 0) + 1)
  }

  constructor(seed: number) {
    this.random = prng(seed)
  }

  int(n: number): number {
    return Math.floor(this.random() * n)
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!
  }

  value(depth: number): unknown {
    const r = this.int(100)
    if (depth <= 0 || r < 40) return this.primitive()
    if (r < 46 && this.pool.length > 0) {
      this.count('shared reference')
      return this.pick(this.pool)
    }
    if (r < 50 && this.ancestors.length > 0) {
      this.count('cycle')
      return this.pick(this.ancestors)
    }
    const value = this.object(depth - 1)
    this.count(kindOf(value))
    return value
  }

  primitive(): unknown {
    switch (this.int(10)) {
      case 0:
      case 1:
      case 2:
        return this.number()
      case 3:
      case 4:
        return this.string()
      case 5:
        return this.bigint()
      default:
        return this.pick([null, undefined, true, false])
    }
  }

  number(): number {
    switch (this.int(6)) {
      case 0:
        return this.int(300) - 150
      case 1:
        return this.int(2 ** 32) - 2 ** 31
      case 2:
        return (this.random() - 0.5) * 10 ** this.int(40)
      case 3:
        return this.pick([
          0,
          -0,
          NaN,
          Infinity,
          -Infinity,
          Number.MAX_VALUE,
          Number.MIN_VALUE,
          2 ** 53,
          -(2 ** 31),
          2 ** 31,
        ])
      default:
        return this.int(200000) * (this.random() < 0.5 ? 1 : -1)
    }
  }

  bigint(): bigint {
    const sign = this.random() < 0.5 ? -1n : 1n
    switch (this.int(3)) {
      case 0:
        return BigInt(this.int(1000)) * sign
      case 1:
        return this.pick([2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, 2n ** 64n - 1n, 2n ** 64n])
      default: {
        let n = 0n
        const words = 1 + this.int(6)
        for (let i = 0; i < words; i++) n = (n << 32n) | BigInt(this.int(2 ** 32))
        return n * sign
      }
    }
  }

  char(kind: number): string {
    switch (kind) {
      case 0:
        return String.fromCharCode(32 + this.int(95))
      case 1:
        return String.fromCharCode(this.int(256))
      case 2:
        return String.fromCharCode(0x100 + this.int(0xd700))
      case 3:
        return String.fromCodePoint(0x10000 + this.int(0x100000))
      default:
        return String.fromCharCode(0xd800 + this.int(0x800)) // a lone surrogate (or a pair, by chance)
    }
  }

  string(): string {
    const r = this.int(100)
    const length =
      r < 70
        ? this.int(12)
        : r < 95
          ? this.int(200)
          : r < 99
            ? this.int(5000)
            : 16384 + this.int(5000)
    const mix = this.int(4) === 0 // one kind of character, or a mix
    const kind = this.pick([0, 0, 0, 1, 2, 3, 4])
    let s = ''
    for (let i = 0; i < length; i++) s += this.char(mix ? this.pick([0, 0, 1, 2, 3, 4]) : kind)
    return s.length > length && length > 0 ? s.slice(0, length) : s
  }

  key(): string {
    return this.pick([
      'a',
      'b',
      'key',
      'value',
      'x y',
      '0',
      '1',
      '42',
      '-1',
      '01',
      '',
      '__proto__',
      'ключ',
      'k😀',
      'constructor',
      'length',
      this.string(),
    ])
  }

  bytes(n: number): Uint8Array {
    const b = new Uint8Array(n)
    for (let i = 0; i < n; i++) b[i] = this.int(256)
    return b
  }

  byteLength(): number {
    const r = this.int(100)
    return r < 80 ? this.int(40) : r < 97 ? this.int(1000) : 2048 + this.int(6000)
  }

  /** Registers a container while its children are made (so they may refer back to it). */
  fill<T extends object>(container: T, add: () => void, count: number): T {
    this.pool.push(container)
    this.ancestors.push(container)
    for (let i = 0; i < count; i++) add()
    this.ancestors.pop()
    return container
  }

  object(depth: number): unknown {
    switch (this.int(16)) {
      case 0:
      case 1: {
        const o: Record<string, unknown> = this.random() < 0.1 ? Object.create(null) : {}
        return this.fill(
          o,
          () =>
            Object.defineProperty(o, this.key(), {
              value: this.value(depth),
              enumerable: true,
              writable: true,
              configurable: true,
            }),
          this.int(7),
        )
      }
      case 2:
      case 3: {
        const a: unknown[] = []
        this.fill(a, () => a.push(this.value(depth)), this.int(8))
        if (this.random() < 0.2)
          for (let i = this.int(3); i > 0; i--) delete a[this.int(a.length + 1)]
        if (this.random() < 0.1) a.length += this.int(3)
        if (this.random() < 0.1)
          (a as unknown as Record<string, unknown>)[this.pick(['extra', 'x y', '01'])] =
            this.primitive()
        if (this.random() < 0.05) a[1000 + this.int(1e6)] = this.primitive()
        return a
      }
      case 4: {
        const m = new Map<unknown, unknown>()
        return this.fill(m, () => m.set(this.value(depth), this.value(depth)), this.int(5))
      }
      case 5: {
        const s = new Set<unknown>()
        return this.fill(s, () => s.add(this.value(depth)), this.int(5))
      }
      case 6:
        return this.remember(
          this.random() < 0.1 ? new Date(NaN) : new Date(this.int(2 ** 31) * 1000 - 2 ** 40),
        )
      case 7: {
        const flags = [...'dgimsuy'].filter(() => this.random() < 0.3).join('')
        return this.remember(
          new RegExp(
            this.pick(['a+b', '^x$', '[a-z]*', '\\d{2,}', '(?<n>q)', '\ud800', '/', '']),
            flags,
          ),
        )
      }
      case 8: {
        const C = this.pick([
          Error,
          EvalError,
          RangeError,
          ReferenceError,
          SyntaxError,
          TypeError,
          URIError,
        ])
        // The cause is made before the error exists: v8 cannot decode an error referred to
        // from inside its own cause (tested on its own above).
        const options = this.random() < 0.4 ? { cause: this.value(depth) } : undefined
        const e = this.random() < 0.2 ? new C(undefined, options) : new C(this.string(), options)
        if (this.random() < 0.1) e.name = this.pick(['Custom', 'TypeError'])
        if (this.random() < 0.1) e.stack = undefined
        return this.remember(e)
      }
      case 9:
        return this.remember(
          this.pick([
            () => new Number(this.number()),
            () => new String(this.string()),
            () => new Boolean(this.random() < 0.5),
            () => Object(this.bigint()) as object,
          ])(),
        )
      case 10: {
        const ab =
          this.random() < 0.2
            ? (new (ArrayBuffer as any)(0, { maxByteLength: 256 }) as ArrayBuffer & {
                resize(n: number): void
              })
            : null
        if (ab) {
          ab.resize(this.int(200))
          new Uint8Array(ab).set(this.bytes(ab.byteLength))
          return this.remember(ab)
        }
        return this.remember(this.bytes(this.byteLength()).buffer)
      }
      case 11: {
        const C = this.pick([Buffer, Buffer, DataView])
        const n = this.byteLength()
        const offset = this.int(16)
        const backing = this.bytes(offset + n + this.int(16))
        return this.remember(
          C === Buffer
            ? this.random() < 0.5
              ? Buffer.from(backing.buffer, offset, n)
              : Buffer.from(backing.subarray(offset, offset + n))
            : new DataView(backing.buffer, offset, n),
        )
      }
      default: {
        const C = this.pick(TYPED_ARRAYS)
        const size = C.BYTES_PER_ELEMENT
        const n = Math.floor(this.byteLength() / size)
        const offset = this.int(4) * size
        const backing = this.bytes(offset + n * size + this.int(3) * size)
        return this.remember(new C(backing.buffer as ArrayBuffer, offset, n))
      }
    }
  }

  remember<T extends object>(o: T): T {
    this.pool.push(o)
    return o
  }
}

/** The kind of a generated value, for the generator's coverage counts. */
export function kindOf(v: unknown): string {
  if (Buffer.isBuffer(v)) return 'Buffer'
  if (types.isArrayBuffer(v))
    return (v as { resizable?: boolean }).resizable ? 'resizable ArrayBuffer' : 'ArrayBuffer'
  if (Array.isArray(v))
    return v.length > 1000
      ? 'sparse array'
      : Object.keys(v).length !== v.length
        ? 'array with holes or extras'
        : 'array'
  const proto = Object.getPrototypeOf(v) as { constructor: { name: string } } | null
  return proto === null ? 'null-prototype object' : proto.constructor.name
}
