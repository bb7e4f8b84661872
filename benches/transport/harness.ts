/**
 * The rounds of a cell, the same for every transport: each transport only says how its consumer
 * receives and checks messages, how its producer streams them, and how "go" and the start times
 * travel (see {@link ConsumerSide}, {@link ProducerSide}).
 *
 * @module
 */

import {
  checkValue,
  isControl,
  isPayload,
  now,
  roundCount,
  type CellConfig,
  type ControlMessage,
  type ResultMessage,
} from './common.js'

/** The consumer's end of a transport. */
export interface ConsumerSide {
  /** What the producer attaches to (a pipe name, a socket address; '' if none). */
  readonly endpoint: string
  /** Resolves once `n` more messages have been received and checked. */
  receive(n: number): Promise<void>
  /** Tells the producer to stream a round of `n` messages. */
  go(n: number): void
  /** The producer's start times, when they come through this side (else the driver has them). */
  starts?(): Promise<string[]>
  /** Messages received so far, and how many of them failed the check. */
  readonly delivered: number
  readonly bad: number
  /** Closes the transport (and waits for a producer this side started). */
  close(): Promise<void>
}

/**
 * The consumer's end of a transport whose messages arrive as events (`child_process`,
 * `worker_threads`): attach `onMessage` to the event. It checks and counts the payloads, lets
 * `receive(n)` wait for `n` more, and takes the producer's start times and errors from the
 * control messages. `afterEach` runs after each payload with the count so far (for acks).
 */
export function eventConsumer(
  cfg: CellConfig,
  transport: {
    done: Promise<void>
    go: (n: number) => void
    afterEach?: (delivered: number) => void
  },
): { side: ConsumerSide; onMessage: (m: unknown) => void } {
  let delivered = 0
  let bad = 0
  let target = 0
  let wake: (() => void) | null = null
  let fail: (err: Error) => void = () => {}
  let starts: (s: string[]) => void = () => {}
  const startsReceived = new Promise<string[]>((resolve) => (starts = resolve))
  const onMessage = (m: unknown): void => {
    if (isPayload(m)) {
      if (!checkValue(m, cfg, delivered++)) bad++
      transport.afterEach?.(delivered)
      if (delivered === target && wake !== null) {
        const w = wake
        wake = null
        w()
      }
    } else if (isControl(m, 'starts')) starts(m.starts)
    else if (isControl(m, 'error')) fail(new Error(m.message))
  }
  transport.done.catch((err: Error) => fail(err))
  const side: ConsumerSide = {
    endpoint: '',
    receive(n) {
      target += n
      if (delivered >= target) return Promise.resolve()
      return new Promise((resolve, reject) => {
        wake = resolve
        fail = reject
      })
    },
    go: transport.go,
    starts: () => startsReceived,
    get delivered() {
      return delivered
    },
    get bad() {
      return bad
    },
    close: () => transport.done,
  }
  return { side, onMessage }
}

/** The producer's end of a transport. */
export interface ProducerSide {
  /** Streams the next `n` messages (resolves once the last one is handed to the transport). */
  send(n: number): Promise<void>
  /** Waits for the consumer's "go"; resolves with the round's message count. */
  nextGo(): Promise<number>
  /** Hands the start times of the timed rounds to the consumer's side or the driver. */
  reportStarts(starts: string[]): Promise<void>
  /** Flushes and closes the transport. */
  close(): Promise<void>
}

/** Control messages from one channel, taken in order. */
export class Inbox {
  #queue: ControlMessage[] = []
  #waiters: ((m: ControlMessage) => void)[] = []

  /** Adds a message (call from the channel's message handler). */
  push(m: ControlMessage): void {
    const w = this.#waiters.shift()
    if (w) w(m)
    else this.#queue.push(m)
  }

  /** The next message, which must be of `type`. */
  async next<T extends ControlMessage['type']>(
    type: T,
  ): Promise<Extract<ControlMessage, { type: T }>> {
    const m =
      this.#queue.shift() ?? (await new Promise<ControlMessage>((r) => this.#waiters.push(r)))
    if (isControl(m, 'error')) throw new Error(m.message)
    if (!isControl(m, type)) throw new Error(`expected a ${type} message, got ${JSON.stringify(m)}`)
    return m
  }
}

/** Sends `m` to this process's parent over IPC; resolves once it is written. */
export function sendToParent(m: ControlMessage): Promise<void> {
  return new Promise((resolve, reject) => {
    if (!process.send) return reject(new Error('no IPC channel to the parent'))
    process.send(m, undefined, {}, (err) => (err ? reject(err) : resolve()))
  })
}

/** An {@link Inbox} fed by this process's IPC channel (control messages only). */
export function parentInbox(): Inbox {
  const inbox = new Inbox()
  process.on('message', (m) => inbox.push(m as ControlMessage))
  return inbox
}

/**
 * Runs the consumer's side of a cell: the warm-up (whose pace sets the rounds' message count),
 * then the timed rounds, each started with "go" and ended when its last message is checked, then
 * a final "go" of 0 messages that lets the producer close.
 */
export async function runConsumer(cfg: CellConfig, side: ConsumerSide): Promise<ResultMessage> {
  await side.receive(1)
  const first = now()
  if (cfg.warmup > 1) await side.receive(cfg.warmup - 1)
  const pace = cfg.warmup > 1 ? Number(now() - first) / (cfg.warmup - 1) : undefined
  const n = roundCount(cfg, pace)
  const counts: number[] = []
  const ends: string[] = []
  for (let r = 0; r < cfg.rounds; r++) {
    side.go(n)
    await side.receive(n)
    ends.push(String(now()))
    counts.push(n)
  }
  side.go(0) // everything arrived: the producer may close (zeromq drops what is still queued)
  const starts = side.starts ? await side.starts() : undefined
  await side.close()
  return { type: 'result', counts, ends, starts, delivered: side.delivered, bad: side.bad }
}

/**
 * Runs the producer's side of a cell: the warm-up, then one round per "go", timed from "go";
 * then it waits for the final "go" (of 0 messages), so it closes only once everything arrived.
 */
export async function runProducer(cfg: CellConfig, side: ProducerSide): Promise<void> {
  await side.send(cfg.warmup)
  const starts: string[] = []
  for (let r = 0; r < cfg.rounds; r++) {
    const n = await side.nextGo()
    starts.push(String(now()))
    await side.send(n)
  }
  if ((await side.nextGo()) !== 0) throw new Error('expected the final go (0 messages)')
  await side.reportStarts(starts)
  await side.close()
}
