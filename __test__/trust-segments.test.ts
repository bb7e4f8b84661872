/**
 * Node's side of segment trust: `Sender.attach`, `Receiver.attach` and `SharedArray.attach`
 * refuse, with `ERR_SHMPIPE_PERMISSION`, a segment that another user created under the expected
 * name (a real process of `nobody`, entered with `setpriv`), even with mode 0666, and a segment
 * of our own whose mode lets group or others in. The message names the owner and the mode.
 *
 * The other-user tests need root (as CI has); without root or `setpriv` they fail, unless
 * `SHMPIPE_TEST_ALLOW_SKIP=1` lets them pass without running (see `helpers/skip.ts`).
 */

import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, rmSync, statSync } from 'node:fs'
import { pathToFileURL } from 'node:url'

import test, { type ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_PERMISSION,
  Receiver,
  Sender,
  SharedArray,
  ShmpipeError,
} from '../index.js'
import { checkNoSegmentLeaks, childPids, repoRoot } from './helpers/processes.js'
import { rootWithSetpriv } from './helpers/skip.js'

checkNoSegmentLeaks(test)

const NOBODY = 65534
const dist = pathToFileURL(`${repoRoot}/dist/index.js`).href

/**
 * Starts a Node process as `nobody` that makes a pipe and a shared array with shmpipe, opens
 * both to everyone (mode 0666), reports their names and stays alive. Its segments are removed
 * at the end of the test.
 */
async function squatter(
  t: ExecutionContext,
  array: string,
): Promise<{ pipe: string; arraySegment: string }> {
  const script = `
    import { chmodSync } from 'node:fs'
    import { createSharedMemoryPair, SharedArray } from ${JSON.stringify(dist)}
    const [sender] = createSharedMemoryPair({ capacity: 4, bytes: 4096 })
    const a = SharedArray.create(${JSON.stringify(array)}, 'float64', [4])
    const arraySegment = 'shmpipe_a_' + ${JSON.stringify(array)}
    chmodSync('/dev/shm/' + sender.name, 0o666)
    chmodSync('/dev/shm/' + arraySegment, 0o666)
    console.log(JSON.stringify({ pipe: sender.name, arraySegment, uid: process.getuid() }))
    setInterval(() => a.data[0]++, 1000)
  `
  const proc = spawn(
    'setpriv',
    [
      `--reuid=${NOBODY}`,
      `--regid=${NOBODY}`,
      '--clear-groups',
      process.execPath,
      '--input-type=module',
      '-e',
      script,
    ],
    { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  if (proc.pid !== undefined) childPids.add(proc.pid)
  const exited = new Promise((resolve) => proc.on('close', resolve))
  t.teardown(async () => {
    proc.kill('SIGKILL')
    await exited
  })
  let out = ''
  let err = ''
  proc.stderr.setEncoding('utf8').on('data', (c: string) => (err += c))
  const line = await new Promise<string>((resolve, reject) => {
    proc.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c
      const nl = out.indexOf('\n')
      if (nl >= 0) resolve(out.slice(0, nl))
    })
    proc.on('exit', (code) => reject(new Error(`squatter exited (${code}): ${err}`)))
  })
  const report = JSON.parse(line) as { pipe: string; arraySegment: string; uid: number }
  t.is(report.uid, NOBODY, 'the squatter runs as nobody')
  t.teardown(() => {
    rmSync(`/dev/shm/${report.pipe}`, { force: true })
    rmSync(`/dev/shm/${report.arraySegment}`, { force: true })
  })
  return report
}

function ownerAndMode(name: string): [number, number] {
  const st = statSync(`/dev/shm/${name}`)
  return [st.uid, st.mode & 0o7777]
}

/** Asserts that `fn` throws ERR_SHMPIPE_PERMISSION naming `owner` and `mode`. */
function refused(t: ExecutionContext, fn: () => unknown, owner: number, mode: number): void {
  const err = t.throws(fn)
  t.true(err instanceof ShmpipeError, String(err))
  t.is((err as ShmpipeError).code, ERR_SHMPIPE_PERMISSION, err?.message)
  t.regex(err!.message, new RegExp(`uid ${owner}\\b`))
  t.regex(err!.message, new RegExp(`mode 0${mode.toString(8)}`))
}

let counter = 0
const RUN = `ts${Math.floor(Math.random() * 0x10000).toString(16)}`
const arrayName = (): string => `${RUN}x${counter++}`

test('a pipe and an array squatted by another user (mode 0666) are refused on attach', async (t) => {
  if (!rootWithSetpriv(t)) return
  const array = arrayName()
  const { pipe, arraySegment } = await squatter(t, array)
  t.deepEqual(ownerAndMode(pipe), [NOBODY, 0o666])
  t.deepEqual(ownerAndMode(arraySegment), [NOBODY, 0o666])
  refused(t, () => Sender.attach(pipe), NOBODY, 0o666)
  refused(t, () => Receiver.attach(pipe), NOBODY, 0o666)
  refused(t, () => SharedArray.attach(array), NOBODY, 0o666)
  t.deepEqual(ownerAndMode(pipe), [NOBODY, 0o666], 'the refusal left it alone')
})

test('a pipe or an array of ours open to group or others is refused on attach', (t) => {
  const me = process.getuid?.() ?? 0
  const [sender, receiver] = createSharedMemoryPair({ capacity: 4, bytes: 4096 })
  const array = arrayName()
  const a = SharedArray.create(array, 'uint8', [8])
  try {
    for (const mode of [0o640, 0o604, 0o666]) {
      chmodSync(`/dev/shm/${sender.name}`, mode)
      refused(t, () => Sender.attach(sender.name), me, mode)
      refused(t, () => Receiver.attach(sender.name), me, mode)
      chmodSync(`/dev/shm/shmpipe_a_${array}`, mode)
      refused(t, () => SharedArray.attach(array), me, mode)
    }
    chmodSync(`/dev/shm/${sender.name}`, 0o600)
    Sender.attach(sender.name).close()
  } finally {
    sender.close()
    receiver.close()
    a.close()
    SharedArray.delete(array)
  }
})
