/**
 * The codec's format: its version, tags, flags and the built-in types it stores by index. The
 * layout of each tag's payload is stated next to the tag; `src/codec.ts` describes the whole.
 *
 * @module
 */

/** Version of the encoding written by `encode`; `decode` rejects any other. */
export const FORMAT_VERSION = 1

/**
 * Deepest nesting of containers (objects, arrays, maps, sets, error causes…) that `encode`
 * accepts and `decode` reads. `v8.serialize` manages about 3,000 levels with Node's default
 * stack; this codec's frames are larger, and 1,000 leaves room for a caller that is itself deep.
 * (Should the stack run out anyway, the error is a `ShmpipeError` `ERR_SHMPIPE_TOO_LARGE`.)
 */
export const MAX_DEPTH = 1000

/** The tag byte that starts each value. */
export const Tag = {
  UNDEFINED: 0x00,
  NULL: 0x01,
  FALSE: 0x02,
  TRUE: 0x03,
  /** Only inside a dense array: a hole. */
  HOLE: 0x04,
  INT8: 0x05,
  INT16: 0x06,
  INT32: 0x07,
  FLOAT64: 0x08,
  /** A bigint in [-2^63, 2^63): 8 bytes, two's complement. */
  BIGINT64: 0x09,
  /** A larger bigint: varint byte count, magnitude bytes (little-endian). */
  BIGINT_POS: 0x0a,
  BIGINT_NEG: 0x0b,
  /** varint length, bytes that are all below 0x80. */
  STR_ASCII: 0x0c,
  /** varint length, UTF-8 bytes. */
  STR_UTF8: 0x0d,
  /** varint length in bytes, UTF-16LE code units (strings with lone surrogates). */
  STR_UTF16: 0x0e,
  /** varint count, count × (key string, value). */
  OBJECT: 0x10,
  /** varint length, length × value (HOLE for holes), varint count, count × (key string, value). */
  ARRAY: 0x11,
  /** varint length, varint count, count × (key string, value). */
  SPARSE_ARRAY: 0x12,
  /** varint count, count × (key, value). */
  MAP: 0x13,
  /** varint count, count × value. */
  SET: 0x14,
  /** float64 time value. */
  DATE: 0x15,
  /** source string, flags string. */
  REGEXP: 0x16,
  /** u8 constructor index ({@link ERROR_CTORS}), u8 {@link ErrorFlag}s, [message string], [stack string], [cause value]. */
  ERROR: 0x17,
  BOXED_NUMBER: 0x18,
  BOXED_STRING: 0x19,
  BOXED_TRUE: 0x1a,
  BOXED_FALSE: 0x1b,
  BOXED_BIGINT: 0x1c,
  /** u8 flags (1: resizable), varint byteLength, [varint maxByteLength], padding, bytes. */
  ARRAY_BUFFER: 0x1d,
  /** u8 view kind ({@link VIEW_CTORS}), varint byteLength, padding, bytes. */
  VIEW: 0x1e,
  /** varint id of an object met earlier. */
  REF: 0x1f,
  /** `FIXSTR | n`: an ASCII string of n ≤ {@link FIXSTR_MAX} bytes, which follow. */
  FIXSTR: 0x40,
  /** `FIXINT | n`: the integer n, 0 ≤ n < 128. */
  FIXINT: 0x80,
} as const

/** The longest string a {@link Tag.FIXSTR} tag holds. */
export const FIXSTR_MAX = 0x3f

/** The flags byte after {@link Tag.ERROR}: which parts follow. */
export const ErrorFlag = {
  HAS_MESSAGE: 1,
  HAS_STACK: 2,
  HAS_CAUSE: 4,
} as const

/** Binary payloads start at a multiple of this many bytes from the start of the encoding. */
export const ALIGN = 8

/** View kinds that are not typed arrays: their indices in {@link VIEW_CTORS}. */
export const ViewKind = {
  DATAVIEW: 11,
  BUFFER: 12,
} as const

export type ViewCtor = {
  new (buffer: ArrayBufferLike, byteOffset: number, length: number): ArrayBufferView
}

/** Binary view constructors, by the view kind stored after {@link Tag.VIEW}. */
export const VIEW_CTORS: readonly ViewCtor[] = [
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
export const VIEW_NAMES = VIEW_CTORS.map((c) => c.name)
/** Bytes per element of each view kind. */
export const ELEMENT_SIZE = [1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8, 1, 1]

/**
 * Error constructors, by the index stored after {@link Tag.ERROR} (the same ones v8 keeps). The
 * pool revives workers' errors with them too.
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
export const ERROR_NAMES = ERROR_CTORS.map((c) => c.name)

/** Bytes of `n` as an unsigned LEB128 varint. */
export function varintSize(n: number): number {
  let size = 1
  while (n >= 0x80) {
    n = Math.floor(n / 128)
    size++
  }
  return size
}
