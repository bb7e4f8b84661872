/**
 * Tests of the process pool (ProcessPool) with real worker processes and real shared memory.
 * The tasks live in `helpers/pool-tasks.ts`.
 *
 * Every test checks that it left no segment of this process or of its workers in /dev/shm (the
 * workers' pids are collected while the test runs), and pools are terminated at the end of a test
 * that did not close its own.
 */

import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, relative } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_TASK_FAILED,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ERR_SHMPIPE_WORKER_DIED,
  ERR_SHMPIPE_WORKER_START_FAILED,
  ProcessPool,
  ShmpipeError,
  type ProcessPoolOptions,
  type ShmpipeErrorCode,
} from '../index.js'
import type * as Tasks from './helpers/pool-tasks.js'
import {
  checkNoSegmentLeaks,
  childPids,
  entry,
  repoRoot,
  shmSegments,
  spawnNode,
} from './helpers/processes.js'
import { catalogue, difference, TYPED_ARRAYS, v8RoundTrip } from './helpers/values.js'

const tasksPath = fileURLToPath(new URL('./helpers/pool-tasks.ts', import.meta.url))
const tasksUrl = pathToFileURL(tasksPath)
const MiB = 1024 * 1024

checkNoSegmentLeaks(test)

/** Whether process `pid` exists (a zombie counts: it is not reaped yet). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/**
 * A pool of the test tasks, terminated when the test ends (if it did not close it). Its workers'
 * pids go to the leak check while the test runs.
 */
function makePool(
  t: ExecutionContext,
  options: Partial<ProcessPoolOptions> = {},
): ProcessPool<typeof Tasks> {
  const pool = new ProcessPool<typeof Tasks>({ module: tasksUrl, workers: 2, ...options })
  const note = (): void => {
    for (const pid of pool.pids) childPids.add(pid)
  }
  note()
  const timer = setInterval(note, 10)
  t.teardown(async () => {
    clearInterval(timer)
    note()
    await pool.terminate()
  })
  return pool
}

/** Awaits `promise`, which must reject with a ShmpipeError of `code`; returns it. */
async function rejectsWith(
  t: ExecutionContext,
  promise: Promise<unknown>,
  code: ShmpipeErrorCode,
  message?: RegExp,
): Promise<ShmpipeError> {
  const err = await t.throwsAsync(promise, { instanceOf: ShmpipeError })
  t.is(err?.code, code, err?.message)
  if (message !== undefined) t.regex(err?.message ?? '', message)
  return err as ShmpipeError
}

/** Resolves once `condition()` holds, polling (fails the test after `ms`). */
async function until(t: ExecutionContext, condition: () => boolean, what: string, ms = 10_000) {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) {
      t.fail(`timed out waiting for ${what}`)
      return
    }
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** A typed array of `C` with `n` varied elements, at an offset inside a larger buffer. */
function sample(C: (typeof TYPED_ARRAYS)[number], n: number): ArrayBufferView & { length: number } {
  const size = C.BYTES_PER_ELEMENT
  const bytes = new Uint8Array((n + 3) * size)
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + (i >> 9) + n) & 0xff
  return new C(bytes.buffer, size, n)
}

// ---------------------------------------------------------------------------------------------
// Values

test('typed arrays of every kind, Buffers, DataViews and nested values come back equal', async (t) => {
  // 1 MiB pipes: values up to ~512 KiB are copied through the ring, larger ones travel in a
  // segment of their own; both ways are covered.
  const pool = makePool(t, { workers: 1, pipeBytes: MiB })
  for (const n of [0, 1, 1000, 200_000]) {
    for (const C of TYPED_ARRAYS) {
      const x = sample(C, n)
      const [y] = (await pool.submit('echo', x)) as [typeof x]
      t.is(difference(y, v8RoundTrip(x)), null, `${C.name} × ${n}`)
      t.is(y.constructor, C)
      t.not(y, x)
    }
  }
  const buf = Buffer.from('a Buffer stays a Buffer')
  const dv = new DataView(new ArrayBuffer(24), 8, 8)
  dv.setFloat64(0, Math.PI)
  const nested = {
    a: [1, 'two', 3n, null, undefined, new Date(1_700_000_000_000)],
    m: new Map<unknown, unknown>([['k', new Int16Array([1, -2, 3])]]),
    s: new Set([new Uint8Array([7, 8])]),
    deep: { buf, dv, big: new Float32Array(300_000).fill(1.5) },
  }
  const shared = new Float64Array([1, 2])
  const withRefs = { a: shared, b: shared }
  const out = await pool.submit('echo', nested, withRefs, 'text', 42)
  t.is(difference(out, v8RoundTrip([nested, withRefs, 'text', 42])), null)
  const [, refs] = out as [unknown, { a: Float64Array; b: Float64Array }]
  t.is(refs.a, refs.b, 'a value met twice comes back as one object')
  t.true(Buffer.isBuffer((out as [typeof nested])[0].deep.buf))

  // Every type of the codec's catalogue, one task each.
  let n = 0
  for (const [name, value] of catalogue()) {
    const [y] = (await pool.submit('echo', value)) as [unknown]
    t.is(difference(y, v8RoundTrip(value)), null, name)
    n++
  }
  t.log(`${n} catalogue values`)
})

test('a big Float64Array through a ring and through segments of their own', async (t) => {
  const x = new Float64Array(3_000_000) // 24 MB
  for (let i = 0; i < x.length; i++) x[i] = i
  const check = (y: Float64Array, what: string): void => {
    t.is(y.length, x.length, what)
    let bad = -1
    for (let i = 0; i < y.length; i++) if (y[i] !== i + 1) ((bad = i), (i = y.length))
    t.is(bad, -1, `${what}: first wrong element`)
  }
  const ring = makePool(t, { workers: 1, pipeBytes: 64 * MiB })
  const blobs = makePool(t, { workers: 1, pipeBytes: MiB })
  for (let k = 0; k < 3; k++) {
    check(await ring.submit('addOne', x), `ring, task ${k}`)
    check(await blobs.submit('addOne', x), `segments, task ${k}`)
  }
  t.is(x[0], 0, 'the argument is unchanged')
})

test('results belong to the caller: later tasks, a closed pool and task-side changes do not touch them', async (t) => {
  for (const pipeBytes of [64 * MiB, MiB]) {
    const pool = makePool(t, { workers: 1, pipeBytes })
    const n = 1_000_000 // 8 MB: inline in the 64 MiB ring, a segment of its own with 1 MiB
    const first = await pool.submit('filled', n, 1)
    const later = await Promise.all([1, 2, 3, 4].map((v) => pool.submit('filled', n, v + 1)))
    t.deepEqual(
      later.map((y) => y[n - 1]),
      [2, 3, 4, 5],
    )
    const x = new Float64Array([1, 2, 3])
    const mutated = await pool.submit('mutate', x)
    t.deepEqual([...x], [1, 2, 3], 'the caller’s argument is not changed by the task')
    t.deepEqual([...mutated], [99, 2, 3], 'the task’s change comes back in the result')
    await pool.close()
    // The pool's shared memory is gone; the results are intact.
    t.is(first.length, n)
    t.true(
      first.every((v) => v === 1),
      `pipeBytes ${pipeBytes}: the first result is still all 1`,
    )
    t.true(later[3]!.every((v) => v === 5))
    first[0] = 7 // writable, like any array the caller owns
    t.is(first[0], 7)
  }
})

test('arguments are views valid during the task; copyArguments gives the task its own', async (t) => {
  const x = new Float64Array([5, 6, 7])
  const views = makePool(t, { workers: 1 })
  t.is(await views.submit('keep', x), 3)
  t.deepEqual(
    await views.submit('kept0'),
    [0, undefined],
    'kept past the task: detached (empty), never other data',
  )
  const copies = makePool(t, { workers: 1, copyArguments: true })
  t.is(await copies.submit('keep', x), 3)
  t.deepEqual(await copies.submit('kept0'), [3, 5], 'a copy of its own stays')
})

test('unsupported arguments are rejected before anything is sent, whether a worker is idle or not', async (t) => {
  const pool = makePool(t, { workers: 1 })
  t.is(await pool.submit('count'), 1)
  await rejectsWith(t, pool.run('echo', [{ f: () => 1 }]), ERR_SHMPIPE_UNSUPPORTED_TYPE, /args\[0\]\.f/) // prettier-ignore
  const busy = pool.submit('sleep', 100)
  await rejectsWith(t, pool.run('echo', [1, Symbol('s')]), ERR_SHMPIPE_UNSUPPORTED_TYPE, /args\[1\]/) // prettier-ignore
  t.is(pool.queued, 0, 'nothing was queued')
  await busy
  t.is(await pool.submit('count'), 2, 'the worker ran no task in between')
  await rejectsWith(t, pool.run(42 as never, []), ERR_SHMPIPE_INVALID_ARGUMENT)
  await rejectsWith(t, pool.run('echo', 'x' as never), ERR_SHMPIPE_INVALID_ARGUMENT)
})

// ---------------------------------------------------------------------------------------------
// Scheduling

test('many tasks across the workers all complete, and every worker takes some', async (t) => {
  const pool = makePool(t, { workers: 3 })
  const results = await Promise.all(Array.from({ length: 60 }, () => pool.submit('sleep', 15)))
  t.is(results.length, 60)
  const pids = new Set(results.map((r) => r.pid))
  t.deepEqual([...pids].sort(), [...pool.pids].sort(), 'the three workers, and only they')
  t.false(pids.has(process.pid))
  // No worker ran two tasks at once: its tasks' time spans do not overlap.
  for (const pid of pids) {
    const spans = results.filter((r) => r.pid === pid).sort((a, b) => a.start - b.start)
    for (let i = 1; i < spans.length; i++) t.true(spans[i]!.start >= spans[i - 1]!.end)
  }
  t.is(pool.running, 0)
  t.is(pool.queued, 0)
})

test('map: results in order, at most `concurrency` at once, from an async iterable too', async (t) => {
  const pool = makePool(t, { workers: 3 })
  await pool.ready() // all three take tasks: only `concurrency` limits how many run at once
  const items = Array.from({ length: 12 }, (_, i) => i)
  // Later items finish sooner: the order must come from the items, not from completion.
  const out = await pool.map('double', items)
  t.deepEqual(out, items.map((i) => i * 2)) // prettier-ignore
  async function* gen(): AsyncGenerator<number> {
    for (let i = 0; i < 8; i++) yield 30
  }
  const spans = await pool.map('sleep', gen(), { concurrency: 2 })
  t.is(spans.length, 8)
  // The most tasks running at once (an end and a start in the same millisecond do not overlap).
  const events = spans.flatMap((s) => [[s.start, 1] as const, [s.end, -1] as const])
  events.sort((a, b) => a[0] - b[0] || a[1] - b[1])
  let now = 0
  let most = 0
  for (const [, d] of events) most = Math.max(most, (now += d))
  t.is(most, 2, 'two at once, never three')
  await rejectsWith(t, pool.map('double', [1], { concurrency: 0 }), ERR_SHMPIPE_INVALID_ARGUMENT)
})

test('map: the first failure rejects the call, and no further items are taken', async (t) => {
  const pool = makePool(t, { workers: 2 })
  let taken = 0
  function* items(): Generator<number> {
    for (let i = 0; i < 100; i++) {
      taken++
      yield i === 3 ? -1 : i
    }
  }
  const err = await rejectsWith(t, pool.map('double', items(), { concurrency: 1 }), ERR_SHMPIPE_TASK_FAILED, /negative: -1/) // prettier-ignore
  t.true((err.cause as Error) instanceof RangeError)
  t.is(taken, 4, 'items after the failing one were not taken')
  t.deepEqual(await pool.map('double', [1, 2]), [2, 4], 'the pool still serves')
})

// ---------------------------------------------------------------------------------------------
// Errors

test('a task that throws rejects with the worker’s error; the worker stays', async (t) => {
  const pool = makePool(t, { workers: 1 })
  const pid = await pool.submit('pid')
  const err = await rejectsWith(t, pool.submit('fail', 'bad input'), ERR_SHMPIPE_TASK_FAILED, /task 'fail' failed in worker \d+: TypeError: bad input/) // prettier-ignore
  const cause = err.cause as TypeError & { code?: string }
  t.true(cause instanceof TypeError)
  t.is(cause.message, 'bad input')
  t.is(cause.code, 'E_TASK')
  t.true(cause.stack!.includes('pool-tasks.ts'), cause.stack)
  t.true(cause.stack!.includes(`at fail`), 'the stack is the worker’s')

  const later = await rejectsWith(t, pool.submit('failLater', 'async'), ERR_SHMPIPE_TASK_FAILED, /Error: async/) // prettier-ignore
  t.true((later.cause as Error).cause instanceof RangeError, 'the cause’s cause')
  t.is(((later.cause as Error).cause as Error).message, 'the cause')

  const thrown = await rejectsWith(t, pool.submit('throwValue', 'just a string'), ERR_SHMPIPE_TASK_FAILED, /threw just a string/) // prettier-ignore
  t.is(thrown.cause, 'just a string')
  const obj = await rejectsWith(t, pool.submit('throwValue', { n: 1 }), ERR_SHMPIPE_TASK_FAILED)
  t.deepEqual(obj.cause, { n: 1 })

  await rejectsWith(t, pool.submit('nope' as never), ERR_SHMPIPE_INVALID_ARGUMENT, /no export named 'nope'/) // prettier-ignore
  await rejectsWith(t, pool.submit('notATask' as never), ERR_SHMPIPE_INVALID_ARGUMENT, /as a number/) // prettier-ignore
  await rejectsWith(t, pool.submit('unsupported'), ERR_SHMPIPE_UNSUPPORTED_TYPE, /result\.fn/)
  t.is(await pool.submit('pid'), pid, 'the same worker served every task')
})

test('a worker killed mid-task fails that task with WORKER_DIED; a new worker serves the queue', async (t) => {
  const pool = makePool(t, { workers: 1 })
  const first = await pool.submit('pid')
  const hung = pool.submit('hang')
  const queued = [pool.submit('pid'), pool.submit('double', 21)]
  await until(t, () => pool.running === 1, 'the task to start')
  t.is(pool.queued, 2)
  process.kill(first, 'SIGKILL')
  await rejectsWith(t, hung, ERR_SHMPIPE_WORKER_DIED, new RegExp(`worker ${first} running task 'hang' was killed by SIGKILL`)) // prettier-ignore
  const [second, doubled] = await Promise.all(queued)
  t.not(second, first, 'a new worker')
  t.is(doubled, 42)
  t.deepEqual(pool.pids, [second])
  t.false(alive(first))

  // A worker that exits by itself mid-task.
  await rejectsWith(t, pool.submit('exit', 3), ERR_SHMPIPE_WORKER_DIED, /exited with code 3/)
  t.is(await pool.submit('double', 1), 2, 'still serving')
})

test('a worker killed while another runs a task leaves that task alone', async (t) => {
  const pool = makePool(t, { workers: 2 })
  const dir = mkdtempSync(join(tmpdir(), 'shmpipe-pool-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const slowFile = join(dir, 'slow')
  const slow = pool.submit('sleep', 600, slowFile)
  const hung = pool.submit('hang')
  await until(t, () => existsSync(slowFile) && pool.running === 2, 'both tasks to start')
  const slowPid = Number(readFileSync(slowFile, 'utf8'))
  const [other] = pool.pids.filter((pid) => pid !== slowPid)
  t.truthy(other)
  process.kill(other!, 'SIGKILL')
  await rejectsWith(t, hung, ERR_SHMPIPE_WORKER_DIED, new RegExp(`worker ${other} running task 'hang'`)) // prettier-ignore
  const done = await slow
  t.is(done.pid, slowPid, 'the other task completed in its worker')
  t.true(done.end - done.start >= 590)
  await until(t, () => pool.pids.length === 2, 'the replacement')
  t.true(pool.pids.includes(slowPid))
  t.false(pool.pids.includes(other!))
})

test('an aborted task: dropped if queued, its worker killed and replaced if running', async (t) => {
  const pool = makePool(t, { workers: 1 })
  const pid = await pool.submit('pid')
  const running = new AbortController()
  const queued = new AbortController()
  const hung = pool.run('hang', [], { signal: running.signal })
  const waiting = pool.run('double', [1], { signal: queued.signal })
  const after = pool.submit('double', 2)
  await until(t, () => pool.running === 1, 'the task to start')
  queued.abort(new Error('changed my mind'))
  await t.throwsAsync(waiting, { message: 'changed my mind' })
  t.is(pool.queued, 1)
  running.abort()
  const reason = await hung.then(
    () => null,
    (e: unknown) => e,
  )
  t.is((reason as Error | null)?.name, 'AbortError', 'the signal’s reason')
  t.is(await after, 4, 'the next task ran in the replacement')
  t.not(await pool.submit('pid'), pid)
  t.false(alive(pid))
  const early = await pool.run('pid', [], { signal: AbortSignal.abort() }).catch((e: unknown) => e)
  t.is((early as Error).name, 'AbortError', 'an aborted signal rejects at once')
})

// ---------------------------------------------------------------------------------------------
// Life cycle

test('close() waits for running and queued tasks, then no worker runs and no segment is left', async (t) => {
  const before = shmSegments()
  const pool = makePool(t, { workers: 2, pipeBytes: MiB })
  const pids = [...pool.pids]
  t.is(pids.length, 2)
  const segments = (): string[] =>
    [...shmSegments()]
      .filter(([name, pid]) => !before.has(name) && (pid === process.pid || pids.includes(pid)))
      .map(([name]) => name)
  await until(t, () => segments().length === 4, 'the four pipes')
  const tasks = Array.from({ length: 5 }, (_, i) => pool.submit('double', i, 50))
  const closing = pool.close()
  t.is(pool.close(), closing, 'the same promise')
  await rejectsWith(t, pool.submit('pid'), ERR_SHMPIPE_CLOSED)
  t.deepEqual(await Promise.all(tasks), [0, 2, 4, 6, 8], 'every submitted task completed')
  await closing
  t.deepEqual(pool.pids, [])
  t.deepEqual(pids.filter(alive), [], 'no worker left')
  t.deepEqual(segments(), [], 'no segment left')
})

test('await using closes the pool; terminate() fails pending tasks at once', async (t) => {
  let pids: number[] = []
  {
    await using pool = new ProcessPool<typeof Tasks>({ module: tasksPath, workers: 1 })
    pids = pool.pids
    for (const pid of pids) childPids.add(pid)
    t.is(await pool.submit('double', 4), 8)
  }
  t.deepEqual(pids.filter(alive), [], 'closed at the end of the block')

  const pool = makePool(t, { workers: 1 })
  const worker = await pool.submit('pid')
  const hung = pool.submit('hang')
  const queued = pool.submit('pid')
  await until(t, () => pool.running === 1, 'the task to start')
  await pool.terminate()
  await rejectsWith(t, hung, ERR_SHMPIPE_CLOSED, /terminated/)
  await rejectsWith(t, queued, ERR_SHMPIPE_CLOSED, /terminated/)
  t.false(alive(worker))
  await rejectsWith(t, pool.submit('pid'), ERR_SHMPIPE_CLOSED)
})

test('the module: a path relative to the current directory, a file URL, a CommonJS module', async (t) => {
  const rel = makePool(t, { module: relative(process.cwd(), tasksPath), workers: 1 })
  t.is(await rel.submit('double', 5), 10)
  const cjs = new ProcessPool<{ triple: (x: number) => number }>({
    module: new URL('./helpers/pool-tasks.cjs', import.meta.url).href,
    workers: 1,
  })
  for (const pid of cjs.pids) childPids.add(pid)
  t.is(await cjs.submit('triple', 5), 15)
  await cjs.close()
  t.throws(() => new ProcessPool({ module: join(repoRoot, 'no-such-module.ts') }), {
    instanceOf: ShmpipeError,
    message: /does not exist/,
  })
  t.throws(() => new ProcessPool({ module: 'https://example.com/tasks.js' }), {
    instanceOf: ShmpipeError,
    message: /file: URL/,
  })
  t.throws(() => new ProcessPool({ module: tasksPath, workers: 0 }), {
    instanceOf: ShmpipeError,
    message: /workers must be a whole number/,
  })
})

test('a module that fails to load rejects every task with WORKER_START_FAILED', async (t) => {
  const pool = makePool(t, {
    module: new URL('./helpers/pool-broken.ts', import.meta.url),
    workers: 2,
  })
  const err = await rejectsWith(t, pool.submit('pid'), ERR_SHMPIPE_WORKER_START_FAILED, /fails to load on purpose/) // prettier-ignore
  t.true(err.cause instanceof SyntaxError)
  t.true((err.cause as Error).stack!.includes('pool-broken.ts'))
  await rejectsWith(t, pool.submit('pid'), ERR_SHMPIPE_WORKER_START_FAILED)
  await rejectsWith(t, pool.ready(), ERR_SHMPIPE_WORKER_START_FAILED)
  await pool.close()
  t.deepEqual(pool.pids, [])
})

test('an idle pool does not keep the process alive; at exit its workers and pipes go', async (t) => {
  // The child makes a pool, runs a task, and neither closes it nor exits explicitly.
  const script = `
    import { ProcessPool } from ${JSON.stringify(pathToFileURL(entry).href)}
    const pool = new ProcessPool({ module: ${JSON.stringify(tasksPath)}, workers: 2 })
    const doubled = await pool.submit('double', 21)
    console.log(JSON.stringify({ doubled, pids: pool.pids }))
  `
  const start = Date.now()
  const child = spawnNode(t, ['--import=tsx', '--input-type=module', '-e', script])
  const report = (await child.next()) as { doubled: number; pids: number[] }
  for (const pid of report.pids) childPids.add(pid)
  t.is(report.doubled, 42)
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.true(Date.now() - start < 20_000)
  await until(t, () => report.pids.every((pid) => !alive(pid)), 'the workers to end')
  const left = [...shmSegments()].filter(([, pid]) => pid === child.process.pid)
  t.deepEqual(left, [], 'the child removed its pipes at exit')
})

test('the worker entry runs under plain node only through the pool (usage message otherwise)', (t) => {
  const worker = fileURLToPath(new URL('../src/pool/pool-worker.ts', import.meta.url))
  const out = spawnSync(process.execPath, ['--import=tsx', worker], { cwd: repoRoot, encoding: 'utf8' }) // prettier-ignore
  t.is(out.status, 2)
  t.regex(out.stderr, /usage: pool-worker/)
})
