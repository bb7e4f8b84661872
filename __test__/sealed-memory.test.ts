/**
 * Where a pipe's memory lives, seen from Node with real child processes: sealed memory
 * (`'memfd'`) by default on Linux, the named `/dev/shm` segment (`'shm'`) when the option or the
 * `SHMPIPE_BACKING` environment variable asks for it, and a typed error for any other value.
 * What the sealed memory guarantees (no truncation, no leak after SIGKILL, no `/dev/shm` limit)
 * is tested with real processes in `crates/test-peer/tests/sealed_memory.rs`; its
 * `ERR_SHMPIPE_NO_SPACE` in a small cgroup in `crates/test-peer/tests/memory_limit.rs`.
 */

import { statSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import { ERR_SHMPIPE_INVALID_ARGUMENT, type Backing, type PipeOptions } from '../index.js'
import { pair, throwsWith } from './helpers/pipe.js'
import { checkNoSegmentLeaks, entry, spawnNode } from './helpers/processes.js'

checkNoSegmentLeaks(test)

const linux = process.platform === 'linux'
const RING = 1 << 20

/** A `node -e` child that attaches a sender to `name`, reports its backing, sends one value. */
const attachAndSend = `
  const name = process.argv.at(-1)
  import(${JSON.stringify(pathToFileURL(entry).href)}).then(async ({ Sender }) => {
    const sender = Sender.attach(name)
    console.log(JSON.stringify({ backing: sender.backing }))
    await sender.put({ pid: process.pid, data: new Float64Array([1.5, 2.5]) })
    await sender.waitForAllAck({ timeout: 10000 })
    sender.close()
  }).catch((err) => { console.error(err); process.exit(1) })
`

/** A `node -e` child that creates a pair and reports its backings, or the error it threw. */
const createAndReport = `
  import(${JSON.stringify(pathToFileURL(entry).href)}).then(({ createSharedMemoryPair }) => {
    try {
      const [sender, receiver] = createSharedMemoryPair({ bytes: 65536 })
      console.log(JSON.stringify({ sender: sender.backing, receiver: receiver.backing }))
      sender.close()
      receiver.close()
    } catch (err) {
      console.log(JSON.stringify({ code: err.code, message: err.message }))
    }
  }).catch((err) => { console.error(err); process.exit(1) })
`

/** Bytes of the pipe's name in /dev/shm: the whole ring when named, a small record when sealed. */
function nameBytes(name: string): number {
  return statSync(`/dev/shm/${name}`).size
}

/** A pipe of `options` whose sender a child process attaches by name and sends through. */
async function roundTripThroughChild(
  t: ExecutionContext,
  options: PipeOptions,
  expected: Backing,
): Promise<void> {
  const [ownSender, receiver] = pair(t, { ...options, bytes: RING })
  t.is(ownSender.backing, expected)
  t.is(receiver.backing, expected)
  const child = spawnNode(t, ['--import=tsx', '-e', attachAndSend, receiver.name], {
    SHMPIPE_BACKING: undefined,
  })
  t.deepEqual(await child.next(), { backing: expected }, 'the attached end says the same')
  const value = (await receiver.get({ timeout: 20_000 })) as { pid: number; data: Float64Array }
  t.is(value.pid, child.process.pid ?? -1)
  t.deepEqual(value.data, new Float64Array([1.5, 2.5]))
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  if (linux) {
    const bytes = nameBytes(receiver.name)
    if (expected === 'memfd') t.true(bytes <= 8192, `a record of ${bytes} bytes in /dev/shm`)
    else t.true(bytes >= RING, `a named ring of ${bytes} bytes in /dev/shm`)
  }
  ownSender.close()
}

test('the default backing is sealed memory on Linux and a child attaches it by name', async (t) => {
  t.is(process.env.SHMPIPE_BACKING, undefined, 'run without SHMPIPE_BACKING')
  await roundTripThroughChild(t, {}, linux ? 'memfd' : 'shm')
})

test("backing: 'shm' gives a named segment that a child attaches", async (t) => {
  await roundTripThroughChild(t, { backing: 'shm' }, 'shm')
})

test("backing: 'memfd' is sealed memory on Linux", async (t) => {
  if (!linux) {
    t.pass('Linux only')
    return
  }
  await roundTripThroughChild(t, { backing: 'memfd' }, 'memfd')
})

test('SHMPIPE_BACKING sets the default backing of the pairs a process creates', async (t) => {
  for (const backing of linux ? ['shm', 'memfd'] : ['shm']) {
    const child = spawnNode(t, ['--import=tsx', '-e', createAndReport], {
      SHMPIPE_BACKING: backing,
    })
    t.deepEqual(await child.next(), { sender: backing, receiver: backing }, backing)
    t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
  }
})

test('an unknown backing is ERR_SHMPIPE_INVALID_ARGUMENT naming the option', (t) => {
  for (const backing of ['tmpfs', 'SHM', '', 'memfd ']) {
    const err = throwsWith(
      t,
      () => pair(t, { backing: backing as Backing }),
      ERR_SHMPIPE_INVALID_ARGUMENT,
    )
    t.regex(err.message, /\bbacking\b/, err.message)
  }
})

test('an unknown SHMPIPE_BACKING is ERR_SHMPIPE_INVALID_ARGUMENT naming the variable', async (t) => {
  const child = spawnNode(t, ['--import=tsx', '-e', createAndReport], {
    SHMPIPE_BACKING: 'bogus',
  })
  const said = (await child.next()) as { code: string; message: string }
  t.is(said.code, ERR_SHMPIPE_INVALID_ARGUMENT)
  t.regex(said.message, /SHMPIPE_BACKING/)
  t.regex(said.message, /'shm' or 'memfd'/)
  t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
})
