/**
 * The codec's errors: the path to an unsupported value (collected on the way out of the
 * encoder, formatted at the top) and the `ShmpipeError`s that `encode` and `decode` throw.
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
} from '../errors.js'
import { getPrototypeOf } from './intrinsics.js'

/**
 * Thrown inside the encoder for an unsupported value; collects the path on its way out.
 *
 * Containers add raw segments (kind, payload, index) as it passes; formatting them (with a
 * RegExp, JSON.stringify…) waits until the top, where the stack is shallow again: V8 aborts the
 * process if a RegExp has to be compiled when the stack is nearly exhausted.
 */
export class Unsupported {
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

/** Kinds of path segment: what a container was doing when an `Unsupported` passed. */
export const Segment = {
  KEY: 0,
  /** A key of an array: an index or an extra property. */
  ARRAY_KEY: 1,
  MAP_KEY: 2,
  MAP_VALUE: 3,
  SET: 4,
  CAUSE: 5,
  MESSAGE: 6,
} as const

/** Adds a path segment to an `Unsupported` passing through a container; other errors pass. */
export function withSegment(err: unknown, kind: number, payload: unknown, index: number): unknown {
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
      case Segment.KEY:
        path += keySegment(payload as string)
        break
      case Segment.ARRAY_KEY:
        path +=
          typeof payload === 'number' || ARRAY_INDEX.test(payload as string)
            ? `[${payload as string | number}]`
            : keySegment(payload as string)
        break
      case Segment.MAP_KEY:
        path += `.<Map key #${index}>`
        break
      case Segment.MAP_VALUE:
        path += mapValueSegment(payload, index)
        break
      case Segment.SET:
        path += `.<Set element #${index}>`
        break
      case Segment.CAUSE:
        path += '.cause'
        break
      case Segment.MESSAGE:
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

/** What an unsupported value is, for the error message: `function f`, `Proxy`… */
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

/** The error for bytes that are not a valid encoding. */
export function badSegment(what: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_BAD_SEGMENT, `Cannot decode value: ${what}`)
}

export function invalidArgument(message: string): ShmpipeError {
  return new ShmpipeError(ERR_SHMPIPE_INVALID_ARGUMENT, message)
}

function isStackOverflow(err: unknown): boolean {
  return err instanceof RangeError && /call stack/i.test(err.message)
}

/**
 * The error `encode` throws for `err`, thrown while walking a value: an `Unsupported` becomes
 * a `ShmpipeError` naming the value's path, a stack overflow `ERR_SHMPIPE_TOO_LARGE`; anything
 * else (e.g. from a getter) is `err` itself.
 */
export function encodeFailure(err: unknown): unknown {
  if (err instanceof Unsupported) {
    const path = formatPath(err.segments)
    const what = err.what ?? describe(err.value)
    return new ShmpipeError(
      err.code,
      err.code === ERR_SHMPIPE_TOO_LARGE
        ? `Cannot encode ${path}: ${what}`
        : `Cannot encode ${path}: ${what} is not supported`,
    )
  }
  if (isStackOverflow(err))
    return new ShmpipeError(ERR_SHMPIPE_TOO_LARGE, 'Cannot encode value: nested too deeply', {
      cause: err,
    })
  return err
}

/**
 * The error `decode` throws for `err`, thrown while reading: a `ShmpipeError` as it is, a stack
 * overflow `ERR_SHMPIPE_TOO_LARGE`, anything else (e.g. a RangeError from a constructor given a
 * corrupt length, a SyntaxError from a corrupt RegExp) `ERR_SHMPIPE_BAD_SEGMENT`: the input is
 * bad, whatever the details.
 */
export function decodeFailure(err: unknown): ShmpipeError {
  if (err instanceof ShmpipeError) return err
  if (isStackOverflow(err))
    return new ShmpipeError(ERR_SHMPIPE_TOO_LARGE, 'Cannot decode value: nested too deeply', {
      cause: err,
    })
  return new ShmpipeError(
    ERR_SHMPIPE_BAD_SEGMENT,
    `Cannot decode value: ${err instanceof Error ? err.message : String(err)}`,
    { cause: err },
  )
}
