/**
 * The script of every benchmark child:
 *
 *     node --import=tsx benches/transport/role.ts <consumer|producer|memcpy> <cell-config-json> [endpoint]
 *
 * or, for worker_threads, a Worker with `workerData = { role: 'producer', cfg }`. It reports to
 * its parent over IPC (the Worker: over its port).
 *
 * @module
 */

import { isMainThread, parentPort, workerData } from 'node:worker_threads'

import { childProcessConsumer, childProcessProducer } from './child-process.js'
import type { CellConfig, ControlMessage } from './common.js'
import {
  parentInbox,
  runConsumer,
  runProducer,
  sendToParent,
  type ConsumerSide,
  type ProducerSide,
} from './harness.js'
import { runMemcpy } from './memcpy.js'
import { shmpipeConsumer, shmpipeProducer } from './shmpipe.js'
import { workerThreadsConsumer, workerThreadsProducer } from './worker-threads.js'
import { zeromqConsumer, zeromqProducer } from './zeromq.js'

function report(m: ControlMessage): Promise<void> {
  if (!isMainThread) {
    parentPort!.postMessage(m)
    return Promise.resolve()
  }
  return sendToParent(m)
}

async function consumerSide(cfg: CellConfig): Promise<ConsumerSide> {
  switch (cfg.transport) {
    case 'shmpipe':
    case 'shmpipe_receive':
      return shmpipeConsumer(cfg)
    case 'child_process':
      return childProcessConsumer(cfg)
    case 'zeromq':
      return zeromqConsumer(cfg)
    case 'worker_threads':
      return workerThreadsConsumer(cfg)
    default:
      throw new Error(`no consumer for ${cfg.transport}`)
  }
}

async function main(): Promise<void> {
  const [role, json, endpointArg] = isMainThread
    ? process.argv.slice(2)
    : [(workerData as { role: string }).role, JSON.stringify((workerData as { cfg: unknown }).cfg)]
  const cfg = JSON.parse(json!) as CellConfig
  if (role === 'memcpy') {
    await report(runMemcpy(cfg))
    process.disconnect()
  } else if (role === 'consumer') {
    const side = await consumerSide(cfg)
    await report({ type: 'ready', endpoint: side.endpoint })
    await report(await runConsumer(cfg, side))
    process.disconnect()
  } else if (role === 'producer') {
    const t = cfg.transport
    let side: ProducerSide
    if (t === 'child_process') side = childProcessProducer(cfg)
    else if (t === 'worker_threads') side = workerThreadsProducer(cfg)
    else {
      // Started by the driver together with the consumer, the endpoint comes once it is ready;
      // forked by the consumer (shmpipe, `newUser`), it is the argument after the config.
      const inbox = parentInbox()
      const endpoint = endpointArg ?? (await inbox.next('ready')).endpoint
      side =
        t === 'zeromq'
          ? zeromqProducer(cfg, endpoint, inbox)
          : shmpipeProducer(cfg, endpoint, inbox)
    }
    await runProducer(cfg, side)
  } else {
    throw new Error(`unknown role ${role}`)
  }
}

main().catch(async (err: unknown) => {
  const message = err instanceof Error ? (err.stack ?? err.message) : String(err)
  try {
    await report({ type: 'error', message })
  } catch {
    // No channel left: stderr below is all there is.
  }
  process.stderr.write(`${message}\n`)
  process.exitCode = 1
  if (isMainThread) process.exit(1)
})
