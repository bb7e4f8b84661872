/**
 * The value codec: turns JS values into bytes that can be written straight into shared memory,
 * and back.
 *
 * It accepts what `v8.serialize` accepts (with the same types coming back from `decode` as from
 * `v8.deserialize`), except class instances, which it rejects instead of turning them into plain
 * objects. Binary payloads (typed arrays, `DataView`, `Buffer`, `ArrayBuffer`) are stored raw and
 * 8-byte aligned, so `decode(bytes, { zeroCopy: true })` can return views into `bytes`.
 *
 * Encoding is two-phase so the pipe can size a slot before filling it: {@link encode} walks the
 * value, validates it and measures it (throwing before anything is written), and
 * {@link Encoded.writeTo} then copies the bytes into the target. Large binary payloads and large
 * strings are not copied by `encode`; `writeTo` copies them straight from the source into the
 * target (one `set` / one string write).
 *
 * ## Format (version 1)
 *
 * ```text
 * byte 0      FORMAT_VERSION
 * byte 1…     one value: a tag byte, then the tag's payload
 * ```
 *
 * Tags: `0x80…0xff` the integers 0…127; `0x40…0x7f` an ASCII string of 0…63 bytes (the bytes
 * follow); below `0x40` the types listed by the `T_*` constants. Lengths and counts are unsigned
 * LEB128 varints (a string's length may be written in a fixed, padded width). Numbers are
 * little-endian. Binary payloads are preceded by zero padding up to the next multiple of 8 bytes
 * from the start of the encoding. Every object-like value gets an id in the order it is first
 * met; meeting it again writes `T_REF id`, so shared and circular references keep their shape.
 * The encoding must be exactly as long as its value: trailing bytes are an error.
 *
 * @module
 */

import { types } from 'node:util'

import {
  ERR_SHMPIPE_BAD_SEGMENT,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_TOO_LARGE,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ShmpipeError,
} from './errors.js'

/** Version of the encoding written by {@link encode}; {@link decode} rejects any other. */
export const FORMAT_VERSION = 1

/**
 * Deepest nesting of containers (objects, arrays, maps, sets, error causes…) that {@link encode}
 * accepts and {@link decode} reads. `v8.serialize` manages about 3,000 levels with Node's default
 * stack; this codec's frames are larger, and 1,000 leaves room for a caller that is itself deep.
 * (Should the stack run out anyway, the error is a `ShmpipeError` `ERR_SHMPIPE_TOO_LARGE`.)
 */
export const MAX_DEPTH = 1000

/** A value measured by {@link encode}, ready to be written. */
export interface Encoded {
  /** Exact number of bytes {@link Encoded.writeTo} writes. */
  readonly byteLength: number
  /**
   * Writes the encoding to `target[0 … byteLength)`.
   *
   * `target.byteLength` must be at least `byteLength`. Binary payloads are aligned relative to
   * `target`'s start, so give a target whose `byteOffset` is a multiple of 8 (16 is what the
   * pipe uses) if the reader should get aligned zero-copy views. May be called more than once.
   * Throws `ERR_SHMPIPE_INVALID_ARGUMENT` if `target` is too small, or if the value changed
   * size (e.g. an `ArrayBuffer` was detached) since `encode`; nothing is written then.
   */
  writeTo(target: Uint8Array): void
}

/** Options of {@link decode}. */
export interface DecodeOptions {
  /**
   * Return binary values (typed arrays, `DataView`, `Buffer`) as views into `bytes`' own memory
   * instead of copies. Much faster for large payloads, but the views are only valid as long as
   * `bytes` is (for a pipe: until the message is released). A payload that is not suitably
   * aligned in memory (only when `bytes.byteOffset` is not a multiple of 8) is copied anyway.
   * `ArrayBuffer`s are always copied. Default `false`: every binary value owns its memory.
   */
  readonly zeroCopy?: boolean
  /**
   * The largest `maxByteLength`, in bytes, that a decoded resizable `ArrayBuffer` may keep. A
   * resizable `ArrayBuffer` reserves address space for its `maxByteLength` when it is made, and
   * that number comes from the sender: without a cap, a few bytes of message could reserve
   * terabytes. A buffer's `maxByteLength` is therefore lowered to
   * `max(byteLength, maxResizableBytes)` when the sender's is larger; the buffer stays resizable.
   * Default `0`: a decoded resizable `ArrayBuffer` cannot grow past the length it arrived with.
   * `Infinity` keeps whatever the sender sent. Must be a number ≥ 0.
   */
  readonly maxResizableBytes?: number
}

// ---------------------------------------------------------------------------------------------
// Tags

const T_UNDEFINED = 0x00
const T_NULL = 0x01
const T_FALSE = 0x02
const T_TRUE = 0x03
/** Only inside a dense array: a hole. */
const T_HOLE = 0x04
const T_INT8 = 0x05
const T_INT16 = 0x06
const T_INT32 = 0x07
const T_FLOAT64 = 0x08
/** A bigint in [-2^63, 2^63): 8 bytes, two's complement. */
const T_BIGINT64 = 0x09
/** A larger bigint: varint byte count, magnitude bytes (little-endian). */
const T_BIGINT_POS = 0x0a
const T_BIGINT_NEG = 0x0b
/** varint length, bytes that are all below 0x80. */
const T_STR_ASCII = 0x0c
/** varint length, UTF-8 bytes. */
const T_STR_UTF8 = 0x0d
/** varint length in bytes, UTF-16LE code units (strings with lone surrogates). */
const T_STR_UTF16 = 0x0e
/** varint count, count × (key string, value). */
const T_OBJECT = 0x10
/** varint length, length × value (T_HOLE for holes), varint count, count × (key string, value). */
const T_ARRAY = 0x11
/** varint length, varint count, count × (key string, value). */
const T_SPARSE_ARRAY = 0x12
/** varint count, count × (key, value). */
const T_MAP = 0x13
/** varint count, count × value. */
const T_SET = 0x14
/** float64 time value. */
const T_DATE = 0x15
/** source string, flags string. */
const T_REGEXP = 0x16
/** u8 constructor index, u8 flags, [message string], [stack string], [cause value]. */
const T_ERROR = 0x17
const T_BOXED_NUMBER = 0x18
const T_BOXED_STRING = 0x19
const T_BOXED_TRUE = 0x1a
const T_BOXED_FALSE = 0x1b
const T_BOXED_BIGINT = 0x1c
/** u8 flags (1: resizable), varint byteLength, [varint maxByteLength], padding, bytes. */
const T_ARRAY_BUFFER = 0x1d
/** u8 view kind, varint byteLength, padding, bytes. */
const T_VIEW = 0x1e
/** varint id of an object met earlier. */
const T_REF = 0x1f

const T_FIXSTR = 0x40
const FIXSTR_MAX = 0x3f
const T_FIXINT = 0x80

const ERROR_HAS_MESSAGE = 1
const ERROR_HAS_STACK = 2
const ERROR_HAS_CAUSE = 4

/** Binary payloads start at a multiple of this many bytes from the start of the encoding. */
const ALIGN = 8

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

// View kinds, in the order of VIEW_CTORS.
const K_DATAVIEW = 11
const K_BUFFER = 12

type ViewCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): ArrayBufferView
}
const VIEW_CTORS: readonly ViewCtor[] = [
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
  DataView,
  Buffer,
]
const VIEW_NAMES = VIEW_CTORS.map((c) => c.name)
const ELEMENT_SIZE = [1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1]

/**
 * Error constructors, by the index stored after T_ERROR (the same ones v8 keeps). The pool
 * revives workers' errors with them too.
 */
export const ERROR_CTORS: readonly ErrorConstructor[] = [
  Error,
  EvalError,
  RangeError,
  ReferenceError,
  SyntaxError,
  TypeError,
  URIError,
]
const ERROR_NAMES = ERROR_CTORS.map((c) => c.name)

// Kinds of object found through their prototype.
const C_PLAIN = 1
const C_ARRAY = 2
const C_MAP = 3
const C_SET = 4
const C_DATE = 5
const C_REGEXP = 6
const C_ERROR = 7
const C_NUMBER = 8
const C_STRING = 9
const C_BOOLEAN = 10
const C_BIGINT = 11
const C_ARRAY_BUFFER = 12
const C_VIEW = 13

const ObjectProto = Object.prototype
const ArrayProto = Array.prototype
const getPrototypeOf = Object.getPrototypeOf
const objectKeys = Object.keys
const isView = ArrayBuffer.isView
const hasOwn = Object.prototype.hasOwnProperty
const fromCharCode = String.fromCharCode
const mapEntries = Map.prototype.entries
const setValues = Set.prototype.values
const mapSize = Object.getOwnPropertyDescriptor(Map.prototype, 'size')!.get!
const setSize = Object.getOwnPropertyDescriptor(Set.prototype, 'size')!.get!
const dateGetTime = Date.prototype.getTime
const numberValueOf = Number.prototype.valueOf
const stringValueOf = String.prototype.valueOf
const booleanValueOf = Boolean.prototype.valueOf
const bigintValueOf = BigInt.prototype.valueOf
const typedArrayProto = getPrototypeOf(Uint8Array.prototype) as object
const typedArrayTag = Object.getOwnPropertyDescriptor(typedArrayProto, Symbol.toStringTag)!.get!
const abByteLength = Object.getOwnPropertyDescriptor(ArrayBuffer.prototype, 'byteLength')!.get!

type BufferMethods = {
  utf8Write(s: string, offset: number, length?: number): number
  latin1Write(s: string, offset: number, length?: number): number
  ucs2Write(s: string, offset: number, length?: number): number
  latin1Slice(start: number, end: number): string
  utf8Slice(start: number, end: number): string
  ucs2Slice(start: number, end: number): string
}
// Node's Buffer methods work on any Uint8Array, which is how they are used here.
const BufferProto = Buffer.prototype as unknown as BufferMethods
const utf8Write = BufferProto.utf8Write
const latin1Write = BufferProto.latin1Write
const ucs2Write = BufferProto.ucs2Write
const latin1Slice = BufferProto.latin1Slice
const utf8Slice = BufferProto.utf8Slice
const ucs2Slice = BufferProto.ucs2Slice

/** Resizable `ArrayBuffer` members (ES2024; present in Node 20). */
type ResizableArrayBuffer = ArrayBuffer & {
  readonly resizable: boolean
  readonly maxByteLength: number
}
type ArrayBufferCtorWithOptions = new (
  length: number,
  options?: { maxByteLength: number },
) => ArrayBuffer

const protoClass = new Map<object, number>([
  [ObjectProto, C_PLAIN],
  [ArrayProto, C_ARRAY],
  [Map.prototype, C_MAP],
  [Set.prototype, C_SET],
  [Date.prototype, C_DATE],
  [RegExp.prototype, C_REGEXP],
  [Number.prototype, C_NUMBER],
  [String.prototype, C_STRING],
  [Boolean.prototype, C_BOOLEAN],
  [BigInt.prototype, C_BIGINT],
  [ArrayBuffer.prototype, C_ARRAY_BUFFER],
  [DataView.prototype, C_VIEW],
  ...ERROR_CTORS.map((c) => [c.prototype, C_ERROR] as [object, number]),
  ...VIEW_CTORS.map((c) => [c.prototype, C_VIEW] as [object, number]),
])

// ---------------------------------------------------------------------------------------------
// Errors and paths

/**
 * Thrown inside the encoder for an unsupported value; collects the path on its way out.
 *
 * Containers add raw segments (kind, payload, index) as it passes; formatting them (with a
 * RegExp, JSON.stringify…) waits until the top, where the stack is shallow again: V8 aborts the
 * process if a RegExp has to be compiled when the stack is nearly exhausted.
 */
class Unsupported {
  /** Path segments, innermost first: (kind, payload, index) triples. */
  readonly segments: unknown[] = []
  constructor(
    /** The offending value. */
    readonly value: unknown,
    /** What is wrong with it; null: describe(value) at the top. */
    readonly what: string | null,
    readonly code: typeof ERR_SHMPIPE_UNSUPPORTED_TYPE | typeof ERR_SHMPIPE_TOO_LARGE,
  ) {}
}

const SEG_KEY = 0
/** A key of an array: an index or an extra property. */
const SEG_ARRAY_KEY = 1
const SEG_MAP_KEY = 2
const SEG_MAP_VALUE = 3
const SEG_SET = 4
const SEG_CAUSE = 5
const SEG_MESSAGE = 6

/** Adds a path segment to an `Unsupported` passing through a container; other errors pass. */
function withSegment(err: unknown, kind: number, payload: unknown, index: number): unknown {
  if (err instanceof Unsupported) err.segments.push(kind, payload, index)
  return err
}

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/
const ARRAY_INDEX = /^(?:0|[1-9]\d*)$/

/** The path segment for a property key: `.name` or `["key with space"]`. */
function keySegment(key: string): string {
  return IDENTIFIER.test(key) ? `.${key}` : `[${JSON.stringify(key)}]`
}

/** Paths longer than this many segments lose their middle. */
const PATH_MAX_SEGMENTS = 40

/** The path, e.g. `value.a[3].fn`, from the segments collected (innermost first). */
function formatPath(segments: unknown[]): string {
  let path = 'value'
  const count = segments.length / 3
  const elideFrom = count > PATH_MAX_SEGMENTS ? count - PATH_MAX_SEGMENTS / 2 : -1
  const elideTo = count - PATH_MAX_SEGMENTS + PATH_MAX_SEGMENTS / 2
  for (let i = segments.length - 3; i >= 0; i -= 3) {
    const n = count - i / 3 // 1 for the outermost segment
    if (elideFrom >= 0 && n > PATH_MAX_SEGMENTS / 2 && n <= elideTo) {
      if (n === PATH_MAX_SEGMENTS / 2 + 1) path += `…(${count - PATH_MAX_SEGMENTS} more)…`
      continue
    }
    const payload = segments[i + 1]
    const index = segments[i + 2] as number
    switch (segments[i] as number) {
      case SEG_KEY:
        path += keySegment(payload as string)
        break
      case SEG_ARRAY_KEY:
        path +=
          typeof payload === 'number' || ARRAY_INDEX.test(payload as string)
            ? `[${payload as string | number}]`
            : keySegment(payload as string)
        break
      case SEG_MAP_KEY:
        path += `.<Map key #${index}>`
        break
      case SEG_MAP_VALUE:
        path += mapValueSegment(payload, index)
        break
      case SEG_SET:
        path += `.<Set element #${index}>`
        break
      case SEG_CAUSE:
        path += '.cause'
        break
      case SEG_MESSAGE:
        path += '.message'
        break
    }
  }
  return path
}

/** The path segment of a Map value: `.get("x")`, `.get(1)`… or `.<Map value #n>`. */
function mapValueSegment(key: unknown, index: number): string {
  switch (typeof key) {
    case 'string':
      return `.get(${JSON.stringify(key)})`
    case 'number':
    case 'boolean':
    case 'undefined':
      return `.get(${String(key)})`
    case 'bigint':
      return `.get(${key}n)`
    default:
      return key === null ? '.get(null)' : `.<Map value #${index}>`
  }
}

function describe(value: unknown): string {
  switch (typeof value) {
    case 'function':
      return value.name ? `function ${value.name}` : 'anonymous function'
    case 'symbol':
      return `symbol ${String(value)}`
    default: {
      const obj = value as object
      if (types.isProxy(obj)) return 'Proxy'
      const proto = getPrototypeOf(obj) as { constructor?: unknown } | null
      const ctor = proto?.constructor
      const name = typeof ctor === 'function' && ctor.name ? ctor.name : undefined
      if (types.isWeakMap(obj) || types.isWeakSet(obj) || types.isPromise(obj))
        return name ?? 'object'
      if (types.isSharedArrayBuffer(obj)) return 'SharedArrayBuffer'
      if (types.isBoxedPrimitive(obj)) return 'Symbol object'
      if (types.isArgumentsObject(obj)) return 'arguments object'
      if (types.isModuleNamespaceObject(obj)) return 'module namespace object'
      return name ? `instance of class ${name}` : 'object with a non-plain prototype'
    }
  }
}

function badSegment(what: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_BAD_SEGMENT, `Cannot decode value: ${what}`)
}

function invalidArgument(message: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, message)
}

function isStackOverflow(err: unknown): boolean {
  return err instanceof RangeError && /call stack/i.test(err.message)
}

function varintSize(n: number): number {
  let size = 1
  while (n >= 0x80) {
    n = Math.floor(n / 128)
    size++
  }
  return size
}

// ---------------------------------------------------------------------------------------------
// Encoder

/** A binary payload or a long string that `writeTo` copies straight from its source. */
interface Chunk {
  /** Offset in the scratch bytes at which the chunk goes. */
  readonly at: number
  /** Bytes it takes in the encoding. */
  readonly byteLength: number
  /** The bytes, for a binary payload. */
  readonly bytes: Uint8Array | null
  /** The string, for a long string. */
  readonly string: string | null
  /** How the string is written: T_STR_ASCII, T_STR_UTF8 or T_STR_UTF16. */
  readonly stringTag: number
}

/** Walks values, writes their encoding into a reusable scratch buffer. */
class Writer {
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
  owner: EncodedValue | null = null
  /** `views[n]` is a Uint8Array of `buf`'s first n bytes. */
  views: (Uint8Array | undefined)[] = []

  /** Encodes `value` into the scratch; returns the result, owning the scratch. */
  encode(value: unknown, reuse: EncodedValue | null): EncodedValue {
    this.release()
    this.busy = true
    try {
      this.buf[0] = FORMAT_VERSION
      this.pos = 1
      this.value(value)
      const structLen = this.pos
      const byteLength = structLen + this.extra
      const chunks = this.chunks
      let result: EncodedValue
      if (reuse !== null) {
        if (reuse.byteLength !== byteLength)
          throw invalidArgument(
            `writeTo(): the value changed size since encode() (${reuse.byteLength} bytes, now ${byteLength})`,
          )
        result = reuse
        result.buf = this.buf
        result.structLen = structLen
        result.chunks = chunks
      } else {
        result = new EncodedValue(this, byteLength, structLen, this.buf, chunks, value)
      }
      this.owner = result
      return result
    } catch (err) {
      if (err instanceof Unsupported) {
        const path = formatPath(err.segments)
        const what = err.what ?? describe(err.value)
        throw new ShmpipeError(
          err.code,
          err.code === ERR_SHMPIPE_TOO_LARGE
            ? `Cannot encode ${path}: ${what}`
            : `Cannot encode ${path}: ${what} is not supported`,
        )
      }
      if (isStackOverflow(err))
        throw new ShmpipeError(ERR_SHMPIPE_TOO_LARGE, 'Cannot encode value: nested too deeply', {
          cause: err,
        })
      throw err
    } finally {
      this.reset()
      this.busy = false
    }
  }

  /** Makes the scratch free for a new encoding. */
  private release(): void {
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

  private reset(): void {
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
        this.buf[this.pos++] = v ? T_TRUE : T_FALSE
        return
      case 'undefined':
        this.ensure(1)
        this.buf[this.pos++] = T_UNDEFINED
        return
      case 'object':
        if (v === null) {
          this.ensure(1)
          this.buf[this.pos++] = T_NULL
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
        b[this.pos++] = T_FIXINT | i
      } else if (i >= -0x80 && i < 0x80) {
        b[this.pos++] = T_INT8
        b[this.pos++] = i & 0xff
      } else if (i >= -0x8000 && i < 0x8000) {
        b[this.pos++] = T_INT16
        this.dv.setInt16(this.pos, i, true)
        this.pos += 2
      } else {
        b[this.pos++] = T_INT32
        this.dv.setInt32(this.pos, i, true)
        this.pos += 4
      }
    } else {
      b[this.pos++] = T_FLOAT64
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
        b[this.pos] = T_FIXSTR | n
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
        tag = T_STR_UTF16
        byteLength = n * 2
      } else {
        byteLength = Buffer.byteLength(s, 'utf8')
        tag = byteLength === n ? T_STR_ASCII : T_STR_UTF8
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
      this.buf[this.pos++] = T_STR_UTF16
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
      this.buf[tagAt] = T_FIXSTR | n
      this.pos = tagAt + 1 + n
      return
    }
    this.buf[tagAt] = written === n ? T_STR_ASCII : T_STR_UTF8
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
      this.buf[this.pos++] = T_BIGINT64
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
    this.buf[this.pos++] = negative ? T_BIGINT_NEG : T_BIGINT_POS
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
      this.buf[this.pos++] = T_REF
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
    this.buf[this.pos++] = T_OBJECT
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
        throw withSegment(err, isArray ? SEG_ARRAY_KEY : SEG_KEY, key, 0)
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
    this.buf[this.pos++] = T_ARRAY
    this.varint(len)
    let present = 0
    let last = -1
    for (let i = 0; i < len; i++) {
      const v = arr[i]
      if (v === undefined && !(i in arr)) {
        this.ensure(1)
        this.buf[this.pos++] = T_HOLE
        continue
      }
      present++
      last = i
      try {
        this.value(v)
      } catch (err) {
        throw withSegment(err, SEG_ARRAY_KEY, i, 0)
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
    this.buf[this.pos++] = T_SPARSE_ARRAY
    this.varint(len)
    this.properties(arr as unknown as Record<string, unknown>, keys, 0, keys.length, true)
  }

  /** Everything but plain objects and arrays. */
  private special(obj: object, proto: object | null): void {
    let cls = proto === null ? C_PLAIN : (protoClass.get(proto) ?? 0)
    cls = verifyClass(obj, cls)
    switch (cls) {
      case C_PLAIN:
        if (types.isProxy(obj) || types.isModuleNamespaceObject(obj)) break
        this.plainObject(obj as Record<string, unknown>)
        return
      case C_ARRAY:
        if (types.isProxy(obj)) break
        this.array(obj as unknown[])
        return
      case C_VIEW:
        this.binaryView(obj as ArrayBufferView)
        return
      case C_ARRAY_BUFFER:
        this.arrayBuffer(obj as ArrayBuffer)
        return
      case C_MAP:
        this.map(obj as Map<unknown, unknown>)
        return
      case C_SET:
        this.set(obj as Set<unknown>)
        return
      case C_DATE:
        this.ensure(9)
        this.buf[this.pos++] = T_DATE
        this.dv.setFloat64(this.pos, dateGetTime.call(obj as Date), true)
        this.pos += 8
        return
      case C_REGEXP: {
        const re = obj as RegExp
        this.ensure(1)
        this.buf[this.pos++] = T_REGEXP
        this.string(re.source)
        this.string(re.flags)
        return
      }
      case C_ERROR:
        this.error(obj as Error)
        return
      case C_NUMBER:
        this.ensure(9)
        this.buf[this.pos++] = T_BOXED_NUMBER
        this.dv.setFloat64(this.pos, numberValueOf.call(obj), true)
        this.pos += 8
        return
      case C_STRING:
        this.ensure(1)
        this.buf[this.pos++] = T_BOXED_STRING
        this.string(stringValueOf.call(obj))
        return
      case C_BOOLEAN:
        this.ensure(1)
        this.buf[this.pos++] = booleanValueOf.call(obj) ? T_BOXED_TRUE : T_BOXED_FALSE
        return
      case C_BIGINT:
        this.ensure(1)
        this.buf[this.pos++] = T_BOXED_BIGINT
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
    b[this.pos++] = T_VIEW
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
    b[this.pos++] = T_ARRAY_BUFFER
    b[this.pos++] = resizable ? 1 : 0
    this.varint(n)
    if (resizable) this.varint(rab.maxByteLength)
    this.align()
    this.payload(bytes)
  }

  private map(m: Map<unknown, unknown>): void {
    const size = mapSize.call(m) as number
    this.ensure(1)
    this.buf[this.pos++] = T_MAP
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
        throw withSegment(err, SEG_MAP_KEY, null, count)
      }
      try {
        this.value(val)
      } catch (err) {
        throw withSegment(err, SEG_MAP_VALUE, key, count)
      }
      count++
    }
    this.paddedVarint(countAt, count, countSize)
  }

  private set(s: Set<unknown>): void {
    const size = setSize.call(s) as number
    this.ensure(1)
    this.buf[this.pos++] = T_SET
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
        throw withSegment(err, SEG_SET, null, count)
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
          SEG_MESSAGE,
          null,
          0,
        )
      message = String(messageDesc.value)
      flags |= ERROR_HAS_MESSAGE
    }
    const stack: unknown = e.stack
    if (typeof stack === 'string') flags |= ERROR_HAS_STACK
    const causeDesc = Object.getOwnPropertyDescriptor(e, 'cause')
    if (causeDesc !== undefined && 'value' in causeDesc) flags |= ERROR_HAS_CAUSE
    this.ensure(3)
    const b = this.buf
    b[this.pos++] = T_ERROR
    b[this.pos++] = ctor
    b[this.pos++] = flags
    if (flags & ERROR_HAS_MESSAGE) this.string(message)
    if (flags & ERROR_HAS_STACK) this.string(stack as string)
    if (flags & ERROR_HAS_CAUSE) {
      try {
        this.value(causeDesc!.value)
      } catch (err) {
        throw withSegment(err, SEG_CAUSE, null, 0)
      }
    }
  }
}

/**
 * The class of an object whose prototype gave `cls` (0: unknown prototype), checked against
 * its internal type; 0 when it is not something the codec supports. Subclasses of built-ins
 * and objects from other realms are recognised by their internal type, as v8 does.
 */
function verifyClass(obj: object, cls: number): number {
  switch (cls) {
    case C_PLAIN:
      return C_PLAIN
    case C_VIEW:
      return isView(obj) ? C_VIEW : 0
    case C_MAP:
      return types.isMap(obj) ? C_MAP : 0
    case C_SET:
      return types.isSet(obj) ? C_SET : 0
    case C_DATE:
      return types.isDate(obj) ? C_DATE : 0
    case C_REGEXP:
      return types.isRegExp(obj) ? C_REGEXP : 0
    case C_ERROR:
      return types.isNativeError(obj) ? C_ERROR : 0
    case C_NUMBER:
      return types.isNumberObject(obj) ? C_NUMBER : 0
    case C_STRING:
      return types.isStringObject(obj) ? C_STRING : 0
    case C_BOOLEAN:
      return types.isBooleanObject(obj) ? C_BOOLEAN : 0
    case C_BIGINT:
      return types.isBigIntObject(obj) ? C_BIGINT : 0
    case C_ARRAY_BUFFER:
      return types.isArrayBuffer(obj) ? C_ARRAY_BUFFER : 0
  }
  // Unknown prototype: a subclass of a built-in, a built-in of another realm, or a class
  // instance (which v8 would silently turn into a plain object: rejected here).
  if (types.isProxy(obj)) return 0
  if (Array.isArray(obj)) return C_ARRAY
  if (isView(obj)) return C_VIEW
  if (types.isArrayBuffer(obj)) return C_ARRAY_BUFFER
  if (types.isMap(obj)) return C_MAP
  if (types.isSet(obj)) return C_SET
  if (types.isDate(obj)) return C_DATE
  if (types.isRegExp(obj)) return C_REGEXP
  if (types.isNativeError(obj)) return C_ERROR
  if (types.isNumberObject(obj)) return C_NUMBER
  if (types.isStringObject(obj)) return C_STRING
  if (types.isBooleanObject(obj)) return C_BOOLEAN
  if (types.isBigIntObject(obj)) return C_BIGINT
  // A plain object of another realm: its prototype is that realm's Object.prototype.
  const proto = getPrototypeOf(obj) as { constructor?: unknown } | null
  if (
    proto !== null &&
    getPrototypeOf(proto) === null &&
    typeof proto.constructor === 'function' &&
    proto.constructor.name === 'Object' &&
    Object.prototype.toString.call(obj) === '[object Object]'
  )
    return C_PLAIN
  return 0
}

/**
 * The kind of a typed array, DataView or Buffer. Like Node's v8 serializer: a Buffer is a
 * view whose constructor is `Buffer`; anything else is known by its typed array name, so a
 * subclass is encoded as its base type.
 */
function viewKind(v: ArrayBufferView): number {
  if (getPrototypeOf(v) === Buffer.prototype) return K_BUFFER
  const tag = typedArrayTag.call(v) as string | undefined
  return tag === undefined ? K_DATAVIEW : VIEW_NAMES.indexOf(tag)
}

/** A Uint8Array over exactly the view's bytes; null if its buffer is detached. */
function viewBytes(v: ArrayBufferView): Uint8Array | null {
  const n = v.byteLength
  if (n === 0) {
    try {
      return new Uint8Array(v.buffer, 0, 0)
    } catch {
      return null
    }
  }
  if (v instanceof Uint8Array) return v
  return new Uint8Array(v.buffer, v.byteOffset, n)
}

const writer = new Writer()

/**
 * Copies `bytes` into `target` at `at`: how {@link writeEncoded} lets a caller write the large
 * binary parts of an encoding its own way (the pipe streams them into shared memory).
 */
export type CopyBytes = (target: Uint8Array, at: number, bytes: Uint8Array) => void

/** The default {@link CopyBytes}: `TypedArray.prototype.set`. */
function setBytes(target: Uint8Array, at: number, bytes: Uint8Array): void {
  target.set(bytes, at)
}

/**
 * Like `enc.writeTo(target)`, but the bytes that `writeTo` copies straight from their source (a
 * lone binary value's, and binary parts of at least {@link DEFER_BYTES} bytes) are copied by
 * `copy`; everything else as usual.
 */
export function writeEncoded(enc: Encoded, target: Uint8Array, copy: CopyBytes): void {
  if (enc instanceof EncodedValue || enc instanceof EncodedView) enc.writeTo(target, copy)
  else enc.writeTo(target)
}

/** The result of encoding anything but a top-level binary view. */
class EncodedValue implements Encoded {
  /** Set once writeTo has run; such a result may lose its scratch to the next encode. */
  written = false
  constructor(
    public w: Writer,
    readonly byteLength: number,
    /** Bytes in `buf` (the encoding without its deferred chunks). */
    public structLen: number,
    /** The bytes (in the writer's scratch or a copy); null once lost (then: encode again). */
    public buf: Buffer | null,
    public chunks: Chunk[] | null,
    readonly value: unknown,
  ) {}

  writeTo(target: Uint8Array, copy: CopyBytes = setBytes): void {
    checkTarget(target, this.byteLength)
    if (this.buf === null) {
      // Lost its bytes to a later encode: encode again (the same size, or it throws).
      if (this.w.busy) this.w = new Writer()
      this.w.encode(this.value, this)
    }
    const buf = this.buf!
    const n = this.structLen
    const src = buf === this.w.buf ? this.w.view(n) : new Uint8Array(buf.buffer, buf.byteOffset, n)
    const chunks = this.chunks
    if (chunks === null) {
      target.set(src)
    } else {
      for (const c of chunks) {
        if (c.bytes !== null && c.bytes.byteLength !== c.byteLength)
          throw invalidArgument(
            'writeTo(): a binary value changed size since encode() (was its ArrayBuffer detached or resized?)',
          )
      }
      let from = 0
      let to = 0
      for (const c of chunks) {
        target.set(src.subarray(from, c.at), to)
        to += c.at - from
        from = c.at
        if (c.bytes !== null) copy(target, to, c.bytes)
        else writeString(target, to, c)
        to += c.byteLength
      }
      target.set(src.subarray(from, n), to)
    }
    this.written = true
  }
}

function writeString(target: Uint8Array, at: number, c: Chunk): void {
  const s = c.string!
  const written =
    c.stringTag === T_STR_UTF16
      ? ucs2Write.call(target, s, at, c.byteLength)
      : c.stringTag === T_STR_ASCII
        ? latin1Write.call(target, s, at, c.byteLength)
        : utf8Write.call(target, s, at, c.byteLength)
  if (written !== c.byteLength)
    throw new Error('shmpipe codec: a string did not encode to its measured length')
}

/** The result of encoding a top-level typed array, DataView or Buffer: a header and the bytes. */
class EncodedView implements Encoded {
  constructor(
    readonly byteLength: number,
    readonly kind: number,
    readonly bytes: Uint8Array,
    readonly headerLength: number,
  ) {}

  writeTo(target: Uint8Array, copy: CopyBytes = setBytes): void {
    checkTarget(target, this.byteLength)
    this.writeHeader(target)
    copy(target, this.headerLength, this.bytes)
  }

  /** Writes the header (`headerLength` bytes) to `target`; throws if the value changed size. */
  writeHeader(target: Uint8Array): void {
    const n = this.byteLength - this.headerLength
    if (this.bytes.byteLength !== n)
      throw invalidArgument(
        'writeTo(): the binary value changed size since encode() (was its ArrayBuffer detached or resized?)',
      )
    target[0] = FORMAT_VERSION
    target[1] = T_VIEW
    target[2] = this.kind
    let p = 3
    let len = n
    while (len >= 0x80) {
      target[p++] = (len % 128) | 0x80
      len = Math.floor(len / 128)
    }
    target[p++] = len
    while (p < this.headerLength) target[p++] = 0
  }
}

/** The longest header of a top-level binary value (see {@link viewParts}). */
export const MAX_VIEW_HEADER = 16

/**
 * If `enc` is the encoding of a lone typed array, `DataView` or `Buffer`, writes its header into
 * `head` (which needs {@link MAX_VIEW_HEADER} bytes) and returns the header's length and the
 * value's bytes: the encoding is those header bytes followed by the value's bytes, so that a
 * sender can copy both straight into place. Otherwise returns null (use `writeTo`). Throws as
 * `writeTo` does if the value changed size since `encode`.
 *
 * @internal Not part of the package's API.
 */
export function viewParts(
  enc: Encoded,
  head: Uint8Array,
): { headLength: number; body: Uint8Array } | null {
  if (!(enc instanceof EncodedView)) return null
  enc.writeHeader(head)
  return { headLength: enc.headerLength, body: enc.bytes }
}

function checkTarget(target: Uint8Array, byteLength: number): void {
  if (!(target instanceof Uint8Array))
    throw invalidArgument('writeTo(): target must be a Uint8Array or a Buffer')
  if (target.byteLength < byteLength)
    throw invalidArgument(
      `writeTo(): target has ${target.byteLength} bytes, the encoding needs ${byteLength}`,
    )
}

/**
 * Measures and validates `value` for writing with {@link Encoded.writeTo}.
 *
 * Accepts what `v8.serialize` accepts, except class instances: `undefined`, `null`, booleans,
 * numbers, bigints, strings, plain objects (also with a `null` prototype), arrays (with holes
 * and extra properties), `Map`, `Set`, `Date`, `RegExp`, errors, boxed primitives,
 * `ArrayBuffer`, typed arrays, `DataView` and `Buffer`, with shared and circular references.
 * Throws a `ShmpipeError` with code `ERR_SHMPIPE_UNSUPPORTED_TYPE` naming the path of the first
 * value that is not supported (e.g. `value.a[3].fn`), or `ERR_SHMPIPE_TOO_LARGE` for nesting
 * deeper than {@link MAX_DEPTH}; exceptions thrown by getters pass through. Nothing is written
 * anywhere until `writeTo` is called.
 *
 * Binary payloads and long strings are not copied here, only referenced: writing them into the
 * target is `writeTo`'s single copy. So `writeTo` sees their contents at the time it runs.
 */
export function encode(value: unknown): Encoded {
  if (typeof value === 'object' && value !== null && isView(value)) {
    return encodeTopLevelView(value)
  }
  const w = writer.busy ? new Writer() : writer
  return w.encode(value, null)
}

function encodeTopLevelView(v: ArrayBufferView): Encoded {
  const kind = viewKind(v)
  const bytes = viewBytes(v)
  if (bytes === null)
    throw new ShmpipeError(
      ERR_SHMPIPE_UNSUPPORTED_TYPE,
      `Cannot encode value: ${VIEW_NAMES[kind]} on a detached ArrayBuffer is not supported`,
    )
  const n = bytes.byteLength
  const header = 3 + varintSize(n)
  const headerLength = header + ((ALIGN - (header % ALIGN)) % ALIGN)
  return new EncodedView(headerLength + n, kind, bytes, headerLength)
}

// ---------------------------------------------------------------------------------------------
// Decoder (module state: decoding runs no user code, so it is never re-entered)

let b: Uint8Array = new Uint8Array(0)
let pos = 0
let end = 0
/** Objects decoded so far, by id: `refs[0 … nrefs)` (the array is reused). */
let refs: unknown[] = []
let nrefs = 0
let zeroCopy = false
/** The decode's `maxResizableBytes`. */
let maxResizableBytes = 0
let depth = 0

const f64 = new Float64Array(1)
const f64Bytes = new Uint8Array(f64.buffer)
const i64 = new BigInt64Array(1)
const i64Bytes = new Uint8Array(i64.buffer)
const KEY_CACHE_SIZE = 4096
const KEY_CACHE_MAX = 24
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'))
/** Bigint magnitudes up to this many bytes are parsed from a string built by appending. */
const SMALL_BIGINT_BYTES = 64
/** Magnitude bytes of the largest bigint V8 makes (2^30 bits). */
const MAX_BIGINT_BYTES = 2 ** 27
/** Two characters as a `Uint16Array` element holds them in memory (any byte order). */
function charPair(text: string): number {
  const pair = new Uint16Array(1)
  const bytes = new Uint8Array(pair.buffer)
  bytes[0] = text.charCodeAt(0)
  bytes[1] = text.charCodeAt(1)
  return pair[0]!
}
/** The two hex digits of each byte value, as {@link charPair}s. */
const HEX_PAIR_CHARS = Uint16Array.from(HEX, charPair)
const HEX_PREFIX_CHARS = charPair('0x')

/**
 * Decodes bytes written by {@link Encoded.writeTo} (exactly `byteLength` of them).
 *
 * With `zeroCopy: true`, typed arrays, `DataView`s and `Buffer`s are views into `bytes`' memory
 * (see {@link DecodeOptions}); otherwise they own their memory (a `Buffer` may live in Node's
 * Buffer pool, like one made by `Buffer.from`).
 *
 * Throws a `ShmpipeError` with code `ERR_SHMPIPE_BAD_SEGMENT` when the bytes are not a valid
 * encoding (unknown format version, truncated, corrupt, trailing bytes); it never reads outside
 * `bytes`. `ERR_SHMPIPE_INVALID_ARGUMENT` if `bytes` is not a Uint8Array.
 */
export function decode(bytes: Uint8Array, options?: DecodeOptions): unknown {
  if (!(bytes instanceof Uint8Array))
    throw invalidArgument('decode(): bytes must be a Uint8Array or a Buffer')
  const maxResizable = options?.maxResizableBytes === undefined ? 0 : options.maxResizableBytes
  if (typeof maxResizable !== 'number' || !(maxResizable >= 0))
    throw invalidArgument('decode(): maxResizableBytes must be a number of bytes (0 or more)')
  return decodeRange(bytes, bytes.byteLength, options?.zeroCopy === true, maxResizable)
}

/**
 * Decodes the encoding in `bytes[0 … length)`, copying every binary value (as `decode` without
 * `zeroCopy`), so that `bytes` may be reused at once. For the pipe, which receives small
 * messages into one reused buffer; `length` must be at most `bytes.byteLength`.
 *
 * @internal Not part of the package's API.
 */
export function decodePrefix(bytes: Uint8Array, length: number): unknown {
  return decodeRange(bytes, length, false, 0)
}

function decodeRange(
  bytes: Uint8Array,
  length: number,
  copyless: boolean,
  maxResizable: number,
): unknown {
  if (length < 2) throw badSegment(`${length} bytes is too short for an encoding`)
  if (bytes[0] !== FORMAT_VERSION)
    throw badSegment(
      `unknown format version ${bytes[0]} (this codec reads version ${FORMAT_VERSION})`,
    )
  // Fast path: a lone small integer.
  const tag = bytes[1]!
  if (length === 2 && tag >= T_FIXINT) return tag - T_FIXINT
  b = bytes
  pos = 1
  end = length
  zeroCopy = copyless
  maxResizableBytes = maxResizable
  depth = 0
  try {
    let value: unknown
    if (tag === T_VIEW) {
      // Fast path: a lone Buffer or typed array.
      pos = 2
      value = readView()
    } else {
      value = readValue()
    }
    if (pos !== end) throw badSegment(`${end - pos} bytes left over after the value`)
    return value
  } catch (err) {
    if (err instanceof ShmpipeError) throw err
    if (isStackOverflow(err))
      throw new ShmpipeError(ERR_SHMPIPE_TOO_LARGE, 'Cannot decode value: nested too deeply', {
        cause: err,
      })
    // E.g. a RangeError from a constructor given a corrupt length, a SyntaxError from a corrupt
    // RegExp: the input is bad, whatever the details.
    throw new ShmpipeError(
      ERR_SHMPIPE_BAD_SEGMENT,
      `Cannot decode value: ${err instanceof Error ? err.message : String(err)}`,
      { cause: err },
    )
  } finally {
    b = EMPTY
    const n = nrefs
    if (n > 0) {
      if (n > 1024) refs = []
      else for (let i = 0; i < n; i++) refs[i] = undefined
      nrefs = 0
    }
  }
}

const EMPTY = new Uint8Array(0)

function truncated(): ShmpipeError {
  return badSegment('truncated input')
}

function readVarint(): number {
  let p = pos
  if (p >= end) throw truncated()
  let byte = b[p++]!
  if (byte < 0x80) {
    pos = p
    return byte
  }
  let result = byte & 0x7f
  let mul = 128
  for (let i = 1; i < 8; i++) {
    if (p >= end) throw truncated()
    byte = b[p++]!
    result += (byte & 0x7f) * mul
    if (byte < 0x80) {
      pos = p
      if (result > Number.MAX_SAFE_INTEGER) break
      return result
    }
    mul *= 128
  }
  throw badSegment('bad length')
}

/** A varint that is a length of `unit`-byte items still to come. */
function readLength(unit: number): number {
  const n = readVarint()
  if (n * unit > end - pos) throw truncated()
  return n
}

function readF64(): number {
  const p = pos
  if (p + 8 > end) throw truncated()
  const s = f64Bytes
  s[0] = b[p]!
  s[1] = b[p + 1]!
  s[2] = b[p + 2]!
  s[3] = b[p + 3]!
  s[4] = b[p + 4]!
  s[5] = b[p + 5]!
  s[6] = b[p + 6]!
  s[7] = b[p + 7]!
  pos = p + 8
  return f64[0]!
}

function readU8(): number {
  if (pos >= end) throw truncated()
  return b[pos++]!
}

function skipPadding(): void {
  const pad = (ALIGN - (pos % ALIGN)) % ALIGN
  if (pos + pad > end) throw truncated()
  pos += pad
}

function readAscii(p: number, n: number): string {
  const s = b
  switch (n) {
    case 0:
      return ''
    case 1:
      return fromCharCode(s[p]!)
    case 2:
      return fromCharCode(s[p]!, s[p + 1]!)
    case 3:
      return fromCharCode(s[p]!, s[p + 1]!, s[p + 2]!)
    case 4:
      return fromCharCode(s[p]!, s[p + 1]!, s[p + 2]!, s[p + 3]!)
    case 5:
      return fromCharCode(s[p]!, s[p + 1]!, s[p + 2]!, s[p + 3]!, s[p + 4]!)
    case 6:
      return fromCharCode(s[p]!, s[p + 1]!, s[p + 2]!, s[p + 3]!, s[p + 4]!, s[p + 5]!)
    case 7:
      return fromCharCode(s[p]!, s[p + 1]!, s[p + 2]!, s[p + 3]!, s[p + 4]!, s[p + 5]!, s[p + 6]!)
    case 8:
      return fromCharCode(
        s[p]!,
        s[p + 1]!,
        s[p + 2]!,
        s[p + 3]!,
        s[p + 4]!,
        s[p + 5]!,
        s[p + 6]!,
        s[p + 7]!,
      )
  }
  if (n <= 24) return readAscii(p, 8) + readAscii(p + 8, n - 8)
  return latin1Slice.call(s, p, p + n)
}

/** Reads a string value (with its tag); throws if the next value is not a string. */
function readString(): string {
  const tag = readU8()
  if (tag >= T_FIXSTR && tag < T_FIXINT) {
    const n = tag - T_FIXSTR
    const p = pos
    if (p + n > end) throw truncated()
    pos = p + n
    return readAscii(p, n)
  }
  return readTaggedString(tag)
}

function readTaggedString(tag: number): string {
  const n = readLength(1)
  const p = pos
  pos = p + n
  switch (tag) {
    case T_STR_ASCII:
      return latin1Slice.call(b, p, p + n)
    case T_STR_UTF8:
      return utf8Slice.call(b, p, p + n)
    case T_STR_UTF16:
      if (n % 2 !== 0) throw badSegment('odd UTF-16 length')
      return ucs2Slice.call(b, p, p + n)
  }
  throw badSegment(`expected a string, found tag ${tag}`)
}

function readValue(): unknown {
  const tag = readU8()
  if (tag >= T_FIXINT) return tag - T_FIXINT
  if (tag >= T_FIXSTR) {
    const n = tag - T_FIXSTR
    const p = pos
    if (p + n > end) throw truncated()
    pos = p + n
    return readAscii(p, n)
  }
  switch (tag) {
    case T_UNDEFINED:
      return undefined
    case T_NULL:
      return null
    case T_FALSE:
      return false
    case T_TRUE:
      return true
    case T_INT8: {
      const v = readU8()
      return (v << 24) >> 24
    }
    case T_INT16: {
      if (pos + 2 > end) throw truncated()
      const v = b[pos]! | (b[pos + 1]! << 8)
      pos += 2
      return (v << 16) >> 16
    }
    case T_INT32: {
      if (pos + 4 > end) throw truncated()
      const p = pos
      pos = p + 4
      return b[p]! | (b[p + 1]! << 8) | (b[p + 2]! << 16) | (b[p + 3]! << 24)
    }
    case T_FLOAT64:
      return readF64()
    case T_BIGINT64:
    case T_BIGINT_POS:
    case T_BIGINT_NEG:
      return readBigint(tag)
    case T_STR_ASCII:
    case T_STR_UTF8:
    case T_STR_UTF16:
      return readTaggedString(tag)
    case T_REF: {
      const id = readVarint()
      if (id >= nrefs) throw badSegment(`reference to unknown object #${id}`)
      return refs[id]
    }
  }
  if (++depth > MAX_DEPTH) throw badSegment(`nesting deeper than ${MAX_DEPTH} levels`)
  const value = readObjectLike(tag)
  depth--
  return value
}

function readBigint(tag: number): bigint {
  if (tag === T_BIGINT64) {
    if (pos + 8 > end) throw truncated()
    const s = i64Bytes
    for (let i = 0; i < 8; i++) s[i] = b[pos + i]!
    pos += 8
    return i64[0]!
  }
  const n = readLength(1)
  const p = pos
  pos = p + n
  let magnitude: bigint
  if (n === 0) {
    magnitude = 0n
  } else if (n <= SMALL_BIGINT_BYTES) {
    let hex = '0x'
    for (let i = p + n - 1; i >= p; i--) hex += HEX[b[i]!]!
    magnitude = BigInt(hex)
  } else {
    magnitude = readLargeMagnitude(p, n)
  }
  return tag === T_BIGINT_NEG ? -magnitude : magnitude
}

/**
 * The magnitude stored little-endian in `b[p … p + n)`, parsed from one flat string of its hex
 * digits: memory in proportion to `n` (a string built by appending a byte at a time would be a
 * rope of `n` pieces, dozens of bytes each).
 */
function readLargeMagnitude(p: number, n: number): bigint {
  if (n > MAX_BIGINT_BYTES)
    throw badSegment(`bigint of ${n} bytes (a bigint has at most ${MAX_BIGINT_BYTES})`)
  // "0x" and the digits, most significant byte first, as Latin-1 characters outside the heap.
  const chars = Buffer.allocUnsafeSlow(2 + 2 * n)
  const pairs = new Uint16Array(chars.buffer, chars.byteOffset, 1 + n)
  pairs[0] = HEX_PREFIX_CHARS
  const s = b
  for (let i = 1, q = p + n - 1; q >= p; i++, q--) pairs[i] = HEX_PAIR_CHARS[s[q]!]!
  return BigInt(latin1Slice.call(chars, 0, 2 + 2 * n))
}

function setProperty(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === '__proto__')
    Object.defineProperty(obj, key, { value, writable: true, enumerable: true, configurable: true })
  else obj[key] = value
}

/**
 * Recently decoded short ASCII property keys, by a hash of their bytes. Giving back the same
 * string for the same key saves creating it and lets V8 find it as a property name quickly.
 */
const keyCache: string[] = new Array<string>(KEY_CACHE_SIZE).fill('')

/** Reads a property key: like readString, through keyCache for short ASCII keys. */
function readKey(): string {
  if (pos >= end) throw truncated()
  const tag = b[pos]!
  const n = tag - T_FIXSTR
  if (n < 2 || n > KEY_CACHE_MAX) return readString()
  const p = pos + 1
  if (p + n > end) throw truncated()
  pos = p + n
  const s = b
  let h = n
  for (let i = 0; i < n; i++) h = (h * 31 + s[p + i]!) | 0
  h = (h ^ (h >>> 12)) & (KEY_CACHE_SIZE - 1)
  const cached = keyCache[h]!
  if (cached.length === n) {
    let i = 0
    while (i < n && cached.charCodeAt(i) === s[p + i]) i++
    if (i === n) return cached
  }
  const key = readAscii(p, n)
  keyCache[h] = key
  return key
}

function readProperties(obj: Record<string, unknown>): void {
  const count = readLength(2)
  for (let i = 0; i < count; i++) {
    const key = readKey()
    setProperty(obj, key, readValue())
  }
}

function readObjectLike(tag: number): unknown {
  switch (tag) {
    case T_OBJECT: {
      const obj: Record<string, unknown> = {}
      refs[nrefs++] = obj
      readProperties(obj)
      return obj
    }
    case T_ARRAY: {
      const len = readLength(1)
      const arr = new Array<unknown>(len)
      refs[nrefs++] = arr
      for (let i = 0; i < len; i++) {
        if (pos < end && b[pos] === T_HOLE) {
          pos++
          continue
        }
        arr[i] = readValue()
      }
      readProperties(arr as unknown as Record<string, unknown>)
      return arr
    }
    case T_SPARSE_ARRAY: {
      const len = readVarint()
      if (len > 0xffffffff) throw badSegment('array length out of range')
      const arr = new Array<unknown>(len)
      refs[nrefs++] = arr
      readProperties(arr as unknown as Record<string, unknown>)
      return arr
    }
    case T_MAP: {
      const count = readLength(2)
      const map = new Map<unknown, unknown>()
      refs[nrefs++] = map
      for (let i = 0; i < count; i++) {
        const key = readValue()
        map.set(key, readValue())
      }
      return map
    }
    case T_SET: {
      const count = readLength(1)
      const set = new Set<unknown>()
      refs[nrefs++] = set
      for (let i = 0; i < count; i++) set.add(readValue())
      return set
    }
    case T_DATE: {
      const date = new Date(readF64())
      refs[nrefs++] = date
      return date
    }
    case T_REGEXP: {
      const source = readString()
      const flags = readString()
      const re = new RegExp(source, flags)
      refs[nrefs++] = re
      return re
    }
    case T_ERROR:
      return readError()
    case T_BOXED_NUMBER: {
      const boxed = Object(readF64()) as object
      refs[nrefs++] = boxed
      return boxed
    }
    case T_BOXED_STRING: {
      const boxed = Object(readString()) as object
      refs[nrefs++] = boxed
      return boxed
    }
    case T_BOXED_TRUE:
    case T_BOXED_FALSE: {
      const boxed = Object(tag === T_BOXED_TRUE) as object
      refs[nrefs++] = boxed
      return boxed
    }
    case T_BOXED_BIGINT: {
      const inner = readU8()
      if (inner !== T_BIGINT64 && inner !== T_BIGINT_POS && inner !== T_BIGINT_NEG)
        throw badSegment('boxed bigint without a bigint')
      const boxed = Object(readBigint(inner)) as object
      refs[nrefs++] = boxed
      return boxed
    }
    case T_ARRAY_BUFFER:
      return readArrayBuffer()
    case T_VIEW:
      return readView()
  }
  throw badSegment(`unknown tag 0x${tag.toString(16)}`)
}

/**
 * The setter of the own `stack` accessor that V8 12 (Node 22) and later give every Error; with
 * it, the stack stays an accessor, as in what `v8.deserialize` returns (it sets the formatted
 * stack behind that accessor). Undefined where `stack` is an own data property (Node 20), which
 * `readError` then defines. The accessor pair is one for all error types of a realm, and no user
 * code runs in it.
 */
const stackSetter: ((this: Error, v: unknown) => void) | undefined = (() => {
  const d = Object.getOwnPropertyDescriptor(new Error(), 'stack')
  return d !== undefined && typeof d.set === 'function'
    ? (d.set as (this: Error, v: unknown) => void)
    : undefined
})()

function readError(): Error {
  const ctorIndex = readU8()
  const flags = readU8()
  const Ctor = ERROR_CTORS[ctorIndex]
  if (Ctor === undefined || flags > 7) throw badSegment('bad error header')
  const message = flags & ERROR_HAS_MESSAGE ? readString() : undefined
  const stack = flags & ERROR_HAS_STACK ? readString() : undefined
  // No stack trace is captured (that is slow); the own `stack` property is replaced below.
  let err: Error
  const limit = Error.stackTraceLimit
  try {
    Error.stackTraceLimit = 0
  } catch {}
  try {
    err = new Ctor()
  } finally {
    try {
      Error.stackTraceLimit = limit
    } catch {}
  }
  refs[nrefs++] = err
  const desc = { value: stack as unknown, writable: true, enumerable: false, configurable: true }
  // As v8.deserialize: `stack` keeps the kind of property this V8 gives every Error (an accessor
  // from V8 12 / Node 22 on), only its value is the one sent.
  if (stackSetter !== undefined) stackSetter.call(err, stack)
  else Object.defineProperty(err, 'stack', desc)
  if (message !== undefined) {
    desc.value = message
    Object.defineProperty(err, 'message', desc)
  }
  if (flags & ERROR_HAS_CAUSE) {
    desc.value = readValue()
    Object.defineProperty(err, 'cause', desc)
  }
  return err
}

function readArrayBuffer(): ArrayBuffer {
  const flags = readU8()
  if (flags > 1) throw badSegment('bad ArrayBuffer flags')
  const n = readVarint()
  const sentMax = flags === 1 ? readVarint() : n
  if (sentMax < n) throw badSegment('ArrayBuffer longer than its maximum')
  const max = Math.min(sentMax, Math.max(n, maxResizableBytes))
  skipPadding()
  if (n > end - pos) throw truncated()
  const ab =
    flags === 1
      ? new (ArrayBuffer as ArrayBufferCtorWithOptions)(n, { maxByteLength: max })
      : n >= 4096
        ? Buffer.allocUnsafeSlow(n).buffer
        : new ArrayBuffer(n)
  new Uint8Array(ab, 0, n).set(new Uint8Array(b.buffer, b.byteOffset + pos, n))
  pos += n
  refs[nrefs++] = ab
  return ab as ArrayBuffer
}

function readView(): ArrayBufferView {
  const kind = readU8()
  const Ctor = VIEW_CTORS[kind]
  if (Ctor === undefined) throw badSegment(`unknown binary kind ${kind}`)
  const n = readVarint()
  skipPadding()
  if (n > end - pos) throw truncated()
  const size = ELEMENT_SIZE[kind]!
  if (n % size !== 0) throw badSegment(`${VIEW_NAMES[kind]} of ${n} bytes`)
  const abs = b.byteOffset + pos
  pos += n
  let view: ArrayBufferView
  if (zeroCopy && abs % size === 0) {
    view = kind === K_BUFFER ? Buffer.from(b.buffer, abs, n) : new Ctor(b.buffer, abs, n / size)
  } else if (kind === K_BUFFER) {
    const buf = Buffer.allocUnsafe(n)
    if (n <= 32) for (let i = 0; i < n; i++) buf[i] = b[pos - n + i]!
    else buf.set(new Uint8Array(b.buffer, abs, n))
    view = buf
  } else {
    const ab = n >= 4096 ? Buffer.allocUnsafeSlow(n).buffer : new ArrayBuffer(n)
    new Uint8Array(ab, 0, n).set(new Uint8Array(b.buffer, abs, n))
    view = new Ctor(ab, 0, n / size)
  }
  refs[nrefs++] = view
  return view
}
