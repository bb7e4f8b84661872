/**
 * Tests of SharedArray with real child processes and real shared memory: data written in one
 * process is read in place by another, dtype and shape come from the segment, the lock excludes
 * writers across processes and recovers from a holder that died, and nothing is left in
 * /dev/shm. Child roles live in `helpers/array-child.ts`.
 */

import { existsSync, writeFileSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { fileURLToPath, pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  ERR_SHMPIPE_BAD_SEGMENT,
  ERR_SHMPIPE_BUSY,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_EXISTS,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_LOCK_NOT_HELD,
  ERR_SHMPIPE_NOT_FOUND,
  ERR_SHMPIPE_TIMEOUT,
  ERR_SHMPIPE_TOO_LARGE,
  ERR_SHMPIPE_UNSUPPORTED,
  layoutVersion,
  SharedArray,
  ShmpipeError,
  type DType,
  type ShmpipeErrorCode,
} from '../index.js'
import { childPids, shmSegments, spawnNode, type Child } from './helpers/processes.js'

const arrayChild = fileURLToPath(new URL('./helpers/array-child.ts', import.meta.url))

/** This run's name prefix: names are `sa` + 4 random hex digits + a counter (≤ 20 characters). */
const RUN = `sa${Math.floor(Math.random() * 0x10000)
  .toString(16)
  .padStart(4, '0')}`
let counter = 0

/** A fresh array name for `t`; whatever the test leaves under it is removed at its end. */
function arrayName(t: ExecutionContext): string {
  const name = `${RUN}${(counter++).toString(36)}`
  t.teardown(() => {
    try {
      SharedArray.delete(name)
    } catch {
      // Already removed: what the test wanted.
    }
  })
  return name
}

/** Starts `node --import=tsx array-child.ts role ...args` (reports as JSON lines). */
function startArrayChild(
  t: ExecutionContext,
  role: string,
  args: string[],
  nodeArgs: string[] = [],
): Child {
  return spawnNode(t, [...nodeArgs, '--import=tsx', arrayChild, role, ...args])
}

/** Calls `fn`, which must throw a ShmpipeError of `code`; returns it. */
function throwsWith(t: ExecutionContext, fn: () => unknown, code: ShmpipeErrorCode): ShmpipeError {
  const err = t.throws(fn, { instanceOf: ShmpipeError })
  t.is(err?.code, code, err?.message)
  return err as ShmpipeError
}

/** Awaits `promise`, which must reject with a ShmpipeError of `code`; returns it. */
async function rejectsWith(
  t: ExecutionContext,
  promise: Promise<unknown>,
  code: ShmpipeErrorCode,
): Promise<ShmpipeError> {
  const err = await t.throwsAsync(promise, { instanceOf: ShmpipeError })
  t.is(err?.code, code, err?.message)
  return err as ShmpipeError
}

/** Marks `promise` handled, so a test failing before it awaits it does not fail the file. */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

const DTYPES: [DType, string][] = [
  ['int8', 'Int8Array'],
  ['uint8', 'Uint8Array'],
  ['uint8clamped', 'Uint8ClampedArray'],
  ['int16', 'Int16Array'],
  ['uint16', 'Uint16Array'],
  ['int32', 'Int32Array'],
  ['uint32', 'Uint32Array'],
  ['float32', 'Float32Array'],
  ['float64', 'Float64Array'],
  ['bigint64', 'BigInt64Array'],
  ['biguint64', 'BigUint64Array'],
]

/** Compile-time checks (never called): `data`'s type follows the dtype given or attached with. */
export function typeChecks(): void {
  const f: Float64Array = SharedArray.create('x', Float64Array, 1).data
  const u: Uint8ClampedArray = SharedArray.create('x', 'uint8clamped', 1).data
  const b: BigUint64Array = SharedArray.attach('x', BigUint64Array).data
  const any: SharedArray = SharedArray.attach('x')
  // @ts-expect-error a Float64Array's data is not an Int32Array
  const wrong: Int32Array = SharedArray.create('x', Float64Array, 1).data
  // @ts-expect-error not a TypedArray constructor
  SharedArray.create('x', Array, 1)
  void [f, u, b, any, wrong]
}

// ---------------------------------------------------------------------------------------------
// Leak check over the whole file

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
// 1. Data shared in place across processes

test('a child attaches by name, learns dtype and shape from the segment, and writes in place', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Float64Array, [100, 200])
  t.teardown(() => a.close())
  t.deepEqual([a.name, a.dtype, a.shape, a.length, a.byteLength], [name, 'float64', [100, 200], 20_000, 160_000]) // prettier-ignore
  t.true(a.data instanceof Float64Array)
  a.data[0] = 0.5
  const child = startArrayChild(t, 'inspect', [name, '19999', '-2.25'])
  t.deepEqual(await child.next(), [
    {
      name,
      dtype: 'float64',
      shape: [100, 200],
      length: 20_000,
      byteLength: 160_000,
      constructor: 'Float64Array',
      first: '0.5',
    },
  ])
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.is(a.data[19_999], -2.25, 'the child’s write is seen in place, without any message')
  // The creator's handle reads it through the same memory as a second handle in this process.
  const b = SharedArray.attach(name)
  t.teardown(() => b.close())
  b.data[1] = 7
  t.is(a.data[1], 7)
})

test('every TypedArray type: created by constructor or dtype name, attached with its type', async (t) => {
  const names: string[] = []
  const arrays = DTYPES.map(([dtype, ctor], i) => {
    const name = arrayName(t)
    names.push(name)
    // Half by constructor, half by dtype name.
    const type = i % 2 === 0 ? (globalThis as Record<string, unknown>)[ctor] : dtype
    const a = SharedArray.create(name, type as DType, [2, 3, 4])
    t.teardown(() => a.close())
    t.is(a.dtype, dtype)
    t.is(a.data.constructor.name, ctor)
    t.is(a.length, 24)
    t.is(a.byteLength, 24 * a.data.BYTES_PER_ELEMENT)
    t.true(
      [...a.data].every((v) => v === 0 || v === 0n),
      'zero-filled',
    )
    return a
  })
  const child = startArrayChild(t, 'inspect', [names.join(','), '23', '100'])
  const report = (await child.next()) as { dtype: string; constructor: string; shape: number[] }[]
  t.deepEqual(
    report.map((r) => [r.dtype, r.constructor, r.shape]),
    DTYPES.map(([d, c]) => [d, c, [2, 3, 4]]),
  )
  for (const a of arrays) {
    const big = a.dtype === 'bigint64' || a.dtype === 'biguint64'
    t.is(a.data[23], big ? 100n : 100, a.dtype)
  }
  // attach with a type checks it and types `data`.
  const f = SharedArray.attach(names[8]!, Float64Array)
  t.teardown(() => f.close())
  const sum: number = f.data.reduce((s, v) => s + v, 0)
  t.is(sum, 100)
  throwsWith(t, () => SharedArray.attach(names[8]!, Int32Array), ERR_SHMPIPE_INVALID_ARGUMENT)
  throwsWith(t, () => SharedArray.attach(names[9]!, 'biguint64'), ERR_SHMPIPE_INVALID_ARGUMENT)
})

test('a view stays valid while reachable: collecting its handle does not unmap it (child, --expose-gc)', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Float64Array, 1000)
  t.teardown(() => a.close())
  const child = startArrayChild(t, 'gc-view', [name], ['--expose-gc'])
  t.deepEqual(await child.next(), { collected: true, value: 123, length: 1000 })
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.is(a.data[0], 123)
})

// ---------------------------------------------------------------------------------------------
// 2. Names, delete, list, close

test('create is exclusive, attach of a missing name is NOT_FOUND, delete and list', (t) => {
  const name = arrayName(t)
  const missing = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 4)
  t.teardown(() => a.close())
  const exists = throwsWith(t, () => SharedArray.create(name, Int32Array, 4), ERR_SHMPIPE_EXISTS)
  t.regex(exists.message, new RegExp(name))
  const notFound = throwsWith(t, () => SharedArray.attach(missing), ERR_SHMPIPE_NOT_FOUND)
  t.regex(notFound.message, new RegExp(missing))
  t.true(SharedArray.list().includes(name))
  t.false(SharedArray.list().includes(missing))
  t.true(existsSync(`/dev/shm/shmpipe_a_${name}`))
  // Closing handles (the creator's too) leaves the array; delete removes it.
  const b = SharedArray.attach(name)
  b.data[3] = 9
  b.close()
  t.true(SharedArray.list().includes(name))
  SharedArray.delete(name)
  t.false(SharedArray.list().includes(name))
  t.false(existsSync(`/dev/shm/shmpipe_a_${name}`))
  throwsWith(t, () => SharedArray.attach(name), ERR_SHMPIPE_NOT_FOUND)
  throwsWith(t, () => SharedArray.delete(name), ERR_SHMPIPE_NOT_FOUND)
  // A handle opened before the delete keeps working on the same memory.
  t.is(a.data[3], 9)
  a.data[3] = 10
  t.is(a.data[3], 10)
  // The name can be used again, for a new array.
  const c = SharedArray.create(name, Uint8Array, 2)
  t.teardown(() => c.close())
  t.is(c.data[0], 0)
})

test('close: data becomes empty, calls fail CLOSED, and using closes at the end of a block', (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Float32Array, [4, 4])
  const view = a.data
  const sub = a.data.subarray(4, 8)
  a.close()
  t.true(a.closed)
  t.is(a.data.length, 0, 'data is detached, not freed memory')
  t.is(view.length, 0)
  t.is(sub.length, 0, 'so is every view made from it')
  t.is(view[0], undefined)
  t.is(a.length, 0)
  throwsWith(t, () => a.lock(), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => a.unlock(), ERR_SHMPIPE_CLOSED)
  a.close() // again: nothing
  let kept: Float32Array | undefined
  {
    using b = SharedArray.attach(name, Float32Array)
    kept = b.data
    t.is(kept.length, 16)
  }
  t.is(kept.length, 0, '`using` closed it')
})

test('bad names, dtypes and shapes fail with a typed error naming what was wrong', (t) => {
  const cases: [() => unknown, ShmpipeErrorCode, RegExp][] = [
    [() => SharedArray.create('', Float64Array, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /name/],
    [() => SharedArray.create('a/b', Float64Array, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /name.*"a\/b"/],
    [() => SharedArray.create('x'.repeat(21), Float64Array, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /20 characters/],
    [() => SharedArray.create('sp ace', Float64Array, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /name/],
    [() => SharedArray.create(42 as unknown as string, Float64Array, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /name.*42/],
    [() => SharedArray.attach('ünï'), ERR_SHMPIPE_INVALID_ARGUMENT, /name/],
    [() => SharedArray.delete('..'.repeat(11)), ERR_SHMPIPE_INVALID_ARGUMENT, /name/],
    [() => SharedArray.create('ok', 'float16' as DType, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /dtype.*"float16"/],
    [() => SharedArray.create('ok', Array as unknown as DType, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /dtype.*Array/],
    [() => SharedArray.create('ok', DataView as unknown as DType, 1), ERR_SHMPIPE_INVALID_ARGUMENT, /dtype.*DataView/],
    [() => SharedArray.create('ok', Float64Array, 0), ERR_SHMPIPE_INVALID_ARGUMENT, /length must be a whole number of at least 1, got 0/],
    [() => SharedArray.create('ok', Float64Array, -3), ERR_SHMPIPE_INVALID_ARGUMENT, /length.*-3/],
    [() => SharedArray.create('ok', Float64Array, 2.5), ERR_SHMPIPE_INVALID_ARGUMENT, /length.*2\.5/],
    [() => SharedArray.create('ok', Float64Array, NaN), ERR_SHMPIPE_INVALID_ARGUMENT, /length.*NaN/],
    [() => SharedArray.create('ok', Float64Array, [3, 0]), ERR_SHMPIPE_INVALID_ARGUMENT, /shape\[1\].*got 0/],
    [() => SharedArray.create('ok', Float64Array, [3, '4'] as unknown as number[]), ERR_SHMPIPE_INVALID_ARGUMENT, /shape\[1\].*4/],
    [() => SharedArray.create('ok', Float64Array, []), ERR_SHMPIPE_INVALID_ARGUMENT, /1 to 32 dimensions, got 0/],
    [() => SharedArray.create('ok', Float64Array, new Array(33).fill(1)), ERR_SHMPIPE_INVALID_ARGUMENT, /got 33/],
    [() => SharedArray.create('ok', Float64Array, '8' as unknown as number), ERR_SHMPIPE_INVALID_ARGUMENT, /shape must be/],
    [() => SharedArray.create('ok', Float64Array, [2 ** 26, 2 ** 26, 2 ** 26]), ERR_SHMPIPE_TOO_LARGE, /elements/],
    [() => SharedArray.create('ok', Uint8Array, [2 ** 53, 2]), ERR_SHMPIPE_INVALID_ARGUMENT, /shape\[0\]/],
  ] // prettier-ignore
  for (const [fn, code, message] of cases) {
    const err = throwsWith(t, fn, code)
    t.regex(err.message, message)
  }
  t.false(SharedArray.list().includes('ok'), 'nothing was created')
})

/** Writes a 4 KiB file into /dev/shm as segment `shmpipe_a_<name>` with the given header. */
function craftSegment(name: string, kind: number, arrayVersion: number): void {
  const b = Buffer.alloc(4096)
  b.write('SHMPIPE\0', 0, 'latin1')
  b.writeUInt32LE(layoutVersion(), 8)
  b.writeUInt32LE(kind, 12)
  b.writeBigUInt64LE(4096n - 128n, 16) // body size
  b.writeUInt32LE(process.pid, 24)
  b.writeUInt32LE(1, 28) // ready
  b.write('SHMARRAY', 128, 'latin1')
  b.writeUInt32LE(arrayVersion, 136)
  b.writeUInt32LE(9, 140) // float64
  b.writeUInt32LE(1, 144) // ndim
  b.writeBigUInt64LE(8n, 152) // byte length
  b.writeBigUInt64LE(512n, 160) // data offset
  b.writeBigUInt64LE(1n, 176) // shape[0]
  writeFileSync(`/dev/shm/shmpipe_a_${name}`, b, { mode: 0o600 })
}

test('attach of a non-array segment or another array version is BAD_SEGMENT', (t) => {
  const blob = arrayName(t)
  craftSegment(blob, 2, 1)
  t.regex(throwsWith(t, () => SharedArray.attach(blob), ERR_SHMPIPE_BAD_SEGMENT).message, /kind/)
  const future = arrayName(t)
  craftSegment(future, 3, 99)
  t.regex(
    throwsWith(t, () => SharedArray.attach(future), ERR_SHMPIPE_BAD_SEGMENT).message,
    /version/,
  )
  const good = arrayName(t)
  craftSegment(good, 3, 1)
  const a = SharedArray.attach(good)
  t.teardown(() => a.close())
  t.deepEqual([a.dtype, a.shape], ['float64', [1]], 'the crafted header is otherwise right')
})

// ---------------------------------------------------------------------------------------------
// 2b. Backing: named (the default) or sealed

test("backing 'memfd': children attach and write in place; the name goes with the last holder", async (t) => {
  const name = arrayName(t)
  if (process.platform !== 'linux') {
    throwsWith(t, () => SharedArray.create(name, Float64Array, 4, { backing: 'memfd' }), ERR_SHMPIPE_UNSUPPORTED) // prettier-ignore
    t.false(SharedArray.list().includes(name))
    return
  }
  const a = SharedArray.create(name, Float64Array, [100, 200], { backing: 'memfd' })
  t.teardown(() => a.close())
  t.is(a.backing, 'memfd')
  a.data[0] = 0.5
  const child = startArrayChild(t, 'inspect', [name, '19999', '-2.25'])
  const [seen] = (await child.next()) as Record<string, unknown>[]
  t.like(seen, { name, dtype: 'float64', shape: [100, 200], first: '0.5' })
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  t.is(a.data[19_999], -2.25, 'the child’s write is seen in place')
  const b = SharedArray.attach(name)
  t.teardown(() => b.close())
  t.is(b.backing, 'memfd', 'an attached handle tells the backing too')
  // An array that a child creates and holds alone: once the child exits, the name is gone,
  // without any delete.
  const other = arrayName(t)
  const creator = startArrayChild(t, 'create-sealed', [other, '4.5'])
  t.deepEqual(await creator.next(), { backing: 'memfd' })
  t.true(SharedArray.list().includes(other))
  const writer = startArrayChild(t, 'inspect', [other, '1', '1']) // the creator's signal to exit
  const [read] = (await writer.next()) as Record<string, unknown>[]
  t.is(read?.first, '4.5', 'a second process reads the creator’s write')
  t.deepEqual(await writer.exited, { code: 0, signal: null }, writer.stderr())
  t.deepEqual(await creator.exited, { code: 0, signal: null }, creator.stderr())
  t.false(SharedArray.list().includes(other), 'the name went with its last holder')
  throwsWith(t, () => SharedArray.attach(other), ERR_SHMPIPE_NOT_FOUND)
})

test("backing: 'shm' by default whatever SHMPIPE_BACKING says; a bad value is INVALID_ARGUMENT", (t) => {
  const name = arrayName(t)
  const before = process.env.SHMPIPE_BACKING
  process.env.SHMPIPE_BACKING = 'memfd'
  try {
    const a = SharedArray.create(name, Uint8Array, 4)
    t.teardown(() => a.close())
    t.is(a.backing, 'shm')
  } finally {
    if (before === undefined) delete process.env.SHMPIPE_BACKING
    else process.env.SHMPIPE_BACKING = before
  }
  const explicit = SharedArray.create(arrayName(t), Uint8Array, 4, { backing: 'shm' })
  t.teardown(() => explicit.close())
  t.is(explicit.backing, 'shm')
  const bad = arrayName(t)
  const cases: unknown[] = [{ backing: 'tmpfs' }, { backing: 1 }, { size: 4 }, 'memfd']
  for (const options of cases) {
    const err = throwsWith(
      t,
      () => SharedArray.create(bad, Uint8Array, 4, options as { backing: 'memfd' }),
      ERR_SHMPIPE_INVALID_ARGUMENT,
    )
    t.regex(err.message, /SharedArray\.create/)
  }
  t.false(SharedArray.list().includes(bad), 'nothing is created for bad options')
})

// ---------------------------------------------------------------------------------------------
// 3. The lock in one process

test('lock, tryLock, unlock: one holder at a time, not reentrant, only the holder unlocks', (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 1)
  const b = SharedArray.attach(name)
  t.teardown(() => {
    a.close()
    b.close()
  })
  throwsWith(t, () => a.unlock(), ERR_SHMPIPE_LOCK_NOT_HELD)
  t.deepEqual(a.lock(), { recovered: false, previousOwnerPid: null })
  t.true(a.locked)
  t.false(b.locked)
  throwsWith(t, () => a.lock(), ERR_SHMPIPE_BUSY)
  throwsWith(t, () => b.unlock(), ERR_SHMPIPE_LOCK_NOT_HELD)
  t.is(b.tryLock(), null)
  const start = performance.now()
  throwsWith(t, () => b.lock({ timeout: 100 }), ERR_SHMPIPE_TIMEOUT)
  t.true(performance.now() - start >= 99)
  throwsWith(t, () => b.lock({ timeout: -1 }), ERR_SHMPIPE_INVALID_ARGUMENT)
  a.unlock()
  t.false(a.locked)
  t.deepEqual(b.tryLock(), { recovered: false, previousOwnerPid: null })
  b.unlock()
})

test('withLock waits off the event loop, runs fn with the lock, unlocks after it settles', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Float64Array, 1)
  const b = SharedArray.attach(name, Float64Array)
  t.teardown(() => {
    a.close()
    b.close()
  })
  a.lock()
  let ticks = 0
  const timer = setInterval(() => ticks++, 10)
  t.teardown(() => clearInterval(timer))
  let ran = false
  const pending = b.withLock(async (info) => {
    ran = true
    t.false(info.recovered)
    t.true(b.locked)
    await sleep(20)
    b.data[0] = 5
    return 'result'
  })
  await sleep(300)
  t.false(ran, 'fn waits for the lock')
  t.true(ticks >= 10, `the event loop ran meanwhile (${ticks} ticks)`)
  throwsWith(t, () => b.lock(), ERR_SHMPIPE_BUSY) // a withLock of this handle is pending
  a.unlock()
  t.is(await pending, 'result')
  t.is(a.data[0], 5)
  t.false(b.locked, 'unlocked once fn settled')
  // fn throws: the call rejects with its error, and the lock is released.
  const boom = new Error('boom')
  t.is(
    await t.throwsAsync(
      b.withLock(() => {
        throw boom
      }),
    ),
    boom,
  )
  t.false(b.locked)
  t.not(a.tryLock(), null)
  a.unlock()
})

test('withLock: timeout and abort while waiting for the lock, and while queued behind a call of the same handle', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 1)
  const b = SharedArray.attach(name)
  t.teardown(() => {
    a.close()
    b.close()
  })
  a.lock()
  let start = performance.now()
  await rejectsWith(
    t,
    b.withLock(() => t.fail(), { timeout: 100 }),
    ERR_SHMPIPE_TIMEOUT,
  )
  const took = performance.now() - start
  t.true(took >= 95 && took < 1500, `${took} ms`)
  const controller = new AbortController()
  const aborted = handled(b.withLock(() => t.fail(), { signal: controller.signal }))
  setTimeout(() => controller.abort(new Error('stop')), 50)
  t.is((await t.throwsAsync(aborted))?.message, 'stop')
  t.false(b.locked)
  const pre = new Error('aborted before')
  t.is(await t.throwsAsync(b.withLock(() => t.fail(), { signal: AbortSignal.abort(pre) })), pre)
  // Queued behind a pending call of the same handle.
  const order: string[] = []
  const first = handled(b.withLock(() => void order.push('first')))
  start = performance.now()
  await rejectsWith(
    t,
    b.withLock(() => t.fail(), { timeout: 50 }),
    ERR_SHMPIPE_TIMEOUT,
  )
  t.true(performance.now() - start < 1000, 'gave up in line, not when its turn came')
  const queuedController = new AbortController()
  const queuedAbort = handled(b.withLock(() => t.fail(), { signal: queuedController.signal }))
  queuedController.abort(new Error('queued stop'))
  t.is((await t.throwsAsync(queuedAbort))?.message, 'queued stop')
  const third = b.withLock(() => void order.push('third'))
  await sleep(50)
  t.deepEqual(order, [], 'both wait for the lock')
  a.unlock()
  await first
  await third
  t.deepEqual(order, ['first', 'third'])
  t.false(b.locked)
})

test('withLock of a closed handle, and a handle closed while its withLock waits: CLOSED', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 1)
  const b = SharedArray.attach(name)
  t.teardown(() => a.close())
  a.lock()
  const waiting = handled(b.withLock(() => t.fail()))
  await sleep(50)
  b.close()
  await rejectsWith(t, waiting, ERR_SHMPIPE_CLOSED)
  await rejectsWith(
    t,
    b.withLock(() => t.fail()),
    ERR_SHMPIPE_CLOSED,
  )
  a.unlock()
  t.deepEqual(a.tryLock(), { recovered: false, previousOwnerPid: null }, 'b never held it')
  a.unlock()
})

test('a handle closed while holding the lock: the next holder is told it was recovered', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 1)
  const b = SharedArray.attach(name)
  t.teardown(() => b.close())
  a.lock()
  const waiting = b.withLock((info) => info)
  await sleep(20)
  a.close() // while holding: whatever it was writing is cut short
  t.deepEqual(await waiting, { recovered: true, previousOwnerPid: process.pid })
  t.deepEqual(b.tryLock(), { recovered: false, previousOwnerPid: null }, 'told once')
  b.unlock()
})

// ---------------------------------------------------------------------------------------------
// 4. The lock across processes

test('withLock across processes: 4 incrementing and 4 decrementing children end at 0', async (t) => {
  const N = 1000
  const name = arrayName(t)
  const a = SharedArray.create(name, Float64Array, 3)
  t.teardown(() => a.close())
  const children = [1, 1, 1, 1, -1, -1, -1, -1].map((delta, i) =>
    startArrayChild(t, 'count', [name, String(delta), String(N), i % 2 === 0 ? 'async' : 'sync']),
  )
  for (const c of children) t.is(await c.next(), 'ready')
  const start = performance.now()
  a.data[2] = 1 // go
  for (const c of children) {
    t.deepEqual(await c.next(60_000), { recovered: 0 })
    t.deepEqual(await c.exited, { code: 0, signal: null }, c.stderr())
  }
  t.log(`${8 * N} locked read-modify-writes in ${(performance.now() - start).toFixed(0)} ms`)
  t.is(a.data[1], 8 * N, 'every operation ran')
  t.is(a.data[0], 0, 'no update was lost')
})

test('a child killed while holding the lock: a waiting withLock takes it over and is told', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Float64Array, 2)
  t.teardown(() => a.close())
  for (const role of ['hold', 'hold-async']) {
    const child = startArrayChild(t, role, [name])
    const { held } = (await child.next()) as { held: number }
    t.is(held, child.process.pid!)
    await rejectsWith(
      t,
      a.withLock(() => t.fail(), { timeout: 200 }),
      ERR_SHMPIPE_TIMEOUT,
    )
    const waiting = a.withLock((info) => info, { timeout: 10_000 })
    await sleep(50)
    child.process.kill('SIGKILL')
    const start = performance.now()
    t.deepEqual(await waiting, { recovered: true, previousOwnerPid: held }, role)
    t.true(performance.now() - start < 2000, `${role}: recovered within 2 s`)
    t.deepEqual(await child.exited, { code: null, signal: 'SIGKILL' })
  }
  t.is(a.data[1], -1, 'the dead holder’s half-done write is there to repair')
})

test('a child waits for the lock held here: times out, or gets it when released', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 1)
  t.teardown(() => a.close())
  a.lock()
  const timesOut = startArrayChild(t, 'lock-report', [name, '300'])
  t.is(await timesOut.next(), 'ready')
  const outcome = (await timesOut.next()) as { code: string; ms: number }
  t.is(outcome.code, ERR_SHMPIPE_TIMEOUT)
  t.true(outcome.ms >= 295, `${outcome.ms} ms`)
  const getsIt = startArrayChild(t, 'lock-report', [name, '10000'])
  t.is(await getsIt.next(), 'ready')
  await sleep(200)
  a.unlock()
  const got = (await getsIt.next()) as { info: unknown; ms: number }
  t.deepEqual(got.info, { recovered: false, previousOwnerPid: null })
  t.deepEqual(await getsIt.exited, { code: 0, signal: null }, getsIt.stderr())
})

test('a worker thread terminated while holding the lock: the lock is recovered', async (t) => {
  const name = arrayName(t)
  const a = SharedArray.create(name, Int32Array, 1)
  t.teardown(() => a.close())
  // tsx registered in the worker first, as in pipe-memory.test.ts.
  const code = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(pathToFileURL(arrayChild).href)}) })` // prettier-ignore
  const worker = new Worker(code, { eval: true, workerData: { role: 'worker-hold', args: [name] } })
  t.teardown(() => worker.terminate())
  const held = await new Promise((resolve, reject) => {
    worker.once('message', resolve)
    worker.once('error', reject)
  })
  t.is(held, 'held')
  t.is(a.tryLock(), null)
  await worker.terminate()
  const info = await a.withLock((info) => info, { timeout: 5000 })
  t.deepEqual(info, { recovered: true, previousOwnerPid: process.pid })
})
