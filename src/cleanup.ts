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

import { type ShmpipeError } from './errors.js'
import { checkFlag, checkOptions, describe, invalidArgument } from './options.js'
import { call, native, translateError, type NativeSegmentRecord } from './native.js'

/** What a segment holds. */
export type SegmentKind = 'queue' | 'blob' | 'array'

/**
 * A segment's state, and so what {@link cleanSegments} does with it:
 *
 * - `owner-alive`: its creator is running. Kept.
 * - `creating`: being created (not ready yet, creator running). Kept.
 * - `owner-dead`: a pipe (or array) whose creator has exited. Removed, as the creator's normal
 *   exit would have done: processes still using it keep their mapping; new attaches fail.
 * - `abandoned-blob`: a message's own segment whose sender died before sending it. Removed.
 * - `undeliverable-blob`: a sent message's own segment whose sender died and that no live
 *   process can receive any more. Removed.
 * - `maybe-in-use`: a sent message's own segment whose sender died, which a live receiver may
 *   still take (or this cannot be told, e.g. on macOS or for lack of permission); `mayBeUsedBy`
 *   names the processes that may. Kept, unless `force` (the message is lost).
 * - `other-pid-namespace`: made in another PID namespace (another container sharing
 *   `/dev/shm`): its pid means nothing here; or made by a version that did not record the
 *   namespace, and no such process runs here. Kept.
 * - `invalid`: not a valid header of this version. Kept, unless `forceInvalid` and no process
 *   holds it open or mapped.
 * - `unreadable`: cannot be read. Kept.
 * - `array`: a shared array that no process has open or mapped (its creator may be dead: arrays
 *   outlive it by design). Kept, unless named in `names` or `arrays`.
 * - `array-in-use`: a shared array that live processes have open or mapped (`mayBeUsedBy`), or
 *   where that cannot be told (macOS). Kept, unless named or `arrays`, and `force`: the processes
 *   keep their mapping, but nobody can attach to the name any more.
 * - `other-user`: owned by another user than this process's (e.g. when run as root), in any
 *   state (but `other-pid-namespace`). Kept, unless `allUsers`, which judges it as one's own.
 */
export type SegmentStatus =
  | 'owner-alive'
  | 'creating'
  | 'owner-dead'
  | 'abandoned-blob'
  | 'undeliverable-blob'
  | 'maybe-in-use'
  | 'other-pid-namespace'
  | 'invalid'
  | 'unreadable'
  | 'array'
  | 'array-in-use'
  | 'other-user'

/** A live process, as named in the reasons a segment is kept. */
export interface ProcessInfo {
  /** Its pid. */
  readonly pid: number
  /** Its command name (Linux: `/proc/<pid>/comm`); `null` where it cannot be read. */
  readonly command: string | null
}

/** One shared-memory segment found on this machine. */
export interface SegmentInfo {
  /** Its name (a pipe's name is the name of its queue segment; an array's is `shmpipe_a_<name>`). */
  readonly name: string
  /** What it holds; `null` when its header is not valid. */
  readonly kind: SegmentKind | null
  /** Bytes of shared memory it occupies. */
  readonly size: number
  /** The pid of the process that created (and owns) it; `null` when the header does not say. */
  readonly ownerPid: number | null
  /** Whether that process is still running. */
  readonly owner: 'alive' | 'dead' | 'unknown'
  /** Its state; see {@link SegmentStatus}. */
  readonly status: SegmentStatus
  /**
   * The state in words, with the processes that keep it, e.g. `owner dead, maybe in use: a
   * receiver may be alive (pid 4242 (node))` or `other user (uid 65534)`.
   */
  readonly detail: string
  /** Whether {@link cleanSegments} removes it (with the options used, for its reports). */
  readonly removable: boolean
  /** The shared-memory layout version in its header; `null` if the header is not shmpipe's. */
  readonly layoutVersion: number | null
  /** Whether its creator finished creating it; `null` when the header does not say. */
  readonly ready: boolean | null
  /** The user owning it; `null` where the platform does not say. */
  readonly uid: number | null
  /** Pids of the processes that have it open or mapped; `null` where that cannot be told. */
  readonly heldBy: readonly number[] | null
  /**
   * When it was created, in milliseconds since 1970 (its age is `Date.now() - createdAt`);
   * `null` where unknown (macOS).
   */
  readonly createdAt: number | null
  /**
   * The live processes that may still use it, for a segment kept because of them: for
   * `maybe-in-use`, those that could receive the message (they hold a pipe, or could not be
   * inspected); for `array-in-use`, those that have the array open or mapped. Empty otherwise.
   */
  readonly mayBeUsedBy: readonly ProcessInfo[]
}

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

function info(r: NativeSegmentRecord): SegmentInfo {
  return {
    name: r.name,
    kind: (r.kind ?? null) as SegmentKind | null,
    size: r.size,
    ownerPid: r.ownerPid ?? null,
    owner: r.owner as SegmentInfo['owner'],
    status: r.status as SegmentStatus,
    detail: r.detail,
    removable: r.removable,
    layoutVersion: r.layoutVersion ?? null,
    ready: r.ready ?? null,
    uid: r.uid ?? null,
    heldBy: r.heldBy ?? null,
    createdAt: r.createdAt ?? null,
    mayBeUsedBy: r.mayBeUsedBy.map((p) => ({ pid: p.pid, command: p.command ?? null })),
  }
}

/**
 * Every shmpipe segment on this machine (of every user and process, shared arrays included),
 * sorted by name.
 */
export function listSegments(options: ListOptions = {}): SegmentInfo[] {
  const o = checkOptions(options, 'listSegments', ['allUsers'])
  const allUsers = checkFlag(o.allUsers, 'listSegments: allUsers')
  return call(() => native.listSegments({ allUsers })).map(info)
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
    removed: result.removed.map(info),
    kept: result.kept.map(info),
    failed: result.failed.map((f) => ({
      segment: info(f.segment),
      error: translateError(new Error(f.error)) as ShmpipeError,
    })),
  }
}
