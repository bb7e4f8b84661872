/**
 * Child-process (and worker-thread) roles for the shared array and manager tests.
 *
 * Run as `node --import=tsx array-child.ts <role> <args…>`, or in a Worker with
 * `workerData = { role, args }`. A role reports to its parent as one JSON line on stdout (or a
 * message to the parent thread, in a Worker). Values that JSON cannot carry (bigints) are sent
 * as strings.
 */

import { isMainThread, parentPort, workerData } from 'node:worker_threads'

import { SharedArray, SharedMemoryManager, withSharedMemory } from '../../index.js'

/** Sends `message` to the parent (a stdout line, or the parent thread in a Worker). */
function report(message: unknown): void {
  if (!isMainThread) parentPort!.postMessage(message)
  else process.stdout.write(`${JSON.stringify(message)}\n`)
}

/** Keeps the process alive until it is killed. */
function forever(): Promise<never> {
  return new Promise(() => setInterval(() => {}, 1 << 30))
}

/** Resolves once element `index` of `data` is non-zero (a start signal written by the parent). */
async function waitForFlag(data: ArrayLike<number>, index: number): Promise<void> {
  while (data[index] === 0) await new Promise((r) => setTimeout(r, 1))
}

/** Handles that must stay reachable while a role hangs (a collected handle releases its lock). */
const held: SharedArray[] = []

const roles: Record<string, (...args: string[]) => Promise<void>> = {
  /**
   * Attaches to each array in `names` (comma-separated), writes `value` at `index` (a bigint for
   * the 64-bit integer dtypes), and reports what each segment says (dtype, shape, type of
   * `data`, element 0) in one list.
   */
  async inspect(names, index, value) {
    const out = names!.split(',').map((name) => {
      const a = SharedArray.attach(name)
      const big = a.dtype === 'bigint64' || a.dtype === 'biguint64'
      const info = {
        name: a.name,
        dtype: a.dtype,
        shape: a.shape,
        length: a.length,
        byteLength: a.byteLength,
        constructor: a.data.constructor.name,
        first: String(a.data[0]),
      }
      ;(a.data as unknown as Record<number, unknown>)[Number(index)] = big
        ? BigInt(value!)
        : Number(value)
      a.close()
      return info
    })
    report(out)
  },

  /**
   * Adds `delta` to element 0 of a float64 array `count` times under the lock, as a
   * non-atomic read-modify-write that takes a while (`mode` 'sync': lock()/unlock() around a
   * read, a 20 µs busy wait and a write; 'async': withLock around a read, a turn of the event
   * loop and a write), and counts every operation in element 1. Starts once element 2 is
   * non-zero. Reports how many locks were recoveries. (Without the lock, the processes' updates
   * overwrite each other: the test this serves fails.)
   */
  async count(name, delta, count, mode) {
    const a = SharedArray.attach(name!, Float64Array)
    const d = a.data
    report('ready')
    await waitForFlag(d, 2)
    let recovered = 0
    const step = Number(delta)
    for (let i = 0; i < Number(count); i++) {
      if (mode === 'sync') {
        if (a.lock().recovered) recovered++
        const v = d[0]!
        for (const until = performance.now() + 0.02; performance.now() < until;);
        d[0] = v + step
        d[1]! += 1
        a.unlock()
      } else {
        await a.withLock(async (info) => {
          if (info.recovered) recovered++
          const v = d[0]!
          await new Promise((r) => setImmediate(r))
          d[0] = v + step
          d[1]! += 1
        })
      }
    }
    a.close()
    report({ recovered })
  },

  /** Takes the lock with lock(), half-writes (element 1 = -1), reports, hangs until killed. */
  async hold(name) {
    const a = SharedArray.attach(name!)
    held.push(a) // reachable while hanging: a collected handle would release its lock
    a.lock()
    ;(a.data as Float64Array)[1] = -1
    report({ held: process.pid })
    await forever()
  },

  /** Takes the lock inside withLock and never returns from it. */
  async 'hold-async'(name) {
    const a = SharedArray.attach(name!)
    held.push(a)
    await a.withLock(async () => {
      report({ held: process.pid })
      await forever()
    })
  },

  /** Locks through withLock with `timeout`, and reports the outcome (how long it took). */
  async 'lock-report'(name, timeout) {
    const a = SharedArray.attach(name!)
    report('ready')
    const start = performance.now()
    try {
      const info = await a.withLock((info) => info, { timeout: Number(timeout) })
      report({ info, ms: performance.now() - start })
    } catch (err) {
      report({ code: (err as { code?: string }).code, ms: performance.now() - start })
    }
    a.close()
  },

  /**
   * (Run with --expose-gc.) Keeps only `data` of a handle, collects the handle, writes through
   * `data`, and reports what it reads back.
   */
  async 'gc-view'(name) {
    let a: SharedArray | null = SharedArray.attach(name!, Float64Array)
    const data = a.data as Float64Array
    const ref = new WeakRef(a)
    a = null
    const gc = (globalThis as { gc?: () => void }).gc!
    for (let i = 0; i < 20 && ref.deref() !== undefined; i++) {
      await new Promise((r) => setTimeout(r, 10))
      gc()
    }
    gc()
    data[0] = 123
    report({ collected: ref.deref() === undefined, value: data[0], length: data.length })
  },

  /**
   * Creates a manager with the arrays named in `names` (comma-separated) and a pipe, reports
   * their names, and then, by `mode`:
   * - `exit`: returns (the process exits by itself);
   * - `throw`: throws (the process exits with code 1 through an uncaught error);
   * - `wait`: stays alive until a signal;
   * - `listener`: adds its own SIGTERM listener, which reports and exits (code 0) 300 ms later;
   * - `blocked`: once element 0 of the first array is non-zero (the parent has taken its lock),
   *   blocks in lock({ timeout: 1500 }) on it, reports the outcome, stays alive;
   * - `dispose`: disposes the manager, reports, then blocks the thread in Atomics.wait.
   */
  async manager(mode, names) {
    const manager = new SharedMemoryManager()
    const arrays = names!.split(',').map((n) => manager.createArray(n, Float64Array, [4, 4]))
    const [sender] = manager.createSharedMemoryPair({ capacity: 4, bytes: 1 << 16 })
    report({ arrays: arrays.map((a) => a.name), pipe: sender.name })
    if (mode === 'exit') return
    if (mode === 'throw') throw new Error('thrown on purpose')
    if (mode === 'listener') {
      process.on('SIGTERM', () => {
        report('handled SIGTERM')
        setTimeout(() => process.exit(0), 300)
      })
    }
    if (mode === 'blocked') {
      await waitForFlag(arrays[0]!.data as Float64Array, 0)
      const start = performance.now()
      try {
        arrays[0]!.lock({ timeout: 1500 })
        report({ locked: true })
      } catch (err) {
        report({ code: (err as { code?: string }).code, ms: performance.now() - start })
      }
    }
    if (mode === 'dispose') {
      manager.dispose()
      report({ disposed: manager.disposed, length: arrays[0]!.data.length })
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
    }
    await forever()
  },

  /** withSharedMemory whose callback throws: reports the error and what is left. */
  async 'with-throws'(name) {
    try {
      await withSharedMemory(async (m) => {
        m.createArray(name!, Int32Array, 8)
        report({ inside: SharedArray.list().includes(name!) })
        throw new Error('inside')
      })
    } catch (err) {
      report({ error: (err as Error).message, left: SharedArray.list().includes(name!) })
    }
  },

  /**
   * Creates a float64 array of 4 elements in sealed memory (`{ backing: 'memfd' }`), writes
   * `value` at 0, reports its `backing`, waits until element 1 is non-zero, and exits normally.
   */
  async 'create-sealed'(name, value) {
    const a = SharedArray.create(name!, Float64Array, 4, { backing: 'memfd' })
    a.data[0] = Number(value)
    report({ backing: a.backing })
    await waitForFlag(a.data, 1)
    a.close()
  },

  /** (In a Worker.) Takes the lock and hangs, holding it, until the worker is terminated. */
  async 'worker-hold'(name) {
    const a = SharedArray.attach(name!)
    held.push(a)
    a.lock()
    report('held')
    await forever()
  },
}

async function main(role: string, args: string[]): Promise<void> {
  const run = roles[role]
  if (run === undefined) throw new Error(`unknown role ${role}`)
  await run(...args)
}

if (isMainThread) {
  const [role = '', ...args] = process.argv.slice(2)
  main(role, args).catch((err: unknown) => {
    console.error(err)
    process.exit(1)
  })
} else {
  const { role, args } = workerData as { role: string; args: string[] }
  await main(role, args)
}
