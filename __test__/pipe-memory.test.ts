/**
 * Tests of the pipe's memory with real child processes and real shared memory: zero-copy
 * receive, pipes shared with worker_threads, 1 GiB values, no segment left in /dev/shm, and what
 * keeps a process alive.
 *
 * Serial tests (1 GiB transfers, leak checks) run first, one at a time, so that nothing else in
 * this process competes with what they measure.
 */

import { rmSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import { pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_TIMEOUT,
  ReceivedMessage,
  Sender,
  type Backing,
} from '../index.js'
import { GiB, handled, killAndExpectPeerGone, pair, rejectsWith } from './helpers/pipe.js'
import {
  checkNoSegmentLeaks,
  childScript,
  shmExists,
  shmSegments,
  startChild,
} from './helpers/processes.js'
import { checkPattern, difference, fillPattern, patternByte, viewsValue } from './helpers/values.js'

/** The pipe backings of this platform. */
const BACKINGS: Backing[] = process.platform === 'linux' ? ['shm', 'memfd'] : ['shm']

// ---------------------------------------------------------------------------------------------
// Leak check after every test

checkNoSegmentLeaks(test)

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
    for (let round = 0; round < 3 * BACKINGS.length; round++) {
      // 1 MiB of ring: up to 512 KiB inline (from 64 KiB written in place), larger values in a
      // segment of their own: named in /dev/shm, or sealed memory this process holds (sent
      // before the receiver registered) and nothing in /dev/shm.
      const backing = BACKINGS[round % BACKINGS.length]!
      const [sender, receiver] = createSharedMemoryPair({ capacity: 8, bytes: 1 << 20, backing })
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
      if (round % 3 !== 1) msg.release() // left unreleased when the receiver closes
      const blobs = ownSegments().filter((n) => !before.has(n) && n !== sender.name)
      t.is(blobs.length, backing === 'shm' ? 1 : 0, `${backing}: segments in /dev/shm`)
      if (round % 3 === 2) {
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
    // The named backing: its large messages are named segments, whose removal this checks (a
    // sealed pipe's go with the receiver's process).
    const [sender, unusedReceiver] = pair(t, { capacity: 8, bytes: 64 << 10, backing: 'shm' })
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
    // The named backing, as above.
    const [sender, unusedReceiver] = pair(t, { capacity: 1, bytes: 64 << 10, backing: 'shm' })
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
