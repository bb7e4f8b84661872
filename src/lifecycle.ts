/**
 * Removing the shared memory this process owns when it ends: on a normal exit, and when SIGINT
 * or SIGTERM ends it.
 *
 * Normal exit: the ends still open are closed, so that senders are seen as closed (not dead) by
 * their receiver, and the shared memory this process created is removed.
 *
 * SIGINT/SIGTERM: a JavaScript listener could not do it, since none runs while the thread is
 * blocked in a synchronous call (`getSync`, `putSync`), and installing one would stop the
 * signal from ending the process. So a native handler (`crates/core/src/signals.rs`), installed
 * when the first end opens, removes the segments this process owns and then lets the signal do
 * what it would have done without it: Node's default handler still restores the terminal and
 * the process still dies of the signal (exit status 128 + n in a shell). Segments another
 * process still needs are left alone: a message sent to a live receiver stays readable.
 *
 * With a JavaScript signal listener (`process.on('SIGINT', …)`), libuv replaces the native
 * handler and the listener decides: if it ends the process with `process.exit()`, the exit hook
 * below cleans up; if it keeps the process running, the segments stay, as they must. When the
 * last such listener is removed, libuv resets the signal to its default (which would end the
 * process without cleanup), so the native handler is installed again. A signal whose
 * disposition is "ignore" stays ignored.
 *
 * SIGABRT (`abort()`, V8's out-of-memory end) is handled the same way by the native handler:
 * the segments this process owns, and the arrays a live `SharedMemoryManager` made, are removed,
 * then the process dies of it (core dump included). No JavaScript runs.
 *
 * SIGKILL (and a crash) cannot be caught: what such a process leaves is removed by
 * `npx shmpipe clean` / `cleanSegments()` (`src/cleanup.ts`).
 *
 * @module
 */

import { native } from './native.js'

/** Anything that can be closed synchronously. */
export interface Closable {
  close(): void
}

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

/** Tracks an open end until it is closed. */
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
