/**
 * Issue 13, items 1, 7 and 10, with real processes and real shared memory:
 * - a zero-copy view moved away with `ArrayBuffer.prototype.transfer()` keeps its message (it
 *   never shows another message's bytes, nor unmapped memory once both ends are closed);
 * - huge timeouts (`Infinity`, 1e30, above 2³¹−1 ms) mean no timeout: they never fire early,
 *   warn, or abort the process;
 * - every bad argument of the public entry points is `ERR_SHMPIPE_INVALID_ARGUMENT` in the API's
 *   own words.
 *
 * Child roles live in `helpers/trust-native-child.ts`. Runs under every Node version
 * (`scripts/test-other-nodes.mjs` includes it); on Node 20, where `transfer()` is behind a V8
 * flag, the reading children get that flag.
 */

import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'

import test, { type ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_INVALID_ARGUMENT,
  ERR_SHMPIPE_NOT_FOUND,
  ERR_SHMPIPE_RECEIVER_TAKEN,
  ERR_SHMPIPE_TOO_MANY_SENDERS,
  ProcessPool,
  Receiver,
  Sender,
  SharedArray,
  SharedMemoryManager,
  ShmpipeError,
  withSharedMemory,
  type ShmpipeErrorCode,
} from '../index.js'
import { checkNoSegmentLeaks, spawnNode, type Child } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const script = fileURLToPath(new URL('./helpers/trust-native-child.ts', import.meta.url))
const poolTasks = fileURLToPath(new URL('./helpers/pool-tasks.ts', import.meta.url))

/** Node flags a child needs for `ArrayBuffer.prototype.transfer()` (a V8 flag on Node 20). */
const TRANSFER_FLAGS =
  typeof (ArrayBuffer.prototype as { transfer?: unknown }).transfer === 'function'
    ? []
    : ['--harmony-rab-gsab-transfer']

/** Starts `trust-native-child.ts role …args` with `flags`. */
function child(t: ExecutionContext, role: string, args: string[], flags: string[] = []): Child {
  return spawnNode(t, ['--import=tsx', ...flags, script, role, ...args])
}

/** Waits for `c` to exit and asserts it exited normally (code 0, no signal). */
async function exitsCleanly(t: ExecutionContext, c: Child, what: string): Promise<void> {
  const exit = await c.exited
  t.deepEqual(exit, { code: 0, signal: null }, `${what} exited badly; stderr:\n${c.stderr()}`)
}

// ---------------------------------------------------------------------------------------------
// Item 1: moved zero-copy views

/** Values of 1000 bytes in a ring of 8 KiB: the ring wraps within a few values. */
const VALUE_BYTES = '1000'
const RING_BYTES = '8192'
const VALUES = 40

test('a view moved away with transfer() keeps its bytes while later messages go through, and its message is freed when it is collected', async (t) => {
  const sender = child(t, 'send-patterns', [String(VALUES), VALUE_BYTES, RING_BYTES])
  const { name } = (await sender.next()) as { name: string }
  const reader = child(
    t,
    'read-moved-while-receiving',
    [name, String(VALUES), VALUE_BYTES],
    ['--expose-gc', ...TRANSFER_FLAGS],
  )
  const result = (await reader.next(120_000)) as {
    intact: boolean
    stalledAt: number
    received: number
  }
  t.log(`the pipe waited for the moved buffer after ${result.stalledAt} values (-1: never)`)
  t.true(result.intact, 'the moved view showed another message’s bytes')
  t.is(result.received, VALUES, 'every value arrived once the moved buffer was collected')
  t.deepEqual(await sender.next(), { sent: VALUES })
  await exitsCleanly(t, reader, 'the reader')
  await exitsCleanly(t, sender, 'the sender')
})

test('a view moved away with transfer() stays readable after both ends closed and a collection', async (t) => {
  const sender = child(t, 'send-patterns', [String(VALUES), VALUE_BYTES, RING_BYTES])
  const { name } = (await sender.next()) as { name: string }
  const reader = child(
    t,
    'read-moved-after-close',
    [name, VALUE_BYTES, String(sender.process.pid)],
    ['--expose-gc', ...TRANSFER_FLAGS],
  )
  await exitsCleanly(t, sender, 'the sender')
  // Reading unmapped memory would end the reader with SIGSEGV before it reports.
  await exitsCleanly(t, reader, 'the reader')
  t.deepEqual(await reader.next(), { intact: true, length: Number(VALUE_BYTES) })
})

// ---------------------------------------------------------------------------------------------
// Item 7: huge timeouts

test('huge timeouts on a pipe never fire, warn or abort: async calls queued behind another, sync calls', async (t) => {
  const [full, fullReceiver] = createSharedMemoryPair({ capacity: 1 })
  t.teardown(() => {
    full.close()
    fullReceiver.close()
  })
  const c = child(t, 'huge-timeouts', [full.name])
  const { name } = (await c.next()) as { name: string }
  t.like(await c.next(), { phase: 'gets waiting', settled: {} }, 'a queued get gave up early')
  const sender = Sender.attach(name)
  t.teardown(() => sender.close())
  for (let i = 1; i <= 5; i++) await sender.put(i)
  t.like(await c.next(), { phase: 'gets done' })
  await sleep(300) // the child's getSync calls wait meanwhile
  await sender.put(6)
  await sender.put(7)
  t.like(await c.next(), { phase: 'full' })
  await sleep(300) // the child's putSync waits meanwhile
  t.is(await fullReceiver.get(), 'fill')
  t.is(await fullReceiver.get(), 'late')
  const done = (await c.next()) as Record<string, unknown>
  t.deepEqual(done, {
    phase: 'done',
    putsWaiting: {
      get: 'resolved 1',
      'get Infinity': 'resolved 2',
      'get 1e30': 'resolved 3',
      'get 2**31': 'resolved 4',
      'receive 1e300': 'resolved 5',
    },
    settled: {
      get: 'resolved 1',
      'get Infinity': 'resolved 2',
      'get 1e30': 'resolved 3',
      'get 2**31': 'resolved 4',
      'receive 1e300': 'resolved 5',
      put: 'resolved undefined',
      'put Infinity': 'resolved undefined',
      'put 1e30': 'resolved undefined',
      'waitForAllAck 2**40': 'resolved undefined',
    },
    got: [6, 7, 'fill 1', 'fill 2', 'p', 'q', 'r'],
    warnings: [],
  })
  await exitsCleanly(t, c, 'the child')
})

test('huge timeouts on a shared array’s lock never fire, warn or abort', async (t) => {
  const name = `tn_${process.pid}`
  const array = SharedArray.create(name, Float64Array, 4)
  t.teardown(() => {
    array.close()
    SharedArray.delete(name)
  })
  const holder = child(t, 'hold-lock', [name])
  t.is(await holder.next(), 'locked')
  const c = child(t, 'lock-huge-timeouts', [name])
  t.deepEqual(await c.next(), { waiting: {} }, 'a queued withLock gave up early')
  holder.process.kill('SIGUSR2')
  const calls = {
    withLock: 'resolved withLock',
    'withLock Infinity': 'resolved withLock Infinity',
    'withLock 1e30': 'resolved withLock 1e30',
    'withLock 2**31': 'resolved withLock 2**31',
  }
  t.deepEqual(await c.next(), { settled: calls, lockSync: false, warnings: [] })
  await exitsCleanly(t, c, 'the child')
  await exitsCleanly(t, holder, 'the holder')
})

test('huge timeouts given to the addon itself neither abort nor throw', async (t) => {
  const c = child(t, 'native-huge-timeouts', [])
  await exitsCleanly(t, c, 'the child')
  t.deepEqual(await c.next(), {
    sendSync: 'ok',
    recvSync: 'ok',
    recvSyncInfinity: 'ok',
    waitForAllAckSync: 'ok',
    lockSync: 'ok',
  })
})

// ---------------------------------------------------------------------------------------------
// Item 10: arguments

/** A call expected to throw (or reject with) `code` and a message containing `message`. */
interface BadCall {
  call: string
  run: () => unknown
  message: string
  code?: ShmpipeErrorCode
}

/** Words of the Rust core and of napi that must not reach a user. */
const FOREIGN_WORDS = /max_producers|producer|consumer|queue|StringExpected|NumberExpected|napi/i

async function thrownBy(run: () => unknown): Promise<unknown> {
  try {
    await run()
  } catch (err) {
    return err
  }
  return undefined
}

test('every bad argument is ERR_SHMPIPE_INVALID_ARGUMENT in the API’s own words', async (t) => {
  const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 4096 })
  const array = SharedArray.create(`tn_args_${process.pid}`, 'int32', 2)
  const manager = new SharedMemoryManager()
  const pool = new ProcessPool({ module: poolTasks, workers: 1 })
  t.teardown(async () => {
    sender.close()
    receiver.close()
    array.close()
    SharedArray.delete(array.name)
    manager.dispose()
    await pool.close()
  })
  const pair = (options: unknown) => () => createSharedMemoryPair(options as never)
  const whole = (option: string, max: number, got: string): string =>
    `createSharedMemoryPair: ${option} must be a whole number from 1 to ${max}, got ${got}`
  const table: BadCall[] = [
    {
      call: 'capacity "5"',
      run: pair({ capacity: '5' }),
      message: whole('capacity', 8388607, '"5"'),
    },
    {
      call: 'capacity 1.5',
      run: pair({ capacity: 1.5 }),
      message: whole('capacity', 8388607, '1.5'),
    },
    { call: 'capacity 0', run: pair({ capacity: 0 }), message: whole('capacity', 8388607, '0') },
    { call: 'capacity 2**23', run: pair({ capacity: 2 ** 23 }), message: whole('capacity', 8388607, '8388608') }, // prettier-ignore
    {
      call: 'capacity NaN',
      run: pair({ capacity: NaN }),
      message: whole('capacity', 8388607, 'NaN'),
    },
    { call: 'bytes -1', run: pair({ bytes: -1 }), message: whole('bytes', Number.MAX_SAFE_INTEGER, '-1') }, // prettier-ignore
    { call: 'bytes 1n', run: pair({ bytes: 1n }), message: whole('bytes', Number.MAX_SAFE_INTEGER, '1n') }, // prettier-ignore
    { call: 'maxSenders 0', run: pair({ maxSenders: 0 }), message: whole('maxSenders', 4096, '0') },
    { call: 'maxSenders 4097', run: pair({ maxSenders: 4097 }), message: whole('maxSenders', 4096, '4097') }, // prettier-ignore
    { call: 'maxSenders 2.5', run: pair({ maxSenders: 2.5 }), message: whole('maxSenders', 4096, '2.5') }, // prettier-ignore
    { call: 'capcity', run: pair({ capcity: 5 }), message: 'createSharedMemoryPair: unknown option "capcity" (the options are capacity, bytes, maxSenders, backing)' }, // prettier-ignore
    { call: 'options null', run: pair(null), message: 'createSharedMemoryPair: options must be an object, got null' }, // prettier-ignore
    { call: 'options 5', run: pair(5), message: 'createSharedMemoryPair: options must be an object, got 5' }, // prettier-ignore
    { call: 'Sender.attach(42)', run: () => Sender.attach(42 as never), message: 'Sender.attach: name must be a non-empty string, got 42' }, // prettier-ignore
    { call: 'Sender.attach()', run: () => (Sender.attach as () => Sender)(), message: 'Sender.attach: name must be a non-empty string, got undefined' }, // prettier-ignore
    { call: 'Receiver.attach("")', run: () => Receiver.attach(''), message: 'Receiver.attach: name must be a non-empty string, got ""' }, // prettier-ignore
    { call: 'Receiver.attach({})', run: () => Receiver.attach({} as never), message: 'Receiver.attach: name must be a non-empty string, got an object' }, // prettier-ignore
    { call: 'Sender.attach of no pipe', run: () => Sender.attach('tn_no_such_pipe'), code: ERR_SHMPIPE_NOT_FOUND, message: 'Sender.attach: no pipe named "tn_no_such_pipe" exists' }, // prettier-ignore
    { call: 'put timeout -1', run: () => sender.put(1, { timeout: -1 }), message: 'put: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got -1' }, // prettier-ignore
    { call: 'put timeout "5"', run: () => sender.put(1, { timeout: '5' as never }), message: 'put: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got "5"' }, // prettier-ignore
    { call: 'put tiemout', run: () => sender.put(1, { tiemout: 5 } as never), message: 'put: unknown option "tiemout" (the options are timeout, signal)' }, // prettier-ignore
    { call: 'put signal 5', run: () => sender.put(1, { signal: 5 as never }), message: 'put: signal must be an AbortSignal, got 5' }, // prettier-ignore
    { call: 'putSync signal', run: () => sender.putSync(1, { signal: new AbortController().signal } as never), message: 'putSync: unknown option "signal" (the options are timeout)' }, // prettier-ignore
    { call: 'waitForAllAck timeout NaN', run: () => sender.waitForAllAck({ timeout: NaN }), message: 'waitForAllAck: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got NaN' }, // prettier-ignore
    { call: 'get timeout null', run: () => receiver.get({ timeout: null as never }), message: 'get: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got null' }, // prettier-ignore
    { call: 'get options []', run: () => receiver.get([] as never), message: 'get: options must be an object, got an array' }, // prettier-ignore
    { call: 'getSync tmeout', run: () => receiver.getSync({ tmeout: 1 } as never), message: 'getSync: unknown option "tmeout" (the options are timeout)' }, // prettier-ignore
    { call: 'receive timeout -5', run: () => receiver.receive({ timeout: -5 }), message: 'receive: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got -5' }, // prettier-ignore
    { call: 'SharedArray.create(42)', run: () => SharedArray.create(42 as never, 'int32', 1), message: 'name must be 1 to 20 characters of [A-Za-z0-9_.-], got 42' }, // prettier-ignore
    { call: 'SharedArray.create dtype', run: () => SharedArray.create('tn_x', 'float128' as never, 1), message: 'dtype must be a TypedArray constructor' }, // prettier-ignore
    { call: 'SharedArray.create shape', run: () => SharedArray.create('tn_x', 'int32', [2, 1.5]), message: 'shape[1] must be a whole number of at least 1, got 1.5' }, // prettier-ignore
    { call: 'SharedArray.attach(1)', run: () => SharedArray.attach(1 as never), message: 'name must be 1 to 20 characters of [A-Za-z0-9_.-], got 1' }, // prettier-ignore
    { call: 'lock timeout -1', run: () => array.lock({ timeout: -1 }), message: 'lock: timeout must be a non-negative number of milliseconds (Infinity: no timeout), got -1' }, // prettier-ignore
    { call: 'lock timout', run: () => array.lock({ timout: 1 } as never), message: 'lock: unknown option "timout" (the options are timeout)' }, // prettier-ignore
    { call: 'withLock signal', run: () => array.withLock(() => 1, { signal: {} as never }), message: 'withLock: signal must be an AbortSignal, got an object' }, // prettier-ignore
    { call: 'manager pair capcity', run: () => manager.createSharedMemoryPair({ capcity: 1 } as never), message: 'createSharedMemoryPair: unknown option "capcity"' }, // prettier-ignore
    { call: 'manager createArray', run: () => manager.createArray('', 'int32', 1), message: 'name must be 1 to 20 characters of [A-Za-z0-9_.-], got ""' }, // prettier-ignore
    { call: 'withSharedMemory(42)', run: () => withSharedMemory(42 as never), message: 'withSharedMemory needs a function, got 42' }, // prettier-ignore
    { call: 'ProcessPool wrkers', run: () => new ProcessPool({ module: poolTasks, wrkers: 2 } as never), message: 'new ProcessPool(): unknown option "wrkers" (the options are module, workers, execArgv, env, backing, pipeBytes, copyArguments)' }, // prettier-ignore
    { call: 'ProcessPool backing', run: () => new ProcessPool({ module: poolTasks, backing: 'tmpfs' as never }), message: "new ProcessPool(): backing must be 'shm' or 'memfd', got \"tmpfs\"" }, // prettier-ignore
    { call: 'ProcessPool workers 1.5', run: () => new ProcessPool({ module: poolTasks, workers: 1.5 }), message: 'options.workers must be a whole number of at least 1, got 1.5' }, // prettier-ignore
    { call: 'pool.run sgnal', run: () => pool.run('echo', [], { sgnal: 1 } as never), message: 'run: unknown option "sgnal" (the options are signal)' }, // prettier-ignore
    { call: 'pool.run signal', run: () => pool.run('echo', [], { signal: 'x' } as never), message: 'run: signal must be an AbortSignal, got "x"' }, // prettier-ignore
    { call: 'pool.map concurency', run: () => pool.map('echo', [1], { concurency: 2 } as never), message: 'map: unknown option "concurency" (the options are concurrency, signal)' }, // prettier-ignore
  ]
  for (const bad of table) {
    const err = await thrownBy(bad.run)
    const code = bad.code ?? ERR_SHMPIPE_INVALID_ARGUMENT
    if (!(err instanceof ShmpipeError)) {
      t.fail(`${bad.call}: threw ${String(err)}, not a ShmpipeError`)
      continue
    }
    t.is(err.code, code, `${bad.call}: ${err.message}`)
    t.true(err.message.includes(bad.message), `${bad.call}: message ${JSON.stringify(err.message)}`)
    t.false(FOREIGN_WORDS.test(err.message), `${bad.call}: message ${JSON.stringify(err.message)}`)
  }
})

test('the native core’s errors say sender, receiver and pipe', (t) => {
  const [sender, receiver] = createSharedMemoryPair({ maxSenders: 1 })
  const first = Receiver.attach(sender.name)
  t.teardown(() => {
    first.close()
    receiver.close()
    sender.close()
  })
  const taken = t.throws(() => Receiver.attach(sender.name), { instanceOf: ShmpipeError })
  t.is(taken?.code, ERR_SHMPIPE_RECEIVER_TAKEN)
  t.is(taken?.message, 'the pipe already has a live receiver')
  const full = t.throws(() => Sender.attach(sender.name), { instanceOf: ShmpipeError })
  t.is(full?.code, ERR_SHMPIPE_TOO_MANY_SENDERS)
  t.is(full?.message, 'all 1 sender slots of the pipe are in use (maxSenders)')
})
