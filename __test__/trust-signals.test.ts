/**
 * Processes that end abruptly, with real processes and real shared memory:
 * - a process pool's workers end soon after the pool's process is killed (SIGKILL, or SIGINT to
 *   that process alone), even in the middle of a long synchronous task;
 * - a task module that cannot be used rejects `ready()` and `submit()` with a clear error,
 *   whatever the worker count and the module's format, and never lets the program exit with
 *   those promises unsettled;
 * - Ctrl-C ends a process blocked in `getSync()` while a `SharedMemoryManager` is alive, and its
 *   segments go;
 * - SIGINT/SIGTERM remove a large value a process sent to itself and never received;
 * - V8's out-of-memory abort (SIGABRT) removes the process's segments as SIGTERM does.
 */

import { existsSync, readFileSync, rmSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { cleanSegments, Receiver } from '../index.js'
import {
  checkNoSegmentLeaks,
  childPids,
  entry,
  shmSegments,
  spawnNode,
  type Child,
  type Exit,
} from './helpers/processes.js'

checkNoSegmentLeaks(test)

const entryUrl = pathToFileURL(entry).href
const helper = (file: string): string =>
  fileURLToPath(new URL(`./helpers/${file}`, import.meta.url))

/** Whether `pid` is a running process (a zombie not reaped yet does not count). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z'
  } catch {
    return false
  }
}

/** Polls until none of `pids` runs; returns those still running after `ms`. */
async function stillRunningAfter(pids: number[], ms: number): Promise<number[]> {
  const deadline = Date.now() + ms
  for (;;) {
    const left = pids.filter(running)
    if (left.length === 0 || Date.now() > deadline) return left
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** The child's exit, or a note if it is still running `ms` after the call. */
function exitWithin(child: Child, ms: number): Promise<Exit | string> {
  return Promise.race([
    child.exited,
    new Promise<string>((r) => setTimeout(() => r(`still running ${ms} ms later`), ms)),
  ])
}

/** Segments in /dev/shm whose creator is one of `pids`. */
function segmentsOf(pids: number[]): string[] {
  return [...shmSegments()].filter(([, pid]) => pids.includes(pid)).map(([name]) => name)
}

/**
 * Runs `script` (an ES module importing the package as ENTRY) in `node --import=tsx`, with
 * `nodeArgs` before it and `args` after it (`process.argv.slice(1)` in the script).
 */
function runScript(
  t: ExecutionContext,
  script: string,
  {
    nodeArgs = [],
    args = [],
    env = {},
  }: { nodeArgs?: string[]; args?: string[]; env?: NodeJS.ProcessEnv } = {},
): Child {
  const source = script.replaceAll('ENTRY', JSON.stringify(entryUrl))
  return spawnNode(
    t,
    [...nodeArgs, '--import=tsx', '--input-type=module', '-e', source, ...args],
    env,
  )
}

/**
 * The pipe backings, each with the environment that makes it the default and how many
 * segments of its own, in `/dev/shm`, a large value sent before any receiver registered has:
 * one when named; none when sealed (its memory is held by its sender until a receiver maps it).
 */
const BACKINGS = [
  { backing: 'shm', env: { SHMPIPE_BACKING: 'shm' }, earlyValueSegments: 1 },
  ...(process.platform === 'linux'
    ? [{ backing: 'memfd', env: { SHMPIPE_BACKING: 'memfd' }, earlyValueSegments: 0 }]
    : []),
]

// ---------------------------------------------------------------------------------------------
// The process pool: workers end with their pool's process

const POOL_PARENT = `
  import { ProcessPool } from ENTRY
  const pool = new ProcessPool({ module: ${JSON.stringify(helper('pool-tasks.ts'))}, workers: 2 })
  await pool.ready()
  // Two tasks of a minute each, synchronous: the workers run no JavaScript meanwhile.
  const tasks = [pool.submit('spin', 60_000), pool.submit('spin', 60_000)]
  await new Promise((r) => setTimeout(r, 300))
  console.log(JSON.stringify({ pids: pool.pids, running: pool.running }))
  await Promise.all(tasks)
`

for (const signal of ['SIGKILL', 'SIGINT'] as const) {
  test(`${signal} to the pool's process alone: its workers, busy in a long synchronous task, are gone within 2 s`, async (t) => {
    const parent = runScript(t, POOL_PARENT)
    const { pids, running: busy } = (await parent.next()) as { pids: number[]; running: number }
    for (const pid of pids) childPids.add(pid) // the leak check covers the workers' segments
    t.teardown(() => {
      for (const pid of pids) if (running(pid)) process.kill(pid, 'SIGKILL')
    })
    // SIGKILL runs no cleanup: the dead pool's pipes are what `shmpipe clean` is for.
    t.teardown(() => void cleanSegments({ names: segmentsOf([parent.process.pid!]) }))
    t.is(pids.length, 2)
    t.is(busy, 2, 'both workers run a task')
    t.deepEqual(pids.filter(running), pids)
    parent.process.kill(signal) // this pid only, not its process group
    t.deepEqual(await exitWithin(parent, 5000), { code: null, signal }, parent.stderr())
    t.deepEqual(await stillRunningAfter(pids, 2000), [], 'workers still running 2 s after')
    t.deepEqual(segmentsOf(pids), [], 'segments of the workers left in /dev/shm')
    if (signal === 'SIGINT') {
      t.deepEqual(segmentsOf([parent.process.pid!]), [], 'the pool removed its pipes')
    }
  })
}

// ---------------------------------------------------------------------------------------------
// The process pool: a module that cannot be used rejects ready() and submit()

/**
 * Two pools of `module` with `workers` workers each, one asked `ready()`, the other
 * `submit('f')`, each settled promise reported; then 'done'. An unsettled promise shows as a
 * child that exits without reporting.
 */
const LOAD_PARENT = `
  import { ProcessPool } from ENTRY
  const [module, workers] = JSON.parse(process.argv.at(-1))
  const report = (what, p) =>
    p.then(
      (value) => console.log(JSON.stringify({ what, ok: true, value })),
      (err) => console.log(JSON.stringify({ what, ok: false, code: err.code, message: err.message })),
    )
  const options = { module, workers }
  const a = new ProcessPool(options)
  const b = new ProcessPool(options)
  await Promise.all([report('ready', a.ready()), report('submit', b.submit('f'))])
  await Promise.all([a.close(), b.close()])
  console.log(JSON.stringify('done'))
`

const LOAD_CASES: { what: string; file: string; error: RegExp }[] = [
  { what: 'an ES module that throws', file: 'pool-broken.mjs', error: /ES module fails to load on purpose/ }, // prettier-ignore
  { what: 'a CommonJS module that throws', file: 'pool-broken.cjs', error: /CommonJS module fails to load on purpose/ }, // prettier-ignore
  { what: 'a TypeScript module (via tsx) that throws', file: 'pool-broken.ts', error: /fails to load on purpose/ }, // prettier-ignore
  { what: 'a module importing a missing file', file: 'pool-missing-import.mjs', error: /pool-no-such-file\.mjs/ }, // prettier-ignore
]

for (const workers of [1, 2]) {
  for (const c of LOAD_CASES) {
    test(`${c.what}, ${workers} worker(s): ready() and submit() reject with the module's error`, async (t) => {
      const child = runScript(t, LOAD_PARENT, {
        args: [JSON.stringify([helper(c.file), workers])],
      })
      const reports = []
      for (let i = 0; i < 3; i++) reports.push(await child.next(30_000))
      t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
      t.is(reports[2], 'done')
      const byWhat = new Map(
        reports
          .slice(0, 2)
          .map((r) => [(r as { what: string }).what, r as Record<string, unknown>]),
      )
      for (const what of ['ready', 'submit']) {
        const r = byWhat.get(what)!
        t.is(r.ok, false, `${what}() resolved`)
        t.is(r.code, 'ERR_SHMPIPE_WORKER_START_FAILED', `${what}(): ${String(r.message)}`)
        t.regex(String(r.message), /the pool's workers cannot load/)
        t.regex(String(r.message), c.error)
      }
    })
  }
}

for (const workers of [1, 2]) {
  test(`a module without the export asked for, ${workers} worker(s): submit() rejects, naming it`, async (t) => {
    const child = runScript(t, LOAD_PARENT, {
      args: [JSON.stringify([helper('pool-no-f.mjs'), workers])],
    })
    const reports = []
    for (let i = 0; i < 3; i++) reports.push(await child.next(30_000))
    t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
    t.is(reports[2], 'done')
    const submit = reports.find((r) => (r as { what?: string }).what === 'submit') as Record<string, unknown> // prettier-ignore
    t.like(submit, { ok: false, code: 'ERR_SHMPIPE_INVALID_ARGUMENT' })
    t.regex(String(submit.message), /no export named 'f'/)
    t.like(
      reports.find((r) => (r as { what?: string }).what === 'ready'),
      { ok: true },
    )
  })
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C while blocked in getSync() with a SharedMemoryManager alive

/**
 * A manager with an array and a pipe, then `getSync()` on the empty pipe. With `listener`, the
 * program has a SIGINT listener of its own, and reports what getSync() threw and that the
 * listener ran.
 */
const BLOCKED = `
  import { SharedMemoryManager } from ENTRY
  const listener = process.argv.at(-1) === 'listener'
  if (listener) process.on('SIGINT', () => console.log(JSON.stringify('listener ran')))
  const manager = new SharedMemoryManager()
  manager.createArray('trust_sig_' + process.pid, Float64Array, [16])
  const [sender, receiver] = manager.createSharedMemoryPair({ capacity: 4 })
  console.log(JSON.stringify({ pipe: sender.name, array: 'shmpipe_a_trust_sig_' + process.pid }))
  try {
    receiver.getSync()
  } catch (err) {
    console.log(JSON.stringify({ code: err.code, message: err.message }))
  }
  setTimeout(() => {}, 1000) // the event loop turns: the listener runs
`

/** /dev/shm has an entry `name`. */
function inShm(name: string): boolean {
  return shmSegments().has(name) || existsSync(`/dev/shm/${name}`)
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  test(`${signal} ends a process blocked in getSync() with a SharedMemoryManager alive; its pipe and array go`, async (t) => {
    const child = runScript(t, BLOCKED, { args: ['plain'] })
    const { pipe, array } = (await child.next()) as { pipe: string; array: string }
    t.teardown(() => {
      rmSync(`/dev/shm/${pipe}`, { force: true })
      rmSync(`/dev/shm/${array}`, { force: true })
    })
    t.true(inShm(pipe) && inShm(array))
    await new Promise((r) => setTimeout(r, 300)) // blocked by now
    child.process.kill(signal)
    t.deepEqual(await exitWithin(child, 3000), { code: null, signal }, child.stderr())
    t.false(inShm(pipe), 'the manager’s pipe is left in /dev/shm')
    t.false(inShm(array), 'the manager’s array is left in /dev/shm')
  })
}

test('SIGINT with a listener of the program’s own: getSync() throws ABORTED, then the listener runs', async (t) => {
  const child = runScript(t, BLOCKED, { args: ['listener'] })
  const { pipe, array } = (await child.next()) as { pipe: string; array: string }
  t.teardown(() => {
    rmSync(`/dev/shm/${pipe}`, { force: true })
    rmSync(`/dev/shm/${array}`, { force: true })
  })
  await new Promise((r) => setTimeout(r, 300))
  child.process.kill('SIGINT')
  t.deepEqual(await child.next(5000), {
    code: 'ERR_SHMPIPE_ABORTED',
    message: 'the wait was interrupted by SIGINT',
  })
  t.is(await child.next(5000), 'listener ran')
  // The program kept running and then ended normally: the manager's exit cleanup ran.
  t.deepEqual(await exitWithin(child, 5000), { code: 0, signal: null }, child.stderr())
  t.false(inShm(pipe))
  t.false(inShm(array))
})

// ---------------------------------------------------------------------------------------------
// A large value sent to itself and never received

/**
 * A pair with a 64 KiB ring; a 200 kB value sent through it travels in a segment of its own.
 * `mode` 'self': the process keeps the receiver (unused). 'handed': it closes its receiver so
 * that another process can attach. Reports the pipe's name, then waits on the event loop.
 */
const SELF_SEND = `
  import { createSharedMemoryPair } from ENTRY
  const mode = process.argv.at(-1)
  const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 64 << 10 })
  if (mode === 'handed') receiver.close()
  const value = new Uint8Array(200_000).map((_, i) => i & 0xff)
  await sender.put(value)
  console.log(JSON.stringify({ pipe: sender.name }))
  setInterval(() => {}, 1000)
`

/** The segments `pid` created, apart from `known`. */
function blobsOf(pid: number, ...known: string[]): string[] {
  return segmentsOf([pid]).filter((name) => !known.includes(name))
}

for (const { backing, env, earlyValueSegments } of BACKINGS) {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal}: a large value a process sent to itself and never received is removed with its pipe (${backing})`, async (t) => {
      const child = runScript(t, SELF_SEND, { args: ['self'], env })
      const { pipe } = (await child.next()) as { pipe: string }
      const blobs = blobsOf(child.process.pid!, pipe)
      t.teardown(() => {
        for (const name of [pipe, ...blobs]) rmSync(`/dev/shm/${name}`, { force: true })
      })
      t.is(blobs.length, earlyValueSegments, 'segments of the value in /dev/shm')
      child.process.kill(signal)
      t.deepEqual(await exitWithin(child, 3000), { code: null, signal }, child.stderr())
      t.false(inShm(pipe))
      t.deepEqual(blobs.filter(inShm), [], 'the unreceived value’s segment is left in /dev/shm')
    })
  }
}

for (const { backing, env, earlyValueSegments } of BACKINGS) {
  test(`SIGTERM: a large value sent before a receiver of another process attached still reaches it (${backing})`, async (t) => {
    const child = runScript(t, SELF_SEND, { args: ['handed'], env })
    const { pipe } = (await child.next()) as { pipe: string }
    const blobs = blobsOf(child.process.pid!, pipe)
    t.teardown(() => {
      for (const name of [pipe, ...blobs]) rmSync(`/dev/shm/${name}`, { force: true })
    })
    t.is(blobs.length, earlyValueSegments)
    await checkHandedOver(t, child, pipe, blobs, backing)
  })
}

/** The receiving half of the test above: the value reaches a receiver attached here. */
async function checkHandedOver(
  t: ExecutionContext,
  child: Child,
  pipe: string,
  blobs: string[],
  backing: string,
): Promise<void> {
  const receiver = Receiver.attach(pipe)
  t.teardown(() => receiver.close())
  child.process.kill('SIGTERM')
  t.deepEqual(await exitWithin(child, 3000), { code: null, signal: 'SIGTERM' }, child.stderr())
  if (backing === 'memfd')
    t.true(inShm(pipe), 'the sealed pipe’s name stays while the receiver holds it')
  const value = (await receiver.get({ timeout: 5000 })) as Uint8Array
  t.is(value.length, 200_000)
  t.true(
    value.every((v, i) => v === (i & 0xff)),
    'intact',
  )
  t.deepEqual(blobs.filter(inShm), [], 'received: the receiver removed it')
  receiver.close()
  t.false(inShm(pipe), 'its last holder closed: the name is gone')
}

// ---------------------------------------------------------------------------------------------
// V8's out-of-memory abort

for (const { backing, env, earlyValueSegments } of BACKINGS) {
  test(`SIGABRT (V8 out of memory): the pipe, the unreceived value and the manager’s array are removed (${backing})`, async (t) => {
    const script = `
    import { createSharedMemoryPair, SharedMemoryManager } from ENTRY
    const manager = new SharedMemoryManager()
    manager.createArray('trust_oom_' + process.pid, Float64Array, [16])
    const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 64 << 10 })
    sender.putSync(new Uint8Array(200_000))
    console.log(JSON.stringify({ pipe: sender.name, array: 'shmpipe_a_trust_oom_' + process.pid }))
    await new Promise((r) => setTimeout(r, 200))
    const hog = []
    for (;;) hog.push(new Array(100_000).fill({ n: hog.length }))
  `
    const child = runScript(t, script, { nodeArgs: ['--max-old-space-size=64'], env })
    const { pipe, array } = (await child.next()) as { pipe: string; array: string }
    const blobs = blobsOf(child.process.pid!, pipe, array)
    t.teardown(() => {
      for (const name of [pipe, array, ...blobs]) rmSync(`/dev/shm/${name}`, { force: true })
    })
    t.is(blobs.length, earlyValueSegments, 'segments of the value in /dev/shm')
    t.true(inShm(pipe) && inShm(array))
    t.deepEqual(await exitWithin(child, 60_000), { code: null, signal: 'SIGABRT' })
    t.regex(child.stderr(), /heap out of memory/)
    t.deepEqual([pipe, array, ...blobs].filter(inShm), [], 'left in /dev/shm')
  })
}
