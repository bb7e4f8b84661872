/**
 * The sender child of the finalizer-lag probe's pipe case: attaches to the pipe `name` and sends
 * `n` values of `size` bytes as fast as the pipe takes them (one reused payload), then closes.
 *
 *     node --import=tsx pipe-sender.ts <name> <size> <n>
 *
 * @module
 */

import { Sender } from '../../../index.js'

const [name, sizeArg, nArg] = process.argv.slice(2)
const sender = Sender.attach(name!)
const payload = Buffer.alloc(Number(sizeArg), 7)
for (let i = 0, n = Number(nArg); i < n; i++) {
  if (!sender.tryPut(payload)) await sender.put(payload)
}
sender.close()
