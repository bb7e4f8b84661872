/**
 * Built-in functions and accessors, captured once when the codec loads: a value being encoded
 * cannot reach the codec's own calls by overriding a method, and the calls skip a lookup.
 *
 * @module
 */

export const ObjectProto = Object.prototype
export const ArrayProto = Array.prototype
export const getPrototypeOf = Object.getPrototypeOf
export const objectKeys = Object.keys
export const isView = ArrayBuffer.isView
export const hasOwn = Object.prototype.hasOwnProperty
export const fromCharCode = String.fromCharCode
export const mapEntries = Map.prototype.entries
export const setValues = Set.prototype.values
export const mapSize = Object.getOwnPropertyDescriptor(Map.prototype, 'size')!.get!
export const setSize = Object.getOwnPropertyDescriptor(Set.prototype, 'size')!.get!
export const dateGetTime = Date.prototype.getTime
export const numberValueOf = Number.prototype.valueOf
export const stringValueOf = String.prototype.valueOf
export const booleanValueOf = Boolean.prototype.valueOf
export const bigintValueOf = BigInt.prototype.valueOf
const typedArrayProto = getPrototypeOf(Uint8Array.prototype) as object
export const typedArrayTag = Object.getOwnPropertyDescriptor(
  typedArrayProto,
  Symbol.toStringTag,
)!.get!
export const abByteLength = Object.getOwnPropertyDescriptor(
  ArrayBuffer.prototype,
  'byteLength',
)!.get!

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
export const utf8Write = BufferProto.utf8Write
export const latin1Write = BufferProto.latin1Write
export const ucs2Write = BufferProto.ucs2Write
export const latin1Slice = BufferProto.latin1Slice
export const utf8Slice = BufferProto.utf8Slice
export const ucs2Slice = BufferProto.ucs2Slice

/** Resizable `ArrayBuffer` members (ES2024; present in Node 20). */
export type ResizableArrayBuffer = ArrayBuffer & {
  readonly resizable: boolean
  readonly maxByteLength: number
}
export type ArrayBufferCtorWithOptions = new (
  length: number,
  options?: { maxByteLength: number },
) => ArrayBuffer
