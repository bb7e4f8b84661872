/**
 * Child-process (and worker-thread) roles for the pipe tests.
 *
 * Run as `node --import=tsx child.ts <role> <args…>` (spawn or fork), or in a Worker with
 * `workerData = { role, args }`. A role reports to the parent with {@link report}: over IPC when
 * forked, to the parent thread in a Worker, else as one JSON line on stdout.
 */

import { isMainThread, parentPort, threadId, workerData } from 'node:worker_threads'

import { createSharedMemoryPair, Receiver, Sender } from '../../index.js'
import { checkPattern, fillPattern, mpscValue, patternByte, viewsValue } from './values.js'

/** Sends `message` to the parent (IPC, worker port or a stdout line). */
function report(message: unknown): void {
  if (!isMainThread) parentPort!.postMessage(message)
  else if (process.send) process.send(message)
  else process.stdout.write(`${JSON.stringify(message)}\n`)
}

/** The next IPC message from the parent (forked children only). */
function nextMessage(): Promise<unknown> {
  return new Promise((resolve) => process.once('message', resolve))
}

/** Keeps the process alive until it is killed. */
function forever(): Promise<never> {
  return new Promise(() => setInterval(() => {}, 1 << 30))
}

/** Values that must stay reachable while a role hangs (collection would release them). */
const kept: unknown[] = []

const roles: Record<string, (...args: string[]) => Promise<void>> = {
  /** Receives on `inName`, sends every value back on `outName`, until `inName`'s senders close. */
  async echo(inName, outName) {
    const receiver = Receiver.attach(inName!)
    const sender = Sender.attach(outName!)
    report('ready')
    let n = 0
    for await (const value of receiver) {
      await sender.put(value)
      n++
    }
    await sender.waitForAllAck()
    sender.close()
    receiver.close()
    report({ echoed: n })
  },

  /** One MPSC producer (forked): attaches, says ready, waits for 'go', sends `count` values. */
  async produce(name, producer, count) {
    const sender = Sender.attach(name!)
    report('ready')
    await nextMessage()
    for (let seq = 0; seq < Number(count); seq++) await sender.put(mpscValue(Number(producer), seq))
    sender.close()
    report('done')
    process.disconnect?.()
  },

  /**
   * Sends `count` messages of binary views (see {@link viewsValue}), then one of `bigBytes`
   * bytes, then closes.
   */
  async 'send-views'(name, count, bigBytes) {
    const sender = Sender.attach(name!)
    for (let k = 0; k < Number(count); k++) await sender.put(viewsValue(k))
    const big = new Uint8Array(Number(bigBytes))
    fillPattern(big, 99)
    await sender.put({ big })
    await sender.waitForAllAck()
    sender.close()
  },

  /** Sends `count` numbers 0…count-1, then closes (and exits). */
  async count(name, count) {
    const sender = Sender.attach(name!)
    for (let i = 0; i < Number(count); i++) await sender.put(i)
    sender.close()
  },

  /** (In a Worker.) Sends `count` values tagged with the thread id, then closes. */
  async 'worker-send'(name, count) {
    const sender = Sender.attach(name!)
    for (let i = 0; i < Number(count); i++)
      await sender.put({ threadId, i, data: new Float64Array([i, i / 2]) })
    await sender.waitForAllAck()
    sender.close()
    report('done')
  },

  /** Tries to attach as `kind` ('sender' or 'receiver') and reports the outcome. */
  async 'try-attach'(kind, name) {
    try {
      const end = kind === 'receiver' ? Receiver.attach(name!) : Sender.attach(name!)
      end.close()
      report({ ok: true })
    } catch (err) {
      report({ ok: false, name: (err as Error).name, code: (err as { code?: string }).code })
    }
  },

  /** Attaches a sender, sends 'ready' through the pipe, then hangs until killed. */
  async 'sender-hang'(name) {
    const sender = Sender.attach(name!)
    kept.push(sender)
    await sender.put('ready')
    await forever()
  },

  /** Attaches as the receiver, reports, then hangs (never reads) until killed. */
  async 'receiver-hang'(name) {
    kept.push(Receiver.attach(name!))
    report('ready')
    await forever()
  },

  /**
   * Attaches as the receiver, reports, waits (for the parent's next IPC message if `wait` is
   * 'ipc'), takes `take` values, closes cleanly, reports what it got, and stays alive until killed.
   */
  async 'receive-then-close'(name, take = '1', wait = '') {
    const receiver = Receiver.attach(name!)
    report('ready')
    if (wait === 'ipc') await nextMessage()
    const got: unknown[] = []
    for (let i = 0; i < Number(take); i++) got.push(await receiver.get())
    receiver.close()
    report({ got, closed: true })
    await forever()
  },

  /** Attaches as the receiver, takes one message with receive() and holds it until killed. */
  async 'receive-and-hold'(name) {
    const receiver = Receiver.attach(name!)
    const msg = await receiver.receive()
    kept.push(msg) // reachable while hanging: a collected message is released
    report({ holding: msg.value })
    await forever()
  },

  /** Sends a Uint8Array of `bytes` bytes filled with the pattern of `seed`. */
  async 'big-send'(name, bytes, seed) {
    const sender = Sender.attach(name!)
    const data = Buffer.allocUnsafe(Number(bytes))
    fillPattern(data, Number(seed))
    report('filled')
    await sender.put(data)
    await sender.waitForAllAck()
    sender.close()
    report('acked')
  },

  /** Receives one large binary value and reports its type, length and pattern check. */
  async 'big-receive'(name, seed) {
    const receiver = Receiver.attach(name!)
    report('ready')
    const value = (await receiver.get()) as Uint8Array
    const n = value.length
    report({
      isBuffer: Buffer.isBuffer(value),
      constructor: (value as object).constructor.name,
      length: n,
      samples: [0, 1, n >>> 1, n - 2, n - 1].map((i) => [value[i], patternByte(i, Number(seed))]),
      firstBad: checkPattern(value, Number(seed)),
    })
    receiver.close()
  },

  /**
   * Blocks the thread: in getSync() of a pair it created (`getSync`), or in Atomics.wait with a
   * pair (`pair-atomics`) or without one (`atomics`).
   */
  async blocked(how) {
    if (how === 'atomics') {
      report({ name: null })
    } else {
      const [sender, receiver] = createSharedMemoryPair({ capacity: 4 })
      report({ name: sender.name })
      if (how === 'getSync') receiver.getSync()
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
  },

  /**
   * Creates a pair, reports its name, and waits in `get()` (`await`) or blocks the thread in
   * `getSync()` (`getSync`) until a signal ends the process. With `listener`, first sets up a
   * JavaScript SIGINT listener: `swallow` (keeps running), `exit` (`process.exit(130)`), or
   * `removed` (added, then removed again).
   */
  async 'signal-target'(how, listener = '') {
    const [sender, receiver] = createSharedMemoryPair({ capacity: 4 })
    if (listener === 'swallow') process.on('SIGINT', () => report('swallowed'))
    if (listener === 'exit') process.on('SIGINT', () => process.exit(130))
    if (listener === 'removed') {
      const noop = (): void => {}
      process.on('SIGINT', noop)
      process.off('SIGINT', noop)
    }
    report({ name: sender.name })
    if (how === 'getSync') receiver.getSync()
    else await receiver.get()
  },

  /**
   * (Forked.) Creates a pair, closes its receiver, reports the name, and on the parent's 'go'
   * sends `count` values of `bytes` bytes (pattern of seed k) through it, reports 'sent' and
   * blocks the thread until a signal ends the process.
   */
  async 'own-and-send'(count, bytes) {
    const [sender, receiver] = createSharedMemoryPair({ capacity: 8, bytes: 64 << 10 })
    receiver.close()
    report({ name: sender.name })
    await nextMessage()
    for (let k = 0; k < Number(count); k++) {
      const data = new Uint8Array(Number(bytes))
      fillPattern(data, k)
      sender.putSync(data)
    }
    report('sent')
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
  },

  /**
   * Attaches a sender to `name`, sends one value of `bytes` bytes (pattern of seed 7), reports
   * 'sent' and blocks the thread until a signal ends the process.
   */
  async 'send-then-block'(name, bytes) {
    const sender = Sender.attach(name!)
    const data = new Uint8Array(Number(bytes))
    fillPattern(data, 7)
    sender.putSync(data)
    report('sent')
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
  },

  /**
   * Creates a pair and awaits `get()`; the only thing that keeps the process alive meanwhile is
   * the pending get (the timer that puts a value 300 ms later is unref'd).
   */
  async 'pending-get'() {
    const [sender, receiver] = createSharedMemoryPair({ capacity: 4 })
    report({ name: sender.name })
    setTimeout(() => sender.putSync('late'), 300).unref()
    const value = await receiver.get()
    report({ got: value })
  },

  /**
   * Creates a pair and leaves it open with nothing pending: the process must exit by itself.
   * With `waited`, first does a get that times out and one that succeeds (both through the
   * waiter thread), an async put and a waitForAllAck.
   */
  async idle(mode) {
    const [sender, receiver] = createSharedMemoryPair({ capacity: 4 })
    report({ name: sender.name })
    if (mode === 'waited') {
      await receiver.get({ timeout: 20 }).catch(() => {})
      setTimeout(() => sender.putSync(1), 20).unref()
      await receiver.get()
      await sender.put(2)
      const ack = sender.waitForAllAck()
      await receiver.get()
      await ack
    }
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
