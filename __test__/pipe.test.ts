/**
 * Tests of the pipe (Sender, Receiver, createSharedMemoryPair) with real child processes and real
 * shared memory. Child roles live in `helpers/child.ts`; values and comparisons in
 * `helpers/values.ts`.
 *
 * Serial tests (timings, 1 GiB transfers, leak checks) run first, one at a time, so that nothing
 * else in this process competes with what they measure.
 */

import { isDeepStrictEqual } from 'node:util'
import { Worker } from 'node:worker_threads'
import { pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_BUSY,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_NOT_FOUND,
  ERR_SHMPIPE_PEER_GONE,
  ERR_SHMPIPE_RECEIVER_TAKEN,
  ERR_SHMPIPE_TIMEOUT,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ReceivedMessage,
  Receiver,
  Sender,
  ShmpipeError,
  type PipeOptions,
  type ShmpipeErrorCode,
} from '../index.js'
import {
  childPids,
  childScript,
  entry,
  forkChild,
  shmExists,
  shmSegments,
  spawnNode,
  startChild,
  type Child,
} from './helpers/processes.js'
import {
  catalogue,
  checkPattern,
  difference,
  fillPattern,
  mpscValue,
  patternByte,
  v8RoundTrip,
  ValueGenerator,
} from './helpers/values.js'

const GiB = 2 ** 30

/** A pair whose ends are closed when the test ends. */
function pair(t: ExecutionContext, options: PipeOptions = {}): [Sender, Receiver] {
  const [sender, receiver] = createSharedMemoryPair(options)
  t.teardown(() => {
    sender.close()
    receiver.close()
  })
  return [sender, receiver]
}

/** Awaits `promise`, which must reject with a ShmpipeError of `code`; returns it. */
async function rejectsWith(
  t: ExecutionContext,
  promise: Promise<unknown>,
  code: ShmpipeErrorCode,
  message?: string,
): Promise<ShmpipeError> {
  const err = await t.throwsAsync(promise, { instanceOf: ShmpipeError }, message)
  t.is(err?.code, code, message)
  return err as ShmpipeError
}

/** Calls `fn`, which must throw a ShmpipeError of `code`; returns it. */
function throwsWith(t: ExecutionContext, fn: () => unknown, code: ShmpipeErrorCode): ShmpipeError {
  const err = t.throws(fn, { instanceOf: ShmpipeError })
  t.is(err?.code, code)
  return err as ShmpipeError
}

/** Milliseconds `promise` takes to settle (either way). */
async function settleTime(promise: Promise<unknown>): Promise<number> {
  const start = performance.now()
  await promise.catch(() => {})
  return performance.now() - start
}

/**
 * An echo child: values put into `toChild` come back, in order, from `fromChild`.
 *
 * The parent creates both pipes. It gives up the receiving end of `toChild` (the child attaches
 * as its receiver) and keeps its own sender of `fromChild` open until the child's sender is
 * attached, so the stream from the child cannot end before it started.
 */
async function startEcho(t: ExecutionContext, options: PipeOptions = {}) {
  const [toChild, unusedReceiver] = pair(t, options)
  unusedReceiver.close()
  const [ownSender, fromChild] = pair(t, options)
  const child = startChild(t, 'echo', [toChild.name, fromChild.name])
  t.is(await child.next(), 'ready')
  ownSender.close()
  let echoed = 0
  return {
    toChild,
    fromChild,
    child,
    async roundTrip(value: unknown): Promise<unknown> {
      await toChild.put(value, { timeout: 10_000 })
      const out = await fromChild.get({ timeout: 10_000 })
      echoed++
      return out
    },
    /** Counts values sent by the caller through `toChild` itself (not with roundTrip). */
    count(n: number): void {
      echoed += n
    },
    /** Closes the pipe to the child; the child's stream then ends, and so does ours. */
    async finish(): Promise<void> {
      toChild.close()
      const rest: unknown[] = []
      for await (const v of fromChild) rest.push(v)
      t.deepEqual(rest, [], 'nothing more came back')
      t.deepEqual(await child.next(), { echoed })
      t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
    },
  }
}

// ---------------------------------------------------------------------------------------------
// Leak check over the whole file

let segmentsBefore = new Map<string, number>()

test.before(() => {
  segmentsBefore = shmSegments()
})

test.after.always('no shmpipe segment made by this process or its children is left', (t) => {
  const ours = new Set([process.pid, ...childPids])
  const left = [...shmSegments()].filter(
    ([name, pid]) => !segmentsBefore.has(name) && ours.has(pid),
  )
  t.deepEqual(left, [], `left in /dev/shm: ${left.map(([n, p]) => `${n} (pid ${p})`).join(', ')}`)
})

// ---------------------------------------------------------------------------------------------
// 1. Every supported type through a child process

test('every supported type round-trips through a child process like v8', async (t) => {
  const echo = await startEcho(t)
  const cases = catalogue()
  const incomparable: string[] = []
  for (const [name, value] of cases) {
    const expected = v8RoundTrip(value)
    const out = await echo.roundTrip(value)
    t.is(difference(out, expected), null, name)
    // isDeepStrictEqual cannot compare a few values even with themselves (an invalid Date):
    // use it where it can tell two v8 round trips of the value are equal.
    if (isDeepStrictEqual(v8RoundTrip(value), expected))
      t.true(isDeepStrictEqual(out, expected), `${name}: isDeepStrictEqual`)
    else incomparable.push(name)
    if (typeof value === 'object' && value !== null) {
      t.not(out, value, `${name}: a new object`)
      t.is(Object.getPrototypeOf(out), Object.getPrototypeOf(expected), `${name}: prototype`)
      t.is((out as object).constructor, (expected as object).constructor, `${name}: constructor`)
    } else {
      t.is(typeof out, typeof value, `${name}: typeof`)
    }
  }
  t.log(`${cases.length} values; not comparable by isDeepStrictEqual: ${incomparable.join(', ')}`)

  // Explicit checks of what must hold whatever v8 does.
  const get = (name: string): unknown => echo.roundTrip(cases.find(([n]) => n === name)![1])
  t.true(Object.is(await get('number -0'), -0))
  t.true(Number.isNaN(await get('number NaN')))
  t.is(await get('number -Infinity'), -Infinity)
  t.is(await get('bigint -(2^1000)+1'), -(2n ** 1000n) + 1n)
  t.is(await get('bigint 2^63'), 2n ** 63n)
  t.is(await get('emoji string'), '😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈')
  t.is(await get('lone surrogates'), 'a\ud800b\udc00c')
  t.is(await get('undefined'), undefined)
  t.is(await get('null'), null)
  const date = await get('Date now-ish')
  t.true(date instanceof Date && date.getTime() === 1_700_000_000_123)
  const re = (await get('RegExp with flags')) as RegExp
  t.true(re instanceof RegExp && re.flags === 'dgimsy' && re.source === '^x.*?y$')
  const err = (await get('Error with cause')) as Error
  t.true(err instanceof Error)
  t.is(err.name, 'Error')
  t.is(err.message, 'outer')
  t.true(err.cause instanceof TypeError)
  t.is((err.cause as Error).message, 'inner')
  for (const C of [EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError]) {
    const e = (await get(C.name)) as Error
    t.is(e.constructor, C)
    t.is(e.name, C.name)
    t.is(e.message, `a ${C.name} message`)
  }
  const holes = (await get('array with holes')) as unknown[]
  t.is(holes.length, 6)
  t.deepEqual(Object.keys(holes), ['0', '2', '5'])
  t.false(1 in holes)
  const sparse = (await get('sparse array')) as unknown[]
  t.is(sparse.length, 1_000_001)
  t.deepEqual(Object.keys(sparse), ['3', '1000000'])
  const map = (await get('Map')) as Map<unknown, unknown>
  t.true(map instanceof Map)
  t.is(map.get('a'), 1)
  t.true(Object.is(map.get(NaN), -0))
  const set = (await get('Set')) as Set<unknown>
  t.true(set instanceof Set && set.has(1n) && set.has('1') && set.size === 8)
  for (const name of ['ArrayBuffer', 'empty ArrayBuffer'])
    t.is(Object.prototype.toString.call(await get(name)), '[object ArrayBuffer]')
  const dv = (await get('DataView')) as DataView
  t.true(dv instanceof DataView)
  t.is(dv.byteLength, 21)
  for (const C of [
    Int8Array,
    Uint8Array,
    Uint8ClampedArray,
    Int16Array,
    Uint16Array,
    Int32Array,
    Uint32Array,
    Float32Array,
    Float64Array,
    BigInt64Array,
    BigUint64Array,
  ]) {
    // prettier-ignore
    const out = (await get(C.name)) as InstanceType<typeof C>
    t.is(out.constructor, C, C.name)
    t.is(out.length, 13, C.name)
    t.false(Buffer.isBuffer(out), C.name)
  }
  t.deepEqual(
    [...((await get('BigUint64Array extremes')) as BigUint64Array)],
    [0n, 2n ** 64n - 1n, 2n ** 63n],
  )
  for (const name of ['Buffer', 'empty Buffer', 'Buffer from the pool (non-zero offset)']) {
    const out = await get(name)
    t.true(Buffer.isBuffer(out), `${name} comes back a Buffer`)
  }
  const shared = (await get('shared references')) as {
    a: object
    b: object
    list: object[]
    map: Map<object, object>
  }
  t.is(shared.a, shared.b)
  t.is(shared.list[0], shared.a)
  t.is(shared.list[1], shared.a)
  t.is([...shared.map][0]![0], shared.a)
  t.is([...shared.map][0]![1], shared.a)
  const sharedView = (await get('shared typed array')) as [Uint16Array, { again: Uint16Array }]
  t.is(sharedView[0], sharedView[1].again)
  const cyclic = (await get('circular object')) as Record<string, unknown>
  t.is(cyclic.self, cyclic)
  t.is((cyclic.list as unknown[])[0], cyclic)
  t.is(((cyclic.list as unknown[])[1] as { parent: unknown }).parent, cyclic)
  const cyclicArray = (await get('circular array')) as unknown[]
  t.is(cyclicArray[1], cyclicArray)
  t.is((cyclicArray[2] as unknown[])[0], cyclicArray)
  const cyclicMap = (await get('circular Map')) as Map<unknown, unknown>
  t.is(cyclicMap.get('me'), cyclicMap)
  t.is(cyclicMap.get(cyclicMap), 'as key')
  const cyclicSet = (await get('circular Set')) as Set<unknown>
  t.true(cyclicSet.has(cyclicSet))

  await echo.finish()
})

// ---------------------------------------------------------------------------------------------
// 2. Random values through a child process

test('2000 random nested values (seeded) round-trip through a child process like v8', async (t) => {
  // A small pipe, so that both directions fill up and wait, with 1 MiB of ring: values above
  // 64 KiB are written in place, those above half the ring travel in a segment of their own.
  const echo = await startEcho(t, { capacity: 16, bytes: 1 << 20 })
  const gen = new ValueGenerator(0xc0ffee)
  const CASES = 2000
  const values: unknown[] = []
  for (let i = 0; i < CASES; i++) {
    const value = gen.value(4)
    if (i % 97 === 0) {
      // A large binary value now and then (600 KB: a message of its own segment).
      const big = new Uint8Array(600_000)
      fillPattern(big, i)
      values.push({ i, value, big })
    } else values.push(value)
  }
  const sending = (async () => {
    for (const v of values) await echo.toChild.put(v, { timeout: 20_000 })
  })()
  const failures: string[] = []
  let comparable = 0
  for (let i = 0; i < CASES; i++) {
    const out = await echo.fromChild.get({ timeout: 20_000 })
    const expected = v8RoundTrip(values[i])
    const d = difference(out, expected)
    if (d !== null) failures.push(`case ${i}: ${d}`)
    if (isDeepStrictEqual(v8RoundTrip(values[i]), expected)) {
      comparable++
      if (!isDeepStrictEqual(out, expected)) failures.push(`case ${i}: not isDeepStrictEqual`)
    }
    if (failures.length >= 5) break
  }
  await sending
  echo.count(CASES)
  t.deepEqual(failures, [])
  t.true(comparable > CASES * 0.9, `${comparable} compared with isDeepStrictEqual too`)
  // The generator made every kind of value, shared references and cycles.
  const kinds = ['shared reference', 'cycle', 'object', 'array', 'array with holes', 'sparse array', 'Map', 'Set', 'Date', 'RegExp', 'boxed primitive', 'ArrayBuffer', 'Buffer', 'DataView', 'Error', 'EvalError', 'RangeError', 'ReferenceError', 'SyntaxError', 'TypeError', 'URIError', 'Int8Array', 'Uint8Array', 'Uint8ClampedArray', 'Int16Array', 'Uint16Array', 'Int32Array', 'Uint32Array', 'Float32Array', 'Float64Array', 'BigInt64Array', 'BigUint64Array'] // prettier-ignore
  for (const kind of kinds)
    t.true((gen.made.get(kind) ?? 0) >= 20, `${kind}: ${gen.made.get(kind)}`)
  t.log([...gen.made].map(([k, n]) => `${k} ${n}`).join(', '))
  await echo.finish()
})
