/**
 * zeromq (v6) PUSH/PULL over `ipc://` (a Unix domain socket). The consumer binds a PULL socket,
 * the driver starts the producer, which connects a PUSH socket and `await send(payload)`s; the
 * consumer `await receive()`s. Both high-water marks are `window` messages. zeromq.js copies
 * messages of at most 128 bytes and hands larger ones over without a copy on both ends (libzmq
 * still copies them through the socket). A message that is not a Buffer (`CellConfig.shape`)
 * travels as `v8.serialize` writes it and is `v8.deserialize`d by the consumer, as a user of a byte
 * transport would send it. "go" and the start times go through the driver.
 *
 * @module
 */

import { randomBytes } from 'node:crypto'
import { rmSync } from 'node:fs'

import { Pull, Push } from 'zeromq'

import { checkValue, fromBytes, makeValue, toBytes, type CellConfig } from './common.js'
import { sendToParent, type ConsumerSide, type Inbox, type ProducerSide } from './harness.js'

/** The consumer's side: binds a PULL socket to a fresh `ipc:///tmp/…` address. */
export async function zeromqConsumer(cfg: CellConfig): Promise<ConsumerSide> {
  const path = `/tmp/shmpipe-bench-${process.pid}-${randomBytes(4).toString('hex')}.ipc`
  const endpoint = `ipc://${path}`
  const pull = new Pull({ receiveHighWaterMark: cfg.window })
  await pull.bind(endpoint)
  let delivered = 0
  let bad = 0
  return {
    endpoint,
    async receive(n) {
      for (let i = 0; i < n; i++) {
        const [m] = await pull.receive()
        if (!checkValue(fromBytes(cfg, m!), cfg, delivered++)) bad++
      }
    },
    go: (n) => void sendToParent({ type: 'go', n }),
    get delivered() {
      return delivered
    },
    get bad() {
      return bad
    },
    async close() {
      await pull.unbind(endpoint)
      pull.close()
      rmSync(path, { force: true }) // libzmq removes it on unbind; be sure
    },
  }
}

/** The producer's side: connects a PUSH socket to `endpoint`; control goes through the driver. */
export function zeromqProducer(cfg: CellConfig, endpoint: string, inbox: Inbox): ProducerSide {
  const { verify } = cfg
  const push = new Push({ sendHighWaterMark: cfg.window })
  push.connect(endpoint)
  const payload = verify ? null : makeValue(cfg, 0)
  let seq = 0
  return {
    async send(n) {
      for (let i = 0; i < n; i++) {
        const p = payload ?? makeValue(cfg, seq)
        seq++
        await push.send(toBytes(cfg, p))
      }
    },
    nextGo: async () => (await inbox.next('go')).n,
    reportStarts: (starts) => sendToParent({ type: 'starts', starts }),
    async close() {
      push.close() // lingers until the queued messages are delivered
      process.disconnect()
    },
  }
}
