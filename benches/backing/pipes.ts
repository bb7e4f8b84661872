/**
 * The pipe parts of the backing benchmark, each with a pipe (or two) of each backing and a child
 * process (`peer.ts`) on the other end:
 * - {@link EchoPeer}: round trips of a small message (this process `put`s, the child sends it
 *   back, this process `get`s it);
 * - {@link StreamPeer}: messages streamed from the child into this process, taken with `get()`
 *   (a copy) or `receive()` (a view into the ring, then `release()`), every message checked as
 *   the transport benchmark checks it (length, first and last byte);
 * - {@link createAndClose}: `createSharedMemoryPair` and closing both ends, in this process.
 *
 * @module
 */

import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

import { createSharedMemoryPair, type Backing, type Receiver, type Sender } from '../../index.js'
import { checkMessage, childExecArgv, repoRoot } from '../transport/common.js'
import { checkBacking } from './measure.js'
import type { StreamCommand } from './peer.js'

const peerScript = fileURLToPath(new URL('./peer.ts', import.meta.url))

/** A child running `peer.ts` as `role`; a failure of it ends this process too. */
class Peer {
  readonly #child: ChildProcess
  readonly #exited: Promise<void>
  #stopping = false

  constructor(role: 'echo' | 'stream', input: string, output: string) {
    this.#child = spawn(process.execPath, [...childExecArgv(), peerScript, role, input, output], {
      cwd: repoRoot,
      stdio: ['ignore', 'inherit', 'inherit'],
    })
    this.#exited = new Promise((resolve) =>
      this.#child.once('exit', (code, signal) => {
        if (!this.#stopping || code !== 0) {
          console.error(`backing benchmark: ${role} peer ended (code ${code}, signal ${signal})`)
          process.exit(1)
        }
        resolve()
      }),
    )
  }

  /** Waits for the child to exit, once it has been told to stop. */
  async stopped(): Promise<void> {
    this.#stopping = true
    await this.#exited
  }
}

async function put(sender: Sender, value: unknown): Promise<void> {
  if (!sender.tryPut(value)) await sender.put(value)
}

async function get(receiver: Receiver): Promise<unknown> {
  const v = receiver.getNowait()
  return v === undefined ? receiver.get() : v
}

/** A child that echoes what it receives, over two pipes of `backing` of the default size. */
export class EchoPeer {
  readonly #requests: Sender
  readonly #replies: Receiver
  readonly #ownReplySender: Sender
  readonly #peer: Peer

  constructor(backing: Backing) {
    const [requests, unused] = createSharedMemoryPair({ capacity: 4, backing })
    unused.close() // the child is the receiver
    const [ownReplySender, replies] = createSharedMemoryPair({ capacity: 4, backing })
    checkBacking('echo pipe', requests.backing, backing)
    checkBacking('echo pipe', replies.backing, backing)
    this.#requests = requests
    this.#replies = replies
    this.#ownReplySender = ownReplySender
    this.#peer = new Peer('echo', requests.name, replies.name)
  }

  /** Mean ns of `n` round trips of `payload`, one at a time. */
  async roundTrips(n: number, payload: Buffer): Promise<number> {
    const t0 = process.hrtime.bigint()
    for (let i = 0; i < n; i++) {
      await put(this.#requests, payload)
      const reply = await get(this.#replies)
      if (!(reply instanceof Uint8Array) || reply.length !== payload.length)
        throw new Error('echo: wrong reply')
    }
    return Number(process.hrtime.bigint() - t0) / n
  }

  async close(): Promise<void> {
    await put(this.#requests, 'stop')
    await this.#peer.stopped()
    this.#requests.close()
    this.#replies.close()
    this.#ownReplySender.close()
  }
}

/** How {@link StreamPeer} takes messages. */
export type Take = 'get' | 'receive'

/** A child that streams messages into a pipe of `backing` and `bytes` on command. */
export class StreamPeer {
  readonly #commands: Sender
  readonly #data: Receiver
  readonly #ownDataSender: Sender
  readonly #peer: Peer

  constructor(backing: Backing, bytes: number) {
    const [commands, unused] = createSharedMemoryPair({ capacity: 4, bytes: 1 << 16, backing })
    unused.close() // the child is the receiver
    const [ownDataSender, data] = createSharedMemoryPair({ capacity: 64, bytes, backing })
    checkBacking('stream pipe', data.backing, backing)
    this.#commands = commands
    this.#data = data
    this.#ownDataSender = ownDataSender
    this.#peer = new Peer('stream', commands.name, data.name)
  }

  /**
   * Mean ns per message of a stream of `n` messages of `size` bytes, from the command to the
   * last message taken and checked. Throws if a message is wrong.
   */
  async stream(n: number, size: number, take: Take): Promise<number> {
    const t0 = process.hrtime.bigint()
    await put(this.#commands, { n, size } satisfies StreamCommand)
    let bad = 0
    for (let i = 0; i < n; i++) {
      if (take === 'get') {
        if (!checkMessage(await get(this.#data), size, false, i)) bad++
      } else {
        const m = await this.#data.receive()
        if (!checkMessage(m.value, size, false, i)) bad++
        m.release()
      }
    }
    const ns = Number(process.hrtime.bigint() - t0) / n
    if (bad > 0) throw new Error(`stream: ${bad} of ${n} messages wrong`)
    return ns
  }

  async close(): Promise<void> {
    await put(this.#commands, 'stop')
    await this.#peer.stopped()
    this.#commands.close()
    this.#data.close()
    this.#ownDataSender.close()
  }
}

/** Mean ns of creating a pipe of `bytes` and `backing` and closing both its ends, `n` times. */
export function createAndClose(backing: Backing, bytes: number, n: number): number {
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < n; i++) {
    const [sender, receiver] = createSharedMemoryPair({ bytes, backing })
    checkBacking('created pipe', sender.backing, backing)
    receiver.close()
    sender.close()
  }
  return Number(process.hrtime.bigint() - t0) / n
}
