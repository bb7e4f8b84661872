// quick-start.mjs: `node quick-start.mjs` starts a producer and a consumer process.
import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { createSharedMemoryPair, Receiver, Sender } from 'shmpipe'

const [role, name] = process.argv.slice(2)

if (role === 'producer') {
  const sender = Sender.attach(name)
  for (let i = 0; i < 10; i++) {
    const yourData = { i, frame: new Float64Array(1_000_000).fill(i) } // 8 MB
    await sender.put(yourData) // waits while the pipe is full (5 values)
  }
  if (sender.hasSpace()) sender.tryPut('the end') // or handle the full case
  await sender.waitForAllAck() // wait until the receiver has taken everything
  sender.close()
} else if (role === 'consumer') {
  const receiver = Receiver.attach(name)
  const first = await receiver.get({ timeout: 10_000 }) // ERR_SHMPIPE_TIMEOUT after 10 s
  let frames = 1
  // receiver.getNowait() returns undefined at once when the pipe is empty
  for await (const value of receiver) if (typeof value === 'object') frames++ // to the end
  console.log(`consumer: ${frames} frames, the first filled with ${first.frame[0]}`)
} else {
  const [sender, receiver] = createSharedMemoryPair({ capacity: 5 })
  receiver.close() // this process does not receive: the consumer attaches instead
  const script = fileURLToPath(import.meta.url)
  const consumer = fork(script, ['consumer', sender.name])
  const producer = fork(script, ['producer', sender.name])
  await new Promise((resolve) => producer.on('exit', resolve))
  sender.close() // the stream ends once every sender has closed: the consumer's loop ends
  await new Promise((resolve) => consumer.on('exit', resolve))
}
