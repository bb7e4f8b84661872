import { spawn } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

import test from 'ava'

import { coreVersion, layoutVersion } from '../index.js'
import { native } from '../src/native.js'

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

test('copyIntoShared copies every byte at any offset, like memmove when the ranges overlap', (t) => {
  // 64 KiB and more take the streaming path on x86-64; odd offsets and lengths test its edges.
  for (const len of [0, 1, 100, 65_536, 200_003]) {
    for (const offset of [0, 3, 16, 77]) {
      const source = Uint8Array.from({ length: len }, (_, i) => (i * 7 + 1) & 0xff)
      const target = new Uint8Array(offset + len + 5).fill(0xee)
      native.copyIntoShared(target, offset, source)
      t.deepEqual(target.subarray(offset, offset + len), source, `len ${len}, offset ${offset}`)
      t.true(target.subarray(0, offset).every((b) => b === 0xee))
      t.true(target.subarray(offset + len).every((b) => b === 0xee))
    }
  }
  const whole = Uint8Array.from({ length: 300_000 }, (_, i) => i & 0xff)
  const expected = whole.slice()
  expected.copyWithin(1000, 0, 200_000)
  native.copyIntoShared(whole, 1000, whole.subarray(0, 200_000))
  t.deepEqual(whole, expected)
})

test('copyIntoShared rejects a range outside the target and writes nothing', (t) => {
  const target = new Uint8Array(10)
  for (const offset of [8, -1, 0.5, Number.NaN])
    t.throws(() => native.copyIntoShared(target, offset, new Uint8Array(3).fill(1)), {
      message: /^ERR_SHMPIPE_INVALID_ARGUMENT/,
    })
  t.true(target.every((b) => b === 0))
})
