/**
 * Closes the ends still open when the process exits, so that senders are seen as closed (not
 * dead) by their receiver, and the shared memory this process created is removed: on a normal
 * exit, and on SIGINT/SIGTERM while this process owns a pipe.
 *
 * The signal handlers keep Node's default behaviour: after cleaning up, a handler that is the
 * only listener removes itself and re-raises the signal, so the process still dies of it.
 *
 * @module
 */

/** Anything that can be closed synchronously. */
export interface Closable {
  close(): void
}

const open = new Set<Closable>()
const owners = new Set<Closable>()
let exitHookInstalled = false

const SIGNALS = ['SIGINT', 'SIGTERM'] as const

function closeAll(): void {
  for (const end of [...open]) {
    try {
      end.close()
    } catch {
      // Exiting anyway: closing the others matters more.
    }
  }
}

function onSignal(signal: NodeJS.Signals): void {
  closeAll()
  if (process.listenerCount(signal) === 1) {
    process.removeListener(signal, onSignal)
    process.kill(process.pid, signal)
  }
}

function updateSignalHandlers(): void {
  for (const signal of SIGNALS) {
    const installed = process.listeners(signal).includes(onSignal)
    if (owners.size > 0 && !installed) process.on(signal, onSignal)
    if (owners.size === 0 && installed) process.removeListener(signal, onSignal)
  }
}

/** Tracks an open end; `owner` ends (made by `createSharedMemoryPair`) also arm the signal hooks. */
export function registerOpenEnd(end: Closable, owner: boolean): void {
  open.add(end)
  if (!exitHookInstalled) {
    process.on('exit', closeAll)
    exitHookInstalled = true
  }
  if (owner) {
    owners.add(end)
    updateSignalHandlers()
  }
}

/** Forgets a closed end. */
export function unregisterOpenEnd(end: Closable): void {
  open.delete(end)
  if (owners.delete(end)) updateSignalHandlers()
}
