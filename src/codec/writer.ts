/**
 * The encoder's walk: the {@link Writer} visits a value, validates it and writes its encoding
 * into a reusable scratch buffer, leaving large binary payloads and long strings as
 * {@link Chunk}s that `writeTo` copies straight from their source.
 *
 * @module
 */

import { types } from 'node:util'

import { ERR_SHMPIPE_TOO_LARGE, ERR_SHMPIPE_UNSUPPORTED_TYPE } from '../errors.js'
import { Class, protoClass, verifyClass, viewBytes, viewKind } from './classify.js'
import {
  ALIGN,
  FORMAT_VERSION,
  ERROR_NAMES,
  ErrorFlag,
  FIXSTR_MAX,
  MAX_DEPTH,
  Tag,
  VIEW_NAMES,
  varintSize,
} from './format.js'
import { Segment, Unsupported, withSegment } from './failures.js'
import {
  ArrayProto,
  ObjectProto,
  abByteLength,
  bigintValueOf,
  booleanValueOf,
  dateGetTime,
  getPrototypeOf,
  hasOwn,
  latin1Write,
  mapEntries,
  mapSize,
  numberValueOf,
  objectKeys,
  setSize,
  setValues,
  stringValueOf,
  ucs2Write,
  utf8Write,
  type ResizableArrayBuffer,
} from './intrinsics.js'

/** Binary payloads at least this large are copied by `writeTo` from the source, not by `encode`. */
const DEFER_BYTES = 2048
/** Strings at least this long (in UTF-16 units) are written by `writeTo`, not by `encode`. */
const DEFER_CHARS = 16384

/** Hex digits of a bigint are turned into bytes this many at a time (an even number). */
const HEX_CHUNK_CHARS = 16384
/** Where {@link HEX_CHUNK_CHARS} hex digits are copied as Latin-1 bytes. */
const hexChunk = new Uint8Array(HEX_CHUNK_CHARS)
/** The value of each lowercase hex digit, by its character code. */
const HEX_VALUE = Uint8Array.from({ length: 128 }, (_, c) =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x61 + 10 : 0,
)

const INITIAL_SCRATCH = 16384
/** A scratch buffer that grew past this is dropped before the next encode. */
const MAX_KEPT_SCRATCH = 1 << 20
/** Up to this many object-like values are found by a linear search; then a Map is used. */
const LINEAR_SEEN = 16
/** Cached `Uint8Array` views of the scratch's first n bytes, for n up to this. */
const VIEW_CACHE = 1024

/** The result of an encoding whose bytes may be in a writer's scratch. */
export interface ScratchOwner {
  /** Set once written; such a result loses its bytes to the next encoding (it encodes again). */
  readonly written: boolean
  /** Bytes of the encoding in `buf` (without its deferred chunks). */
  readonly structLen: number
  /** The bytes (in the writer's scratch or a copy); null once lost. */
  buf: Buffer | null
}

/** A binary payload or a long string that `writeTo` copies straight from its source. */
export interface Chunk {
  /** Offset in the scratch bytes at which the chunk goes. */
  readonly at: number
  /** Bytes it takes in the encoding. */
  readonly byteLength: number
  /** The bytes, for a binary payload. */
  readonly bytes: Uint8Array | null
  /** The string, for a long string. */
  readonly string: string | null
  /** How the string is written: Tag.STR_ASCII, Tag.STR_UTF8 or Tag.STR_UTF16. */
  readonly stringTag: number
}

/** Walks values, writes their encoding into a reusable scratch buffer. */
export class Writer {
  buf: Buffer = Buffer.allocUnsafeSlow(INITIAL_SCRATCH)
  dv: DataView = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength)
  pos = 0
  /** Bytes of the chunks deferred so far: final offset = pos + extra. */
  extra = 0
  chunks: Chunk[] | null = null
  /** Object-like values met so far, by id: `seen[0 … nseen)`. */
  seen: (object | undefined)[] = new Array<object | undefined>(LINEAR_SEEN).fill(undefined)
  nseen = 0
  /** The same, for lookups once there are more than LINEAR_SEEN. */
  seenMap: Map<object, number> | null = null
  depth = 0
  busy = false
  /** The Encoded whose bytes are in `buf`, if any. */
  owner: ScratchOwner | null = null
  /** `views[n]` is a Uint8Array of `buf`'s first n bytes. */
  views: (Uint8Array | undefined)[] = []

  /**
   * Writes the format version and `value` into the scratch: `pos` is then the length of the
   * encoding without its deferred chunks, `extra` theirs. Throws `Unsupported` for a value the
   * codec does not take. Call {@link release} before and {@link reset} after, also on a throw.
   */
  write(value: unknown): void {
    this.buf[0] = FORMAT_VERSION
    this.pos = 1
    this.value(value)
  }

  /** Makes the scratch free for a new encoding. */
  release(): void {
    const prev = this.owner
    if (prev !== null) {
      this.owner = null
      if (prev.written) {
        // Written at least once: if it is written again, it encodes again.
        prev.buf = null
      } else {
        // Not written yet: give it its own copy of its bytes.
        const copy = Buffer.allocUnsafe(prev.structLen)
        copy.set(this.view(prev.structLen))
        prev.buf = copy
      }
    }
    if (this.buf.length > MAX_KEPT_SCRATCH) this.setScratch(Buffer.allocUnsafeSlow(INITIAL_SCRATCH))
  }

  /** Forgets the values met and the chunks deferred by the last encoding. */
  reset(): void {
    this.extra = 0
    this.chunks = null
    this.depth = 0
    const seen = this.seen
    const n = this.nseen
    if (n > LINEAR_SEEN) {
      this.seen = new Array<object | undefined>(LINEAR_SEEN).fill(undefined)
    } else {
      for (let i = 0; i < n; i++) seen[i] = undefined
    }
    // (The map exists once lookups reached LINEAR_SEEN values, even if no more were added.)
    this.seenMap = null
    this.nseen = 0
  }

  private setScratch(buf: Buffer): void {
    this.buf = buf
    this.dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    this.views = []
  }

  /** A Uint8Array of the scratch's first n bytes (cached for small n). */
  view(n: number): Uint8Array {
    if (n > VIEW_CACHE) return new Uint8Array(this.buf.buffer, this.buf.byteOffset, n)
    let v = this.views[n]
    if (v === undefined) {
      v = new Uint8Array(this.buf.buffer, this.buf.byteOffset, n)
      this.views[n] = v
    }
    return v
  }

  private ensure(n: number): void {
    if (this.pos + n > this.buf.length) this.grow(this.pos + n)
  }

  private grow(min: number): void {
    let size = this.buf.length * 2
    while (size < min) size *= 2
    let next: Buffer
    try {
      next = Buffer.allocUnsafeSlow(size)
    } catch {
      throw new Unsupported(
        null,
        `the encoding needs more than ${size} bytes of memory`,
        ERR_SHMPIPE_TOO_LARGE,
      )
    }
    next.set(this.view(this.pos))
    this.setScratch(next)
  }

  private varint(n: number): void {
    const b = this.buf
    let p = this.pos
    if (n < 0x80) {
      b[p++] = n
    } else if (n < 0x4000) {
      b[p++] = (n & 0x7f) | 0x80
      b[p++] = n >>> 7
    } else {
      while (n >= 0x80) {
        b[p++] = (n % 128) | 0x80
        n = Math.floor(n / 128)
      }
      b[p++] = n
    }
    this.pos = p
  }

  /** Writes `n` as a varint of exactly `size` bytes at `at` (n must fit). */
  private paddedVarint(at: number, n: number, size: number): void {
    const b = this.buf
    for (let i = 1; i < size; i++) {
      b[at++] = (n % 128) | 0x80
      n = Math.floor(n / 128)
    }
    b[at] = n
  }

  /** Pads with zeros so that the next byte's final offset is a multiple of ALIGN. */
  private align(): void {
    const pad = (ALIGN - ((this.pos + this.extra) % ALIGN)) % ALIGN
    const b = this.buf
    for (let i = 0; i < pad; i++) b[this.pos++] = 0
  }

  /** Looks `obj` up among the values met so far; registers it if new. Returns its id or -1. */
  private lookup(obj: object): number {
    const seen = this.seen
    const n = this.nseen
    if (n < LINEAR_SEEN) {
      for (let i = 0; i < n; i++) if (seen[i] === obj) return i
      seen[n] = obj
      this.nseen = n + 1
      return -1
    }
    let map = this.seenMap
    if (map === null) {
      map = new Map<object, number>()
      for (let i = 0; i < n; i++) map.set(seen[i]!, i)
      this.seenMap = map
    }
    const id = map.get(obj)
    if (id !== undefined) return id
    map.set(obj, n)
    seen[n] = obj
    this.nseen = n + 1
    return -1
  }

  value(v: unknown): void {
    switch (typeof v) {
      case 'number':
        this.number(v)
        return
      case 'string':
        this.string(v)
        return
      case 'boolean':
        this.ensure(1)
        this.buf[this.pos++] = v ? Tag.TRUE : Tag.FALSE
        return
      case 'undefined':
        this.ensure(1)
        this.buf[this.pos++] = Tag.UNDEFINED
        return
      case 'object':
        if (v === null) {
          this.ensure(1)
          this.buf[this.pos++] = Tag.NULL
        } else {
          this.object(v)
        }
        return
      case 'bigint':
        this.bigint(v)
        return
      default:
        throw new Unsupported(v, null, ERR_SHMPIPE_UNSUPPORTED_TYPE)
    }
  }

  private number(v: number): void {
    this.ensure(9)
    const b = this.buf
    const i = v | 0
    if (i === v && (i !== 0 || 1 / v > 0)) {
      if (i >= 0 && i < 0x80) {
        b[this.pos++] = Tag.FIXINT | i
      } else if (i >= -0x80 && i < 0x80) {
        b[this.pos++] = Tag.INT8
        b[this.pos++] = i & 0xff
      } else if (i >= -0x8000 && i < 0x8000) {
        b[this.pos++] = Tag.INT16
        this.dv.setInt16(this.pos, i, true)
        this.pos += 2
      } else {
        b[this.pos++] = Tag.INT32
        this.dv.setInt32(this.pos, i, true)
        this.pos += 4
      }
    } else {
      b[this.pos++] = Tag.FLOAT64
      this.dv.setFloat64(this.pos, v, true)
      this.pos += 8
    }
  }

  string(s: string): void {
    const n = s.length
    if (n <= 32) {
      // Short: try ASCII with a plain loop (cheaper than a native call for a few bytes).
      this.ensure(1 + n)
      const b = this.buf
      const p = this.pos + 1
      let i = 0
      for (; i < n; i++) {
        const c = s.charCodeAt(i)
        if (c >= 0x80) break
        b[p + i] = c
      }
      if (i === n) {
        b[this.pos] = Tag.FIXSTR | n
        this.pos = p + n
        return
      }
    }
    this.longString(s)
  }

  private longString(s: string): void {
    const n = s.length
    const wellFormed = (s as unknown as { isWellFormed(): boolean }).isWellFormed()
    if (n >= DEFER_CHARS) {
      let tag: number
      let byteLength: number
      if (!wellFormed) {
        tag = Tag.STR_UTF16
        byteLength = n * 2
      } else {
        byteLength = Buffer.byteLength(s, 'utf8')
        tag = byteLength === n ? Tag.STR_ASCII : Tag.STR_UTF8
      }
      this.ensure(10)
      this.buf[this.pos++] = tag
      this.varint(byteLength)
      this.defer({ at: this.pos, byteLength, bytes: null, string: s, stringTag: tag })
      return
    }
    if (!wellFormed) {
      // Lone surrogates: UTF-8 cannot carry them, UTF-16 can (as v8 keeps them).
      this.ensure(10 + n * 2)
      this.buf[this.pos++] = Tag.STR_UTF16
      this.varint(n * 2)
      ucs2Write.call(this.buf, s, this.pos, n * 2)
      this.pos += n * 2
      return
    }
    const max = n * 3
    const lenSize = varintSize(max)
    this.ensure(1 + lenSize + max)
    const tagAt = this.pos
    const start = tagAt + 1 + lenSize
    const written = utf8Write.call(this.buf, s, start, max)
    if (written === n && n <= FIXSTR_MAX) {
      // ASCII after all (only possible for n > 32 here): use the short form.
      this.buf.copyWithin(tagAt + 1, start, start + n)
      this.buf[tagAt] = Tag.FIXSTR | n
      this.pos = tagAt + 1 + n
      return
    }
    this.buf[tagAt] = written === n ? Tag.STR_ASCII : Tag.STR_UTF8
    this.paddedVarint(tagAt + 1, written, lenSize)
    this.pos = start + written
  }

  private defer(chunk: Chunk): void {
    if (this.chunks === null) this.chunks = []
    this.chunks.push(chunk)
    this.extra += chunk.byteLength
  }

  private bigint(v: bigint): void {
    this.ensure(9)
    if (BigInt.asIntN(64, v) === v) {
      this.buf[this.pos++] = Tag.BIGINT64
      this.dv.setBigInt64(this.pos, v, true)
      this.pos += 8
      return
    }
    const negative = v < 0n
    // One flat string of hex digits (made in linear time for a power-of-two radix), turned into
    // bytes, least significant first, a chunk of characters at a time.
    const hex = (negative ? -v : v).toString(16)
    const n = (hex.length + 1) >> 1
    this.ensure(10 + n)
    this.buf[this.pos++] = negative ? Tag.BIGINT_NEG : Tag.BIGINT_POS
    this.varint(n)
    const b = this.buf
    const chars = hexChunk
    let p = this.pos
    for (let stop = hex.length; stop > 0; stop -= HEX_CHUNK_CHARS) {
      const start = Math.max(0, stop - HEX_CHUNK_CHARS)
      const len = stop - start
      latin1Write.call(chars, hex.slice(start, stop), 0, len)
      let j = len
      for (; j > 1; j -= 2) b[p++] = (HEX_VALUE[chars[j - 2]!]! << 4) | HEX_VALUE[chars[j - 1]!]!
      if (j === 1) b[p++] = HEX_VALUE[chars[0]!]! // the odd leading digit
    }
    this.pos = p
  }

  private object(obj: object): void {
    const id = this.lookup(obj)
    if (id >= 0) {
      this.ensure(10)
      this.buf[this.pos++] = Tag.REF
      this.varint(id)
      return
    }
    if (++this.depth > MAX_DEPTH)
      throw new Unsupported(obj, `nesting deeper than ${MAX_DEPTH} levels`, ERR_SHMPIPE_TOO_LARGE)
    const proto = getPrototypeOf(obj) as object | null
    if (proto === ObjectProto) {
      // Rejected like v8 does: proxies, and arguments objects (which, unlike plain objects,
      // have an own Symbol.iterator: a cheap test before the exact one).
      if (
        types.isProxy(obj) ||
        ((obj as { [Symbol.iterator]?: unknown })[Symbol.iterator] !== undefined &&
          types.isArgumentsObject(obj))
      )
        throw new Unsupported(obj, null, ERR_SHMPIPE_UNSUPPORTED_TYPE)
      this.plainObject(obj as Record<string, unknown>)
    } else if (proto === ArrayProto && !types.isProxy(obj)) {
      this.array(obj as unknown[])
    } else {
      this.special(obj, proto)
    }
    this.depth--
  }

  private plainObject(obj: Record<string, unknown>): void {
    const keys = objectKeys(obj)
    const n = keys.length
    this.ensure(1 + 9)
    this.buf[this.pos++] = Tag.OBJECT
    this.properties(obj, keys, 0, n, false)
  }

  /** Writes a count and (key, value) pairs for `keys[from … to)`; skips keys gone meanwhile. */
  private properties(
    obj: Record<string, unknown>,
    keys: string[],
    from: number,
    to: number,
    isArray: boolean,
  ): void {
    const max = to - from
    const countSize = varintSize(max)
    this.ensure(countSize)
    const countAt = this.pos
    this.pos += countSize
    let count = 0
    for (let i = from; i < to; i++) {
      const key = keys[i]!
      const v = obj[key]
      // Like v8: a property deleted by a getter met earlier is skipped.
      if (v === undefined && !hasOwn.call(obj, key)) continue
      this.string(key)
      try {
        this.value(v)
      } catch (err) {
        throw withSegment(err, isArray ? Segment.ARRAY_KEY : Segment.KEY, key, 0)
      }
      count++
    }
    this.paddedVarint(countAt, count, countSize)
  }

  private array(arr: unknown[]): void {
    const len = arr.length
    const keys = objectKeys(arr)
    const nkeys = keys.length
    if (len > nkeys * 2 + 16) {
      this.sparseArray(arr, len, keys)
      return
    }
    // Rollback point, should the array turn out to have non-enumerable elements.
    const start = this.pos
    const startExtra = this.extra
    const startChunks = this.chunks === null ? 0 : this.chunks.length
    const startSeen = this.nseen
    const startDepth = this.depth

    this.ensure(1 + 9)
    this.buf[this.pos++] = Tag.ARRAY
    this.varint(len)
    let present = 0
    let last = -1
    for (let i = 0; i < len; i++) {
      const v = arr[i]
      if (v === undefined && !(i in arr)) {
        this.ensure(1)
        this.buf[this.pos++] = Tag.HOLE
        continue
      }
      present++
      last = i
      try {
        this.value(v)
      } catch (err) {
        throw withSegment(err, Segment.ARRAY_KEY, i, 0)
      }
    }
    // Object.keys lists the enumerable elements first, then the other properties. When its
    // `present`-th key is the last element, every element met is enumerable and the keys after
    // it are the array's extra (non-index) properties, which v8 keeps too.
    if (nkeys >= present && (present === 0 || keys[present - 1] === String(last))) {
      this.properties(arr as unknown as Record<string, unknown>, keys, present, nkeys, true)
      return
    }
    // An element is not enumerable (v8 skips it): start again, listing the keys.
    this.pos = start
    this.extra = startExtra
    if (this.chunks !== null) this.chunks.length = startChunks
    this.depth = startDepth
    const seen = this.seen
    for (let i = startSeen; i < this.nseen; i++) {
      this.seenMap?.delete(seen[i]!)
      seen[i] = undefined
    }
    this.nseen = startSeen
    this.sparseArray(arr, len, keys)
  }

  private sparseArray(arr: unknown[], len: number, keys: string[]): void {
    this.ensure(1 + 9)
    this.buf[this.pos++] = Tag.SPARSE_ARRAY
    this.varint(len)
    this.properties(arr as unknown as Record<string, unknown>, keys, 0, keys.length, true)
  }

  /** Everything but plain objects and arrays. */
  private special(obj: object, proto: object | null): void {
    let cls = proto === null ? Class.PLAIN : (protoClass.get(proto) ?? 0)
    cls = verifyClass(obj, cls)
    switch (cls) {
      case Class.PLAIN:
        if (types.isProxy(obj) || types.isModuleNamespaceObject(obj)) break
        this.plainObject(obj as Record<string, unknown>)
        return
      case Class.ARRAY:
        if (types.isProxy(obj)) break
        this.array(obj as unknown[])
        return
      case Class.VIEW:
        this.binaryView(obj as ArrayBufferView)
        return
      case Class.ARRAY_BUFFER:
        this.arrayBuffer(obj as ArrayBuffer)
        return
      case Class.MAP:
        this.map(obj as Map<unknown, unknown>)
        return
      case Class.SET:
        this.set(obj as Set<unknown>)
        return
      case Class.DATE:
        this.ensure(9)
        this.buf[this.pos++] = Tag.DATE
        this.dv.setFloat64(this.pos, dateGetTime.call(obj as Date), true)
        this.pos += 8
        return
      case Class.REGEXP: {
        const re = obj as RegExp
        this.ensure(1)
        this.buf[this.pos++] = Tag.REGEXP
        this.string(re.source)
        this.string(re.flags)
        return
      }
      case Class.ERROR:
        this.error(obj as Error)
        return
      case Class.NUMBER:
        this.ensure(9)
        this.buf[this.pos++] = Tag.BOXED_NUMBER
        this.dv.setFloat64(this.pos, numberValueOf.call(obj), true)
        this.pos += 8
        return
      case Class.STRING:
        this.ensure(1)
        this.buf[this.pos++] = Tag.BOXED_STRING
        this.string(stringValueOf.call(obj))
        return
      case Class.BOOLEAN:
        this.ensure(1)
        this.buf[this.pos++] = booleanValueOf.call(obj) ? Tag.BOXED_TRUE : Tag.BOXED_FALSE
        return
      case Class.BIGINT:
        this.ensure(1)
        this.buf[this.pos++] = Tag.BOXED_BIGINT
        this.bigint(bigintValueOf.call(obj))
        return
    }
    throw new Unsupported(obj, null, ERR_SHMPIPE_UNSUPPORTED_TYPE)
  }

  private binaryView(v: ArrayBufferView): void {
    const kind = viewKind(v)
    const bytes = viewBytes(v)
    if (bytes === null)
      throw new Unsupported(
        v,
        `${VIEW_NAMES[kind]} on a detached ArrayBuffer`,
        ERR_SHMPIPE_UNSUPPORTED_TYPE,
      )
    const n = bytes.byteLength
    this.ensure(3 + 9 + ALIGN)
    const b = this.buf
    b[this.pos++] = Tag.VIEW
    b[this.pos++] = kind
    this.varint(n)
    this.align()
    this.payload(bytes)
  }

  /** Copies a binary payload into the scratch, or defers it when large. */
  private payload(bytes: Uint8Array): void {
    const n = bytes.byteLength
    if (n >= DEFER_BYTES) {
      this.defer({ at: this.pos, byteLength: n, bytes, string: null, stringTag: 0 })
    } else {
      this.ensure(n)
      this.buf.set(bytes, this.pos)
      this.pos += n
    }
  }

  private arrayBuffer(ab: ArrayBuffer): void {
    const rab = ab as ResizableArrayBuffer
    const n = abByteLength.call(ab) as number
    let bytes: Uint8Array
    try {
      bytes = new Uint8Array(ab, 0, n)
    } catch {
      throw new Unsupported(ab, 'detached ArrayBuffer', ERR_SHMPIPE_UNSUPPORTED_TYPE)
    }
    const resizable = rab.resizable === true
    this.ensure(2 + 18 + ALIGN)
    const b = this.buf
    b[this.pos++] = Tag.ARRAY_BUFFER
    b[this.pos++] = resizable ? 1 : 0
    this.varint(n)
    if (resizable) this.varint(rab.maxByteLength)
    this.align()
    this.payload(bytes)
  }

  private map(m: Map<unknown, unknown>): void {
    const size = mapSize.call(m) as number
    this.ensure(1)
    this.buf[this.pos++] = Tag.MAP
    const countSize = varintSize(size)
    this.ensure(countSize)
    const countAt = this.pos
    this.pos += countSize
    let count = 0
    const it = mapEntries.call(m) as IterableIterator<[unknown, unknown]>
    for (let r = it.next(); !r.done && count < size; r = it.next()) {
      const entry = r.value
      const key = entry[0]
      const val = entry[1]
      try {
        this.value(key)
      } catch (err) {
        throw withSegment(err, Segment.MAP_KEY, null, count)
      }
      try {
        this.value(val)
      } catch (err) {
        throw withSegment(err, Segment.MAP_VALUE, key, count)
      }
      count++
    }
    this.paddedVarint(countAt, count, countSize)
  }

  private set(s: Set<unknown>): void {
    const size = setSize.call(s) as number
    this.ensure(1)
    this.buf[this.pos++] = Tag.SET
    const countSize = varintSize(size)
    this.ensure(countSize)
    const countAt = this.pos
    this.pos += countSize
    let count = 0
    const it = setValues.call(s) as IterableIterator<unknown>
    for (let r = it.next(); !r.done && count < size; r = it.next()) {
      try {
        this.value(r.value)
      } catch (err) {
        throw withSegment(err, Segment.SET, null, count)
      }
      count++
    }
    this.paddedVarint(countAt, count, countSize)
  }

  private error(e: Error): void {
    // What v8 keeps: the constructor (found from `name`), an own data `message` (as a string),
    // `stack` if it is a string, an own data `cause`.
    const name: unknown = e.name
    const ctor = typeof name === 'string' ? Math.max(0, ERROR_NAMES.indexOf(name)) : 0
    let flags = 0
    let message = ''
    const messageDesc = Object.getOwnPropertyDescriptor(e, 'message')
    if (messageDesc !== undefined && 'value' in messageDesc) {
      if (typeof messageDesc.value === 'symbol')
        throw withSegment(
          new Unsupported(messageDesc.value, null, ERR_SHMPIPE_UNSUPPORTED_TYPE),
          Segment.MESSAGE,
          null,
          0,
        )
      message = String(messageDesc.value)
      flags |= ErrorFlag.HAS_MESSAGE
    }
    const stack: unknown = e.stack
    if (typeof stack === 'string') flags |= ErrorFlag.HAS_STACK
    const causeDesc = Object.getOwnPropertyDescriptor(e, 'cause')
    if (causeDesc !== undefined && 'value' in causeDesc) flags |= ErrorFlag.HAS_CAUSE
    this.ensure(3)
    const b = this.buf
    b[this.pos++] = Tag.ERROR
    b[this.pos++] = ctor
    b[this.pos++] = flags
    if (flags & ErrorFlag.HAS_MESSAGE) this.string(message)
    if (flags & ErrorFlag.HAS_STACK) this.string(stack as string)
    if (flags & ErrorFlag.HAS_CAUSE) {
      try {
        this.value(causeDesc!.value)
      } catch (err) {
        throw withSegment(err, Segment.CAUSE, null, 0)
      }
    }
  }
}
