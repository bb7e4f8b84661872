/**
 * shmpipe: shared-memory message pipes for Node.js, backed by a Rust core.
 *
 * The public entry: everything the package exports is exported here, from small modules under
 * `src/`: `pipe` (Sender, Receiver, createSharedMemoryPair), `shared-array` (SharedArray),
 * `manager` (SharedMemoryManager, withSharedMemory), `pool/` (ProcessPool), `codec` (the value
 * encoding), `errors` (ShmpipeError and its codes), `cleanup` (listing and removing segments of
 * dead owners). Behind them: `lifecycle` (every exit and signal cleanup), `native` (the addon),
 * `options` (argument checks).
 *
 * `index.d.ts` is generated from this file (`scripts/index-dts.mjs`, run by `npm run build:js`);
 * `npm run lint` fails when the committed one differs.
 *
 * @module
 */

import { native } from './src/native.js'

export { createSharedMemoryPair, ReceivedMessage, Receiver, Sender } from './src/pipe.js'
export type { Backing, PipeOptions, WaitOptions } from './src/pipe.js'
export { SharedArray } from './src/shared-array.js'
export type {
  ArrayOf,
  DType,
  DTypeArrays,
  DTypeConstructors,
  LockInfo,
  LockOptions,
  Shape,
  SharedArrayOptions,
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
  ListOptions,
  ProcessInfo,
  SegmentBacking,
  SegmentInfo,
  SegmentKind,
  SegmentStatus,
} from './src/cleanup.js'
export * from './src/errors.js'

/**
 * Version of the shared-memory layout implemented by the native core.
 *
 * Processes can only share a segment when they agree on this number; it changes whenever any
 * structure stored in shared memory changes.
 */
export function layoutVersion(): number {
  return native.layoutVersion()
}

/** Version of the native core (the Rust crates' version), e.g. `"0.1.0"`. */
export function coreVersion(): string {
  return native.coreVersion()
}
