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
 * follow); below `0x40` the types listed by `Tag` (`src/codec/format.ts`). Lengths and counts are unsigned
 * LEB128 varints (a string's length may be written in a fixed, padded width). Numbers are
 * little-endian. Binary payloads are preceded by zero padding up to the next multiple of 8 bytes
 * from the start of the encoding. Every object-like value gets an id in the order it is first
 * met; meeting it again writes `Tag.REF id`, so shared and circular references keep their shape.
 * The encoding must be exactly as long as its value: trailing bytes are an error.
 *
 * The code is in `src/codec/`: `format.ts` (the tags and constants), `intrinsics.ts` (built-ins
 * captured at load), `classify.ts` (which kind of object a value is), `failures.ts` (errors and
 * paths), `writer.ts` (the encoder's walk), `encode.ts` (encoding's entries) and `decode.ts`
 * (the decoder). The pipe's own entries, `decodePrefix` and `viewParts`, are tagged internal and
 * not re-exported here (the shipped declarations leave them out): the pipe imports them from
 * their modules.
 *
 * @module
 */

export { decode, type DecodeOptions } from './codec/decode.js'
export {
  encode,
  MAX_VIEW_HEADER,
  writeEncoded,
  type CopyBytes,
  type Encoded,
} from './codec/encode.js'
export { ERROR_CTORS, FORMAT_VERSION, MAX_DEPTH } from './codec/format.js'
