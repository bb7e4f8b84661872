/**
 * Encoding's entries: {@link encode}, its results (which write themselves into a target), and
 * the internal ways the pipe writes them ({@link writeEncoded}, {@link viewParts}).
 *
 * @module
 */

import { ERR_SHMPIPE_UNSUPPORTED_TYPE, ShmpipeError } from '../errors.js'
import { viewBytes, viewKind } from './classify.js'
import { encodeFailure, invalidArgument } from './failures.js'
import { ALIGN, FORMAT_VERSION, Tag, VIEW_NAMES, varintSize } from './format.js'
import { isView, latin1Write, ucs2Write, utf8Write } from './intrinsics.js'
import { Writer, type Chunk } from './writer.js'

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

const writer = new Writer()

/**
 * Encodes `value` with `w` into its scratch; returns the result, which owns the scratch until
 * the next encoding. With `reuse` (a result whose bytes were lost), fills that one in again, or
 * throws if the value no longer has its size.
 */
function encodeWith(w: Writer, value: unknown, reuse: EncodedValue | null): EncodedValue {
  w.release()
  w.busy = true
  try {
    w.write(value)
    const structLen = w.pos
    const byteLength = structLen + w.extra
    const chunks = w.chunks
    let result: EncodedValue
    if (reuse !== null) {
      if (reuse.byteLength !== byteLength)
        throw invalidArgument(
          `writeTo(): the value changed size since encode() (${reuse.byteLength} bytes, now ${byteLength})`,
        )
      result = reuse
      result.buf = w.buf
      result.structLen = structLen
      result.chunks = chunks
    } else {
      result = new EncodedValue(w, byteLength, structLen, w.buf, chunks, value)
    }
    w.owner = result
    return result
  } catch (err) {
    throw encodeFailure(err)
  } finally {
    w.reset()
    w.busy = false
  }
}

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
 * lone binary value's, and binary parts of at least `DEFER_BYTES` bytes) are copied by
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

  /**
   * The encoding's own bytes (without its deferred chunks), encoded again if a later encode
   * took them; throws if a binary chunk changed size since `encode`.
   */
  structBytes(): Uint8Array {
    if (this.buf === null) {
      // Lost its bytes to a later encode: encode again (the same size, or it throws).
      if (this.w.busy) this.w = new Writer()
      encodeWith(this.w, this.value, this)
    }
    const buf = this.buf!
    const n = this.structLen
    for (const c of this.chunks ?? []) {
      if (c.bytes !== null && c.bytes.byteLength !== c.byteLength)
        throw invalidArgument(
          'writeTo(): a binary value changed size since encode() (was its ArrayBuffer detached or resized?)',
        )
    }
    return buf === this.w.buf ? this.w.view(n) : new Uint8Array(buf.buffer, buf.byteOffset, n)
  }

  writeTo(target: Uint8Array, copy: CopyBytes = setBytes): void {
    checkTarget(target, this.byteLength)
    const src = this.structBytes()
    const n = this.structLen
    const chunks = this.chunks
    if (chunks === null) {
      target.set(src)
    } else {
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
    c.stringTag === Tag.STR_UTF16
      ? ucs2Write.call(target, s, at, c.byteLength)
      : c.stringTag === Tag.STR_ASCII
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
    target[1] = Tag.VIEW
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

/**
 * For an encoding whose deferred chunks are all binary (no long strings): its own bytes and,
 * for each chunk, where in them it goes (`at`, as in {@link Chunk}) and its bytes, so that a
 * sender can copy everything straight into place (the encoding is `bytes[0, at[0])`, `parts[0]`,
 * `bytes[at[0], at[1])`, `parts[1]`, …, then the rest of `bytes`). Otherwise returns null (use
 * `writeTo`). Throws as `writeTo` does if a binary value changed size since `encode`.
 *
 * @internal Not part of the package's API.
 */
export function gatheredParts(
  enc: Encoded,
): { bytes: Uint8Array; at: number[]; parts: Uint8Array[] } | null {
  if (!(enc instanceof EncodedValue) || enc.chunks === null) return null
  const at: number[] = []
  const parts: Uint8Array[] = []
  for (const c of enc.chunks) {
    if (c.bytes === null) return null
    at.push(c.at)
    parts.push(c.bytes)
  }
  const bytes = enc.structBytes()
  enc.written = true
  return { bytes, at, parts }
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
 * deeper than `MAX_DEPTH`; exceptions thrown by getters pass through. Nothing is written
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
  return encodeWith(w, value, null)
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
