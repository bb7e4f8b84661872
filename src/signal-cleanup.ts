/**
 * Runs cleanups when the process is ended by SIGINT, SIGTERM or SIGHUP, without changing what
 * the signal does: if no other listener handles it, the cleanups run, our listeners are removed
 * and the signal is raised again, so the process still dies of it (exit status and all). If the
 * program has its own listener for the signal, the program decides (it may keep running), and
 * nothing is cleaned up here; the cleanup at exit (`lifecycle.ts`) covers a later normal exit.
 *
 * Listeners are installed only while a cleanup is registered, and only on the main thread
 * (workers do not receive signals).
 *
 * A JavaScript listener runs on the event loop, never while the thread is blocked in a
 * synchronous call. So while listeners are installed, the native signal handler is put in front
 * of libuv's (chaining to it) and SIGINT/SIGTERM interrupt shmpipe's synchronous waits
 * (`receiver.getSync()`, `sender.putSync()`, `array.lockSync()`): the wait throws
 * `ERR_SHMPIPE_ABORTED` ("… interrupted by SIGINT"), after running the signal's handling here
 * (cleanups, then the signal again: the process dies of it). With a listener of the program's
 * own, the wait still throws, and that listener runs once the thread is back on the event loop.
 * Other blocking calls (`Atomics.wait`, a busy loop) are not interrupted: the signal is handled
 * when they return. Without registered cleanups, Node's default applies (the process dies at
 * once, even when blocked). Killing with SIGKILL never runs any cleanup; SIGABRT (V8's
 * out-of-memory end) runs only the native cleanup (`lifecycle.ts`).
 *
 * @module
 */

import { isMainThread } from 'node:worker_threads'

import { native, setSignalInterruptHandler } from './native.js'

const SIGNALS: readonly NodeJS.Signals[] =
  process.platform === 'win32' ? ['SIGINT', 'SIGTERM'] : ['SIGINT', 'SIGTERM', 'SIGHUP']

const cleanups = new Set<() => void>()
const handlers = new Map<NodeJS.Signals, () => void>()

function runCleanups(): void {
  for (const cleanup of [...cleanups]) {
    try {
      cleanup()
    } catch {
      // Dying anyway: the other cleanups matter more.
    }
  }
  cleanups.clear()
}

function onSignal(signal: NodeJS.Signals): void {
  native.takeInterruptingSignal() // handled: a later synchronous wait must not see it again
  const ours = handlers.get(signal)
  if (process.listeners(signal).some((listener) => listener !== ours)) return
  runCleanups()
  uninstall()
  // No listener is left, so Node has restored the default action: the process dies of it.
  process.kill(process.pid, signal)
}

/** A synchronous wait was interrupted by `signal`: handle it now, as the listener would. */
function onWaitInterrupted(signal: NodeJS.Signals): void {
  if (handlers.has(signal)) onSignal(signal)
}

function install(): void {
  if (!isMainThread || handlers.size > 0) return
  for (const signal of SIGNALS) {
    const handler = (): void => onSignal(signal)
    handlers.set(signal, handler)
    process.on(signal, handler)
  }
  // libuv has replaced the native handler with its own: put the native one back in front (it
  // chains to libuv's) so that SIGINT/SIGTERM interrupt synchronous waits.
  setSignalInterruptHandler(onWaitInterrupted)
  try {
    native.installSignalCleanup()
    native.interruptSyncWaitsOnSignal(true)
  } catch {
    // Best effort: without it, a blocked thread handles the signal when its wait returns.
  }
}

function uninstall(): void {
  if (handlers.size > 0) native.interruptSyncWaitsOnSignal(false)
  for (const [signal, handler] of handlers) process.removeListener(signal, handler)
  handlers.clear()
}

/**
 * Runs `cleanup` (synchronously) if the process is ended by SIGINT, SIGTERM or SIGHUP while it
 * is registered. Returns the function that unregisters it.
 */
export function onTerminatingSignal(cleanup: () => void): () => void {
  cleanups.add(cleanup)
  install()
  return () => {
    cleanups.delete(cleanup)
    if (cleanups.size === 0) uninstall()
  }
}
