/**
 * The one owner of cleanup at the end of this process: every exit hook and signal handler of
 * shmpipe's TypeScript side is installed here, and nowhere else.
 *
 * What it cleans up:
 * - An open end ({@link registerOpenEnd}: a pipe's sender or receiver, a pool, a manager) is
 *   closed when the process exits normally (`'exit'`), so that senders are seen as closed (not
 *   dead) by their receiver, and the shared memory this process created is removed.
 * - A manager's cleanup ({@link onTerminatingSignal}) also runs when SIGINT, SIGTERM or SIGHUP
 *   ends the process.
 *
 * The rules:
 * 1. **Native cleanup on SIGINT, SIGTERM, SIGABRT.** When the first end opens, a native handler
 *    (`crates/core/src/signals.rs`) is installed. It removes the segments this process owns (and
 *    the arrays of live managers), then lets the signal do what it would have done without it:
 *    Node's default handler still restores the terminal and the process still dies of the signal
 *    (exit status 128 + n in a shell; a core dump for SIGABRT). It runs while the thread is
 *    blocked in a synchronous call (`getSync`, `putSync`), where no JavaScript can. Segments
 *    another process still needs are left alone: a message sent to a live receiver stays
 *    readable. A signal whose disposition is "ignore" stays ignored.
 * 2. **A program's own signal listener decides.** With a JavaScript listener
 *    (`process.on('SIGINT', …)`), libuv replaces the native handler: if the listener ends the
 *    process with `process.exit()`, rule 4 cleans up; if it keeps the process running, the
 *    segments stay, as they must. When the last listener of SIGINT, SIGTERM or SIGABRT is
 *    removed, libuv resets the signal to its default (death without cleanup), so the native
 *    handler is installed again.
 * 3. **Managers' cleanups on SIGINT, SIGTERM, SIGHUP.** While a cleanup is registered with
 *    {@link onTerminatingSignal} (main thread only: workers do not receive signals), this module
 *    listens for those signals. If no other listener handles the signal, the cleanups run, these
 *    listeners are removed and the signal is raised again, so the process still dies of it. With
 *    a listener of the program's own, rule 2 applies. Since a listener runs on the event loop,
 *    the native handler is put back in front of libuv's (chaining to it) while these listeners
 *    are installed, and SIGINT/SIGTERM interrupt shmpipe's synchronous waits
 *    (`receiver.getSync()`, `sender.putSync()`, `array.lockSync()`): the wait throws
 *    `ERR_SHMPIPE_ABORTED` ("… interrupted by SIGINT") after handling the signal as the listener
 *    would. Other blocking calls (`Atomics.wait`, a busy loop) are not interrupted: the signal is
 *    handled when they return. Without registered cleanups, Node's default applies.
 * 4. **Normal exit.** Every open end is closed, whatever happens to the others.
 * 5. **SIGKILL and crashes** cannot be caught: what such a process leaves is removed by
 *    `npx shmpipe clean` / `cleanSegments()` (`src/cleanup.ts`).
 *
 * @module
 */

import { isMainThread } from 'node:worker_threads'

import { native, setSignalInterruptHandler } from './native.js'

/** Anything that can be closed synchronously. */
export interface Closable {
  close(): void
}

// ---------------------------------------------------------------------------------------------
// Open ends: closed at exit; the native handler armed (rules 1, 2, 4)

const open = new Set<Closable>()
let hooksInstalled = false

function closeAll(): void {
  for (const end of [...open]) {
    try {
      end.close()
    } catch {
      // Exiting anyway: closing the others matters more.
    }
  }
}

/** Installs (or re-installs) the native SIGINT/SIGTERM/SIGABRT cleanup. */
function armSignalCleanup(): void {
  try {
    native.installSignalCleanup()
  } catch {
    // Best effort: without it, a signalled process leaves its segments to `shmpipe clean`.
  }
}

/** After the last JavaScript listener of a cleaned-up signal is gone, re-arms the native handler. */
function onRemoveListener(event: string | symbol): void {
  if (
    (event === 'SIGINT' || event === 'SIGTERM' || event === 'SIGABRT') &&
    process.listenerCount(event) === 0
  ) {
    armSignalCleanup()
  }
}

/** Tracks an open end until it is closed: it is closed at a normal exit. */
export function registerOpenEnd(end: Closable): void {
  open.add(end)
  if (!hooksInstalled) {
    process.on('exit', closeAll)
    armSignalCleanup()
    // Node's own 'removeListener' listener, registered at startup, runs first: by the time this
    // one runs, libuv has already reset the signal.
    process.on('removeListener', onRemoveListener)
    hooksInstalled = true
  }
}

/** Forgets a closed end. */
export function unregisterOpenEnd(end: Closable): void {
  open.delete(end)
}

// ---------------------------------------------------------------------------------------------
// Cleanups on terminating signals (rule 3)

const TERMINATING_SIGNALS: readonly NodeJS.Signals[] =
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
  uninstallSignalListeners()
  // No listener is left, so Node has restored the default action: the process dies of it.
  process.kill(process.pid, signal)
}

/** A synchronous wait was interrupted by `signal`: handle it now, as the listener would. */
function onWaitInterrupted(signal: NodeJS.Signals): void {
  if (handlers.has(signal)) onSignal(signal)
}

function installSignalListeners(): void {
  if (!isMainThread || handlers.size > 0) return
  for (const signal of TERMINATING_SIGNALS) {
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

function uninstallSignalListeners(): void {
  if (handlers.size > 0) native.interruptSyncWaitsOnSignal(false)
  for (const [signal, handler] of handlers) process.removeListener(signal, handler)
  handlers.clear()
}

/**
 * Runs `cleanup` (synchronously) if the process is ended by SIGINT, SIGTERM or SIGHUP while it
 * is registered (rule 3). Returns the function that unregisters it.
 */
export function onTerminatingSignal(cleanup: () => void): () => void {
  cleanups.add(cleanup)
  installSignalListeners()
  return () => {
    cleanups.delete(cleanup)
    if (cleanups.size === 0) uninstallSignalListeners()
  }
}
