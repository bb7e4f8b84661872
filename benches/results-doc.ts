/**
 * Where the benchmarks put their result tables: `docs/benchmarks.md`, each between its own pair of
 * marker comments (`<!-- key:start -->` … `<!-- key:end -->`). The README only links there, so a
 * benchmark run never rewrites it.
 *
 * @module
 */

import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** The page the benchmarks write into. */
export const BENCHMARKS_DOC = fileURLToPath(new URL('../docs/benchmarks.md', import.meta.url))

/** The section of each benchmark that writes one, by the script that writes it. */
export const BENCHMARK_SECTIONS = {
  'benches/transport.ts': 'transport-bench',
  'benches/pool.ts': 'pool-bench',
  'benches/backing.ts': 'backing-bench',
  'benches/seed003.ts': 'seed003',
  'benches/seed004.ts': 'seed004',
  'benches/get.ts': 'get-bench',
  'benches/get-memory.ts': 'get-memory',
} as const

/** The markers around section `key`. */
export function markers(key: string): { start: string; end: string } {
  return { start: `<!-- ${key}:start -->`, end: `<!-- ${key}:end -->` }
}

/**
 * Replaces the text between section `key`'s markers in `docs/benchmarks.md` with `body`,
 * formatted by prettier as the rest of the repository is (so `npm run format:check` stays clean).
 * Throws if the markers are missing, so a renamed section is noticed instead of skipped.
 */
export async function writeBenchmarkSection(key: string, body: string): Promise<void> {
  const { start, end } = markers(key)
  const text = readFileSync(BENCHMARKS_DOC, 'utf8')
  const i = text.indexOf(start)
  const j = text.indexOf(end)
  if (i < 0 || j < i) throw new Error(`${BENCHMARKS_DOC} has no ${start} … ${end} section`)
  const updated = `${text.slice(0, i + start.length)}\n\n${body.trim()}\n\n${text.slice(j)}`
  const prettier = await import('prettier')
  const options = (await prettier.resolveConfig(BENCHMARKS_DOC)) ?? {}
  writeFileSync(
    BENCHMARKS_DOC,
    await prettier.format(updated, { ...options, filepath: BENCHMARKS_DOC }),
  )
}
