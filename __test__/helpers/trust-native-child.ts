/**
 * Child-process roles for `trust-native.test.ts`: moved zero-copy views, huge timeouts.
 *
 * Run as `node --import=tsx trust-native-child.ts <role> <args…>`; a role reports to the parent
 * as JSON lines on stdout. Roles that read moved views need `--expose-gc` (and, on Node 20,
 * `--harmony-rab-gsab-transfer` for `ArrayBuffer.prototype.transfer`).
 */

import { setTimeout as sleep } from 'node:timers/promises'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_TIMEOUT,
  Receiver,
  Sender,
  SharedArray,
  ShmpipeError,
} from '../../index.js'
import { native } from '../../src/native.js'

/** Sends `message` to the parent as one JSON line. */
function report(message: unknown): void {
  process.stdout.write(`${JSON.stringify(message)}\n`)
}

/** Runs a full garbage collection, lets finalizers run, and again. */
async function collect(): Promise<void> {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with --expose-gc')
  for (let i = 0; i < 3; i++) {
    gc()
    await sleep(20)
  }
}

/** `ArrayBuffer.prototype.transfer()`: moves `buffer`'s memory into a new ArrayBuffer. */
function transfer(buffer: ArrayBuffer): ArrayBuffer {
  return (buffer as ArrayBuffer & { transfer(): ArrayBuffer }).transfer()
}

/** Whether every byte of `view` is `byte`. */
function allAre(view: Uint8Array, byte: number): boolean {
  return view.every((b) => b === byte)
}

/** Whether the process `pid` has exited (and been reaped). */
function gone(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return false
  } catch {
    return true
  }
}

const roles: Record<string, (...args: string[]) => Promise<void>> = {
  /**
   * Creates a pipe of `ringBytes` with its receiver role handed on, reports its name, then puts
   * `count` Uint8Arrays of `size` bytes, value k filled with k + 1, and closes. A put rejected
   * because the receiver closed ends the sending.
   */
  async 'send-patterns'(count, size, ringBytes) {
    const [sender, receiver] = createSharedMemoryPair({ capacity: 256, bytes: Number(ringBytes) })
    receiver.close() // never used: the role goes to the reader
    report({ name: sender.name })
    let sent = 0
    try {
      for (; sent < Number(count); sent++) {
        await sender.put(new Uint8Array(Number(size)).fill(sent + 1))
      }
    } catch (err) {
      if (!(err instanceof ShmpipeError && err.code === ERR_SHMPIPE_CLOSED)) throw err
    }
    sender.close()
    report({ sent })
  },

  /**
   * Receives the first value without a copy, moves its ArrayBuffer away with `transfer()`, and
   * releases the message. Then receives the rest (`count` in all), checking after each that the
   * moved bytes are still the first value's. A receive that times out (the pipe has no room
   * while the moved buffer holds the first message) ends that phase; the moved buffer is then
   * dropped and collected, and the rest is received.
   */
  async 'read-moved-while-receiving'(name, count, size) {
    const receiver = Receiver.attach(name!)
    const first = await receiver.receive()
    const view = first.value as Uint8Array
    const at = view.byteOffset
    let moved: ArrayBuffer | null = transfer(view.buffer as ArrayBuffer)
    first.release()
    const movedIntact = (): boolean => allAre(new Uint8Array(moved!, at, Number(size)), 1)
    let intact = movedIntact()
    let received = 1
    let stalledAt = -1
    const take = async (timeout: number): Promise<boolean> => {
      const m = await receiver.receive({ timeout })
      const ok = allAre(m.value as Uint8Array, received + 1)
      m.release()
      if (!ok) throw new Error(`value ${received} has wrong bytes`)
      received++
      return true
    }
    while (received < Number(count)) {
      try {
        await take(3000)
      } catch (err) {
        if (err instanceof ShmpipeError && err.code === ERR_SHMPIPE_TIMEOUT) {
          stalledAt = received
          break
        }
        throw err
      }
      if (!movedIntact()) intact = false
    }
    moved = null
    await collect()
    while (received < Number(count)) await take(30_000)
    receiver.close()
    report({ intact, stalledAt, received })
  },

  /**
   * Receives the first value without a copy, moves its ArrayBuffer away with `transfer()`,
   * releases the message, closes the receiver, waits for the sender's process (`senderPid`, the
   * pipe's creator) to exit, collects garbage, and reads the moved bytes.
   */
  async 'read-moved-after-close'(name, size, senderPid) {
    const receiver = Receiver.attach(name!)
    const first = await receiver.receive()
    const view = first.value as Uint8Array
    const at = view.byteOffset
    const moved = transfer(view.buffer as ArrayBuffer)
    first.release()
    receiver.close()
    const until = Date.now() + 30_000
    while (!gone(Number(senderPid))) {
      if (Date.now() > until) throw new Error('the sender did not exit')
      await sleep(20)
    }
    await collect()
    const bytes = new Uint8Array(moved, at, Number(size))
    report({ intact: allAre(bytes, 1), length: bytes.length })
  },

  /**
   * Huge timeouts on a pipe. Creates a pipe of capacity 2 and reports its name; then, in phases
   * the parent drives by sending values:
   * 1. async gets with huge timeouts queued behind a pending get (the parent sends 5 values);
   * 2. sync gets with huge timeouts, waiting for 2 values the parent sends later;
   * 3. async puts with huge timeouts queued behind a pending put on this full pipe, then drained;
   * 4. a sync put with a huge timeout into the parent's full pipe `fullPipe`, which the parent
   *    empties later.
   * Reports what settled how, and every process warning.
   */
  async 'huge-timeouts'(fullPipe) {
    const warnings: string[] = []
    process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`))
    const settled: Record<string, string> = {}
    const track = (label: string, p: Promise<unknown>): Promise<unknown> =>
      p.then(
        (v) => (settled[label] = `resolved ${String(v)}`),
        (e: unknown) => (settled[label] = `rejected ${(e as Error).message}`),
      )
    const [sender, receiver] = createSharedMemoryPair({ capacity: 2 })
    report({ name: sender.name })

    const gets = [
      track('get', receiver.get()),
      track('get Infinity', receiver.get({ timeout: Infinity })),
      track('get 1e30', receiver.get({ timeout: 1e30 })),
      track('get 2**31', receiver.get({ timeout: 2 ** 31 })),
      track(
        'receive 1e300',
        receiver.receive({ timeout: 1e300 }).then((m) => {
          const v = m.value
          m.release()
          return v
        }),
      ),
    ]
    await sleep(500)
    report({ phase: 'gets waiting', settled: { ...settled } })
    await Promise.all(gets)

    report({ phase: 'gets done' })
    const got = [receiver.getSync({ timeout: 1e30 }), receiver.getSync({ timeout: Infinity })]

    sender.putSync('fill 1')
    sender.putSync('fill 2')
    const puts = [
      track('put', sender.put('p')),
      track('put Infinity', sender.put('q', { timeout: Infinity })),
      track('put 1e30', sender.put('r', { timeout: 1e30 })),
      track('waitForAllAck 2**40', sender.waitForAllAck({ timeout: 2 ** 40 })),
    ]
    await sleep(500)
    const putsWaiting = { ...settled }
    for (let i = 0; i < 5; i++) got.push(await receiver.get())
    await Promise.all(puts)

    const out = Sender.attach(fullPipe!)
    out.putSync('fill')
    report({ phase: 'full' })
    out.putSync('late', { timeout: 1e30 })
    out.close()
    receiver.close()
    sender.close()
    report({ phase: 'done', putsWaiting, settled, got, warnings })
  },

  /**
   * Huge timeouts given to the addon itself (the public API turns them into "no timeout"
   * first): each call finds what it waits for at once, so it returns unless the timeout itself
   * fails. Reports each call's outcome.
   */
  async 'native-huge-timeouts'() {
    const outcome = (f: () => unknown): string => {
      try {
        f()
        return 'ok'
      } catch (err) {
        return `threw ${(err as Error).message}`
      }
    }
    const queue = native.NativeQueue.create(4, 4096, 1)
    const producer = queue.producer()
    const consumer = queue.consumer()
    const array = native.NativeArray.create(`tn_nt_${process.pid}`, 'int32', [1])
    const data = new Uint8Array([1, 2, 3])
    const results = {
      sendSync: outcome(() => producer.sendSync(data, 1e30)),
      recvSync: outcome(() => consumer.recvSync(1e300)),
      recvSyncInfinity: outcome(() => (producer.trySend(data), consumer.recvSync(Infinity))),
      waitForAllAckSync: outcome(() => producer.waitForAllAckSync(1e30)),
      lockSync: outcome(() => array.lockSync(1e30)),
    }
    array.close()
    native.NativeArray.remove(`tn_nt_${process.pid}`)
    producer.close()
    consumer.close()
    queue.close()
    report(results)
  },

  /** Holds the lock of the shared array `name` until SIGUSR2, then unlocks and exits. */
  async 'hold-lock'(name) {
    const array = SharedArray.attach(name!)
    array.lock()
    process.once('SIGUSR2', () => {
      array.unlock()
      array.close()
      clearInterval(alive)
    })
    const alive = setInterval(() => {}, 1 << 30)
    report('locked')
  },

  /**
   * Huge timeouts on a shared array's lock, held by another process: withLock calls queued
   * behind a pending one (reported while they wait; the parent then has the holder unlock), and
   * a blocking lock().
   */
  async 'lock-huge-timeouts'(name) {
    const warnings: string[] = []
    process.on('warning', (w) => warnings.push(`${w.name}: ${w.message}`))
    const settled: Record<string, string> = {}
    const array = SharedArray.attach(name!)
    const track = (label: string, timeout?: number): Promise<unknown> =>
      array
        .withLock(() => label, timeout === undefined ? {} : { timeout })
        .then(
          (v) => (settled[label] = `resolved ${String(v)}`),
          (e: unknown) => (settled[label] = `rejected ${(e as Error).message}`),
        )
    const calls = [
      track('withLock'),
      track('withLock Infinity', Infinity),
      track('withLock 1e30', 1e30),
      track('withLock 2**31', 2 ** 31),
    ]
    await sleep(500)
    report({ waiting: { ...settled } }) // the parent then has the holder unlock
    await Promise.all(calls)
    const info = array.lock({ timeout: 1e30 })
    array.unlock()
    array.close()
    report({ settled, lockSync: info.recovered, warnings })
  },
}

const [role = '', ...args] = process.argv.slice(2)
const run = roles[role]
if (run === undefined) {
  console.error(`unknown role ${role}`)
  process.exit(2)
}
run(...args).catch((err: unknown) => {
  console.error(err)
  process.exit(1)
})
