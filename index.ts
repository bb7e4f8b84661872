/**
 * shmpipe: shared-memory message pipes for Node.js, backed by a Rust core.
 *
 * This is the public entry. Its API is described by the hand-written `index.d.ts`;
 * `__test__/public-api.types.ts` makes `tsc` fail if the two disagree.
 *
 * @module
 */

import { native } from './src/native.js'

/**
 * Version of the shared-memory layout implemented by the native core.
 *
 * Processes can only share a segment when they agree on this number.
 */
export function layoutVersion(): number {
  return native.layoutVersion()
}

/** Version of the native core (the Rust crates' version), e.g. `"0.1.0"`. */
export function coreVersion(): string {
  return native.coreVersion()
}
