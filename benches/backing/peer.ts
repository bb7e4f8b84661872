/**
 * The child process of the backing benchmark (`benches/backing.ts`):
 *
 *     node --import=tsx benches/backing/peer.ts <echo|stream> <input-pipe> <output-pipe>
 *
 * It attaches as the receiver of `input` and a sender of `output` (the parent created both, with
 * the backing under test), and serves until it receives `'stop'`:
 * - `echo`: sends every value it receives back unchanged (the round trip);
 * - `stream`: for each command `{ n, size }`, sends `n` messages of `size` bytes (one reused
 *   payload, filled as the transport benchmark's).
 *
 * @module
 */

import { Receiver, Sender } from '../../index.js'
import { makePayload } from '../transport/common.js'

/** A command of the `stream` role. */
export interface StreamCommand {
  n: number
  size: number
}

const [role, inputName, outputName] = process.argv.slice(2)
const input = Receiver.attach(inputName!)
const output = Sender.attach(outputName!)

async function send(value: unknown): Promise<void> {
  if (!output.tryPut(value)) await output.put(value)
}

async function next(): Promise<unknown> {
  const v = input.getNowait()
  return v === undefined ? input.get() : v
}

if (role === 'echo') {
  for (let v = await next(); v !== 'stop'; v = await next()) await send(v)
} else if (role === 'stream') {
  const payloads = new Map<number, Buffer>()
  for (let v = await next(); v !== 'stop'; v = await next()) {
    const { n, size } = v as StreamCommand
    let payload = payloads.get(size)
    if (payload === undefined) payloads.set(size, (payload = makePayload(size, false, 0)))
    for (let i = 0; i < n; i++) await send(payload)
  }
} else {
  throw new Error(`unknown role ${role}`)
}
output.close()
input.close()
