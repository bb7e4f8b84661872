import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

import test from 'ava'

import { coreVersion, layoutVersion } from '../index.js'

const repoRoot = fileURLToPath(new URL('..', import.meta.url))
const entry = fileURLToPath(new URL('../index.ts', import.meta.url))

/** `LAYOUT_VERSION` as written in the Rust core's source. */
function layoutVersionFromRustSource(): number {
  const source = readFileSync(new URL('../crates/core/src/lib.rs', import.meta.url), 'utf8')
  const match = /pub\s+const\s+LAYOUT_VERSION\s*:\s*u32\s*=\s*([0-9_]+)(?:u32)?\s*;/.exec(source)
  if (!match?.[1])
    throw new Error('no `pub const LAYOUT_VERSION: u32 = N;` in crates/core/src/lib.rs')
  return Number(match[1].replaceAll('_', ''))
}

/** `version` from the `[workspace.package]` table of the root Cargo.toml. */
function workspaceVersion(): string {
  const manifest = readFileSync(new URL('../Cargo.toml', import.meta.url), 'utf8')
  const table = /^\[workspace\.package\][^\S\n]*\n([\s\S]*?)(?=^\[|(?![\s\S]))/m.exec(manifest)
  const version = table?.[1] && /^version\s*=\s*"([^"]+)"/m.exec(table[1])
  if (!version || !version[1]) throw new Error('no version in [workspace.package] of Cargo.toml')
  return version[1]
}

/** Runs `node --import=tsx` with the given extra arguments in the repo root; resolves with stdout. */
function runNode(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import=tsx', ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (code === 0) resolve(stdout)
      else reject(new Error(`child exited with ${signal ?? code}:\n${stderr}`))
    })
  })
}

test('layoutVersion() is the LAYOUT_VERSION of the Rust core', (t) => {
  const expected = layoutVersionFromRustSource()
  t.true(Number.isInteger(expected) && expected > 0)
  t.is(layoutVersion(), expected)
})

test('coreVersion() is the workspace version from Cargo.toml', (t) => {
  const expected = workspaceVersion()
  t.regex(expected, /^\d+\.\d+\.\d+/)
  t.is(coreVersion(), expected)
})

test('a child process importing the entry as ESM sees the same layoutVersion()', async (t) => {
  const code = [
    `import { layoutVersion } from ${JSON.stringify(pathToFileURL(entry).href)}`,
    'console.log(JSON.stringify(layoutVersion()))',
  ].join('\n')
  const stdout = await runNode(['--input-type=module', '-e', code])
  t.is(JSON.parse(stdout.trim()), layoutVersionFromRustSource())
})

test('a child process requiring the entry from CommonJS sees the same layoutVersion()', async (t) => {
  const code = [
    `const { layoutVersion } = require(${JSON.stringify(entry)})`,
    'console.log(JSON.stringify(layoutVersion()))',
  ].join('\n')
  const stdout = await runNode(['--input-type=commonjs', '-e', code])
  t.is(JSON.parse(stdout.trim()), layoutVersionFromRustSource())
})
