/**
 * Tests of the pipe's waits with real child processes and real shared memory: timeouts, abort
 * signals, and what pending calls see when a peer closes or dies.
 *
 * Serial tests (timings, leak checks) run first, one at a time, so that nothing else in this
 * process competes with what they measure.
 */

import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'

import test, { type ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_BUSY,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_PEER_GONE,
  ERR_SHMPIPE_TIMEOUT,
  Sender,
  ShmpipeError,
} from '../index.js'
import {
  handled,
  killAndExpectPeerGone,
  pair,
  rejectsWith,
  settleTime,
  throwsWith,
} from './helpers/pipe.js'
import { checkNoSegmentLeaks, forkChild, spawnNode, startChild } from './helpers/processes.js'

// ---------------------------------------------------------------------------------------------
// Leak check after every test

checkNoSegmentLeaks(test)

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
    await killAndExpectPeerGone(t, child, receiver.get())
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
