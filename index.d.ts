/**
 * shmpipe: shared-memory message pipes for Node.js, backed by a Rust core.
 *
 * @module
 */

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
