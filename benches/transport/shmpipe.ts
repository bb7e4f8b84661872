/**
 * shmpipe, used as its README recommends for streaming. The consumer creates the pipe (it owns
 * the shared memory) and the driver starts the producer, which attaches by name.
 *
 * - Producer: `tryPut(payload)`, falling back to `await put(payload)` when the pipe is full.
 * - Consumer (`CellConfig.shmpipeReceive`): `get` drains with `getNowait()` and falls back to
 *   `await get()` when the pipe is empty (a value stored inline is copied out of the ring; one
 *   that travelled in a segment of its own is mapped, not copied); `iterator` is
 *   `for await (const v of receiver)`; `receive` is `await receive()` (zero copy: the value is a
 *   view into shared memory) and `release()` once checked.
 *
 * @module
 */

import { createSharedMemoryPair, Sender } from '../../index.js'
import { checkMessage, makePayload, type CellConfig } from './common.js'
import { sendToParent, type ConsumerSide, type Inbox, type ProducerSide } from './harness.js'

/** The consumer's side: creates the pipe; "go" goes through the driver. */
export function shmpipeConsumer(cfg: CellConfig): ConsumerSide {
  const { size, verify } = cfg
  const [ownSender, receiver] = createSharedMemoryPair({
    capacity: cfg.window,
    bytes: cfg.pipeBytes,
  })
  let delivered = 0
  let bad = 0
  let receive: (n: number) => Promise<void>
  if (cfg.shmpipeReceive === 'get') {
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        let m = receiver.getNowait()
        if (m === undefined) m = await receiver.get()
        if (!checkMessage(m, size, verify, delivered++)) bad++
      }
    }
  } else if (cfg.shmpipeReceive === 'iterator') {
    const it = receiver[Symbol.asyncIterator]()
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        const r = await it.next()
        if (r.done === true || !checkMessage(r.value, size, verify, delivered++)) bad++
      }
    }
  } else {
    receive = async (n) => {
      for (let i = 0; i < n; i++) {
        const m = await receiver.receive()
        if (!checkMessage(m.value, size, verify, delivered++)) bad++
        m.release()
      }
    }
  }
  return {
    endpoint: receiver.name,
    receive,
    go: (n) => void sendToParent({ type: 'go', n }),
    get delivered() {
      return delivered
    },
    get bad() {
      return bad
    },
    async close() {
      receiver.close()
      ownSender.close()
    },
  }
}

/** The producer's side: attaches to the pipe `name`; control goes through the driver. */
export function shmpipeProducer(cfg: CellConfig, name: string, inbox: Inbox): ProducerSide {
  const { size, verify } = cfg
  const sender = Sender.attach(name)
  const payload = verify ? null : makePayload(size, false, 0)
  let seq = 0
  return {
    async send(n) {
      for (let i = 0; i < n; i++) {
        const p = payload ?? makePayload(size, true, seq)
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
