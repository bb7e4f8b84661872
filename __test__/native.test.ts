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

test('writeReserved copies every byte at any offset into the reservation the receiver then gets', (t) => {
  // A 64 MiB ring: copies of 64 KiB and more stream past the cache on x86-64 (its footprint is
  // more than half of any last-level cache up to 128 MiB); odd offsets and lengths test the edges.
  const queue = native.NativeQueue.create(8, 64 << 20, 1)
  const producer = queue.producer()
  const consumer = queue.consumer()
  try {
    for (const len of [1, 100, 65_536, 200_003]) {
      for (const offset of [0, 3, 16, 77]) {
        const source = Uint8Array.from({ length: len }, (_, i) => (i * 7 + offset) & 0xff)
        const reserved = producer.tryReserve(offset + len + 5)
        if (reserved === null) throw new Error('the ring is full')
        new Uint8Array(reserved).fill(0xee)
        producer.writeReserved(offset, source)
        producer.commit(reserved)
        const got = consumer.tryRecv()
        if (got === null) throw new Error('no message')
        t.deepEqual(
          new Uint8Array(got.subarray(offset, offset + len)),
          source,
          `${len} @ ${offset}`,
        )
        t.true(got.subarray(0, offset).every((b) => b === 0xee))
        t.true(got.subarray(offset + len).every((b) => b === 0xee))
      }
    }
  } finally {
    producer.close()
    consumer.close()
    queue.close()
  }
})

test('writeReserved rejects a range outside the reservation, or none open, and writes nothing', (t) => {
  const queue = native.NativeQueue.create(8, 1 << 20, 1)
  const producer = queue.producer()
  const consumer = queue.consumer()
  try {
    const invalid = { code: 'ERR_SHMPIPE_INVALID_ARGUMENT' }
    t.throws(() => producer.writeReserved(0, new Uint8Array(1)), invalid)
    const reserved = producer.tryReserve(10)
    if (reserved === null) throw new Error('the ring is full')
    new Uint8Array(reserved).fill(0)
    for (const offset of [8, -1, 0.5, Number.NaN])
      t.throws(() => producer.writeReserved(offset, new Uint8Array(3).fill(1)), invalid)
    t.throws(() => producer.writeReserved(0, new Uint8Array(reserved, 2, 3)), {
      message: /overlaps the reservation/,
    })
    producer.commit(reserved)
    t.deepEqual([...consumer.tryRecv()!], new Array(10).fill(0))
  } finally {
    producer.close()
    consumer.close()
    queue.close()
  }
})

test('producerTrySendGathered lays out parts where the offsets say, and rejects bad offsets without sending', (t) => {
  const queue = native.NativeQueue.create(8, 1 << 20, 1)
  const producer = queue.producer()
  const consumer = queue.consumer()
  const handle = producer.handle()
  try {
    const invalid = { code: 'ERR_SHMPIPE_INVALID_ARGUMENT' }
    const bytes = Uint8Array.of(1, 2, 3, 4, 5)
    const parts = [Uint8Array.of(10, 11), Uint8Array.of(20)]
    // Out of order, past scratchLen, fewer offsets than parts, scratchLen past the bytes.
    t.throws(() => native.producerTrySendGathered(handle, bytes, 5, [3, 1], parts), invalid)
    t.throws(() => native.producerTrySendGathered(handle, bytes, 5, [1, 6], parts), invalid)
    t.throws(() => native.producerTrySendGathered(handle, bytes, 5, [1], parts), invalid)
    t.throws(() => native.producerTrySendGathered(handle, bytes, 6, [1, 3], parts), invalid)
    t.is(consumer.tryRecv(), null, 'nothing was sent')
    t.true(native.producerTrySendGathered(handle, bytes, 5, [1, 3], parts))
    t.deepEqual([...consumer.tryRecv()!], [1, 10, 11, 2, 3, 20, 4, 5])
    // Parts at the very start and end, and the same offset twice.
    t.true(native.producerTrySendGathered(handle, bytes, 5, [0, 5], parts))
    t.deepEqual([...consumer.tryRecv()!], [10, 11, 1, 2, 3, 4, 5, 20])
    t.true(native.producerTrySendGathered(handle, bytes, 5, [2, 2], parts))
    t.deepEqual([...consumer.tryRecv()!], [1, 2, 10, 11, 20, 3, 4, 5])
  } finally {
    producer.close()
    consumer.close()
    queue.close()
  }
})
