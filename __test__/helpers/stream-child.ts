/**
 * Child-process roles for `trust-stream.test.ts`: late ends of a pipe, and the defaults on a
 * small `/dev/shm`.
 *
 * Run as `node --import=tsx stream-child.ts <role> <args…>`; a role reports to its parent as JSON
 * lines on stdout.
 */

import { statfsSync } from 'node:fs'

import {
  createSharedMemoryPair,
  listSegments,
  ProcessPool,
  Receiver,
  Sender,
  ShmpipeError,
  type Backing,
} from '../../index.js'

/** Sends `message` to the parent as a stdout line. */
function report(message: unknown): void {
  process.stdout.write(`${JSON.stringify(message)}\n`)
}

/** What an error says: its code and message. */
function described(err: unknown): { code?: string; message: string } {
  return { code: (err as { code?: string }).code, message: (err as Error).message }
}

/** Bytes free on /dev/shm, as `statfs` says. */
function shmFree(): number {
  const s = statfsSync('/dev/shm')
  return s.bavail * s.bsize
}

/** A Float64Array of `bytes` bytes whose elements are `seed + i`. */
function numbered(bytes: number, seed: number): Float64Array {
  const a = new Float64Array(bytes / 8)
  for (let i = 0; i < a.length; i++) a[i] = seed + i
  return a
}

/** Whether `a` is {@link numbered}`(bytes, seed)`. */
function isNumbered(a: unknown, bytes: number, seed: number): boolean {
  if (!(a instanceof Float64Array) || a.byteLength !== bytes) return false
  for (let i = 0; i < a.length; i += 4099) if (a[i] !== seed + i) return false
  return a[a.length - 1] === seed + a.length - 1
}

const roles: Record<string, (...args: string[]) => Promise<void>> = {
  /**
   * Attaches a sender and puts one value (5 s at most); reports whether the attach and the put
   * succeeded, or the error.
   */
  async 'late-sender'(name) {
    let sender: Sender
    try {
      sender = Sender.attach(name!)
    } catch (err) {
      report({ attached: false, ...described(err) })
      return
    }
    try {
      await sender.put('late', { timeout: 5000 })
      report({ attached: true, put: 'resolved' })
    } catch (err) {
      report({ attached: true, put: 'rejected', ...described(err) })
    } finally {
      sender.close()
    }
  },

  /** Attaches as the receiver; reports success or the error. */
  async 'attach-receiver'(name) {
    try {
      Receiver.attach(name!).close()
      report({ attached: true })
    } catch (err) {
      report({ attached: false, ...described(err) })
    }
  },

  /**
   * Run on a 64 MB /dev/shm: two pipes with the default options, each carrying a small value; a
   * stream of 20 values of 8 MB through one (stored inline), with the sender running ahead of the
   * receiver's `get()`; three values of 24 MB through the other (each in a segment of its own)
   * taken with `receive()` and released, and one more taken with `get()`. Then, in the named
   * backing (bound by /dev/shm), a pipe larger than /dev/shm and a value larger than what is free,
   * which must fail with ERR_SHMPIPE_NO_SPACE, leaving the pipe as it was; and in the default
   * (sealed) backing a value larger than all of /dev/shm, which arrives. Reports each step.
   */
  async defaults() {
    const pairs = [createSharedMemoryPair(), createSharedMemoryPair()]
    for (const [sender, receiver] of pairs) {
      await sender.put({ small: 'hello' })
      const small = (await receiver.get({ timeout: 10_000 })) as { small: string }
      if (small.small !== 'hello') throw new Error(`small value: ${JSON.stringify(small)}`)
    }
    report({ step: 'two pipes', ok: true })
    const [sender, receiver] = pairs[0]!
    const stream = (async () => {
      for (let k = 0; k < 20; k++) await sender.put(numbered(8e6, k), { timeout: 30_000 })
    })()
    for (let k = 0; k < 20; k++) {
      const v = await receiver.get({ timeout: 30_000 })
      if (!isNumbered(v, 8e6, k)) throw new Error(`streamed value ${k} came back different`)
    }
    await stream
    report({ step: 'stream of 8 MB values', ok: true })
    const [bigSender, bigReceiver] = pairs[1]!
    for (let k = 0; k < 3; k++) {
      await bigSender.put(numbered(24e6, k), { timeout: 10_000 })
      using m = await bigReceiver.receive({ timeout: 10_000 })
      if (!isNumbered(m.value, 24e6, k)) throw new Error(`24 MB value ${k} came back different`)
    }
    await bigSender.put(numbered(24e6, 3), { timeout: 10_000 })
    if (!isNumbered(await bigReceiver.get({ timeout: 10_000 }), 24e6, 3))
      throw new Error('24 MB value 3 came back different')
    report({ step: '24 MB values', ok: true })
    try {
      createSharedMemoryPair({ bytes: 128 << 20, backing: 'shm' }) // the named backing: bound by /dev/shm
      report({ step: 'pipe too big', created: true })
    } catch (err) {
      report({ step: 'pipe too big', ...described(err), freeAfter: shmFree() })
    }
    const [namedSender, namedReceiver] = createSharedMemoryPair({ bytes: 1 << 20, backing: 'shm' })
    pairs.push([namedSender, namedReceiver])
    const free = shmFree()
    try {
      await namedSender.put(new Uint8Array(free + (8 << 20)), { timeout: 10_000 })
      report({ step: 'value too big', sent: true })
    } catch (err) {
      report({ step: 'value too big', ...described(err), freeAfter: shmFree() })
    }
    // Nothing was half-sent: the pipe carries the next value.
    await namedSender.put('after')
    const after = await namedReceiver.get({ timeout: 10_000 })
    namedReceiver.getNowait() // nothing more
    report({ step: 'after', value: after })
    // The default pipe's receiver is registered: a large value is sealed memory, not /dev/shm's.
    const huge = 96e6
    await sender.put(numbered(huge, 7), { timeout: 30_000 })
    const arrived = isNumbered(await receiver.get({ timeout: 30_000 }), huge, 7)
    report({ step: 'sealed value larger than /dev/shm', ok: arrived, bytes: huge })
    for (const [s, r] of pairs) {
      s.close()
      r.close()
    }
  },

  /**
   * A default process pool of 8 workers (more than a 64 MB /dev/shm held at 8 MiB per pipe) runs
   * 16 tasks on 1 MB arrays; a task whose result has no room fails with ERR_SHMPIPE_NO_SPACE,
   * and the pool carries on. Reports each step, the first with the size and backing of every
   * pipe the pool made. With `backing` (`shm`), the pool's pipes are made in that backing (its
   * `backing` option): in the named backing a result larger than /dev/shm has no room.
   */
  async pool(backing) {
    const pool = new ProcessPool({
      module: new URL('./pool-tasks.ts', import.meta.url),
      workers: 8,
      execArgv: ['--import=tsx'],
      backing: backing as Backing | undefined,
    })
    try {
      await pool.ready()
      const pipes = listSegments()
        .filter((s) => s.kind === 'queue' && s.ownerPid === process.pid)
        .map((s) => ({ size: s.size, backing: s.backing }))
      report({ step: 'started', workers: pool.size, pipes })
      const x = numbered(1 << 20, 0)
      const ys = await Promise.all(Array.from({ length: 16 }, () => pool.run('addOne', [x])))
      report({ step: '16 tasks', ok: ys.every((y) => isNumbered(y, 1 << 20, 1)) })
      try {
        await pool.run('filled', [(shmFree() + (8 << 20)) / 8, 1])
        report({ step: 'result too big', sent: true })
      } catch (err) {
        report({ step: 'result too big', ...described(err) })
      }
      report({ step: 'after', ok: isNumbered(await pool.run('addOne', [x]), 1 << 20, 1) })
    } finally {
      await pool.close()
    }
  },
}

const [role = '', ...args] = process.argv.slice(2)
const run = roles[role]
if (run === undefined) throw new Error(`unknown role ${role}`)
run(...args).catch((err: unknown) => {
  console.error(err instanceof ShmpipeError ? `${err.code}: ${err.message}` : err)
  process.exit(1)
})
