/**
 * Tests of the pipe (Sender, Receiver, createSharedMemoryPair) with real child processes and real
 * shared memory: values of every type and random values through a child, many senders in many
 * processes, a plain `node -e` child, unsupported values, attaching by name. Child roles live in
 * `helpers/child.ts`; values and comparisons in `helpers/values.ts`. The other pipe tests:
 * `pipe-waits.test.ts` (timeouts, abort, closed and dead peers) and `pipe-memory.test.ts`
 * (zero-copy receive, worker_threads, 1 GiB values, leaks, what keeps a process alive).
 */

import { isDeepStrictEqual } from 'node:util'
import { pathToFileURL } from 'node:url'

import test from 'ava'

import {
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_NOT_FOUND,
  ERR_SHMPIPE_RECEIVER_TAKEN,
  ERR_SHMPIPE_TOO_MANY_SENDERS,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  Receiver,
  Sender,
} from '../index.js'
import { pair, rejectsWith, startEcho, throwsWith } from './helpers/pipe.js'
import {
  checkNoSegmentLeaks,
  entry,
  forkChild,
  spawnNode,
  startChild,
  type Child,
} from './helpers/processes.js'
import {
  catalogue,
  difference,
  fillPattern,
  mpscValue,
  v8RoundTrip,
  ValueGenerator,
  TYPED_ARRAYS,
} from './helpers/values.js'

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
