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
 * A JavaScript listener runs on the event loop. While the thread is blocked in a synchronous
 * call (`array.lock()`, `receiver.getSync()`, `Atomics.wait`…), a signal is handled when that
 * call returns; a call that never returns leaves the process alive until SIGKILL, and its
 * segments in place. Without registered cleanups, Node's default applies (the process dies at
 * once, even when blocked). Killing with SIGKILL never runs any cleanup.
 *
 * @module
 */

import { isMainThread } from 'node:worker_threads'

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
  const ours = handlers.get(signal)
  if (process.listeners(signal).some((listener) => listener !== ours)) return
  runCleanups()
  uninstall()
  // No listener is left, so Node has restored the default action: the process dies of it.
  process.kill(process.pid, signal)
}

function install(): void {
  if (!isMainThread || handlers.size > 0) return
  for (const signal of SIGNALS) {
    const handler = (): void => onSignal(signal)
    handlers.set(signal, handler)
    process.on(signal, handler)
  }
}

function uninstall(): void {
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
