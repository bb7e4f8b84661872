/**
 * Tests of the pipe (Sender, Receiver, createSharedMemoryPair) with real child processes and real
 * shared memory. Child roles live in `helpers/child.ts`; values and comparisons in
 * `helpers/values.ts`.
 *
 * Serial tests (timings, 1 GiB transfers, leak checks) run first, one at a time, so that nothing
 * else in this process competes with what they measure.
 */

import { rmSync } from 'node:fs'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
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
  ERR_SHMPIPE_TOO_MANY_SENDERS,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ReceivedMessage,
  Receiver,
  Sender,
  ShmpipeError,
  type PipeOptions,
  type ShmpipeErrorCode,
} from '../index.js'
import {
  checkNoSegmentLeaks,
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
  viewsValue,
  TYPED_ARRAYS,
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

/**
 * Returns `promise`, marked as handled: if the test fails before awaiting it, its later rejection
 * (when the teardown closes the pipe) is not an unhandled rejection that fails the whole file.
 */
function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
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
async function startEcho(
  t: ExecutionContext,
  options: PipeOptions = {},
  toChildOptions: PipeOptions = options,
) {
  const [toChild, unusedReceiver] = pair(t, toChildOptions)
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
// Leak check after every test

checkNoSegmentLeaks(test)

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
  for (const C of TYPED_ARRAYS) {
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
  // The pipe to the child has one sender slot (the single-producer path of the core).
  const options = { capacity: 16, bytes: 1 << 20 }
  const echo = await startEcho(t, options, { ...options, maxSenders: 1 })
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

// ---------------------------------------------------------------------------------------------
// 3. Timeouts

test.serial(
  'timeouts: get/getSync on an empty pipe, put/putSync/waitForAllAck on a full one',
  async (t) => {
    const [sender, receiver] = pair(t, { capacity: 2 })
    t.is(receiver.getNowait(), undefined)

    for (const [what, call] of [
      ['get', () => receiver.get({ timeout: 100 })],
      ['receive', () => receiver.receive({ timeout: 100 })],
      ['getSync', async () => receiver.getSync({ timeout: 100 })],
    ] as const) {
      const start = performance.now()
      await rejectsWith(t, call(), ERR_SHMPIPE_TIMEOUT, what)
      const elapsed = performance.now() - start
      t.true(elapsed >= 100 && elapsed < 300, `${what}: ${elapsed.toFixed(1)} ms`)
    }
    t.true(
      (await settleTime(rejectsWith(t, receiver.get({ timeout: 0 }), ERR_SHMPIPE_TIMEOUT))) < 100,
    )

    // Full at 2 values.
    t.true(sender.hasSpace())
    t.true(sender.tryPut('a'))
    t.true(sender.tryPut('b'))
    t.false(sender.hasSpace())
    t.false(sender.tryPut('c'))
    t.is(sender.sent, 2)
    for (const [what, call] of [
      ['put', () => sender.put('d', { timeout: 100 })],
      ['putSync', async () => sender.putSync('e', { timeout: 100 })],
      ['waitForAllAck', () => sender.waitForAllAck({ timeout: 100 })],
    ] as const) {
      const start = performance.now()
      await rejectsWith(t, call(), ERR_SHMPIPE_TIMEOUT, what)
      const elapsed = performance.now() - start
      t.true(elapsed >= 100 && elapsed < 300, `${what}: ${elapsed.toFixed(1)} ms`)
    }
    // Nothing that timed out was sent.
    t.is(sender.sent, 2)
    t.is(sender.acked, 0)
    t.is(receiver.getNowait(), 'a')
    t.true(sender.tryPut('f'))
    t.is(await receiver.get({ timeout: 100 }), 'b')
    t.is(receiver.getSync({ timeout: 100 }), 'f')
    t.is(receiver.getNowait(), undefined)
    t.is(sender.acked, 3)
    await sender.waitForAllAck({ timeout: 100 })
  },
)

test.serial(
  'a wait with a timeout succeeds when a child process fills the pipe in time',
  async (t) => {
    const [ownSender, receiver] = pair(t, { capacity: 4 })
    const child = startChild(t, 'count', [receiver.name, '3'])
    // No deadline is near: the child starts within a few hundred ms.
    t.is(await receiver.get({ timeout: 10_000 }), 0)
    ownSender.close()
    t.is(receiver.getSync({ timeout: 10_000 }), 1)
    t.is(await receiver.get({ timeout: 10_000 }), 2)
    await rejectsWith(t, receiver.get({ timeout: 10_000 }), ERR_SHMPIPE_CLOSED)
    t.deepEqual(await child.exited, { code: 0, signal: null })
  },
)

test('sync calls refuse to overtake pending asynchronous ones (BUSY)', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 1 })
  const pending = handled(receiver.get())
  throwsWith(t, () => receiver.getSync({ timeout: 0 }), ERR_SHMPIPE_BUSY)
  t.is(receiver.getNowait(), undefined, 'getNowait while a get is pending')
  sender.putSync('x')
  t.is(await pending, 'x')
  sender.putSync('y')
  const waiting = handled(sender.put('z'))
  throwsWith(t, () => sender.putSync('w', { timeout: 0 }), ERR_SHMPIPE_BUSY)
  t.false(sender.tryPut('w'))
  t.is(receiver.getSync(), 'y')
  await waiting
  t.is(receiver.getSync(), 'z')
  t.is(receiver.getNowait(), undefined)
})

/** How `promise` settles within `ms`: 'resolved', the error's code (or the error), or 'pending'. */
async function outcomeWithin(promise: Promise<unknown>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined
  const pending = new Promise((resolve) => (timer = setTimeout(() => resolve('pending'), ms)))
  const settled = promise.then(
    () => 'resolved',
    (err: unknown) => (err instanceof ShmpipeError ? err.code : err),
  )
  try {
    return await Promise.race([settled, pending])
  } finally {
    clearTimeout(timer)
  }
}

test.serial(
  'a timeout counts while the call waits behind an earlier pending call of its end',
  async (t) => {
    const [sender, receiver] = pair(t, { capacity: 1 })
    // get: an earlier get() without a timeout waits for the next value, the later one for the
    // value after it; the later one's 100 ms must still be 100 ms.
    const first = handled(receiver.get())
    const start = performance.now()
    t.is(await outcomeWithin(receiver.get({ timeout: 100 }), 1000), ERR_SHMPIPE_TIMEOUT, 'get')
    t.true(performance.now() - start < 300, `get: ${(performance.now() - start).toFixed(0)} ms`)
    sender.putSync('for the first get')
    t.is(await outcomeWithin(first, 1000), 'resolved')

    // put and waitForAllAck behind a put waiting for space.
    const [sender2, receiver2] = pair(t, { capacity: 1 })
    sender2.putSync('full')
    const firstPut = handled(sender2.put('waits for space'))
    t.is(await outcomeWithin(sender2.put('x', { timeout: 100 }), 1000), ERR_SHMPIPE_TIMEOUT, 'put')
    t.is(await outcomeWithin(sender2.waitForAllAck({ timeout: 100 }), 1000), ERR_SHMPIPE_TIMEOUT, 'waitForAllAck') // prettier-ignore
    t.is(receiver2.getNowait(), 'full')
    t.is(await outcomeWithin(firstPut, 1000), 'resolved')
  },
)

// ---------------------------------------------------------------------------------------------
// 4. Abort

test('large values from get() stay intact while their sender reuses the segments of collected ones', async (t) => {
  // Values over half of this 64 KiB ring travel in segments of their own, which the sender
  // reuses once the receiver is done with them: for get(), once the value is garbage-collected.
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 64 << 10 })
  const held: [number, Uint8Array][] = []
  for (let i = 0; i < 40; i++) {
    await sender.put(new Uint8Array(200_000).fill(i))
    const value = (await receiver.get()) as Uint8Array
    t.is(value[0], i)
    // Keep every third value; let the others be collected, so that their segments are reused.
    if (i % 3 === 0) held.push([i, value])
    if (i % 4 === 3) {
      gc()
      await new Promise((resolve) => setImmediate(resolve)) // finalizers run on the event loop
    }
  }
  for (const [i, value] of held) {
    t.true(
      value.every((b) => b === i),
      `value ${i} was written over`,
    )
  }
  sender.close()
  receiver.close()
})

test('abort: get and receive reject with the reason, take nothing, and the receiver goes on', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 4 })
  const reason = new Error('stop waiting')
  const ac = new AbortController()
  const pending = handled(receiver.get({ signal: ac.signal }))
  setTimeout(() => ac.abort(reason), 50)
  t.is(await t.throwsAsync(pending), reason)

  // The aborted get took nothing: the next value goes to the next get.
  sender.putSync('after abort')
  t.is(await receiver.get({ timeout: 1000 }), 'after abort')

  // An already aborted signal: rejects at once, even with a value ready, and takes nothing.
  sender.putSync('ready')
  const aborted = AbortSignal.abort(reason)
  t.is(await t.throwsAsync(receiver.get({ signal: aborted })), reason)
  t.is(await t.throwsAsync(receiver.receive({ signal: aborted })), reason)
  t.is(receiver.getNowait(), 'ready')

  // The default reason (an AbortError DOMException) is passed on as it is.
  const ac2 = new AbortController()
  const pending2 = handled(receiver.receive({ signal: ac2.signal }))
  setTimeout(() => ac2.abort(), 50)
  const err = await pending2.then(
    () => t.fail('should reject'),
    (e: unknown) => e,
  )
  t.is(err, ac2.signal.reason)
  t.is((err as DOMException).name, 'AbortError')

  // A timeout and a signal: whichever comes first.
  const ac3 = new AbortController()
  await rejectsWith(t, receiver.get({ timeout: 50, signal: ac3.signal }), ERR_SHMPIPE_TIMEOUT)
  ac3.abort(reason)

  sender.putSync('last')
  t.is(await receiver.get({ timeout: 1000 }), 'last')
})

test('abort: put and waitForAllAck reject with the reason and send nothing', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 2 })
  const reason = new Error('stop putting')
  sender.putSync(1)
  sender.putSync(2)
  const ac = new AbortController()
  const pending = handled(sender.put('never', { signal: ac.signal }))
  setTimeout(() => ac.abort(reason), 50)
  t.is(await t.throwsAsync(pending), reason)
  t.is(sender.sent, 2)

  // Already aborted: rejects at once, also when there is room.
  t.is(await t.throwsAsync(sender.put('never', { signal: AbortSignal.abort(reason) })), reason)
  t.is(receiver.getNowait(), 1)
  t.is(await t.throwsAsync(sender.put('never', { signal: AbortSignal.abort(reason) })), reason)
  t.is(sender.sent, 2)

  const ac2 = new AbortController()
  const acking = handled(sender.waitForAllAck({ signal: ac2.signal }))
  setTimeout(() => ac2.abort(reason), 50)
  t.is(await t.throwsAsync(acking), reason)

  // The sender goes on: a put after the aborted ones is the next value.
  const put3 = handled(sender.put(3))
  t.is(await receiver.get({ timeout: 1000 }), 2)
  await put3
  t.is(await receiver.get({ timeout: 1000 }), 3)
  t.is(receiver.getNowait(), undefined, 'no aborted value arrived')
  t.is(sender.sent, 3)
  await sender.waitForAllAck({ timeout: 1000 })
})

test('abort: a call waiting behind an earlier pending call of its end is aborted at once', async (t) => {
  const reason = new Error('stop')
  const [sender, receiver] = pair(t, { capacity: 1 })
  const firstGet = handled(receiver.get())
  const ac = new AbortController()
  const secondGet = handled(receiver.get({ signal: ac.signal }))
  setTimeout(() => ac.abort(reason), 50)
  t.is(await outcomeWithin(secondGet, 1000), reason, 'get')

  const [sender2, receiver2] = pair(t, { capacity: 1 })
  sender2.putSync('full')
  const firstPut = handled(sender2.put('waits for space'))
  const ac2 = new AbortController()
  const secondPut = handled(sender2.put('aborted', { signal: ac2.signal }))
  const ack = handled(sender2.waitForAllAck({ signal: ac2.signal }))
  setTimeout(() => ac2.abort(reason), 50)
  t.is(await outcomeWithin(secondPut, 1000), reason, 'put')
  t.is(await outcomeWithin(ack, 1000), reason, 'waitForAllAck')

  // The earlier calls are unaffected, and the aborted put sent nothing.
  sender.putSync('for the first get')
  t.is(await firstGet, 'for the first get')
  t.is(receiver2.getNowait(), 'full')
  await firstPut
  t.is(receiver2.getNowait(), 'waits for space')
  t.is(receiver2.getNowait(), undefined)
})

// ---------------------------------------------------------------------------------------------
// 5. Many senders in many processes

test('MPSC: 4 forked child processes × 500 values, each arrives once and in order per producer', async (t) => {
  const PRODUCERS = 4
  const COUNT = 500
  // A small pipe: the producers wait for space and interleave.
  const [ownSender, receiver] = pair(t, { capacity: 64, bytes: 64 << 10 })
  const children: Child[] = []
  for (let p = 0; p < PRODUCERS; p++)
    children.push(forkChild(t, 'produce', [receiver.name, String(p), String(COUNT)]))
  for (const c of children) t.is(await c.next(), 'ready')
  ownSender.close() // every child's sender is attached
  for (const c of children) c.process.send('go')

  const next = new Array<number>(PRODUCERS).fill(0)
  const order: number[] = []
  const problems: string[] = []
  for await (const value of receiver) {
    const { producer, seq } = value as { producer: number; seq: number }
    if (next[producer] !== seq) problems.push(`producer ${producer}: seq ${seq}, expected ${next[producer]}`) // prettier-ignore
    const d = difference(value, mpscValue(producer, seq))
    if (d !== null) problems.push(`producer ${producer} seq ${seq}: ${d}`)
    next[producer] = seq + 1
    order.push(producer)
    if (problems.length > 5) break
  }
  t.deepEqual(problems, [])
  t.deepEqual(next, new Array<number>(PRODUCERS).fill(COUNT), 'every value of every producer')
  t.is(order.length, PRODUCERS * COUNT)
  // How interleaved the stream was (not asserted: scheduling decides).
  let switches = 0
  for (let i = 1; i < order.length; i++) if (order[i] !== order[i - 1]) switches++
  t.log(`${switches} switches between producers in ${order.length} values`)
  for (const c of children) {
    t.is(await c.next(), 'done')
    t.deepEqual(await c.exited, { code: 0, signal: null }, c.stderr())
  }
  await rejectsWith(t, receiver.get({ timeout: 1000 }), ERR_SHMPIPE_CLOSED)
})

// ---------------------------------------------------------------------------------------------
// 6. A plain `node -e` child

test('a child attached by name from a plain spawn of `node -e`', async (t) => {
  const [ownSender, receiver] = pair(t)
  // Plain JavaScript, as a user would write it. Node 20 cannot load TypeScript by itself and the
  // package has no compiled JavaScript, so the child is given tsx (--import=tsx) to load index.ts.
  const code = `
    const name = process.argv[1]
    import(${JSON.stringify(pathToFileURL(entry).href)}).then(async ({ Sender }) => {
      const sender = Sender.attach(name)
      await sender.put({ from: 'node -e', pid: process.pid, name, buf: Buffer.from('héllo'), map: new Map([[1, [2n]]]) })
      for (let i = 0; i < 100; i++) await sender.put(i)
      await sender.waitForAllAck({ timeout: 10000 })
      sender.close()
    }).catch((err) => { console.error(err); process.exit(1) })
  `
  const child = spawnNode(t, ['--import=tsx', '-e', code, receiver.name])
  const first = (await receiver.get({ timeout: 20_000 })) as Record<string, unknown>
  ownSender.close()
  t.is(first.from, 'node -e')
  t.is(first.pid, child.process.pid)
  t.is(first.name, receiver.name)
  t.true(Buffer.isBuffer(first.buf))
  t.is((first.buf as Buffer).toString(), 'héllo')
  t.deepEqual(first.map, new Map([[1, [2n]]]))
  const rest: unknown[] = []
  for await (const v of receiver) rest.push(v)
  t.deepEqual(
    rest,
    Array.from({ length: 100 }, (_, i) => i),
  )
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})

// ---------------------------------------------------------------------------------------------
// 8. Unsupported values

test('unsupported values reject with UNSUPPORTED_TYPE and the path, leaving the queue unchanged', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 4 })
  class Point {
    x = 1
  }
  const cases: [string, unknown, RegExp][] = [
    ['function', () => 1, /^Cannot encode value: .*function/],
    ['symbol', Symbol('s'), /^Cannot encode value: symbol/],
    ['class instance', new Point(), /^Cannot encode value: .*Point/],
    ['WeakMap', new WeakMap(), /^Cannot encode value: WeakMap/],
    [
      'nested function',
      { a: [1, 2, { fn() {} }] },
      /^Cannot encode value\.a\[2\]\.fn: function fn/,
    ],
    ['Promise in a Map', new Map([['p', Promise.resolve()]]), /value\.get\("p"\)/],
    ['symbol in a Set', new Set([1, Symbol('x')]), /value\.<Set element #1>/],
    ['SharedArrayBuffer', { sab: new SharedArrayBuffer(8) }, /value\.sab: SharedArrayBuffer/],
  ]
  sender.putSync('before')
  for (const [name, value, message] of cases) {
    const e1 = await rejectsWith(t, sender.put(value), ERR_SHMPIPE_UNSUPPORTED_TYPE, name)
    t.regex(e1.message, message, name)
    t.regex(throwsWith(t, () => sender.putSync(value), ERR_SHMPIPE_UNSUPPORTED_TYPE).message, message) // prettier-ignore
    t.regex(throwsWith(t, () => sender.tryPut(value), ERR_SHMPIPE_UNSUPPORTED_TYPE).message, message) // prettier-ignore
    t.is(sender.sent, 1, `${name}: nothing sent`)
  }
  t.is(receiver.getNowait(), 'before')
  t.is(receiver.getNowait(), undefined)
  t.is(sender.sent, 1)
  // The sender still works.
  await sender.put('after')
  t.is(receiver.getNowait(), 'after')
})

// ---------------------------------------------------------------------------------------------
// Attaching

test('attach: unknown names, one receiver at a time, and no hand-over after a clean close', async (t) => {
  throwsWith(t, () => Sender.attach('shmpipe_0000000000000000'), ERR_SHMPIPE_NOT_FOUND)
  throwsWith(t, () => Receiver.attach('shmpipe_0000000000000000'), ERR_SHMPIPE_NOT_FOUND)
  const [sender, receiver] = pair(t, { capacity: 4 })
  t.is(receiver.getNowait(), undefined) // used: the pair's receiver registers on first use
  throwsWith(t, () => Receiver.attach(sender.name), ERR_SHMPIPE_RECEIVER_TAKEN)
  const taken = startChild(t, 'try-attach', ['receiver', sender.name])
  t.deepEqual(await taken.next(), { ok: false, name: 'ShmpipeError', code: ERR_SHMPIPE_RECEIVER_TAKEN }) // prettier-ignore
  const asSender = startChild(t, 'try-attach', ['sender', sender.name])
  t.deepEqual(await asSender.next(), { ok: true })
  // A receiver that was used and closed cleanly: the pipe has no receiver any more.
  receiver.close()
  throwsWith(t, () => Receiver.attach(sender.name), ERR_SHMPIPE_CLOSED)
  const refused = startChild(t, 'try-attach', ['receiver', sender.name])
  t.deepEqual(await refused.next(), { ok: false, name: 'ShmpipeError', code: ERR_SHMPIPE_CLOSED })
  await rejectsWith(t, sender.put('x'), ERR_SHMPIPE_CLOSED)
})

test('attach: maxSenders live senders at most; a closed sender’s slot is reused', async (t) => {
  const [sender, receiver] = pair(t, { maxSenders: 2 })
  sender.putSync('registers the pair’s sender')
  const second = Sender.attach(sender.name)
  t.teardown(() => second.close())
  throwsWith(t, () => Sender.attach(sender.name), ERR_SHMPIPE_TOO_MANY_SENDERS)
  const child = startChild(t, 'try-attach', ['sender', sender.name])
  t.deepEqual(await child.next(), { ok: false, name: 'ShmpipeError', code: ERR_SHMPIPE_TOO_MANY_SENDERS }) // prettier-ignore
  second.close()
  const third = Sender.attach(sender.name)
  t.teardown(() => third.close())
  third.putSync('from the reused slot')
  t.is(receiver.getNowait(), 'registers the pair’s sender')
  t.is(receiver.getNowait(), 'from the reused slot')
})

test('attach: the pair’s unused receiver can be closed and its role taken by a child', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 4 })
  sender.putSync('left for the next receiver')
  receiver.close() // never used
  const child = startChild(t, 'receive-then-close', [sender.name, '1'])
  t.is(await child.next(), 'ready')
  t.deepEqual(await child.next(), { got: ['left for the next receiver'], closed: true })
  throwsWith(t, () => Receiver.attach(sender.name), ERR_SHMPIPE_CLOSED)
  // An unused receiver of a pair loses to a receiver attached meanwhile when first used.
  const [sender2, receiver2] = pair(t)
  const other = Receiver.attach(sender2.name)
  t.teardown(() => other.close())
  throwsWith(t, () => receiver2.getNowait(), ERR_SHMPIPE_RECEIVER_TAKEN)
  sender2.putSync('to the attached one')
  t.is(other.getNowait(), 'to the attached one')
})

test('attach: the role of a SIGKILLed receiver is taken over, and its unreleased message comes again', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 4 })
  receiver.close() // never used: a child takes the role
  const child = startChild(t, 'receive-and-hold', [sender.name])
  sender.putSync({ n: 1, data: new Uint8Array([1, 2, 3]) })
  sender.putSync({ n: 2 })
  t.deepEqual(await child.next(), { holding: { n: 1, data: { 0: 1, 1: 2, 2: 3 } } })
  await child.kill()
  const next = Receiver.attach(sender.name)
  t.teardown(() => next.close())
  const again = (await next.get({ timeout: 1000 })) as { n: number; data: Uint8Array }
  t.is(again.n, 1, 'the message the dead receiver held, delivered again')
  t.deepEqual([...again.data], [1, 2, 3])
  t.deepEqual(await next.get({ timeout: 1000 }), { n: 2 })
  t.is(next.getNowait(), undefined)
  sender.putSync({ n: 3 })
  t.deepEqual(await next.get({ timeout: 1000 }), { n: 3 })
})

// ---------------------------------------------------------------------------------------------
// 9. Closed and dead peers

test('after the receiver closes, put and waits for space or acks reject CLOSED', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 2 })
  t.is(receiver.getNowait(), undefined) // used (an unused one is tested below)
  sender.putSync(1)
  sender.putSync(2)
  const waitingPut = handled(sender.put(3))
  const waitingAck = handled(sender.waitForAllAck())
  receiver.close()
  await rejectsWith(t, waitingPut, ERR_SHMPIPE_CLOSED, 'the put waiting for space')
  await rejectsWith(t, waitingAck, ERR_SHMPIPE_CLOSED, 'waitForAllAck')
  await rejectsWith(t, sender.put(4), ERR_SHMPIPE_CLOSED, 'a new put')
  // The closed receiver refuses everything.
  await rejectsWith(t, receiver.get(), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => receiver.getNowait(), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => receiver.getSync(), ERR_SHMPIPE_CLOSED)
})

test('closing the pair’s used receiver: this process’s waiting put rejects CLOSED', async (t) => {
  // Receiver.close: "if it was used, waiting senders then fail with ERR_SHMPIPE_CLOSED". (A
  // never-used receiver of a pair only hands its role on: see the attach tests.)
  const [sender, receiver] = pair(t, { capacity: 1 })
  t.is(receiver.getNowait(), undefined) // used: registered as the pipe's receiver
  sender.putSync(1)
  const waitingPut = handled(sender.put(2))
  const waitingAck = handled(sender.waitForAllAck())
  receiver.close()
  const [put, ack] = await Promise.all([
    outcomeWithin(waitingPut, 1000),
    outcomeWithin(waitingAck, 1000),
  ])
  t.deepEqual(
    { 'the put waiting for space': put, waitForAllAck: ack },
    { 'the put waiting for space': ERR_SHMPIPE_CLOSED, waitForAllAck: ERR_SHMPIPE_CLOSED },
  )
})

/** The error `promise` rejects with (handled at once), or 'resolved'. */
function errorOf(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => 'resolved',
    (err: unknown) => err,
  )
}

/** A ShmpipeError's code; anything else described (so one deepEqual shows every outcome). */
function codeOf(err: unknown): string {
  if (err instanceof ShmpipeError) return err.code
  if (err instanceof Error)
    return `not a ShmpipeError: ${err.name} (code ${String((err as { code?: unknown }).code)}): ${err.message}` // prettier-ignore
  return String(err)
}

test('closing a sender rejects its pending calls with ShmpipeError CLOSED', async (t) => {
  const [sender, receiver] = pair(t, { capacity: 1 })
  sender.putSync('full')
  const waitingPut = errorOf(sender.put('waits for space'))
  const queuedAck = errorOf(sender.waitForAllAck()) // behind the put
  const queuedPut = errorOf(sender.put('queued'))
  await new Promise((r) => setTimeout(r, 50)) // the first put is really waiting
  sender.close()
  const [sender2, receiver2] = pair(t)
  sender2.putSync('never taken')
  const waitingAck = errorOf(sender2.waitForAllAck())
  await new Promise((r) => setTimeout(r, 50))
  sender2.close()
  // "Pending calls reject with ERR_SHMPIPE_CLOSED" (Sender.close).
  t.deepEqual(
    {
      'put waiting for space': codeOf(await waitingPut),
      'waitForAllAck queued behind it': codeOf(await queuedAck),
      'put queued behind it': codeOf(await queuedPut),
      'waitForAllAck waiting': codeOf(await waitingAck),
    },
    {
      'put waiting for space': ERR_SHMPIPE_CLOSED,
      'waitForAllAck queued behind it': ERR_SHMPIPE_CLOSED,
      'put queued behind it': ERR_SHMPIPE_CLOSED,
      'waitForAllAck waiting': ERR_SHMPIPE_CLOSED,
    },
  )
  t.is(receiver.getNowait(), 'full')
  throwsWith(t, () => receiver.getNowait(), ERR_SHMPIPE_CLOSED) // its only sender closed: the end
  t.is(receiver2.getNowait(), 'never taken')
})

test('closing a receiver rejects its pending calls alike, with ShmpipeError CLOSED', async (t) => {
  const [, receiver] = pair(t)
  const waitingGet = errorOf(receiver.get())
  const queuedReceive = errorOf(receiver.receive())
  await new Promise((r) => setTimeout(r, 50)) // the get is really waiting
  receiver.close()
  t.deepEqual(
    {
      'get waiting for a value': codeOf(await waitingGet),
      'receive queued behind it': codeOf(await queuedReceive),
    },
    {
      'get waiting for a value': ERR_SHMPIPE_CLOSED,
      'receive queued behind it': ERR_SHMPIPE_CLOSED,
    },
  )
})

test('a child receiver that closes cleanly: the waiting put rejects CLOSED, not PEER_GONE', async (t) => {
  const [sender, unusedReceiver] = pair(t, { capacity: 2 })
  unusedReceiver.close()
  // The child attaches, then closes without reading anything when told to.
  const child = forkChild(t, 'receive-then-close', [sender.name, '0', 'ipc'])
  t.is(await child.next(), 'ready')
  await sender.put('a')
  await sender.put('b')
  const waiting = handled(sender.put('c'))
  const waitingAck = handled(sender.waitForAllAck())
  await new Promise((r) => setTimeout(r, 50))
  child.process.send('close now')
  t.deepEqual(await child.next(), { got: [], closed: true })
  await rejectsWith(t, waiting, ERR_SHMPIPE_CLOSED, 'the put waiting for space')
  await rejectsWith(t, waitingAck, ERR_SHMPIPE_CLOSED, 'waitForAllAck')
  // The receiver closed cleanly and its process is alive: CLOSED, whether there is room or not.
  await rejectsWith(t, sender.put('d'), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => sender.tryPut('d'), ERR_SHMPIPE_CLOSED)
  await rejectsWith(t, sender.waitForAllAck(), ERR_SHMPIPE_CLOSED)
  t.is(child.process.exitCode, null, 'the child is still alive')
})

test('after every sender closes, get rejects CLOSED and for await ends (child sender)', async (t) => {
  const [ownSender, receiver] = pair(t)
  const child = startChild(t, 'count', [receiver.name, '50'])
  const values = [await receiver.get({ timeout: 20_000 })]
  ownSender.close() // the child's sender is attached (its first value arrived)
  for await (const v of receiver) values.push(v)
  t.deepEqual(
    values,
    Array.from({ length: 50 }, (_, i) => i),
  )
  await rejectsWith(t, receiver.get(), ERR_SHMPIPE_CLOSED)
  await rejectsWith(t, receiver.receive(), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => receiver.getSync(), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => receiver.getNowait(), ERR_SHMPIPE_CLOSED) // ended, not merely empty
  // A second iteration ends at once too.
  for await (const v of receiver) t.fail(`unexpected ${String(v)}`)
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})

test('in one process: a pending get rejects CLOSED when the last sender closes', async (t) => {
  const [sender, receiver] = pair(t)
  const second = Sender.attach(sender.name)
  t.teardown(() => second.close())
  const pending = handled(receiver.get())
  sender.putSync('x')
  t.is(await pending, 'x')
  const waiting = handled(receiver.get())
  sender.close()
  second.putSync('y')
  t.is(await waiting, 'y', 'one sender left')
  const last = handled(receiver.get())
  second.close()
  await rejectsWith(t, last, ERR_SHMPIPE_CLOSED)
  // Closing a sender twice is harmless; a closed sender refuses.
  sender.close()
  await rejectsWith(t, sender.put(1), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => sender.putSync(1), ERR_SHMPIPE_CLOSED)
  throwsWith(t, () => sender.tryPut(1), ERR_SHMPIPE_CLOSED)
})

test.serial(
  'a child sender SIGKILLed: the parent’s pending get rejects PEER_GONE within 1.5 s',
  async (t) => {
    const [ownSender, receiver] = pair(t)
    const child = startChild(t, 'sender-hang', [receiver.name])
    t.is(await receiver.get({ timeout: 20_000 }), 'ready')
    ownSender.close() // only the child's sender is left
    const pending = handled(receiver.get())
    await new Promise((r) => setTimeout(r, 100)) // really waiting
    const start = performance.now()
    child.process.kill('SIGKILL')
    const err = await rejectsWith(t, pending, ERR_SHMPIPE_PEER_GONE)
    const elapsed = performance.now() - start
    t.true(elapsed < 1500, `${elapsed.toFixed(0)} ms`)
    t.log(`PEER_GONE after ${elapsed.toFixed(0)} ms: ${err.message}`)
    t.deepEqual(await child.exited, { code: null, signal: 'SIGKILL' })
    // And it stays so; iteration throws it too (it ends quietly only when every sender closed).
    await rejectsWith(t, receiver.get(), ERR_SHMPIPE_PEER_GONE)
    const iterating = (async () => {
      for await (const v of receiver) t.fail(`unexpected ${String(v)}`)
    })()
    await rejectsWith(t, iterating, ERR_SHMPIPE_PEER_GONE)
  },
)

/** A pipe whose receiver is a child process that never reads; the parent keeps the sender. */
async function pipeToHangingReceiver(t: ExecutionContext, capacity: number) {
  const [sender, unusedReceiver] = pair(t, { capacity })
  unusedReceiver.close()
  const child = startChild(t, 'receiver-hang', [sender.name])
  t.is(await child.next(), 'ready')
  return { sender, child }
}

/** Kills `child` once `pending` is really waiting; `pending` must reject PEER_GONE within 1.5 s. */
async function killAndExpectPeerGone(
  t: ExecutionContext,
  child: Child,
  pending: Promise<unknown>,
): Promise<void> {
  let settled = false
  void pending.then(
    () => (settled = true),
    () => (settled = true),
  )
  await new Promise((r) => setTimeout(r, 100))
  t.false(settled, 'still waiting before the kill')
  const start = performance.now()
  child.process.kill('SIGKILL')
  const err = await rejectsWith(t, pending, ERR_SHMPIPE_PEER_GONE)
  const elapsed = performance.now() - start
  t.true(elapsed < 1500, `${elapsed.toFixed(0)} ms`)
  t.log(`PEER_GONE after ${elapsed.toFixed(0)} ms: ${err.message}`)
  t.deepEqual(await child.exited, { code: null, signal: 'SIGKILL' })
}

test.serial(
  'a child receiver SIGKILLed: the parent’s put waiting on a full pipe rejects PEER_GONE within 1.5 s',
  async (t) => {
    const { sender, child } = await pipeToHangingReceiver(t, 2)
    await sender.put(1)
    await sender.put(2)
    t.false(sender.tryPut(3))
    await killAndExpectPeerGone(t, child, sender.put(3))
    await rejectsWith(t, sender.put(4), ERR_SHMPIPE_PEER_GONE, 'later puts too')
    throwsWith(t, () => sender.putSync(4, { timeout: 1000 }), ERR_SHMPIPE_PEER_GONE)
  },
)

test.serial(
  'a child receiver SIGKILLed: the parent’s waitForAllAck rejects PEER_GONE within 1.5 s',
  async (t) => {
    const { sender, child } = await pipeToHangingReceiver(t, 8)
    await sender.put('never read')
    await killAndExpectPeerGone(t, child, sender.waitForAllAck())
  },
)

test.serial(
  'a child receiver SIGKILLed: a putSync blocked on a full pipe throws PEER_GONE',
  async (t) => {
    const { sender, child } = await pipeToHangingReceiver(t, 1)
    sender.putSync(1)
    // putSync blocks this thread, so no timer of this process can run meanwhile: another process
    // kills the child 300 ms from now.
    // It prints the time of the kill.
    const code = `setTimeout(() => { process.kill(${child.process.pid}, 'SIGKILL'); console.log(Date.now()) }, 300)` // prettier-ignore
    const killer = spawnNode(t, ['-e', code])
    throwsWith(t, () => sender.putSync(2, { timeout: 10_000 }), ERR_SHMPIPE_PEER_GONE)
    const thrownAt = Date.now()
    const killedAt = (await killer.next()) as number
    t.true(thrownAt - killedAt < 1500, `${thrownAt - killedAt} ms after the kill`)
    t.log(`PEER_GONE ${thrownAt - killedAt} ms after the kill`)
    t.deepEqual(await killer.exited, { code: 0, signal: null })
  },
)

// ---------------------------------------------------------------------------------------------
// 10. Zero-copy receive

test('receive(): binary values are views of the message, emptied by release (child sender)', async (t) => {
  // 64 KiB of ring: the 100 KB message at the end travels in a segment of its own.
  const [ownSender, receiver] = pair(t, { capacity: 8, bytes: 64 << 10 })
  const COUNT = 20
  const child = startChild(t, 'send-views', [receiver.name, String(COUNT), '100000'])
  const released: ArrayBufferView[] = []
  for (let k = 0; k < COUNT; k++) {
    const msg = await receiver.receive({ timeout: 20_000 })
    if (k === 0) ownSender.close()
    t.true(msg instanceof ReceivedMessage)
    const v = msg.value as ReturnType<typeof viewsValue>
    t.is(difference(v, viewsValue(k)), null)
    // All views share one ArrayBuffer: the message's memory, not copies.
    const views = [v.u8, v.f64, v.buf, v.nested[0]]
    for (const view of views) t.is(view.buffer, v.u8.buffer)
    t.true(Buffer.isBuffer(v.buf))
    t.true(v.u8.buffer.byteLength >= v.u8.byteLength + v.f64.byteLength + v.buf.byteLength)
    if (k % 2 === 0) msg.release()
    else msg[Symbol.dispose]()
    for (const view of views) {
      t.is(view.byteLength, 0)
      t.is((view as Uint8Array).length, 0)
      t.is(view.buffer.byteLength, 0)
    }
    t.is(v.u8[0], undefined)
    msg.release() // twice: harmless
    released.push(...views)
  }
  // The large message, in its own segment.
  const msg = await receiver.receive({ timeout: 20_000 })
  const { big } = msg.value as { big: Uint8Array }
  t.is(big.length, 100_000)
  t.is(checkPattern(big, 99), -1)
  msg.release()
  t.is(big.length, 0)
  // Released views stayed empty while other messages came.
  t.true(released.every((view) => view.byteLength === 0))
  await rejectsWith(t, receiver.receive({ timeout: 10_000 }), ERR_SHMPIPE_CLOSED)
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})

test('receive(): a held message is never overwritten; released views never show other bytes', async (t) => {
  // A 64 KiB ring and 8 KiB messages: without release, the ring wraps onto a held message
  // after about 7 messages.
  const [sender, receiver] = pair(t, { capacity: 1024, bytes: 64 << 10 })
  const message = (seed: number): Uint8Array => {
    const b = new Uint8Array(8192)
    fillPattern(b, seed)
    return b
  }
  sender.putSync(message(1))
  const held = await receiver.receive({ timeout: 1000 })
  const heldView = held.value as Uint8Array
  const releasedViews: Uint8Array[] = []
  let seed = 2
  let blocked = false
  for (; seed < 40; seed++) {
    if (!sender.tryPut(message(seed))) {
      blocked = true
      break
    }
    const msg = await receiver.receive({ timeout: 1000 })
    const view = msg.value as Uint8Array
    t.is(checkPattern(view, seed), -1, `message ${seed}`)
    msg.release()
    releasedViews.push(view)
    t.is(checkPattern(heldView, 1), -1, `the held message after message ${seed}`)
  }
  t.true(blocked, 'the sender waits rather than overwrite the held message')
  t.true(seed < 12, `blocked at message ${seed}`)
  await rejectsWith(t, sender.put(message(seed), { timeout: 50 }), ERR_SHMPIPE_TIMEOUT)
  t.is(checkPattern(heldView, 1), -1)

  // Values taken with get() are copies: they stay intact while the ring moves on.
  held.release()
  t.is(heldView.length, 0)
  const kept: [number, Uint8Array][] = []
  for (; seed < 200; seed++) {
    await sender.put(message(seed), { timeout: 1000 })
    if (seed % 3 === 0) {
      kept.push([seed, (await receiver.get({ timeout: 1000 })) as Uint8Array])
    } else {
      const msg = await receiver.receive({ timeout: 1000 })
      t.is(checkPattern(msg.value as Uint8Array, seed), -1)
      releasedViews.push(msg.value as Uint8Array)
      msg.release()
    }
  }
  for (const [s, v] of kept) t.is(checkPattern(v, s), -1, `get() value ${s}`)
  t.true(releasedViews.every((v) => v.length === 0 && v[0] === undefined))

  // Released in any order.
  for (const s of [300, 301, 302]) sender.putSync(message(s))
  const [m0, m1, m2] = [
    await receiver.receive(),
    await receiver.receive(),
    await receiver.receive(),
  ]
  m1.release()
  t.is(checkPattern(m0.value as Uint8Array, 300), -1)
  t.is(checkPattern(m2.value as Uint8Array, 302), -1)
  m2.release()
  t.is(checkPattern(m0.value as Uint8Array, 300), -1)
  m0.release()
  t.is(receiver.getNowait(), undefined)
  t.is(sender.sent, sender.acked)
})

// ---------------------------------------------------------------------------------------------
// 11. worker_threads

/** Starts `child.ts` in a Worker (tsx registered in the worker first). */
function startWorker(t: ExecutionContext, role: string, args: string[]): Worker {
  const code = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(pathToFileURL(childScript).href)}) })` // prettier-ignore
  const worker = new Worker(code, { eval: true, workerData: { role, args } })
  t.teardown(() => worker.terminate())
  return worker
}

test('worker_threads: two Workers attach by name and send to the main thread’s receiver', async (t) => {
  const [ownSender, receiver] = pair(t)
  const COUNT = 300
  const workers = [0, 1].map(() => startWorker(t, 'worker-send', [receiver.name, String(COUNT)]))
  const outcomes = workers.map(
    (w) =>
      new Promise<unknown[]>((resolve, reject) => {
        const messages: unknown[] = []
        w.on('message', (m) => messages.push(m))
        w.on('error', reject)
        w.on('exit', (code) => resolve([...messages, `exit ${code}`]))
      }),
  )
  const ids = new Set(workers.map((w) => w.threadId))
  const next = new Map<number, number>()
  const check = (value: unknown): void => {
    const { threadId, i, data } = value as { threadId: number; i: number; data: Float64Array }
    t.true(ids.has(threadId), `from a worker: ${threadId}`)
    t.is(i, next.get(threadId) ?? 0, 'in order')
    next.set(threadId, i + 1)
    t.true(data instanceof Float64Array)
    t.deepEqual([...data], [i, i / 2])
  }
  // Keep this thread's sender until both workers' first values came (their senders attached).
  while (next.size < 2) check(await receiver.get({ timeout: 20_000 }))
  ownSender.close()
  for await (const value of receiver) check(value)
  t.deepEqual([...next.values()], [COUNT, COUNT])
  t.deepEqual(await Promise.all(outcomes), [
    ['done', 'exit 0'],
    ['done', 'exit 0'],
  ])
})

test('worker_threads: a Worker terminated with its sender open ends the stream (CLOSED)', async (t) => {
  const [ownSender, receiver] = pair(t)
  const worker = startWorker(t, 'sender-hang', [receiver.name])
  t.is(await receiver.get({ timeout: 20_000 }), 'ready')
  ownSender.close()
  const pending = handled(receiver.get({ timeout: 5000 }))
  await worker.terminate()
  // Its process lives on, so the sender is not "dead": it was closed when the worker ended.
  await rejectsWith(t, pending, ERR_SHMPIPE_CLOSED)
})

// ---------------------------------------------------------------------------------------------
// 7. 1 GiB values

/** Checks a received 1 GiB value: type, length, a few bytes, and every byte of the pattern. */
function checkBig(t: ExecutionContext, value: unknown, seed: number): void {
  t.true(Buffer.isBuffer(value), 'a Buffer')
  const bytes = value as Buffer
  t.is(bytes.length, GiB)
  for (const i of [0, 1, 2, 3, GiB / 2 - 1, GiB / 2, GiB - 4, GiB - 1])
    t.is(bytes[i], patternByte(i, seed), `byte ${i}`)
  // A few MB at the start, the middle and the end byte by byte, then the whole pattern.
  for (const start of [0, GiB / 2 - (2 << 20), GiB - (4 << 20)]) {
    const window = bytes.subarray(start, start + (4 << 20))
    let same = true
    for (let i = 0; i < window.length && same; i++)
      same = window[i] === patternByte(start + i, seed)
    t.true(same, `4 MB from ${start}`)
  }
  t.is(checkPattern(bytes, seed), -1, 'every byte')
}

test.serial('a 1 GiB Buffer from a child process to the parent', async (t) => {
  const [ownSender, receiver] = pair(t)
  const child = startChild(t, 'big-send', [receiver.name, String(GiB), '7'])
  t.is(await child.next(60_000), 'filled')
  const start = performance.now()
  const value = await receiver.get({ timeout: 60_000 })
  t.log(`received ${(performance.now() - start).toFixed(0)} ms after the child's buffer was filled`) // prettier-ignore
  ownSender.close()
  checkBig(t, value, 7)
  t.is(await child.next(60_000), 'acked')
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})

test.serial('a 1 GiB Buffer from the parent to a child process', async (t) => {
  const [sender, unusedReceiver] = pair(t)
  unusedReceiver.close()
  const child = startChild(t, 'big-receive', [sender.name, '11'])
  t.is(await child.next(), 'ready')
  let data: Buffer | null = Buffer.allocUnsafe(GiB)
  fillPattern(data, 11)
  const start = performance.now()
  await sender.put(data, { timeout: 60_000 })
  t.log(`put took ${(performance.now() - start).toFixed(0)} ms`)
  data = null
  const report = (await child.next(60_000)) as {
    isBuffer: boolean
    constructor: string
    length: number
    samples: [number, number][]
    firstBad: number
  }
  t.log(`received and checked ${(performance.now() - start).toFixed(0)} ms after the put began`)
  t.like(report, { isBuffer: true, constructor: 'Buffer', length: GiB, firstBad: -1 })
  for (const [got, expected] of report.samples) t.is(got, expected)
  await sender.waitForAllAck({ timeout: 10_000 })
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})

// ---------------------------------------------------------------------------------------------
// 12. No leaks in /dev/shm

/** Segments in /dev/shm created by this process. */
function ownSegments(): string[] {
  return [...shmSegments()].filter(([, pid]) => pid === process.pid).map(([name]) => name)
}

test.serial(
  'closing ends with waits pending removes the pipe before close() returns',
  async (t) => {
    // A wait runs on the end's waiter thread and holds a cancel token that keeps the queue mapped.
    // close() must not return while a wait that has not started yet (or is ending) still holds it:
    // the segment would then disappear a moment later, on that thread (a pool test saw it).
    const settle = (p: Promise<unknown>): Promise<unknown> => p.catch((err: unknown) => err)
    for (let i = 0; i < 50; i++) {
      const [emptySender, emptyReceiver] = createSharedMemoryPair({ capacity: 1, bytes: 4096 })
      const [fullSender, fullReceiver] = createSharedMemoryPair({ capacity: 1, bytes: 4096 })
      fullSender.putSync(1) // full: the next put waits, and so does waitForAllAck
      const waits = [
        settle(emptyReceiver.get()),
        settle(fullSender.put(2)),
        settle(fullSender.waitForAllAck()),
      ]
      await new Promise((resolve) => setTimeout(resolve, 2)) // the waiter threads are waiting now
      for (const end of [emptyReceiver, emptySender, fullSender, fullReceiver]) end.close()
      t.false(
        shmExists(emptySender.name),
        `round ${i}: the empty pipe is gone when close() returns`,
      )
      t.false(shmExists(fullSender.name), `round ${i}: the full pipe is gone when close() returns`)
      await Promise.all(waits)
    }
  },
)

test.serial(
  'closed pipes leave nothing in /dev/shm (inline, in-place and own-segment messages)',
  async (t) => {
    const before = new Set(ownSegments())
    const names: string[] = []
    for (let round = 0; round < 3; round++) {
      // 1 MiB of ring: up to 512 KiB inline (from 64 KiB written in place), larger values in a
      // segment of their own.
      const [sender, receiver] = createSharedMemoryPair({ capacity: 8, bytes: 1 << 20 })
      names.push(sender.name)
      t.true(shmExists(sender.name), 'the pipe is in /dev/shm while open')
      const extra = Sender.attach(sender.name)
      sender.putSync({ small: 1 })
      sender.putSync(new Uint8Array(100_000)) // inline, written in place
      extra.putSync(new Uint8Array(600_000)) // own segment, taken by get
      sender.putSync(new Uint8Array(700_000)) // own segment, taken by receive
      extra.putSync(new Uint8Array(800_000)) // own segment, never received
      t.deepEqual(receiver.getSync(), { small: 1 })
      t.is((receiver.getSync() as Uint8Array).length, 100_000)
      t.is(((await receiver.get()) as Uint8Array).length, 600_000)
      const msg = await receiver.receive()
      t.is((msg.value as Uint8Array).length, 700_000)
      if (round !== 1) msg.release() // round 1: left unreleased when the receiver closes
      const blobs = ownSegments().filter((n) => !before.has(n) && n !== sender.name)
      t.is(blobs.length, 1, 'the unreceived message has a segment')
      if (round === 2) {
        receiver.close() // the receiver first: it removes the unreceived message's segment
        t.deepEqual(
          ownSegments().filter((n) => !before.has(n) && n !== sender.name),
          [],
        )
        sender.close()
        extra.close()
      } else {
        extra.close()
        sender.close()
        receiver.close()
      }
      t.false(shmExists(sender.name), 'the pipe is gone once both ends are closed')
    }
    const left = ownSegments().filter((n) => !before.has(n))
    t.deepEqual(left, [])
    // Attached ends of another process's pipe do not remove it.
    const [sender, receiver] = pair(t)
    const attached = Sender.attach(sender.name)
    attached.close()
    t.true(shmExists(sender.name))
    sender.close()
    receiver.close()
    t.false(shmExists(sender.name))
  },
)

test.serial(
  'a put refused when its value changed size while waiting leaves no segment behind',
  async (t) => {
    // A value whose encoding is measured, then changes size before it is written: writeTo refuses,
    // and the reserved space (here a segment of its own) must be given back.
    const before = new Set(ownSegments())
    const [sender, receiver] = pair(t, { capacity: 4, bytes: 64 << 10 })
    const ab = new ArrayBuffer(200_000)
    sender.putSync('first')
    const other = Sender.attach(sender.name)
    t.teardown(() => other.close())
    // Fill the pipe so the put waits; detach the buffer while it waits.
    for (let i = 0; other.tryPut(i); i++);
    const waiting = handled(sender.put({ ab }))
    structuredClone(ab, { transfer: [ab] }) // detaches `ab`
    while (receiver.getNowait() !== undefined);
    const err = await t.throwsAsync(waiting)
    t.log(err?.message)
    t.deepEqual(
      ownSegments().filter((n) => !before.has(n) && n !== sender.name),
      [],
    )
    sender.putSync('still works')
    t.is(receiver.getSync({ timeout: 1000 }), 'still works')
  },
)

test.serial(
  'a receiver SIGKILLed with an unreceived own-segment message: closing the pipe removes that segment',
  async (t) => {
    const before = new Set(ownSegments())
    const [sender, unusedReceiver] = pair(t, { capacity: 8, bytes: 64 << 10 })
    unusedReceiver.close()
    const child = startChild(t, 'receiver-hang', [sender.name])
    t.is(await child.next(), 'ready')
    await sender.put(new Uint8Array(100_000)) // more than half the ring: a segment of its own
    const blobs = ownSegments().filter((n) => !before.has(n) && n !== sender.name)
    t.is(blobs.length, 1, 'the message has a segment, created by this process')
    await child.kill()
    // This process created the pipe and the message's segment, and closes every end it has.
    sender.close()
    t.false(shmExists(sender.name), 'the pipe is removed')
    const left = ownSegments().filter((n) => !before.has(n))
    // Remove what is left, so that the file's final leak check reports only its own findings.
    t.teardown(() => {
      for (const name of left) rmSync(`/dev/shm/${name}`, { force: true })
    })
    t.deepEqual(left, [], 'no segment of an unreceived message is left in /dev/shm')
  },
)

test.serial(
  'a receiver SIGKILLed with an unreceived own-segment message: the sender that finds it dead removes that segment',
  async (t) => {
    const before = new Set(ownSegments())
    const [sender, unusedReceiver] = pair(t, { capacity: 1, bytes: 64 << 10 })
    unusedReceiver.close()
    const child = startChild(t, 'receiver-hang', [sender.name])
    t.is(await child.next(), 'ready')
    await sender.put(new Uint8Array(100_000)) // a segment of its own; the pipe is now full
    t.is(ownSegments().filter((n) => !before.has(n) && n !== sender.name).length, 1)
    await killAndExpectPeerGone(t, child, sender.put('waits for space'))
    sender.close()
    const left = ownSegments().filter((n) => !before.has(n))
    t.teardown(() => {
      for (const name of left) rmSync(`/dev/shm/${name}`, { force: true })
    })
    t.deepEqual(left, [])
  },
)

// ---------------------------------------------------------------------------------------------
// 13. What keeps a process alive

test('a pending get keeps a child process alive until its value comes', async (t) => {
  const start = performance.now()
  const child = startChild(t, 'pending-get')
  const { name } = (await child.next()) as { name: string }
  t.deepEqual(await child.next(), { got: 'late' })
  const exit = await child.exited
  const elapsed = performance.now() - start
  // Exit code 13 would mean Node found the event loop empty with the get still pending.
  t.deepEqual(exit, { code: 0, signal: null }, child.stderr())
  t.true(elapsed >= 300, `${elapsed.toFixed(0)} ms`)
  t.false(shmExists(name), 'the child removed its pipe at exit')
})

test('a child with open ends and nothing pending exits by itself', async (t) => {
  for (const mode of ['nothing', 'waited']) {
    const child = startChild(t, 'idle', [mode])
    const { name } = (await child.next()) as { name: string }
    const exit = await Promise.race([
      child.exited,
      new Promise((r) => setTimeout(() => r('still running after 5 s'), 5000)),
    ])
    t.deepEqual(exit, { code: 0, signal: null }, `${mode}: ${child.stderr()}`)
    t.false(shmExists(name), `${mode}: the child removed its pipe at exit`)
  }
})

test('SIGTERM ends a child that owns a pipe, also while its thread is blocked, and its pipe goes with it', async (t) => {
  // lifecycle.ts: the process still dies of the signal, and the native handler removes its
  // segments first (a JavaScript handler could not run while the thread is blocked).
  const outcomes: Record<string, unknown> = {}
  const left: string[] = []
  for (const how of ['atomics', 'pair-atomics', 'getSync']) {
    const child = startChild(t, 'blocked', [how])
    const { name } = (await child.next()) as { name: string | null }
    if (name !== null) t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true })) // if left
    await new Promise((r) => setTimeout(r, 200)) // blocked by now
    child.process.kill('SIGTERM')
    outcomes[how] = await Promise.race([
      child.exited,
      new Promise((r) => setTimeout(() => r('still running 2 s after SIGTERM'), 2000)),
    ])
    if (name !== null && shmExists(name)) left.push(`${how}: ${name}`)
  }
  const died = { code: null, signal: 'SIGTERM' }
  t.deepEqual(outcomes, { atomics: died, 'pair-atomics': died, getSync: died })
  t.deepEqual(left, [], 'the signalled owner removed its pipe')
})
