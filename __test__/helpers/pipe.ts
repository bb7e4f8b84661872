/**
 * Helpers of the pipe tests: pairs closed at the end of a test, assertions of a ShmpipeError's
 * code, timing of a settlement, an echo child process, and killing a peer under a pending call.
 */

import type { ExecutionContext } from 'ava'

import {
  createSharedMemoryPair,
  ERR_SHMPIPE_PEER_GONE,
  ShmpipeError,
  type PipeOptions,
  type Receiver,
  type Sender,
  type ShmpipeErrorCode,
} from '../../index.js'
import { startChild, type Child } from './processes.js'

export const GiB = 2 ** 30

/** A pair whose ends are closed when the test ends. */
export function pair(t: ExecutionContext, options: PipeOptions = {}): [Sender, Receiver] {
  const [sender, receiver] = createSharedMemoryPair(options)
  t.teardown(() => {
    sender.close()
    receiver.close()
  })
  return [sender, receiver]
}

/** Awaits `promise`, which must reject with a ShmpipeError of `code`; returns it. */
export async function rejectsWith(
  t: ExecutionContext,
  promise: Promise<unknown>,
  code: ShmpipeErrorCode,
  message?: string,
): Promise<ShmpipeError> {
  const err = await t.throwsAsync(promise, { instanceOf: ShmpipeError }, message)
  t.is(err?.code, code, message)
  return err as ShmpipeError
}

/** Calls `fn`, which must throw a ShmpipeError of `code`; returns it. */
export function throwsWith(
  t: ExecutionContext,
  fn: () => unknown,
  code: ShmpipeErrorCode,
): ShmpipeError {
  const err = t.throws(fn, { instanceOf: ShmpipeError })
  t.is(err?.code, code)
  return err as ShmpipeError
}

/**
 * Returns `promise`, marked as handled: if the test fails before awaiting it, its later rejection
 * (when the teardown closes the pipe) is not an unhandled rejection that fails the whole file.
 */
export function handled<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => {})
  return promise
}

/** Milliseconds `promise` takes to settle (either way). */
export async function settleTime(promise: Promise<unknown>): Promise<number> {
  const start = performance.now()
  await promise.catch(() => {})
  return performance.now() - start
}

/**
 * An echo child: values put into `toChild` come back, in order, from `fromChild`.
 *
 * The parent creates both pipes. It gives up the receiving end of `toChild` (the child attaches
 * as its receiver) and keeps its own sender of `fromChild` open until the child's sender is
 * attached, so the stream from the child cannot end before it started.
 */
export async function startEcho(
  t: ExecutionContext,
  options: PipeOptions = {},
  toChildOptions: PipeOptions = options,
) {
  const [toChild, unusedReceiver] = pair(t, toChildOptions)
  unusedReceiver.close()
  const [ownSender, fromChild] = pair(t, options)
  const child = startChild(t, 'echo', [toChild.name, fromChild.name])
  t.is(await child.next(), 'ready')
  ownSender.close()
  let echoed = 0
  return {
    toChild,
    fromChild,
    child,
    async roundTrip(value: unknown): Promise<unknown> {
      await toChild.put(value, { timeout: 10_000 })
      const out = await fromChild.get({ timeout: 10_000 })
      echoed++
      return out
    },
    /** Counts values sent by the caller through `toChild` itself (not with roundTrip). */
    count(n: number): void {
      echoed += n
    },
    /** Closes the pipe to the child; the child's stream then ends, and so does ours. */
    async finish(): Promise<void> {
      toChild.close()
      const rest: unknown[] = []
      for await (const v of fromChild) rest.push(v)
      t.deepEqual(rest, [], 'nothing more came back')
      t.deepEqual(await child.next(), { echoed })
      t.deepEqual(await child.exited, { code: 0, signal: null }, child.stderr())
    },
  }
}

/** Kills `child` once `pending` is really waiting; `pending` must reject PEER_GONE within 1.5 s. */
export async function killAndExpectPeerGone(
  t: ExecutionContext,
  child: Child,
  pending: Promise<unknown>,
): Promise<void> {
  let settled = false
  void pending.then(
    () => (settled = true),
    () => (settled = true),
  )
  await new Promise((r) => setTimeout(r, 100))
  t.false(settled, 'still waiting before the kill')
  const start = performance.now()
  child.process.kill('SIGKILL')
  const err = await rejectsWith(t, pending, ERR_SHMPIPE_PEER_GONE)
  const elapsed = performance.now() - start
  t.true(elapsed < 1500, `${elapsed.toFixed(0)} ms`)
  t.log(`PEER_GONE after ${elapsed.toFixed(0)} ms: ${err.message}`)
  t.deepEqual(await child.exited, { code: null, signal: 'SIGKILL' })
}
