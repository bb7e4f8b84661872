/**
 * SharedMemoryManager: a scope for shared memory. Every shared array and pipe it creates is
 * removed when the scope ends (`dispose()`, `using`, the end of `withSharedMemory`), when the
 * process exits, or when it is ended by SIGINT, SIGTERM or SIGHUP (see `lifecycle.ts` for
 * what that means while the thread is blocked), or by SIGABRT (the native cleanup removes its
 * arrays and pipes).
 *
 * @module
 */

import { ERR_SHMPIPE_CLOSED, ShmpipeError } from './errors.js'
import {
  onTerminatingSignal,
  registerOpenEnd,
  unregisterOpenEnd,
  type Closable,
} from './lifecycle.js'
import { describe, invalidArgument } from './options.js'
import { native } from './native.js'
import { createSharedMemoryPair, type PipeOptions, type Receiver, type Sender } from './pipe.js'
import {
  arrayIdentity,
  removeIfSame,
  SharedArray,
  type ArrayOf,
  type DType,
  type Shape,
  type SharedArrayOptions,
  type SharedTypedArrayConstructor,
} from './shared-array.js'

/** A shared array the manager created: its handle, and what identifies the segment. */
interface ManagedArray {
  array: SharedArray
  name: string
  nonce: string
}

/**
 * Owns the shared memory made through it and removes all of it when it ends.
 *
 * ```ts
 * using manager = new SharedMemoryManager()
 * const a = manager.createArray('frame', Float64Array, [480, 640])
 * const [sender, receiver] = manager.createSharedMemoryPair()
 * // … hand 'frame' and sender.name to other processes …
 * // at the end of the block (or at exit, or on SIGINT/SIGTERM/SIGHUP): closed and removed
 * ```
 *
 * Ending the manager closes the handles it returned (arrays' `data` becomes empty; pipe ends are
 * closed) and removes the arrays' names. Other processes' handles keep working; the memory is
 * freed when the last of them is closed.
 */
export class SharedMemoryManager implements Disposable {
  #arrays: ManagedArray[] = []
  #pipes: (Sender | Receiver)[] = []
  #disposed = false
  readonly #atExit: Closable = { close: () => this.dispose() }
  readonly #unregisterSignal: () => void

  constructor() {
    registerOpenEnd(this.#atExit)
    this.#unregisterSignal = onTerminatingSignal(() => this.dispose())
  }

  /** Whether the manager has ended (its memory removed). */
  get disposed(): boolean {
    return this.#disposed
  }

  /** The names of the shared arrays this manager created (and will remove). */
  get arrayNames(): string[] {
    return this.#arrays.map((a) => a.name)
  }

  #check(): void {
    if (this.#disposed) {
      throw new ShmpipeError(ERR_SHMPIPE_CLOSED, 'this SharedMemoryManager has ended')
    }
  }

  /** Creates a shared array (see `SharedArray.create`) that the manager removes when it ends. */
  createArray<C extends DType | SharedTypedArrayConstructor>(
    name: string,
    type: C,
    shape: Shape,
    options?: SharedArrayOptions,
  ): SharedArray<ArrayOf<C>> {
    this.#check()
    const array = SharedArray.create(name, type, shape, options)
    this.#arrays.push({ array, ...arrayIdentity(array) })
    // Removed by the native signal cleanup too, for the signals no JavaScript sees (SIGABRT).
    native.removeArrayOnSignal(arrayIdentity(array).name)
    return array
  }

  /**
   * Creates a pipe (see `createSharedMemoryPair`) whose ends the manager closes when it ends,
   * which removes the pipe's shared memory.
   */
  createSharedMemoryPair(options?: PipeOptions): [Sender, Receiver] {
    this.#check()
    const pair = createSharedMemoryPair(options)
    this.#pipes.push(...pair)
    return pair
  }

  /**
   * Ends the manager: closes every handle it returned and removes its shared memory. Arrays
   * deleted or re-created by someone else meanwhile are left alone. Calling it again does
   * nothing. If some removal failed, the first error is thrown after all were tried.
   */
  dispose(): void {
    if (this.#disposed) return
    this.#disposed = true
    this.#unregisterSignal()
    unregisterOpenEnd(this.#atExit)
    const errors: unknown[] = []
    const attempt = (fn: () => void): void => {
      try {
        fn()
      } catch (err) {
        errors.push(err)
      }
    }
    for (const end of this.#pipes) attempt(() => end.close())
    for (const { array, name, nonce } of this.#arrays) {
      attempt(() => void native.keepArrayOnSignal(name))
      attempt(() => array.close())
      attempt(() => void removeIfSame(name, nonce))
    }
    this.#pipes = []
    this.#arrays = []
    if (errors.length > 0) throw errors[0]
  }

  /** Same as {@link SharedMemoryManager.dispose}. */
  [Symbol.dispose](): void {
    this.dispose()
  }
}

/**
 * Runs `fn` with a new {@link SharedMemoryManager} and ends the manager when `fn`'s result
 * settles (resolved or rejected), removing everything created through it. Resolves with `fn`'s
 * result.
 */
export async function withSharedMemory<R>(
  fn: (manager: SharedMemoryManager) => R | PromiseLike<R>,
): Promise<Awaited<R>> {
  if (typeof fn !== 'function') {
    throw invalidArgument(`withSharedMemory needs a function, got ${describe(fn)}`)
  }
  const manager = new SharedMemoryManager()
  try {
    return await fn(manager)
  } finally {
    manager.dispose()
  }
}
