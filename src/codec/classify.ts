/**
 * Classification of the objects the encoder meets: which supported kind an object is, found
 * through its prototype in one table and confirmed by its internal type.
 *
 * @module
 */

import { types } from 'node:util'

import { ERROR_CTORS, VIEW_CTORS, VIEW_NAMES, ViewKind } from './format.js'
import { getPrototypeOf, isView, typedArrayTag } from './intrinsics.js'

/** Kinds of object the codec supports (0: none of them). */
export const Class = {
  PLAIN: 1,
  ARRAY: 2,
  MAP: 3,
  SET: 4,
  DATE: 5,
  REGEXP: 6,
  ERROR: 7,
  NUMBER: 8,
  STRING: 9,
  BOOLEAN: 10,
  BIGINT: 11,
  ARRAY_BUFFER: 12,
  VIEW: 13,
} as const

/** The kind of object each built-in prototype of this realm stands for. */
export const protoClass = new Map<object, number>([
  [Object.prototype, Class.PLAIN],
  [Array.prototype, Class.ARRAY],
  [Map.prototype, Class.MAP],
  [Set.prototype, Class.SET],
  [Date.prototype, Class.DATE],
  [RegExp.prototype, Class.REGEXP],
  [Number.prototype, Class.NUMBER],
  [String.prototype, Class.STRING],
  [Boolean.prototype, Class.BOOLEAN],
  [BigInt.prototype, Class.BIGINT],
  [ArrayBuffer.prototype, Class.ARRAY_BUFFER],
  [DataView.prototype, Class.VIEW],
  ...ERROR_CTORS.map((c) => [c.prototype, Class.ERROR] as [object, number]),
  ...VIEW_CTORS.map((c) => [c.prototype, Class.VIEW] as [object, number]),
])

/**
 * The class of an object whose prototype gave `cls` (0: unknown prototype), checked against
 * its internal type; 0 when it is not something the codec supports. Subclasses of built-ins
 * and objects from other realms are recognised by their internal type, as v8 does.
 */
export function verifyClass(obj: object, cls: number): number {
  switch (cls) {
    case Class.PLAIN:
      return Class.PLAIN
    case Class.VIEW:
      return isView(obj) ? Class.VIEW : 0
    case Class.MAP:
      return types.isMap(obj) ? Class.MAP : 0
    case Class.SET:
      return types.isSet(obj) ? Class.SET : 0
    case Class.DATE:
      return types.isDate(obj) ? Class.DATE : 0
    case Class.REGEXP:
      return types.isRegExp(obj) ? Class.REGEXP : 0
    case Class.ERROR:
      return types.isNativeError(obj) ? Class.ERROR : 0
    case Class.NUMBER:
      return types.isNumberObject(obj) ? Class.NUMBER : 0
    case Class.STRING:
      return types.isStringObject(obj) ? Class.STRING : 0
    case Class.BOOLEAN:
      return types.isBooleanObject(obj) ? Class.BOOLEAN : 0
    case Class.BIGINT:
      return types.isBigIntObject(obj) ? Class.BIGINT : 0
    case Class.ARRAY_BUFFER:
      return types.isArrayBuffer(obj) ? Class.ARRAY_BUFFER : 0
  }
  // Unknown prototype: a subclass of a built-in, a built-in of another realm, or a class
  // instance (which v8 would silently turn into a plain object: rejected here).
  if (types.isProxy(obj)) return 0
  if (Array.isArray(obj)) return Class.ARRAY
  if (isView(obj)) return Class.VIEW
  if (types.isArrayBuffer(obj)) return Class.ARRAY_BUFFER
  if (types.isMap(obj)) return Class.MAP
  if (types.isSet(obj)) return Class.SET
  if (types.isDate(obj)) return Class.DATE
  if (types.isRegExp(obj)) return Class.REGEXP
  if (types.isNativeError(obj)) return Class.ERROR
  if (types.isNumberObject(obj)) return Class.NUMBER
  if (types.isStringObject(obj)) return Class.STRING
  if (types.isBooleanObject(obj)) return Class.BOOLEAN
  if (types.isBigIntObject(obj)) return Class.BIGINT
  // A plain object of another realm: its prototype is that realm's Object.prototype.
  const proto = getPrototypeOf(obj) as { constructor?: unknown } | null
  if (
    proto !== null &&
    getPrototypeOf(proto) === null &&
    typeof proto.constructor === 'function' &&
    proto.constructor.name === 'Object' &&
    Object.prototype.toString.call(obj) === '[object Object]'
  )
    return Class.PLAIN
  return 0
}

/**
 * The kind of a typed array, DataView or Buffer. Like Node's v8 serializer: a Buffer is a
 * view whose constructor is `Buffer`; anything else is known by its typed array name, so a
 * subclass is encoded as its base type.
 */
export function viewKind(v: ArrayBufferView): number {
  if (getPrototypeOf(v) === Buffer.prototype) return ViewKind.BUFFER
  const tag = typedArrayTag.call(v) as string | undefined
  return tag === undefined ? ViewKind.DATAVIEW : VIEW_NAMES.indexOf(tag)
}

/** A Uint8Array over exactly the view's bytes; null if its buffer is detached. */
export function viewBytes(v: ArrayBufferView): Uint8Array | null {
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
