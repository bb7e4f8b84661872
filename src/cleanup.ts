/**
 * The shared-memory segments on this machine, and removal of those whose owner is dead: what
 * `npx shmpipe ls` and `npx shmpipe clean` do, callable from code.
 *
 * Every segment names its creating process (pid and start time, so a recycled pid is not taken
 * for it) and that process owns it. {@link cleanSegments} removes a segment only when its owner
 * is dead and removing it cannot break a live process, and never one whose owner is alive; what
 * it cannot judge it lists and keeps (see {@link SegmentStatus}). Shared arrays are listed too,
 * and removed only when asked for (by name, or `arrays`), since they outlive their creator by
 * design. Other users' segments are kept unless `allUsers` (root can read them all).
 *
 * Platforms: Linux (`/dev/shm`); macOS (a per-user registry of names, since macOS cannot list
 * POSIX shared memory); Windows lists nothing and cleans nothing.
 *
 * @module
 */

import { ShmpipeError } from './errors.js'
import { checkFlag, checkOptions, describe, invalidArgument } from './options.js'
import { call, native } from './native.js'

// One segment record, defined by the native addon (`crates/node/src/cleanup.rs`), whose
// declarations document each field and state.
export type {
  ProcessInfo,
  SegmentBacking,
  SegmentInfo,
  SegmentKind,
  SegmentStatus,
} from '../binding.cjs'
import type { SegmentInfo } from '../binding.cjs'

/** Options of {@link listSegments}. */
export interface ListOptions {
  /**
   * List other users' segments with the state they would have if they were one's own, instead
   * of as `other-user`. Default `false`.
   */
  allUsers?: boolean
}

/** Options of {@link cleanSegments}. */
export interface CleanOptions {
  /**
   * Only consider these segments (by name); the others are left alone whatever their state.
   * Naming a shared array asks for its removal (as `arrays` does).
   */
  names?: readonly string[]
  /**
   * Also remove segments with an invalid header (say, from a creator killed before writing it,
   * or from another layout version), but only those no process has open or mapped, and only
   * where that can be checked (Linux). Default `false`.
   */
  forceInvalid?: boolean
  /** Report what would be removed; remove nothing. Default `false`. */
  dryRun?: boolean
  /**
   * Also judge other users' segments (kept as `other-user` otherwise), and so remove those whose
   * owner is dead. Only root can. Default `false`.
   */
  allUsers?: boolean
  /** Also remove shared arrays that no process has open or mapped. Default `false`. */
  arrays?: boolean
  /**
   * Also remove what live processes may still use: `maybe-in-use` messages (they are lost) and,
   * named or with `arrays`, `array-in-use` arrays. Never a pipe or message whose owner is alive.
   * Default `false`.
   */
  force?: boolean
}

/** What {@link cleanSegments} did. */
export interface CleanReport {
  /** Segments removed (or, with `dryRun`, that would be). */
  readonly removed: SegmentInfo[]
  /** Segments left in place; their `status` says why. */
  readonly kept: SegmentInfo[]
  /** Segments whose removal failed, with the error. */
  readonly failed: { readonly segment: SegmentInfo; readonly error: ShmpipeError }[]
}

/**
 * Every shmpipe segment on this machine (of every user and process, shared arrays included),
 * sorted by name.
 */
export function listSegments(options: ListOptions = {}): SegmentInfo[] {
  const o = checkOptions(options, 'listSegments', ['allUsers'])
  const allUsers = checkFlag(o.allUsers, 'listSegments: allUsers')
  return call(() => native.listSegments({ allUsers }))
}

/**
 * Removes the segments whose owner is dead, and never a pipe or message whose owner is alive
 * (see {@link SegmentStatus} for every case, and {@link CleanOptions} for what else it can be
 * asked to remove). Removing a segment removes its name: processes that still have it mapped
 * keep using it.
 *
 * @throws {ShmpipeError} `ERR_SHMPIPE_INVALID_ARGUMENT` for a malformed name in `names`, an
 * option of another type or an unknown option.
 */
export function cleanSegments(options: CleanOptions = {}): CleanReport {
  const o = checkOptions(options, 'cleanSegments', [
    'names',
    'forceInvalid',
    'dryRun',
    'allUsers',
    'arrays',
    'force',
  ])
  const flag = (key: 'forceInvalid' | 'dryRun' | 'allUsers' | 'arrays' | 'force') =>
    checkFlag(o[key], `cleanSegments: ${key}`)
  const names = o.names
  if (names !== undefined && !(Array.isArray(names) && names.every((n) => typeof n === 'string'))) {
    throw invalidArgument(`cleanSegments: names must be an array of strings, got ${describe(names)}`) // prettier-ignore
  }
  const forceInvalid = flag('forceInvalid')
  const dryRun = flag('dryRun')
  const allUsers = flag('allUsers')
  const arrays = flag('arrays')
  const force = flag('force')
  const result = call(() =>
    native.cleanSegments({
      ...(names === undefined ? {} : { names: [...(names as string[])] }),
      forceInvalid,
      dryRun,
      allUsers,
      arrays,
      force,
    }),
  )
  return {
    removed: result.removed,
    kept: result.kept,
    failed: result.failed.map((f) => ({
      segment: f.segment,
      error: new ShmpipeError(f.code, f.message),
    })),
  }
}
