/**
 * `child_process` IPC with `serialization: 'advanced'` (the structured clone algorithm, so a
 * Buffer arrives as a Buffer). The consumer forks the producer; the producer `process.send`s the
 * payload, with at most `window` sends whose callback has not run yet (the callback runs once the
 * message is written to the channel), so memory stays bounded at 1 GB. "go" and the start times
 * travel on the same channel.
 *
 * @module
 */

import { fork, type ChildProcess } from 'node:child_process'

import {
  makeValue,
  childExecArgv,
  repoRoot,
  roleScript,
  type CellConfig,
  type ControlMessage,
} from './common.js'
import { eventConsumer, parentInbox, type ConsumerSide, type ProducerSide } from './harness.js'

/** Resolves when `child` has exited; rejects if it failed. */
export function exited(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    child.on('error', reject)
    child.on('exit', (code, signal) => {
      if (code === 0) resolve()
      else reject(new Error(`${what} exited with ${signal ?? code}`))
    })
  })
}

/** The consumer's side: forks the producer and receives its messages. */
export function childProcessConsumer(cfg: CellConfig): ConsumerSide {
  const child = fork(roleScript, ['producer', JSON.stringify(cfg)], {
    cwd: repoRoot,
    execArgv: childExecArgv(),
    serialization: 'advanced',
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  })
  const consumer = eventConsumer(cfg, {
    done: exited(child, 'the child_process producer'),
    go: (n) => void child.send({ type: 'go', n } satisfies ControlMessage),
  })
  child.on('message', consumer.onMessage)
  return consumer.side
}

/** The producer's side (forked by the consumer): sends on its IPC channel. */
export function childProcessProducer(cfg: CellConfig): ProducerSide {
  const { verify, window } = cfg
  const inbox = parentInbox()
  const payload = verify ? null : makeValue(cfg, 0)
  let seq = 0
  let inFlight = 0
  let wake: (() => void) | null = null
  let failure: Error | null = null
  const sent = (err: Error | null): void => {
    if (err) failure = err
    inFlight--
    if (wake !== null) {
      const w = wake
      wake = null
      w()
    }
  }
  return {
    async send(n) {
      for (let i = 0; i < n; i++) {
        while (inFlight >= window) await new Promise<void>((resolve) => (wake = resolve))
        if (failure) throw failure
        const p = payload ?? makeValue(cfg, seq)
        seq++
        inFlight++
        process.send!(p, undefined, {}, sent)
      }
    },
    nextGo: async () => (await inbox.next('go')).n,
    reportStarts: (starts) =>
      new Promise((resolve, reject) =>
        process.send!({ type: 'starts', starts } satisfies ControlMessage, undefined, {}, (err) =>
          err ? reject(err) : resolve(),
        ),
      ),
    async close() {
      while (inFlight > 0) await new Promise<void>((resolve) => (wake = resolve))
      process.disconnect()
    },
  }
}
