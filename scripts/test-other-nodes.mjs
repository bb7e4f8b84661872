#!/usr/bin/env node
/**
 * Runs ava test files under other Node versions than the one running this script: the Node
 * binaries listed in `SHMPIPE_TEST_NODES` (separated like `PATH`, as `scripts/ci-nodes.sh` prints
 * them). `.ci/run` uses it after `npm test`, which has built the addon and `dist/` (the addon is
 * Node-API, so one build serves every Node version).
 *
 * Usage: node scripts/test-other-nodes.mjs [test files…]
 *
 * Without files, it runs the files that depend most on the Node version: the codec (compared with
 * this Node's own `v8.serialize`/`v8.deserialize`), the pipe, shared arrays, the loader and the
 * addon's exports, moved zero-copy views (`ArrayBuffer.prototype.transfer`, on by default from
 * Node 22) and huge timeouts (`trust-native`), about 50 s per version here. (The whole ava suite
 * takes about 80 s per version; the install test already makes its round trips under each of
 * these Nodes.)
 *
 * A Node version that ava cannot run on (ava 7: `^20.19 || ^22.20 || ^24.12 || >=25`, read from
 * ava's package.json; Node 20.4.0 fails to parse ava's own code) is skipped with a note; the
 * install test covers it. Exits with 1 if any run failed.
 */

import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { delimiter, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const avaDir = join(root, 'node_modules', 'ava')
const avaCli = join(avaDir, 'entrypoints', 'cli.mjs')
const avaRange = JSON.parse(readFileSync(join(avaDir, 'package.json'), 'utf8')).engines.node

const DEFAULT_FILES = [
  '__test__/codec.test.ts',
  '__test__/codec-random.test.ts',
  '__test__/codec-api.test.ts',
  '__test__/codec-corrupt.test.ts',
  '__test__/pipe.test.ts',
  '__test__/pipe-waits.test.ts',
  '__test__/pipe-memory.test.ts',
  '__test__/shared-array.test.ts',
  '__test__/distribution.test.ts',
  '__test__/native.test.ts',
  '__test__/trust-native.test.ts',
]

/**
 * Whether `version` (e.g. `22.23.3`) satisfies `range`, for the forms ava's `engines` uses:
 * alternatives separated by `||`, each `^X[.Y[.Z]]` or `>=X[.Y[.Z]]`. Other forms throw, so a
 * new ava with another kind of range is noticed instead of misread.
 */
function satisfies(version, range) {
  const v = version.split('.').map(Number)
  const atLeast = (min) => {
    for (let i = 0; i < 3; i++) if ((v[i] ?? 0) !== (min[i] ?? 0)) return v[i] > (min[i] ?? 0)
    return true
  }
  return range.split('||').some((alternative) => {
    const m = /^\s*(\^|>=)\s*(\d+(?:\.\d+){0,2})\s*$/.exec(alternative)
    if (!m) throw new Error(`cannot read the version range "${alternative.trim()}" of ava`)
    const min = m[2].split('.').map(Number)
    return atLeast(min) && (m[1] === '>=' || v[0] === min[0])
  })
}

const files = process.argv.length > 2 ? process.argv.slice(2) : DEFAULT_FILES
const nodes = (process.env.SHMPIPE_TEST_NODES ?? '').split(delimiter).filter(Boolean)
if (nodes.length === 0) {
  console.log('test-other-nodes: SHMPIPE_TEST_NODES lists no Node binary; nothing to run')
  process.exit(0)
}

const results = []
for (const node of nodes) {
  const version = execFileSync(node, ['--version'], { encoding: 'utf8' }).trim()
  if (!satisfies(version.replace(/^v/, ''), avaRange)) {
    console.log(
      `\ntest-other-nodes: skipping Node ${version}: ava needs ${avaRange} ` +
        '(the install test runs its round trips and the quick start on it instead)',
    )
    results.push(`${version} skipped`)
    continue
  }
  console.log(`\ntest-other-nodes: Node ${version}: ava ${files.join(' ')}`)
  // Children started by the tests as `node` (and ava's workers, from process.execPath) are this
  // version too.
  const env = { ...process.env, PATH: `${dirname(node)}${delimiter}${process.env.PATH ?? ''}` }
  const run = spawnSync(node, [avaCli, ...files], { cwd: root, env, stdio: 'inherit' })
  const ok = run.status === 0
  results.push(`${version} ${ok ? 'ok' : `FAILED (${run.signal ?? run.status})`}`)
}
console.log(`\ntest-other-nodes: ${results.join(', ')}`)
process.exit(results.some((r) => r.includes('FAILED')) ? 1 : 0)
