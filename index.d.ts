/**
 * shmpipe: shared-memory message pipes for Node.js, backed by a Rust core.
 *
 * The declarations of the public API. The classes and functions are declared (with their doc
 * comments) in the modules they come from; this file names what the package exports.
 *
 * @module
 */

export { createSharedMemoryPair, ReceivedMessage, Receiver, Sender } from './src/pipe.js'
export type { PipeOptions, WaitOptions } from './src/pipe.js'
export { SharedArray } from './src/shared-array.js'
export type {
  ArrayOf,
  DType,
  DTypeArrays,
  DTypeConstructors,
  LockInfo,
  LockOptions,
  Shape,
  SharedTypedArray,
  SharedTypedArrayConstructor,
  WithLockOptions,
} from './src/shared-array.js'
export { SharedMemoryManager, withSharedMemory } from './src/manager.js'
export { decode, encode } from './src/codec.js'
export type { DecodeOptions, Encoded } from './src/codec.js'
export { ProcessPool } from './src/pool/process-pool.js'
export type {
  MapOptions,
  ProcessPoolOptions,
  RunOptions,
  TaskArgs,
  TaskFunction,
  TaskModule,
  TaskName,
  TaskResult,
} from './src/pool/options.js'
export { cleanSegments, listSegments } from './src/cleanup.js'
export type {
  CleanOptions,
  CleanReport,
  SegmentInfo,
  SegmentKind,
  SegmentStatus,
} from './src/cleanup.js'
export * from './src/errors.js'

/**
 * Version of the shared-memory layout implemented by the native core.
 *
 * Processes can only share a segment when they agree on this number; it changes
 * whenever any structure stored in shared memory changes.
 */
export declare function layoutVersion(): number

/**
 * Version of the native core (the Rust crates' version), e.g. `"0.1.0"`.
 */
export declare function coreVersion(): string
