/**
 * The worker process of a {@link ProcessPool}: run as
 * `node <execArgv…> pool-worker.(ts|js) <module URL> <task pipe> <result pipe> <copy|views> <pool pid>`.
 *
 * It attaches as the receiver of the task pipe and as a sender of the result pipe (both created
 * by the pool, which owns them), imports the task module, reports `ready` (or why the module
 * could not be loaded) on the result pipe, then runs tasks one at a time: each task's arguments
 * arrive from the task pipe, and its result (or its error) goes back on the result pipe. Data
 * never travels through stdio or an IPC channel.
 *
 * The worker ends when the task pipe closes (the pool stops it) or its owner dies. It also ends
 * when the pool's process is gone, even in the middle of a long synchronous task: on Unix a
 * native watch (`watchParent`) sends it SIGTERM (its signal cleanup removes the segments it owns)
 * and, if that does not end it within a second, SIGKILL.
 *
 * The messages are declared in `protocol.ts`.
 *
 * @module
 */

import {
  ERR_SHMPIPE_CLOSED,
  ERR_SHMPIPE_PEER_GONE,
  ERR_SHMPIPE_NO_SPACE,
  ERR_SHMPIPE_UNSUPPORTED_TYPE,
  ShmpipeError,
} from '../errors.js'
import { native } from '../native.js'
import { Receiver, Sender, type ReceivedMessage } from '../pipe.js'
import {
  describeError,
  WORKER_MARK,
  type ErrorInfo,
  type ReplyMessage,
  type TaskMessage,
} from './protocol.js'

/** Whether the error means the pipe's other end is gone (closed or dead). */
function isEnd(err: unknown): boolean {
  return (
    err instanceof ShmpipeError &&
    (err.code === ERR_SHMPIPE_CLOSED || err.code === ERR_SHMPIPE_PEER_GONE)
  )
}

/** Sends `reply`; if its value cannot be encoded, reports that instead. */
async function reply(sender: Sender, message: ReplyMessage): Promise<void> {
  try {
    await sender.put(message)
  } catch (err) {
    if (message.t === 'ok' && err instanceof ShmpipeError && err.code === ERR_SHMPIPE_NO_SPACE) {
      // Too large for what shared memory has free: the task fails, the worker carries on.
      await sender.put({ t: 'error', kind: 'result-no-space', error: describeError(err) })
      return
    }
    if (!(err instanceof ShmpipeError && err.code === ERR_SHMPIPE_UNSUPPORTED_TYPE)) throw err
    const info = describeError(err)
    // The codec names the path from the envelope (`value.value.x`): name it from the result.
    info.message = info.message.replace(/\bvalue\.value\b/, 'result')
    if (message.t === 'ok') {
      await sender.put({ t: 'error', kind: 'unsupported-result', error: info })
    } else {
      // An error report with an unencodable thrown value: send its description alone.
      await sender.put({
        ...message,
        error: { ...(message as { error: ErrorInfo }).error, value: undefined },
      })
    }
  }
}

async function main(
  moduleUrl: string,
  taskPipe: string,
  resultPipe: string,
  copyArguments: boolean,
): Promise<void> {
  const tasks = Receiver.attach(taskPipe)
  const results = Sender.attach(resultPipe)
  let mod: Record<string, unknown>
  try {
    mod = (await import(moduleUrl)) as Record<string, unknown>
  } catch (err) {
    await reply(results, { t: 'load-error', error: describeError(err) })
    await results.waitForAllAck().catch(() => {})
    results.close()
    tasks.close()
    process.exitCode = 1
    return
  }
  // A CommonJS module whose exports Node could not list statically has them on `default` only.
  const lookup = (name: string): unknown => {
    if (Object.hasOwn(mod, name)) return mod[name]
    const d = mod.default
    if (typeof d === 'object' || typeof d === 'function') {
      if (d !== null && Object.hasOwn(d, name)) return (d as Record<string, unknown>)[name]
    }
    return undefined
  }
  await reply(results, { t: 'ready', pid: process.pid })
  for (;;) {
    let received: ReceivedMessage | null = null
    let task: TaskMessage
    try {
      if (copyArguments) {
        task = (await tasks.get()) as TaskMessage
      } else {
        // Zero copy: the arguments' binary parts are views into the task pipe's shared memory
        // until the message is released, after the result is written.
        received = await tasks.receive()
        task = received.value as TaskMessage
      }
    } catch (err) {
      if (isEnd(err)) break
      throw err
    }
    const fn = lookup(task.name)
    let message: ReplyMessage
    if (typeof fn !== 'function') {
      message = {
        t: 'error',
        kind: 'no-export',
        error: {
          message:
            fn === undefined
              ? `the pool's module has no export named '${task.name}'`
              : `the pool's module exports '${task.name}' as a ${typeof fn}, not a function`,
        },
      }
    } else {
      try {
        message = { t: 'ok', value: await (fn as (...a: unknown[]) => unknown)(...task.args) }
      } catch (err) {
        message = { t: 'error', kind: 'threw', error: describeError(err) }
      }
    }
    try {
      await reply(results, message)
    } catch (err) {
      if (isEnd(err)) break
      throw err
    } finally {
      // The result is written (a copy): the arguments' memory can go back to the ring.
      received?.release()
    }
  }
  results.close()
  tasks.close()
}

// This process runs as a worker: a pool made by its tasks is legitimate (see ProcessPool).
;(globalThis as Record<symbol, unknown>)[WORKER_MARK] = true

const [moduleUrl, taskPipe, resultPipe, mode, poolPid] = process.argv.slice(2)
if (
  moduleUrl === undefined ||
  taskPipe === undefined ||
  resultPipe === undefined ||
  !/^[1-9]\d*$/.test(poolPid ?? '')
) {
  process.stderr.write(
    'usage: pool-worker <module URL> <task pipe> <result pipe> <copy|views> <pool pid>\n',
  )
  process.exitCode = 2
} else if (!native.watchParent(Number(poolPid))) {
  // The pool's process died before this one started: nobody needs it.
  process.exitCode = 1
} else {
  // Not a top-level await: the package ships this file as CommonJS (scripts/build-js.mjs). A
  // rejection is unhandled, so it ends the process with code 1 and the error on stderr, as an
  // uncaught top-level error would.
  void main(moduleUrl, taskPipe, resultPipe, mode === 'copy')
}
