/**
 * The README's set-up commands: the first one installs, builds and runs the quick start, whose
 * code is the README's own Quick start block (`examples/quick-start.mjs`), run here as a real
 * producer and consumer process.
 */

import { execFile } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'

import test from 'ava'

import { repoRoot } from './helpers/processes.js'

const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
const scripts = (
  JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as {
    scripts: Record<string, string>
  }
).scripts

test('the README opens with the install-build-demo command and npm test', (t) => {
  const first = /^```sh\n([\s\S]*?)^```$/m.exec(readme)?.[1] ?? ''
  const commands = first
    .split('\n')
    .map((l) => l.replace(/#.*/, '').trim())
    .filter(Boolean)
  t.deepEqual(commands, ['npm ci && npm run build && npm run demo', 'npm test'])
  t.is(scripts.demo, 'node examples/quick-start.mjs')
})

test('npm run demo runs the README’s Quick start block as written, in two processes', async (t) => {
  const section = readme.split(/^## /m).find((part) => part.startsWith('Quick start'))
  const block = section && /^```js\n([\s\S]*?)^```$/m.exec(section)?.[1]
  t.is(readFileSync(join(repoRoot, 'examples', 'quick-start.mjs'), 'utf8'), block ?? '')
  const { stdout } = await promisify(execFile)(process.execPath, ['examples/quick-start.mjs'], {
    cwd: repoRoot,
    timeout: 60_000,
  })
  t.is(stdout, 'consumer: 10 frames, the first filled with 0\n')
})
