/**
 * `worker_threads` (threads of one process, for reference): the producer is a Worker that
 * `postMessage`s the payload to the consumer's main thread as a copy (structured clone, not a
 * transfer: the producer keeps and reuses its payload, as the other transports do). postMessage
 * has no backpressure, so the consumer acknowledges every `window / 2` messages and the producer
 * keeps at most `window` unacknowledged. "go" and the start times travel on the same port.
 *
 * @module
 */

import { pathToFileURL } from 'node:url'
import { parentPort, Worker } from 'node:worker_threads'

import { isControl, makeValue, roleScript, type CellConfig, type ControlMessage } from './common.js'
import { eventConsumer, Inbox, type ConsumerSide, type ProducerSide } from './harness.js'

/** Acknowledge after this many messages. */
function ackEvery(cfg: CellConfig): number {
  return Math.max(1, cfg.window >> 1)
}

/** The consumer's side: starts the producer Worker and receives its messages. */
export function workerThreadsConsumer(cfg: CellConfig): ConsumerSide {
  // tsx is registered in the worker first, so that it can run role.ts.
  const code = `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(pathToFileURL(roleScript).href)}) })` // prettier-ignore
  const worker = new Worker(code, { eval: true, workerData: { role: 'producer', cfg } })
  const every = ackEvery(cfg)
  const done = new Promise<void>((resolve, reject) => {
    worker.on('error', reject)
    worker.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`the producer worker exited with ${code}`)),
    )
  })
  const consumer = eventConsumer(cfg, {
    done,
    go: (n) => worker.postMessage({ type: 'go', n } satisfies ControlMessage),
    afterEach: (delivered) => {
      if (delivered % every === 0)
        worker.postMessage({ type: 'ack', delivered } satisfies ControlMessage)
    },
  })
  worker.on('message', consumer.onMessage)
  return consumer.side
}

/** The producer's side (in the Worker): posts to the main thread. */
export function workerThreadsProducer(cfg: CellConfig): ProducerSide {
  const { verify, window } = cfg
  const port = parentPort!
  const inbox = new Inbox()
  let acked = 0
  let wake: (() => void) | null = null
  port.on('message', (m: ControlMessage) => {
    if (isControl(m, 'ack')) {
      acked = m.delivered
      if (wake !== null) {
        const w = wake
        wake = null
        w()
      }
    } else inbox.push(m)
  })
  const payload = verify ? null : makeValue(cfg, 0)
  let seq = 0
  return {
    async send(n) {
      for (let i = 0; i < n; i++) {
        while (seq - acked >= window) await new Promise<void>((resolve) => (wake = resolve))
        port.postMessage(payload ?? makeValue(cfg, seq))
        seq++
      }
    },
    nextGo: async () => (await inbox.next('go')).n,
    async reportStarts(starts) {
      port.postMessage({ type: 'starts', starts } satisfies ControlMessage)
    },
    async close() {
      port.close()
    },
  }
}
