/**
 * Issue 13, items 8 and 9, with real child processes and real shared memory: the defaults work
 * in a Docker-sized (64 MB) `/dev/shm` and `ERR_SHMPIPE_NO_SPACE` says what it needed, what was
 * free and how to raise the limit; the end of a stream is reported at once, every time, and told
 * to senders and receivers that come late.
 *
 * The small-`/dev/shm` test runs its child in a private mount namespace (`unshare -m`, which
 * needs root: CI runs as root). Where that cannot run, the test fails, unless
 * `SHMPIPE_TEST_ALLOW_SKIP=1` is set, which lets it pass after saying why.
 */

import { execFileSync, spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_NO_SPACE,
  ShmpipeError,
  type Receiver,
} from '../index.js'
import { checkNoSegmentLeaks, repoRoot, spawnNode, startChild } from './helpers/processes.js'
import { cannotRun } from './helpers/skip.js'

checkNoSegmentLeaks(test)

const MiB = 1 << 20

/** Pipes as the pool child reports them, their sizes in whole MiB. */
function wholeMiB(pipes: unknown): { MiB: number; backing: string }[] {
  return (pipes as { size: number; backing: string }[]).map((p) => ({
    MiB: Math.floor(p.size / MiB),
    backing: p.backing,
  }))
}

const streamChild = fileURLToPath(new URL('./helpers/stream-child.ts', import.meta.url))

/** Runs a role of `helpers/stream-child.ts` and returns its first report. */
async function streamRole(t: ExecutionContext, role: string, args: string[]): Promise<unknown> {
  const child = spawnNode(t, ['--import=tsx', streamChild, role, ...args])
  const report = await child.next(30_000)
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  return report
}

/** How long a call takes, and the error it ends with (undefined if it succeeds). */
async function timed(f: () => unknown): Promise<{ ms: number; err: unknown }> {
  const start = performance.now()
  let err: unknown
  try {
    await f()
  } catch (e) {
    err = e
  }
  return { ms: performance.now() - start, err }
}

/**
 * Calls `f` ten times: each must fail with ERR_SHMPIPE_CLOSED, in under 20 ms typically (the
 * median) and never near the 100 ms health slice that each call used to wait (the maximum; a
 * wide margin for a loaded machine).
 */
async function closedAtOnce(t: ExecutionContext, what: string, f: () => unknown): Promise<void> {
  const times: number[] = []
  for (let i = 0; i < 10; i++) {
    const { ms, err } = await timed(f)
    t.true(
      err instanceof ShmpipeError && err.code === ERR_SHMPIPE_CLOSED,
      `${what} #${i}: ${String(err)}`,
    )
    times.push(ms)
  }
  times.sort((a, b) => a - b)
  const median = (times[4]! + times[5]!) / 2
  t.true(median < 20, `${what}: median ${median.toFixed(1)} ms (${times.map((x) => x.toFixed(1))})`)
  t.true(times[9]! < 90, `${what}: slowest ${times[9]!.toFixed(1)} ms`)
}

/**
 * A pipe whose stream a child process fed (`count` values from a sender of its own, which closed
 * as the child exited) and that the receiver has taken to its end (the values, then CLOSED).
 */
async function endedStream(t: ExecutionContext, count: number): Promise<Receiver> {
  const [ownSender, receiver] = createSharedMemoryPair({ bytes: 1 << 20 })
  t.teardown(() => receiver.close())
  const child = startChild(t, 'count', [receiver.name, String(count)])
  t.is(await receiver.get({ timeout: 20_000 }), 0)
  ownSender.close() // the child's sender is attached (its first value arrived)
  for (let i = 1; i < count; i++) t.is(await receiver.get({ timeout: 10_000 }), i)
  t.deepEqual(await child.exited, { code: 0, signal: null })
  const end = await timed(() => receiver.get({ timeout: 10_000 }))
  t.is((end.err as ShmpipeError | undefined)?.code, ERR_SHMPIPE_CLOSED, String(end.err))
  return receiver
}

test('after the end, get() rejects ERR_SHMPIPE_CLOSED at once, every time, whatever the timeout', async (t) => {
  const receiver = await endedStream(t, 3)
  await closedAtOnce(t, 'get()', () => receiver.get())
  // A timeout shorter than the old 100 ms wait: the end, not ERR_SHMPIPE_TIMEOUT.
  await closedAtOnce(t, 'get({ timeout: 50 })', () => receiver.get({ timeout: 50 }))
  await closedAtOnce(t, 'get({ timeout: 0 })', () => receiver.get({ timeout: 0 }))
  await closedAtOnce(t, 'receive()', () => receiver.receive())
  await closedAtOnce(t, 'getSync()', () => receiver.getSync())
  await closedAtOnce(t, 'getSync({ timeout: 50 })', () => receiver.getSync({ timeout: 50 }))
  // The iteration ends at once too.
  const { ms } = await timed(async () => {
    for await (const v of receiver) t.fail(`a value after the end: ${String(v)}`)
  })
  t.true(ms < 90, `for await took ${ms.toFixed(1)} ms`)
})

test('getNowait() tells an ended pipe (ERR_SHMPIPE_CLOSED) from an empty one (undefined)', async (t) => {
  const [ownSender, receiver] = createSharedMemoryPair({ bytes: 1 << 20 })
  t.teardown(() => receiver.close())
  t.is(receiver.getNowait(), undefined) // empty, a sender attached
  const child = startChild(t, 'count', [receiver.name, '3'])
  const got: unknown[] = []
  const deadline = performance.now() + 20_000
  while (got.length < 3 && performance.now() < deadline) {
    const v = receiver.getNowait()
    if (v === undefined) await new Promise((r) => setTimeout(r, 1))
    else {
      got.push(v)
      if (got.length === 1) ownSender.close() // the child's sender is attached
    }
  }
  t.deepEqual(got, [0, 1, 2])
  t.deepEqual(await child.exited, { code: 0, signal: null })
  // Never waited: the first look after the child's sender closed finds the end.
  await closedAtOnce(t, 'getNowait()', () => receiver.getNowait())
})

test('a sender attaching after the end is refused with ERR_SHMPIPE_CLOSED, not left sending into nothing', async (t) => {
  const receiver = await endedStream(t, 2)
  const late = (await streamRole(t, 'late-sender', [receiver.name])) as Record<string, unknown>
  t.like(late, { attached: false, code: ERR_SHMPIPE_CLOSED })
  t.regex(String(late.message), /stream has ended/)
  t.regex(String(late.message), /takes no new sender/)
  await closedAtOnce(t, 'get()', () => receiver.get())
})

test('a sender attaching after the receiver closed is refused, and the error says so', async (t) => {
  const [sender, receiver] = createSharedMemoryPair({ bytes: 1 << 20 })
  t.teardown(() => sender.close())
  await sender.put(1)
  t.is(await receiver.get({ timeout: 10_000 }), 1) // used: its close ends the receiving side
  receiver.close()
  const late = (await streamRole(t, 'late-sender', [sender.name])) as Record<string, unknown>
  t.like(late, { attached: false, code: ERR_SHMPIPE_CLOSED })
  t.regex(String(late.message), /receiver was closed/)
})

test('Receiver.attach after the receiver was closed says that, not "the other side closed"', async (t) => {
  const [sender, receiver] = createSharedMemoryPair({ bytes: 1 << 20 })
  t.teardown(() => sender.close())
  await sender.put(1)
  t.is(await receiver.get({ timeout: 10_000 }), 1)
  receiver.close()
  const again = (await streamRole(t, 'attach-receiver', [sender.name])) as Record<string, unknown>
  t.like(again, { attached: false, code: ERR_SHMPIPE_CLOSED })
  t.regex(String(again.message), /receiver was closed/)
  t.regex(String(again.message), /takes no other receiver/)
  t.notRegex(String(again.message), /other side closed/)
})

// ---------------------------------------------------------------------------------------------
// A 64 MB /dev/shm

/** Why the small-/dev/shm test cannot run here, if it cannot. */
function smallShmUnavailable(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux (a tmpfs /dev/shm)'
  if (process.getuid?.() !== 0) return 'needs root for a private mount namespace (unshare -m)'
  try {
    execFileSync('unshare', ['--version'], { stdio: 'ignore' })
  } catch {
    return 'needs unshare (util-linux)'
  }
  return undefined
}

const unavailable = smallShmUnavailable()

/** The JSON lines a child printed, as objects. */
function jsonLines(stdout: string): Record<string, unknown>[] {
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

/** Runs `command args` in a private mount namespace with a 64 MB tmpfs on /dev/shm. */
function inSmallShm(
  command: string,
  args: string[],
  cwd: string,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = 'mount -t tmpfs -o size=64m tmpfs /dev/shm && exec "$0" "$@"'
  const child = spawn('unshare', ['-m', 'sh', '-c', script, command, ...args], {
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c))
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c))
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

test('in a 64 MB /dev/shm (Docker’s) the defaults work and ERR_SHMPIPE_NO_SPACE says needed, free and --shm-size', async (t) => {
  if (unavailable !== undefined) {
    cannotRun(t, unavailable)
    return
  }
  // The README's quick start, as written, where shmpipe is installed.
  const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8')
  const section = readme.split(/^## /m).find((part) => part.startsWith('Quick start'))
  const code = section && /^```js\n([\s\S]*?)^```$/m.exec(section)?.[1]
  if (!code) return t.fail('README.md has no ```js block under ## Quick start')
  const app = mkdtempSync(join(tmpdir(), 'shmpipe-small-shm-'))
  t.teardown(() => rmSync(app, { recursive: true, force: true }))
  mkdirSync(join(app, 'node_modules'))
  symlinkSync(repoRoot, join(app, 'node_modules', 'shmpipe'))
  writeFileSync(join(app, 'quick-start.mjs'), code)
  const quick = await inSmallShm(process.execPath, ['quick-start.mjs'], app)
  t.is(quick.stdout, 'consumer: 10 frames, the first filled with 0\n', quick.stderr)
  t.is(quick.code, 0, quick.stderr)

  // Two default pipes, small and large values, then requests larger than what is free.
  const run = await inSmallShm(
    process.execPath,
    ['--import=tsx', streamChild, 'defaults'],
    repoRoot,
  )
  t.is(run.code, 0, run.stderr)
  const steps = jsonLines(run.stdout)
  t.deepEqual(
    steps.map((s) => s.step),
    [
      'two pipes',
      'stream of 8 MB values',
      '24 MB values',
      'pipe too big',
      'value too big',
      'after',
      'sealed value larger than /dev/shm',
    ],
    run.stdout + run.stderr,
  )
  for (const s of steps.slice(0, 3)) t.true(s.ok, JSON.stringify(s))
  for (const s of steps.slice(3, 5)) {
    t.is(s.code, ERR_SHMPIPE_NO_SPACE, JSON.stringify(s))
    const message = String(s.message)
    const needed = Number(/(\d+) bytes needed/.exec(message)?.[1])
    const free = Number(/(\d+) bytes free in \/dev\/shm/.exec(message)?.[1])
    t.true(needed > free && free > 0 && free < 64 << 20, message)
    // The free bytes are statfs's, as the child read them right after the failure.
    t.is(free, Number(s.freeAfter), message)
    t.regex(message, /docker run --shm-size/)
  }
  t.true(Number(/(\d+) bytes needed/.exec(String(steps[3]!.message))?.[1]) > 128 << 20)
  t.is(steps[5]!.value, 'after') // the failed put sent nothing: the pipe carries on
  t.true(steps[6]!.ok, JSON.stringify(steps[6])) // 96 MB through a 64 MB /dev/shm
})

test('in a 64 MB /dev/shm a default pool keeps 8 MiB pipes in sealed memory, which /dev/shm does not bound', async (t) => {
  if (unavailable !== undefined) return cannotRun(t, unavailable)
  const run = await inSmallShm(process.execPath, ['--import=tsx', streamChild, 'pool'], repoRoot)
  t.is(run.code, 0, run.stderr)
  const steps = jsonLines(run.stdout)
  t.is(steps[0]!.step, 'started', run.stdout + run.stderr)
  // 16 pipes of 8 MiB (and a page of header): twice the whole /dev/shm, none of it there.
  t.deepEqual(
    wholeMiB(steps[0]!.pipes),
    Array.from({ length: 16 }, () => ({ MiB: 8, backing: 'memfd' })),
  )
  t.true(steps[1]!.ok, '16 tasks came back right')
})

test('in a 64 MB /dev/shm a default pool of 8 workers runs, and a result with no room fails ERR_SHMPIPE_NO_SPACE', async (t) => {
  if (unavailable !== undefined) return cannotRun(t, unavailable)
  // The named backing: a result larger than /dev/shm has no room there (a sealed pipe carries
  // it, as the test above shows for a value).
  const args = ['--import=tsx', streamChild, 'pool', 'shm']
  const run = await inSmallShm(process.execPath, args, repoRoot)
  t.is(run.code, 0, run.stderr)
  const steps = jsonLines(run.stdout)
  t.deepEqual(
    steps.map((s) => s.step),
    ['started', '16 tasks', 'result too big', 'after'],
    run.stdout + run.stderr,
  )
  t.is(steps[0]!.workers, 8)
  // Two named pipes per worker, halved until they take a quarter of /dev/shm: 1 MiB each.
  t.deepEqual(
    wholeMiB(steps[0]!.pipes),
    Array.from({ length: 16 }, () => ({ MiB: 1, backing: 'shm' })),
  )
  t.true(steps[1]!.ok, '16 tasks came back right')
  t.is(steps[2]!.code, ERR_SHMPIPE_NO_SPACE, JSON.stringify(steps[2]))
  t.regex(
    String(steps[2]!.message),
    /task 'filled' returned a value that shared memory has no room for/,
  )
  t.true(steps[3]!.ok, 'the pool carries on')
})
