/**
 * shmpipe, used as its README recommends for streaming. The consumer creates the pipe (it owns
 * the shared memory); the producer attaches by name. The driver starts the producer, or, with
 * `CellConfig.newUser`, the consumer forks it and creates the pipe with the default options (a
 * child process sending to its parent, as in the README's quick start).
 *
 * - Producer: `tryPut(value)`, falling back to `await put(value)` when the pipe is full.
 * - Consumer (`CellConfig.shmpipeReceive`): `get` is `await get()` (a value stored inline is
 *   copied out of the ring; one that travelled in a segment of its own is mapped, not copied);
 *   `get-nowait` drains with `getNowait()` and falls back to `await get()` when the pipe is
 *   empty (past the receiver's bound on mapped values not yet collected, `getNowait()` copies a
 *   large value out, as it cannot let the event loop turn); `iterator` is
 *   `for await (const v of receiver)`; `receive` is `await receive()` (zero copy: the value is a
 *   view into shared memory) and `release()` once checked.
 *
 * @module
 */

import { fork } from 'node:child_process'

import { createSharedMemoryPair, Sender } from '../../index.js'
import { exited } from './child-process.js'
import {
  checkValue,
  childExecArgv,
  isControl,
  makeValue,
  repoRoot,
  roleScript,
  type CellConfig,
  type ControlMessage,
} from './common.js'
import { sendToParent, type ConsumerSide, type Inbox, type ProducerSide } from './harness.js'

/** The consumer's side: creates the pipe; "go" goes through the driver or to its own child. */
export function shmpipeConsumer(cfg: CellConfig): ConsumerSide {
  const [ownSender, receiver] = cfg.newUser
    ? createSharedMemoryPair()
    : createSharedMemoryPair({ capacity: cfg.window, bytes: cfg.pipeBytes })
  let delivered = 0
  let bad = 0
  let receive: (n: number) => Promise<void>
  if (cfg.shmpipeReceive === 'get') {
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        if (!checkValue(await receiver.get(), cfg, delivered++)) bad++
      }
    }
  } else if (cfg.shmpipeReceive === 'get-nowait') {
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        let m = receiver.getNowait()
        if (m === undefined) m = await receiver.get()
        if (!checkValue(m, cfg, delivered++)) bad++
      }
    }
  } else if (cfg.shmpipeReceive === 'iterator') {
    const it = receiver[Symbol.asyncIterator]()
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        const r = await it.next()
        if (r.done === true || !checkValue(r.value, cfg, delivered++)) bad++
      }
    }
  } else {
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        const m = await receiver.receive()
        if (!checkValue(m.value, cfg, delivered++)) bad++
        m.release()
      }
    }
  }
  let go = (n: number): void => void sendToParent({ type: 'go', n })
  let starts: (() => Promise<string[]>) | undefined
  let producerExited: Promise<void> = Promise.resolve()
  if (cfg.newUser) {
    const child = fork(roleScript, ['producer', JSON.stringify(cfg), receiver.name], {
      cwd: repoRoot,
      execArgv: childExecArgv(),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    })
    producerExited = exited(child, 'the shmpipe producer')
    const startsReceived = new Promise<string[]>((resolve, reject) => {
      child.on('message', (m) => {
        if (isControl(m, 'starts')) resolve(m.starts)
        else if (isControl(m, 'error')) reject(new Error(m.message))
      })
      producerExited.then(() => reject(new Error('the producer exited before its starts')), reject)
    })
    startsReceived.catch(() => {})
    go = (n) => void child.send({ type: 'go', n } satisfies ControlMessage)
    starts = () => startsReceived
  }
  return {
    endpoint: receiver.name,
    receive,
    go,
    starts,
    get delivered() {
      return delivered
    },
    get bad() {
      return bad
    },
    async close() {
      await producerExited
      receiver.close()
      ownSender.close()
    },
  }
}

/** The producer's side: attaches to the pipe `name`; control comes from its parent. */
export function shmpipeProducer(cfg: CellConfig, name: string, inbox: Inbox): ProducerSide {
  const sender = Sender.attach(name)
  const payload = cfg.verify ? null : makeValue(cfg, 0)
  let seq = 0
  return {
    async send(n) {
      for (let i = 0; i < n; i++) {
        const p = payload ?? makeValue(cfg, seq)
        seq++
        if (!sender.tryPut(p)) await sender.put(p)
      }
    },
    nextGo: async () => (await inbox.next('go')).n,
    reportStarts: (starts) => sendToParent({ type: 'starts', starts }),
    async close() {
      await sender.waitForAllAck()
      sender.close()
      process.disconnect()
    },
  }
}
