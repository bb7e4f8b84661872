/**
 * The decoder: reads an encoding back into values, checking every length against the input so
 * that it never reads outside it.
 *
 * Its state is module state: decoding runs no user code, so it is never re-entered.
 *
 * @module
 */

import type { ShmpipeError } from '../errors.js'
import { badSegment, decodeFailure, invalidArgument } from './failures.js'
import {
  ALIGN,
  ELEMENT_SIZE,
  ERROR_CTORS,
  ErrorFlag,
  FORMAT_VERSION,
  MAX_DEPTH,
  Tag,
  VIEW_CTORS,
  VIEW_NAMES,
  ViewKind,
} from './format.js'
import {
  fromCharCode,
  latin1Slice,
  ucs2Slice,
  utf8Slice,
  type ArrayBufferCtorWithOptions,
} from './intrinsics.js'

/*
 * The tags as constants of this module: the decoder compares every tag it reads against a chain
 * of them, and V8 reads a module's own constant faster than a property of an imported object.
 */
const {
  ARRAY: T_ARRAY,
  ARRAY_BUFFER: T_ARRAY_BUFFER,
  BIGINT64: T_BIGINT64,
  BIGINT_NEG: T_BIGINT_NEG,
  BIGINT_POS: T_BIGINT_POS,
  BOXED_BIGINT: T_BOXED_BIGINT,
  BOXED_FALSE: T_BOXED_FALSE,
  BOXED_NUMBER: T_BOXED_NUMBER,
  BOXED_STRING: T_BOXED_STRING,
  BOXED_TRUE: T_BOXED_TRUE,
  DATE: T_DATE,
  ERROR: T_ERROR,
  FALSE: T_FALSE,
  FIXINT: T_FIXINT,
  FIXSTR: T_FIXSTR,
  FLOAT64: T_FLOAT64,
  HOLE: T_HOLE,
  INT16: T_INT16,
  INT32: T_INT32,
  INT8: T_INT8,
  MAP: T_MAP,
  NULL: T_NULL,
  OBJECT: T_OBJECT,
  REF: T_REF,
  REGEXP: T_REGEXP,
  SET: T_SET,
  SPARSE_ARRAY: T_SPARSE_ARRAY,
  STR_ASCII: T_STR_ASCII,
  STR_UTF16: T_STR_UTF16,
  STR_UTF8: T_STR_UTF8,
  TRUE: T_TRUE,
  UNDEFINED: T_UNDEFINED,
  VIEW: T_VIEW,
} = Tag

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
    throw decodeFailure(err)
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
  const message = flags & ErrorFlag.HAS_MESSAGE ? readString() : undefined
  const stack = flags & ErrorFlag.HAS_STACK ? readString() : undefined
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
  if (flags & ErrorFlag.HAS_CAUSE) {
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
    view =
      kind === ViewKind.BUFFER ? Buffer.from(b.buffer, abs, n) : new Ctor(b.buffer, abs, n / size)
  } else if (kind === ViewKind.BUFFER) {
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
