/**
 * Closes the ends still open when the process exits normally, so that senders are seen as closed
 * (not dead) by their receiver, and the shared memory this process created is removed.
 *
 * Signals are left to Node's defaults: a JavaScript signal listener cannot run while the thread
 * is blocked in a synchronous call (`getSync`, `putSync`), so installing one would make SIGTERM
 * unable to end such a process. Removing a killed process's segments is the job of the cleanup
 * of dead owners' segments.
 *
 * @module
 */

/** Anything that can be closed synchronously. */
export interface Closable {
  close(): void
}

const open = new Set<Closable>()
let exitHookInstalled = false

function closeAll(): void {
  for (const end of [...open]) {
    try {
      end.close()
    } catch {
      // Exiting anyway: closing the others matters more.
    }
  }
}

/** Tracks an open end until it is closed. */
export function registerOpenEnd(end: Closable): void {
  open.add(end)
  if (!exitHookInstalled) {
    process.on('exit', closeAll)
    exitHookInstalled = true
  }
}

/** Forgets a closed end. */
export function unregisterOpenEnd(end: Closable): void {
  open.delete(end)
}
