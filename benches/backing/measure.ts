/**
 * What the backing benchmark's parts share: the two backings, a row of measurements (one value
 * per round and backing), and the rule that runs them interleaved: each round runs both
 * backings, one right after the other, the first of them alternating from round to round, so
 * that the machine's busy moments fall on both alike.
 *
 * @module
 */

import type { Backing } from '../../index.js'

/** The backings compared, the old one first. */
export const BACKINGS: readonly Backing[] = ['shm', 'memfd']

/** One measurement of both backings: a value per round of each (lower is better). */
export interface Row {
  /** What was measured, e.g. `round trip, 100 B`. */
  name: string
  /** The unit of the values, e.g. `µs`. */
  unit: string
  values: Record<Backing, number[]>
}

/** An empty row. */
export function row(name: string, unit: string): Row {
  return { name, unit, values: { shm: [], memfd: [] } }
}

/**
 * Runs `rounds` rounds of `measure` for each backing, interleaved (shm then memfd in even rounds,
 * memfd then shm in odd ones), and records each result in `into`.
 */
export async function interleave(
  rounds: number,
  into: Row,
  measure: (backing: Backing) => Promise<number> | number,
): Promise<void> {
  for (let r = 0; r < rounds; r++) {
    const order = r % 2 === 0 ? BACKINGS : [...BACKINGS].reverse()
    for (const backing of order) into.values[backing].push(await measure(backing))
  }
}

/** The median of `xs`. */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Throws unless `actual` is `expected`: a pipe or pool that is not on the backing under test. */
export function checkBacking(what: string, actual: string, expected: Backing): void {
  if (actual !== expected) throw new Error(`${what}: backing ${actual}, expected ${expected}`)
}
