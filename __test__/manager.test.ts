/**
 * Tests of SharedMemoryManager and withSharedMemory: what a manager created is removed from
 * /dev/shm when it is disposed, when the process exits (normally or through an uncaught error),
 * and when the process is ended by SIGTERM/SIGINT/SIGHUP, in real child processes; and signals
 * keep their default effect. Child roles live in `helpers/array-child.ts`.
 */

import { fileURLToPath } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  ERR_SHMPIPE_CLOSED,
  SharedArray,
  SharedMemoryManager,
  ShmpipeError,
  withSharedMemory,
} from '../index.js'
import { childPids, shmExists, shmSegments, spawnNode, type Child } from './helpers/processes.js'

const arrayChild = fileURLToPath(new URL('./helpers/array-child.ts', import.meta.url))

/** This run's name prefix: names are `sm` + 4 random hex digits + a counter (≤ 20 characters). */
const RUN = `sm${Math.floor(Math.random() * 0x10000)
  .toString(16)
  .padStart(4, '0')}`
let counter = 0

/** Fresh array names for `t`; whatever is left under them is removed at its end. */
function arrayNames(t: ExecutionContext, n: number): string[] {
  const names = Array.from({ length: n }, () => `${RUN}${(counter++).toString(36)}`)
  t.teardown(() => {
    for (const name of names) {
      try {
        SharedArray.delete(name)
      } catch {
        // Removed, as it should be.
      }
    }
  })
  return names
}

function startArrayChild(t: ExecutionContext, role: string, args: string[]): Child {
  return spawnNode(t, ['--import=tsx', arrayChild, role, ...args])
}

/** Which of `names` exist as shared arrays now. */
function existing(names: string[]): string[] {
  const all = new Set(SharedArray.list())
  return names.filter((n) => all.has(n))
}

/** The child's exit, or a note that it is still running after `ms`. */
function exitWithin(child: Child, ms: number): Promise<unknown> {
  return Promise.race([
    child.exited,
    new Promise((r) => setTimeout(() => r(`still running after ${ms} ms`), ms)),
  ])
}

test.after.always('no shared array or segment made by this file is left in /dev/shm', (t) => {
  t.deepEqual(
    SharedArray.list().filter((n) => n.startsWith(RUN)),
    [],
  )
  const ours = new Set([process.pid, ...childPids])
  const left = [...shmSegments()].filter(([, pid]) => ours.has(pid))
  t.deepEqual(left, [], `left in /dev/shm: ${left.map(([n]) => n).join(', ')}`)
})

// ---------------------------------------------------------------------------------------------
// In this process

test('dispose closes the handles it returned and removes its arrays and pipes', async (t) => {
  const names = arrayNames(t, 2)
  const manager = new SharedMemoryManager()
  t.teardown(() => manager.dispose())
  const a = manager.createArray(names[0]!, Float64Array, [2, 2])
  const b = manager.createArray(names[1]!, 'uint8', 16)
  const [sender, receiver] = manager.createSharedMemoryPair({ capacity: 4, bytes: 1 << 16 })
  t.deepEqual(manager.arrayNames, names)
  t.deepEqual(existing(names), names)
  t.true(shmExists(sender.name))
  const outside = SharedArray.attach(names[0]!) // not the manager's handle
  t.teardown(() => outside.close())
  a.data[3] = 1.5
  sender.putSync('x')
  t.is(receiver.getSync(), 'x')
  manager.dispose()
  t.true(manager.disposed)
  t.deepEqual(existing(names), [], 'the arrays are removed')
  t.false(shmExists(sender.name), 'the pipe is removed')
  t.true(a.closed && b.closed)
  t.is(a.data.length, 0)
  const err = await t.throwsAsync(sender.put('y'), { instanceOf: ShmpipeError })
  t.is(err?.code, ERR_SHMPIPE_CLOSED)
  t.is(outside.data[3], 1.5, 'handles from elsewhere keep working on the memory')
  t.throws(() => manager.createArray(names[0]!, Float64Array, 1), { code: ERR_SHMPIPE_CLOSED })
  manager.dispose() // again: nothing
})

test("createArray passes its options on: a 'memfd' array, whose name dispose removes though it is held", (t) => {
  const [name] = arrayNames(t, 1)
  const manager = new SharedMemoryManager()
  t.teardown(() => manager.dispose())
  if (process.platform !== 'linux') {
    t.throws(() => manager.createArray(name!, Float64Array, 4, { backing: 'memfd' }), { code: 'ERR_SHMPIPE_UNSUPPORTED' }) // prettier-ignore
    return
  }
  const a = manager.createArray(name!, Float64Array, 4, { backing: 'memfd' })
  t.is(a.backing, 'memfd')
  const outside = SharedArray.attach(name!) // holds the sealed memory past the manager's end
  t.teardown(() => outside.close())
  t.is(outside.backing, 'memfd')
  a.data[2] = 4.5
  manager.dispose()
  t.deepEqual(existing([name!]), [], 'the name is removed')
  t.is(outside.data[2], 4.5, 'a holder keeps the memory')
})

test('using: the manager ends with its block; an array re-created by someone else is spared', (t) => {
  const [mine, recreated] = arrayNames(t, 2)
  {
    using manager = new SharedMemoryManager()
    manager.createArray(mine!, Int16Array, 4)
    manager.createArray(recreated!, Int16Array, 4)
    // Someone else deletes the second one and creates a new array under the same name.
    SharedArray.delete(recreated!)
    SharedArray.create(recreated!, Float32Array, 2).close()
  }
  t.deepEqual(existing([mine!, recreated!]), [recreated!])
  const other = SharedArray.attach(recreated!)
  t.is(other.dtype, 'float32', 'the other array is untouched')
  other.close()
})

test('withSharedMemory removes everything whether fn resolves or throws', async (t) => {
  const [first, second] = arrayNames(t, 2)
  const result = await withSharedMemory(async (m) => {
    const a = m.createArray(first!, BigInt64Array, 3)
    a.data[2] = -5n
    await new Promise((r) => setTimeout(r, 10))
    t.deepEqual(existing([first!]), [first!])
    return a.data[2]
  })
  t.is(result, -5n)
  t.deepEqual(existing([first!]), [])
  const boom = new Error('boom')
  const err = await t.throwsAsync(
    withSharedMemory((m) => {
      m.createArray(second!, Int8Array, 1)
      throw boom
    }),
  )
  t.is(err, boom)
  t.deepEqual(existing([second!]), [])
})

test('signal listeners exist only while a manager is alive', (t) => {
  const counts = (): number[] =>
    ['SIGINT', 'SIGTERM', 'SIGHUP'].map((s) => process.listenerCount(s))
  const before = counts()
  const m1 = new SharedMemoryManager()
  const m2 = new SharedMemoryManager()
  t.deepEqual(
    counts(),
    before.map((n) => n + 1),
    'one listener per signal, shared by all managers',
  )
  m1.dispose()
  t.deepEqual(
    counts(),
    before.map((n) => n + 1),
  )
  m2.dispose()
  t.deepEqual(counts(), before, 'Node’s default behaviour is back')
})

// ---------------------------------------------------------------------------------------------
// In child processes: exit and signals

async function startManagerChild(
  t: ExecutionContext,
  mode: string,
): Promise<{ child: Child; arrays: string[]; pipe: string }> {
  const names = arrayNames(t, 2)
  const child = startArrayChild(t, 'manager', [mode, names.join(',')])
  const { arrays, pipe } = (await child.next()) as { arrays: string[]; pipe: string }
  t.deepEqual(arrays, names)
  if (mode === 'wait' || mode === 'listener' || mode === 'blocked') {
    // (The other modes end or dispose right after their report.)
    t.deepEqual(existing(names), names, `${mode}: the arrays exist while the child runs`)
    t.true(shmExists(pipe), `${mode}: the pipe exists while the child runs`)
  }
  return { child, arrays, pipe }
}

test('a child whose manager is still alive at exit removes its memory (normal exit, uncaught error)', async (t) => {
  for (const [mode, code] of [
    ['exit', 0],
    ['throw', 1],
  ] as const) {
    const { child, arrays, pipe } = await startManagerChild(t, mode)
    t.deepEqual(await child.exited, { code, signal: null }, child.stderr())
    t.deepEqual(existing(arrays), [], `${mode}: arrays removed`)
    t.false(shmExists(pipe), `${mode}: pipe removed`)
  }
})

test('SIGTERM, SIGINT and SIGHUP: a child with a manager removes its memory and still dies of the signal', async (t) => {
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    const { child, arrays, pipe } = await startManagerChild(t, 'wait')
    child.process.kill(signal)
    t.deepEqual(await exitWithin(child, 5000), { code: null, signal }, child.stderr())
    t.deepEqual(existing(arrays), [], `${signal}: arrays removed`)
    t.false(shmExists(pipe), `${signal}: pipe removed`)
  }
})

test('a child with its own SIGTERM listener decides: it keeps running, and its exit cleans up', async (t) => {
  const { child, arrays, pipe } = await startManagerChild(t, 'listener')
  child.process.kill('SIGTERM')
  t.is(await child.next(), 'handled SIGTERM')
  t.deepEqual(existing(arrays), arrays, 'nothing removed while the program runs on')
  t.deepEqual(await exitWithin(child, 5000), { code: 0, signal: null }, child.stderr())
  t.deepEqual(existing(arrays), [], 'removed at its exit')
  t.false(shmExists(pipe))
})

test('SIGTERM to a child blocked in lock({ timeout }) interrupts the call: it dies of it at once, memory removed', async (t) => {
  // The child's manager makes the arrays; this process takes the first one's lock and tells the
  // child (element 0), which then blocks in lock({ timeout: 1500 }).
  const { child, arrays } = await startManagerChild(t, 'blocked')
  const held = SharedArray.attach(arrays[0]!, Float64Array)
  t.teardown(() => held.close())
  held.lock()
  held.data[0] = 1
  await new Promise((r) => setTimeout(r, 400)) // the child is blocked in lock() by now
  const start = performance.now()
  child.process.kill('SIGTERM')
  t.deepEqual(await exitWithin(child, 5000), { code: null, signal: 'SIGTERM' }, child.stderr())
  const waited = performance.now() - start
  // The lock call would have timed out ~1100 ms after the signal.
  t.true(waited < 900, `the signal waited for the call (${waited.toFixed(0)} ms)`)
  t.deepEqual(existing(arrays), [], 'the memory was removed')
  held.unlock()
})

test('after dispose, the default returns: SIGTERM ends a child blocked in Atomics.wait at once', async (t) => {
  const { child, arrays, pipe } = await startManagerChild(t, 'dispose')
  t.deepEqual(await child.next(), { disposed: true, length: 0 })
  t.deepEqual(existing(arrays), [])
  t.false(shmExists(pipe))
  await new Promise((r) => setTimeout(r, 200)) // blocked by now
  child.process.kill('SIGTERM')
  t.deepEqual(await exitWithin(child, 2000), { code: null, signal: 'SIGTERM' })
})

test('withSharedMemory in a child: a throwing callback still removes the array', async (t) => {
  const [name] = arrayNames(t, 1)
  const child = startArrayChild(t, 'with-throws', [name!])
  t.deepEqual(await child.next(), { inside: true })
  t.deepEqual(await child.next(), { error: 'inside', left: false })
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})
