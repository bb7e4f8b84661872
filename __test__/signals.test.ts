/**
 * SIGINT and SIGTERM: a child process that owns a pipe removes it when the signal ends it, also
 * while its JavaScript thread is blocked in `getSync()` (no JavaScript listener could run then),
 * and still dies of the signal; segments another process still needs stay; a JavaScript signal
 * listener decides for itself (`src/lifecycle.ts`).
 */

import { rmSync } from 'node:fs'

import test, { type ExecutionContext } from 'ava'

import { createSharedMemoryPair, ERR_SHMPIPE_PEER_GONE, Receiver, ShmpipeError } from '../index.js'
import {
  checkNoSegmentLeaks,
  forkChild,
  shmExists,
  shmSegments,
  startChild,
  type Child,
  type Exit,
} from './helpers/processes.js'
import { checkPattern } from './helpers/values.js'

checkNoSegmentLeaks(test)

const SIGNALS = ['SIGINT', 'SIGTERM'] as const

/** The child's exit, or a note if it is still running `ms` after the call. */
function exitWithin(child: Child, ms: number): Promise<Exit | string> {
  return Promise.race([
    child.exited,
    new Promise<string>((r) => setTimeout(() => r(`still running ${ms} ms later`), ms)),
  ])
}

/** Starts `signal-target` and returns it with its pipe's name (removed at teardown if left). */
async function target(t: ExecutionContext, how: string, listener?: string) {
  const child = startChild(t, 'signal-target', listener === undefined ? [how] : [how, listener])
  const { name } = (await child.next()) as { name: string }
  t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true }))
  t.true(shmExists(name))
  await new Promise((r) => setTimeout(r, 200)) // waiting (or blocked) by now
  return { child, name }
}

for (const signal of SIGNALS) {
  for (const how of ['getSync', 'await']) {
    test(`${signal} while ${how === 'getSync' ? 'blocked in getSync()' : 'awaiting get()'}: the owner dies of it and its pipe is gone`, async (t) => {
      const { child, name } = await target(t, how)
      child.process.kill(signal)
      t.deepEqual(await exitWithin(child, 3000), { code: null, signal }, child.stderr())
      t.false(shmExists(name), `${name} left in /dev/shm`)
    })
  }
}

test('a JavaScript SIGINT listener that keeps the process running keeps its pipe', async (t) => {
  const { child, name } = await target(t, 'await', 'swallow')
  child.process.kill('SIGINT')
  t.is(await child.next(), 'swallowed')
  t.is(await exitWithin(child, 300), 'still running 300 ms later')
  t.true(shmExists(name), 'a process that lives on must keep its pipe')
  // SIGTERM has no listener: the native handler still runs, chained to Node's default one.
  child.process.kill('SIGTERM')
  t.deepEqual(await exitWithin(child, 3000), { code: null, signal: 'SIGTERM' })
  t.false(shmExists(name))
})

test('a JavaScript SIGINT listener that calls process.exit(): the exit hook removes the pipe', async (t) => {
  const { child, name } = await target(t, 'await', 'exit')
  child.process.kill('SIGINT')
  t.deepEqual(await exitWithin(child, 3000), { code: 130, signal: null })
  t.false(shmExists(name))
})

test('after the last JavaScript SIGINT listener is removed, SIGINT cleans up again', async (t) => {
  // libuv resets SIGINT to its default when its last listener goes; lifecycle.ts re-arms.
  const { child, name } = await target(t, 'getSync', 'removed')
  child.process.kill('SIGINT')
  t.deepEqual(await exitWithin(child, 3000), { code: null, signal: 'SIGINT' })
  t.false(shmExists(name))
})

for (const backing of process.platform === 'linux'
  ? (['shm', 'memfd'] as const)
  : (['shm'] as const)) {
  test(`SIGTERM to a sender: a value it sent in its own segment still reaches the live receiver (${backing})`, async (t) => {
    // 200 kB into a 64 KiB pipe: the value travels in a segment of its own, created by the child:
    // named, or sealed and held by the child, whose signal handler copies it to a named one.
    const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 64 << 10, backing })
    t.teardown(() => {
      sender.close()
      receiver.close()
    })
    const before = new Set(shmSegments().keys())
    const child = startChild(t, 'send-then-block', [sender.name, '200000'])
    t.is(await child.next(), 'sent')
    const childs = () =>
      [...shmSegments()].filter(([n, pid]) => !before.has(n) && pid === child.process.pid)
    t.is(childs().length, backing === 'shm' ? 1 : 0, 'segments of the value in /dev/shm')
    child.process.kill('SIGTERM')
    t.deepEqual(await exitWithin(child, 3000), { code: null, signal: 'SIGTERM' })
    const handed = childs()
    t.is(handed.length, 1, 'a sent value’s segment belongs to its receiver now')
    const value = (await receiver.get({ timeout: 5000 })) as Uint8Array
    t.is(value.length, 200_000)
    t.is(checkPattern(value, 7), -1, 'intact')
    t.false(shmExists(handed[0]![0]), 'received: the receiver removed it')
  })
}

test('SIGTERM to a pipe’s owner: its receiver in another process drains what was sent, then PEER_GONE', async (t) => {
  const child = forkChild(t, 'own-and-send', ['3', '100000'])
  const { name } = (await child.next()) as { name: string }
  t.teardown(() => rmSync(`/dev/shm/${name}`, { force: true }))
  const receiver = Receiver.attach(name)
  t.teardown(() => receiver.close())
  child.process.send('go')
  t.is(await child.next(), 'sent')
  child.process.kill('SIGTERM')
  t.deepEqual(await exitWithin(child, 3000), { code: null, signal: 'SIGTERM' })
  // A sealed pipe (the default) is found by name while any process holds it: the receiver here.
  t.true(shmExists(name), 'the pipe’s name stays while its receiver holds it')
  // Found by name: a second receiver is refused as such, not as a missing pipe.
  t.throws(() => Receiver.attach(name), {
    instanceOf: ShmpipeError,
    code: 'ERR_SHMPIPE_RECEIVER_TAKEN',
  })
  for (let k = 0; k < 3; k++) {
    const value = (await receiver.get({ timeout: 5000 })) as Uint8Array
    t.is(checkPattern(value, k), -1, `value ${k} intact`)
  }
  const err = await t.throwsAsync(receiver.get({ timeout: 5000 }), { instanceOf: ShmpipeError })
  t.is(err?.code, ERR_SHMPIPE_PEER_GONE)
  receiver.close()
  t.false(shmExists(name), 'its last holder closed: the name is gone')
})
